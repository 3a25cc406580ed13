"""The PACS widget's questions to the user (module-level functions, so a
test can replace them)."""

from __future__ import annotations

from typing import Any


def ask_confirm_deidentified(parent: Any, n_objects: int, server_label: str) -> bool:
    """Ask before sending results of a de-identified scan to ``server_label``
    (issue 16's privacy rule); returns whether the user confirmed."""
    from qtpy.QtWidgets import QMessageBox

    answer = QMessageBox.question(
        parent,
        "Send de-identified results?",
        f"The {n_objects} object(s) to send belong to a de-identified scan, "
        "so they are de-identified too. Sending them to "
        f"{server_label} stores an anonymous copy there, apart from the "
        "patient's own records.\n\nSend them anyway?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes
