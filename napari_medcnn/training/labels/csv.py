"""Read labels from a ``path,label[,group]`` CSV (for the CLI)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from napari_medcnn.training.labels.errors import LabelsError
from napari_medcnn.training.labels.keys import short_sha


@dataclass(frozen=True)
class CsvLabel:
    """One row of a label CSV: the scan's path, its class, an optional group."""

    path: Path
    label: str
    group: str | None = None


def read_label_csv(path: str | os.PathLike) -> list[CsvLabel]:
    """Read ``path,label[,group]`` rows (a header row is optional).

    Relative paths are taken from the CSV's folder.  The group (patient or
    study identifier) is hashed at once and never stored in clear.

    Raises:
        LabelsError: with the line number of a malformed row.
    """
    p = Path(path)
    rows: list[CsvLabel] = []
    with open(p, newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            if n == 1 and row[0].lower() == "path" and len(row) > 1:
                continue
            if len(row) < 2 or not row[0] or not row[1]:
                raise LabelsError(f"{p}:{n}: expected 'path,label[,group]', got {row}")
            f = Path(row[0])
            if not f.is_absolute():
                f = p.parent / f
            group = f"group:{short_sha(row[2])}" if len(row) > 2 and row[2] else None
            rows.append(CsvLabel(f, row[1], group))
    if not rows:
        raise LabelsError(f"{p}: no labelled rows")
    return rows
