"""Keys and sidecar paths for label files (no patient data in either).

A scan is keyed by its DICOM series UID, else by the SHA-256 of its file,
else of its pixels.  Its split group is its patient, kept only as a hash
(of the already hashed patient ID), else its study (a hash of the study
UID).  See ``labels.py``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.training.labels.errors import LabelsError

SIDECAR_SUFFIX = ".medcnn-labels.json"
LABELS_DIR = ".medcnn-labels"


def short_sha(text: str | bytes, n: int = 16) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(raw).hexdigest()[:n]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def scan_key(
    path: str | os.PathLike | None = None,
    metadata: dict[str, Any] | None = None,
    data: np.ndarray | None = None,
) -> str:
    """The scan's identity, with no patient data in it.

    ``series:<SeriesInstanceUID>`` when the metadata has one, else
    ``sha256:<hash of the file>`` for a file, else ``data:<hash of the
    pixels, shape and dtype>``.
    """
    uid = (metadata or {}).get("series_uid")
    if uid:
        return f"series:{uid}"
    if path is not None and Path(path).is_file():
        return f"sha256:{file_sha256(path)[:32]}"
    if data is not None:
        a = np.ascontiguousarray(data)
        head = f"{a.shape}{a.dtype}".encode()
        return f"data:{hashlib.sha256(head + a.tobytes()).hexdigest()[:32]}"
    raise LabelsError("a scan needs a series UID, a file or pixel data to be keyed")


def group_key(metadata: dict[str, Any] | None) -> str | None:
    """The scan's group for train/validation splits (whole groups go to one
    side), with no patient data in it.

    Returns:
        ``patient:<hash>`` from the layer metadata's ``patient_id_hash``
        (PatientID through :func:`napari_medcnn.io.metadata.patient_hash`),
        so every study of one patient lands on the same side; else
        ``study:<hash of the study UID>`` for a scan without a patient ID;
        else None (callers then use the scan's own key).
    """
    md = metadata or {}
    if patient := md.get("patient_id_hash"):
        return f"patient:{short_sha(str(patient))}"
    uid = md.get("study_uid")
    return f"study:{short_sha(uid)}" if uid else None


def sidecar_path(scan_path: str | os.PathLike, key: str) -> Path:
    """Where the labels of the scan at ``scan_path`` (keyed ``key``) live."""
    p = Path(scan_path)
    if p.is_dir():
        return p / LABELS_DIR / f"{short_sha(key)}.json"
    return p.with_name(p.name + SIDECAR_SUFFIX)


def scan_path_for(sidecar: str | os.PathLike) -> Path:
    """The scan (file or DICOM folder) that a sidecar belongs to."""
    s = Path(sidecar)
    if s.parent.name == LABELS_DIR:
        return s.parent.parent
    if s.name.endswith(SIDECAR_SUFFIX):
        return s.with_name(s.name[: -len(SIDECAR_SUFFIX)])
    raise LabelsError(f"{s}: not a label sidecar (*{SIDECAR_SUFFIX})")
