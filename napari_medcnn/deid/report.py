"""The de-identification report (no values, ever) and the mapping manifest.

:class:`DeidReport` counts what the engine did, by attribute (tag, where in
which sequence) and action, over all files: it is what a dry run shows and
what ``--report`` writes.  It holds tags, names, actions, counts, output
names and burned-in reasons; never an original value, never an input path.

:class:`Manifest` is the opposite: the link from original identifiers
(patient ID and name, accession number, study, series and instance UIDs,
input paths) to the new ones.  It is written only where the user says,
outside the export folder, atomically, readable by its owner only.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_description

from napari_medcnn.deid.dataset import Change, DatasetOutcome
from napari_medcnn.deid.keys import write_private
from napari_medcnn.deid.options import DeidOptions
from napari_medcnn.deid.sealed import write_sealed
from napari_medcnn.deid.table import EDITION

__all__ = ["DeidReport", "Manifest", "ReportRow", "tag_name", "tag_text"]


def tag_text(tag: int) -> str:
    """``(gggg,eeee)`` for a tag number."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def tag_name(tag: int) -> str:
    """The PS3.6 name of a tag, or ``Private`` / ``Unknown``."""
    if (tag >> 16) % 2:
        return "Private creator" if (tag & 0xFFFF) < 0x100 else "Private"
    try:
        return dictionary_description(tag)
    except KeyError:
        return "Unknown"


@dataclass(frozen=True)
class ReportRow:
    """One line of the report: an attribute, where it sits, what was done,
    in how many files and how many times (sequence items count apart)."""

    where: str
    tag: str
    name: str
    action: str
    note: str
    files: int
    count: int


