"""What a cohort job works on: one :class:`Item` per series, volume or image.

:func:`iter_discover` expands the user's inputs into items:

* a **folder** is searched recursively.  Every DICOM image series (grouped
  by SeriesInstanceUID from the headers only, split where the slices cannot
  make one stack, as the reader does), every NIfTI file and every PNG/JPEG/
  TIFF image is one item.  A file with a DICOM suffix whose header cannot
  be parsed is an item too (it will fail with the reason, naming the file),
  a DICOM series without images (SR, presentation states) is a ``skipped``
  item, and so is a folder that holds files but no image at all;
* a **CSV manifest** (``.csv``) has a ``path`` column (a file or a folder,
  relative paths are relative to the manifest's folder) and optional
  ``series_uid`` (pick one series of a folder), ``id`` and any other
  columns, which are carried through to the results;
* a **file** is one item.

Items are small, picklable and hold no pixel data.  Their ``key`` (16 hex
digits of SHA-256 over the kind, the real path, the series UID and the
first file) is the identity used by the journal to resume: it is the same
in every run over the same files, and holds no patient data even when a
folder is named after the patient.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from napari_medcnn.io.formats import DICOM_SUFFIXES, detect_format

__all__ = ["CohortInputError", "Item", "discover", "iter_discover", "item_key"]

#: manifest columns with a meaning of their own (others are carried through)
MANIFEST_COLUMNS = ("path", "series_uid", "id")


class CohortInputError(ValueError):
    """The inputs of a cohort job cannot be used (nothing was run)."""


@dataclass(frozen=True)
class Item:
    """One unit of cohort work.

    Attributes:
        key: 16 hex digits identifying the item across runs (no PHI).
        path: the file or series folder, as found from the user's input
            (may name the patient: never written raw to results).
        kind: ``dicom`` (a series, or one unreadable DICOM file), ``nifti``,
            ``image``, ``folder`` (no image inside: skipped) or ``missing``
            (a manifest path that does not exist: an error row).
        series_uid: the DICOM SeriesInstanceUID, "" otherwise.
        files: the DICOM files of the series (sorted), else empty.
        id: the manifest's ``id`` value, "" when none.
        extra: the manifest's other columns, as ``(name, value)`` pairs.
        note: why a ``folder``/``missing``/non-image item has no result.
    """

    key: str
    path: str
    kind: str
    series_uid: str = ""
    files: tuple[str, ...] = ()
    id: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())
    note: str = ""


def item_key(kind: str, path: str, series_uid: str = "", first: str = "") -> str:
    """The stable identity of an item: 16 hex digits of SHA-256 over the
    kind, the real path, the series UID and the first file's real path."""
    parts = [kind, os.path.realpath(path), series_uid]
    if first:
        parts.append(os.path.realpath(first))
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "replace")).hexdigest()[
        :16
    ]


def _make(kind: str, path: str, **kw) -> Item:
    files = kw.get("files", ())
    key = item_key(kind, path, kw.get("series_uid", ""), files[0] if files else "")
    return Item(key=key, path=path, kind=kind, **kw)


