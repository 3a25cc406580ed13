"""What a send reads and reports: the DICOM files under the given paths
(:func:`read_for_store`) and :class:`StoreResult`;
:func:`deidentify_for_sending`, the "de-identify before sending" step (the
project's PS3.15 de-identification into a temporary folder); and the
privacy rule of a send, :func:`refuse_deidentified`: objects that were
de-identified (or are results of a de-identified source, which copy its
``PatientIdentityRemoved``) are sent only when the user confirmed it, so a
PACS does not get a second, anonymous copy of its own patients by
accident."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

__all__ = [
    "StoreResult",
    "deidentified_files",
    "deidentify_for_sending",
    "is_deidentified",
    "read_for_store",
    "refuse_deidentified",
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


def deidentified_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """The files under ``paths`` (folders recursively) whose header says
    they were de-identified (:func:`is_deidentified`); headers only, files
    that are not DICOM are skipped."""
    out = []
    for path in _files(paths):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # not DICOM: the send itself reports it
            continue
        if is_deidentified(ds):
            out.append(str(path))
    return out


def refuse_deidentified(
    paths: Iterable[str | os.PathLike],
    server: object,
    *,
    confirm_deidentified: bool = False,
) -> list[str]:
    """The privacy rule of a send, checked before anything is sent.

    Args:
        paths: the files or folders to send.
        server: the :class:`~napari_medcnn.pacs.server.Server` (or its
            label) the message names.
        confirm_deidentified: the user confirmed sending de-identified
            objects.

    Returns:
        the de-identified files among ``paths`` (empty: nothing to confirm).

    Raises:
        PacsError: some objects were de-identified and
            ``confirm_deidentified`` is False; the message says how many
            and how to confirm, and names no file (paths can hold names).
    """
    from napari_medcnn.pacs.server import PacsError

    paths = list(paths)
    found = deidentified_files(paths)
    if found and not confirm_deidentified:
        raise PacsError(
            server,
            f"refused to send: {len(found)} object(s) are de-identified (or "
            "results of a de-identified scan), so the PACS would get an "
            "anonymous copy of its patients' data; confirm to send them "
            "anyway (confirm_deidentified=True, --confirm-deidentified)",
        )
    return found


def deidentify_for_sending(
    paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    key_file: str | os.PathLike | None = None,
    passphrase: str | bytes | None = None,
) -> list[Path]:
    """De-identify ``paths`` (PS3.15 Basic Profile, the project's defaults)
    into the new or empty folder ``out_dir``; returns the files to send.

    Args:
        key_file: the project key (reproducible pseudonyms); None: a
            one-off key.
        passphrase: opens an encrypted (sealed) ``key_file``; None: the
            environment variable ``NAPARI_MEDCNN_PASSPHRASE`` if set.

    Raises:
        napari_medcnn.deid.run.DeidError: nothing could be written.
        napari_medcnn.deid.keys.KeyFileError: the key file cannot be read,
            is encrypted and no passphrase was given, or the passphrase is
            wrong ("authentication failed").
    """
    from napari_medcnn.deid.run import deidentify

    result = deidentify(list(paths), out_dir, key_file=key_file, passphrase=passphrase)
    return list(result.outputs)
