"""File dialogs of the Saliency dock widget."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QWidget

EXPORT_FILTERS = (
    "NIfTI (*.nii.gz);;NumPy (*.npy);;PNG overlay (*.png);;DICOM Parametric Map (*.dcm)"
)


def ask_export_path(parent: QWidget, name: str) -> tuple[str, bool] | None:
    """Ask where to save the map; the suffix follows the chosen filter.

    Returns:
        (path, confirmed), or None when cancelled: ``confirmed`` is True
        when the dialog itself chose ``path`` (the user confirmed replacing
        it if it exists), not when the suffix was added afterwards.
    """
    stem = "".join(c if c.isalnum() else "_" for c in name) or "saliency"
    path, chosen = QFileDialog.getSaveFileName(
        parent, "Export saliency map", f"{stem}.nii.gz", EXPORT_FILTERS
    )
    if not path:
        return None
    suffix = ".png" if "png" in chosen else ".npy" if "npy" in chosen else ".nii.gz"
    suffix = ".dcm" if "dcm" in chosen else suffix
    known = (".nii.gz", ".nii", ".npy", ".png", ".dcm")
    if path.lower().endswith(known):
        return path, True
    return path + suffix, False
