"""Load a found series into one volume, fast.

The output volume is allocated once and filled slice by slice from a thread
pool.  Uncompressed little-endian grayscale slices are read straight from
the file into it (``readinto`` at the pixel offset found by the header
parse); anything else goes through pydicom's decoders one file at a time.
Rescale to HU is then done in place when the result fits ``int16``, so peak
memory stays about one output volume.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from napari_medcnn.io import quality
from napari_medcnn.io.dicom.file import load_file
from napari_medcnn.io.dicom.geometry import (
    Slots,
    gap_slots,
    make_scan,
    pixel_spacing,
    plane_axes,
    slice_spacing,
    sort_positions,
)
from napari_medcnn.io.dicom.headers import (
    SliceHeader,
    read_dataset,
    read_header,
    read_native_into,
)
from napari_medcnn.io.dicom.pixels import (
    PixelInfo,
    decode,
    finish_grayscale,
    invert,
    stored_dtype,
    to_rgb,
    window_of,
)
from napari_medcnn.io.metadata import dataset_metadata, layer_name, phi_tokens
from napari_medcnn.io.scan import QualityReport, Scan, ScanReadError

if TYPE_CHECKING:
    from napari_medcnn.io.dicom.find import SeriesInfo


def _workers(workers: int | None) -> int:
    from napari_medcnn.io.dicom.find import default_workers

    return workers or default_workers()


def _map(func, items, workers: int) -> list:
    """``map`` in a thread pool (plain map for one worker/one item)."""
    if workers <= 1 or len(items) <= 1:
        return list(map(func, items))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(func, items))


def _headers(info: SeriesInfo, workers: int) -> list[SliceHeader]:
    if len(info.headers) == len(info.files):
        return list(info.headers)
    headers = _map(read_header, list(info.files), workers)
    missing = [f for f, h in zip(info.files, headers) if h is None]
    if missing:
        raise ScanReadError(missing[0], "not a DICOM file")
    return headers


def _suffix(info: SeriesInfo, h: SliceHeader) -> str:
    why = info.split_reason or ""
    if not why:
        return ""
    if why == "echo number":
        return f"echo {h.echo_number}"
    if why == "acquisition number":
        return f"acquisition {h.acquisition_number}"
    if why == "temporal position":
        return f"time {h.temporal_position}"
    if why == "multi-frame file":
        return f"instance {h.instance_number}"
    return f"{info.orientation} {info.cols}x{info.rows}"


def load_series_scans(
    info: SeriesInfo, *, include_phi: bool = False, workers: int | None = None
) -> list[Scan]:
    """All scans of one series (several only for a multi-stack file)."""
    where = info.files[0] if info.files else info.series_uid
    if info.kind != "image":
        raise ScanReadError(
            where, f"series holds no image ({info.sop_class_name or info.modality})"
        )
    if not info.files:
        raise ScanReadError(info.series_uid or "series", "series has no files")
    if len(info.files) == 1:
        scans = load_file(info.files[0], include_phi=include_phi)
        for s in scans:
            quality.note_split(s.quality, info.split_reason)
        return scans
    try:
        return _load_files(info, include_phi, _workers(workers))
    except ScanReadError:
        raise
    except MemoryError:
        raise ScanReadError(where, "not enough memory to load this series") from None
    except Exception as exc:  # malformed data pydicom/numpy choke on
        raise ScanReadError(
            where, f"unreadable series ({type(exc).__name__}: {exc})"
        ) from exc


def _load_files(info: SeriesInfo, include_phi: bool, n_workers: int) -> list[Scan]:
    where = info.files[0]
    hs = _headers(info, n_workers)
    if any(h.frames > 1 for h in hs):
        raise ScanReadError(
            where, "series mixes multi-frame files; open them one by one"
        )
    if len({(h.rows, h.cols, h.samples) for h in hs}) > 1:
        raise ScanReadError(
            where, "slices differ in size; scan the folder to split them"
        )
    return [_load_stack(info, hs, include_phi, n_workers)]


def _load_stack(
    info: SeriesInfo, hs: list[SliceHeader], include_phi: bool, workers: int
) -> Scan:
    report = QualityReport()
    quality.note_split(report, info.split_reason)
    geometric = all(h.ipp is not None and h.iop is not None for h in hs)
    step, slots = None, None
    if geometric:
        normal = plane_axes(hs[0].iop)[2]
        ipps = np.array([h.ipp for h in hs])
        order, dists = sort_positions(
            ipps, normal, [h.instance_number or 0 for h in hs]
        )
        hs = [hs[i] for i in order]
        quality.check_positions(
            dists, report, steps=np.diff(ipps[order], axis=0), normal=normal
        )
        step = slice_spacing(dists)
        slots = gap_slots(dists)
    else:
        hs = sorted(hs, key=lambda h: (h.instance_number or 0, h.path))
    plan = Slots(len(hs), slots)
    h0 = hs[0]
    ds0 = read_dataset(h0.path, header_only=True)
    modality = h0.modality or None
    slopes = plan.per_slot([h.slope for h in hs])
    intercepts = plan.per_slot([h.intercept for h in hs])
    window = window_of(ds0)
    same_pixels = len({(h.bits_allocated, h.pixel_representation) for h in hs}) == 1
    args = (ds0, h0, slopes, intercepts, window, modality, report)
    if same_pixels and all(h.fast_readable for h in hs):
        raw = np.empty(
            (plan.n_out, h0.rows, h0.cols),
            stored_dtype(h0.bits_allocated, h0.pixel_representation),
        )

        def read(k: int) -> tuple[int, int]:
            out = raw[plan.pos[k]]
            read_native_into(hs[k], out)
            return int(out.min()), int(out.max())  # while the slice is in cache

        ranges = np.array(_map(read, range(len(hs)), workers))
        plan.blank(raw)
        value_range = (int(ranges[:, 0].min()), int(ranges[:, 1].max()))
        data, info_px = _grayscale(raw, *args, value_range=value_range)
    else:
        data, info_px = _decode_stack(hs, plan, args, workers)
    spacing, unit = pixel_spacing(
        h0.pixel_spacing, h0.imager_pixel_spacing, modality, report
    )
    md = dataset_metadata(ds0, include_phi=include_phi)
    md["number_of_slices"] = len(hs)
    md["series_split_reason"] = info.split_reason
    if plan.missing:
        md["blank_slices"] = plan.missing
    scan = make_scan(
        data,
        layout="stack" if geometric else "frames",
        rgb=info_px.rgb,
        iop=h0.iop,
        position=h0.ipp,
        spacing_yx=spacing,
        unit_yx=unit,
        slice_step=step,
        name=layer_name(ds0, _suffix(info, h0)),
        modality=modality,
        info=info_px,
        metadata=md,
        report=report,
        paths=[h.path for h in hs],
    )
    scan.phi_tokens = phi_tokens(ds0)
    return scan


def _grayscale(
    raw, ds0, h0, slopes, intercepts, window, modality, report, value_range=None
):
    quality.check_intensities(
        raw, report, bits_stored=h0.bits_stored, signed=h0.pixel_representation == 1
    )
    return finish_grayscale(
        raw,
        ds0,
        h0.photometric,
        slopes=slopes,
        intercepts=intercepts,
        window=window,
        modality=modality,
        value_range=value_range,
    )


def _decode_stack(hs, plan, args, workers):
    """Decode slice by slice with pydicom (compressed or unusual series);
    what a native decoder printed goes into the quality report."""
    said: list[str] = []  # filled from the pool's threads (append is atomic)
    data, info = _decode_slices(hs, plan, args, workers, said)
    quality.note_decoder_output(args[-1], said)
    return data, info


def _decode_slices(hs, plan, args, workers, said):
    ds0, h0, slopes, intercepts, window, modality, report = args
    n = len(hs)
    first = read_dataset(hs[0].path)
    arr0, pi = decode(hs[0].path, first, messages=said)
    color = arr0.ndim == 3 or pi.upper() == "PALETTE COLOR"
    luts = any(h.has_luts for h in hs)
    uniform = len(
        {(h.bits_allocated, h.bits_stored, h.pixel_representation) for h in hs}
    )
    if not color and not luts and uniform == 1:
        # the common case (compressed CT/MR): stored values into one volume,
        # then the same in-place rescale as the fast path
        raw = np.empty((plan.n_out, *arr0.shape), arr0.dtype)
        raw[plan.pos[0]] = arr0

        def fill_raw(k: int) -> None:
            arr = decode(hs[k].path, read_dataset(hs[k].path), messages=said)[0]
            if arr.shape != arr0.shape:
                raise ScanReadError(
                    hs[k].path, f"slice shape {arr.shape} != {arr0.shape}"
                )
            np.copyto(raw[plan.pos[k]], arr, casting="same_kind")

        _map(fill_raw, range(1, n), workers)
        plan.blank(raw)
        return _grayscale(raw, *args)

    # colour, LUT sequences or mixed pixel formats: process each slice, then
    # stack at a common dtype (about two volumes of memory at the peak)
    def process(k: int, ds=None, arr=None, pi_k=pi):
        if ds is None:
            ds = read_dataset(hs[k].path)
            arr, pi_k = decode(hs[k].path, ds, messages=said)
        if color:
            return to_rgb(arr, ds, pi_k), None
        return finish_grayscale(
            arr,
            ds,
            pi_k,
            slopes=np.array([hs[k].slope]),
            intercepts=np.array([hs[k].intercept]),
            window=window,
            modality=modality,
            invert_now=False,
        )

    slices = [process(0, first, arr0)] + _map(process, range(1, n), workers)
    shapes = {s.shape for s, _ in slices}
    if len(shapes) > 1:
        raise ScanReadError(hs[0].path, f"slices differ in shape: {sorted(shapes)}")
    info = slices[0][1] or PixelInfo(rgb=True)
    out = np.stack([s for s, _ in slices]).astype(
        np.result_type(*[s.dtype for s, _ in slices]), copy=False
    )
    del slices
    out = plan.expand(out)
    if color:
        info.rgb = True
        info.notes["photometric_original"] = hs[0].photometric
        return out, info
    if pi.upper() == "MONOCHROME1":
        out, total = invert(out)
        info.notes.update(monochrome1_inverted=True, inversion_sum=total)
        if info.window is not None:
            info.window = (total - info.window[0], info.window[1])
    return out, info
