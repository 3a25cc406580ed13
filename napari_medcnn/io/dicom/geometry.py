"""Geometry of DICOM planes and stacks: orientation, sorting, affines, and
the assembly of a :class:`Scan` from them (:func:`make_scan`).

Positions and spacings are in mm, in the DICOM patient frame (LPS).  The
array/affine convention is the one in ``scan.py``: array axes ``(z, y, x)``,
``y`` along ImageOrientationPatient's column cosine, ``x`` along its row
cosine and ``z`` along the slice normal ``row x col``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_medcnn.io import quality
from napari_medcnn.io.scan import QualityReport, Scan, geometry_from_affine

if TYPE_CHECKING:
    from napari_medcnn.io.dicom.pixels import PixelInfo

#: Largest difference of direction cosines still treated as one orientation
#: (scanners write IOP with float noise; 1e-3 is ~0.06 degrees).
ORIENTATION_TOL = 1e-3
#: Relative tolerance for pixel spacing to count as "the same".
SPACING_RTOL = 1e-3
#: Positions closer than this (mm) along the normal are the same position.
POSITION_TOL = 1e-3

AXIAL_ROW = np.array([1.0, 0.0, 0.0])
AXIAL_COL = np.array([0.0, 1.0, 0.0])


def floats(value: Any, n: int) -> np.ndarray | None:
    """``value`` (a DICOM multi-value) as ``n`` finite floats, else None."""
    if value is None:
        return None
    try:
        seq = list(value) if not isinstance(value, str | bytes) else [value]
        arr = np.array([float(v) for v in seq], dtype=float)
    except (TypeError, ValueError):
        return None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        return None
    return arr


def plane_axes(iop: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit ``(row, col, normal)`` vectors from ImageOrientationPatient.

    Falls back to the axial identity when ``iop`` is missing or degenerate.
    """
    if iop is not None:
        r, c = np.asarray(iop[:3], float), np.asarray(iop[3:6], float)
        nr, nc = np.linalg.norm(r), np.linalg.norm(c)
        if nr > 1e-6 and nc > 1e-6:
            r, c = r / nr, c / nc
            n = np.cross(r, c)
            nn = np.linalg.norm(n)
            if nn > 1e-6:
                return r, c, n / nn
    return AXIAL_ROW.copy(), AXIAL_COL.copy(), np.cross(AXIAL_ROW, AXIAL_COL)


def orientation_label(iop: np.ndarray | None) -> str:
    """'axial', 'coronal', 'sagittal', 'oblique' or 'unknown' from IOP.

    A plane is named after the patient axis its normal lies within ~18
    degrees of (|cos| >= 0.95); otherwise it is 'oblique'.
    """
    if iop is None:
        return "unknown"
    _, _, n = plane_axes(iop)
    k = int(np.argmax(np.abs(n)))
    if abs(n[k]) < 0.95:
        return "oblique"
    return ("sagittal", "coronal", "axial")[k]


