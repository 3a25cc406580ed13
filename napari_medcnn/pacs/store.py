"""What a send reads and reports: the DICOM files under the given paths
(:func:`read_for_store`) and :class:`StoreResult`; and
:func:`deidentify_for_sending`, the "de-identify before sending" step (the
project's PS3.15 de-identification into a temporary folder)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

__all__ = [
    "StoreResult",
    "deidentify_for_sending",
    "is_deidentified",
    "read_for_store",
]


@dataclass
class StoreResult:
    """What a send did.

    Attributes:
        stored: SOP Instance UIDs the PACS accepted.
        failed: ``(path, reason)`` for files not stored (not DICOM,
            refused by the PACS, ...).
    """

    stored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def _files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for f in sorted(filenames):
                    if not f.startswith("."):
                        yield Path(dirpath, f)
        else:
            yield p


def read_for_store(
    paths: Iterable[str | os.PathLike],
) -> Iterator[tuple[str, Dataset | None, str]]:
    """Read every file under ``paths`` (folders recursively) for sending.

    Yields:
        ``(path, dataset, "")`` for a storable DICOM object (one with SOP
        Class and Instance UIDs), ``(path, None, reason)`` otherwise.
    """
    for path in _files(paths):
        if not path.exists():
            yield str(path), None, "no such file"
            continue
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # any unreadable file is reported, not fatal
            yield str(path), None, f"not a DICOM file ({type(exc).__name__})"
            continue
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            yield str(path), None, "no SOP Class or Instance UID: not storable"
            continue
        yield str(path), ds, ""


def is_deidentified(ds: Dataset) -> bool:
    """Whether a header says it was de-identified (PatientIdentityRemoved
    ``YES``, as the project's de-identification writes)."""
    return str(ds.get("PatientIdentityRemoved", "")).upper() == "YES"


def deidentify_for_sending(
    paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    key_file: str | os.PathLike | None = None,
) -> list[Path]:
    """De-identify ``paths`` (PS3.15 Basic Profile, the project's defaults)
    into the new or empty folder ``out_dir``; returns the files to send.

    Raises:
        napari_medcnn.deid.run.DeidError: nothing could be written.
    """
    from napari_medcnn.deid.run import deidentify

    return list(deidentify(list(paths), out_dir, key_file=key_file).outputs)
