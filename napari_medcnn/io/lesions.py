"""Synthetic lesions in real healthy volumes: labelled test data from anatomy.

**For tests and benchmarks only.**  The lesions made here are smooth
ellipsoids of one intensity (with an optional brighter rim), put at random
into one healthy head; they look nothing like the variety of real tumours,
oedema, haemorrhage or artefacts, and every volume of a cohort shares the
anatomy of its one source.  A model trained on them learns to find bright
or dark blobs in that head, nothing more: never train, calibrate or
validate anything that sounds clinical on them.  What they are good for is
a cheap, labelled, reproducible check of the plumbing on real anatomy:
does training run, does the classifier separate an obvious difference, does
a saliency map or slice-importance curve peak where the lesion is
(``info["slice_range"]``)?

The generator, for one volume (:func:`make_cohort` does it ``n`` times):

1. **Source.**  A healthy 3D volume in the reader's array order (z, y, x)
   with its voxel size in mm: the Colin27 T1 head (:func:`find_colin27`:
   the copy shipped in ``napari_medcnn/data``, else Debian's
   ``mricron-data``), any NIfTI file, or any :class:`~napari_medcnn.io.scan.Scan`
   that ``napari_medcnn.io.load`` returns (DICOM series, NIfTI).
2. **Grid** (:func:`output_grid`, optional).  The head's bounding box plus
   a margin (``crop``), resampled to ``shape`` (S, H, W voxels) or by
   ``zoom``; the spacing (mm) and the affine follow, so the written files
   keep true physical sizes (anisotropic when the box's aspect differs
   from the shape's).  The source is smoothed once against aliasing.
3. **Geometric variation** (:func:`resample`).  A small random rigid
   motion of the head inside that grid (a rotation of a few degrees, a
   shift of a few mm, in physical mm so anisotropic voxels are handled),
   one linear interpolation (``scipy.ndimage.affine_transform``, order 1)
   straight from the source.
4. **Lesion** (:func:`insert_lesion`, lesion volumes only), *after* the
   motion, so its mask is exact on the written grid: an ellipsoid with
   random diameters (4-15 mm by default, in mm, whatever the voxel size),
   random orientation, centred on a random voxel deep enough inside the
   foreground (Otsu threshold, holes filled, largest component; the
   distance to its edge, in mm, must exceed the largest semi-axis plus a
   margin).  Its intensity is the local tissue's (median under the mask)
   plus a random fraction of the foreground's intensity spread (1st to
   99th percentile), bright by default, so it works on any intensity
   scale (MR units, HU).  An optional enhancing rim is a brighter shell.
   The edge is a sigmoid of the signed distance to the ellipsoid surface
   (``edge_mm``), so there is no hard step.
5. **Intensity variation** (:func:`vary_intensity`).  A smooth
   multiplicative bias field (the exponential of a random quadratic
   polynomial) and a global intensity scale, both on the intensity above
   the background level, and Gaussian noise.  It acts on the lesion too,
   as a scanner would.

Every random choice comes from numpy generators seeded per volume
(``[seed, index, stream]``), so one seed makes the same files, and a
volume's anatomy and intensity draws do not depend on whether it got a
lesion.

:func:`make_cohort` writes ``vol_000.nii.gz``... (float32, an affine with
the grid's spacing; the reader loads them back in the same array order),
``labels.csv`` (``path,label,group``; ``lesion`` or ``normal``; each volume
its own group; paths relative to the CSV's folder, as
``napari_medcnn.training.labels.csv.read_label_csv`` reads them), and
``lesions.json`` (per volume: label, slice range along axis 0 of the array
as ``napari_medcnn.io.load`` returns it, centre, diameters, contrast), and
optionally the masks (``masks/vol_000.nii.gz``, then also a ``mask``
column in ``labels.csv``, empty for normal volumes).  Every file is written
atomically, and existing files are only replaced with ``overwrite=True``.
``scripts/make_lesion_volumes.py`` is its command line.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from io import StringIO
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_medcnn._atomic import atomic_write, atomic_write_text, check_overwrite
from napari_medcnn.io.scan import Scan, ScanReadError

__all__ = [
    "COLIN27_DEBIAN",
    "COLIN27_SHIPPED",
    "Grid",
    "PreparedSource",
    "SourceError",
    "SourceLike",
    "SourceVolume",
    "Variation",
    "find_colin27",
    "foreground_mask",
    "insert_lesion",
    "load_source",
    "make_cohort",
    "make_volume",
    "otsu_threshold",
    "output_grid",
    "prefilter",
    "prepare_source",
    "resample",
    "vary_intensity",
    "write_nifti",
]

#: the Colin27 T1 head shipped with the plugin (1 mm, 181 x 217 x 181)
COLIN27_SHIPPED = Path(__file__).resolve().parents[1] / "data" / "colin27_t1.nii.gz"
#: the same head in Debian's ``mricron-data`` package
COLIN27_DEBIAN = Path("/usr/share/mricron/templates/ch2.nii.gz")
#: what every written file says about itself
PURPOSE = (
    "synthetic lesions for tests and benchmarks only; not for training or "
    "validating any clinical model"
)
Polarity = Literal["bright", "dark", "either"]
ProgressCallback = Callable[[tuple[str, int, int]], Any]


class SourceError(ValueError):
    """A source cannot be used: not a 3D volume, too few slices, no head.

    The message names the source (file or scan name) and the reason.
    """

    def __init__(self, source: Any, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


# ---------------------------------------------------------------- sources


@dataclass(frozen=True)
class SourceVolume:
    """A healthy volume to put lesions into.

    Attributes:
        data: float32 (S, H, W) in the reader's array order (z, y, x).
        spacing_mm: voxel size in mm per array axis.
        affine: 4x4 index ``(z, y, x, 1)`` -> patient mm (LPS, as
            :class:`~napari_medcnn.io.scan.Scan`).
        name: the file's path or the scan's name, for error messages
            (written files keep only its last part).
    """

    data: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    name: str


#: what :func:`load_source` takes: ``"colin27"``, a NIfTI path, a Scan, a
#: SourceVolume, or ``(array, spacing_mm)``
SourceLike = (
    str | os.PathLike | Scan | SourceVolume | tuple[np.ndarray, Sequence[float]]
)


def find_colin27() -> Path | None:
    """The Colin27 T1 head: the plugin's shipped copy, else Debian's
    ``mricron-data`` (``/usr/share/mricron/templates/ch2.nii.gz``); None
    when neither exists."""
    for path in (COLIN27_SHIPPED, COLIN27_DEBIAN):
        if path.is_file():
            return path
    return None


def load_source(
    source: SourceLike,
) -> SourceVolume:
    """Turn ``source`` into a checked :class:`SourceVolume`.

    Args:
        source: ``"colin27"``; a NIfTI path (read with the plugin's NIfTI
            reader, so in the same orientation as ``napari_medcnn.io.load``);
            a :class:`~napari_medcnn.io.scan.Scan` (for DICOM and anything
            else, load it with ``napari_medcnn.io.load`` first); a
            :class:`SourceVolume`; or ``(array, spacing_mm)`` with a (z, y, x)
            array (the affine is then diagonal).

    Raises:
        ScanReadError: a file is missing or unreadable (names the file).
        SourceError: not a grey 3D volume with at least 3 voxels along each
            axis, or not finite (names the source).
    """
    if isinstance(source, SourceVolume):
        return _checked(source.data, source.spacing_mm, source.affine, source.name)
    if isinstance(source, Scan):
        if source.rgb:
            raise SourceError(source.name, "is an RGB image, not a grey volume")
        return _checked(source.data, source.spacing, source.affine, source.name)
    if isinstance(source, tuple):
        data, spacing = source
        spacing = tuple(float(s) for s in spacing)
        affine = np.diag([*spacing, 1.0]) if len(spacing) == 3 else None
        return _checked(np.asarray(data), spacing, affine, "array")
    if isinstance(source, str) and source.lower() == "colin27":
        found = find_colin27()
        if found is None:
            raise ScanReadError(
                COLIN27_DEBIAN,
                "Colin27 not found (neither the shipped copy nor Debian's "
                "mricron-data: apt-get install mricron-data)",
            )
        source = found
    path = Path(source)
    name = path.name
    if not path.exists():
        raise ScanReadError(path, "no such file")
    if not name.lower().endswith((".nii", ".nii.gz")):
        raise SourceError(
            path,
            "not a NIfTI file; load other formats with napari_medcnn.io.load "
            "and pass the Scan",
        )
    from napari_medcnn.io.nifti import load_nifti

    scan = load_nifti(path)
    if scan.rgb:
        raise SourceError(path, "is an RGB image, not a grey volume")
    return _checked(scan.data, scan.spacing, scan.affine, str(path))


def _checked(
    data: np.ndarray, spacing: Sequence[float], affine: Any, name: str
) -> SourceVolume:
    data = np.asarray(data)
    if data.ndim != 3:
        kind = "a 2D image" if data.ndim == 2 else f"a {data.ndim}D array"
        raise SourceError(
            name, f"is {kind} of shape {data.shape}, not a volume (z, y, x)"
        )
    if min(data.shape) < 3:
        k = int(np.argmin(data.shape))
        what = f"{data.shape[0]} slices" if k == 0 else f"{data.shape[k]} voxels"
        raise SourceError(
            name,
            f"volume of shape {data.shape} (z, y, x) has {what} along axis {k}: "
            "fewer than 3; a lesion volume needs at least 3 slices of 3 x 3",
        )
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise SourceError(name, f"bad voxel spacing {spacing} (3 positive mm)")
    data = np.asarray(data, dtype=np.float32)
    if not np.isfinite(data).all():
        raise SourceError(name, "contains NaN or infinite voxels")
    if float(data.max()) <= float(data.min()):
        raise SourceError(name, "is constant: no head to put a lesion in")
    affine = np.diag([*spacing, 1.0]) if affine is None else np.asarray(affine, float)
    return SourceVolume(data, spacing, affine, name)  # type: ignore[arg-type]


# ------------------------------------------------------------- foreground


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any intensity units): the level that
    maximises the between-class variance of a ``bins``-bin histogram."""
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2.0
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def foreground_mask(
    volume: np.ndarray,
    *,
    threshold: float | None = None,
    percentile: float | None = None,
) -> np.ndarray:
    """The head (or body) of ``volume``: voxels above a threshold, holes
    filled, largest connected component only.

    Args:
        volume: a 3D array in any intensity units.
        threshold: the intensity level; default Otsu's (:func:`otsu_threshold`).
        percentile: use this percentile of the volume as the threshold
            instead (e.g. 30 for a head that fills 70 % of the volume).

    Returns:
        bool array of ``volume``'s shape (all False when nothing is above).
    """
    from scipy import ndimage

    v = np.asarray(volume, dtype=np.float32)
    if threshold is None:
        threshold = (
            float(np.percentile(v, percentile))
            if percentile is not None
            else otsu_threshold(v)
        )
    fg = v > threshold
    labels, n = ndimage.label(fg)
    if n == 0:
        return fg
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        fg = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(fg)


