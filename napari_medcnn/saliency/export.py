"""Save a saliency map where other tools can read it (pure core, no Qt).

* ``.npy``: the map as float32, the source's array order (z, y, x) / (y, x).
* ``.nii`` / ``.nii.gz``: NIfTI aligned with the scan: the reader's
  convention inverted (``io/nifti.py``): data (z, y, x) becomes voxel
  (x, y, z) and the index (z, y, x) -> LPS affine becomes the voxel
  (i, j, k) -> RAS affine, so the file overlays the original scan in other
  viewers and reads back through :func:`napari_medcnn.io.load` with the
  source's spacing, translate and affine.  2D maps become one-slice volumes
  whose third axis is the affine's z column.
* ``.png``: a 2D map (or one slice of a volume) composited on the windowed
  scan with a colormap, values below a percentile threshold left out.
* ``.dcm``: a DICOM Parametric Map on the source series; it needs the
  scan's DICOM source, so it is written by
  :func:`napari_medcnn.export.pmap.write_parametric_map` (the ``explain``
  command calls it); :func:`write_map` refuses it.

Each file gets a JSON sidecar (``<stem>.json``) with the method, target,
model id, parameters and trust metrics: no patient data (keys such as
``patient_name`` or ``source_paths`` are dropped by ``results.scrub``).
Every write is atomic (a temporary file, then a rename).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FORMATS",
    "colormap_rgba",
    "map_format",
    "overlay_rgb",
    "saliency_record",
    "sidecar_path",
    "threshold_value",
    "write_map",
    "write_nifti",
    "write_npy",
    "write_png",
]

#: suffix -> format name
FORMATS = {
    ".npy": "npy",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".png": "png",
    ".dcm": "dicom",
}
_RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def map_format(path: str | os.PathLike) -> str:
    """``npy``, ``nifti``, ``png`` or ``dicom`` (a Parametric Map) from the
    file name (ValueError else)."""
    name = Path(path).name.lower()
    for suffix in (".nii.gz", ".nii", ".npy", ".png", ".dcm"):
        if name.endswith(suffix):
            return FORMATS[suffix]
    raise ValueError(
        f"{Path(path).name}: unknown map format; use .npy, .nii, .nii.gz, .png or .dcm"
    )


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar beside ``path``: ``map.nii.gz`` -> ``map.json``."""
    p = Path(path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".npy", ".png", ".dcm"):
        if name.lower().endswith(suffix):
            return p.with_name(name[: -len(suffix)] + ".json")
    return p.with_name(p.name + ".json")


def saliency_record(
    result: Any,
    *,
    source_name: str | None = None,
    model_name: str | None = None,
    spacing: Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """JSON-safe description of a :class:`SaliencyResult` (no map, no PHI).

    Args:
        result: the ``SaliencyResult``.
        source_name: the scan's layer name (the reader's names hold no PHI).
        model_name: the model card's display name.
        spacing: the scan's voxel size in mm, array order.
        extra: more keys (display threshold, colormap, output file...).

    Returns:
        dict with ``method``, ``target`` (class index), ``target_name``,
        ``model_id``, ``scope``, ``slice_index``, ``shape``, ``params``,
        ``metrics`` (deletion/insertion AUCs and curves, randomisation
        check), ``trust_checks`` (each check run: ``passed``, ``failed``
        or ``inconclusive``), ``slice_importance``, ``warnings`` (a
        ``TRUST CHECK ...`` line per failed check)...
    """
    from napari_medcnn.inference.records import json_safe, scrub

    rec: dict[str, Any] = {
        "kind": "napari-medcnn saliency",
        "version": 1,
        "source": source_name,
        "method": result.method,
        "target": result.target,
        "target_name": result.target_name,
        "model_id": result.model_id,
        "model_name": model_name,
        "scope": result.scope,
        "slice_index": result.slice_index,
        "shape": list(np.shape(result.map)),
        "spacing_mm": None if spacing is None else [float(s) for s in spacing],
        "value_range": "0..1, 1 at the 99.5th percentile of |map|",
        "params": result.params,
        "metrics": result.metrics,
        "slice_importance": result.slice_importance,
        "slice_attention": result.slice_attention,
        "trust_checks": dict((result.metrics or {}).get("trust_checks") or {}),
        "warnings": list(result.warnings),
        "elapsed_s": round(float(result.elapsed_s), 3),
    }
    rec.update(extra or {})
    return json_safe(scrub(rec))


# -- writers --------------------------------------------------------------------
def _write_bytes(path: Path, data: bytes) -> Path:
    from napari_medcnn._atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return path


def write_npy(path: str | os.PathLike, saliency: np.ndarray) -> Path:
    """Save ``saliency`` as float32 ``.npy`` (array order kept)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(saliency, dtype=np.float32))
    return _write_bytes(Path(path), buf.getvalue())


def nifti_affine(affine_lps: np.ndarray) -> np.ndarray:
    """Index (z, y, x, 1) -> LPS mm affine -> voxel (i, j, k) = (x, y, z)
    -> RAS mm affine: the inverse of the reader's conversion."""
    a = np.asarray(affine_lps, dtype=float).reshape(4, 4)
    return _RAS_FROM_LPS @ a[:, [2, 1, 0, 3]]


def write_nifti(
    path: str | os.PathLike,
    saliency: np.ndarray,
    affine_lps: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    description: str = "",
) -> Path:
    """Save a map as NIfTI-1 aligned with its scan (gzipped for ``.nii.gz``).

    Args:
        saliency: (z, y, x) or (y, x), array order of the scan.
        affine_lps: the scan's 4x4 index (z, y, x, 1) -> LPS mm affine
            (``Scan.affine`` / ``layer.metadata["affine"]``); None: an
            axis-aligned one from ``spacing`` (mm, default 1) at the origin.
        description: the header's ``descrip`` (80 characters at most).

    Returns:
        the path written.
    """
    import nibabel as nib

    m = np.asarray(saliency, dtype=np.float32)
    if m.ndim not in (2, 3):
        raise ValueError(f"expected a 2D or 3D map, got shape {m.shape}")
    vol = m[None] if m.ndim == 2 else m
    if affine_lps is None:
        sp = [1.0] * 3 if spacing is None else [float(s) for s in spacing]
        sp = ([1.0] * 3 + sp)[-3:]
        # the reader's axial layout: index z, y, x runs along S, P, L
        affine_lps = np.eye(4)
        affine_lps[:3, :3] = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]]) * sp
    affine_ras = nifti_affine(affine_lps)
    data = np.ascontiguousarray(vol.transpose(2, 1, 0))  # (x, y, z)
    img = nib.Nifti1Image(data, affine_ras)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    img.header["cal_min"], img.header["cal_max"] = 0.0, 1.0
    img.set_qform(affine_ras, code=1)
    img.set_sform(affine_ras, code=1)
    raw = img.to_bytes()
    p = Path(path)
    if p.name.lower().endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=6, mtime=0)
    return _write_bytes(p, raw)


