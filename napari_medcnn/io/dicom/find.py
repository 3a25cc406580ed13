"""DICOM folders: find the series (header-only), then load them as volumes.

``iter_scan_folder`` walks a folder, parses every DICOM header once (in a
thread pool), groups files by SeriesInstanceUID and splits groups whose
orientation, image size or pixel spacing differ, or whose slices repeat
positions for a reason the headers give (echo, acquisition).  It is a
generator: it yields ``("scan", i, n)`` progress and *returns* the
:class:`SeriesInfo` list.  ``load_series`` turns one into a :class:`Scan`;
``load_folder`` (what ``io.load`` calls for a folder) does both.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from pydicom.uid import UID

from napari_medcnn.io import quality
from napari_medcnn.io.dicom.geometry import (
    cluster,
    group_by,
    orientation_label,
    plane_axes,
    same_orientation,
    same_spacing,
    slice_spacing,
    sort_positions,
    split_duplicates,
)
from napari_medcnn.io.dicom.headers import (
    DICOMDIR_SOP,
    SliceHeader,
    non_image_reason,
    read_header,
)
from napari_medcnn.io.scan import QualityReport, Scan, ScanList, ScanReadError

__all__ = ["SeriesInfo", "iter_scan_folder", "load_folder", "load_series"]


def default_workers() -> int:
    """Threads for header and pixel reads (I/O releases the GIL)."""
    return min(8, (os.cpu_count() or 1) + 2)


@dataclass
class SeriesInfo:
    """One loadable series (or one part of a split series) found in a folder.

    ``patient_name`` is the raw value, kept in memory only for the series
    browser (which masks it); ``patient_key`` is a short SHA-256 of
    PatientID + PatientName to tell patients apart without showing them.
    Spacings are in mm.
    """

    series_uid: str
    study_uid: str
    patient_key: str
    patient_name: str
    study_date: str
    study_description: str
    modality: str
    description: str
    series_number: int | None
    files: list[str]
    rows: int
    cols: int
    pixel_spacing: tuple[float, float] | None
    slice_spacing: float | None
    orientation: str
    kind: str
    sop_class_name: str
    number_of_frames: int
    split_reason: str | None
    headers: list[SliceHeader] = field(default_factory=list, repr=False, compare=False)

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def depth(self) -> int:
        """Slices (files) or frames along the third axis."""
        return self.number_of_frames if self.number_of_frames > 1 else self.n_files

    def display_row(self, mask_names: bool = True) -> dict[str, str]:
        """Strings for a browser table: patient, study, date, modality,
        description, images, dimensions, spacing.  With ``mask_names`` the
        patient column shows only ``patient_key``."""
        if mask_names:
            patient = f"patient {self.patient_key}"
        else:
            patient = self.patient_name or f"patient {self.patient_key}"
        d = self.study_date
        date = f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d
        images = str(self.n_files)
        if self.number_of_frames > 1:
            images += f" ({self.number_of_frames} frames)"
        dims = spacing = ""
        if self.kind == "image" and self.rows and self.cols:
            dims = f"{self.cols} × {self.rows}"
            if self.depth > 1:
                dims += f" × {self.depth}"
            if self.pixel_spacing:
                dy, dx = self.pixel_spacing
                spacing = f"{dx:.3g} × {dy:.3g}"
                if self.depth > 1 and self.slice_spacing:
                    spacing += f" × {self.slice_spacing:.3g}"
                spacing += " mm"
        desc = self.description or (
            f"series {self.series_number}" if self.series_number is not None else ""
        )
        if self.split_reason:
            desc += f" [split by {self.split_reason}]"
        return {
            "patient": patient,
            "study": self.study_description,
            "date": date,
            "modality": self.modality,
            "description": desc,
            "images": images,
            "dimensions": dims,
            "spacing": spacing,
        }


@dataclass
class FolderScan:
    """Everything a folder scan found (``iter_scan_folder`` returns .series)."""

    series: list[SeriesInfo]
    n_files: int = 0
    n_dicom: int = 0
    errors: list[str] = field(default_factory=list)


def patient_key(patient_id: str, patient_name: str) -> str:
    """12 hex digits of SHA-256 over PatientID and PatientName."""
    raw = f"{patient_id}\x1f{patient_name}".encode("utf-8", "replace")
    return hashlib.sha256(raw).hexdigest()[:12]


def _walk(root: str) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(
            os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")
        )
    return files


def _safe_header(path: str) -> SliceHeader | str | None:
    try:
        return read_header(path)
    except ScanReadError as exc:
        return str(exc)


def _scan_folder(
    path: str | os.PathLike, workers: int | None = None
) -> Generator[tuple[str, int, int], None, FolderScan]:
    root = os.fspath(path)
    if not os.path.isdir(root):
        raise ScanReadError(root, "not a folder")
    files = _walk(root)
    n = len(files)
    yield ("scan", 0, n)
    headers: list[SliceHeader] = []
    errors: list[str] = []
    every = max(1, min(50, n // 100))
    workers = workers or default_workers()
    pool = ThreadPoolExecutor(workers) if workers > 1 and n > 8 else None
    try:
        results: Iterable = (
            pool.map(_safe_header, files, chunksize=16)
            if pool
            else map(_safe_header, files)
        )
        for i, res in enumerate(results, 1):
            if isinstance(res, SliceHeader):
                if res.sop_class != DICOMDIR_SOP:
                    headers.append(res)
            elif isinstance(res, str):
                errors.append(res)
            if i % every == 0 or i == n:
                yield ("scan", i, n)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return FolderScan(group_headers(headers), n, len(headers) + len(errors), errors)


def iter_scan_folder(
    path: str | os.PathLike, *, workers: int | None = None
) -> Generator[tuple[str, int, int], None, list[SeriesInfo]]:
    """Find the DICOM series under ``path`` (recursive, headers only).

    Yields ``("scan", i, n)`` after every few files; returns (as the
    generator's value) the :class:`SeriesInfo` list, images and non-image
    objects alike, ordered by patient, study and series number.  Non-DICOM
    files are skipped silently.

    Raises:
        ScanReadError: ``path`` is not a folder.
    """
    result = yield from _scan_folder(path, workers)
    return result.series


def group_headers(headers: list[SliceHeader]) -> list[SeriesInfo]:
    """Group parsed headers into series, splitting where they cannot stack."""
    by_uid: dict[str, list[SliceHeader]] = {}
    for h in headers:
        key = h.series_uid or f"no-uid:{os.path.dirname(h.path)}:{h.sop_class}"
        by_uid.setdefault(key, []).append(h)
    infos: list[SeriesInfo] = []
    for hs in by_uid.values():
        images = [h for h in hs if h.is_image]
        others = [h for h in hs if not h.is_image]
        for part in group_by([h.sop_class for h in others]):
            why = "non-image objects" if images else None
            infos.append(_info([others[i] for i in part], "non-image", why))
        for part, why in _split_images(images):
            infos.append(_info(part, "image", why))
    infos.sort(
        key=lambda s: (
            s.patient_key,
            s.study_date,
            s.study_uid,
            s.kind != "image",
            s.series_number if s.series_number is not None else 1 << 30,
            s.series_uid,
        )
    )
    return infos


def _differences(a: SliceHeader, b: SliceHeader) -> list[str]:
    out = []
    if (a.rows, a.cols, a.samples) != (b.rows, b.cols, b.samples):
        out.append("image size")
    if not same_orientation(a.iop, b.iop):
        out.append("orientation")
    if not same_spacing(a.pixel_spacing, b.pixel_spacing):
        out.append("pixel spacing")
    return out


def _split_images(
    images: list[SliceHeader],
) -> list[tuple[list[SliceHeader], str | None]]:
    if not images:
        return []
    parts: list[tuple[list[SliceHeader], str | None]] = []
    single = [h for h in images if h.frames == 1]
    for h in images:
        if h.frames > 1:
            parts.append(([h], "multi-frame file" if len(images) > 1 else None))
    if not single:
        return parts
    labels = cluster(single, lambda a, b: not _differences(a, b))
    groups = [[single[i] for i in g] for g in group_by(labels)]
    reasons = sorted({r for g in groups[1:] for r in _differences(g[0], groups[0][0])})
    reason = " and ".join(reasons) or None
    if len(groups) == 1 and len(parts):
        reason = "multi-frame file"
    for g in groups:
        if len(g) > 1 and all(h.ipp is not None and h.iop is not None for h in g):
            normal = plane_axes(g[0].iop)[2]
            dists = np.array([h.ipp @ normal for h in g])
            keys = [
                ("echo number", [h.echo_number for h in g]),
                ("acquisition number", [h.acquisition_number for h in g]),
                ("temporal position", [h.temporal_position for h in g]),
            ]
            subs, why = split_duplicates(dists, keys)
            for s in subs:
                parts.append(([g[i] for i in s], why or reason))
        else:
            parts.append((g, reason))
    return parts


def _info(hs: list[SliceHeader], kind: str, split_reason: str | None) -> SeriesInfo:
    h0 = hs[0]
    step = None
    if kind == "image" and all(h.ipp is not None and h.iop is not None for h in hs):
        normal = plane_axes(h0.iop)[2]
        order, dists = sort_positions(
            np.array([h.ipp for h in hs]), normal, [h.instance_number or 0 for h in hs]
        )
        hs = [hs[i] for i in order]
        step = slice_spacing(dists)
    else:
        hs = sorted(hs, key=lambda h: (h.instance_number or 0, h.path))
    sop_name = UID(h0.sop_class).name if h0.sop_class else ""
    return SeriesInfo(
        series_uid=h0.series_uid,
        study_uid=h0.study_uid,
        patient_key=patient_key(h0.patient_id, h0.patient_name),
        patient_name=h0.patient_name,
        study_date=h0.study_date,
        study_description=h0.study_description,
        modality=h0.modality,
        description=h0.series_description,
        series_number=h0.series_number,
        files=[h.path for h in hs],
        rows=h0.rows if kind == "image" else 0,
        cols=h0.cols if kind == "image" else 0,
        pixel_spacing=(h0.pixel_spacing or h0.imager_pixel_spacing)
        if kind == "image"
        else None,
        slice_spacing=step,
        orientation=orientation_label(h0.iop) if kind == "image" else "unknown",
        kind=kind,
        sop_class_name=sop_name,
        number_of_frames=h0.frames if len(hs) == 1 else 1,
        split_reason=split_reason,
        headers=list(hs),
    )


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
    from napari_medcnn.io.dicom.series import load_series_scans

    return load_series_scans(info, include_phi=include_phi, workers=workers)[0]


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
    from napari_medcnn._progress import drain
    from napari_medcnn.io.dicom.series import load_series_scans

    found: FolderScan = drain(_scan_folder(path))
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
