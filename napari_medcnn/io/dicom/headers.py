"""Reading DICOM files: whole datasets, cheap per-slice headers, per-frame
headers of multi-frame files, raw pixels.

:func:`read_header` parses a file up to its pixel data (``dcmread(...,
stop_before_pixels=True)``), keeps the few values that series grouping,
sorting and fast loading need in a small :class:`SliceHeader`, and notes
where the pixel bytes start so that :func:`read_native_into` can read them
straight into a preallocated volume.  :func:`frame_infos` gives the same
geometry and rescale for each frame of a multi-frame dataset
(:class:`FrameInfo`): enhanced IODs from their functional groups
(PlanePosition/PlaneOrientation/PixelMeasures/PixelValueTransformation/
FrameVOILUT, per-frame or shared), RT Dose from GridFrameOffsetVector.
Both are :class:`~napari_medcnn.io.dicom.stack.Plane` records for the stack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from napari_medcnn.io.dicom.geometry import floats, plane_axes
from napari_medcnn.io.dicom.pixels import window_of
from napari_medcnn.io.dicom.quiet import quiet_parse
from napari_medcnn.io.formats import DICOM_SUFFIXES, looks_like_raw_dicom
from napari_medcnn.io.scan import ScanReadError

SEG_SOP = "1.2.840.10008.5.1.4.1.1.66.4"
DICOMDIR_SOP = "1.2.840.10008.1.3.10"
#: SOP classes that are images even though their family is not.
_IMAGE_SOPS = {
    "1.2.840.10008.5.1.4.1.1.481.1",  # RT Image
    "1.2.840.10008.5.1.4.1.1.481.2",  # RT Dose
}
#: Families of SOP classes that hold no image (SR, KO, PR, RT plan/structure
#: set/records, waveforms, encapsulated documents, registrations...).
_NON_IMAGE_PREFIXES = tuple(
    "1.2.840.10008.5.1.4.1.1." + s
    for s in ("88.", "11.", "9.", "104.", "66", "67", "68.", "4.2", "481.", "91.")
) + ("1.2.840.10008.5.1.4.34.", "1.2.840.10008.5.1.4.38.", "1.2.840.10008.5.1.4.39.")
_NATIVE_LE = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}
_PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}


def non_image_reason(
    sop_class: str, has_pixels: bool, has_rows: bool, *, in_folder: bool = False
) -> str | None:
    """Why an object is not an image, or None when it is one.

    A DICOM Segmentation is an image when opened as a file, but in a folder
    it is an annotation of another series and is listed as non-image.
    """
    from pydicom.uid import UID

    name = UID(sop_class).name if sop_class else "object of unknown SOP class"
    if sop_class == SEG_SOP and not in_folder:
        pass
    elif sop_class not in _IMAGE_SOPS and sop_class.startswith(_NON_IMAGE_PREFIXES):
        return f"{name} holds no image"
    if not has_pixels:
        return f"{name} has no pixel data"
    if not has_rows:
        return f"{name} has pixel data but no Rows/Columns"
    return None


@dataclass(slots=True)
class SliceHeader:
    """What grouping, sorting and loading need from one file (no pixels)."""

    path: str
    sop_class: str = ""
    modality: str = ""
    series_uid: str = ""
    study_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    study_date: str = ""
    study_description: str = ""
    series_description: str = ""
    series_number: int | None = None
    instance_number: int | None = None
    rows: int = 0
    cols: int = 0
    frames: int = 1
    samples: int = 1
    photometric: str = ""
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    iop: np.ndarray | None = None
    ipp: np.ndarray | None = None
    pixel_spacing: tuple[float, float] | None = None
    imager_pixel_spacing: tuple[float, float] | None = None
    slope: float = 1.0
    intercept: float = 0.0
    has_luts: bool = False
    echo_number: str | None = None
    acquisition_number: str | None = None
    temporal_position: str | None = None
    transfer_syntax: str = ""
    has_pixels: bool = False
    pixel_offset: int | None = None
    pixel_length: int | None = None

    @property
    def is_image(self) -> bool:
        return (
            non_image_reason(
                self.sop_class, self.has_pixels, self.rows > 0, in_folder=True
            )
            is None
        )

    @property
    def fast_readable(self) -> bool:
        """Uncompressed little-endian grayscale that can be read in place."""
        return (
            self.transfer_syntax in _NATIVE_LE
            and self.pixel_offset is not None
            and self.frames == 1
            and self.samples == 1
            and self.bits_allocated in (8, 16, 32)
            and self.photometric in ("MONOCHROME1", "MONOCHROME2")
            and not self.has_luts
        )


#: Header values read straight from pydicom's raw elements (ASCII text VRs
#: and US), ~10x cheaper than pydicom's value conversion; text that may use a
#: non-ASCII character set goes through pydicom.
_US_KEYWORDS = {
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
}
_CHARSET_KEYWORDS = {
    "PatientName",
    "PatientID",
    "StudyDescription",
    "SeriesDescription",
}
_TAGS: dict[str, int] = {}


def _raw_value(ds: Dataset, kw: str) -> Any:
    tag = _TAGS.get(kw)
    if tag is None:
        tag = _TAGS[kw] = int(tag_for_keyword(kw))
    elem = ds._dict.get(tag) if hasattr(ds, "_dict") else ds.get(kw)
    if elem is None:
        return None
    value = elem.value
    if isinstance(elem, RawDataElement) and isinstance(value, bytes):
        if kw in _US_KEYWORDS:
            order = "little" if elem.is_little_endian else "big"
            return int.from_bytes(value[:2], order) if len(value) >= 2 else None
        if kw in _CHARSET_KEYWORDS and not value.isascii():
            value = ds.get(kw)  # let pydicom apply SpecificCharacterSet
            return None if value is None else str(value)
        return value.decode("latin-1").strip(" \x00")
    return value


def _get(ds: Dataset, kw: str, conv: Any = str, default: Any = None) -> Any:
    """Header value ``kw`` converted with ``conv``; ``default`` when absent or
    malformed (a bad value never stops a folder scan)."""
    try:
        value = _raw_value(ds, kw)
        if value is None or value == "":
            return default
        if conv is int and isinstance(value, str):
            return int(float(value.split("\\")[0]))
        return conv(value)
    except Exception:
        return default


def _multi(ds: Dataset, kw: str, n: int) -> np.ndarray | None:
    value = _raw_value(ds, kw)
    if isinstance(value, str):
        value = value.split("\\")
    return floats(value, n)


def _first_float(value: Any) -> float:
    if isinstance(value, str):
        value = value.split("\\")[0]
    v = float(value)
    if not np.isfinite(v):
        raise ValueError(value)
    return v


def parse_spacing(value: Any) -> tuple[float, float] | None:
    """A (row, column) spacing from a DICOM pair, positive and finite, else None."""
    arr = floats(value, 2)
    if arr is None or np.any(arr <= 0):
        return None
    return (float(arr[0]), float(arr[1]))


def _pixel_location(
    fh: Any, ds: Dataset, ts: str
) -> tuple[bool, int | None, int | None]:
    """After a stop-before-pixels read: (has_pixels, value offset, length).

    The offset is None for encapsulated, deflated or big-endian data.
    """
    start = fh.tell()
    raw = fh.read(12)
    if len(raw) < 8:
        return False, None, None
    implicit, little = ds.original_encoding
    order = "little" if little is not False else "big"
    tag = int.from_bytes(raw[0:2], order) << 16 | int.from_bytes(raw[2:4], order)
    if tag not in _PIXEL_TAGS:
        return False, None, None
    if implicit:
        length, header = int.from_bytes(raw[4:8], order), 8
    elif raw[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"UN", b"OV"):
        length, header = int.from_bytes(raw[8:12], order), 12
    else:
        length, header = int.from_bytes(raw[6:8], order), 8
    if length == 0xFFFFFFFF or ts not in _NATIVE_LE or tag != 0x7FE00010:
        return True, None, None
    return True, start + header, length


def _open_kind(path: str, head: bytes) -> bool | None:
    """True: DICOM with preamble; False: raw DICOM (force); None: not DICOM."""
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if path.lower().endswith(DICOM_SUFFIXES) and looks_like_raw_dicom(head):
        return False
    return None


def read_header(path: str) -> SliceHeader | None:
    """Parse ``path`` up to its pixel data.

    Returns:
        The header, or None when the file is not DICOM (no 'DICM' magic and
        not a raw ``.dcm``).

    Raises:
        ScanReadError: a DICOM file that cannot be parsed.
    """
    try:
        with open(path, "rb") as fh:
            kind = _open_kind(path, fh.read(132))
            if kind is None:
                return None
            fh.seek(0)
            # pydicom's parse warnings (odd VRs...) would pop up as napari
            # notifications for every file of a folder scan; what matters
            # reaches the quality report instead
            with quiet_parse():
                ds = dcmread(fh, stop_before_pixels=True, force=not kind)
            ts = _get(ds.file_meta, "TransferSyntaxUID", str, "") or _guess_syntax(ds)
            has_pixels, offset, length = _pixel_location(fh, ds, ts)
    except Exception as exc:  # one odd file must never stop a folder scan
        raise ScanReadError(path, f"unreadable DICOM header: {exc}") from exc
    h = SliceHeader(path=path, transfer_syntax=ts, has_pixels=has_pixels)
    h.pixel_offset, h.pixel_length = offset, length
    h.sop_class = _get(ds, "SOPClassUID", str, "") or _get(
        ds.file_meta, "MediaStorageSOPClassUID", str, ""
    )
    h.modality = _get(ds, "Modality", str, "")
    h.series_uid = _get(ds, "SeriesInstanceUID", str, "")
    h.study_uid = _get(ds, "StudyInstanceUID", str, "")
    h.patient_id = _get(ds, "PatientID", str, "")
    h.patient_name = _get(ds, "PatientName", str, "")
    h.study_date = _get(ds, "StudyDate", str, "")
    h.study_description = _get(ds, "StudyDescription", str, "")
    h.series_description = _get(ds, "SeriesDescription", str, "")
    h.series_number = _get(ds, "SeriesNumber", int)
    h.instance_number = _get(ds, "InstanceNumber", int)
    h.rows = _get(ds, "Rows", int, 0)
    h.cols = _get(ds, "Columns", int, 0)
    h.frames = max(1, _get(ds, "NumberOfFrames", int, 1))
    h.samples = _get(ds, "SamplesPerPixel", int, 1)
    h.photometric = _get(ds, "PhotometricInterpretation", str, "").strip().upper()
    h.bits_allocated = _get(ds, "BitsAllocated", int, 0)
    h.bits_stored = _get(ds, "BitsStored", int, h.bits_allocated)
    h.pixel_representation = _get(ds, "PixelRepresentation", int, 0)
    h.iop = _multi(ds, "ImageOrientationPatient", 6)
    h.ipp = _multi(ds, "ImagePositionPatient", 3)
    h.pixel_spacing = parse_spacing(_multi(ds, "PixelSpacing", 2))
    h.imager_pixel_spacing = parse_spacing(_multi(ds, "ImagerPixelSpacing", 2))
    h.slope = _get(ds, "RescaleSlope", _first_float, 1.0) or 1.0
    h.intercept = _get(ds, "RescaleIntercept", _first_float, 0.0)
    h.has_luts = "ModalityLUTSequence" in ds or "VOILUTSequence" in ds
    h.echo_number = _get(ds, "EchoNumbers", str)
    h.acquisition_number = _get(ds, "AcquisitionNumber", str)
    h.temporal_position = _get(ds, "TemporalPositionIdentifier", str)
    return h


def _guess_syntax(ds: Dataset) -> str:
    """Transfer syntax of a file without one, from how pydicom parsed it."""
    implicit, little = ds.original_encoding
    if implicit:
        return str(ImplicitVRLittleEndian)
    return str(ExplicitVRLittleEndian if little is not False else ExplicitVRBigEndian)


def read_dataset(path: str | os.PathLike, *, header_only: bool = False) -> Dataset:
    """Read a whole DICOM file (pixel data included unless ``header_only``).

    Files without a preamble are read with ``force``; a missing
    TransferSyntaxUID is filled in from the encoding pydicom detected when
    the pixel data is not encapsulated.

    Raises:
        ScanReadError: not DICOM, unreadable, or truncated in its header.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
            kind = _open_kind(path, head)
            if kind is None:
                kind = False  # asked for explicitly: let pydicom decide
            fh.seek(0)
            ds = dcmread(fh, force=not kind, stop_before_pixels=header_only)
    except IsADirectoryError:
        raise ScanReadError(path, "is a folder, not a DICOM file") from None
    except PermissionError:
        raise ScanReadError(path, "permission denied") from None
    except (
        OSError,
        InvalidDicomError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
    ) as exc:
        raise ScanReadError(path, f"not a readable DICOM file: {exc}") from exc
    if len(ds) == 0:
        raise ScanReadError(path, "no DICOM data elements (empty or truncated file)")
    meta = getattr(ds, "file_meta", None)
    if meta is not None and not meta.get("TransferSyntaxUID"):
        pixel = ds.get("PixelData")
        encapsulated = isinstance(pixel, bytes) and pixel[:4] == b"\xfe\xff\x00\xe0"
        if not encapsulated and ds.original_encoding[0] is not None:
            meta.TransferSyntaxUID = _guess_syntax(ds)
    return ds


