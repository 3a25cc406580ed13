"""DICOM folders: find the series (header-only); nothing here reads pixels.

``iter_scan_folder`` walks a folder, parses every DICOM header once (in a
thread pool), groups files by SeriesInstanceUID and splits groups that
cannot make one stack (:func:`split_stacks`: orientation, image size or
pixel spacing differ, or slices repeat positions for a reason the headers
give: echo, acquisition).  It is a generator: it yields ``("scan", i, n)``
progress and *returns* the :class:`SeriesInfo` list.  The frames of one
multi-frame file are split by the same :func:`split_stacks`.  Loading is in
``load.py`` (``load_series`` turns a :class:`SeriesInfo` into a
:class:`Scan`; ``load_folder``, what ``io.load`` calls for a folder, does
both).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from pydicom.uid import UID

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
from napari_medcnn.io.dicom.headers import DICOMDIR_SOP, SliceHeader, read_header
from napari_medcnn.io.metadata import identity_tokens, redact
from napari_medcnn.io.scan import ScanReadError

__all__ = ["FolderScan", "SeriesInfo", "iter_folder", "iter_scan_folder"]

T = TypeVar("T")


def default_workers() -> int:
    """Threads for header and pixel reads (I/O releases the GIL)."""
    return min(8, (os.cpu_count() or 1) + 2)


@dataclass
class SeriesInfo:
    """One loadable series (or one part of a split series) found in a folder.

    ``patient_name`` and ``patient_id`` are the raw values, kept in memory
    only for the series browser (which masks them); ``patient_key`` is a
    short SHA-256 of PatientID + PatientName to tell patients apart without
    showing them.
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
    patient_id: str = field(default="", repr=False)

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
        patient column shows only ``patient_key``, and the study and series
        descriptions show ``[redacted]`` where they repeat the patient's name
        or ID."""
        study, desc = self.study_description, self.description
        if mask_names:
            patient = f"patient {self.patient_key}"
            # a description may repeat the patient's name or ID
            tokens = identity_tokens(self.patient_name, self.patient_id)
            study, desc = redact(study, tokens), redact(desc, tokens)
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
        desc = desc or (
            f"series {self.series_number}" if self.series_number is not None else ""
        )
        if self.split_reason:
            desc += f" [split by {self.split_reason}]"
        return {
            "patient": patient,
            "study": study,
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


def iter_folder(
    path: str | os.PathLike, *, workers: int | None = None
) -> Generator[tuple[str, int, int], None, FolderScan]:
    """:func:`iter_scan_folder`, returning the whole :class:`FolderScan`
    (file counts and unreadable headers too, for ``load_folder``'s report)."""
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
    result = yield from iter_folder(path, workers=workers)
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


def _split_keys(h: SliceHeader) -> dict[str, Any]:
    return {
        "echo number": h.echo_number,
        "acquisition number": h.acquisition_number,
        "temporal position": h.temporal_position,
    }


def split_stacks(
    items: Sequence[T],
    differences: Callable[[T, T], list[str]],
    keys: Callable[[T], Mapping[str, Any]],
) -> list[tuple[list[int], str | None]]:
    """Split slices (files of a series, or frames of one file) into stacks.

    Slices with no ``differences`` (orientation, size, spacing...) go
    together; then a group whose slices all have a position and orientation
    and repeat positions is split by the first of ``keys`` (echo,
    acquisition...) that explains the repeats (see
    :func:`~napari_medcnn.io.dicom.geometry.split_duplicates`).

    Args:
        items: records with ``ipp`` and ``iop`` (``SliceHeader``,
            ``FrameInfo``).
        differences: the names of what differs between two records, empty
            when they can share a stack.
        keys: a record's candidate split keys, name -> value, in the order
            to try them.

    Returns:
        ``(indices, reason)`` per stack; ``reason`` names what split it, or
        None when nothing did.
    """
    if not items:
        return []
    groups = group_by(cluster(items, lambda a, b: not differences(a, b)))
    first = items[groups[0][0]]
    reasons = {r for g in groups[1:] for r in differences(items[g[0]], first)}
    reason = " and ".join(sorted(reasons)) or None
    out: list[tuple[list[int], str | None]] = []
    for g in groups:
        part = [items[i] for i in g]
        if len(g) > 1 and all(h.ipp is not None and h.iop is not None for h in part):
            normal = plane_axes(part[0].iop)[2]
            dists = np.array([h.ipp @ normal for h in part])
            values = [keys(h) for h in part]
            named = [(k, [v.get(k) for v in values]) for k in values[0]]
            subs, why = split_duplicates(dists, named)
            out.extend(([g[i] for i in sub], why or reason) for sub in subs)
        else:
            out.append((g, reason))
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
    stacks = split_stacks(single, _differences, _split_keys)
    if parts and all(why is None for _, why in stacks):
        stacks = [(g, "multi-frame file") for g, _ in stacks]
    parts.extend(([single[i] for i in g], why) for g, why in stacks)
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
        patient_id=h0.patient_id,
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
