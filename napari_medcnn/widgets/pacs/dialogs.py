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


#: the profile fields :func:`ask_tls_settings` edits (file paths and a flag)
TLS_FIELDS = ("ca_bundle", "client_cert", "client_key", "tls")


def ask_tls_settings(parent: Any, settings: dict[str, Any]) -> dict[str, Any] | None:
    """Edit a server's transport security: the CA bundle verifying the
    server (HTTPS or DICOM TLS), our client certificate and key (paths
    only, never their contents), and "DIMSE over TLS".  Returns the new
    ``{ca_bundle, client_cert, client_key, tls}`` (None for an empty
    path), or None when cancelled."""
    from qtpy.QtWidgets import (
        QCheckBox,
        QDialog,
        QDialogButtonBox,
        QFileDialog,
        QFormLayout,
        QHBoxLayout,
        QLineEdit,
        QPushButton,
    )

    dialog = QDialog(parent)
    dialog.setWindowTitle("Server TLS")
    form = QFormLayout(dialog)
    edits: dict[str, QLineEdit] = {}
    for key, label, hint in (
        ("ca_bundle", "CA bundle", "PEM file; empty: the system's CAs"),
        ("client_cert", "Client certificate", "PEM file, if the server asks"),
        ("client_key", "Client key", "unencrypted PEM key; empty: in the cert"),
    ):
        edit = QLineEdit(str(settings.get(key) or ""))
        edit.setPlaceholderText(hint)
        browse = QPushButton("…")

        def pick(_checked=False, edit=edit, label=label) -> None:
            path, _f = QFileDialog.getOpenFileName(dialog, label, edit.text())
            if path:
                edit.setText(path)

        browse.clicked.connect(pick)
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        row.addWidget(browse)
        form.addRow(label, row)
        edits[key] = edit
    tls_box = QCheckBox("DIMSE over TLS")
    tls_box.setToolTip("DICOM TLS for a DIMSE node; DICOMweb uses an https:// URL")
    tls_box.setChecked(bool(settings.get("tls")))
    form.addRow(tls_box)
    buttons = QDialogButtonBox(
        QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
    )
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    form.addRow(buttons)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    out: dict[str, Any] = {k: e.text().strip() or None for k, e in edits.items()}
    out["tls"] = tls_box.isChecked()
    return out
