"""Read NIfTI-1/NIfTI-2 files (``.nii``, ``.nii.gz``) into a :class:`Scan`.

Orientation convention (the same as an axial DICOM series read by
``io.series``): the returned array is indexed ``(z, y, x)`` where

* ``x`` runs patient Right -> Left,
* ``y`` runs Anterior -> Posterior,
* ``z`` runs Inferior -> Superior,

i.e. the voxel axes ``(x, y, z)`` have the LPS axis codes ``('L', 'P', 'S')``.
Every file is reoriented to that layout by flips and axis permutations only
(no resampling).  An oblique file is reoriented to its *closest* canonical
axes; ``Scan.affine`` then stays the exact (oblique) index ``(z, y, x, 1)``
-> LPS mm map, and the header's own RAS affine is kept in
``metadata['affine_ras_original']``.  NIfTI affines are RAS, so the first two
rows are negated to obtain LPS.

Dimensions beyond the third (time, vector components) are not shown: the
first volume (index 0 on every extra axis) is loaded, and a ``multi_volume``
quality warning says how many there were.  The plugin's models and widgets
work on 2D/3D scans, and an fMRI run can hold hundreds of volumes, so loading
them all would cost memory for nothing.

A 2D file (or a 3D file with exactly one axis of length 1) becomes a 2D scan
``(y, x)``; its affine's ``z`` column is the direction of the dropped axis.
A coronal or sagittal slice has rows running Superior -> Inferior, so that
the head is upright on screen, as the same slice read from DICOM is.

Intensities: ``scl_slope``/``scl_inter`` are applied and the data is returned
as float32 (RGB24/RGBA32 files as uint8 RGB).  Spatial units in
``xyzt_units`` (metre, micron) are converted to mm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.io.scan import (
    QualityReport,
    Scan,
    ScanReadError,
    geometry_from_affine,
)

ORIENTATION = (
    "array (z, y, x): x Right->Left, y Anterior->Posterior, "
    "z Inferior->Superior (voxel axcodes L, P, S)"
)
_TARGET_AXCODES = ("L", "P", "S")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 1e-3}
_AFFINE_SOURCE = {True: "sform", False: "qform"}


def nifti_stem(path: str | os.PathLike) -> str:
    """File name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def load_nifti(path: str | os.PathLike) -> Scan:
    """Read a NIfTI file and reorient it to the plugin's (z, y, x) LPS layout.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file (NIfTI-1 or NIfTI-2).

    Returns:
        A :class:`Scan` whose ``data`` is float32 in the file's (rescaled)
        units, ``spacing`` in mm per array axis, ``origin`` the napari
        translate in mm and ``affine`` the index ``(z, y, x, 1)`` -> LPS mm map.

    Raises:
        ScanReadError: the file is missing, corrupt, not a NIfTI volume (for
            example CIFTI-2) or holds fewer than two dimensions.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise ScanReadError(path, "no such file")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for broken files
        raise ScanReadError(path, f"not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise ScanReadError(
            path,
            f"{type(img).__name__} is not a NIfTI volume "
            "(CIFTI and surface files are not supported)",
        )
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ScanReadError(path, f"NIfTI image of shape {shape} is not an image")

    quality = QualityReport()
    try:
        arr, rgb = _read_first_volume(img)
    except Exception as exc:  # truncated / corrupt payload
        raise ScanReadError(path, f"cannot read the voxel data ({exc})") from exc
    n_volumes = int(np.prod(shape[3:])) if len(shape) > 3 else 1
    if n_volumes > 1:
        quality.add(
            "multi_volume",
            f"{path.name}: {len(shape)}D NIfTI with {n_volumes} volumes "
            f"(shape {shape}); only the first volume is loaded",
        )

    header = img.header
    affine_ras, affine_source = _header_affine(img, quality, path.name)
    spatial_shape = arr.shape[:-1] if rgb else arr.shape
    if len(spatial_shape) == 2:
        arr = arr[:, :, None] if not rgb else arr[:, :, None, :]
        spatial_shape = (*spatial_shape, 1)

    data, affine = _reorient(arr, _fix_degenerate_columns(affine_ras), spatial_shape)
    data, affine = _squeeze_2d(data, affine, rgb)
    if not rgb:
        data = np.ascontiguousarray(data, dtype=np.float32)
        if not np.isfinite(data).all():
            quality.add(
                "non_finite",
                f"{path.name}: contains NaN or infinite voxels",
                severity="info",
            )
    else:
        data = np.ascontiguousarray(data)

    spacing, origin, dirs = geometry_from_affine(affine)
    nd = data.ndim - (1 if rgb else 0)
    if nd == 2:
        spacing, origin = spacing[1:], origin[1:]
    window = _cal_window(header)
    metadata: dict[str, Any] = {
        "format": "nifti",
        "nifti_version": 2 if isinstance(img, nib.Nifti2Image) else 1,
        "orientation": ORIENTATION,
        "original_axcodes": "".join(
            c or "?" for c in nib.orientations.aff2axcodes(affine_ras)
        ),
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "affine_source": affine_source,
        "affine_ras_original": np.asarray(affine_ras, float).tolist(),
        "oblique_deg": _obliquity_deg(dirs),
        "original_shape": list(shape),
        "n_volumes": n_volumes,
        "volume_index": 0,
        "spatial_units": header.get_xyzt_units()[0],
        "source_path": str(path),
    }
    return Scan(
        data=data,
        spacing=tuple(spacing),
        origin=tuple(origin),
        affine=affine,
        name=nifti_stem(path),
        modality=None,
        rgb=rgb,
        axis_labels=("z", "y", "x")[-nd:],
        units=("mm",) * nd,
        window=window,
        metadata=metadata,
        quality=quality,
        source_paths=[str(path)],
    )


def _read_first_volume(img: Any) -> tuple[np.ndarray, bool]:
    """Voxel data of volume 0 (scaled, float32) and whether it is RGB."""
    nd = len(img.shape)
    slicer = (slice(None),) * min(nd, 3) + (0,) * max(0, nd - 3)
    raw_dtype = img.header.get_data_dtype()
    if raw_dtype.names:  # RGB24 / RGBA32: structured voxels, never scaled
        rec = np.asanyarray(img.dataobj[slicer])
        arr = np.stack([rec[c] for c in ("R", "G", "B")], axis=-1)
        return arr.astype(np.uint8, copy=False), True
    arr = np.asanyarray(img.dataobj[slicer])  # ArrayProxy applies scl_slope/inter
    return arr.astype(np.float32, copy=False), False


def _header_affine(
    img: Any, quality: QualityReport, name: str
) -> tuple[np.ndarray, str]:
    """The voxel (i, j, k) -> RAS mm affine nibabel chose, and which one it was."""
    header = img.header
    sform, qform = int(header["sform_code"]), int(header["qform_code"])
    if sform > 0 or qform > 0:
        source = _AFFINE_SOURCE[sform > 0]
        affine = np.asarray(img.affine, dtype=float)
    else:
        source = "base (no qform/sform)"
        affine = np.asarray(header.get_base_affine(), dtype=float)
        quality.add(
            "no_orientation",
            f"{name}: the NIfTI header has no qform or sform; patient "
            "orientation is assumed from the voxel sizes only",
        )
    if not np.isfinite(affine).all():
        affine = np.asarray(header.get_base_affine(), dtype=float)
        source = "base (header affine not finite)"
        quality.add("bad_affine", f"{name}: header affine is not finite; ignored")
    unit = header.get_xyzt_units()[0]
    factor = _UNIT_TO_MM.get(unit, 1.0)
    if factor != 1.0:
        affine = affine.copy()
        affine[:3, :] *= factor
    return affine, source


def _fix_degenerate_columns(affine: np.ndarray) -> np.ndarray:
    """Give a zero-length voxel axis (common for the third axis of 2D files) a
    unit length along the normal of the other two, so the map is invertible."""
    a = np.array(affine, dtype=float)
    norms = np.linalg.norm(a[:3, :3], axis=0)
    bad = np.flatnonzero(norms < 1e-12)
    if bad.size == 1:
        i = int(bad[0])
        u, v = (a[:3, j] for j in range(3) if j != i)
        n = np.cross(u, v)
        if np.linalg.norm(n) > 0:
            sign = 1.0 if i != 1 else -1.0  # (i, j, k) right-handed
            a[:3, i] = sign * n / np.linalg.norm(n)
    elif bad.size > 1:
        for i in bad:
            a[:3, int(i)] = np.eye(3)[int(i)]
    return a


def _reorient(
    arr: np.ndarray, affine_ras: np.ndarray, spatial_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Flip/permute voxel axes to LPS codes and transpose to (z, y, x).

    Returns the array and its index ``(z, y, x, 1)`` -> LPS mm affine.
    """
    from nibabel.orientations import (
        apply_orientation,
        axcodes2ornt,
        inv_ornt_aff,
        io_orientation,
        ornt_transform,
    )

    start = io_orientation(affine_ras)
    transform = ornt_transform(start, axcodes2ornt(_TARGET_AXCODES))
    out = apply_orientation(arr, transform)
    aff_ras = affine_ras @ inv_ornt_aff(transform, spatial_shape)
    aff_lps = _RAS_TO_LPS @ aff_ras
    affine = aff_lps[:, [2, 1, 0, 3]]
    axes = (2, 1, 0) + tuple(range(3, out.ndim))
    return out.transpose(axes), affine


def _squeeze_2d(
    data: np.ndarray, affine: np.ndarray, rgb: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Drop the one singleton spatial axis, moving its affine column to z.

    A coronal or sagittal slice (the dropped axis is y or x) keeps z as its
    rows, flipped to run Superior -> Inferior: the head is shown upright, as
    the same slice read from DICOM (column direction 0, 0, -1) is.
    """
    spatial = data.shape[:3]
    singles = [i for i, s in enumerate(spatial) if s == 1]
    if len(singles) != 1:
        return data, affine
    p = singles[0]
    order = [p] + [i for i in range(3) if i != p]
    data = data.transpose(order + list(range(3, data.ndim)))[0]
    affine = affine[:, order + [3]]
    if p != 0:  # rows are z (I -> S): flip them to S -> I
        data = data[::-1]
        affine = affine.copy()
        affine[:, 3] += (data.shape[0] - 1) * affine[:, 1]
        affine[:, 1] *= -1.0
    return data, affine


def _obliquity_deg(dirs: np.ndarray) -> float:
    """Largest angle (degrees) between an array axis and its nearest LPS axis."""
    cos = np.clip(np.abs(dirs).max(axis=1), -1.0, 1.0)
    return float(np.degrees(np.arccos(cos)).max())


def _cal_window(header: Any) -> tuple[float, float] | None:
    """(center, width) from ``cal_min``/``cal_max`` when the file sets them."""
    lo, hi = float(header["cal_min"]), float(header["cal_max"])
    if np.isfinite(lo) and np.isfinite(hi) and hi > lo:
        return ((lo + hi) / 2.0, hi - lo)
    return None
