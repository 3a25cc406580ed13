"""Load DICOM: one file, one found series, or a whole folder.

* :func:`load_file`: one file, a 2D image or, when multi-frame, a volume or
  frame stack.  Frames are split into stacks like the files of a series
  (:func:`~napari_medcnn.io.dicom.find.split_stacks`: orientation, pixel
  spacing, or repeated positions a frame key explains: stack, temporal
  position, segment, echo time).  Frames without geometry (ultrasound
  cine, secondary capture) become a stack whose first axis is labelled
  ``"frame"`` (unit ``"pixel"``).
* :func:`load_series` / :func:`load_series_scans`: a series found by
  ``find.iter_scan_folder``, fast.  The output volume is allocated once and
  filled slice by slice from a thread pool.  Uncompressed little-endian
  grayscale slices are read straight from the file into it (``readinto``
  at the pixel offset found by the header parse); anything else goes
  through pydicom's decoders one file at a time.  Rescale to HU is then
  done in place when the result fits ``int16``, so peak memory stays about
  one output volume.
* :func:`load_folder`: find the series of a folder and load them all (what
  ``io.load`` calls for a folder).

Both kinds of stack are sorted, checked and assembled by
:func:`~napari_medcnn.io.dicom.stack.stack_scan`; this module only says
where their slices and pixels come from.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from napari_medcnn._progress import drain
from napari_medcnn.io import quality
from napari_medcnn.io.dicom.decoders import decode
from napari_medcnn.io.dicom.find import (
    FolderScan,
    SeriesInfo,
    default_workers,
    iter_folder,
    split_stacks,
)
from napari_medcnn.io.dicom.geometry import (
    Slots,
    same_orientation,
    same_spacing,
    ultrasound_region_spacing,
)
from napari_medcnn.io.dicom.headers import (
    FrameInfo,
    SliceHeader,
    finite_float,
    frame_infos,
    non_image_reason,
    parse_spacing,
    read_dataset,
    read_header,
    read_native_into,
)
from napari_medcnn.io.dicom.pixels import (
    PixelInfo,
    finish_grayscale,
    invert,
    stored_dtype,
    to_rgb,
    window_of,
)
from napari_medcnn.io.dicom.stack import Reader, Stack, Stored, Volume, stack_scan
from napari_medcnn.io.metadata import dataset_metadata, layer_name
from napari_medcnn.io.scan import QualityReport, Scan, ScanList, ScanReadError

__all__ = ["load_file", "load_folder", "load_series", "load_series_scans"]


# -- one file -------------------------------------------------------------------
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
    if all(f.ipp is not None and f.iop is not None for f in frames):
        groups = split_stacks(frames, _frame_differences, lambda f: f.keys)
    else:  # frames without full geometry stay one stack
        groups = [(list(range(len(frames))), None)]
    modality = str(ds.get("Modality", "") or "") or None
    rgb = arr.ndim == 4 or pi.upper() == "PALETTE COLOR"
    stored = Stored(
        photometric=pi,
        modality=modality,
        bits_stored=_int(ds.get("BitsStored")),
        signed=_int(ds.get("PixelRepresentation")) == 1,
        padding=finite_float(ds.get("PixelPaddingValue"), allow_zero=True),
    )
    step = finite_float(ds.get("SpacingBetweenSlices")) or finite_float(
        ds.get("SliceThickness")
    )
    scans = []
    for k, (idx, why) in enumerate(groups):
        suffix = f"{why} {k + 1}" if len(groups) > 1 and why else ""
        report = QualityReport()
        quality.note_split(report, why if suffix else None)
        planes = [frames[i] for i in idx]
        md = dataset_metadata(ds, include_phi=include_phi)
        md["number_of_frames"] = len(idx)
        stack = Stack(
            planes=planes,
            read=_frames_reader(arr, idx, ds, pi, rgb),
            ds=ds,
            stored=replace(stored, window=planes[0].window),
            files=[path] * len(idx),
            frames=idx if len(frames) > 1 else None,
            orientation_required=False,
            fallback_step=step,
            imager_spacing=parse_spacing(ds.get("ImagerPixelSpacing")),
            region_spacing=ultrasound_region_spacing(ds),
        )
        scans.append(
            stack_scan(stack, name=layer_name(ds, suffix), metadata=md, report=report)
        )
        quality.note_decoder_output(scans[-1].quality, said)
    return scans


def _frame_differences(a: FrameInfo, b: FrameInfo) -> list[str]:
    """Frames that cannot share a stack (the reason is not told apart)."""
    if same_orientation(a.iop, b.iop) and same_spacing(
        a.pixel_spacing, b.pixel_spacing
    ):
        return []
    return ["orientation or pixel spacing"]


def _frames_reader(
    arr: np.ndarray, idx: list[int], ds: Dataset, pi: str, rgb: bool
) -> Reader:
    """The frames ``idx`` of the decoded ``arr``, sorted onto their slots."""

    def read(order: list[int], plan: Slots, report: QualityReport) -> Volume:
        frames = [idx[i] for i in order]
        sub = arr if frames == list(range(arr.shape[0])) else arr[frames]
        sub = plan.expand(sub)
        if not rgb:
            return Volume(sub)
        info = PixelInfo(rgb=True)
        info.notes["photometric_original"] = str(ds.PhotometricInterpretation)
        return Volume(to_rgb(sub, ds, pi), info)

    return read


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


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# -- one found series -----------------------------------------------------------
def load_series(
    info: SeriesInfo, *, include_phi: bool = False, workers: int | None = None
) -> Scan:
    """Load one image series as a :class:`Scan` (volume, 2D image or stack).

    Slices are sorted by position along the normal; the slice spacing comes
    from the positions.  A single multi-frame file holding several stacks
    returns the first (``io.load`` on the file gives them all).

    Raises:
        ScanReadError: a non-image series, or unreadable/corrupt files.
    """
    return load_series_scans(info, include_phi=include_phi, workers=workers)[0]


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
        return _load_files(info, include_phi, workers or default_workers())
    except ScanReadError:
        raise
    except MemoryError:
        raise ScanReadError(where, "not enough memory to load this series") from None
    except Exception as exc:  # malformed data pydicom/numpy choke on
        raise ScanReadError(
            where, f"unreadable series ({type(exc).__name__}: {exc})"
        ) from exc


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


def _load_files(info: SeriesInfo, include_phi: bool, workers: int) -> list[Scan]:
    where = info.files[0]
    hs = _headers(info, workers)
    if any(h.frames > 1 for h in hs):
        raise ScanReadError(
            where, "series mixes multi-frame files; open them one by one"
        )
    if len({(h.rows, h.cols, h.samples) for h in hs}) > 1:
        raise ScanReadError(
            where, "slices differ in size; scan the folder to split them"
        )
    # the folder scan listed the files sorted, so hs[0] is the first slice
    h0 = hs[0]
    ds0 = read_dataset(h0.path, header_only=True)
    stored = Stored(
        photometric=h0.photometric,
        modality=h0.modality or None,
        bits_stored=h0.bits_stored,
        signed=h0.pixel_representation == 1,
        window=window_of(ds0),
    )
    report = QualityReport()
    quality.note_split(report, info.split_reason)
    md = dataset_metadata(ds0, include_phi=include_phi)
    md["number_of_slices"] = len(hs)
    md["series_split_reason"] = info.split_reason
    stack = Stack(
        planes=hs,
        read=_series_reader(hs, ds0, stored, workers),
        ds=ds0,
        stored=stored,
        files=[h.path for h in hs],
        sort_keys=[(h.instance_number or 0, h.path) for h in hs],
        imager_spacing=h0.imager_pixel_spacing,
    )
    name = layer_name(ds0, _suffix(info, h0))
    return [stack_scan(stack, name=name, metadata=md, report=report)]


def _series_reader(
    hs: list[SliceHeader], ds0: Dataset, stored: Stored, workers: int
) -> Reader:
    """Each file's pixels into one volume: read in place when every slice is
    plain uncompressed grayscale of one format, else decoded."""
    same_pixels = len({(h.bits_allocated, h.pixel_representation) for h in hs}) == 1

    def read(order: list[int], plan: Slots, report: QualityReport) -> Volume:
        files = [hs[i] for i in order]
        if same_pixels and all(h.fast_readable for h in files):
            return _read_native(files, plan, workers)
        said: list[str] = []  # filled from the pool's threads (append is atomic)
        vol = _decode_slices(files, plan, stored, workers, said)
        vol.messages = said
        return vol

    return read


def _read_native(hs: list[SliceHeader], plan: Slots, workers: int) -> Volume:
    """Stored values read straight from the files into the volume."""
    h0 = hs[0]
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
    return Volume(raw, value_range=value_range)


def _decode_slices(
    hs: list[SliceHeader],
    plan: Slots,
    stored: Stored,
    workers: int,
    said: list[str],
) -> Volume:
    """Decode slice by slice with pydicom (compressed or unusual series)."""
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
        return Volume(raw)

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
            window=stored.window,
            modality=stored.modality,
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
        return Volume(out, info)
    if pi.upper() == "MONOCHROME1":
        out, total = invert(out)
        info.notes.update(monochrome1_inverted=True, inversion_sum=total)
        if info.window is not None:
            info.window = (total - info.window[0], info.window[1])
    return Volume(out, info)


# -- a folder -------------------------------------------------------------------
def load_folder(path: str | os.PathLike, *, include_phi: bool = False) -> ScanList:
    """Load every image series under ``path`` (``io.load`` for folders).

    Returns:
        The scans, as a :class:`ScanList` whose ``folder_quality`` lists,
        once for the folder, the non-image series (SR, RT plan, SEG...)
        that were skipped (``skipped_non_image``) and the files or series
        that failed to load (``skipped_unreadable``).  Each scan's own
        report holds only findings about that scan.

    Raises:
        ScanReadError: no readable image series; the message says what the
            folder holds.
    """
    found: FolderScan = drain(iter_folder(path))
    images = [s for s in found.series if s.kind == "image"]
    others = [s for s in found.series if s.kind != "image"]
    scans: list[Scan] = []
    failures = list(found.errors)
    for info in images:
        try:
            scans.extend(load_series_scans(info, include_phi=include_phi))
        except ScanReadError as exc:
            failures.append(str(exc))
    if not scans:
        raise ScanReadError(path, _describe(found, others, failures))
    folder = QualityReport()
    quality.note_skipped_non_image(folder, [_non_image_name(s) for s in others])
    quality.note_unreadable(folder, failures)
    return ScanList(scans, folder)


def _non_image_name(info: SeriesInfo) -> str:
    what = info.sop_class_name or info.modality or "unknown object"
    if info.headers:
        h = info.headers[0]
        why = non_image_reason(h.sop_class, h.has_pixels, h.rows > 0, in_folder=True)
        what = why or what
    return f"{what} ({info.n_files} file{'s' if info.n_files != 1 else ''})"


def _describe(found: FolderScan, others: list[SeriesInfo], failures: list[str]) -> str:
    if found.n_files == 0:
        return "the folder holds no files"
    if found.n_dicom == 0:
        return f"no DICOM files among {found.n_files} file(s)"
    parts = [
        f"no readable image series ({found.n_dicom} DICOM of {found.n_files} files)"
    ]
    if others:
        parts.append("non-image: " + ", ".join(_non_image_name(s) for s in others[:5]))
    if failures:
        parts.append("unreadable: " + "; ".join(failures[:3]))
    return "; ".join(parts)