def _spread(values: np.ndarray, floor: float | None = None) -> float:
    """The intensity spread of ``values`` (foreground voxels): the 99th
    minus the 1st percentile; for a flat foreground, its height above
    ``floor`` (the volume's minimum), else 1."""
    lo, hi = (float(x) for x in np.percentile(values, [1, 99]))
    spread = hi - lo
    if spread <= 0 and floor is not None:
        spread = hi - float(floor)
    return spread if spread > 0 else 1.0


# ------------------------------------------------------------------ lesion


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation matrix."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=rng).as_matrix()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def insert_lesion(
    volume: np.ndarray,
    spacing_mm: Sequence[float],
    rng: np.random.Generator,
    *,
    diameter_mm: tuple[float, float] = (4.0, 15.0),
    contrast: tuple[float, float] = (0.3, 0.6),
    polarity: Polarity = "bright",
    rim: bool | float = False,
    rotate: bool = True,
    edge_mm: float = 0.5,
    margin_mm: float = 8.0,
    foreground: np.ndarray | None = None,
    slice_axis: int = 0,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Put one synthetic ellipsoidal lesion into ``volume``.

    Args:
        volume: 3D array (S, H, W) in any intensity units; not modified.
        spacing_mm: voxel size in mm per axis (anisotropic allowed).
        rng: the random generator (all draws come from it).
        diameter_mm: range of each of the three full axis lengths, in mm.
        contrast: range of the lesion's intensity offset from the local
            tissue (the median under the mask), as a fraction of the
            foreground's spread (99th minus 1st percentile; for a flat
            foreground, its height above the volume's minimum).
        polarity: ``"bright"`` (above the tissue), ``"dark"`` (below, not
            below the volume's minimum) or ``"either"`` (50/50).
        rim: an enhancing rim, a shell brighter than the lesion and the
            tissue: True always, False never, a number in [0, 1] the
            probability.
        rotate: random orientation; False keeps the axes along the array
            axes (axis k of ``axes_mm`` along array axis k).
        edge_mm: scale of the soft edge, mm: the blend weight is a sigmoid
            of minus the signed distance to the surface over this (0.5 on
            the surface, 0.88 one scale inside).  At least a quarter of the
            largest voxel side is used, so no step between neighbouring
            voxels exceeds about 3/4 of the contrast.
        margin_mm: the centre is at least the largest semi-axis plus this
            far (mm) from the foreground's edge; when no voxel is that deep,
            the margin shrinks to the largest voxel side, else
            :class:`ValueError`.
        foreground: bool mask of where the lesion may lie; default
            :func:`foreground_mask` of ``volume``.
        slice_axis: the axis of ``info["slice_range"]``.

    Returns:
        ``(new_volume, mask, info)``: float32 volume, bool mask (the voxels
        inside the ellipsoid; the soft edge reaches about two ``edge_mm``
        beyond it), and a dict with ``centre_voxel``, ``centre_mm``
        (voxel index times spacing, mm), ``axes_mm`` (the three diameters),
        ``rotation`` (3x3, columns the ellipsoid's axes in array-axis mm),
        ``contrast`` (signed fraction of the spread), ``polarity``,
        ``intensity`` and ``local_intensity``, ``spread``, ``rim``,
        ``rim_mm``, ``edge_mm``, ``margin_mm`` (the one used),
        ``n_voxels``, ``volume_mm3``, ``slice_axis`` and ``slice_range``
        (first and last index along ``slice_axis`` where the mask is set,
        inclusive).

    Raises:
        ValueError: bad arguments, or no voxel of the foreground is deep
            enough for the lesion.
    """
    from scipy import ndimage

    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"insert_lesion needs a 3D volume, got shape {vol.shape}")
    sp = np.asarray([float(s) for s in spacing_mm], dtype=np.float64)
    if sp.shape != (3,) or not (sp > 0).all():
        raise ValueError(f"spacing_mm must be 3 positive mm, got {spacing_mm}")
    d_lo, d_hi = (float(x) for x in diameter_mm)
    if not 0 < d_lo <= d_hi:
        raise ValueError(f"diameter_mm must be 0 < low <= high, got {diameter_mm}")
    c_lo, c_hi = (float(x) for x in contrast)
    if not 0 <= c_lo <= c_hi:
        raise ValueError(f"contrast must be 0 <= low <= high, got {contrast}")
    if polarity not in ("bright", "dark", "either"):
        raise ValueError(f"polarity must be bright, dark or either, not {polarity!r}")
    if not -3 <= slice_axis < 3:
        raise ValueError(f"slice_axis must be 0, 1 or 2, not {slice_axis}")
    slice_axis %= 3

    fg = foreground_mask(vol) if foreground is None else np.asarray(foreground, bool)
    if fg.shape != vol.shape:
        raise ValueError(f"foreground {fg.shape} does not match volume {vol.shape}")
    if not fg.any():
        raise ValueError("the volume has no foreground to put a lesion in")

    diam = rng.uniform(d_lo, d_hi, 3)
    semi = diam / 2.0
    rot = _rotation(rng) if rotate else np.eye(3)
    a_max = float(semi.max())

    depth = ndimage.distance_transform_edt(fg, sampling=sp)
    used_margin = float(margin_mm)
    candidates = np.flatnonzero(depth > a_max + used_margin)
    if candidates.size == 0:
        used_margin = float(sp.max())
        candidates = np.flatnonzero(depth > a_max + used_margin)
    if candidates.size == 0:
        raise ValueError(
            f"no room for a lesion of {2 * a_max:.1f} mm: the deepest "
            f"foreground voxel is {float(depth.max()):.1f} mm from its edge "
            f"(a lesion needs > {a_max + used_margin:.1f} mm); use smaller "
            "diameter_mm or a larger volume"
        )
    centre = np.array(
        np.unravel_index(int(rng.choice(candidates)), vol.shape), dtype=np.int64
    )

    # a quarter of the largest voxel side at least: no step between two
    # neighbouring voxels is more than ~3/4 of the contrast
    edge = max(float(edge_mm), 0.25 * float(sp.max()))
    # the box around the centre where the blend weight can exceed ~1e-4
    reach = a_max + 9.0 * edge
    half = np.ceil(reach / sp).astype(np.int64)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, vol.shape)
    grids = np.meshgrid(
        *[(np.arange(lo[k], hi[k]) - centre[k]) * sp[k] for k in range(3)],
        indexing="ij",
    )
    x = np.stack(grids, axis=-1)  # (..., 3) mm from the centre, array axes
    u = x @ rot  # coordinates along the ellipsoid's own axes
    r = np.sqrt(((u / semi) ** 2).sum(-1))
    grad = np.sqrt(((u / semi**2) ** 2).sum(-1)) / np.maximum(r, 1e-12)
    grad = np.maximum(grad, 1.0 / a_max)
    dist = (r - 1.0) / grad  # ~ signed distance to the surface, mm (< 0 inside)
    box = tuple(slice(int(lo[k]), int(hi[k])) for k in range(3))
    inside = r <= 1.0
    mask = np.zeros(vol.shape, dtype=bool)
    mask[box] = inside
    w = _sigmoid(-dist / edge)

    region = vol[box]
    local = float(np.median(region[inside]))
    floor = float(vol.min())
    spread = _spread(vol[fg], floor)
    c = float(rng.uniform(c_lo, c_hi))
    sign = {"bright": 1.0, "dark": -1.0}.get(polarity)
    if sign is None:
        sign = 1.0 if rng.random() < 0.5 else -1.0
    target = local + sign * c * spread
    if sign < 0:
        target = max(target, floor)
    has_rim = bool(rim) if isinstance(rim, bool) else bool(rng.random() < float(rim))

    new_region = region * (1.0 - w) + w * target
    rim_mm = 0.0
    if has_rim:
        rim_mm = float(min(max(0.25 * semi.min(), float(sp.min())), 0.5 * semi.min()))
        shell = w - _sigmoid(-(dist + rim_mm) / edge)
        rim_level = max(target, local) + 0.5 * max(c, 0.2) * spread
        new_region = new_region + shell * (rim_level - target)
    out = vol.copy()
    out[box] = new_region.astype(np.float32)

    other = tuple(k for k in range(3) if k != slice_axis)
    on = np.flatnonzero(mask.any(axis=other))
    n_vox = int(mask.sum())
    info: dict[str, Any] = {
        "centre_voxel": [int(v) for v in centre],
        "centre_mm": [float(v) for v in centre * sp],
        "axes_mm": [float(v) for v in diam],
        "rotation": rot.tolist(),
        "contrast": float(sign * c),
        "polarity": "bright" if sign > 0 else "dark",
        "intensity": float(target),
        "local_intensity": local,
        "spread": float(spread),
        "rim": has_rim,
        "rim_mm": rim_mm,
        "edge_mm": edge,
        "margin_mm": used_margin,
        "n_voxels": n_vox,
        "volume_mm3": float(n_vox * np.prod(sp)),
        "slice_axis": slice_axis,
        "slice_range": [int(on[0]), int(on[-1])],
    }
    return out, mask, info


# ---------------------------------------------------- grid and variation


@dataclass(frozen=True)
class Grid:
    """The grid volumes are written on, and how it maps into the source.

    Attributes:
        shape: (S, H, W) voxels.
        spacing_mm: voxel size in mm per axis.
        affine: 4x4 index ``(z, y, x, 1)`` -> the source's patient mm.
        to_source: 4x4 index on this grid -> (fractional) source index.
        prefilter_sigma: Gaussian smoothing of the source against aliasing,
            in source voxels per axis (0 where the grid is not coarser).
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    to_source: np.ndarray
    prefilter_sigma: tuple[float, float, float]


def output_grid(
    source: SourceVolume,
    *,
    shape: Sequence[int] | None = None,
    zoom: float | Sequence[float] | None = None,
    crop: bool = True,
    crop_margin_mm: float = 10.0,
    foreground: np.ndarray | None = None,
) -> Grid:
    """The grid of the generated volumes.

    Args:
        source: the healthy volume.
        shape: target (S, H, W) voxels; the box is stretched to it per
            axis, so the spacing may become anisotropic.
        zoom: instead of ``shape``, a factor (or one per axis) on the
            number of voxels: 0.5 halves the voxels along each axis.
        crop: the box is the foreground's bounding box plus
            ``crop_margin_mm`` on each side (room for the random motion),
            not the whole source.
        crop_margin_mm: see ``crop``, mm.
        foreground: the source's :func:`foreground_mask`, when already made.

    Raises:
        ValueError: both ``shape`` and ``zoom``, or a bad value.
    """
    if shape is not None and zoom is not None:
        raise ValueError("give shape or zoom, not both")
    sp = np.asarray(source.spacing_mm, dtype=np.float64)
    n_src = np.asarray(source.data.shape, dtype=np.float64)
    if crop:
        fg = foreground_mask(source.data) if foreground is None else foreground
        if not fg.any():
            raise SourceError(source.name, "no foreground (head) found to crop to")
        idx = [np.flatnonzero(fg.any(axis=tuple(j for j in range(3) if j != k)))
               for k in range(3)]  # fmt: skip
        pad = crop_margin_mm / sp
        start = np.array([i[0] for i in idx], float) - 0.5 - pad
        stop = np.array([i[-1] for i in idx], float) + 0.5 + pad
    else:
        start, stop = np.full(3, -0.5), n_src - 0.5
    length = stop - start  # in source voxels
    if shape is not None:
        out = np.asarray([int(s) for s in shape], dtype=np.int64)
        if out.shape != (3,) or (out < 3).any():
            raise ValueError(f"shape must be 3 sizes >= 3, got {tuple(shape)}")
    elif zoom is not None:
        z = np.broadcast_to(np.asarray(zoom, dtype=np.float64), (3,))
        if not (z > 0).all():
            raise ValueError(f"zoom must be positive, got {zoom}")
        out = np.maximum(np.round(length * z).astype(np.int64), 3)
    else:
        out = np.maximum(np.round(length).astype(np.int64), 3)
    f = length / out  # source voxels per output voxel
    to_source = np.eye(4)
    to_source[:3, :3] = np.diag(f)
    to_source[:3, 3] = start + 0.5 * f
    affine = np.asarray(source.affine, float) @ to_source
    sigma = np.where(f > 1.0, (f - 1.0) / 2.0, 0.0)
    return Grid(
        shape=tuple(int(s) for s in out),  # type: ignore[arg-type]
        spacing_mm=tuple(float(s) for s in sp * f),  # type: ignore[arg-type]
        affine=affine,
        to_source=to_source,
        prefilter_sigma=tuple(float(s) for s in sigma),  # type: ignore[arg-type]
    )


def _background(volume: np.ndarray, fg: np.ndarray) -> float:
    """The background level: the median outside the foreground."""
    outside = volume[~fg]
    return float(np.median(outside)) if outside.size else float(volume.min())


def prefilter(source: SourceVolume, grid: Grid) -> np.ndarray:
    """The source smoothed for ``grid`` (do it once per cohort)."""
    from scipy import ndimage

    if max(grid.prefilter_sigma) < 0.25:
        return source.data
    return ndimage.gaussian_filter(
        source.data, sigma=grid.prefilter_sigma, mode="nearest"
    ).astype(np.float32)


def resample(
    source: SourceVolume,
    grid: Grid,
    *,
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    shift_mm: Sequence[float] = (0.0, 0.0, 0.0),
    smoothed: np.ndarray | None = None,
    cval: float | None = None,
) -> np.ndarray:
    """The source on ``grid`` after a rigid motion, in one interpolation.

    Args:
        source: the healthy volume.
        grid: from :func:`output_grid`.
        rotation_deg: rotation vector in degrees (about array axes 0, 1, 2,
            in physical mm, about the grid's centre).
        shift_mm: shift of the head along the array axes, mm.
        smoothed: :func:`prefilter` of the source, when already made.
        cval: the value outside the source; default its background level.

    Returns:
        float32 array of ``grid.shape`` (linear interpolation).
    """
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    data = prefilter(source, grid) if smoothed is None else smoothed
    if cval is None:
        cval = _background(source.data, foreground_mask(source.data))
    rot = Rotation.from_rotvec(np.radians(np.asarray(rotation_deg, float))).as_matrix()
    sp_out = np.asarray(grid.spacing_mm, float)
    centre = (np.asarray(grid.shape, float) - 1.0) / 2.0 * sp_out
    shift = np.asarray(shift_mm, float)
    # output index o -> output mm p -> unmoved mm q -> source index
    m = np.diag(1.0 / sp_out) @ rot.T @ np.diag(sp_out)
    off = (rot.T @ (-centre - shift) + centre) / sp_out
    full = grid.to_source @ _homog(m, off)
    return ndimage.affine_transform(
        data,
        full[:3, :3],
        offset=full[:3, 3],
        output_shape=grid.shape,
        order=1,
        mode="constant",
        cval=float(cval),
    ).astype(np.float32, copy=False)


def _homog(m: np.ndarray, off: np.ndarray) -> np.ndarray:
    h = np.eye(4)
    h[:3, :3] = m
    h[:3, 3] = off
    return h


@dataclass(frozen=True)
class Variation:
    """How much volumes made from one head differ (all draws seeded).

    Attributes:
        max_rotation_deg: each rotation-vector component uniform in
            +- this, degrees.
        max_shift_mm: each shift component uniform in +- this, mm.
        bias: largest excursion of the log bias field over the volume
            (0.15: the field spans about 0.86 to 1.16).
        scale: range of the global intensity factor.
        noise: Gaussian noise standard deviation as a fraction of the
            source foreground's spread (99th minus 1st percentile).
    """

    max_rotation_deg: float = 4.0
    max_shift_mm: float = 4.0
    bias: float = 0.15
    scale: tuple[float, float] = (0.9, 1.1)
    noise: float = 0.02


def _bias_field(shape: Sequence[int], rng: np.random.Generator, amount: float):
    """exp of a random quadratic polynomial in the normalised coordinates,
    its largest excursion ``amount`` times a uniform [0.5, 1) draw."""
    axes = [np.linspace(-1.0, 1.0, int(n), dtype=np.float32) for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    terms = [z, y, x, z * z, y * y, x * x, z * y, z * x, y * x]
    coef = rng.normal(size=len(terms))
    poly = sum(float(c) * t for c, t in zip(coef, terms))
    poly = np.broadcast_to(poly, tuple(int(n) for n in shape)).astype(np.float32)
    poly -= float(poly.mean())
    peak = float(np.abs(poly).max())
    level = amount * float(rng.uniform(0.5, 1.0))
    if peak > 0:
        poly *= level / peak
    return np.exp(poly)


def vary_intensity(
    volume: np.ndarray,
    rng: np.random.Generator,
    variation: Variation | None = None,
    *,
    spread: float | None = None,
    background: float | None = None,
) -> tuple[np.ndarray, dict[str, float]]:
    """A bias field, a global scale and Gaussian noise on ``volume``.

    The bias field and the scale multiply the intensity above the
    background level (``bg + (v - bg) * field * scale``), so air stays air
    on any scale (0 in MR, -1000 HU in CT); the noise is added everywhere.

    Args:
        volume: 3D array.
        rng: the random generator.
        variation: the amounts (default :class:`Variation`).
        spread: the intensity spread the noise is a fraction of; default
            the spread of ``volume``'s foreground.
        background: the background level; default the median outside
            ``volume``'s foreground.

    Returns:
        float32 volume and ``{"scale", "bias", "noise_sd"}``.
    """
    variation = Variation() if variation is None else variation
    v = np.asarray(volume, dtype=np.float32)
    if spread is None or background is None:
        fg = foreground_mask(v)
        if spread is None:
            spread = _spread(v[fg], float(v.min()))
        if background is None:
            background = _background(v, fg)
    field_ = _bias_field(v.shape, rng, variation.bias)
    scale = float(rng.uniform(*variation.scale))
    sd = float(variation.noise * spread)
    bg = np.float32(background)
    out = bg + (v - bg) * field_ * np.float32(scale)
    if sd > 0:
        out += rng.normal(0.0, sd, size=v.shape).astype(np.float32)
    return out.astype(np.float32, copy=False), {
        "scale": scale,
        "bias": float(np.log(field_).max() - np.log(field_).min()) / 2.0,
        "noise_sd": sd,
    }


# ------------------------------------------------------------ one volume


@dataclass(frozen=True)
class PreparedSource:
    """A source made ready for many volumes: its grid, smoothed once.

    Attributes:
        source: the healthy volume.
        grid: the output grid (:func:`output_grid`).
        smoothed: :func:`prefilter` of the source for that grid.
        background: intensity outside the source (median off the head).
        spread: the source foreground's intensity spread (99th minus 1st
            percentile), the unit of the noise.
    """

    source: SourceVolume
    grid: Grid
    smoothed: np.ndarray
    background: float
    spread: float


def prepare_source(
    source: SourceLike,
    *,
    shape: Sequence[int] | None = None,
    zoom: float | Sequence[float] | None = None,
    crop: bool = True,
) -> PreparedSource:
    """Load and check ``source`` (:func:`load_source`), choose its grid
    (:func:`output_grid`) and smooth it once for that grid."""
    src = load_source(source)
    fg = foreground_mask(src.data)
    if not fg.any():
        raise SourceError(src.name, "no foreground (head) found")
    grid = output_grid(src, shape=shape, zoom=zoom, crop=crop, foreground=fg)
    return PreparedSource(
        source=src,
        grid=grid,
        smoothed=prefilter(src, grid),
        background=_background(src.data, fg),
        spread=_spread(src.data[fg], float(src.data.min())),
    )


def make_volume(
    prepared: PreparedSource,
    *,
    lesion: bool,
    seed: int | Sequence[int],
    variation: Variation | None = None,
    lesion_options: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """One varied volume on the prepared grid, with a lesion or without.

    Args:
        prepared: :func:`prepare_source`.
        lesion: insert a lesion.
        seed: the volume's seed (an int or a sequence, e.g.
            ``[cohort_seed, index]``); motion, lesion and intensity draw
            from three independent streams of it, so a volume's motion and
            intensity draws are the same with or without a lesion.
        variation: motion and intensity amounts (default :class:`Variation`).
        lesion_options: keyword arguments of :func:`insert_lesion`.

    Returns:
        ``(volume, mask, info)``: float32 volume of ``grid.shape``, the bool
        lesion mask (None without a lesion), and the draws (``rotation_deg``,
        ``shift_mm``, ``scale``, ``bias``, ``noise_sd`` and, with a lesion,
        ``lesion``: :func:`insert_lesion`'s info).
    """
    variation = Variation() if variation is None else variation
    seq = [int(s) for s in np.atleast_1d(np.asarray(seed, dtype=np.int64))]
    rng_motion, rng_lesion, rng_intensity = (
        np.random.default_rng([*seq, k]) for k in range(3)
    )
    rot = rng_motion.uniform(-1, 1, 3) * variation.max_rotation_deg
    shift = rng_motion.uniform(-1, 1, 3) * variation.max_shift_mm
    grid = prepared.grid
    vol = resample(
        prepared.source,
        grid,
        rotation_deg=rot,
        shift_mm=shift,
        smoothed=prepared.smoothed,
        cval=prepared.background,
    )
    info: dict[str, Any] = {
        "rotation_deg": [float(v) for v in rot],
        "shift_mm": [float(v) for v in shift],
    }
    mask = None
    if lesion:
        vol, mask, info["lesion"] = insert_lesion(
            vol, grid.spacing_mm, rng_lesion, **dict(lesion_options or {})
        )
    vol, drawn = vary_intensity(
        vol,
        rng_intensity,
        variation,
        spread=prepared.spread,
        background=prepared.background,
    )
    info.update(drawn)
    return vol, mask, info


# ------------------------------------------------------------------ files


def write_nifti(
    path: str | os.PathLike,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    overwrite: bool = False,
    description: str = "napari-medcnn synthetic lesion test volume",
) -> Path:
    """Write a (z, y, x) array as ``.nii.gz`` that ``napari_medcnn.io.load``
    reads back in the same array order, atomically.

    Args:
        path: the target (its folder must exist).
        data: (z, y, x) array in the reader's LPS layout.
        affine: 4x4 index ``(z, y, x, 1)`` -> LPS mm (as ``Scan.affine``).
        overwrite: replace an existing file.
        description: the header's ``descrip`` (80 bytes at most).
    """
    import nibabel as nib

    a = np.asarray(affine, dtype=float)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ a[:, [2, 1, 0, 3]]  # voxel (x, y, z)
    img = nib.Nifti1Image(
        np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)), ras
    )
    img.set_qform(ras, code=1)
    img.set_sform(ras, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode("ascii", "replace")[:79]
    payload = gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)
    return atomic_write(path, payload, overwrite=overwrite)


def make_cohort(
    source: SourceLike,
    out_dir: str | os.PathLike,
    n: int,
    *,
    lesion_fraction: float = 0.5,
    seed: int = 0,
    shape: Sequence[int] | None = None,
    zoom: float | Sequence[float] | None = None,
    crop: bool = True,
    variation: Variation | None = None,
    lesion: Mapping[str, Any] | None = None,
    write_masks: bool = False,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Write ``n`` labelled volumes made from one healthy head.

    Args:
        source: what :func:`load_source` takes (``"colin27"``, a NIfTI
            path, a Scan, ``(array, spacing_mm)``).
        out_dir: the folder (created if missing).
        n: number of volumes (>= 1).
        lesion_fraction: exactly ``round(n * lesion_fraction)`` volumes get
            a lesion; which ones is shuffled by ``seed``.
        seed: the cohort's seed; volume ``i`` uses ``[seed, i]``.
        shape, zoom, crop: the grid (:func:`output_grid`).
        variation: motion and intensity amounts (default :class:`Variation`).
        lesion: keyword arguments of :func:`insert_lesion` (diameter_mm,
            contrast, polarity, rim, rotate, edge_mm, margin_mm).
        write_masks: also write each lesion's mask as
            ``masks/vol_XXX.nii.gz`` (uint8, same grid).
        overwrite: replace existing files; otherwise any existing target
            stops the run before anything is written.
        progress: called with ``("make_cohort", done, n)`` after each
            volume (the events a progress generator would yield).

    Returns:
        A summary: ``out_dir``, ``n``, ``n_lesion``, ``n_normal``,
        ``shape``, ``spacing_mm``, ``source``, ``labels_csv``,
        ``lesions_json``, ``seconds``.

    Raises:
        ScanReadError, SourceError: the source cannot be used.
        OverwriteError: a target exists and ``overwrite`` is false.
        ValueError: bad arguments.
    """
    t0 = time.perf_counter()
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    n = int(n)
    if not 0.0 <= float(lesion_fraction) <= 1.0:
        raise ValueError(f"lesion_fraction must be in [0, 1], got {lesion_fraction}")
    if lesion:
        unknown = set(lesion) - _LESION_OPTIONS
        if unknown:
            raise ValueError(f"unknown lesion options: {sorted(unknown)}")
    variation = Variation() if variation is None else variation
    prep = prepare_source(source, shape=shape, zoom=zoom, crop=crop)
    src, grid = prep.source, prep.grid

    out = Path(out_dir)
    names = [f"vol_{i:03d}.nii.gz" for i in range(n)]
    n_lesion = int(round(n * float(lesion_fraction)))
    order = np.random.default_rng(seed).permutation(n)
    has_lesion = np.zeros(n, dtype=bool)
    has_lesion[order[:n_lesion]] = True
    targets = [out / nm for nm in names] + [out / "labels.csv", out / "lesions.json"]
    if write_masks:
        targets += [out / "masks" / names[i] for i in range(n) if has_lesion[i]]
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    check_overwrite(targets, overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if write_masks and n_lesion:
        (out / "masks").mkdir(exist_ok=True)

    records: dict[str, Any] = {}
    rows = []
    for i, name in enumerate(names):
        vol, mask, info = make_volume(
            prep,
            lesion=bool(has_lesion[i]),
            seed=[seed, i],
            variation=variation,
            lesion_options=lesion,
        )
        write_nifti(out / name, vol, grid.affine, overwrite=overwrite)
        label = "lesion" if has_lesion[i] else "normal"
        record: dict[str, Any] = {"label": label, "slice_range": None}
        if mask is not None:
            les = info.pop("lesion")
            centre = np.asarray(les["centre_voxel"], float)
            lps = grid.affine @ np.append(centre, 1.0)
            record.update(
                slice_range=les["slice_range"],
                centre_voxel=les["centre_voxel"],
                centre_lps_mm=[float(v) for v in lps[:3]],
                axes_mm=les["axes_mm"],
                contrast=les["contrast"],
                polarity=les["polarity"],
                rim=les["rim"],
                n_voxels=les["n_voxels"],
                volume_mm3=les["volume_mm3"],
            )
            if write_masks:
                write_nifti(
                    out / "masks" / name,
                    mask.astype(np.uint8),
                    grid.affine,
                    overwrite=overwrite,
                    description="napari-medcnn synthetic lesion mask",
                )
                record["mask"] = f"masks/{name}"
        record["variation"] = info
        records[name] = record
        row = (name, label, name.split(".")[0])
        rows.append(row + (record.get("mask", ""),) if write_masks else row)
        if progress is not None:
            progress(("make_cohort", i + 1, n))

    buf = StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("path", "label", "group") + (("mask",) if write_masks else ()))
    writer.writerows(rows)
    atomic_write_text(out / "labels.csv", buf.getvalue(), overwrite=overwrite)
    source_name = Path(src.name).name
    meta = {
        "purpose": PURPOSE,
        "generator": "napari_medcnn.io.lesions.make_cohort",
        "source": source_name,
        "seed": int(seed),
        "n": n,
        "n_lesion": n_lesion,
        "shape": list(grid.shape),
        "spacing_mm": list(grid.spacing_mm),
        "slice_axis": 0,
        "array_order": "(z, y, x) as napari_medcnn.io.load returns it",
        "variation": asdict(variation),
        "lesion_options": {k: _jsonable(v) for k, v in (lesion or {}).items()},
        "volumes": records,
    }
    atomic_write_text(
        out / "lesions.json", json.dumps(meta, indent=1) + "\n", overwrite=overwrite
    )
    return {
        "out_dir": str(out),
        "n": n,
        "n_lesion": n_lesion,
        "n_normal": n - n_lesion,
        "shape": list(grid.shape),
        "spacing_mm": [round(s, 4) for s in grid.spacing_mm],
        "source": source_name,
        "labels_csv": str(out / "labels.csv"),
        "lesions_json": str(out / "lesions.json"),
        "seconds": time.perf_counter() - t0,
    }


_LESION_OPTIONS = frozenset(
    {"diameter_mm", "contrast", "polarity", "rim", "rotate", "edge_mm", "margin_mm"}
)


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list | np.ndarray):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v
