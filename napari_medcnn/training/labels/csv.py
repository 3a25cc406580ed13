"""Read labels from a ``path,label[,group][,mask]`` CSV (for the CLI)."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from napari_medcnn.training.labels.errors import LabelsError
from napari_medcnn.training.labels.keys import short_sha

#: the columns a header row may name (others are ignored)
KNOWN = ("path", "label", "group", "mask")


@dataclass(frozen=True)
class CsvLabel:
    """One row of a label CSV: the scan's path, its class, an optional
    group and an optional lesion mask (a volume on the scan's voxel grid,
    non-zero inside the finding)."""

    path: Path
    label: str
    group: str | None = None
    mask: Path | None = None


def read_label_csv(path: str | os.PathLike) -> list[CsvLabel]:
    """Read ``path,label[,group]`` rows (a header row is optional).

    With a header row, columns are found by name (``path``, ``label``,
    ``group``, ``mask``; others are ignored; without a ``group`` column the
    third is the group, as in the plain form), so a ``mask`` column can
    give each volume a lesion mask (empty where none was drawn).  Relative paths
    are taken from the CSV's folder.  The group (patient or study
    identifier) is hashed at once and never stored in clear.

    Raises:
        LabelsError: with the line number of a malformed row.
    """
    p = Path(path)
    rows: list[CsvLabel] = []
    cols = {"path": 0, "label": 1, "group": 2}
    with open(p, newline="", encoding="utf-8-sig") as fh:
        for n, row in enumerate(csv.reader(fh), 1):
            row = [c.strip() for c in row]
            if not row or not any(row) or row[0].startswith("#"):
                continue
            names = [c.lower() for c in row]
            if n == 1 and "path" in names and len(row) > 1:  # a header row
                named = {name: i for i, name in reversed(list(enumerate(names)))}
                if "label" not in named:
                    raise LabelsError(f"{p}:1: the header has no 'label' column")
                cols = {**cols, **named}
                if "group" not in named and (
                    len(names) < 3 or names[2] in named and names[2] in KNOWN
                ):
                    cols.pop("group")  # the third column is something else
                continue

            def cell(name: str, row=row, cols=cols) -> str:
                i = cols.get(name)
                return row[i] if i is not None and i < len(row) else ""

            if not cell("path") or not cell("label"):
                raise LabelsError(f"{p}:{n}: expected 'path,label[,group]', got {row}")
            group = f"group:{short_sha(cell('group'))}" if cell("group") else None
            mask = _resolve(p, cell("mask")) if cell("mask") else None
            rows.append(CsvLabel(_resolve(p, cell("path")), cell("label"), group, mask))
    if not rows:
        raise LabelsError(f"{p}: no labelled rows")
    return rows


def _resolve(csv_path: Path, value: str) -> Path:
    """A path cell, relative to the CSV's folder unless absolute."""
    f = Path(value)
    return f if f.is_absolute() else csv_path.parent / f
