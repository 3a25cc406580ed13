"""The DICOM source images of a scan, sorted and matched to its slices
(pure core, no Qt).

A result object (SR, Parametric Map, SEG) belongs to the series its scan
was read from: it copies that series' patient and study, references its
instances, and (PM, SEG) has one frame per source slice with the same
position and orientation.  :func:`source_images` reads the source files
(``Scan.source_paths``, a layer's ``metadata["source_paths"]``, or paths)
and matches every slice of the scan (array index ``z`` of the reader's
``(z, y, x)`` order) to the source instance, and frame for a multi-frame
file, at the same ImagePositionPatient (the scan's ``affine`` maps index
``(z, 0, 0)`` to LPS mm; tolerance: a tenth of the slice spacing, at
least 0.01 mm).  highdicom does not sort its source images: the
datasets here are sorted by their position along the slice normal, which
is the reader's ``z`` order.

A scan read from NIfTI or a plain image (PNG, JPEG, TIFF) has no DICOM
source: :func:`source_images` refuses it with :class:`ExportError`, naming
the file and the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from napari_medcnn.export.common import ExportError

__all__ = ["SourceImages", "source_images"]


@dataclass
class SourceImages:
    """The DICOM source of one scan.

    Attributes:
        datasets: the source instances, sorted by position along the slice
            normal (the reader's ``z`` order); one multi-frame dataset for
            a multi-frame source.  Headers only unless read with pixels.
        slices: per scan slice ``z``: ``(index into datasets, frame
            number)``; the frame number is 1-based for a multi-frame
            source and None for single-frame instances.
        paths: the files, in the order of ``datasets``.
    """

    datasets: list[Dataset]
    slices: list[tuple[int, int | None]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    @property
    def first(self) -> Dataset:
        """The first source dataset (patient, study and series come from it)."""
        return self.datasets[0]

    @property
    def multiframe(self) -> bool:
        """One multi-frame source instance."""
        return len(self.datasets) == 1 and _n_frames(self.datasets[0]) > 1

    @property
    def series_uid(self) -> str:
        return str(self.first.SeriesInstanceUID)

    @property
    def study_uid(self) -> str:
        return str(self.first.StudyInstanceUID)

    def dataset_of(self, z: int) -> tuple[Dataset, int | None]:
        """The source instance and frame number (or None) of scan slice ``z``."""
        i, frame = self.slices[z]
        return self.datasets[i], frame

    def frames_in_source_order(self, array: np.ndarray) -> np.ndarray:
        """``array`` (scan slices first, ``(S, ...)``) in the frame order
        highdicom expects for these sources: the datasets' order for
        single-frame instances, the file's frame order for a multi-frame
        one.  A 2D array is returned as one frame ``(1, ...)``."""
        a = np.asarray(array)
        if len(self.slices) == 1 and a.shape[0] != 1:
            a = a[None]
        if len(a) != len(self.slices):
            raise ExportError(
                f"the map has {len(a)} slice(s) but its scan has "
                f"{len(self.slices)}: not the same grid"
            )
        if not self.multiframe:
            order = [z for z, _ in sorted(enumerate(self.slices), key=lambda t: t[1])]
            return a[order]
        n = _n_frames(self.datasets[0])
        out = np.zeros((n,) + a.shape[1:], a.dtype)
        for z, (_, frame) in enumerate(self.slices):
            out[int(frame) - 1] = a[z]
        return out


def scan_source_paths(scan: Any) -> list[str]:
    """The source files of a :class:`~napari_medcnn.io.Scan`, a layer
    metadata dict, or a path / list of paths."""
    if isinstance(scan, str | os.PathLike):
        return [os.fspath(scan)]
    if isinstance(scan, Mapping):
        return [str(p) for p in scan.get("source_paths") or []]
    if isinstance(scan, Sequence):
        return [os.fspath(p) for p in scan]
    paths = getattr(scan, "source_paths", None) or (
        getattr(scan, "metadata", None) or {}
    ).get("source_paths")
    return [str(p) for p in paths or []]


def refuse_non_dicom(paths: Sequence[str], name: str | None = None) -> None:
    """Raise :class:`ExportError` when ``paths`` are not DICOM files: a
    NIfTI file or a plain image has no DICOM source to attach a result to."""
    from napari_medcnn.io.formats import detect_format

    what = name or "this layer"
    if not paths:
        raise ExportError(
            f"{what}: no DICOM source files are known (a layer not read from "
            "DICOM, or one drawn or computed in napari); DICOM results need "
            "the DICOM series they belong to"
        )
    for p in paths:
        fmt = detect_format(p)
        if fmt == "nifti":
            raise ExportError(
                f"{p}: a NIfTI file has no DICOM source (no patient, study or "
                "series to attach a DICOM result to); write NIfTI, CSV or "
                "JSON instead"
            )
        if fmt == "image":
            raise ExportError(
                f"{p}: a plain image (PNG, JPEG, TIFF) has no DICOM source (no "
                "patient, study or series to attach a DICOM result to); write "
                "PNG, CSV or JSON instead"
            )
        if fmt != "dicom":
            raise ExportError(f"{p}: not a DICOM file (or no longer there)")


def source_images(
    scan: Any,
    *,
    affine: np.ndarray | None = None,
    n_slices: int | None = None,
    name: str | None = None,
    with_pixels: bool = False,
) -> SourceImages:
    """Read, sort and match the DICOM source images of a scan.

    Args:
        scan: a :class:`~napari_medcnn.io.Scan` (its ``source_paths``,
            ``affine`` and slice count are used), a layer metadata dict
            (``source_paths``, ``affine``), or DICOM file paths.
        affine: the scan's 4x4 index ``(z, y, x, 1)`` -> LPS mm affine, when
            ``scan`` is not a Scan; None: the slices are the sorted sources.
        n_slices: the scan's slice count (1 for a 2D image), when ``scan``
            is not a Scan.
        name: what to call the input in messages (default its first path).
        with_pixels: read the pixel data too (only the RGB overlay needs it).

    Raises:
        ExportError: no DICOM source (NIfTI, plain image, a layer made in
            napari), sources of several series, or slices without a source
            instance at their position; the message names the file.
    """
    from napari_medcnn.io.dicom.headers import read_dataset
    from napari_medcnn.io.scan import ScanReadError

    paths = scan_source_paths(scan)
    label = name or getattr(scan, "name", None) or (paths[0] if paths else None)
    refuse_non_dicom(paths, label)
    if affine is None:
        affine = getattr(scan, "affine", None)
        if affine is None and isinstance(scan, Mapping):
            affine = scan.get("affine")
    if n_slices is None and hasattr(scan, "data"):
        n_slices = scan.data.shape[0] if scan.ndim_spatial == 3 else 1
    datasets = []
    for p in paths:
        try:
            datasets.append(read_dataset(p, header_only=not with_pixels))
        except ScanReadError as exc:
            raise ExportError(str(exc)) from None
    for ds in datasets:
        _fill_type2(ds)
    series = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(series) != 1 or "" in series:
        raise ExportError(
            f"{label}: the source files belong to {len(series)} series; a "
            "result object references exactly one"
        )
    order = sorted(range(len(datasets)), key=lambda i: _normal_position(datasets[i]))
    datasets = [datasets[i] for i in order]
    files = [Path(paths[i]) for i in order]
    if len(datasets) > 1 and any(_n_frames(ds) > 1 for ds in datasets):
        raise ExportError(f"{label}: several multi-frame source files: not supported")
    slots = _frame_slots(datasets)
    if affine is None or n_slices is None:
        return SourceImages(datasets, slots[:1] if n_slices == 1 else slots, files)
    slices = _match(slots, datasets, np.asarray(affine, float), int(n_slices), label)
    if len(datasets) > 1:  # keep only the instances the scan's slices use
        used = sorted({i for i, _ in slices})
        index = {i: k for k, i in enumerate(used)}
        datasets, files = [datasets[i] for i in used], [files[i] for i in used]
        slices = [(index[i], f) for i, f in slices]
    return SourceImages(datasets, slices, files)


#: type 2 patient and study attributes highdicom copies from the source:
#: an image that lacks one (a synthetic or de-identified file) gets it
#: empty in the in-memory copy, as the standard allows
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
)


def _fill_type2(ds: Dataset) -> None:
    for keyword in _TYPE2:
        if keyword not in ds:
            setattr(ds, keyword, None)


def _n_frames(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _normal(ds: Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        try:
            iop = (
                ds.SharedFunctionalGroupsSequence[0]
                .PlaneOrientationSequence[0]
                .ImageOrientationPatient
            )
        except (AttributeError, IndexError, KeyError):
            return None
    v = np.asarray([float(x) for x in iop], float)
    return np.cross(v[:3], v[3:])


def _normal_position(ds: Dataset) -> float:
    n, ipp = _normal(ds), ds.get("ImagePositionPatient")
    if n is None or ipp is None:
        return float(ds.get("InstanceNumber", 0) or 0)
    return float(np.dot(n, [float(x) for x in ipp]))


def _frame_positions(ds: Dataset) -> list[np.ndarray | None]:
    """ImagePositionPatient of each frame of ``ds`` (None where absent)."""
    n = _n_frames(ds)
    if n == 1 and "ImagePositionPatient" in ds:
        return [np.asarray([float(x) for x in ds.ImagePositionPatient])]
    out: list[np.ndarray | None] = []
    per = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = (ds.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
    for f in range(n):
        item = per[f] if f < len(per) else Dataset()
        pos = None
        for group in (item, shared):
            seq = group.get("PlanePositionSequence")
            if seq:
                pos = np.asarray([float(x) for x in seq[0].ImagePositionPatient])
                break
        out.append(pos)
    return out


def _frame_slots(datasets: list[Dataset]) -> list[tuple[int, int | None]]:
    if len(datasets) == 1 and _n_frames(datasets[0]) > 1:
        return [(0, f + 1) for f in range(_n_frames(datasets[0]))]
    return [(i, None) for i in range(len(datasets))]


def _match(
    slots: list[tuple[int, int | None]],
    datasets: list[Dataset],
    affine: np.ndarray,
    n_slices: int,
    label: str | None,
) -> list[tuple[int, int | None]]:
    """Scan slice ``z`` -> the slot whose position is the affine's
    ``(z, 0, 0)``; ExportError when one has none."""
    positions: list[np.ndarray | None] = []
    for i, frame in slots:
        pos = _frame_positions(datasets[i])
        positions.append(pos[(frame or 1) - 1])
    if n_slices == 1 and len(slots) == 1:
        return list(slots)
    if any(p is None for p in positions):
        raise ExportError(
            f"{label}: the source images have no ImagePositionPatient, so the "
            "result's frames cannot be matched to them"
        )
    pts = np.stack(positions)  # type: ignore[arg-type]
    dz = float(np.linalg.norm(affine[:3, 0])) if n_slices > 1 else 1.0
    tol = max(0.01, 0.1 * dz)
    out = []
    for z in range(n_slices):
        want = affine[:3, :3] @ np.array([z, 0.0, 0.0]) + affine[:3, 3]
        d = np.linalg.norm(pts - want, axis=1)
        k = int(np.argmin(d))
        if d[k] > tol:
            raise ExportError(
                f"{label}: slice {z} of the scan (at "
                f"{', '.join(f'{v:.2f}' for v in want)} mm) has no source "
                "image at that position (a gap the reader filled, or a scan "
                "resampled after loading); DICOM results need one source "
                "image per slice"
            )
        out.append(slots[k])
    if len(set(out)) != len(out):
        raise ExportError(f"{label}: two scan slices match the same source image")
    return out
