"""Authorised re-identification: read a manifest (sealed or plaintext),
look a pseudonym or a new UID up in it, and change a sealed file's
passphrase.

A manifest is what :meth:`.report.Manifest.write` wrote: JSON, or CSV
(``kind,original,new``), either sealed (:mod:`.sealed`) or, when the user
asked for it, plaintext.  Both spellings read into the JSON layout
(``patients``, ``uids``, ``accession_numbers``, ``files``), so a lookup
works the same on either.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from napari_medcnn.deid.sealed import (
    MAGIC,
    ScryptParams,
    SealedFileError,
    is_sealed,
    open_sealed,
    write_sealed,
)

__all__ = ["find", "parse_manifest", "read_manifest", "rekey"]


def read_manifest(
    path: str | os.PathLike, passphrase: str | bytes | None
) -> tuple[dict[str, Any], bool]:
    """Read (and decrypt) a manifest.

    Args:
        path: a manifest written by ``deidentify --manifest``.
        passphrase: opens a sealed manifest; not needed for a plaintext one.

    Returns:
        ``(data, sealed)``: the manifest in the JSON layout, and whether
        the file was sealed.

    Raises:
        SealedFileError: unreadable; sealed and no passphrase; wrong
            passphrase, changed or truncated ("authentication failed"); or
            neither a sealed file nor a manifest.
    """
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise SealedFileError(f"cannot read {p}: {exc.strerror or exc}") from None
    # a file cut inside the magic (or empty) is a truncated sealed file
    sealed = is_sealed(blob) or MAGIC.startswith(blob)
    if sealed:
        if passphrase is None:
            raise SealedFileError(
                f"{p} is encrypted: give its passphrase (--passphrase-file FILE "
                "or the environment variable NAPARI_MEDCNN_PASSPHRASE)"
            )
        blob = open_sealed(blob, passphrase, what=str(p))
    try:
        return parse_manifest(blob.decode("utf-8")), sealed
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise SealedFileError(
            f"{p}: not a napari-medcnn manifest (neither a sealed file nor "
            "manifest JSON or CSV)"
        ) from None


def parse_manifest(text: str) -> dict[str, Any]:
    """A manifest's text (JSON, or the ``kind,original,new`` CSV) in the
    JSON layout.  Raises ValueError for anything else."""
    if text.lstrip().startswith("{"):
        data = json.loads(text)
        if not isinstance(data, dict) or "patients" not in data:
            raise ValueError("no patients")
        return data
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != ["kind", "original", "new"]:
        raise ValueError("not a manifest CSV")
    patients: dict[str, dict[str, Any]] = {}
    data: dict[str, Any] = {"uids": [], "accession_numbers": [], "files": []}
    for kind, original, new in rows[1:]:
        if kind == "PatientID":
            patients.setdefault(new, {})["patient_id"] = original
        elif kind == "PatientName":
            patients.setdefault(new, {})["patient_name"] = original
        elif kind == "DateShiftDays":
            days = int(new) if new.lstrip("-").isdigit() else None
            patients.setdefault(original, {})["date_shift_days"] = days
        elif kind == "AccessionNumber":
            data["accession_numbers"].append({"original": original, "study_uid": new})
        elif kind == "File":
            data["files"].append({"input": original, "output": new})
        else:
            data["uids"].append({"kind": kind, "original": original, "new": new})
    data["patients"] = [{"pseudonym": k, **v} for k, v in sorted(patients.items())]
    return data


def find(data: dict[str, Any], term: str) -> list[dict[str, Any]]:
    """Every record of a manifest whose *new* value is ``term``.

    Args:
        data: a manifest in the JSON layout (:func:`read_manifest`).
        term: a pseudonym (``ANON-...``, case-insensitive), a new study,
            series or instance UID, or an output file name (relative to
            the export, or its last part).

    Returns:
        One dict per match, with ``match`` naming what matched
        (``patient``, a UID kind or ``file``) and the original identifiers:
        a patient's ID, name, date shift (days) and input files; a UID's
        original (and, for a study, its accession numbers); a file's input
        path.  Empty when nothing matches.
    """
    term = term.strip()
    found: list[dict[str, Any]] = []
    files = data.get("files", [])
    for pat in data.get("patients", []):
        if str(pat.get("pseudonym", "")).upper() == term.upper():
            prefix = f"{pat['pseudonym']}/"
            inputs = [f["input"] for f in files if f["output"].startswith(prefix)]
            found.append({"match": "patient", **pat, "inputs": inputs})
    for uid in data.get("uids", []):
        if uid.get("new") == term:
            rec = {"match": uid["kind"], "new": term, "original": uid["original"]}
            if uid["kind"] == "StudyInstanceUID":
                rec["accession_numbers"] = [
                    a["original"]
                    for a in data.get("accession_numbers", [])
                    if a["study_uid"] == term
                ]
            found.append(rec)
    for f in files:
        out = f.get("output", "")
        if term and (out == term or out.rsplit("/", 1)[-1] == term):
            found.append({"match": "file", "output": out, "input": f["input"]})
    return found


def rekey(
    path: str | os.PathLike,
    old: str | bytes | None,
    new: str | bytes,
    *,
    scrypt: ScryptParams | None = None,
) -> bool:
    """Seal a file (manifest or key file) under a new passphrase, in place
    and atomically (a crash leaves the old file or the new one; mode 0600).

    Args:
        path: a sealed file, or a plaintext one (which is then sealed: the
            way to encrypt a manifest or key file written before sealing).
        old: the current passphrase (not needed for a plaintext file).
        new: the new passphrase.
        scrypt: the new file's scrypt cost (default :class:`ScryptParams`).

    Returns:
        Whether the file was sealed before (False: it was plaintext).

    Raises:
        SealedFileError: unreadable, no or wrong old passphrase, changed or
            truncated; the file is left as it was.
    """
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise SealedFileError(f"cannot read {p}: {exc.strerror or exc}") from None
    sealed = is_sealed(blob)
    if sealed:
        if old is None:
            raise SealedFileError(
                f"{p} is encrypted: give its current passphrase "
                "(--passphrase-file FILE or NAPARI_MEDCNN_PASSPHRASE)"
            )
        blob = open_sealed(blob, old, what=str(p))
    try:
        write_sealed(p, blob, new, overwrite=True, scrypt=scrypt)
    except ValueError as exc:
        raise SealedFileError(f"{p}: {exc}") from None
    return sealed
