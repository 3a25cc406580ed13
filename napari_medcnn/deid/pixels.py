"""Pixels and de-identification: burned-in text flags and rectangle blanking.

Pixel data is never touched unless the user gives rectangles to blank (the
Clean Pixel Data Option); :func:`burned_in_reasons` says which images may
carry identifying text burned into the pixels, so that the user can look.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from napari_medcnn.io.dicom.decoders import decode

__all__ = ["blank_rectangles", "burned_in_reasons", "tag_text"]

_SC_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_SCREEN_CONVERSIONS = {"WSD": "workstation capture", "SD": "scanned document"}


def tag_text(ds: Dataset, keyword: str) -> str:
    """The value of ``keyword`` as stripped text ("" when absent or
    unreadable; multiple values joined with backslashes)."""
    try:
        value = ds.get(keyword, "")
    except Exception:  # a malformed value reads as absent
        return ""
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value).strip()


def burned_in_reasons(ds: Dataset) -> list[str]:
    """Why the pixels of ``ds`` may carry burned-in identifying text or
    features: the flags, US/SC/OT modality, secondary or screen captures."""
    reasons = []
    if tag_text(ds, "BurnedInAnnotation").upper() == "YES":
        reasons.append("Burned In Annotation is YES")
    if tag_text(ds, "RecognizableVisualFeatures").upper() == "YES":
        reasons.append("Recognizable Visual Features is YES")
    modality = tag_text(ds, "Modality").upper()
    if modality in ("US", "SC", "OT"):
        reasons.append(f"modality {modality}")
    if tag_text(ds, "SOPClassUID").startswith(_SC_PREFIX):
        reasons.append("secondary capture")
    if "SCREEN SAVE" in tag_text(ds, "ImageType").upper():
        reasons.append("screen save")
    conversion = tag_text(ds, "ConversionType").upper()
    if conversion in _SCREEN_CONVERSIONS:
        reasons.append(_SCREEN_CONVERSIONS[conversion])
    return reasons


def blank_rectangles(ds: Dataset, rects: Iterable[tuple[int, int, int, int]]) -> int:
    """Set rectangles ``(x, y, width, height)`` (pixels, x = column) to the
    image's darkest value in every frame; returns how many fell on the image.

    Compressed pixel data is decoded and stored uncompressed (Explicit VR
    Little Endian); colour images are stored as RGB.

    Raises:
        ValueError: the pixel data cannot be decoded (corrupt data, a
            decoder panic, a missing decoder).
    """
    if "PixelData" not in ds:
        return 0
    try:  # the reader's one guarded decode call
        arr = np.array(decode(getattr(ds, "filename", None) or "dataset", ds)[0])
    except Exception as exc:  # ScanReadError: corrupt data, a decoder panic...
        raise ValueError(f"cannot decode the pixels to blank them ({exc})") from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stack = arr if frames > 1 else arr[None]
    mono1 = tag_text(ds, "PhotometricInterpretation") == "MONOCHROME1"
    fill = stack.max() if mono1 else stack.min()
    rows, cols = stack.shape[1:3]
    n = 0
    for x, y, w, h in rects:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(cols, x + w), min(rows, y + h)
        if x1 > x0 and y1 > y0:
            stack[:, y0:y1, x0:x1] = fill
            n += 1
    if n:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        photometric = tag_text(ds, "PhotometricInterpretation")
        if samples == 3:
            photometric = "RGB"
        bits = int(ds.get("BitsStored", stack.itemsize * 8))
        out = stack if frames > 1 else stack[0]
        ds.set_pixel_data(out, photometric, bits, generate_instance_uid=False)
    return n
