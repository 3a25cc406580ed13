"""The PACS panel's encrypted cache (issue 17), in a real napari window (run
under xvfb-run): "Keep retrieved series encrypted at rest" seals what a
retrieve brings (no PHI in the cache folder), "Open encrypted…" decrypts a
series into the session cache and opens it (the same pixels), closing the
panel deletes the plaintext, and a wrong passphrase or a changed byte is
"authentication failed" with nothing loaded or kept.

The PACS is a :class:`~napari_medcnn.pacs.folder.FolderPacs` behind the
panel's DICOMweb profile (``connect`` replaced), so no server is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest

PLUGIN = "napari-medcnn"
WAIT_MS = 60_000
PHI = {
    "PatientName": "DOE^JANE",
    "PatientID": "PID-7788",
    "PatientBirthDate": "19700101",
}
PASS = b"widget vault passphrase"

pytestmark = pytest.mark.gui


@pytest.fixture
def folder_pacs(monkeypatch, tmp_path, caplog):
    """A FolderPacs with one PHI-laden series, served to the panel; a
    fresh config folder and session cache under ``tmp_path / "tmp"``."""
    import tempfile

    import napari_medcnn.pacs as pacs_pkg
    from napari_medcnn.io.synth import write_series
    from napari_medcnn.pacs import clear_session_cache
    from napari_medcnn.pacs.folder import FolderPacs

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clear_session_cache()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    rng = np.random.default_rng(3)
    vol = rng.integers(0, 900, size=(4, 24, 20)).astype(np.float64)
    files = write_series(
        vol, tmp_path / "pacs", modality="MR", patient_name=PHI["PatientName"],
        patient_id=PHI["PatientID"], series_description="t2 vault", seed="vault-w",
    )  # fmt: skip
    for f in files:
        ds = pydicom.dcmread(f)
        ds.PatientBirthDate = PHI["PatientBirthDate"]
        ds.save_as(f)
    pacs = FolderPacs(tmp_path / "pacs", name="folder-pacs")
    monkeypatch.setattr(pacs_pkg, "connect", lambda server: pacs)
    yield tmp_path
    clear_session_cache()


def _plaintext(root: Path) -> list[Path]:
    return [p for p in (root / "tmp").rglob("*") if p.is_file()]


def _dock(viewer):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "PACS")
    return widget


def _idle(qtbot, w):
    qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT_MS)


def _search_and_select(qtbot, w) -> None:
    w.kind_combo.setCurrentText("DICOMweb")
    w.address_edit.setText("http://127.0.0.1:9/dicom-web")
    assert w.search()
    _idle(qtbot, w)
    assert len(w.rows) == 1
    w.select_rows([0])


def _no_phi(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert b"DICM" not in data, p
            for value in PHI.values():
                assert value.encode() not in data and value not in p.name, p


def test_keep_encrypted_then_open_encrypted(
    make_napari_viewer, qtbot, folder_pacs, monkeypatch
):
    from napari_medcnn.pacs.vault import Vault
    from napari_medcnn.widgets.pacs import encrypted

    vdir = folder_pacs / "vault"
    asked = []

    def ask(parent, folder, new):
        asked.append(new)
        return PASS

    monkeypatch.setattr(encrypted, "ask_passphrase", ask)
    viewer = make_napari_viewer()
    w = _dock(viewer)
    _search_and_select(qtbot, w)
    w.encrypted_box.keep_box.setChecked(True)
    w.encrypted_box.folder_edit.setText(str(vdir))
    assert w.retrieve()
    _idle(qtbot, w)
    assert asked == [True]  # a new cache: the passphrase asked (twice) once
    assert "1 layer(s) added" in w.status.text(), w.status.text()
    assert "1 sealed into the encrypted cache" in w.status.text()
    retrieved = np.asarray(viewer.layers[-1].data).copy()
    (entry,) = Vault.open(vdir, PASS).series()
    assert entry.description == "t2 vault" and entry.n_instances == 4
    _no_phi(vdir)
    # a second retrieve reuses the unlocked cache (no second question)
    assert w.retrieve()
    _idle(qtbot, w)
    assert asked == [True]
    w.close()
    assert _plaintext(folder_pacs) == []  # the session cache is gone

    # a new panel opens the series from the encrypted cache
    w2 = _dock(viewer)
    w2.encrypted_box.folder_edit.setText(str(vdir))
    monkeypatch.setattr(encrypted, "ask_vault_series", lambda parent, labels: 0)
    n_before = len(viewer.layers)
    assert w2.open_encrypted()
    _idle(qtbot, w2)
    assert asked == [True, False]
    assert len(viewer.layers) == n_before + 1
    np.testing.assert_array_equal(np.asarray(viewer.layers[-1].data), retrieved)
    assert _plaintext(folder_pacs)  # open: the decrypted copy is in the session cache
    w2.close()
    assert _plaintext(folder_pacs) == []
    assert w2.encrypted_box.vault is None  # the key was dropped


def test_wrong_passphrase_and_changed_byte(
    make_napari_viewer, qtbot, folder_pacs, monkeypatch
):
    from napari_medcnn._progress import drain
    from napari_medcnn.pacs import connect
    from napari_medcnn.pacs.vault import OBJECTS, Vault, iter_retrieve_to_vault
    from napari_medcnn.widgets.pacs import encrypted

    vdir = folder_pacs / "vault"
    pacs = connect(None)
    study = pacs.find_studies()[0].study_uid
    series = pacs.find_series(study)[0].series_uid
    with Vault.create(vdir, PASS) as vault:
        drain(iter_retrieve_to_vault(pacs, study, series, vault))
    assert _plaintext(folder_pacs) == []

    viewer = make_napari_viewer()
    w = _dock(viewer)
    w.encrypted_box.folder_edit.setText(str(vdir))
    monkeypatch.setattr(encrypted, "ask_passphrase", lambda *a: b"Xyzzy-not-it")
    monkeypatch.setattr(encrypted, "ask_vault_series", lambda parent, labels: 0)
    n_before = len(viewer.layers)
    assert not w.open_encrypted()
    assert "authentication failed" in w.status.text()
    assert "Xyzzy" not in w.status.text()

    monkeypatch.setattr(encrypted, "ask_passphrase", lambda *a: PASS)
    obj = sorted((vdir / OBJECTS).iterdir())[0]
    blob = bytearray(obj.read_bytes())
    blob[100] ^= 0x01
    obj.write_bytes(bytes(blob))
    assert w.open_encrypted()
    _idle(qtbot, w)
    assert w.status.text().startswith("Retrieve failed: "), w.status.text()
    assert "authentication failed" in w.status.text()
    assert len(viewer.layers) == n_before
    assert _plaintext(folder_pacs) == []
