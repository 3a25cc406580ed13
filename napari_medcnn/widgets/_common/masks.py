"""Lesion masks painted in napari (no Qt): Label images and Fine-tune.

A mask is a napari Labels layer on a volume's grid (same shape, scale and
translate), linked to its image layer by ``metadata[MASK_OF]`` (the image
layer's ``unique_id``), so renaming either layer keeps the link.  Label
images creates it (*Draw lesion mask*), keeps it in the mask file beside the
scan's label sidecar (:mod:`napari_medcnn.training.labels.masks`) and
restores it from there; Fine-tune hands it to training with the volume's
label, where it supervises a CNN+RNN's evidence map.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_medcnn.widgets._common.layers import level0

#: Labels layer metadata key: the ``unique_id`` of the image it masks
MASK_OF = "medcnn_mask_of"


def mask_layer_of(viewer: Any, image: Any) -> Any:
    """The Labels layer linked to ``image`` (on its grid), or None."""
    from napari.layers import Labels

    want = str(image.unique_id)
    shape = tuple(level0(image).shape)
    for lay in viewer.layers:
        if (
            isinstance(lay, Labels)
            and (lay.metadata or {}).get(MASK_OF) == want
            and tuple(np.shape(lay.data)) == shape
        ):
            return lay
    return None


def mask_file_of(store: Any):
    """The mask file beside ``store``'s sidecar, or None (labels in memory)."""
    from napari_medcnn.training.labels.masks import mask_path

    return None if getattr(store, "path", None) is None else mask_path(store.path)


def open_mask_layer(viewer: Any, image: Any, store: Any = None) -> Any:
    """The lesion-mask Labels layer of ``image``: the linked one, else a new
    one (``"<image> lesion mask"``, on the image's grid) filled from the
    mask file beside ``store``'s sidecar when there is one.

    Raises:
        LabelsError: the mask file is damaged or on another grid.
    """
    from napari_medcnn.training.labels.masks import load_mask

    found = mask_layer_of(viewer, image)
    if found is not None:
        return found
    shape = tuple(level0(image).shape)
    path = mask_file_of(store)
    data = None if path is None else load_mask(path, shape)
    if data is None:
        data = np.zeros(shape, np.uint8)
    return viewer.add_labels(
        data,
        name=f"{image.name} lesion mask",
        scale=image.scale,
        translate=image.translate,
        metadata={MASK_OF: str(image.unique_id)},
        opacity=0.5,
    )


def save_mask_layer(layer: Any, store: Any):
    """Write ``layer``'s mask beside ``store``'s sidecar (atomically; an
    empty mask removes the file).  Returns the path, or None when there is
    nothing to keep or nowhere to keep it (labels in memory)."""
    from napari_medcnn.training.labels.masks import save_mask

    path = mask_file_of(store)
    if path is None:
        return None
    return save_mask(path, np.asarray(layer.data))


def painted_mask(viewer: Any, image: Any, store: Any = None) -> np.ndarray | None:
    """The lesion mask of ``image`` for training: its linked layer when one
    is open and painted, else the mask file beside ``store``'s sidecar;
    None when there is none.

    Raises:
        LabelsError: the mask file is damaged or on another grid.
    """
    from napari_medcnn.training.labels.masks import load_mask

    lay = mask_layer_of(viewer, image)
    if lay is not None:
        data = np.asarray(lay.data)
        return (data != 0).astype(np.uint8) if data.any() else None
    path = mask_file_of(store)
    if path is None:
        return None
    return load_mask(path, tuple(level0(image).shape))
