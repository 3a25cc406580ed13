"""Scans in and out: DICOM files, series and multi-frame, NIfTI, plain images.

The one entry point is :func:`load`, which every UI path (napari reader,
widgets, CLI) calls.  It returns :class:`Scan` objects (see ``scan.py`` for
the geometry convention) and raises :class:`ScanReadError` with a message
that names the file and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

from .scan import QualityIssue, QualityReport, Scan, ScanList, ScanReadError

__all__ = [
    "QualityIssue",
    "QualityReport",
    "Scan",
    "ScanList",
    "ScanReadError",
    "detect_format",
    "load",
]

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
        if name.endswith(DICOM_SUFFIXES) and _looks_like_raw_dicom(head):
            return "dicom"
    except OSError:
        return None
    return None


def _looks_like_raw_dicom(head: bytes) -> bool:
    """A DICOM file without preamble starts with a group 0x0002/0x0008 tag."""
    if len(head) < 8:
        return False
    group_le = int.from_bytes(head[0:2], "little")
    group_be = int.from_bytes(head[0:2], "big")
    return group_le in (0x0002, 0x0008) or group_be in (0x0002, 0x0008)


def load(path: str | os.PathLike, *, include_phi: bool | None = None) -> ScanList:
    """Load every scan found at ``path``.

    Args:
        path: a DICOM file, a folder (searched recursively for DICOM series),
            a NIfTI file or a PNG/JPEG/TIFF image.
        include_phi: put patient name, ID and birth date into the metadata;
            default from :func:`napari_medcnn.config.include_phi_default`.

    Returns:
        One :class:`Scan` per image or series, in a stable order, as a
        :class:`ScanList` (a ``list``) whose ``folder_quality`` holds the
        findings about a folder as a whole (non-image series skipped, files
        that could not be read), reported once.

    Raises:
        ScanReadError: the path cannot be read; the message says why.
    """
    from ..config import include_phi_default

    if include_phi is None:
        include_phi = include_phi_default()
    fmt = detect_format(path)
    if fmt is None:
        if not os.path.exists(path):
            raise ScanReadError(path, "no such file or folder")
        raise ScanReadError(
            path, "not a DICOM, NIfTI or image file that napari-medcnn can read"
        )
    if fmt == "dicom-dir":
        from .series import load_folder

        return load_folder(path, include_phi=include_phi)
    if fmt == "dicom":
        from .dicom import load_file

        return ScanList(load_file(path, include_phi=include_phi))
    if fmt == "nifti":
        from .nifti import load_nifti

        return ScanList([load_nifti(path)])
    from .images import load_image

    return ScanList([load_image(path)])
