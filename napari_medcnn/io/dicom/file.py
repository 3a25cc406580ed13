"""Read one DICOM file: a 2D image, or a volume/frame stack when multi-frame.

Enhanced (multi-frame) IODs get per-frame geometry from their functional
groups (PlanePosition/PlaneOrientation/PixelMeasures/PixelValueTransformation/
FrameVOILUT, per-frame or shared) and their frames are sorted by position
along the slice normal; RT Dose uses GridFrameOffsetVector.  Multi-frame
files without geometry (ultrasound cine, secondary capture) become a stack
whose first axis is labelled ``"frame"`` (unit ``"pixel"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from napari_medcnn.io import quality
from napari_medcnn.io.dicom.geometry import (
    Slots,
    cluster,
    floats,
    gap_slots,
    group_by,
    make_scan,
    pixel_spacing,
    plane_axes,
    same_orientation,
    same_spacing,
    slice_spacing,
    sort_positions,
    split_duplicates,
    ultrasound_region_spacing,
)
from napari_medcnn.io.dicom.headers import _spacing, non_image_reason, read_dataset
from napari_medcnn.io.dicom.pixels import (
    PixelInfo,
    decode,
    finish_grayscale,
    to_rgb,
    window_of,
)
from napari_medcnn.io.metadata import dataset_metadata, layer_name, phi_tokens
from napari_medcnn.io.scan import QualityReport, Scan, ScanReadError

__all__ = ["load_file"]


@dataclass
class FrameInfo:
    """Geometry and value transform of one frame (mm, modality units)."""

    ipp: np.ndarray | None = None
    iop: np.ndarray | None = None
    spacing: tuple[float, float] | None = None
    slope: float = 1.0
    intercept: float = 0.0
    window: tuple[float, float] | None = None
    keys: dict[str, Any] = field(default_factory=dict)


def _first(groups: Dataset | None, keyword: str) -> Dataset | None:
    if groups is None:
        return None
    seq = groups.get(keyword)
    return seq[0] if seq else None


def _rescale_of(
    item: Dataset | None, default: tuple[float, float]
) -> tuple[float, float]:
    if item is None:
        return default
    try:
        slope = float(item.get("RescaleSlope", default[0]))
        intercept = float(item.get("RescaleIntercept", default[1]))
    except (TypeError, ValueError):
        return default
    return (slope, intercept) if slope != 0 else default


def frame_infos(ds: Dataset, n: int) -> list[FrameInfo]:
    """Per-frame geometry/rescale of a (multi-frame) dataset with ``n`` frames."""
    top_iop = floats(ds.get("ImageOrientationPatient"), 6)
    top_ipp = floats(ds.get("ImagePositionPatient"), 3)
    top_sp = _spacing(ds.get("PixelSpacing"))
    rescale = _rescale_of(ds, (1.0, 0.0))
    if "RescaleSlope" not in ds and (dose := _float(ds.get("DoseGridScaling"))):
        rescale = (dose, 0.0)  # RT Dose: stored value x scaling = Gy
    top_window = window_of(ds)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = ds.get("SharedFunctionalGroupsSequence")
    shared = shared[0] if shared else None
    if per_frame is not None or shared is not None:
        out = []
        for i in range(n):
            pf = per_frame[i] if per_frame is not None and i < len(per_frame) else None

            def item(kw: str, pf: Dataset | None = pf) -> Dataset | None:
                return _first(pf, kw) or _first(shared, kw)

            pos, ori = item("PlanePositionSequence"), item("PlaneOrientationSequence")
            meas, content = item("PixelMeasuresSequence"), item("FrameContentSequence")
            seg, echo = item("SegmentIdentificationSequence"), item("MREchoSequence")
            f = FrameInfo(
                ipp=floats(pos.get("ImagePositionPatient"), 3) if pos else None,
                iop=floats(ori.get("ImageOrientationPatient"), 6) if ori else top_iop,
                spacing=_spacing(meas.get("PixelSpacing")) if meas else top_sp,
                window=window_of(item("FrameVOILUTSequence")) or top_window,
            )
            if f.ipp is None and n == 1:
                f.ipp = top_ipp
            f.slope, f.intercept = _rescale_of(
                item("PixelValueTransformationSequence"), rescale
            )
            f.keys = {
                "stack": content.get("StackID") if content else None,
                "temporal position": content.get("TemporalPositionIndex")
                if content
                else None,
                "segment": seg.get("ReferencedSegmentNumber") if seg else None,
                "echo time": echo.get("EffectiveEchoTime") if echo else None,
            }
            out.append(f)
        return out
    ipps: list[np.ndarray | None] = [top_ipp if n == 1 else None] * n
    offsets = floats(ds.get("GridFrameOffsetVector"), n) if n > 1 else None
    if offsets is not None and top_ipp is not None:
        normal = plane_axes(top_iop)[2]
        ipps = [top_ipp + (o - offsets[0]) * normal for o in offsets]
    s, b = rescale
    return [FrameInfo(p, top_iop, top_sp, s, b, top_window) for p in ipps]


def _frame_groups(frames: list[FrameInfo]) -> list[tuple[list[int], str | None]]:
    """Frames split into stacks: by orientation/spacing, then by what explains
    repeated positions.  Frames without full geometry stay one group."""
    if not frames or any(f.ipp is None or f.iop is None for f in frames):
        return [(list(range(len(frames))), None)]
    labels = cluster(
        [(f.iop, f.spacing) for f in frames],
        lambda a, b: same_orientation(a[0], b[0]) and same_spacing(a[1], b[1]),
    )
    groups = group_by(labels)
    reason = "orientation or pixel spacing" if len(groups) > 1 else None
    out = []
    for g in groups:
        normal = plane_axes(frames[g[0]].iop)[2]
        dists = np.array([frames[i].ipp @ normal for i in g])
        keys = [(k, [frames[i].keys.get(k) for i in g]) for k in frames[g[0]].keys]
        parts, why = split_duplicates(dists, keys)
        for p in parts:
            out.append(([g[i] for i in p], why or reason))
    return out


def load_file(path: str | os.PathLike, include_phi: bool = False) -> list[Scan]:
    """Load one DICOM file.

    Args:
        path: the file.
        include_phi: copy patient name, ID and birth date into metadata.

    Returns:
        One :class:`Scan` (2D image, volume or frame stack), or several when
        a multi-frame file holds several stacks (orientations, echoes...).

    Raises:
        ScanReadError: not an image (SR, RT plan...), corrupt, truncated or
            missing a decoder; the message names the file and the reason.
    """
    path = os.fspath(path)
    try:
        return _load_file(path, include_phi)
    except ScanReadError:
        raise
    except MemoryError:
        raise ScanReadError(path, "not enough memory to load this file") from None
    except Exception as exc:  # malformed data pydicom/numpy choke on
        raise ScanReadError(
            path, f"unreadable image data ({type(exc).__name__}: {exc})"
        ) from exc


def _load_file(path: str, include_phi: bool) -> list[Scan]:
    ds = read_dataset(path)
    has_pixels = any(
        k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    )
    sop = str(
        ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", "")
    )
    reason = non_image_reason(sop, has_pixels, "Rows" in ds and "Columns" in ds)
    if reason:
        raise ScanReadError(path, reason)
    n = _check_pixel_module(path, ds)
    said: list[str] = []  # what a native decoder printed
    arr, pi = decode(path, ds, messages=said)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if n == 1 or arr.ndim == (2 if samples == 1 else 3):
        arr = arr[None]
    frames = frame_infos(ds, arr.shape[0])
    groups = _frame_groups(frames)
    modality = str(ds.get("Modality", "") or "") or None
    scans = []
    for k, (idx, why) in enumerate(groups):
        suffix = f"{why} {k + 1}" if len(groups) > 1 and why else ""
        scans.append(
            _group_scan(
                path, ds, arr, pi, frames, idx, why, suffix, modality, include_phi
            )
        )
        quality.note_decoder_output(scans[-1].quality, said)
    return scans


def _check_pixel_module(path: str, ds: Dataset) -> int:
    """Validate the Image Pixel module; return the number of frames."""
    for kw in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if kw not in ds or ds[kw].value in (None, ""):
            raise ScanReadError(path, f"missing required image attribute {kw}")
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (TypeError, ValueError) as exc:
        raise ScanReadError(path, f"invalid image attribute value: {exc}") from exc
    if n < 1 or rows < 1 or cols < 1:
        raise ScanReadError(path, f"invalid image size {n} x {rows} x {cols}")
    return n


def _group_scan(
    path: str,
    ds: Dataset,
    arr: np.ndarray,
    pi: str,
    frames: list[FrameInfo],
    idx: list[int],
    why: str | None,
    suffix: str,
    modality: str | None,
    include_phi: bool,
) -> Scan:
    report = QualityReport()
    quality.note_split(report, why if suffix else None)
    f0 = frames[idx[0]]
    geometric = len(idx) > 1 and all(frames[i].ipp is not None for i in idx)
    step, slots = None, None
    if geometric:
        normal = plane_axes(f0.iop)[2]
        order, dists = sort_positions(np.array([frames[i].ipp for i in idx]), normal)
        idx = [idx[i] for i in order]
        ipps = np.array([frames[i].ipp for i in idx])
        quality.check_positions(
            dists, report, steps=np.diff(ipps, axis=0), normal=normal
        )
        step = slice_spacing(dists)
        if step is None:
            step = _float(ds.get("SpacingBetweenSlices")) or _float(
                ds.get("SliceThickness")
            )
        slots = gap_slots(dists)
    plan = Slots(len(idx), slots)
    sub = arr if idx == list(range(arr.shape[0])) else arr[idx]
    sub = plan.expand(sub)
    rgb = sub.ndim == 4 or pi.upper() == "PALETTE COLOR"
    info = PixelInfo(rgb=rgb)
    if rgb:
        data = to_rgb(sub, ds, pi)
        info.notes["photometric_original"] = str(ds.PhotometricInterpretation)
    else:
        quality.check_intensities(
            sub,
            report,
            bits_stored=_int(ds.get("BitsStored")),
            signed=_int(ds.get("PixelRepresentation")) == 1,
            padding=_float(ds.get("PixelPaddingValue"), allow_zero=True),
        )
        data, info = finish_grayscale(
            sub,
            ds,
            pi,
            slopes=plan.per_slot([frames[i].slope for i in idx]),
            intercepts=plan.per_slot([frames[i].intercept for i in idx]),
            window=f0.window,
            modality=modality,
        )
        info.rgb = False
    spacing, unit = pixel_spacing(
        f0.spacing,
        _spacing(ds.get("ImagerPixelSpacing")),
        modality,
        report,
        regions=ultrasound_region_spacing(ds),
    )
    layout = (
        "2d"
        if data.shape[0] == 1 and len(frames) == 1
        else ("stack" if geometric else "frames")
    )
    if layout == "2d":
        data = data[0]
    md = dataset_metadata(ds, include_phi=include_phi)
    md["number_of_frames"] = len(idx)
    if len(frames) > 1:
        md["frame_order"] = [int(i) for i in idx]  # file frame of each slice
    if plan.missing:
        md["blank_slices"] = plan.missing
    scan = make_scan(
        data,
        layout=layout,
        rgb=rgb,
        iop=f0.iop,
        position=frames[idx[0]].ipp,
        spacing_yx=spacing,
        unit_yx=unit,
        slice_step=step,
        name=layer_name(ds, suffix),
        modality=modality,
        info=info,
        metadata=md,
        report=report,
        paths=[path],
    )
    scan.phi_tokens = phi_tokens(ds)
    return scan


def _float(value: Any, allow_zero: bool = False) -> float | None:
    """A finite float from a DICOM value (first of many); 0 -> None unless
    ``allow_zero``."""
    try:
        v = float(value[0] if isinstance(value, list | tuple) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return v if np.isfinite(v) and (v != 0 or allow_zero) else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