@dataclass
class DeidReport:
    """Counts of changes over an export or a dry run (no values, no paths).

    ``flagged`` maps an output name (PHI-free) to why its pixels may carry
    burned-in text; ``skipped`` and ``failed`` are reasons only.
    """

    n_files: int = 0
    flagged: dict[str, list[str]] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    _files: Counter = field(default_factory=Counter, repr=False)
    _count: Counter = field(default_factory=Counter, repr=False)

    def add(self, changes: list[Change]) -> None:
        """Count the changes of one file."""
        self.n_files += 1
        keys = [(c.parents, c.tag, c.action, c.note) for c in changes]
        self._count.update(keys)
        self._files.update(set(keys))

    def rows(self) -> list[ReportRow]:
        """Every distinct change, top-level attributes first, by tag."""
        out = []
        for key in sorted(self._count, key=lambda k: (len(k[0]), k[0], k[1], k[2])):
            parents, tag, action, note = key
            where = " > ".join(tag_text(p) for p in parents)
            out.append(
                ReportRow(
                    where,
                    tag_text(tag),
                    tag_name(tag),
                    action,
                    note,
                    self._files[key],
                    self._count[key],
                )  # fmt: skip
            )
        return out

    def action_totals(self) -> dict[str, int]:
        """Changes per action over all files (``X``: removed...)."""
        totals: Counter = Counter()
        for (_p, _t, action, _n), n in self._count.items():
            totals[action] += n
        return dict(sorted(totals.items()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (no values, no input paths)."""
        return {
            "profile": f"DICOM PS3.15 Annex E Basic Profile, Table E.1-1 {EDITION}",
            "files": self.n_files,
            "actions": self.action_totals(),
            "attributes": [r.__dict__ for r in self.rows()],
            "burned_in_flagged": self.flagged,
            "skipped": dict(self.skipped),
            "failed": dict(self.failed),
        }

    def summary_text(self, *, private_detail: bool = False) -> str:
        """A plain-text table for a terminal or the widget: one line per
        attribute and action; private attributes folded into one line unless
        ``private_detail``."""
        lines = [f"{self.n_files} file(s); actions: " + _totals(self.action_totals())]
        lines.append(f"{'tag':<12} {'action':<6} {'files':>6}  attribute")
        private = Counter()
        for r in self.rows():
            if r.note == "private" and not private_detail:
                private["files"] = max(private["files"], r.files)
                private["count"] += r.count
                continue
            name = f"{r.where} > {r.name}" if r.where else r.name
            note = f" [{r.note}]" if r.note else ""
            lines.append(f"{r.tag:<12} {r.action:<6} {r.files:>6}  {name}{note}")
        if private:
            lines.append(
                f"{'(odd,xxxx)':<12} {'X':<6} {private['files']:>6}  "
                f"private attributes ({private['count']} removed)"
            )
        if self.flagged:
            lines.append(
                f"{len(self.flagged)} file(s) may carry burned-in text in the "
                "pixels (check them; blank rectangles if needed):"
            )
            for name, why in sorted(self.flagged.items()):
                lines.append(f"  {name}: {', '.join(why)}")
        for what, counts in (("skipped", self.skipped), ("failed", self.failed)):
            for reason, n in sorted(counts.items()):
                lines.append(f"{n} file(s) {what}: {reason}")
        return "\n".join(lines)


def _totals(totals: dict[str, int]) -> str:
    names = {"X": "removed", "Z": "emptied", "D": "dummy", "U": "UID remapped",
             "C": "cleaned", "K": "kept by option"}  # fmt: skip
    return ", ".join(f"{n} {names.get(a, a)}" for a, n in totals.items()) or "none"


@dataclass
class Manifest:
    """Original -> new identifiers of one export (PHI: keep it apart)."""

    patients: dict[str, dict[str, Any]] = field(default_factory=dict)
    uids: dict[tuple[str, str], str] = field(default_factory=dict)
    accessions: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str]] = field(default_factory=list)

    def add(self, outcome: DatasetOutcome, input_path: str, output: str) -> None:
        """Record one de-identified file (``output`` relative to the export)."""
        o, n = outcome.original, outcome.new
        self.patients.setdefault(
            outcome.pseudonym,
            {
                "patient_id": o.get("PatientID", ""),
                "patient_name": o.get("PatientName", ""),
                "date_shift_days": outcome.day_offset,
            },
        )
        for kind in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if o.get(kind):
                self.uids[(kind, o[kind])] = n.get(kind, "")
        if o.get("AccessionNumber"):
            self.accessions[o["AccessionNumber"]] = n.get("StudyInstanceUID", "")
        self.files.append((input_path, output))

    def to_dict(self, key_fingerprint: str, options: DeidOptions) -> dict[str, Any]:
        """The manifest as JSON-ready data."""
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "key_fingerprint": key_fingerprint,
            "profile": f"PS3.15 Annex E Basic Profile, Table E.1-1 {EDITION}",
            "options": options.descriptions(),
            "patients": [
                {"pseudonym": k, **v} for k, v in sorted(self.patients.items())
            ],
            "uids": [
                {"kind": kind, "original": old, "new": new}
                for (kind, old), new in sorted(self.uids.items())
            ],
            "accession_numbers": [
                {"original": a, "study_uid": s}
                for a, s in sorted(self.accessions.items())
            ],
            "files": [{"input": i, "output": o} for i, o in self.files],
        }

    def write(
        self,
        path: str | os.PathLike,
        key_fingerprint: str,
        options: DeidOptions,
        overwrite: bool = False,
        passphrase: str | bytes | None = None,
    ) -> Path:
        """Write JSON, or CSV (``kind,original,new``) for a ``.csv`` path,
        atomically and readable by the owner only (mode 0600).  An existing
        file is refused (``OverwriteError``) unless ``overwrite``.

        With ``passphrase``, the same text (UTF-8) is sealed
        (:mod:`.sealed`: scrypt and AES-256-GCM) instead of written in
        plaintext; ``napari-medcnn manifest show`` reads it back."""
        p = Path(path)
        data = self.to_dict(key_fingerprint, options)
        if p.suffix.lower() == ".csv":
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["kind", "original", "new"])
            for pat in data["patients"]:
                w.writerow(["PatientID", pat["patient_id"], pat["pseudonym"]])
                w.writerow(["PatientName", pat["patient_name"], pat["pseudonym"]])
                w.writerow(["DateShiftDays", pat["pseudonym"], pat["date_shift_days"]])
            for u in data["uids"]:
                w.writerow([u["kind"], u["original"], u["new"]])
            for a in data["accession_numbers"]:
                w.writerow(["AccessionNumber", a["original"], a["study_uid"]])
            for f in data["files"]:
                w.writerow(["File", f["input"], f["output"]])
            text = buf.getvalue()
        else:
            text = json.dumps(data, indent=2) + "\n"
        if passphrase is not None:
            write_sealed(p, text.encode("utf-8"), passphrase, overwrite=overwrite)
        else:
            write_private(p, text, overwrite=overwrite)
        return p
