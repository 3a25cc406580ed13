"""Scans in and out: DICOM files, series and multi-frame, NIfTI, plain images.

The one entry point is :func:`load`, which every UI path (napari reader,
widgets, CLI) calls.  It returns :class:`Scan` objects (see ``scan.py`` for
the geometry convention) and raises :class:`ScanReadError` with a message
that names the file and the reason.
"""

from __future__ import annotations

import os

from napari_medcnn.io.formats import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    detect_format,
)
from napari_medcnn.io.scan import (
    QualityIssue,
    QualityReport,
    Scan,
    ScanList,
    ScanReadError,
)

__all__ = [
    "QualityIssue",
    "QualityReport",
    "Scan",
    "ScanList",
    "ScanReadError",
    "DICOM_SUFFIXES",
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "detect_format",
    "load",
]


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
    from napari_medcnn.config import include_phi_default

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
        from napari_medcnn.io.dicom.load import load_folder

        return load_folder(path, include_phi=include_phi)
    if fmt == "dicom":
        from napari_medcnn.io.dicom.load import load_file

        return ScanList(load_file(path, include_phi=include_phi))
    if fmt == "nifti":
        from napari_medcnn.io.nifti import load_nifti

        return ScanList([load_nifti(path)])
    from napari_medcnn.io.images import load_image

    return ScanList([load_image(path)])
