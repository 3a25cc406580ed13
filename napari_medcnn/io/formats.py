"""Which reader handles a path: cheap format detection from the name and
the first 132 bytes (no parsing)."""

from __future__ import annotations

import os
from pathlib import Path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def detect_format(path: str | os.PathLike) -> str | None:
    """Cheaply guess the format of ``path``: 'dicom-dir', 'dicom', 'nifti',
    'image' or None.  Reads at most 132 bytes; never raises."""
    try:
        p = Path(path)
        name = p.name.lower()
        if p.is_dir():
            return "dicom-dir"
        if not p.is_file():
            return None
        if name.endswith(NIFTI_SUFFIXES):
            return "nifti"
        if name.endswith(IMAGE_SUFFIXES):
            return "image"
        with open(p, "rb") as fh:
            head = fh.read(132)
        if len(head) == 132 and head[128:132] == b"DICM":
            return "dicom"
        if name.endswith(DICOM_SUFFIXES) and looks_like_raw_dicom(head):
            return "dicom"
    except OSError:
        return None
    return None


def looks_like_raw_dicom(head: bytes) -> bool:
    """A DICOM file without preamble starts with a group 0x0002/0x0008 tag."""
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)