def _walk(root: str) -> list[tuple[str, list[str]]]:
    """``(folder, files)`` for every folder under ``root`` (hidden ones
    skipped), in a stable order."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files = sorted(f for f in filenames if not f.startswith("."))
        out.append((dirpath, [os.path.join(dirpath, f) for f in files]))
    return out


def _header(path: str):
    """A DICOM header, None (not DICOM) or the reason it cannot be parsed."""
    from napari_medcnn.io.dicom.headers import read_header
    from napari_medcnn.io.scan import ScanReadError

    try:
        return read_header(path)
    except ScanReadError as exc:
        return exc.reason


def _dicom_items(candidates: list[str], workers: int) -> list[Item]:
    """Items of the DICOM files among ``candidates`` (one per series)."""
    from napari_medcnn.io.dicom.find import group_headers
    from napari_medcnn.io.dicom.headers import DICOMDIR_SOP, SliceHeader

    if workers > 1 and len(candidates) > 8:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(_header, candidates, chunksize=16))
    else:
        results = [_header(p) for p in candidates]
    headers: list[SliceHeader] = []
    items: list[Item] = []
    for path, res in zip(candidates, results):
        if isinstance(res, SliceHeader):
            if res.sop_class != DICOMDIR_SOP:
                headers.append(res)
        elif isinstance(res, str) or path.lower().endswith(DICOM_SUFFIXES):
            # a DICOM suffix or magic but no parseable header: an item that
            # fails with the reason, so the user sees the file named
            items.append(_make("dicom", path, files=(path,)))
    for info in group_headers(headers):
        files = tuple(sorted(info.files))
        folder = os.path.commonpath([os.path.dirname(f) for f in files])
        if info.kind != "image" and not any(h.sop_class for h in info.headers):
            # no SOP class at all: not a DICOM object but a corrupt file;
            # an item, so that loading it reports the reason
            items.extend(_make("dicom", f, files=(f,)) for f in files)
            continue
        if info.kind != "image":
            what = info.sop_class_name or info.modality or "non-image objects"
            items.append(
                _make(
                    "dicom",
                    folder,
                    series_uid=info.series_uid,
                    files=files,
                    note=f"series holds no image ({what})",
                )
            )
            continue
        items.append(_make("dicom", folder, series_uid=info.series_uid, files=files))
    return items


def _folder_items(root: str, workers: int) -> Generator[tuple, None, list[Item]]:
    """Items under one folder; yields ``("discover", i, n)`` per folder."""
    folders = _walk(root)
    items: list[Item] = []
    dicom_candidates: list[str] = []
    by_folder: dict[str, int] = {}
    for i, (folder, files) in enumerate(folders, 1):
        found = 0
        for f in files:
            fmt = detect_format(f)
            if fmt in ("nifti", "image"):
                items.append(_make(fmt, f))
                found += 1
            elif fmt == "dicom" or f.lower().endswith(DICOM_SUFFIXES):
                dicom_candidates.append(f)
                found += 1
            elif fmt is None and "." not in os.path.basename(f):
                dicom_candidates.append(f)  # DICOM files often have no suffix
        by_folder[folder] = found
        yield ("discover", i, len(folders))
    dicom = _dicom_items(dicom_candidates, workers)
    items.extend(dicom)
    with_dicom = {os.path.dirname(f) for it in dicom for f in it.files}
    for folder, files in folders:
        if files and not by_folder[folder] and folder not in with_dicom:
            names = ", ".join(os.path.basename(f) for f in files[:3])
            more = f" and {len(files) - 3} more" if len(files) > 3 else ""
            items.append(
                _make(
                    "folder",
                    folder,
                    note=f"no DICOM, NIfTI or image file in {folder} "
                    f"({len(files)} file(s): {names}{more})",
                )
            )
    return items


def read_manifest(path: str) -> list[dict[str, str]]:
    """The rows of a CSV manifest (``path`` column required).

    Raises:
        CohortInputError: unreadable file, no ``path`` column, no rows.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [
                {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CohortInputError(f"{path}: cannot read the manifest ({exc})") from exc
    if "path" not in columns:
        found = ", ".join(repr(c) for c in columns) or "none"
        raise CohortInputError(
            f"{path}: the manifest has no 'path' column (columns: {found}); "
            "its first line must name the columns, one of them 'path'"
        )
    rows = [r for r in rows if r.get("path")]
    if not rows:
        raise CohortInputError(f"{path}: the manifest lists no path")
    return rows


def _manifest_items(manifest: str, workers: int) -> Generator[tuple, None, list[Item]]:
    rows = read_manifest(manifest)
    base = os.path.dirname(os.path.abspath(manifest))
    items: list[Item] = []
    for i, row in enumerate(rows, 1):
        raw = row["path"]
        target = raw if os.path.isabs(raw) else os.path.join(base, raw)
        extra = tuple((k, v) for k, v in row.items() if k and k not in MANIFEST_COLUMNS)
        carry = {"id": row.get("id", ""), "extra": extra}
        uid = row.get("series_uid", "")
        if not os.path.exists(target):
            items.append(
                _make(
                    "missing",
                    target,
                    series_uid=uid,
                    note=f"{target}: no such file or folder "
                    f"(manifest {manifest}, row {i})",
                    **carry,
                )
            )
            continue
        if os.path.isdir(target):
            found = yield from _folder_items(target, workers)
        else:
            found = _file_items(target, workers)
        if uid:
            found = [it for it in found if it.series_uid == uid]
            if not found:
                items.append(
                    _make(
                        "missing",
                        target,
                        series_uid=uid,
                        note=f"{target}: no series {uid} there "
                        f"(manifest {manifest}, row {i})",
                        **carry,
                    )
                )
                continue
        items.extend(replace(it, **carry) for it in found)
        yield ("discover", i, len(rows))
    return items


def _file_items(path: str, workers: int) -> list[Item]:
    fmt = detect_format(path)
    if fmt in ("nifti", "image"):
        return [_make(fmt, path)]
    return _dicom_items([path], workers) or [_make("dicom", path, files=(path,))]


def iter_discover(
    inputs: Sequence[str | os.PathLike], *, workers: int | None = None
) -> Generator[tuple[str, int, int], None, list[Item]]:
    """Expand folders, manifests and files into items (see module doc).

    Yields ``("discover", i, n)`` progress; returns the items in a stable
    order, each key once (the first manifest row wins).

    Raises:
        CohortInputError: no input, an input that does not exist, a
            manifest without a ``path`` column, or nothing found at all.
    """
    from napari_medcnn.io.dicom.find import default_workers

    if not inputs:
        raise CohortInputError("no input: give folders, files or a CSV manifest")
    workers = workers or default_workers()
    items: list[Item] = []
    for raw in inputs:
        path = os.fspath(raw)
        if not os.path.exists(path):
            raise CohortInputError(f"{path}: no such file or folder")
        if os.path.isdir(path):
            found = yield from _folder_items(path, workers)
            if not found:
                raise CohortInputError(
                    f"{path}: the folder is empty (no file in it or below it)"
                )
        elif path.lower().endswith(".csv"):
            found = yield from _manifest_items(path, workers)
        else:
            found = _file_items(path, workers)
        items.extend(found)
    unique: dict[str, Item] = {}
    for it in items:
        unique.setdefault(it.key, it)
    return list(unique.values())


def discover(inputs: Iterable[str | os.PathLike], **kw) -> list[Item]:
    """:func:`iter_discover` drained."""
    from napari_medcnn._progress import drain

    return drain(iter_discover(list(inputs), **kw))
