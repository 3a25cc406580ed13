"""Starting points for fine-tuning: a parent checkpoint or a fresh network.

:func:`start_model` returns a *copy* of the parent (the cached parent used
by classify and saliency is never changed) with a new class head when the
classes differ (rows of classes the parent already knew are kept), or a
new network built from the registry, plus the card the result will carry.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from napari_medcnn.models.card import ModelCard
from napari_medcnn.training.trainer import TrainConfig, last_linear


def _head_name(model: nn.Module) -> str:
    head = last_linear(model)
    for name, m in model.named_modules():
        if m is head:
            return name
    raise ValueError("classification head not found")  # pragma: no cover


def replace_head(
    model: nn.Module, old_classes: Sequence[str], new_classes: Sequence[str]
) -> list[str]:
    """Give ``model`` (in place) a new last linear layer for ``new_classes``.

    Weights of classes present in both lists are copied, so known classes
    start where the parent left them.  Returns the kept class names.
    """
    name = _head_name(model)
    old = last_linear(model)
    new = nn.Linear(old.in_features, len(new_classes), bias=old.bias is not None)
    new = new.to(old.weight.device, old.weight.dtype)
    kept = [c for c in new_classes if c in old_classes]
    with torch.no_grad():
        for c in kept:
            i, j = list(old_classes).index(c), list(new_classes).index(c)
            new.weight[j] = old.weight[i]
            if old.bias is not None:
                new.bias[j] = old.bias[i]
    parent, _, attr = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    setattr(owner, attr, new)
    kwargs = getattr(model, "arch_kwargs", None)
    if isinstance(kwargs, dict) and "num_classes" in kwargs:
        kwargs["num_classes"] = len(new_classes)
    return kept


def start_model(
    classes: Sequence[str],
    parent: Any = None,
    *,
    arch: str = "seed_cnn",
    arch_kwargs: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    in_channels: int = 1,
    channel_names: Sequence[str] = (),
) -> tuple[nn.Module, ModelCard, dict[str, Any]]:
    """The network to train, its future card and a note on what was done.

    Args:
        classes: class names of the new model, in output order.
        parent: None (train ``arch`` from scratch), a checkpoint path or a
            :class:`~napari_medcnn.models.checkpoint.LoadedModel`.
        arch, arch_kwargs: registry model for a fresh start (besides
            ``spatial_dims``, ``in_channels`` and ``num_classes``).
        record: preprocessing record for a fresh start (default: the
            default model's, i.e. :func:`~napari_medcnn.preprocessing.record.
            default_record`).
        in_channels, channel_names: input channels for a fresh start.

    Returns:
        (model on CPU in train mode, card with parent and classes set, note
        dict ``{"start": "checkpoint"|"scratch", "head": "kept"|"new",
        "kept_classes": [...]}``).
    """
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ValueError(
            f"training needs at least 2 classes, got {len(classes)}: "
            f"{classes}; define another class and label examples of it"
        )
    if parent is None:
        from napari_medcnn.models import build_model
        from napari_medcnn.preprocessing.record import default_record

        rec = copy.deepcopy(record) if record is not None else default_record()
        spatial_dims = len(rec["size"])
        kwargs = {"spatial_dims": spatial_dims, "in_channels": in_channels}
        kwargs.update(arch_kwargs or {})
        kwargs["num_classes"] = len(classes)
        model = build_model(arch, **kwargs)
        card = ModelCard(
            arch=arch,
            arch_kwargs=kwargs,
            classes=classes,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            channel_names=list(channel_names),
            input_size=list(rec["size"]),
            input_kind="slice" if spatial_dims == 2 else "volume",
            preprocessing=rec,
        )
        return model.train(), card, {"start": "scratch", "head": "new"}
    from napari_medcnn.models.checkpoint import resolve_model

    loaded = resolve_model(
        os.fspath(parent) if isinstance(parent, os.PathLike) else parent, "cpu"
    )
    model = copy.deepcopy(loaded.model).cpu()
    card = ModelCard.from_dict(copy.deepcopy(loaded.card.to_dict()))
    note: dict[str, Any] = {"start": "checkpoint", "head": "kept"}
    if list(card.classes) != classes:
        note["head"] = "new"
        note["kept_classes"] = replace_head(model, card.classes, classes)
        card.arch_kwargs["num_classes"] = len(classes)
        card.classes = classes
    card.parent = loaded.card.model_id or None
    card.temperature = 1.0
    card.metrics = {}
    # the parent's training domain (and its reference features, which are
    # not carried over) describes other data: a child would flag its own
    # images as "outside the domain"; its test-time augmentation was chosen
    # for the parent's task.  Neither is inherited.
    card.domain = {}
    card.tta = []
    card.model_id = card.created = ""
    card.provenance = {
        "parent_name": loaded.card.name,
        "domain": "not inherited from the parent; no domain guard",
    }
    return model.train(), card, note


#: CLI/widget names of the volume architectures -> (registry name, input
#: kind, extra arguments)
VOLUME_ARCHS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cnn_rnn": ("cnn_rnn", "sequence", {"hidden_size": 64, "slice_features": "avgmax"}),
    "slice_pool": (
        "slice_pool",
        "sequence",
        {"pooling": "max", "slice_features": "avgmax"},
    ),
    "resnet3d": ("resnet", "volume", {"spatial_dims": 3}),
    "densenet3d": ("densenet", "volume", {"spatial_dims": 3}),
}


#: a sequence model that learns from lesion masks: a full-resolution slice
#: encoder (``lesion_fcn``) with a per-pixel evidence map (see
#: :class:`~napari_medcnn.models.cnn_rnn.SliceEncoder`), a fresh one at
#: :data:`EVIDENCE_SIZE` pixels
EVIDENCE_KWARGS: dict[str, Any] = {
    "encoder": "lesion_fcn",
    "encoder_kwargs": {"activation": "leaky_relu"},
    "slice_features": "evidence",
}
#: the 3D ResNet that learns from lesion masks (see
#: :class:`~napari_medcnn.models.lesion_resnet3d.LesionResNet3D`)
EVIDENCE_3D_KWARGS: dict[str, Any] = {
    "evidence": True,
    "block_inplanes": [8, 24, 48, 48],
}
EVIDENCE_SIZE = (96, 96)
#: epochs of the slice stage (:mod:`.slice_stage`) of such a model
EVIDENCE_SLICE_EPOCHS = 15


def with_lesion_masks(
    config: TrainConfig,
    slice_epochs: int | None = None,
    freeze_epochs: int | None = None,
) -> TrainConfig:
    """``config`` for a sequence model trained with lesion masks: the slice
    stage teaches the encoder where lesions are (``slice_epochs``, default
    :data:`EVIDENCE_SLICE_EPOCHS`), then the
    volume stage trains the RNN and head on its evidence with the encoder
    frozen for ``freeze_epochs`` (default: every epoch, when there is a
    slice stage).  A copy; ``config`` is not changed."""
    from dataclasses import replace

    if slice_epochs is None:
        slice_epochs = EVIDENCE_SLICE_EPOCHS
    slice_epochs = max(0, int(slice_epochs))
    if freeze_epochs is None:
        freeze_epochs = config.epochs if slice_epochs else 0
    return replace(
        config, slice_epochs=slice_epochs, freeze_backbone_epochs=freeze_epochs
    )


def evidence_kwargs(arch: str | None) -> dict[str, Any] | None:
    """The registry arguments of ``arch``'s lesion-mask variant (a copy),
    or None when ``arch`` does not learn from masks (2D models, DenseNet)."""
    if arch in VOLUME_ARCHS and VOLUME_ARCHS[arch][1] == "sequence":
        return copy.deepcopy(EVIDENCE_KWARGS)
    if arch == "resnet3d":
        return copy.deepcopy(EVIDENCE_3D_KWARGS)
    return None


def is_evidence(arch_kwargs: dict[str, Any] | None) -> bool:
    """Whether registry arguments make a lesion-mask (evidence) model."""
    kw = arch_kwargs or {}
    return kw.get("slice_features") == "evidence" or bool(kw.get("evidence"))


def is_volume_arch(arch: str) -> bool:
    """True for the names in :data:`VOLUME_ARCHS`."""
    return arch in VOLUME_ARCHS


def volume_record_for(
    arch: str,
    parent_card: ModelCard,
    slices: int,
    *,
    size: Sequence[int] | None = None,
    encoder: bool = True,
    modality: str | None = None,
    spacing_mm: float | None = None,
    slice_axis: str = "axial",
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """The volume record a new ``arch`` model is trained with.

    A sequence model whose slice encoder starts from ``parent_card``'s 2D
    model (``encoder``) keeps that model's slice preparation and in-plane
    size; otherwise (3D CNNs, a fresh encoder) intensities are mapped per
    volume (``modality``: MR percentiles, CT window) at ``size`` (default
    64 x 64).  The other arguments are
    :func:`~napari_medcnn.preprocessing.volume.volume_record`'s.

    Raises:
        ValueError: the encoder would come from a model that is not 2D.
    """
    from napari_medcnn.preprocessing.volume import volume_record

    base = None
    if VOLUME_ARCHS[arch][1] == "sequence" and encoder:
        if parent_card.input_kind != "slice":
            raise ValueError(
                f"'{parent_card.name or parent_card.arch}' is not a 2D model: a "
                "CNN+RNN's slice encoder starts from a 2D model"
            )
        base = parent_card.preprocessing
        size = size or list(parent_card.input_size[-2:])
    return volume_record(
        slices,
        size or (64, 64),
        base=base,
        modality=modality,
        spacing_mm=spacing_mm,
        slice_axis=slice_axis,
        window=window,
    )


def start_volume_model(
    classes: Sequence[str],
    arch: str,
    record: dict[str, Any],
    *,
    encoder_from: Any = None,
    arch_kwargs: dict[str, Any] | None = None,
    in_channels: int = 1,
    channel_names: Sequence[str] = (),
) -> tuple[nn.Module, ModelCard, dict[str, Any]]:
    """A fresh volume model (see :data:`VOLUME_ARCHS`), its card and a note.

    Args:
        classes: class names, in output order.
        arch: ``cnn_rnn``, ``slice_pool``, ``resnet3d`` or ``densenet3d``.
        record: the volume record (:func:`~napari_medcnn.preprocessing.
            volume.volume_record`) its inputs are prepared with.
        encoder_from: sequence models: a 2D checkpoint (path or
            LoadedModel) whose architecture and weights start the slice
            encoder; its class head is not used.  None: a fresh
            ``seed_cnn`` encoder.
        arch_kwargs: extra registry arguments (hidden size, pooling...).
        in_channels, channel_names: the input channels.
    """
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ValueError(
            f"training needs at least 2 classes, got {len(classes)}: "
            f"{classes}; define another class and label examples of it"
        )
    if arch not in VOLUME_ARCHS:
        raise ValueError(f"unknown volume architecture {arch!r}: {list(VOLUME_ARCHS)}")
    from napari_medcnn.models import build_model

    name, kind, extra = VOLUME_ARCHS[arch]
    kwargs: dict[str, Any] = {**extra, "in_channels": in_channels}
    note: dict[str, Any] = {"start": "scratch", "head": "new", "arch": arch}
    parent_2d = None
    member = None  # which ensemble member starts the slice encoder
    if kind == "sequence":
        kwargs["spatial_dims"] = 3
        if encoder_from is not None:
            from napari_medcnn.models.checkpoint import resolve_model

            parent_2d = resolve_model(
                os.fspath(encoder_from)
                if isinstance(encoder_from, os.PathLike)
                else encoder_from,
                "cpu",
            )
            pc = parent_2d.card
            if pc.input_kind != "slice":
                raise ValueError(
                    f"the slice encoder must come from a 2D model, not "
                    f"'{pc.name or pc.arch}' ({pc.input_kind})"
                )
            # a slice encoder is one network: an ensemble's first member
            member = 0 if pc.arch == "ensemble" else None
            spec = (
                pc.arch_kwargs["members"][member]
                if member is not None
                else {"arch": pc.arch, "arch_kwargs": pc.arch_kwargs}
            )
            enc_arch = spec["arch"]
            enc_kwargs = {
                k: v
                for k, v in spec["arch_kwargs"].items()
                if k not in ("spatial_dims", "in_channels", "num_classes")
            }
            kwargs.update(encoder=enc_arch, encoder_kwargs=enc_kwargs)
    kwargs.update(arch_kwargs or {})
    kwargs["num_classes"] = len(classes)
    model = build_model(name, **kwargs)
    if parent_2d is not None:
        if parent_2d.card.in_channels == in_channels:
            source = parent_2d.model.cpu()
            if member is not None:
                source = source.members[member]
                note["encoder_member"] = member
            copied = model.load_encoder_from(source)
            note.update(start="encoder", encoder_tensors=len(copied))
        else:
            note["encoder"] = (
                f"not initialised: the 2D model takes {parent_2d.card.in_channels} "
                f"channel(s), these volumes {in_channels}"
            )
    card = ModelCard(
        arch=name,
        arch_kwargs=kwargs,
        classes=classes,
        spatial_dims=3,
        in_channels=in_channels,
        channel_names=list(channel_names),
        input_size=list(record["size"]),
        input_kind=kind,
        preprocessing=copy.deepcopy(record),
    )
    if parent_2d is not None:
        pc = parent_2d.card
        card.parent = pc.model_id or None
        card.provenance["encoder_from"] = {
            "model_id": pc.model_id,
            "name": pc.name,
            "arch": pc.arch,
            **({"member": member} if member is not None else {}),
        }
    return model.train(), card, note
