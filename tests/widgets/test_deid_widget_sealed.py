"""The De-identify widget's passphrase (run under xvfb-run): a manifest is
refused without one (unless 'Plaintext manifest' is ticked); with one, the
manifest and the new key file are encrypted, and the passphrase is shown
nowhere."""

from __future__ import annotations

import pytest
from _helpers import phi_series

from napari_medcnn.deid.reidentify import read_manifest
from napari_medcnn.deid.sealed import is_sealed

PLUGIN = "napari-medcnn"
WAIT_MS = 60_000
PASSPHRASE = "typed into the widget, never shown"
pytestmark = pytest.mark.gui


def test_passphrase_encrypts_manifest_and_key(make_napari_viewer, qtbot, tmp_path):
    src = tmp_path / "DOE_JANE" / "ct"
    phi_series(src, n=2)
    viewer = make_napari_viewer()
    _dock, w = viewer.window.add_plugin_dock_widget(PLUGIN, "De-identify")
    w.folder_edit.setText(str(src))
    w.folder_radio.setChecked(True)
    w.set_output(str(tmp_path / "out"))
    manifest, key = tmp_path / "private" / "m.json", tmp_path / "private" / "k.key"
    w.manifest_edit.setText(str(manifest))
    w.key_edit.setText(str(key))
    w.export()  # no passphrase: refused before any work
    assert w.worker is None and "type a passphrase" in w.status.text()
    assert not (tmp_path / "out").exists()
    w.passphrase_edit.setText(PASSPHRASE)
    w.export()
    qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT_MS)
    assert "Exported 2 file(s)" in w.status.text()
    assert is_sealed(manifest.read_bytes()) and is_sealed(key.read_bytes())
    data, sealed = read_manifest(manifest, PASSPHRASE)
    assert sealed and data["patients"][0]["patient_id"] == "PID-0042"
    shown = [w.status.text(), w.summary.toPlainText()]
    assert all(PASSPHRASE not in text for text in shown)
