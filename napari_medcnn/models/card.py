"""The JSON model card that travels beside every checkpoint's weights.

It says what the network is (architecture and arguments), what it takes
(dims, channels and their order, trained size), how inputs were prepared
(the preprocessing record), how to read its outputs (class names, the
calibration temperature), where it came from (data, file lists or hashes,
split rule, seeds, library versions, parent model) and how well it did.
No patient identifiers ever go in a card: items are keyed by hashes or
de-identified UIDs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

CARD_VERSION = 1
InputKind = Literal["slice", "volume", "sequence"]


class CardError(ValueError):
    """A model card is missing fields or does not fit the input."""


@dataclass
class ModelCard:
    """Everything needed to rebuild, feed and interpret a checkpoint.

    Attributes:
        arch: registry name (``seed_cnn``, ``resnet``, ``cnn_rnn``...).
        arch_kwargs: arguments for ``build_model(arch, **arch_kwargs)``.
        classes: class names, in output order.
        spatial_dims: 2 for slice models, 3 for volume and sequence models.
        in_channels: number of input channels.
        channel_names: what each channel is, in order (e.g. ``["T1", "T2"]``).
        input_size: trained spatial size, (H, W) or (D, H, W); for
            ``sequence`` models (H, W) of each slice (the slice count varies).
        input_kind: ``slice`` (2D), ``volume`` (3D CNN) or ``sequence``
            (CNN+RNN over slices).
        preprocessing: the preprocessing record (see ``preprocessing.py``).
        temperature: calibration temperature (logits are divided by it).
        provenance: data source, file lists or hashes, split rule, seeds,
            library versions, label counts, augmentation...
        metrics: held-out metrics (accuracy, AUC, ECE...).
        name, description: human-readable identity.
        domain: the training domain the domain guard checks inputs against
            (modalities, colour, anatomy, orientation rule, content and
            feature-novelty thresholds; see ``trust/domain.py``); empty
            when unknown.
        tta: test-time augmentation ``classify`` applies to slice models:
            ``["flip"]`` averages the logits of each input and its mirror
            image (left-right); empty: one plain pass.  The temperature
            and the held-out metrics are measured with it.
        parent: model_id of the model this one was fine-tuned from.
        model_id: sha256 (16 hex) of the weights, set on save.
        created: ISO-8601 UTC time of saving.
    """

    arch: str
    arch_kwargs: dict[str, Any]
    classes: list[str]
    spatial_dims: int
    in_channels: int
    input_size: list[int]
    preprocessing: dict[str, Any]
    channel_names: list[str] = field(default_factory=list)
    input_kind: InputKind = "slice"
    temperature: float = 1.0
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    description: str = ""
    parent: str | None = None
    domain: dict[str, Any] = field(default_factory=dict)
    tta: list[str] = field(default_factory=list)
    model_id: str = ""
    created: str = ""
    card_version: int = CARD_VERSION

    REQUIRED = (
        "arch",
        "arch_kwargs",
        "classes",
        "spatial_dims",
        "in_channels",
        "input_size",
        "preprocessing",
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`CardError` when the card is inconsistent."""
        if not isinstance(self.classes, list) or len(self.classes) < 2:
            raise CardError("model card needs a list of at least 2 class names")
        if self.spatial_dims not in (2, 3):
            raise CardError(f"spatial_dims must be 2 or 3, not {self.spatial_dims}")
        if self.in_channels < 1:
            raise CardError(f"in_channels must be >= 1, not {self.in_channels}")
        if self.input_kind not in ("slice", "volume", "sequence"):
            raise CardError(f"unknown input_kind {self.input_kind!r}")
        if self.input_kind == "slice" and self.spatial_dims != 2:
            raise CardError("a slice model has spatial_dims 2")
        if self.channel_names and len(self.channel_names) != self.in_channels:
            raise CardError(
                f"{len(self.channel_names)} channel names for "
                f"{self.in_channels} channels"
            )
        n = self.arch_kwargs.get("num_classes")
        if n is not None and n != len(self.classes):
            raise CardError(
                f"architecture has {n} outputs but the card lists "
                f"{len(self.classes)} classes"
            )
        if not self.temperature > 0:
            raise CardError(f"temperature must be > 0, not {self.temperature}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def check_input(self, n_channels: int, spatial_ndim: int) -> None:
        """Refuse, with a clear message, input the model cannot take.

        Args:
            n_channels: number of image layers/channels offered.
            spatial_ndim: 2 for a slice, 3 for a volume.
        """
        if n_channels != self.in_channels:
            names = ", ".join(self.channel_names) or "unnamed"
            raise CardError(
                f"model '{self.name or self.arch}' takes {self.in_channels} "
                f"channel(s) ({names}), got {n_channels}"
            )
        if self.input_kind in ("volume", "sequence") and spatial_ndim != 3:
            raise CardError(
                f"model '{self.name or self.arch}' reads whole volumes "
                f"({self.input_kind}); got a {spatial_ndim}D image"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        """Build a card from JSON, with a clear message for missing fields."""
        if not isinstance(d, dict):
            raise CardError("model card is not a JSON object")
        missing = [k for k in cls.REQUIRED if k not in d]
        if missing:
            raise CardError(f"model card is missing: {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
