"""Preparing whole volumes for volume models (CNN+RNN, 3D CNNs).

A *volume record* is a preprocessing record (see
:mod:`napari_medcnn.preprocessing.record`) with a ``"volume"`` entry and a
three-element ``size`` ``[S, H, W]``: ``S`` slices of ``H`` x ``W`` pixels.
Training, inference and saliency apply the same record, so a user's DICOM
series is prepared exactly like the training volumes were.

``record["volume"]`` keys:

* ``slice_axis``: ``"axial"`` (default), ``"coronal"`` or ``"sagittal"``:
  which axis of the reader's ``(z, y, x)`` array the model reads slice by
  slice (axis 0, 1 or 2).  For a DICOM series read in acquisition order,
  ``"axial"`` means "the acquired slices".
* ``depth``: ``"count"`` resamples the kept slice range to exactly ``S``
  slices (any slice thickness, any coverage); ``"spacing"`` resamples to
  ``spacing_mm`` between slices and crops or pads ``S`` slices around the
  kept range's centre (a fixed extent of ``S * spacing_mm`` mm).
* ``crop_depth``: ``{"min_area": 0.05}`` keeps the slices whose foreground
  area is at least this fraction of the largest slice's (drops the empty
  slices above the vertex and below the head); None keeps every slice.
  The foreground is channel 0 above its Otsu threshold.

In-plane handling and intensity are the 2D record's keys (``intensity``
with ``"scope": "volume"`` for one mapping per volume, ``square``,
``foreground_crop``, ``pad``), so a CNN+RNN whose slice encoder came from a
2D model sees slices prepared like that model's training images.
Downsampling in depth is antialiased (Gaussian, sigma 0.4 x the step in
slices) before linear interpolation; in-plane resizing is the 2D path's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: record version of volume records
RECORD_VERSION_VOLUME = 3
#: slice axis names -> axis of the reader's (z, y, x) array
SLICE_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}
#: fewest slices a volume model accepts
MIN_SLICES = 2
#: MR volumes: values up to this far above the 99.5th percentile (in units
#: of the 0.5-99.5 percentile range) are kept, not clipped to 1
MR_HEADROOM = 1.0


@dataclass
class VolumeGeometry:
    """Where a prepared volume came from in the scan's array.

    Attributes:
        axis: the scan's array axis read as slices (0, 1 or 2).
        positions: (S,) source slice index (float) of each prepared slice;
            outside ``[0, n_source - 1]`` means padding.
        box: in-plane (rows, cols) slices of the crop in the scan's pixels
            after moving ``axis`` first (may extend past the image).
        shape: the scan's array shape.
    """

    axis: int
    positions: np.ndarray
    box: tuple[slice, slice]
    shape: tuple[int, int, int]


def volume_record(
    slices: int = 32,
    size: Sequence[int] = (96, 96),
    *,
    base: dict[str, Any] | None = None,
    modality: str | None = None,
    spacing_mm: float | None = None,
    slice_axis: str = "axial",
    crop_depth: bool = True,
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """A volume record of ``slices`` slices of ``size`` pixels.

    Args:
        slices: prepared slice count ``S``.
        size: in-plane (H, W) in pixels.
        base: a 2D record (e.g. the parent slice model's) whose intensity,
            colour and in-plane keys are kept, so a slice encoder initialised
            from that model sees what it was trained on.
        modality: ``"CT"`` maps a HU window (``window`` or 40/400 soft
            tissue) per volume; anything else: the 0.5-99.5 percentiles of
            the volume (MR), unless ``base`` says otherwise.
        spacing_mm: resample to this slice spacing (mm) and keep ``S``
            slices around the head's centre; None: resample the kept slice
            range to exactly ``S`` slices.
        slice_axis: ``axial``, ``coronal`` or ``sagittal``.
        crop_depth: drop slices outside the head/body.
        window: CT (center, width) in HU.
    """
    if slices < MIN_SLICES:
        raise ValueError(f"a volume record needs at least {MIN_SLICES} slices")
    if slice_axis not in SLICE_AXES:
        raise ValueError(f"slice_axis must be one of {sorted(SLICE_AXES)}")
    if spacing_mm is not None and not spacing_mm > 0:
        raise ValueError(f"spacing_mm must be > 0, not {spacing_mm}")
    if base is not None:
        rec = {
            k: v
            for k, v in base.items()
            if k in ("color", "intensity", "foreground_crop", "square", "pad")
        }
        rec["intensity"] = dict(rec.get("intensity") or {"mode": "percentile"})
    elif modality == "CT":
        c, w = window or (40.0, 400.0)
        rec = {
            "color": "luminance",
            "intensity": {"mode": "window", "center": float(c), "width": float(w)},
            "foreground_crop": None,
            "square": True,
            "pad": "minimum",
        }
    else:
        rec = {
            "color": "luminance",
            "intensity": {
                "mode": "percentile",
                "low": 0.5,
                "high": 99.5,
                "scope": "volume",
                # a lesion brighter than the 99.5th percentile keeps its
                # contrast instead of being clipped to the brightest tissue
                "headroom": MR_HEADROOM,
            },
            "foreground_crop": None,
            "square": True,
            "pad": "minimum",
        }
    rec.update(
        version=RECORD_VERSION_VOLUME,
        size=[int(slices), *(int(s) for s in size[-2:])],
        volume={
            "slice_axis": slice_axis,
            "depth": "count" if spacing_mm is None else "spacing",
            "spacing_mm": None if spacing_mm is None else float(spacing_mm),
            "crop_depth": {"min_area": 0.05} if crop_depth else None,
        },
        resample=(
            "slices: antialiased linear in depth; in-plane area-weighted "
            "(antialiased) to size, square field of view in mm"
        ),
        monochrome="MONOCHROME1 inverted by the reader (bright = high signal)",
    )
    return rec


def is_volume_record(record: dict[str, Any] | None) -> bool:
    """True for records made by :func:`volume_record`."""
    return bool(record) and isinstance(record.get("volume"), dict)


def prepare_volume(
    channels: Sequence[np.ndarray],
    record: dict[str, Any],
    spacing: Sequence[float] | None = None,
    *,
    with_geometry: bool = False,
    targets: Sequence[np.ndarray] = (),
) -> Any:
    """Prepare co-registered (S, H, W) volumes as a volume record says.

    Args:
        channels: one array per channel, equal shapes, (z, y, x) as the
            reader returns them.
        record: a volume record (:func:`volume_record`).
        spacing: mm per array axis (3 values; 2 values are taken as the
            in-plane spacing with 1 mm slices); default 1 mm.
        with_geometry: also return the :class:`VolumeGeometry`.
        targets: masks on the same voxel grid (non-zero inside a lesion)
            taken through the same crop and resampling, without intensity
            mapping (padding 0): the prepared values are the fraction of
            each output voxel the mask covers, in [0, 1].

    Returns:
        float32 (C, S, H, W) at ``record["size"]``; with ``targets`` the pair
        ``(x, t)``, ``t`` float32 (len(targets), S, H, W); then the geometry
        when ``with_geometry``.

    Raises:
        ValueError: not a volume, too few slices, channels of unequal shape.
    """
    from napari_medcnn.preprocessing.record import (
        crop_pad,
        foreground_box,
        main_object,
        normalize,
        normalize_slices,
        pad_value,
        resize,
        square_box,
        to_gray,
    )

    vol = record["volume"]
    gray = record.get("color") == "luminance"
    arrs = [to_gray(c) if gray else np.asarray(c, np.float32) for c in channels]
    shape = arrs[0].shape
    if len(shape) != 3:
        raise ValueError(
            f"a volume model needs a 3D volume (slices, rows, columns), "
            f"got shape {shape}"
        )
    for a in arrs[1:]:
        if a.shape != shape:
            raise ValueError(f"channels differ in shape: {shape} vs {a.shape}")
    tgts = [np.asarray(t, np.float32) for t in targets]
    for t in tgts:
        if t.shape != shape:
            raise ValueError(f"mask shape {t.shape} differs from the volume's {shape}")
    sp = [1.0, 1.0, 1.0] if spacing is None else [float(s) for s in spacing]
    if len(sp) == 2:
        sp = [1.0, *sp]
    axis = SLICE_AXES[vol.get("slice_axis", "axial")]
    if axis:
        arrs = [np.moveaxis(a, axis, 0) for a in arrs]
        tgts = [np.moveaxis(t, axis, 0) for t in tgts]
        sp = [sp[axis]] + [s for i, s in enumerate(sp) if i != axis]
    n_src = arrs[0].shape[0]
    if n_src < MIN_SLICES:
        raise ValueError(
            f"a volume model needs at least {MIN_SLICES} slices along the "
            f"{vol.get('slice_axis', 'axial')} axis, got {n_src}"
        )
    intensity = record.get("intensity")
    per_volume = (intensity or {}).get("scope") == "volume"
    x = np.stack(
        [normalize(a, intensity) if per_volume else normalize_slices(a, intensity)
         for a in arrs]
    )  # fmt: skip
    fg = _foreground(arrs[0])
    lo, hi = _depth_range(fg, vol.get("crop_depth"))
    crop = record.get("foreground_crop")
    if crop:
        mask = main_object(fg[lo : hi + 1].any(axis=0))
        box = foreground_box(mask, sp[1:], crop.get("margin", 0.05))
    elif record.get("square"):
        box = square_box(x.shape, sp[1:])
    else:
        box = (slice(0, x.shape[-2]), slice(0, x.shape[-1]))
    fill = pad_value(x, record, lead=2)  # per channel and slice
    x = crop_pad(x, box, fill)
    n_out = int(record["size"][0])
    if vol.get("depth", "count") == "spacing":
        step = float(vol["spacing_mm"]) / sp[0]
        centre = (lo + hi) / 2.0
        positions = centre + (np.arange(n_out) - (n_out - 1) / 2.0) * step
    else:
        step = (hi - lo + 1) / n_out
        positions = lo + (np.arange(n_out) + 0.5) * step - 0.5
    x = _resample_depth(x, positions, step, fill)
    x = resize(x, record["size"][-2:])
    out: tuple[Any, ...] = (x,)
    if tgts:
        t = crop_pad((np.stack(tgts) > 0).astype(np.float32), box, 0.0)
        t = resize(_resample_depth(t, positions, step, 0.0), record["size"][-2:])
        out += (np.clip(t, 0.0, 1.0),)
    if with_geometry:
        out += (VolumeGeometry(axis, positions, box, tuple(shape)),)
    return out[0] if len(out) == 1 else out


def _foreground(a: np.ndarray) -> np.ndarray:
    """Channel 0 above its Otsu threshold (computed on a subsample)."""
    from skimage.filters import threshold_otsu

    finite = a[np.isfinite(a)]
    if finite.size == 0 or finite.min() == finite.max():
        return np.ones(a.shape, bool)
    step = max(1, finite.size // 1_000_000)
    return np.nan_to_num(a, nan=-np.inf) > threshold_otsu(finite[::step])


def _depth_range(fg: np.ndarray, crop: dict[str, Any] | None) -> tuple[int, int]:
    """First and last slice (inclusive) whose foreground area reaches
    ``crop["min_area"]`` of the largest slice's; all slices without
    ``crop`` or when no slice has foreground."""
    n = fg.shape[0]
    if not crop:
        return 0, n - 1
    area = fg.reshape(n, -1).sum(axis=1)
    if area.max() == 0:
        return 0, n - 1
    keep = np.flatnonzero(area >= float(crop.get("min_area", 0.05)) * area.max())
    lo, hi = int(keep[0]), int(keep[-1])
    if hi - lo + 1 < MIN_SLICES:  # one slice of anatomy: keep a neighbour
        lo, hi = max(0, lo - 1), min(n - 1, max(hi, lo + 1))
    return lo, hi


def _resample_depth(
    x: np.ndarray, positions: np.ndarray, step: float, fill: Any
) -> np.ndarray:
    """(C, S, H, W) sampled at the float slice ``positions`` (linear),
    antialiased when ``step`` > 1 slice; outside the stack: ``fill``."""
    from scipy.ndimage import gaussian_filter1d

    n = x.shape[1]
    if step > 1.0:
        x = gaussian_filter1d(x, sigma=0.4 * step, axis=1, mode="nearest")
    p = np.clip(positions, 0, n - 1)
    i0 = np.floor(p).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (p - i0).astype(np.float32)[None, :, None, None]
    out = x[:, i0] * (1 - w) + x[:, i1] * w
    outside = (positions < -0.5) | (positions > n - 0.5)
    if outside.any():
        f = np.asarray(fill, np.float32)
        if f.ndim == 4:  # per channel and slice: the channel's lowest
            f = f.min(axis=1, keepdims=True)
        out[:, outside] = np.broadcast_to(f.reshape(-1, 1, 1, 1), (x.shape[0], 1, 1, 1))
    return out.astype(np.float32, copy=False)


def to_scan_grid(values: np.ndarray, geometry: VolumeGeometry) -> np.ndarray:
    """Map a (S, H, W) array on the prepared grid (a 3D saliency map, a
    per-voxel probability) back onto the scan's (z, y, x) array.

    In depth, as :func:`to_scan_slices` (slices outside the prepared range
    get 0); in-plane, the map is resized to the crop box and placed where
    the box lies (parts outside the image are dropped).
    """
    from napari_medcnn.preprocessing.record import resize

    v = np.asarray(values, np.float32)
    src = tuple(geometry.shape)
    moved = [src[geometry.axis]] + [s for i, s in enumerate(src) if i != geometry.axis]
    ys, xs = geometry.box
    inplane = resize(v, (ys.stop - ys.start, xs.stop - xs.start))
    depth = to_scan_slices(inplane, geometry, outside=0.0)
    out = np.zeros(moved, np.float32)
    h, wd = moved[1], moved[2]
    oy0, ox0 = max(0, ys.start), max(0, xs.start)
    oy1, ox1 = min(h, ys.stop), min(wd, xs.stop)
    out[:, oy0:oy1, ox0:ox1] = depth[
        :, oy0 - ys.start : oy1 - ys.start, ox0 - xs.start : ox1 - xs.start
    ]
    return np.moveaxis(out, 0, geometry.axis) if geometry.axis else out


def prepare_model_input(
    channels: Sequence[np.ndarray],
    record: dict[str, Any],
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """One model input as the record says: a volume record through
    :func:`prepare_volume` (``spacing`` per array axis), any other record
    through :func:`~napari_medcnn.preprocessing.record.prepare` (its
    in-plane spacing)."""
    if is_volume_record(record):
        return prepare_volume(channels, record, spacing)
    from napari_medcnn.preprocessing.record import prepare

    inplane = tuple(spacing[-2:]) if spacing is not None else None
    return prepare(channels, record, inplane)


def to_scan_slices(
    values: np.ndarray, geometry: VolumeGeometry, outside: float | None = None
) -> np.ndarray:
    """Per-slice values on the prepared grid (S, ...) -> one per slice of
    the scan along the record's slice axis (n, ...), linear in position.

    Slices outside the prepared range (cropped as empty, or beyond a
    ``spacing`` record's extent) take ``outside`` when given, else the
    nearest prepared slice's value.
    """
    v = np.asarray(values)
    pos = np.asarray(geometry.positions, float)
    idx = np.arange(int(geometry.shape[geometry.axis]), dtype=float)
    # the prepared slices are evenly spaced: linear in the index between them
    j = np.interp(idx, pos, np.arange(len(pos), dtype=float))
    j0 = np.floor(j).astype(int)
    j1 = np.minimum(j0 + 1, len(pos) - 1)
    w = (j - j0).reshape(-1, *[1] * (v.ndim - 1))
    out = (v[j0] * (1 - w) + v[j1] * w).astype(np.float32)
    if outside is not None:
        half = (pos[1] - pos[0]) / 2 if len(pos) > 1 else 0.5
        out[(idx < pos[0] - half) | (idx > pos[-1] + half)] = outside
    return out


def weights_to_scan_slices(weights: np.ndarray, geometry: VolumeGeometry) -> np.ndarray:
    """Non-negative per-slice weights on the prepared grid (S,) -> one per
    slice of the scan (:func:`to_scan_slices`, 0 on slices the model did not
    see), renormalised to sum to 1 (all 0 stays all 0)."""
    out = to_scan_slices(weights, geometry, outside=0.0)
    total = float(out.sum())
    return out / total if total > 0 else out
