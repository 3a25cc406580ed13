"""Label stores of layers and the labelling widget's worker jobs (no Qt).

* :func:`scan_path_of` finds the file or DICOM folder a layer came from,
  and :func:`open_store` opens its :class:`~napari_medcnn.training.labels.store.
  LabelStore` (the sidecar beside the scan, reloaded when the scan is
  opened again; in memory for layers without a writable file).
* :func:`region_job` samples patches around painted pixels, trains the
  patch classifier and slides it over the image; :func:`next_case_job`
  ranks the unlabelled slices/images ("Next case").  Both are generators
  for ``thread_worker``; torch is imported only inside them.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.widgets._jobs import JobError, guarded

#: layer metadata key holding a JSON copy of the layer's labels (no PHI), so
#: the Fine-tune widget sees the labels of layers without a sidecar too
LABELS_KEY = "medcnn_labels"


def scan_path_of(layer: Any) -> Path | None:
    """The file or DICOM folder ``layer`` was read from, or None.

    Tries ``layer.source.path``, then ``metadata["source_path"]``, then the
    folder of ``metadata["source_paths"]`` (several files: a DICOM series).
    """
    source = getattr(getattr(layer, "source", None), "path", None)
    md = getattr(layer, "metadata", None) or {}
    if source:
        return Path(source)
    if md.get("source_path"):
        return Path(md["source_path"])
    paths = md.get("source_paths") or []
    if len(paths) == 1:
        return Path(paths[0])
    if paths:
        return Path(paths[0]).parent
    return None


def n_slices_of(layer: Any) -> int | None:
    """Slices along the first axis of a 3D layer, None for a 2D image."""
    return int(level0(layer).shape[0]) if layer.ndim == 3 else None


def level0(layer: Any) -> Any:
    """Full-resolution data of a (possibly multiscale) layer."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def _writable(path: Path) -> bool:
    folder = path if path.is_dir() else path.parent
    return folder.exists() and os.access(folder, os.W_OK)


def open_store(layer: Any, classes: Sequence[str] = ()) -> Any:
    """The :class:`LabelStore` of ``layer`` (its sidecar, or in memory).

    A damaged sidecar is moved aside and the ``.bak`` copy used (the reason
    is in ``store.warnings``).  Layers without a writable source file are
    kept in memory (and mirrored to ``metadata[LABELS_KEY]``).
    """
    from napari_medcnn.training.labels.store import LabelStore

    md = dict(layer.metadata or {})
    n = n_slices_of(layer)
    path = scan_path_of(layer)
    if path is not None and path.exists() and _writable(path):
        return LabelStore.open(
            path, md, None, n_slices=n, classes=tuple(classes), on_error="reset"
        )
    mirrored = md.get(LABELS_KEY)
    if mirrored:
        try:
            store = LabelStore.from_dict(mirrored)
            for c in classes:
                store.add_class(c)
            return store
        except ValueError:
            pass
    store = LabelStore.open(
        None, md, np.asarray(level0(layer)), n_slices=n, classes=tuple(classes)
    )
    if path is not None:
        store.warnings.append(
            f"{path.name}: its folder is not writable; labels are kept in memory"
        )
    return store


def stored_labels(layer: Any, classes: Sequence[str] = ()) -> Any:
    """The labels of ``layer`` for training: the widget's mirror in the
    layer metadata, else its sidecar; None when it has none."""
    from napari_medcnn.training.labels.store import LabelStore

    mirrored = (layer.metadata or {}).get(LABELS_KEY)
    if mirrored:
        try:
            return LabelStore.from_dict(mirrored)
        except ValueError:
            pass
    path = scan_path_of(layer)
    if path is None or not path.exists():
        return None
    store = open_store(layer, classes)
    return store if store.items() else None


# -- worker jobs -------------------------------------------------------------
def region_job(
    image: np.ndarray,
    labels: np.ndarray,
    scale: Sequence[float],
    patch_mm: float,
    patch_dims: int,
    class_names: dict[int, str],
    parent: str | None,
    out: str,
    control: Any,
    epochs: int = 10,
) -> Generator[Any, None, tuple[Any, Any]]:
    """Patches -> patch classifier -> class-probability map, in a worker.

    Yields ``("patches", 0, 0)``, the trainer's ``TrainEvent``s and
    ``("probability_map", i, n)``.  Returns ``(FinetuneResult, ProbabilityMap)``
    (the map is None when the run was cancelled).
    """
    from napari_medcnn.training.labels.regions import (
        PATCH_AUGMENT,
        probability_map,
        sample_patches,
        train_patch_classifier,
    )
    from napari_medcnn.training.trainer import TrainConfig

    yield ("patches", 0, 0)
    patches = sample_patches(
        image,
        labels,
        scale=scale,
        patch_mm=patch_mm,
        patch_dims=patch_dims,
        class_names=class_names,
    )
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, augment=PATCH_AUGMENT)
    res = yield from guarded(
        train_patch_classifier(
            patches, parent, out=out, config=cfg, control=control, kfold=None
        )
    )
    if res.cancelled:
        return res, None
    pm = yield from guarded(probability_map(image, res))
    return res, pm


def next_case_job(scans: list[dict[str, Any]], model: Any) -> Generator:
    """Rank the unlabelled slices/images of ``scans`` (see
    :func:`~napari_medcnn.training.labels.active.rank_candidates`); returns the
    ``Ranking``.  A multi-channel model is refused with a message."""
    from napari_medcnn.inference.predict import resolve_model
    from napari_medcnn.training.labels.active import rank_candidates

    loaded = resolve_model(model)
    if loaded.card.in_channels != 1 or loaded.card.input_kind != "slice":
        raise JobError(
            f"'Next case' ranks single slices; the model "
            f"'{loaded.card.name or loaded.card.arch}' takes "
            f"{loaded.card.in_channels} channel(s) of {loaded.card.input_kind}s"
        )
    return (yield from guarded(rank_candidates(scans, model=loaded)))
