"""The label store of an image layer (no Qt): Label images and Fine-tune.

:func:`scan_path_of` finds the file or DICOM folder a layer came from, and
:func:`open_store` opens its :class:`~napari_medcnn.training.labels.store.
LabelStore` (the sidecar beside the scan, reloaded when the scan is opened
again; in memory for layers without a writable file).  The labelling panel
mirrors the labels into ``metadata[LABELS_KEY]``; :func:`stored_labels`
reads them back for the Fine-tune panel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.widgets._common.layers import level0

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
