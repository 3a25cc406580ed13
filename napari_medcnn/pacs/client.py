"""What every PACS client does (:class:`PacsClient`), what a search returns
(:class:`StudyResult`, :class:`SeriesResult`), the search filters, and the
cache folder that retrieved series land in, atomically.

A retrieve is a progress generator: it yields ``("retrieve", i, n)`` after
each instance (``n`` is 0 while unknown) and returns the series folder that
:func:`napari_medcnn.io.load` reads.  Files are written into a temporary
folder beside the target (:class:`SeriesStaging`) and the folder is renamed
into place only when the series is complete, so an error, a cancel
(``cancel`` set, or the generator closed by ``worker.quit()``) or a crash
leaves no partial series in the cache.

Without a destination, series go to the per-session cache
(:func:`session_cache`): a temporary folder, mode 0700, removed by
:func:`clear_session_cache` and at interpreter exit, so nothing retrieved
from a PACS stays on disk after the session unless the user saved it
(``dest``: a folder the user chose).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydicom.dataset import Dataset

from napari_medcnn.io.dicom.find import patient_key
from napari_medcnn.io.metadata import phi_tokens, redact
from napari_medcnn.pacs.server import PacsError, Server
from napari_medcnn.pacs.store import StoreResult

__all__ = [
    "Cancel",
    "PacsClient",
    "SeriesResult",
    "SeriesStaging",
    "StudyResult",
    "cache_root",
    "check_cancel",
    "clear_session_cache",
    "in_session_cache",
    "normalise_filters",
    "series_dir",
    "session_cache",
]

#: a cancel request: an Event that is set, or a callable that returns True
Cancel = threading.Event | Callable[[], bool] | None

#: search filters accepted by ``find_studies`` / ``find_series``
STUDY_FILTERS = (
    "patient_id",
    "patient_name",
    "date",
    "modality",
    "accession",
    "description",
    "study_uid",
)
SERIES_FILTERS = ("modality", "description", "series_uid")

#: filter name -> DICOM keyword, at study and at series level
_STUDY_KEYWORDS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "date": "StudyDate",
    "modality": "ModalitiesInStudy",
    "accession": "AccessionNumber",
    "description": "StudyDescription",
    "study_uid": "StudyInstanceUID",
}
_SERIES_KEYWORDS = {
    "modality": "Modality",
    "description": "SeriesDescription",
    "series_uid": "SeriesInstanceUID",
}


def _date(text: str) -> str:
    digits = text.replace("-", "").replace("/", "").strip()
    if digits and not re.fullmatch(r"\d{8}", digits):
        raise ValueError(f"dates are YYYYMMDD or YYYY-MM-DD, got {text!r}")
    return digits


def date_range(value: str | tuple[str | None, str | None]) -> str:
    """A date filter as a DICOM range ``YYYYMMDD-YYYYMMDD``.

    Accepts ``"20240101-20241231"``, ``"2024-01-01..2024-12-31"``, one date,
    an open range (``"20240101-"``, ``"-20241231"``) or a ``(from, to)``
    tuple (None for an open end).
    """
    if isinstance(value, tuple):
        lo, hi = value
        return f"{_date(lo or '')}-{_date(hi or '')}"
    text = value.strip()
    if ".." in text:
        lo, hi = text.split("..", 1)
    elif re.fullmatch(r"\d{8}", text) or re.fullmatch(r"\d{4}-\d\d-\d\d", text):
        return _date(text)
    elif re.fullmatch(r"\d{8}-\d{8}|\d{8}-|-\d{8}", text):
        lo, hi = text.split("-", 1)
    else:
        raise ValueError(
            f"expected a date or a range FROM-TO (YYYYMMDD-YYYYMMDD), got {value!r}"
        )
    return f"{_date(lo)}-{_date(hi)}"


def normalise_filters(filters: Mapping[str, Any], level: str = "study") -> dict:
    """Search filters (``patient_id=``, ``date=`` ...) -> DICOM keyword ->
    value, for ``level`` ``"study"`` or ``"series"``.  Empty values are
    dropped; an unknown filter raises ValueError naming it."""
    table = _STUDY_KEYWORDS if level == "study" else _SERIES_KEYWORDS
    out: dict[str, str] = {}
    for key, value in filters.items():
        if key not in table:
            allowed = ", ".join(sorted(table))
            raise ValueError(f"unknown {level} filter {key!r} (use: {allowed})")
        if value is None or value == "":
            continue
        out[table[key]] = date_range(value) if key == "date" else str(value)
    return out


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _fmt_date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 and d.isdigit() else d


@dataclass
class StudyResult:
    """One study found by a search.

    The patient's name, ID and the accession number are kept for the
    caller only: they are not in ``repr`` and :meth:`display_row` masks the
    name by default (``patient_key`` tells patients apart), and with it any
    identifying string of the response (name parts, ID, birth date in its
    usual written forms) that a description repeats.
    """

    study_uid: str
    patient_key: str
    study_date: str = ""
    description: str = ""
    modalities: tuple[str, ...] = ()
    n_series: int | None = None
    n_instances: int | None = None
    patient_name: str = field(default="", repr=False)
    patient_id: str = field(default="", repr=False)
    accession: str = field(default="", repr=False)
    tokens: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> StudyResult:
        """From a C-FIND / QIDO-RS response (or a file's header)."""
        name, pid = str(ds.get("PatientName", "") or ""), str(ds.get("PatientID", ""))
        mods = ds.get("ModalitiesInStudy", "") or ""
        mods = (mods,) if isinstance(mods, str) else tuple(str(m) for m in mods)
        return cls(
            study_uid=str(ds.get("StudyInstanceUID", "")),
            patient_key=patient_key(pid, name),
            study_date=str(ds.get("StudyDate", "") or ""),
            description=str(ds.get("StudyDescription", "") or ""),
            modalities=tuple(m for m in mods if m),
            n_series=_int(ds.get("NumberOfStudyRelatedSeries")),
            n_instances=_int(ds.get("NumberOfStudyRelatedInstances")),
            patient_name=name,
            patient_id=pid,
            accession=str(ds.get("AccessionNumber", "") or ""),
            tokens=phi_tokens(ds),
        )

    def display_row(self, mask_names: bool = True) -> dict[str, str]:
        """Strings for a table: patient, date, modalities, description,
        series, images.  With ``mask_names`` the patient column shows only
        ``patient_key`` and the description is redacted with :attr:`tokens`
        (a description that names the patient shows ``[redacted]``)."""
        patient = f"patient {self.patient_key}"
        description = self.description
        if not mask_names and self.patient_name:
            patient = self.patient_name
        elif mask_names:
            description = redact(description, self.tokens)
        return {
            "patient": patient,
            "date": _fmt_date(self.study_date),
            "modalities": "/".join(self.modalities),
            "description": description,
            "series": "" if self.n_series is None else str(self.n_series),
            "images": "" if self.n_instances is None else str(self.n_instances),
        }


@dataclass
class SeriesResult:
    """One series found by a search.

    Its description may repeat the patient's name or birth date: the
    identifying strings of the response (when it carries patient
    attributes) are kept in :attr:`tokens`, never shown, and
    :meth:`display_row` redacts the description with them and with the
    study's (``study_tokens``).
    """

    study_uid: str
    series_uid: str
    modality: str = ""
    description: str = ""
    series_number: int | None = None
    n_instances: int | None = None
    tokens: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @classmethod
    def from_dataset(cls, ds: Dataset, study_uid: str = "") -> SeriesResult:
        """From a C-FIND / QIDO-RS response (or a file's header)."""
        return cls(
            study_uid=str(ds.get("StudyInstanceUID", "") or study_uid),
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            modality=str(ds.get("Modality", "") or ""),
            description=str(ds.get("SeriesDescription", "") or ""),
            series_number=_int(ds.get("SeriesNumber")),
            n_instances=_int(ds.get("NumberOfSeriesRelatedInstances")),
            tokens=phi_tokens(ds),
        )

    def display_row(
        self, mask_names: bool = True, study_tokens: frozenset[str] = frozenset()
    ) -> dict[str, str]:
        """Strings for a table: number, modality, description, images.

        With ``mask_names`` the description is redacted with :attr:`tokens`
        and ``study_tokens`` (the study's :attr:`StudyResult.tokens`: a
        series-level response need not carry the patient's attributes)."""
        description = self.description
        if mask_names:
            description = redact(description, self.tokens | study_tokens)
        return {
            "number": "" if self.series_number is None else str(self.series_number),
            "modality": self.modality,
            "description": description,
            "images": "" if self.n_instances is None else str(self.n_instances),
        }


def _wild(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.upper(), pattern.upper())


def matches(ds: Dataset, keywords: Mapping[str, str]) -> bool:
    """Whether a header matches DICOM C-FIND style filters: ``*``/``?``
    wildcards (case-insensitive), ``FROM-TO`` date ranges, and any of
    several modalities (``ModalitiesInStudy`` against ``Modality``)."""
    for kw, want in keywords.items():
        if kw == "ModalitiesInStudy":
            kw = "Modality"
        have = ds.get(kw, "")
        have = "" if have is None else str(have)
        if kw == "StudyDate" and "-" in want:
            lo, hi = want.split("-", 1)
            if not have or (lo and have < lo) or (hi and have > hi):
                return False
        elif "\\" in want:
            if not any(_wild(w, have) for w in want.split("\\")):
                return False
        elif not _wild(want, have):
            return False
    return True


def check_cancel(cancel: Cancel, server: Server | str, what: str) -> None:
    """Raise :class:`PacsError` ``"<what> cancelled"`` when ``cancel`` is set."""
    if cancel is None:
        return
    hit = cancel.is_set() if isinstance(cancel, threading.Event) else cancel()
    if hit:
        raise PacsError(server, f"{what} cancelled; nothing was kept")


# -- the cache --------------------------------------------------------------
_session_lock = threading.Lock()
_session: Path | None = None
_atexit_registered = False


def session_cache() -> Path:
    """This process's PACS cache: a temporary folder (mode 0700, made on
    first use with ``tempfile.mkdtemp(prefix="napari-medcnn-pacs-")``) that
    :func:`clear_session_cache` removes, and that is removed at interpreter
    exit (``atexit``).  Nothing retrieved into it outlives the session."""
    global _session, _atexit_registered
    with _session_lock:
        if _session is None or not _session.is_dir():
            _session = Path(tempfile.mkdtemp(prefix="napari-medcnn-pacs-"))
            os.chmod(_session, 0o700)
        if not _atexit_registered:
            import atexit

            atexit.register(clear_session_cache)
            _atexit_registered = True
        return _session


def clear_session_cache() -> bool:
    """Delete the session cache and everything retrieved into it (a later
    retrieve makes a fresh one).  Returns whether there was one."""
    global _session
    with _session_lock:
        folder, _session = _session, None
    if folder is None:
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def in_session_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in the current session cache."""
    folder = _session
    return folder is not None and Path(path).resolve().is_relative_to(folder.resolve())


def cache_root() -> Path:
    """Where retrieves without a destination go: :func:`session_cache`."""
    return session_cache()


_UID = re.compile(r"[0-9A-Za-z.\-_]{1,64}")


def series_dir(dest: str | os.PathLike | None, study_uid: str, series_uid: str) -> Path:
    """``<dest>/<study UID>/<series UID>`` (``dest`` None: the
    :func:`session_cache`, deleted at exit).

    Raises:
        ValueError: a UID with characters that do not belong in a UID (a
            server must not choose where files go).
    """
    for uid in (study_uid, series_uid):
        if not _UID.fullmatch(uid or "") or uid in (".", ".."):
            raise ValueError(f"not a valid UID for a folder name: {uid!r}")
    root = Path(dest) if dest is not None else cache_root()
    return root / study_uid / series_uid


class SeriesStaging:
    """Write one series into a temporary folder, then move it into place.

    Use as a context manager: :meth:`add` writes each instance (named by
    its SOP Instance UID), :meth:`commit` renames the folder to ``target``
    (replacing an older copy); leaving the block without a commit (an error,
    a cancel, ``GeneratorExit``) deletes the temporary folder.  Folders are
    made with mode 0700.
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        # folders this retrieve creates (removed again if it keeps nothing)
        self._made = [p for p in (self.target.parent, *self.target.parent.parents)
                      if not p.exists()]  # fmt: skip
        self.target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.tmp = Path(
            tempfile.mkdtemp(prefix=f".{self.target.name}.", dir=self.target.parent)
        )
        self.files: list[Path] = []
        self.committed = False

    def add(self, ds: Dataset) -> Path:
        """Write one instance (as a DICOM file with file meta); returns its
        temporary path."""
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        sop = str(ds.get("SOPInstanceUID", "")) or f"instance{len(self.files)}"
        if not _UID.fullmatch(sop):
            sop = f"instance{len(self.files)}"
        meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        if "TransferSyntaxUID" not in meta:
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta = meta
        path = self.tmp / f"{sop}.dcm"
        ds.save_as(path, enforce_file_format=True)
        self.files.append(path)
        return path

    def add_bytes(self, name: str, data: bytes) -> Path:
        """Write a file that arrived as bytes (a C-STORE's encoded dataset)."""
        path = self.tmp / name
        with open(path, "wb") as fh:
            fh.write(data)
        self.files.append(path)
        return path

    def commit(self) -> Path:
        """Move the complete series into place; returns ``target``."""
        old = None
        if self.target.exists():
            old = Path(tempfile.mkdtemp(prefix=".old.", dir=self.target.parent))
            os.replace(self.target, old / "series")
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.target

    def discard(self) -> None:
        """Delete the temporary folder and the (empty) folders made for it:
        nothing of this retrieve is kept."""
        shutil.rmtree(self.tmp, ignore_errors=True)
        for folder in self._made:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (another series arrived): keep it
                break

    def __enter__(self) -> SeriesStaging:
        return self

    def __exit__(self, *exc) -> None:
        if not self.committed:
            self.discard()


@runtime_checkable
class PacsClient(Protocol):
    """One PACS connection: DICOMweb, DIMSE or a local folder.

    Every method raises :class:`PacsError` (naming the server, never a
    secret) when the PACS cannot be reached, refuses us, or does not answer
    within ``server.timeout`` seconds.
    """

    server: Server

    def echo(self) -> float:
        """Check the connection; returns the round trip in seconds."""
        ...

    def find_studies(self, **filters: Any) -> list[StudyResult]:
        """Studies matching ``patient_id``, ``patient_name``, ``date``
        (``YYYYMMDD-YYYYMMDD``), ``modality``, ``accession``,
        ``description``, ``study_uid`` (``*`` wildcards)."""
        ...

    def find_series(self, study_uid: str, **filters: Any) -> list[SeriesResult]:
        """Series of one study matching ``modality``, ``description``,
        ``series_uid``."""
        ...

    def retrieve_series(
        self,
        study_uid: str,
        series_uid: str,
        dest: str | os.PathLike | None = None,
        cancel: Cancel = None,
    ) -> Generator[tuple[str, int, int], None, Path]:
        """Retrieve one series into ``<dest or session cache>/<study>/<series>``.

        Yields ``("retrieve", i, n)``; returns the folder (complete, or
        not there at all)."""
        ...

    def store(self, paths: Iterable[str | os.PathLike]) -> StoreResult:
        """Send the DICOM files in ``paths`` (folders recursively); returns
        the SOP Instance UIDs stored and ``(path, reason)`` for each file
        that was not (not DICOM, refused)."""
        ...
