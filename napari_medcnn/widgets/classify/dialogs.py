"""File dialogs of the Classify dock widget."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QWidget


def ask_export_path(parent: QWidget, name: str, fmt: str) -> tuple[str, bool] | None:
    """Ask where to export (``fmt`` is ``csv``, ``json`` or ``dcm``: a
    DICOM SR); None when cancelled.  The suffix is added when the user left it out.

    Returns:
        (path, confirmed): ``confirmed`` is True when the dialog itself
        chose ``path``, so the user confirmed replacing it if it exists
        (not when the suffix was added afterwards).
    """
    stem = "".join(c if c.isalnum() else "_" for c in name)
    default = f"{stem or 'classification'}_classification.{fmt}"
    filt = {"csv": "CSV (*.csv)", "dcm": "DICOM SR (*.dcm)"}.get(fmt, "JSON (*.json)")
    path, _ = QFileDialog.getSaveFileName(
        parent, "Export classification", default, filt
    )
    if not path:
        return None
    if path.lower().endswith(f".{fmt}"):
        return path, True
    return f"{path}.{fmt}", False
