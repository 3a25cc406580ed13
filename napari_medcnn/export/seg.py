"""A labels layer or a region probability map as a DICOM Segmentation,
written with highdicom (pure core, no Qt).

* **Labels** (integers, 0 background, label ``k`` = segment ``k``):
  a BINARY SEG with one segment per label value 1..max.
* **Probabilities** (floats in 0..1, a trailing class axis ``(..., K)`` or
  one class): a FRACTIONAL SEG of type PROBABILITY (stored 0..255), one
  segment per class.

Frames are aligned with the source: one per source slice that holds any
segment (empty frames are left out), with that slice's position and
orientation (:mod:`.sources`).  Each segment's property type is the
class's code (private scheme ``99NMEDCNN`` or the card's own; see
:mod:`.common`), category *Morphologically Altered Structure* (SNOMED CT
49755003) unless told; segments made by a model carry its Algorithm
Identification (name, id; family Artificial Intelligence) and algorithm
type AUTOMATIC, hand-drawn labels MANUAL.  ContentLabel ``MEDCNN_SEG``,
series description ``napari-medcnn segmentation — not for diagnostic
use``; patient and study copied from the source.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.export.common import (
    MANUFACTURER,
    Algorithm,
    ExportError,
    class_code,
    common_kwargs,
    write_result,
)
from napari_medcnn.export.sources import SourceImages, source_images

__all__ = ["CONTENT_LABEL", "segmentation", "write_segmentation"]

CONTENT_LABEL = "MEDCNN_SEG"
SERIES_NUMBER = 9904


def segmentation(
    data: np.ndarray,
    source: Any,
    *,
    segment_names: Sequence[str] | None = None,
    algorithm: Algorithm | None = None,
    category: Any = None,
    series_instance_uid: str | None = None,
) -> Any:
    """The SEG of a labels array or of class probability maps.

    Args:
        data: on the scan's grid: integer labels (S, H, W) / (H, W) for a
            BINARY SEG, or float probabilities (S, H, W[, K]) / (H, W[, K])
            in 0..1 for a FRACTIONAL one.
        source: the scan (:class:`~napari_medcnn.io.Scan`), its layer
            metadata, or :class:`~.sources.SourceImages`.
        segment_names: one name per segment (label 1.. / class 0..);
            default the algorithm's classes (probabilities), else
            ``label <k>``.
        algorithm: the model that made it (:class:`~.common.Algorithm`);
            None: drawn by hand (MANUAL, no algorithm identification).
        category: the segments' property category (a highdicom or pydicom
            code); default Morphologically Altered Structure.

    Returns:
        a ``highdicom.seg.Segmentation``.

    Raises:
        ExportError: no DICOM source, an empty labels layer, values out of
            range, or an array not on the scan's grid.
    """
    import highdicom as hd
    from highdicom.sr import CodedConcept

    src = source if isinstance(source, SourceImages) else source_images(source)
    a = np.asarray(data)
    n_slices = len(src.slices)
    fractional = np.issubdtype(a.dtype, np.floating)
    if fractional:
        grid_ndim = 2 if n_slices == 1 else 3
        if a.ndim == grid_ndim:
            a = a[..., None]
        if a.ndim != grid_ndim + 1:
            raise ExportError(
                f"probability map of shape {a.shape} does not fit a scan of "
                f"{n_slices} slice(s)"
            )
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise ExportError("probabilities must be finite and within 0..1")
        n_seg = a.shape[-1]
        frames = src.frames_in_source_order(a).astype(np.float32)
        kind = "FRACTIONAL"
    else:
        if a.dtype == bool:
            a = a.astype(np.uint8)
        if a.size and a.min() < 0:
            raise ExportError("labels must be 0 (background) or positive")
        n_seg = int(a.max()) if a.size else 0
        if n_seg == 0:
            raise ExportError("the labels layer is empty: nothing to write")
        if n_seg > 65535:
            raise ExportError(f"{n_seg} labels: a SEG holds at most 65535")
        frames = src.frames_in_source_order(a)
        frames = frames.astype(np.uint8 if n_seg < 256 else np.uint16)
        kind = "BINARY"
    names = list(segment_names or [])
    if not names:
        if fractional and algorithm is not None and len(algorithm.classes) == n_seg:
            names = list(algorithm.classes)
        else:
            names = [f"label {k + 1}" for k in range(n_seg)]
    if len(names) < n_seg:
        names += [f"label {k + 1}" for k in range(len(names), n_seg)]
    category = category or CodedConcept(
        "49755003", "SCT", "Morphologically Altered Structure"
    )
    recorded = algorithm.codes if algorithm is not None else None
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=str(names[k])[:64],
            segmented_property_category=category,
            segmented_property_type=class_code(str(names[k]), recorded),
            algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
            algorithm_identification=(
                algorithm.algorithm_sequence() if algorithm is not None else None
            ),
            tracking_uid=hd.UID(),
            tracking_id=f"segment {k + 1}",
        )
        for k in range(n_seg)
    ]
    who = algorithm or Algorithm(name="napari labels", model_id="manual")
    return hd.seg.Segmentation(
        source_images=src.datasets,
        pixel_array=frames,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=series_instance_uid or hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=who.name[:64],
        software_versions=who.version[:64],
        device_serial_number=who.device_uid,
        fractional_type="PROBABILITY",
        content_label=CONTENT_LABEL,
        content_description="napari-medcnn segmentation",
        **common_kwargs(who, "segmentation"),
    )


def write_segmentation(
    data: np.ndarray,
    source: Any,
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write :func:`segmentation` atomically to ``out`` (a ``.dcm`` file,
    or a folder: then ``SEG_<modality>_s<n>_<hex>.dcm``); ``options`` go
    to it (segment names, algorithm, category)."""
    src = source if isinstance(source, SourceImages) else source_images(source)
    seg = segmentation(data, src, **options)
    return write_result(seg, out, src.first, "SEG", overwrite=overwrite)
