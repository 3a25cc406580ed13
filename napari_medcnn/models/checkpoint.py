"""Safe checkpoints: safetensors weights beside a JSON model card.

``foo.safetensors`` holds the weights and ``foo.json`` the card.  A model
file can never execute code: safetensors has no code path, and ``.pt`` /
``.pth`` files are read only with ``torch.load(weights_only=True)`` (a plain
state dict; the card must sit beside it as ``foo.json``).  Writes are atomic
(temporary file, then rename).  Loaded models are cached by (path, file
times, device).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn as nn

from napari_medcnn._atomic import atomic_write
from napari_medcnn.models.card import CardError, ModelCard
from napari_medcnn.models.registry import build_model

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
#: names of tensors stored beside the weights that are not model weights
EXTRA_PREFIX = "domain."


class CheckpointError(Exception):
    """A checkpoint cannot be read; the message names the file and why."""


@dataclass(frozen=True)
class LoadedModel:
    """A ready-to-run model with its card, device and identity."""

    model: nn.Module
    card: ModelCard
    device: torch.device
    path: str
    extras: dict = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return self.card.model_id


def best_device() -> torch.device:
    """CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def card_path_for(weights: str | os.PathLike) -> Path:
    """The card's path for a weights file (same stem, ``.json``)."""
    return Path(weights).with_suffix(".json")


def weights_path_for(path: str | os.PathLike) -> Path:
    """Resolve a user-given path (weights or card) to the weights file."""
    p = Path(path)
    if p.suffix == ".json":
        for suffix in WEIGHT_SUFFIXES:
            if p.with_suffix(suffix).exists():
                return p.with_suffix(suffix)
        raise CheckpointError(f"{p}: no weights file beside this model card")
    if p.suffix == "":
        p = p.with_suffix(".safetensors")
    return p


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename."""
    atomic_write(path, data)


def save_checkpoint(
    model: nn.Module,
    card: ModelCard,
    path: str | os.PathLike,
    extras: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save weights (safetensors) and card (JSON) atomically.

    ``extras``: tensors stored beside the weights under ``<name>`` keys that
    start with :data:`EXTRA_PREFIX` (e.g. ``domain.reference``, the domain
    guard's training features); they come back as ``LoadedModel.extras``.
    Sets ``card.model_id`` (sha256 of the weights, 16 hex) and
    ``card.created``.  Returns the weights path.
    """
    from safetensors.torch import save

    weights = weights_path_for(path)
    if weights.suffix != ".safetensors":
        weights = weights.with_suffix(".safetensors")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for key, value in (extras or {}).items():
        if not key.startswith(EXTRA_PREFIX):
            raise ValueError(f"extra tensor names start with {EXTRA_PREFIX!r}: {key}")
        state[key] = torch.as_tensor(value).detach().cpu().contiguous()
    blob = save(state, metadata={"format": "pt"})
    card.model_id = hashlib.sha256(blob).hexdigest()[:16]
    card.created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    card.validate()
    text = json.dumps(card.to_dict(), indent=2, sort_keys=False)
    atomic_write_bytes(weights, blob)
    atomic_write_bytes(card_path_for(weights), text.encode("utf-8"))
    return weights


def read_card(path: str | os.PathLike) -> ModelCard:
    """Read and validate the card of a checkpoint (weights or card path)."""
    card_file = card_path_for(weights_path_for(path))
    if not card_file.exists():
        raise CheckpointError(
            f"{card_file}: model card not found (every checkpoint needs its "
            "JSON card beside the weights)"
        )
    try:
        d = json.loads(card_file.read_text(encoding="utf-8"))
        return ModelCard.from_dict(d)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{card_file}: model card is not valid JSON ({exc})"
        ) from None
    except (CardError, TypeError) as exc:
        raise CheckpointError(f"{card_file}: {exc}") from None


def _read_state(weights: Path) -> dict[str, torch.Tensor]:
    if not weights.exists():
        raise CheckpointError(f"{weights}: no such checkpoint file")
    try:
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(weights))
        if weights.suffix in (".pt", ".pth"):
            # weights_only refuses any pickle that would build arbitrary objects
            state = torch.load(weights, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            if not isinstance(state, dict) or not all(
                isinstance(v, torch.Tensor) for v in state.values()
            ):
                raise CheckpointError(f"{weights}: not a plain state dict of tensors")
            return state
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt file, refused pickle, truncated...
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{weights}: cannot read weights safely ({reason})"
        ) from None
    raise CheckpointError(
        f"{weights}: unsupported weights format (use .safetensors, .pt or .pth)"
    )


def build_from_card(card: ModelCard) -> nn.Module:
    """An untrained network as the card describes it."""
    try:
        return build_model(card.arch, **card.arch_kwargs)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"model card describes an unbuildable model: {exc}"
        ) from None


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device | None = None
) -> LoadedModel:
    """Load a checkpoint (cached by path, file times and device).

    The model is returned in eval mode on ``device`` (default: best device).

    Raises:
        CheckpointError: missing/corrupt file, unsafe pickle, card missing
            fields, or weights that do not fit the card's architecture.
    """
    weights = weights_path_for(path).resolve()
    dev = torch.device(device) if device is not None else best_device()
    try:
        stamp = (weights.stat().st_mtime_ns, card_path_for(weights).stat().st_mtime_ns)
    except OSError:
        stamp = (0, 0)
    return _load_cached(str(weights), stamp, str(dev))


@functools.lru_cache(maxsize=8)
def _load_cached(weights: str, stamp: tuple[int, int], device: str) -> LoadedModel:
    card = read_card(weights)
    state = _read_state(Path(weights))
    extras = {k: state.pop(k) for k in list(state) if k.startswith(EXTRA_PREFIX)}
    model = build_from_card(card)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:300]
        raise CheckpointError(
            f"{weights}: weights do not match the card's architecture ({first})"
        ) from None
    model.to(device).eval()
    return LoadedModel(model, card, torch.device(device), weights, extras)


def clear_cache() -> None:
    """Forget cached models (e.g. after overwriting a checkpoint in tests)."""
    _load_cached.cache_clear()


#: the Br35H brain-MR model shipped in the package
DEFAULT_MODEL = Path(__file__).parents[1] / "weights" / "br35h_default.safetensors"


def default_model_path() -> Path:
    """The Br35H brain-MR model shipped in the package (safetensors path)."""
    return DEFAULT_MODEL


def resolve_model(model=None, device=None) -> LoadedModel:
    """A :class:`LoadedModel` from None (the default model), a checkpoint
    path, or a LoadedModel (returned as is)."""
    if isinstance(model, LoadedModel):
        return model
    path = default_model_path() if model is None else model
    return load_checkpoint(os.fspath(path), device)