def read_native_into(h: SliceHeader, out: np.ndarray) -> None:
    """Read the stored pixels of ``h`` straight into ``out`` (rows, cols).

    ``out`` must be C-contiguous with the stored dtype.  Unused high bits are
    cleared/sign-extended as pydicom does.

    Raises:
        ScanReadError: the file is shorter than its pixel data should be.
    """
    need = out.nbytes
    if h.pixel_length is not None and h.pixel_length < need:
        raise ScanReadError(
            h.path, f"pixel data is truncated ({h.pixel_length} of {need} bytes)"
        )
    try:
        with open(h.path, "rb", buffering=0) as fh:
            fh.seek(h.pixel_offset or 0)
            view = memoryview(out).cast("B")
            got = 0
            while got < need:
                n = fh.readinto(view[got:])
                if not n:
                    break
                got += n
    except OSError as exc:
        raise ScanReadError(h.path, f"cannot read pixel data: {exc}") from exc
    if got != need:
        raise ScanReadError(h.path, f"pixel data is truncated ({got} of {need} bytes)")
    shift = h.bits_allocated - h.bits_stored
    if 0 < shift < h.bits_allocated:
        np.left_shift(out, shift, out=out)
        np.right_shift(out, shift, out=out)


def finite_float(value: Any, allow_zero: bool = False) -> float | None:
    """A finite float from a DICOM value (first of many); 0 -> None unless
    ``allow_zero``."""
    try:
        v = float(value[0] if isinstance(value, list | tuple) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return v if np.isfinite(v) and (v != 0 or allow_zero) else None


@dataclass
class FrameInfo:
    """Geometry and value transform of one frame (mm, modality units)."""

    ipp: np.ndarray | None = None
    iop: np.ndarray | None = None
    pixel_spacing: tuple[float, float] | None = None
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
    top_sp = parse_spacing(ds.get("PixelSpacing"))
    rescale = _rescale_of(ds, (1.0, 0.0))
    if "RescaleSlope" not in ds and (dose := finite_float(ds.get("DoseGridScaling"))):
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
                pixel_spacing=parse_spacing(meas.get("PixelSpacing"))
                if meas
                else top_sp,
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
