"""The PACS panel's "Encrypted cache" box and its questions to the user
(module-level functions, so a test can replace them).

Ticking "Keep retrieved series encrypted at rest" seals every series the
panel retrieves into an encrypted cache folder the user chose
(:mod:`napari_medcnn.pacs.vault`, AES-256-GCM under a passphrase); "Open
encrypted…" decrypts a series from it into the session cache (mode 0700,
removed when the panel closes and at exit) and opens it like a retrieve.
The passphrase is asked once per panel; the unlocked cache's key is
dropped when the panel closes or the folder changes, and neither is ever
logged or shown.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

__all__ = [
    "EncryptedCacheBox",
    "ask_passphrase",
    "ask_vault_dir",
    "ask_vault_series",
]


def ask_vault_dir(parent: Any) -> str | None:
    """Ask for the encrypted cache folder (an existing cache, or a new or
    empty folder); None when cancelled."""
    path = QFileDialog.getExistingDirectory(parent, "Encrypted cache folder")
    return path or None


def ask_passphrase(parent: Any, folder: str, new: bool) -> bytes | None:
    """Ask for the passphrase of the encrypted cache ``folder`` (twice for
    a ``new`` one); None when cancelled or the two entries differ."""
    mode = QLineEdit.EchoMode.Password
    label = f"Passphrase of the encrypted cache\n{folder}:"
    if new:
        label = f"New passphrase for the encrypted cache\n{folder}:"
    text, ok = QInputDialog.getText(parent, "Encrypted cache", label, mode)
    if not ok or not text:
        return None
    if new:
        again, ok = QInputDialog.getText(
            parent, "Encrypted cache", "The same passphrase again:", mode
        )
        if not ok or again != text:
            return None
    return text.encode("utf-8")


def ask_vault_series(parent: Any, labels: list[str]) -> int | None:
    """Ask which series of the encrypted cache to open (``labels``: one
    line each, no patient data); its index, or None when cancelled."""
    if not labels:
        return None
    choice, ok = QInputDialog.getItem(
        parent, "Open encrypted series", "Series:", labels, 0, False
    )
    return labels.index(choice) if ok and choice in labels else None


class EncryptedCacheBox(QGroupBox):
    """The "Encrypted cache" controls: the keep-encrypted check box, the
    folder, "Open encrypted…", and the unlocked cache (:attr:`vault`)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Encrypted cache", parent)
        self.vault: Any = None  # napari_medcnn.pacs.vault.Vault, when unlocked
        self.keep_box = QCheckBox("Keep retrieved series encrypted at rest")
        self.keep_box.setToolTip(
            "Also seal each retrieved series into the encrypted cache folder "
            "(AES-256-GCM under a passphrase; no patient data in any file "
            "name). The plaintext copy stays only in the session cache, "
            "deleted when this panel closes."
        )
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("encrypted cache folder")
        self.choose_button = QPushButton("Choose…")
        self.open_button = QPushButton("Open encrypted…")
        self.open_button.setToolTip(
            "Decrypt a series of the encrypted cache into the session cache "
            "(deleted when this panel closes) and open it"
        )
        row = QHBoxLayout()
        row.addWidget(self.folder_edit, 1)
        row.addWidget(self.choose_button)
        row.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.keep_box)
        layout.addLayout(row)
        self.choose_button.clicked.connect(self._choose)
        self.folder_edit.textChanged.connect(self.lock)

    @property
    def keep_encrypted(self) -> bool:
        """Whether retrieved series are to be sealed into the cache."""
        return self.keep_box.isChecked()

    def folder(self) -> str:
        """The cache folder as typed (may be empty)."""
        return self.folder_edit.text().strip()

    def _choose(self) -> None:
        path = ask_vault_dir(self)
        if path:
            self.folder_edit.setText(path)

    def unlock(self) -> tuple[Any, str]:
        """The unlocked cache, asking for the folder and the passphrase
        when needed (a missing or empty folder becomes a new cache).

        Returns:
            ``(vault, "")``, or ``(None, why)`` when cancelled or refused
            ("authentication failed" for a wrong passphrase).
        """
        from napari_medcnn.pacs.vault import Vault, VaultError, is_vault

        folder = self.folder()
        if self.vault is not None and str(self.vault.path) == folder:
            return self.vault, ""
        if not folder:
            folder = ask_vault_dir(self) or ""
            if not folder:
                return None, "No encrypted cache folder chosen."
            self.folder_edit.setText(folder)
        new = not is_vault(folder)
        passphrase = ask_passphrase(self, folder, new)
        if passphrase is None:
            return None, "No passphrase given (or the two entries differ)."
        try:
            opener = Vault.create if new else Vault.open
            self.vault = opener(folder, passphrase)
        except VaultError as exc:
            return None, f"Encrypted cache: {exc}"
        return self.vault, ""

    def lock(self, *_args: Any) -> None:
        """Forget the unlocked cache's key."""
        if self.vault is not None:
            self.vault.close()
        self.vault = None