def same_orientation(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """True when two IOPs agree within :data:`ORIENTATION_TOL` (or both None)."""
    if a is None or b is None:
        return a is None and b is None
    return bool(np.max(np.abs(np.asarray(a) - np.asarray(b))) <= ORIENTATION_TOL)


def same_spacing(a: Sequence[float] | None, b: Sequence[float] | None) -> bool:
    """True when two pixel spacings agree within :data:`SPACING_RTOL`."""
    if a is None or b is None:
        return a is None and b is None
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    return bool(np.all(np.abs(a_ - b_) <= SPACING_RTOL * np.maximum(np.abs(b_), 1e-9)))


def cluster(items: Sequence[Any], same: Callable[[Any, Any], bool]) -> list[int]:
    """Greedy clustering: label per item; items ``same`` as a cluster's first
    member join it.  Tolerant of float noise, unlike rounding to a grid."""
    refs: list[Any] = []
    labels = []
    for it in items:
        for j, ref in enumerate(refs):
            if same(it, ref):
                labels.append(j)
                break
        else:
            refs.append(it)
            labels.append(len(refs) - 1)
    return labels


def group_by(labels: Sequence[Hashable]) -> list[list[int]]:
    """Indices grouped by label, groups in order of first appearance."""
    groups: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    return list(groups.values())


def sort_positions(
    ipps: np.ndarray, normal: np.ndarray, tiebreak: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Order slices by position along ``normal``.

    Args:
        ipps: (n, 3) ImagePositionPatient per slice, mm.
        normal: unit slice normal.
        tiebreak: secondary key for equal positions (e.g. InstanceNumber).

    Returns:
        ``(order, dists)``: the sorting permutation and the sorted distances
        along the normal in mm.
    """
    d = np.asarray(ipps, float) @ np.asarray(normal, float)
    keys = [np.zeros(len(d)) if tiebreak is None else np.asarray(tiebreak, float)]
    order = np.lexsort((*keys, np.round(d / POSITION_TOL)))
    return order, d[order]


def has_duplicates(dists: np.ndarray) -> bool:
    """True when two sorted distances are within :data:`POSITION_TOL`."""
    return bool(len(dists) > 1 and np.any(np.diff(np.sort(dists)) < POSITION_TOL))


def max_multiplicity(dists: np.ndarray) -> int:
    """How many slices share the most crowded position."""
    if len(dists) == 0:
        return 0
    _, counts = np.unique(
        np.round(np.asarray(dists) / POSITION_TOL), return_counts=True
    )
    return int(counts.max())


def split_duplicates(
    dists: np.ndarray, keys: Sequence[tuple[str, Sequence[Any]]]
) -> tuple[list[list[int]], str | None]:
    """Split slices that repeat positions (multi-echo, repeated acquisitions).

    Tries each ``(name, values)`` key in turn and accepts the first one that
    gives exactly as many groups as the most repeated position has copies,
    each with unique positions.  Returns ``(groups, name)`` or
    ``([all], None)`` when no key explains the duplicates.
    """
    everything = [list(range(len(dists)))]
    if not has_duplicates(dists):
        return everything, None
    m = max_multiplicity(dists)
    for name, values in keys:
        if any(v is None for v in values):
            continue
        groups = group_by([str(v) for v in values])
        if len(groups) == m and all(
            not has_duplicates(np.asarray(dists)[g]) for g in groups
        ):
            return groups, name
    return everything, None


def slice_spacing(dists: np.ndarray) -> float | None:
    """Median distance (mm) between consecutive distinct sorted positions."""
    if len(dists) < 2:
        return None
    diffs = np.diff(np.asarray(dists, float))
    diffs = diffs[diffs > POSITION_TOL]
    return float(np.median(diffs)) if diffs.size else None


def stack_affine(
    iop: np.ndarray | None,
    origin: np.ndarray | None,
    spacing_zyx: Sequence[float],
) -> np.ndarray:
    """4x4 affine mapping index ``(z, y, x, 1)`` to LPS mm.

    Args:
        iop: ImageOrientationPatient (6 cosines) or None (axial identity).
        origin: ImagePositionPatient of voxel (0, 0, 0), mm (None -> 0).
        spacing_zyx: (slice, row, column) spacing in mm.
    """
    r, c, n = plane_axes(iop)
    dz, dy, dx = (float(s) for s in spacing_zyx)
    aff = np.eye(4)
    aff[:3, 0] = n * dz
    aff[:3, 1] = c * dy
    aff[:3, 2] = r * dx
    aff[:3, 3] = np.zeros(3) if origin is None else np.asarray(origin, float)
    return aff


def gap_slots(dists: np.ndarray, max_fill: float = 1.0) -> np.ndarray | None:
    """Slot index per sorted slice when whole slices are missing.

    When every step between sorted positions is about an integer multiple of
    the median step, slice ``k`` belongs at slot ``round((d_k - d_0) /
    median)``; leaving the missing slots blank keeps every real slice at its
    true position on a regular grid.  Returns None when nothing is missing,
    positions repeat, spacing is irregular, or more than ``max_fill`` x n
    slots would be blank.
    """
    d = np.asarray(dists, float)
    if d.size < 3:
        return None
    diffs = np.diff(d)
    if np.any(diffs < POSITION_TOL):
        return None
    med = float(np.median(diffs))
    slots = np.rint((d - d[0]) / med).astype(int)
    tol = 0.05 * med + 0.01
    if np.any(np.abs(d - d[0] - slots * med) > tol) or np.any(np.diff(slots) < 1):
        return None
    n_slots = int(slots[-1]) + 1
    if n_slots == d.size or n_slots - d.size > max_fill * d.size:
        return None
    return slots


class Slots:
    """Where each sorted slice goes in the output, with blank gap slots."""

    def __init__(self, n: int, slots: np.ndarray | None):
        self.pos = [int(k) for k in (range(n) if slots is None else slots)]
        self.n_out = self.pos[-1] + 1 if self.pos else 0
        taken = set(self.pos)
        self.missing = [k for k in range(self.n_out) if k not in taken]

    def per_slot(self, values: list[float]) -> np.ndarray:
        out = np.full(self.n_out, values[0], dtype=float)
        out[self.pos] = values
        return out

    def blank(self, vol: np.ndarray) -> None:
        """Fill the gap slots with a constant already present in the data."""
        if self.missing:
            fill = vol[self.pos[0]].min()
            for k in self.missing:
                vol[k] = fill

    def expand(self, vol: np.ndarray) -> np.ndarray:
        """``vol`` (one slice per file) spread onto the slots."""
        if not self.missing:
            return vol
        out = np.empty((self.n_out, *vol.shape[1:]), vol.dtype)
        out[self.pos] = vol
        self.blank(out)
        return out


def pixel_spacing(
    spacing: tuple[float, float] | None,
    imager: tuple[float, float] | None,
    modality: str | None,
    report: QualityReport,
    regions: tuple[float, float] | None = None,
) -> tuple[tuple[float, float], str]:
    """In-plane (row, column) spacing in mm and its unit, with fallbacks.

    PixelSpacing, else ImagerPixelSpacing, else the ultrasound regions'
    physical deltas (``regions``, see :func:`ultrasound_region_spacing`),
    else 1.0 in ``"pixel"`` units; each fallback adds a
    ``pixel_spacing_fallback`` finding to ``report``.
    """
    if spacing is not None:
        return spacing, "mm"
    if imager is not None:
        quality.note_spacing_fallback(report, "ImagerPixelSpacing", modality)
        return imager, "mm"
    if regions is not None:
        quality.note_spacing_fallback(report, "SequenceOfUltrasoundRegions", modality)
        return regions, "mm"
    quality.note_spacing_fallback(report, "none", modality)
    return (1.0, 1.0), "pixel"


# PhysicalUnitsX/YDirection code for centimetres (PS3.3 C.8.5.5.1.15)
_US_UNIT_CM = 3
# RegionSpatialFormat codes with a spatial (tissue) x/y: 2D, M-mode is not
_US_SPATIAL_FORMATS = {1}


def ultrasound_region_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, column) pixel size in mm from an ultrasound image's
    SequenceOfUltrasoundRegions, or None.

    Only 2D tissue regions (RegionSpatialFormat 1) whose x and y are in
    centimetres count; when several such regions disagree (to 0.1 %), the
    image has no single pixel size and None is returned.  Doppler and
    M-mode regions (time or velocity axes) are ignored.
    """
    found: list[tuple[float, float]] = []
    for region in ds.get("SequenceOfUltrasoundRegions", None) or []:
        try:
            fmt = int(region.get("RegionSpatialFormat", 0))
            units = (
                int(region.get("PhysicalUnitsXDirection", 0)),
                int(region.get("PhysicalUnitsYDirection", 0)),
            )
            dx = abs(float(region.get("PhysicalDeltaX", 0.0)))
            dy = abs(float(region.get("PhysicalDeltaY", 0.0)))
        except (TypeError, ValueError):
            continue
        ok = fmt in _US_SPATIAL_FORMATS and units == (_US_UNIT_CM,) * 2
        if ok and dx > 0 and dy > 0 and np.isfinite(dx + dy):
            found.append((dy * 10.0, dx * 10.0))  # cm -> mm
    if not found:
        return None
    first = np.array(found[0])
    if any(not np.allclose(f, first, rtol=1e-3) for f in found[1:]):
        return None
    return float(first[0]), float(first[1])


def make_scan(
    data: np.ndarray,
    *,
    layout: str,
    rgb: bool,
    iop: np.ndarray | None,
    position: np.ndarray | None,
    spacing_yx: tuple[float, float],
    unit_yx: str,
    slice_step: float | None,
    name: str,
    modality: str | None,
    info: PixelInfo,
    metadata: dict[str, Any],
    report: QualityReport,
    paths: list[str],
) -> Scan:
    """Assemble a :class:`Scan` following ``scan.py``'s geometry convention.

    Args:
        layout: ``"2d"`` (y, x), ``"stack"`` (z, y, x) with positions, or
            ``"frames"`` (frame, y, x) without slice geometry.
        position: LPS position (mm) of voxel (0, 0, 0), or None.
        spacing_yx: in-plane spacing (mm, or 1 for ``"pixel"`` units).
        slice_step: slice spacing in mm for a stack (None -> 1.0).
    """
    dz = float(slice_step) if slice_step else 1.0
    affine = stack_affine(iop, position, (dz, *spacing_yx))
    spacing3, translate3, _ = geometry_from_affine(affine)
    if layout == "2d":
        spacing, origin = spacing3[1:], translate3[1:]
        labels, units = ("y", "x"), (unit_yx, unit_yx)
    elif layout == "stack":
        spacing, origin = spacing3, translate3
        labels, units = ("z", "y", "x"), ("mm", unit_yx, unit_yx)
    else:
        spacing, origin = (1.0, *spacing3[1:]), (0.0, *translate3[1:])
        labels, units = ("frame", "y", "x"), ("pixel", unit_yx, unit_yx)
    md = dict(metadata)
    md.update(info.notes)
    md["orientation"] = orientation_label(iop)
    md["layout"] = layout
    if layout == "stack":
        md["slice_spacing_mm"] = dz
    return Scan(
        data=data,
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in origin),
        affine=affine,
        name=name,
        modality=modality or None,
        rgb=rgb,
        axis_labels=labels,
        units=units,
        window=None if rgb else info.window,
        metadata=md,
        quality=report,
        source_paths=list(paths),
    )
