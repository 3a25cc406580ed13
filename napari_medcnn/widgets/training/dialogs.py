"""File dialogs of the Fine-tune dock widget."""

from __future__ import annotations

from qtpy.QtWidgets import QFileDialog, QWidget


def ask_save_path(parent: QWidget, start: str) -> str:
    """A save dialog for a checkpoint; '' when cancelled."""
    path, _ = QFileDialog.getSaveFileName(
        parent, "Save checkpoint", start, "Checkpoints (*.safetensors)"
    )
    return path


def ask_open_path(parent: QWidget, start: str) -> str:
    """An open dialog for a parent checkpoint; '' when cancelled."""
    path, _ = QFileDialog.getOpenFileName(
        parent, "Parent checkpoint", start, "Checkpoints (*.safetensors *.json)"
    )
    return path
