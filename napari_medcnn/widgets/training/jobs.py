"""Worker jobs of the Fine-tune widget (no Qt widgets; torch imported lazily).

:func:`train_job` prepares the labelled examples of the open layers with
the parent card's preprocessing, then fine-tunes in the worker thread
(``mode="thread"``) or in a spawned process (``mode="subprocess"``, core
``run_in_subprocess``), with ``threads`` torch threads (all cores but one:
one is left for napari).  Either way the checkpoint goes to a *staging*
path first, also when the run is cancelled (its best-so-far weights), and
:func:`publish` copies it atomically to the user's path once the run
completed; the parent checkpoint is never written.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.widgets._common.jobs import JobError, guarded

MODES = ("thread", "subprocess")
#: chosen by benchmarks/finetune_stall.py on an otherwise idle 2-core machine:
#: a spawned process kept napari's longest event-loop stall at 84-88 ms (the
#: idle floor under Xvfb is 83-97 ms) and trained 2x faster, against
#: 116-117 ms for a worker thread, whose Python steps contend for the GIL
DEFAULT_MODE = "subprocess"


def ui_threads() -> int:
    """Torch threads for training: all cores but one (kept for the UI)."""
    return max(1, (os.cpu_count() or 2) - 1)


def parent_card(parent: str | None) -> Any:
    """The card whose preprocessing prepares the examples: the parent's,
    or for a fresh start a seed-CNN card with the default record."""
    from napari_medcnn.models.checkpoint import read_card

    if parent is not None:
        return read_card(parent)
    from napari_medcnn.models.checkpoint import default_model_path

    return read_card(default_model_path())


def prepare_examples(
    sources: Sequence[dict[str, Any]], record: dict[str, Any], input_kind: str
) -> Generator[tuple[str, int, int], None, Any]:
    """A :class:`LabeledSet` of every labelled scan, classes without labels
    dropped.  ``sources``: dicts with ``labels`` (a sidecar dict),
    ``images`` (channel arrays), ``spacing``, ``rgb`` and optionally
    ``mask`` (a volume's painted lesion mask; volume models only)."""
    from napari_medcnn.training.data.dataset import LabeledSet, examples_from_scan
    from napari_medcnn.training.labels.store import LabelStore

    parts, classes = [], []
    yield ("prepare", 0, len(sources))
    for i, src in enumerate(sources, 1):
        store = LabelStore.from_dict(src["labels"])
        store.autosave = False  # a copy: never write the sidecar from here
        classes += [c for c in store.classes if c not in classes]
        parts.append(
            examples_from_scan(
                store,
                src["images"],
                record,
                src.get("spacing"),
                rgb=bool(src.get("rgb")),
                input_kind=input_kind,
                mask=None if input_kind == "slice" else src.get("mask"),
            )
        )
        yield ("prepare", i, len(sources))
    return LabeledSet.concat(parts, classes).without_empty_classes()


def volume_start(
    arch: str, card: Any, slices: int, sources: Sequence[dict[str, Any]]
) -> tuple[dict[str, Any], str]:
    """(volume record, input kind) of a new volume model:
    a sequence model keeps the 2D parent's slice preparation and starts its
    encoder from it, unless lesion masks were painted (then a fresh
    full-resolution encoder, see :func:`uses_lesion_masks`); a 3D CNN maps
    intensities per volume (a CT window when the first labelled layer is
    CT)."""
    from napari_medcnn.training.transfer import (
        EVIDENCE_SIZE,
        VOLUME_ARCHS,
        volume_record_for,
    )

    if card.input_kind != "slice":
        raise ValueError(
            f"'{card.name or card.arch}' already reads volumes: fine-tune it "
            "with the architecture '2D slices (the parent's network)'"
        )
    modality = next((s.get("modality") for s in sources if s.get("modality")), None)
    if uses_lesion_masks(arch, sources):
        # full resolution up to EVIDENCE_SIZE: small scans are not upsampled
        largest = max(max(src["images"][0].shape[-2:]) for src in sources)
        size = [min(int(s), int(largest)) for s in EVIDENCE_SIZE]
        record = volume_record_for(
            arch, card, slices, size=size, encoder=False, modality=modality
        )
    else:
        record = volume_record_for(arch, card, slices, modality=modality)
    return record, VOLUME_ARCHS[arch][1]


def uses_lesion_masks(arch: str | None, sources: Sequence[dict[str, Any]]) -> bool:
    """Whether a new ``arch`` model learns from painted lesion masks: a
    sequence model (CNN+RNN, slice pool) or a 3D ResNet, and at least one
    masked volume."""
    from napari_medcnn.training.transfer import evidence_kwargs

    if evidence_kwargs(arch) is None:
        return False
    return any(src.get("mask") is not None for src in sources)


def train_job(
    sources: Sequence[dict[str, Any]],
    parent: str | None,
    staging: str,
    config: Any,
    control: Any,
    *,
    mode: str = DEFAULT_MODE,
    threads: int | None = None,
    kfold: int | str | None = "auto",
    val_fraction: float = 0.2,
    provenance: dict[str, Any] | None = None,
    arch: str | None = None,
    slices: int = 32,
) -> Generator[Any, None, dict[str, Any]]:
    """Prepare, fine-tune, write ``staging``; a generator for a worker.

    ``config`` is a ``TrainConfig`` or a dict of its fields (the widget
    builds a dict, so that torch is imported in the worker only).

    Yields ``("prepare", i, n)`` then the trainer's ``TrainEvent``s.
    Returns the run's summary (``FinetuneResult.summary()`` plus
    ``history``, ``cancelled`` and ``staging``).  Running out of memory
    raises :class:`JobError` with the advice (nothing is published).

    ``arch`` (``cnn_rnn``, ``slice_pool``, ``resnet3d``, ``densenet3d``)
    trains a new volume model on the volume labels, ``slices`` slices per
    volume (a CNN+RNN's slice encoder starts from ``parent``, a 2D model);
    None: the parent's own kind (2D fine-tuning, or a volume parent).
    """
    from napari_medcnn.training.trainer import TrainConfig

    if isinstance(config, dict):
        config = TrainConfig(**config)
    card = parent_card(parent)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    volume = volume_start(arch, card, slices, sources) if arch else None
    record, kind = (card.preprocessing, card.input_kind) if volume is None else volume
    data = yield from prepare_examples(sources, record, kind)
    args = {
        "data": data,
        "parent": parent,
        "out": staging,
        "config": config,
        "kfold": kfold,
        "val_fraction": val_fraction,
        "save_cancelled": True,
        "provenance": provenance,
    }
    if volume is not None:  # a new volume model
        # a sequence model's slice encoder starts from the parent (none:
        # "from scratch"); a 3D CNN always starts fresh
        encoder = parent if kind == "sequence" else None
        args.update(parent=None, arch=arch, record=record, encoder_from=encoder)
        if uses_lesion_masks(arch, sources):
            # painted masks: a fresh evidence encoder, slice stage first
            from napari_medcnn.training.transfer import (
                evidence_kwargs,
                with_lesion_masks,
            )

            args.update(
                encoder_from=None,
                arch_kwargs=evidence_kwargs(arch),
                config=with_lesion_masks(config),
            )
    elif parent is None:  # from scratch: the examples' preprocessing
        args["record"] = card.preprocessing
    threads = threads or ui_threads()
    if mode == "subprocess":
        from napari_medcnn.training.subprocess_runner import (
            finetune_job,
            run_in_subprocess,
        )

        gen = run_in_subprocess(finetune_job, args, control=control, threads=threads)
        try:
            summary = yield from gen
        except RuntimeError as exc:  # SubprocessError: the child's exception
            first = str(exc).splitlines()[0] if str(exc) else repr(exc)
            raise JobError(_friendly(first)) from exc
    else:
        summary = yield from guarded(_in_thread(args, control, threads))
    summary["staging"] = staging
    return summary


def _in_thread(args: dict[str, Any], control: Any, threads: int) -> Generator:
    import torch

    from napari_medcnn.training.finetune import finetune
    from napari_medcnn.training.trainer import TrainingOutOfMemory

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data, parent = args.pop("data"), args.pop("parent")
        res = yield from finetune(data, parent, control=control, **args)
    except TrainingOutOfMemory as exc:
        raise JobError(_friendly(f"TrainingOutOfMemory: {exc}")) from exc
    finally:
        torch.set_num_threads(old)
    summary = res.summary()
    summary.update(history=res.history, cancelled=res.cancelled)
    return summary


def _friendly(message: str) -> str:
    if message.startswith("TrainingOutOfMemory"):
        return "Out of memory: " + message.split(":", 1)[1].strip()
    return message


def checkpoint_paths(out: str | Path) -> tuple[Path, Path]:
    """The (weights, card) files that :func:`publish` writes for ``out``."""
    from napari_medcnn.models.checkpoint import card_path_for

    dst = Path(out)
    if dst.suffix != ".safetensors":
        dst = dst.with_suffix(".safetensors")
    return dst, card_path_for(dst)


def publish(staging: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Copy the staged checkpoint (weights + card) to ``out`` atomically.

    Returns the written weights path.  The card's ``model_id`` is the
    weights' hash, so the copy is the same model.

    Raises:
        OverwriteError: the weights or card file exists and ``overwrite``
            is off (nothing is written).
    """
    from napari_medcnn._atomic import check_overwrite
    from napari_medcnn.models.checkpoint import (
        atomic_write_bytes,
        card_path_for,
        weights_path_for,
    )

    src = weights_path_for(staging)
    dst, card = checkpoint_paths(out)
    check_overwrite([dst, card], overwrite=overwrite)
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(card_path_for(dst), card_path_for(src).read_bytes())
    atomic_write_bytes(dst, src.read_bytes())
    return dst


def preview_job(
    source: dict[str, Any],
    parent: str | None,
    augment: dict,
    arch: str | None = None,
    slices: int = 32,
) -> Any:
    """Nine augmented copies of the first labelled example, as a montage
    (2D float32).  A volume example (a volume parent, or ``arch`` set)
    shows nine slices, evenly spaced, of one augmented copy: what the
    volume model is trained on."""
    from napari_medcnn.training.preview import augmentation_preview, montage

    card = parent_card(parent)
    record, kind = (
        volume_start(arch, card, slices, [source])
        if arch
        else (card.preprocessing, card.input_kind)
    )
    data = yield from prepare_examples([source], record, kind)
    if kind != "slice":
        vol = augmentation_preview(data.x[0], config=augment, n=2, seed=0)[1]
        picks = np.linspace(0, vol.shape[1] - 1, 9).round().astype(int)
        return montage(vol[:1, picks].transpose(1, 0, 2, 3), cols=3)
    samples = augmentation_preview(data.x[0], config=augment, n=9, seed=0)
    if samples.ndim == 5:  # (n, C, D, H, W): the middle slice
        samples = samples[:, :, samples.shape[2] // 2]
    return montage(samples[:, :1], cols=3)
