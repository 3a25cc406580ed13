"""Assemble one stack of DICOM slices into a :class:`Scan`.

The one path for both kinds of stack: a series (one slice per file, see
``load.load_series``) and a multi-frame file (one slice per frame, see
``load.load_file``).  The caller describes the stack with a small
:class:`Stack`: a :class:`Plane` record per slice (position, orientation,
pixel spacing, rescale) and a :data:`Reader` that puts the slices' pixels
into one volume; :func:`stack_scan` then

1. sorts the slices along the normal and checks their positions (missing
   slices, uneven spacing, duplicates, gantry tilt), takes the slice spacing
   and the gap slots of missing slices,
2. has the reader fill the volume, sorted, each slice in its slot,
3. finishes stored values (intensity checks, rescale per slot, LUTs,
   MONOCHROME1) unless the reader already did,
4. takes the pixel spacing (with its fallbacks), builds the affine and the
   :class:`Scan` (:func:`~napari_medcnn.io.dicom.geometry.make_scan`) and
   its PHI tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pydicom.dataset import Dataset

from napari_medcnn.io import quality
from napari_medcnn.io.dicom.geometry import (
    Slots,
    gap_slots,
    make_scan,
    pixel_spacing,
    plane_axes,
    slice_spacing,
    sort_positions,
)
from napari_medcnn.io.dicom.pixels import PixelInfo, finish_grayscale
from napari_medcnn.io.metadata import phi_tokens
from napari_medcnn.io.scan import QualityReport, Scan

__all__ = ["Plane", "Reader", "Stack", "Stored", "Volume", "stack_scan"]


class Plane(Protocol):
    """Where one slice lies and how its stored values rescale (mm, modality
    units): a ``headers.SliceHeader`` or a ``headers.FrameInfo``."""

    ipp: np.ndarray | None
    iop: np.ndarray | None
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float


@dataclass
class Volume:
    """What a :data:`Reader` returns: the slices' pixels on their slots.

    ``info`` is None for stored values, which :func:`stack_scan` finishes
    as grayscale (``value_range``, their known min/max, saves two passes);
    a reader that finished them itself (colour, mixed pixel formats) sets
    it.  ``messages`` is what a native decoder printed while reading.
    """

    data: np.ndarray
    info: PixelInfo | None = None
    value_range: tuple[int, int] | None = None
    messages: Sequence[str] = ()


#: ``read(order, slots, report) -> Volume``: the pixels of the planes
#: ``order`` (indices into ``Stack.planes``, sorted), slice ``k`` in slot
#: ``slots.pos[k]`` of a volume of ``slots.n_out`` slices, gap slots blank.
Reader = Callable[[list[int], Slots, QualityReport], Volume]


@dataclass
class Stored:
    """How the stack's stored values become modality values and what the
    intensity checks need (the same for every slice)."""

    photometric: str
    modality: str | None
    bits_stored: int | None
    signed: bool
    padding: float | None = None
    window: tuple[float, float] | None = None


@dataclass
class Stack:
    """One stack of slices, as :func:`stack_scan` needs it.

    Attributes:
        planes: one per slice, in the order found; ``planes[0]`` gives the
            orientation and pixel spacing, as ``ds`` the header values.
        read: the pixels (see :data:`Reader`).
        ds: a header of the stack (pixel data not needed): metadata, layer
            name, LUT sequences, PHI tokens.
        stored: the pixel format and the window.
        files: the file of each plane (the scan's ``source_paths``, in slice
            order, each once).
        frames: the frame number of each plane in a multi-frame file
            (metadata ``frame_order``), else None.  A stack of one plane
            that is not a frame of a multi-frame file is a 2D image.
        sort_keys: (InstanceNumber, path) per plane, to order equal
            positions (the number) and slices without positions (both);
            None keeps the order found.
        orientation_required: positions without an orientation still make a
            stack (axial assumed) when False, else a frame stack.
        fallback_step: slice spacing when the positions give none.
        imager_spacing, region_spacing: the pixel spacing fallbacks
            (ImagerPixelSpacing, ultrasound regions).
    """

    planes: Sequence[Plane]
    read: Reader
    ds: Dataset
    stored: Stored
    files: Sequence[str]
    frames: Sequence[int] | None = None
    sort_keys: Sequence[tuple[int, str]] | None = None
    orientation_required: bool = True
    fallback_step: float | None = None
    imager_spacing: tuple[float, float] | None = None
    region_spacing: tuple[float, float] | None = None


def stack_scan(
    stack: Stack, *, name: str, metadata: dict[str, Any], report: QualityReport
) -> Scan:
    """Sort, check and read the slices of ``stack`` into one :class:`Scan`.

    Args:
        stack: the slices.
        name: the layer name.
        metadata: the scan's metadata so far (``frame_order``,
            ``blank_slices`` and the pixel pipeline's notes are added).
        report: the scan's quality report; position, intensity, decoder and
            pixel spacing findings are added to it.
    """
    planes = stack.planes
    order, geometric, step, slots = _arrange(stack, report)
    plan = Slots(len(order), slots)
    vol = stack.read(order, plan, report)
    data, info = vol.data, vol.info
    if info is None:
        data, info = _grayscale(vol, stack, [planes[i] for i in order], plan, report)
    quality.note_decoder_output(report, list(vol.messages))
    s = stack.stored
    spacing, unit = pixel_spacing(
        planes[0].pixel_spacing,
        stack.imager_spacing,
        s.modality,
        report,
        regions=stack.region_spacing,
    )
    layout = "stack" if geometric else "frames"
    if len(planes) == 1 and stack.frames is None:
        layout, data = "2d", data[0]
    md = dict(metadata)
    if stack.frames is not None:
        md["frame_order"] = [int(stack.frames[i]) for i in order]
    if plan.missing:
        md["blank_slices"] = plan.missing
    scan = make_scan(
        data,
        layout=layout,
        rgb=info.rgb,
        iop=planes[0].iop,
        position=planes[order[0]].ipp,
        spacing_yx=spacing,
        unit_yx=unit,
        slice_step=step,
        name=name,
        modality=s.modality,
        info=info,
        metadata=md,
        report=report,
        paths=list(dict.fromkeys(stack.files[i] for i in order)),
    )
    scan.phi_tokens = phi_tokens(stack.ds)
    return scan


def _arrange(
    stack: Stack, report: QualityReport
) -> tuple[list[int], bool, float | None, np.ndarray | None]:
    """(order, geometric, slice step, gap slots): slices sorted along the
    normal, positions checked into ``report``."""
    planes, keys = stack.planes, stack.sort_keys
    geometric = len(planes) > 1 and all(
        p.ipp is not None and (p.iop is not None or not stack.orientation_required)
        for p in planes
    )
    if not geometric:
        order = list(range(len(planes)))
        if keys is not None:
            order.sort(key=lambda i: keys[i])
        return order, False, None, None
    normal = plane_axes(planes[0].iop)[2]
    ipps = np.array([p.ipp for p in planes])
    tiebreak = None if keys is None else [k[0] for k in keys]
    sorted_idx, dists = sort_positions(ipps, normal, tiebreak)
    order = [int(i) for i in sorted_idx]
    quality.check_positions(
        dists, report, steps=np.diff(ipps[order], axis=0), normal=normal
    )
    step = slice_spacing(dists)
    if step is None:
        step = stack.fallback_step
    return order, True, step, gap_slots(dists)


def _grayscale(
    vol: Volume,
    stack: Stack,
    planes: list[Plane],
    plan: Slots,
    report: QualityReport,
) -> tuple[np.ndarray, PixelInfo]:
    """Intensity checks on the stored values, then rescale (per slot), LUTs
    and MONOCHROME1 inversion."""
    s = stack.stored
    quality.check_intensities(
        vol.data, report, bits_stored=s.bits_stored, signed=s.signed, padding=s.padding
    )
    return finish_grayscale(
        vol.data,
        stack.ds,
        s.photometric,
        slopes=plan.per_slot([p.slope for p in planes]),
        intercepts=plan.per_slot([p.intercept for p in planes]),
        window=s.window,
        modality=s.modality,
        value_range=vol.value_range,
    )