def colormap_rgba(name: str = "inferno", n: int = 256, ramp: float = 0.1) -> np.ndarray:
    """(n, 4) RGBA of a matplotlib colormap whose alpha rises from 0 at the
    low end to 1 at ``ramp`` of the range: the lowest value (a map at or
    below the threshold) is transparent and the edge is soft."""
    import matplotlib

    t = np.linspace(0.0, 1.0, n)
    rgba = np.asarray(matplotlib.colormaps[name](t), dtype=np.float32)
    rgba[:, 3] = np.clip(t / ramp, 0.0, 1.0) if ramp > 0 else (t > 0)
    return rgba


def threshold_value(saliency: np.ndarray, percentile: float) -> float:
    """The map value below which an overlay hides values.

    ``percentile`` (0-100) of the map's positive values: 0 hides only
    zeros, 80 hides the weakest 80 % of the salient voxels.  0.0 for an
    empty map.
    """
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in 0..100, not {percentile}")
    m = np.asarray(saliency)
    if percentile <= 0:
        return 0.0
    flat = m.reshape(-1)
    flat = flat[:: max(1, flat.size // 2_000_000)]  # a sample is enough
    pos = flat[flat > 0]
    return float(np.percentile(pos, percentile)) if pos.size else 0.0


def window_gray(
    image: np.ndarray, window: tuple[float, float] | None = None
) -> np.ndarray:
    """A scan as [0, 1] float RGB (H, W, 3): gray through ``window``
    (center, width; default the robust 0.5-99.5 % range), RGB as is."""
    from napari_medcnn.io.scan import robust_limits

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        rgb = a[..., :3].astype(np.float32)
        hi = 255.0 if rgb.max() > 1 else 1.0
        return np.clip(rgb / hi, 0, 1)
    if window is not None and window[1] > 0:
        lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    else:
        lo, hi = robust_limits(a)
    g = np.clip((a.astype(np.float32) - lo) / max(hi - lo, 1e-12), 0, 1)
    return np.repeat(g[..., None], 3, axis=-1)


def overlay_rgb(
    image: np.ndarray,
    saliency: np.ndarray,
    *,
    window: tuple[float, float] | None = None,
    colormap: str = "inferno",
    opacity: float = 0.6,
    threshold: float = 0.0,
    blending: str = "translucent",
) -> np.ndarray:
    """Composite a 2D map on the windowed scan, as napari draws it.

    Args:
        image: (H, W) scan or (H, W, 3) RGB; saliency: (H, W) in [0, 1].
        window: (center, width) of the scan; colormap: matplotlib name.
        opacity: overlay opacity (0-1); threshold: map values at or below
            it are not drawn (see :func:`threshold_value`).
        blending: ``translucent`` (alpha blend) or ``additive``.

    Returns:
        uint8 (H, W, 3).
    """
    m = np.asarray(saliency, dtype=np.float32)
    base = window_gray(image, window)
    if base.shape[:2] != m.shape:
        raise ValueError(f"map {m.shape} does not match the image {base.shape[:2]}")
    # as napari draws it: contrast limits (threshold, 1), colormap_rgba
    lut = colormap_rgba(colormap)
    hi = max(1.0, threshold + 1e-6)
    scaled = np.clip((m - threshold) / (hi - threshold), 0, 1)
    rgba = lut[np.round(scaled * (len(lut) - 1)).astype(int)]
    color = rgba[..., :3]
    alpha = (float(opacity) * rgba[..., 3])[..., None]
    if blending == "additive":
        out = base + alpha * color
    elif blending == "translucent":
        out = base * (1 - alpha) + alpha * color
    else:
        raise ValueError(f"blending must be translucent or additive: {blending!r}")
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def write_png(
    path: str | os.PathLike,
    saliency: np.ndarray,
    image: np.ndarray,
    *,
    slice_index: int | None = None,
    rgb: bool = False,
    **overlay: Any,
) -> Path:
    """Save the map composited on the scan (:func:`overlay_rgb`) as PNG.

    Args:
        saliency: (H, W), or (S, H, W) with ``slice_index``.
        image: the scan, same spatial shape (+ RGB axis when ``rgb``).
        slice_index: the slice of a volume to draw.
        overlay: ``window``, ``colormap``, ``opacity``, ``threshold``,
            ``blending`` (see :func:`overlay_rgb`).
    """
    from PIL import Image

    m, img = np.asarray(saliency), np.asarray(image)
    if m.ndim == 3:
        if slice_index is None:
            raise ValueError(
                "a PNG holds one 2D image: give slice_index, or export the "
                "volume as .nii.gz or .npy"
            )
        m = m[slice_index]
        img = img[slice_index]
    elif m.ndim != 2:
        raise ValueError(f"expected a 2D or 3D map, got shape {m.shape}")
    if rgb and img.ndim != 3:
        raise ValueError("rgb image needs a trailing colour axis")
    buf = io.BytesIO()
    Image.fromarray(overlay_rgb(img, m, **overlay)).save(buf, format="PNG")
    return _write_bytes(Path(path), buf.getvalue())


def write_map(
    path: str | os.PathLike,
    result: Any,
    *,
    image: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
    window: tuple[float, float] | None = None,
    rgb: bool = False,
    source_name: str | None = None,
    model_name: str | None = None,
    overlay: dict[str, Any] | None = None,
    sidecar: bool = True,
    overwrite: bool = False,
) -> tuple[Path, Path | None]:
    """Write ``result.map`` in the format its suffix names, plus a sidecar.

    Args:
        path: ``.npy``, ``.nii``/``.nii.gz`` or ``.png``.
        result: a ``SaliencyResult``.
        image: the scan (needed for PNG).
        affine: the scan's index (z, y, x, 1) -> LPS mm affine (NIfTI).
        spacing: the scan's voxel size in mm, array order.
        window: the scan's display window (center, width), for PNG.
        overlay: PNG drawing options (``colormap``, ``opacity``,
            ``threshold_percentile``, ``blending``).
        sidecar: also write ``<stem>.json`` (:func:`saliency_record`).
        overwrite: replace existing files; by default an existing map or
            sidecar (say, a classification export named ``<stem>.json``)
            is refused with ``OverwriteError`` before anything is written.

    Returns:
        (map path, sidecar path or None).
    """
    from napari_medcnn._atomic import check_overwrite

    fmt = map_format(path)
    if fmt == "dicom":
        raise ValueError(
            f"{Path(path).name}: a DICOM Parametric Map needs the scan's DICOM "
            "source; write it with napari_medcnn.export.pmap.write_parametric_map"
        )
    check_overwrite(
        [path, sidecar_path(path) if sidecar else None], overwrite=overwrite
    )
    opts = dict(overlay or {})
    pct = float(opts.pop("threshold_percentile", 0.0))
    extra: dict[str, Any] = {"file": Path(path).name, "format": fmt}
    if fmt == "npy":
        out = write_npy(path, result.map)
    elif fmt == "nifti":
        desc = f"saliency {result.method} {result.target_name} {result.model_id}"
        out = write_nifti(path, result.map, affine, spacing, desc)
        if affine is not None:
            extra["affine_lps"] = np.asarray(affine, float).tolist()
            extra["affine_ras"] = nifti_affine(affine).tolist()
    else:
        if image is None:
            raise ValueError("a PNG overlay needs the scan image")
        k = result.slice_index
        if np.ndim(result.map) == 3 and k is None:
            k = int(
                np.argmax(np.asarray(result.map).reshape(len(result.map), -1).max(1))
            )
        m2 = result.map[k] if np.ndim(result.map) == 3 else result.map
        opts["threshold"] = threshold_value(m2, pct)
        out = write_png(path, result.map, image, slice_index=k, rgb=rgb,
                        window=window, **opts)  # fmt: skip
        extra.update(png_slice=k, overlay={**opts, "threshold_percentile": pct})
    side = None
    if sidecar:
        from napari_medcnn._atomic import atomic_write_text

        rec = saliency_record(
            result, source_name=source_name, model_name=model_name,
            spacing=spacing, extra=extra,
        )  # fmt: skip
        side = atomic_write_text(sidecar_path(path), json.dumps(rec, indent=2) + "\n")
    return out, side
