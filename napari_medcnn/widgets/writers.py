"""npe2 writers ("File > Save Selected Layers"): a Labels layer as a DICOM
SEG or NIfTI, a saliency overlay as a DICOM Parametric Map or NIfTI.

The suffix chooses the format: ``.dcm`` (DICOM, with
:mod:`napari_medcnn.export`) or ``.nii`` / ``.nii.gz``.  Both need the
scan the layer lies on: its ``metadata["source_paths"]`` (the DICOM files)
and ``metadata["affine"]`` (index -> LPS mm), taken from the layer itself,
else from the layer named in its ``metadata["source_layer"]`` (overlays
and result layers), else from the one image layer of the current viewer
read from files with the same grid.  A layer not on a DICOM scan is
refused with a message that says why (ValueError, which napari shows).
Labels become a BINARY SEG (one segment per label value); an overlay
becomes a float32 Parametric Map labelled as class activation (see
:mod:`napari_medcnn.export.pmap`).
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import numpy as np

__all__ = ["write_labels", "write_overlay"]

_NIFTI = (".nii", ".nii.gz")


def _is_nifti(path: str) -> bool:
    return path.lower().endswith(_NIFTI)


def _viewer_layers() -> list[Any]:
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # no Qt, no viewer: the layer's own metadata only
        return []
    return list(viewer.layers) if viewer is not None else []


def source_metadata(meta: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Any]:
    """The metadata (``source_paths``, ``affine``) of the scan a layer with
    ``meta`` (npe2's layer attributes) and spatial ``shape`` lies on.

    Raises:
        ValueError: no such scan (the message says what to do).
    """
    md = dict(meta.get("metadata") or {})
    name = meta.get("name") or "the layer"
    if md.get("source_paths"):
        return md
    layers = _viewer_layers()
    wanted = md.get("source_layer")
    if wanted:
        for layer in layers:
            if layer.name == wanted and layer.metadata.get("source_paths"):
                return dict(layer.metadata)
    same = [
        layer
        for layer in layers
        if layer.metadata.get("source_paths")
        and not getattr(layer, "rgb", False)
        and tuple(np.shape(layer.data)) == tuple(shape)
    ]
    if len(same) == 1:
        return dict(same[0].metadata)
    raise ValueError(
        f"{name}: cannot tell which scan it belongs to (no source files in its "
        "metadata, and "
        + ("several" if same else "no")
        + " open image layers read from files have its shape); DICOM and NIfTI "
        "results need the scan they were made on"
    )


def _affine(md: dict[str, Any]) -> np.ndarray | None:
    a = md.get("affine")
    return None if a is None else np.asarray(a, float)


def _n_slices(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) == 3 else 1


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer for a Labels layer: ``.dcm`` a BINARY DICOM SEG (one
    segment per label value, on the source series), ``.nii``/``.nii.gz``
    a NIfTI (uint8 or uint16 labels) with the scan's affine."""
    from napari_medcnn.export.seg import write_segmentation
    from napari_medcnn.export.sources import source_images

    labels = np.asarray(data)
    md = source_metadata(meta, labels.shape)
    if _is_nifti(path):
        dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
        return [str(_write_nifti(path, labels.astype(dtype), _affine(md)))]
    src = source_images(
        md, n_slices=_n_slices(labels.shape), name=meta.get("name") or None
    )
    return [str(write_segmentation(labels, src, path, overwrite=True))]


def write_overlay(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 writer for a saliency overlay (an Image layer the Saliency
    widget made): ``.dcm`` a float32 DICOM Parametric Map on the source
    series, ``.nii``/``.nii.gz`` a NIfTI with the scan's affine."""
    from napari_medcnn.export.pmap import write_parametric_map
    from napari_medcnn.export.sources import source_images
    from napari_medcnn.saliency.export import write_nifti

    own = dict(meta.get("metadata") or {})
    record = own.get("saliency")
    name = meta.get("name") or "the layer"
    if not isinstance(record, dict):
        raise ValueError(
            f"{name}: not a saliency overlay; save scans with their own "
            "writer, and overlays made by the Saliency widget here"
        )
    saliency = np.asarray(data, np.float32)
    md = source_metadata(meta, saliency.shape)
    if _is_nifti(path):
        desc = f"saliency {record.get('method')} {record.get('target_name')}"
        return [str(write_nifti(path, saliency, _affine(md), description=desc))]
    result = SimpleNamespace(
        map=saliency,
        method=str(record.get("method") or "saliency"),
        target_name=str(record.get("target_name") or ""),
        model_id=str(record.get("model_id") or ""),
        model_name=str(record.get("model_name") or ""),
        classes=(),
    )
    src = source_images(md, n_slices=_n_slices(saliency.shape), name=name)
    return [str(write_parametric_map(result, src, path, overwrite=True))]


def _write_nifti(path: str, labels: np.ndarray, affine_lps: np.ndarray | None) -> str:
    """Integer labels as NIfTI-1, aligned like
    :func:`napari_medcnn.saliency.export.write_nifti` (atomic)."""
    import gzip

    import nibabel as nib

    from napari_medcnn._atomic import atomic_write
    from napari_medcnn.saliency.export import nifti_affine

    vol = labels[None] if labels.ndim == 2 else labels
    if affine_lps is None:
        affine_lps = np.eye(4)
    ras = nifti_affine(affine_lps)
    img = nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), ras)
    img.header.set_xyzt_units("mm")
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    raw = img.to_bytes()
    if path.lower().endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=6, mtime=0)
    atomic_write(path, raw)
    return os.fspath(path)
