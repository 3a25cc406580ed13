"""Several series of one patient as the channels of one model input.

A model with channels (T1, T2, FLAIR...) needs them voxel by voxel on one
grid, but real series differ in voxel size, field of view and orientation.

* :class:`ChannelGeometry`: a channel's spatial shape and the affine from
  its array index to world millimetres, from a napari layer's transform
  (:meth:`ChannelGeometry.from_transform`), an index -> LPS affine
  (:meth:`ChannelGeometry.from_affine`), a :class:`~napari_medcnn.io.scan.
  Scan` (:meth:`ChannelGeometry.from_scan`) or the metadata the reader puts
  in a layer (:meth:`ChannelGeometry.from_metadata`).
* :func:`align_channels`: leaves channels that share the first one's grid
  as they are and resamples the others onto it (trilinear, in physical
  space, slab by slab), saying so; refuses channels that hardly overlap the
  first one or that mix 2D and 3D.

Which layer is which of the card's channels is
:mod:`napari_medcnn.preprocessing.channel_names`.

No Qt, napari or torch: numpy and scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari_medcnn.io.scan import Scan

#: output voxels resampled per slab (bounds the temporaries: about 4 MB)
CHUNK_VOXELS = 1 << 20
#: smallest part of the first channel's field of view another must cover
MIN_OVERLAP = 0.10
#: geometries closer than this (in voxels of the first channel) are equal
TOLERANCE_VOXELS = 0.01


# -- geometry ---------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ChannelGeometry:
    """Where a channel's voxels lie in the world.

    Attributes:
        shape: spatial shape in array order, ``(H, W)`` or ``(S, H, W)``
            (an RGB axis is not part of it).
        affine: ``(n+1, n+1)`` matrix mapping the homogeneous array index
            ``(i_0, ..., i_{n-1}, 1)`` (voxel centres) to world mm.
        frame: which world the affine maps to: ``"lps"`` (DICOM patient
            coordinates) or ``"napari"`` (a viewer's world).  Only geometries
            in the same frame can be compared.
    """

    shape: tuple[int, ...]
    affine: np.ndarray
    frame: str = "napari"

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        a = np.array(self.affine, dtype=float)
        n = len(shape)
        if n not in (2, 3) or min(shape) < 1:
            raise ValueError(f"a channel is 2D or 3D, got shape {shape}")
        if a.shape != (n + 1, n + 1):
            raise ValueError(f"a {n}D channel needs a {n + 1}x{n + 1} affine")
        if not np.all(np.isfinite(a)) or abs(np.linalg.det(a[:n, :n])) < 1e-12:
            raise ValueError("the channel's affine is singular or not finite")
        a[n] = 0.0
        a[n, n] = 1.0
        a.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", a)

    # -- constructors ---------------------------------------------------------
    @classmethod
    def from_transform(
        cls,
        shape: Sequence[int],
        scale: Sequence[float] | None = None,
        translate: Sequence[float] | None = None,
        rotate: Any = None,
        affine: Any = None,
        frame: str = "napari",
    ) -> ChannelGeometry:
        """The geometry of a napari layer: ``affine @ (rotate @ diag(scale)
        @ index + translate)``, as napari composes them (no shear).

        Args:
            shape: spatial data shape.
            scale: mm per array axis (default 1).
            translate: mm (default 0).
            rotate: ``n x n`` rotation matrix (default identity).
            affine: napari's extra ``(n+1) x (n+1)`` (or ``n x n``) affine
                applied after the rest (default identity).
        """
        n = len(shape)
        s = np.ones(n) if scale is None else np.asarray(scale, float)[-n:]
        t = np.zeros(n) if translate is None else np.asarray(translate, float)[-n:]
        r = np.eye(n) if rotate is None else np.asarray(rotate, float)
        m = np.eye(n + 1)
        m[:n, :n] = r @ np.diag(s)
        m[:n, n] = t
        if affine is not None:
            extra = np.asarray(affine, float)
            if extra.shape == (n, n):
                extra = _homogeneous(extra)
            m = extra @ m
        return cls(tuple(shape), m, frame)

    @classmethod
    def from_affine(
        cls, shape: Sequence[int], affine: Any, frame: str = "lps"
    ) -> ChannelGeometry:
        """A 3D channel from its 4x4 index ``(z, y, x, 1)`` -> LPS mm affine
        (:attr:`napari_medcnn.io.scan.Scan.affine`)."""
        return cls(tuple(shape), np.asarray(affine, float), frame)

    @classmethod
    def from_scan(cls, scan: Scan) -> ChannelGeometry:
        """A scan's geometry: its LPS affine for a volume; for a 2D image
        its in-plane spacing and origin (napari's frame: two slices are
        compared in their own plane)."""
        shape = tuple(scan.data.shape[: scan.ndim_spatial])
        if len(shape) == 3:
            return cls.from_affine(shape, scan.affine)
        return cls.from_transform(shape, scan.spacing, scan.origin)

    @classmethod
    def from_metadata(
        cls, shape: Sequence[int], metadata: Mapping[str, Any]
    ) -> ChannelGeometry | None:
        """A volume's geometry from the layer metadata the reader writes
        (``affine``: index -> LPS mm); None without a usable 4x4 affine
        (2D images, layers from elsewhere)."""
        raw = (metadata or {}).get("affine")
        if raw is None or len(shape) != 3:
            return None
        try:
            a = np.asarray(raw, dtype=float)
            return cls.from_affine(shape, a) if a.shape == (4, 4) else None
        except (TypeError, ValueError):
            return None

    # -- properties -------------------------------------------------------------
    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.shape)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm per array axis."""
        n = self.ndim
        return tuple(float(v) for v in np.linalg.norm(self.affine[:n, :n], axis=0))

    @property
    def directions(self) -> np.ndarray:
        """``n x n``: one unit column per array axis, in world axes."""
        n = self.ndim
        return self.affine[:n, :n] / np.asarray(self.spacing)

    def index_to_world(self, index: Any) -> np.ndarray:
        """World mm of array indices ``(..., n)``."""
        n = self.ndim
        idx = np.asarray(index, dtype=float)
        return idx @ self.affine[:n, :n].T + self.affine[:n, n]

    def centre(self) -> np.ndarray:
        """World mm of the centre of the field of view."""
        return self.index_to_world((np.asarray(self.shape) - 1) / 2.0)

    def corners(self) -> np.ndarray:
        """``(2**n, n)``: the array indices of the grid's corner voxels."""
        grids = np.meshgrid(*[(0, s - 1) for s in self.shape], indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1).astype(float)

    def same_as(
        self, other: ChannelGeometry, tolerance: float = TOLERANCE_VOXELS
    ) -> bool:
        """Same frame, shape, and corner voxels within ``tolerance`` voxels
        (of this geometry's smallest spacing) of each other."""
        if self.frame != other.frame or self.shape != other.shape:
            return False
        c = self.corners()
        d = np.linalg.norm(self.index_to_world(c) - other.index_to_world(c), axis=1)
        return bool(d.max() <= tolerance * min(self.spacing))


def _homogeneous(linear: np.ndarray) -> np.ndarray:
    n = linear.shape[0]
    out = np.eye(n + 1)
    out[:n, :n] = linear
    return out


# -- alignment ----------------------------------------------------------------------
def index_mapping(reference: ChannelGeometry, other: ChannelGeometry) -> np.ndarray:
    """``(n+1, n+1)``: array index of ``reference`` -> array index of
    ``other`` (through world mm)."""
    if reference.frame != other.frame:
        raise ValueError(
            f"cannot compare a geometry in the {reference.frame!r} frame with "
            f"one in the {other.frame!r} frame"
        )
    return np.linalg.inv(other.affine) @ reference.affine


def covered_fraction(reference: ChannelGeometry, other: ChannelGeometry) -> float:
    """The part (0-1) of ``reference``'s voxels that lie within ``other``'s
    field of view (its voxels' extent: centres +/- half a voxel)."""
    m = index_mapping(reference, other)
    inside = 0
    for start, stop in _slabs(reference.shape):
        inside += int(_row_intervals(m, reference.shape, other.shape, start, stop)[2])
    return inside / math.prod(reference.shape)


def check_alignment(
    geometries: Sequence[ChannelGeometry],
    names: Sequence[str] | None = None,
    *,
    min_overlap: float = MIN_OVERLAP,
    tolerance: float = TOLERANCE_VOXELS,
) -> tuple[list[int], list[str]]:
    """What :func:`align_channels` will do, from the geometries alone (no
    voxel is read: cheap enough for a GUI thread).

    Returns:
        (indices of the channels to resample onto the first one's grid,
        one message per such channel).

    Raises:
        ValueError: as :func:`align_channels` (2D/3D mix, frames, overlap).
    """
    geometries = list(geometries)
    names = _names(names, len(geometries))
    if not geometries:
        raise ValueError("no channel given")
    if len(names) != len(geometries):
        raise ValueError(f"{len(geometries)} geometries but {len(names)} names")
    _check_dims(geometries, names)
    ref = geometries[0]
    todo = [
        k
        for k in range(1, len(geometries))
        if not ref.same_as(geometries[k], tolerance)
    ]
    covered = {k: covered_fraction(ref, geometries[k]) for k in todo}
    refused = [k for k in todo if covered[k] < min_overlap]
    if refused:
        raise ValueError(_overlap_error(refused, covered, names, min_overlap))
    messages = [
        _resample_message(names[k], names[0], geometries[k], ref, 1 - covered[k])
        for k in todo
    ]
    return todo, messages


def align_channels(
    arrays: Sequence[Any],
    geometries: Sequence[ChannelGeometry],
    names: Sequence[str] | None = None,
    *,
    min_overlap: float = MIN_OVERLAP,
    tolerance: float = TOLERANCE_VOXELS,
) -> tuple[list[Any], list[str]]:
    """Put every channel on the first channel's grid.

    A channel whose geometry equals the first one's (within ``tolerance``
    voxels) is returned as it is (the same object).  Any other is resampled
    onto the first grid (:func:`resample_onto`): each first-grid voxel
    centre is taken to world mm and into the channel's array, and the
    channel is interpolated there (trilinear, bilinear in 2D), one slab of
    slices at a time, into a float32 array.  First-grid voxels outside the
    channel's field of view (its voxels' extent) get the channel's minimum.
    Each resampled channel gets one message, e.g. ``"T2: resampled from
    0.9×0.9×3.0 mm onto T1's 1.0×1.0×1.0 mm grid (centres 4.0 mm apart);
    12 % of T1's grid lies outside T2's field of view, filled with T2's
    minimum"`` (voxel sizes written x × y × z, in-plane first).

    Args:
        arrays: one array per channel: spatial axes first (``geometry.
            shape``), then any non-spatial axes (an RGB axis), which are
            resampled one by one.
        geometries: one :class:`ChannelGeometry` per channel, in one frame.
        names: channel names for the messages (default ``channel 1``...).
        min_overlap: the smallest part (0-1) of the first channel's field of
            view every other channel must cover.
        tolerance: geometries closer than this, in voxels of the first
            channel, count as equal.

    Returns:
        (arrays on the first channel's grid, messages), one message per
        resampled channel; no message when nothing was resampled.

    Raises:
        ValueError: counts differ, an array does not match its geometry, 2D
            and 3D channels are mixed, the frames differ, or a channel
            covers less than ``min_overlap`` of the first channel's field of
            view (the message names the layers).
    """
    arrays = list(arrays)
    if len(arrays) != len(geometries):
        raise ValueError(
            f"{len(arrays)} arrays but {len(geometries)} geometries: give one "
            "geometry per channel"
        )
    todo, messages = check_alignment(
        geometries, names, min_overlap=min_overlap, tolerance=tolerance
    )
    names = _names(names, len(arrays))
    for name, a, g in zip(names, arrays, geometries, strict=True):
        shape = tuple(np.shape(a))
        if shape[: g.ndim] != g.shape:
            raise ValueError(
                f"'{name}': array of shape {shape} does not match its geometry "
                f"{g.shape}"
            )
    out = list(arrays)
    for k in todo:
        out[k] = resample_onto(arrays[k], geometries[k], geometries[0])
    return out, messages


def _names(names: Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return [f"channel {i + 1}" for i in range(n)]
    return [str(v) for v in names]


def resample_onto(
    array: Any, geometry: ChannelGeometry, reference: ChannelGeometry
) -> np.ndarray:
    """``array`` (on ``geometry``) resampled onto ``reference``'s grid.

    Trilinear (bilinear in 2D) interpolation in physical space, slab by
    slab, into a float32 array of ``reference.shape`` plus the array's
    non-spatial axes; voxels outside ``array``'s field of view get its
    minimum (:func:`check_alignment` tells how much of it that is).
    """
    from scipy import ndimage

    src = np.asarray(array)
    n = geometry.ndim
    if src.dtype == np.float16 or src.dtype.kind not in "iuf":
        src = src.astype(np.float32)
    fill = _minimum(src)
    extra = src.shape[n:]
    m = index_mapping(reference, geometry)
    lin, off = m[:n, :n], m[:n, n]
    out = np.empty(reference.shape + extra, dtype=np.float32)
    flat_src = src.reshape(src.shape[:n] + (-1,))
    flat_out = out.reshape(reference.shape + (-1,))
    for start, stop in _slabs(reference.shape):
        part_shape = (stop - start, *reference.shape[1:])
        offset = off + lin[:, 0] * start
        for c in range(flat_src.shape[-1]):
            dest = np.empty(part_shape, dtype=np.float32)
            ndimage.affine_transform(
                flat_src[..., c],
                lin,
                offset=offset,
                output_shape=part_shape,
                output=dest,
                order=1,
                mode="nearest",
                prefilter=False,
            )
            flat_out[start:stop, ..., c] = dest
        lo, hi, _count = _row_intervals(m, reference.shape, geometry.shape, start, stop)
        last = np.arange(reference.shape[-1])
        outside = (last < lo[..., None]) | (last > hi[..., None])
        flat_out[start:stop][outside] = fill
    return out


def _minimum(array: np.ndarray) -> float:
    """The smallest finite value of ``array`` (0 when it has none), without
    a copy of it."""
    if array.size == 0:
        return 0.0
    if array.dtype.kind != "f":
        return float(array.min())
    with np.errstate(invalid="ignore"):
        low = np.fmin.reduce(array, axis=None)
    if np.isfinite(low):
        return float(low)
    finite = array[np.isfinite(array)]  # -inf or all NaN: rare, copy then
    return float(finite.min()) if finite.size else 0.0


def _check_dims(geometries: Sequence[ChannelGeometry], names: Sequence[str]) -> None:
    dims = {g.ndim for g in geometries}
    if len(dims) > 1:
        said = ", ".join(
            f"'{name}' is {g.ndim}D {g.shape}"
            for name, g in zip(names, geometries, strict=True)
        )
        raise ValueError(
            f"cannot mix 2D and 3D channels: {said}. Tick layers that are all "
            "slices or all volumes."
        )
    frames = {g.frame for g in geometries}
    if len(frames) > 1:
        raise ValueError(
            "the channels' geometries are in different frames "
            f"({', '.join(sorted(frames))}); they cannot be compared"
        )


def _slabs(shape: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of axis 0 of about :data:`CHUNK_VOXELS`."""
    per = max(1, CHUNK_VOXELS // max(1, math.prod(shape[1:])))
    return [(s, min(s + per, shape[0])) for s in range(0, shape[0], per)]


def _row_intervals(
    m: np.ndarray,
    ref_shape: Sequence[int],
    other_shape: Sequence[int],
    start: int,
    stop: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """For the rows (all axes but the last) of reference slab
    ``start:stop``: the first and last index along the last axis whose voxel
    centre maps inside ``other``'s field of view, and the voxel count.

    The mapping is affine, so along a row the inside voxels form one
    interval, found from the bounds of each of ``other``'s axes.
    """
    n = len(ref_shape)
    lead = np.meshgrid(
        np.arange(start, stop, dtype=float),
        *[np.arange(s, dtype=float) for s in ref_shape[1:-1]],
        indexing="ij",
    )
    width = int(ref_shape[-1])
    lo = np.full(lead[0].shape, -np.inf)
    hi = np.full(lead[0].shape, np.inf)
    eps = 1e-6
    for i in range(n):
        base = m[i, n] + sum(m[i, k] * lead[k] for k in range(n - 1))
        slope = m[i, n - 1]
        low, high = -0.5 - eps, other_shape[i] - 0.5 + eps
        if abs(slope) < 1e-12:
            bad = (base < low) | (base > high)
            lo = np.where(bad, np.inf, lo)
            hi = np.where(bad, -np.inf, hi)
            continue
        a, b = (low - base) / slope, (high - base) / slope
        lo = np.maximum(lo, np.minimum(a, b))
        hi = np.minimum(hi, np.maximum(a, b))
    first = np.clip(np.ceil(lo), 0, width).astype(np.int64)
    last = np.clip(np.floor(hi), -1, width - 1).astype(np.int64)
    count = int(np.clip(last - first + 1, 0, None).sum())
    return first, last, count


def format_spacing(spacing: Sequence[float]) -> str:
    """Voxel size written x × y × z (in-plane first): ``"0.9×0.9×3.0"``
    for array-order spacing ``(3.0, 0.9, 0.9)`` mm."""

    def one(v: float) -> str:
        text = f"{v:.2f}".rstrip("0")
        return text + "0" if text.endswith(".") else text

    return "×".join(one(v) for v in reversed(tuple(spacing)))


def _percent(fraction: float) -> str:
    pct = 100.0 * fraction
    if 0 < pct < 1:
        return "<1 %"
    return f"{pct:.0f} %"


def _resample_message(
    name: str,
    ref_name: str,
    geometry: ChannelGeometry,
    reference: ChannelGeometry,
    outside: float,
) -> str:
    text = (
        f"{name}: resampled from {format_spacing(geometry.spacing)} mm onto "
        f"{ref_name}'s {format_spacing(reference.spacing)} mm grid"
    )
    why = []
    cos = np.clip(np.sum(geometry.directions * reference.directions, axis=0), -1, 1)
    angle = float(np.degrees(np.arccos(cos)).max())
    if angle >= 0.1:
        why.append(f"orientation {angle:.1f}° apart")
    shift = float(np.linalg.norm(geometry.centre() - reference.centre()))
    if shift >= 0.05:
        why.append(f"centres {shift:.1f} mm apart")
    if not why and geometry.shape != reference.shape:
        why.append(f"{geometry.shape} voxels vs {reference.shape}")
    if why:
        text += f" ({', '.join(why)})"
    if outside > 0:
        text += (
            f"; {_percent(outside)} of {ref_name}'s grid lies outside {name}'s "
            f"field of view, filled with {name}'s minimum"
        )
    return text


def _overlap_error(
    refused: Sequence[int],
    covered: Mapping[int, float],
    names: Sequence[str],
    min_overlap: float,
) -> str:
    ref = names[0]
    parts = []
    for k in refused:
        if covered[k] <= 0:
            parts.append(f"'{names[k]}' does not overlap '{ref}' at all")
        else:
            parts.append(
                f"'{names[k]}' covers only {_percent(covered[k])} of '{ref}''s "
                "field of view"
            )
    return (
        f"The channels' fields of view do not overlap enough: {'; '.join(parts)} "
        f"(at least {_percent(min_overlap)} needed). The channels must show the "
        "same region of the same patient, in one frame of reference."
    )
