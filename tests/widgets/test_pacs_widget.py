"""The PACS dock widget in a real napari window (run under xvfb-run),
against a real PACS: Debian's Orthanc with the DICOMweb plugin
(:class:`napari_medcnn.pacs.orthanc.LocalOrthanc`, as ``tests/pacs`` start
it; skipped with the reason where Orthanc is not installed).

A synthetic MR series with a patient name is stored in Orthanc; the widget
tests the server, searches (names masked), retrieves the series (the layer
equals a disk load), sends the SR of its classification (then found in
Orthanc by QIDO, referencing the series), cancels a retrieve (nothing
loaded or kept), and asks before sending results of a de-identified scan.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from _helpers import make_checkpoint

from napari_medcnn.pacs import Server, connect
from napari_medcnn.pacs.orthanc import LocalOrthanc, OrthancUnavailable

PLUGIN = "napari-medcnn"
WAIT_MS = 60_000
USER, PASSWORD = "medcnn", "w1dget-Orthanc-pw-5521"
PHI_NAME, PHI_ID = "Doe^Janet", "PID-55120"
PHI = ("Doe", "Janet", PHI_ID)


class Stored:
    """The running Orthanc, its profile and the series stored in it."""

    def __init__(self, orthanc: LocalOrthanc, raw: Path, deid: Path):
        import pydicom

        self.orthanc = orthanc
        self.raw, self.deid = raw, deid
        ds = pydicom.dcmread(next(raw.glob("*.dcm")), stop_before_pixels=True)
        self.study_uid, self.series_uid = ds.StudyInstanceUID, ds.SeriesInstanceUID

    def server(self) -> Server:
        return Server("widget-orthanc", url=self.orthanc.dicomweb_url, user=USER,
                      password=PASSWORD, timeout=10.0)  # fmt: skip


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Orthanc with one identified MR series (6 slices, oblique, 3 mm)."""
    from napari_medcnn.deid.run import deidentify
    from napari_medcnn.io.synth import write_series

    root = tmp_path_factory.mktemp("pacs-widget")
    rng = np.random.default_rng(5)
    vol = rng.integers(0, 900, size=(6, 40, 36)).astype(np.float64)
    vol[:, 12:28, 10:24] += 700
    c, s = np.cos(0.2), np.sin(0.2)
    write_series(
        vol, root / "raw", spacing=(3.0, 0.8, 0.9), origin=(-20.0, 10.0, 40.0),
        row_dir=(c, s, 0.0), col_dir=(-s, c, 0.0), modality="MR",
        patient_name=PHI_NAME, patient_id=PHI_ID, series_description="t1 axial",
        seed="pacs-widget",
    )  # fmt: skip
    deidentify([root / "raw"], root / "deid")
    orthanc = LocalOrthanc(user=USER, password=PASSWORD)
    try:
        orthanc.start()
    except OrthancUnavailable as exc:
        pytest.skip(str(exc))
    try:
        out = Stored(orthanc, root / "raw", root / "deid")
        result = connect(out.server()).store([root / "raw"])
        assert len(result.stored) == 6 and not result.failed
        yield out
    finally:
        orthanc.stop()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def user_dirs(monkeypatch, tmp_path, caplog):
    """A fresh config and cache folder, and a fresh session cache under
    ``tmp_path / "tmp"``; DEBUG logs captured."""
    import tempfile

    from napari_medcnn.pacs import clear_session_cache

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    clear_session_cache()
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    yield tmp_path
    clear_session_cache()


def _on_disk(user_dirs: Path) -> list[Path]:
    """Everything in the temporary folder the session cache lives in, and
    in the user cache (where retrieves went before)."""
    roots = (user_dirs / "tmp", user_dirs / "cache" / "napari-medcnn")
    return [p for root in roots for p in root.rglob("*")]


def _dock(viewer):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "PACS")
    return widget


def _idle(qtbot, w):
    qtbot.waitUntil(lambda: w.worker is None, timeout=WAIT_MS)


def _type_server(w, stored: Stored) -> None:
    """Define the server in the fields, as a user does."""
    w.kind_combo.setCurrentText("DICOMweb")
    w.address_edit.setText(stored.orthanc.dicomweb_url)
    w.user_edit.setText(USER)
    w.password_edit.setText(PASSWORD)
    w.name_edit.setText("widget-orthanc")


def _cells(w) -> list[str]:
    t = w.table
    return [t.item(r, c).text() for r in range(t.rowCount())
            for c in range(t.columnCount()) if t.item(r, c)]  # fmt: skip


def _search(qtbot, w, **filters) -> None:
    w.set_filters(**filters)
    assert w.search()
    _idle(qtbot, w)


def _classify(layer, model_path) -> dict:
    """Classify the layer's scan with the core and store the record in the
    layer, as the Classify widget does."""
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.predict import classify
    from napari_medcnn.inference.records import classification_record

    result = drain(classify([np.asarray(layer.data)], str(model_path),
                            scope="slices", spacing=tuple(layer.scale)))  # fmt: skip
    record = classification_record(
        result, name=str(layer.name), channel_layers=[str(layer.name)],
        metadata=layer.metadata,
    )  # fmt: skip
    layer.metadata = {**layer.metadata, "classification": record}
    return record


def _no_phi(*texts: str) -> None:
    for text in texts:
        for word in (*PHI, PASSWORD):
            assert word not in text, word


@pytest.mark.gui
def test_search_retrieve_classify_send_sr(
    make_napari_viewer, qtbot, stored, tiny, user_dirs, caplog
):
    from napari_medcnn.io import load
    from napari_medcnn.pacs import load_profiles

    viewer = make_napari_viewer()
    w = _dock(viewer)
    _type_server(w, stored)
    assert w.password_edit.echoMode() == w.password_edit.EchoMode.Password

    # the profile is saved without the password unless asked
    path = w.save_profile(remember_password=False)
    assert PASSWORD not in path.read_text()
    assert load_profiles()["widget-orthanc"].password is None
    assert w.profile_combo.findText("widget-orthanc") >= 0

    assert w.test()
    _idle(qtbot, w)
    assert w.test_status.text().startswith("OK: widget-orthanc"), w.status.text()

    _search(qtbot, w, patient_id=PHI_ID, modality="MR")
    assert len(w.rows) == 1, w.status.text()
    study, series = w.rows[0]
    assert series.series_uid == stored.series_uid and series.n_instances == 6
    cells = _cells(w)
    assert any(c.startswith("patient ") for c in cells) and "t1 axial" in cells
    _no_phi(*cells)
    w.show_names.setChecked(True)
    assert PHI_NAME in _cells(w)
    w.show_names.setChecked(False)
    _no_phi(*_cells(w))

    # retrieve: one layer, the same as a disk load
    w.select_rows([0])
    assert w.retrieve_button.isEnabled()
    n_before = len(viewer.layers)
    assert w.retrieve()
    assert w.cancel_button.isEnabled() and not w.search_button.isEnabled()
    _idle(qtbot, w)
    assert len(viewer.layers) == n_before + 1, w.status.text()
    layer = viewer.layers[-1]
    (disk,) = load(stored.raw)
    data, kwargs, _kind = disk.to_layer_data()
    np.testing.assert_array_equal(np.asarray(layer.data), data)
    np.testing.assert_allclose(layer.scale, kwargs["scale"])
    np.testing.assert_allclose(layer.translate, kwargs["translate"])
    np.testing.assert_allclose(layer.metadata["affine"], kwargs["metadata"]["affine"])
    from napari_medcnn.pacs import session_cache

    folder = w.last_retrieved.folders[0]
    root = session_cache()
    assert root.parent == user_dirs / "tmp"
    assert folder == root / str(stored.study_uid) / str(stored.series_uid)

    # classify, then send the SR of the classification
    _classify(layer, tiny)
    viewer.layers.selection.active = layer
    assert "SR" in w.send_target.text()
    assert w.send_results()
    _idle(qtbot, w)
    assert w.status.text() == "Sent SR: 1 object(s) stored.", w.status.text()

    # QIDO: the SR is in Orthanc, in the same study, referencing the series
    client = connect(stored.server())
    (sr_series,) = client.find_series(str(stored.study_uid), modality="SR")
    assert "not for diagnostic use" in sr_series.description
    got = client.retrieve_series(str(stored.study_uid), sr_series.series_uid,
                                 user_dirs / "sr")  # fmt: skip
    import pydicom

    from napari_medcnn._progress import drain

    (sr_file,) = drain(got).glob("*.dcm")
    sr = pydicom.dcmread(sr_file)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == stored.series_uid
    # the plugin's own log lines (third-party DEBUG lines echo the query URL)
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("napari_")]
    _no_phi(w.status.text(), w.test_status.text(), w.send_target.text(), *ours)
    assert PASSWORD not in caplog.text

    # closing the panel deletes the session cache: nothing retrieved stays
    assert folder.is_dir()  # kept while the panel is open ("Send results")
    w.close()
    assert not root.exists() and _on_disk(user_dirs) == []


@pytest.mark.gui
def test_cancelled_retrieve_loads_and_keeps_nothing(
    make_napari_viewer, qtbot, stored, user_dirs
):
    viewer = make_napari_viewer()
    w = _dock(viewer)
    w.set_server(stored.server())
    _search(qtbot, w, patient_id=PHI_ID, modality="MR")
    assert len(w.rows) == 1
    w.select_rows([0])
    n_before = len(viewer.layers)
    assert w.retrieve()
    w.cancel()  # before the first instance is written
    _idle(qtbot, w)
    assert w.last_retrieved is not None and w.last_retrieved.cancelled
    assert "cancelled" in w.status.text()
    assert len(viewer.layers) == n_before
    assert [p for p in _on_disk(user_dirs) if p.is_file()] == []


@pytest.mark.gui
def test_retrieve_error_keeps_nothing(make_napari_viewer, qtbot, stored, user_dirs):
    """A retrieve from a server that stopped answering fails with the
    reason; nothing of it is on disk."""
    from napari_medcnn.pacs.orthanc import free_port

    viewer = make_napari_viewer()
    w = _dock(viewer)
    w.set_server(stored.server())
    _search(qtbot, w, patient_id=PHI_ID, modality="MR")
    assert len(w.rows) == 1
    w.select_rows([0])
    w.address_edit.setText(f"http://127.0.0.1:{free_port()}/dicom-web")
    n_before = len(viewer.layers)
    assert w.retrieve()
    _idle(qtbot, w)
    assert w.status.text().startswith("Retrieve failed: "), w.status.text()
    assert len(viewer.layers) == n_before
    assert [p for p in _on_disk(user_dirs) if p.is_file()] == []


def test_retrieve_job_error_deletes_what_it_retrieved(stored, user_dirs):
    """The retrieve job: a series that fails after one that arrived
    leaves nothing in the session cache (a chosen folder is kept)."""
    from napari_medcnn._progress import drain
    from napari_medcnn.pacs import PacsError
    from napari_medcnn.widgets.pacs.jobs import iter_retrieve_job

    good = (str(stored.study_uid), str(stored.series_uid))
    bad = (str(stored.study_uid), "1.2.826.0.1.3680043.99.1")
    with pytest.raises(PacsError):
        drain(iter_retrieve_job(stored.server(), [good, bad]))
    assert [p for p in _on_disk(user_dirs) if p.is_file()] == []
    mine = user_dirs / "mine"
    with pytest.raises(PacsError):
        drain(iter_retrieve_job(stored.server(), [good, bad], mine))
    assert len(list((mine / good[0] / good[1]).glob("*.dcm"))) == 6


@pytest.mark.gui
def test_dimse_test_and_a_wrong_server(make_napari_viewer, qtbot, stored, user_dirs):
    viewer = make_napari_viewer()
    w = _dock(viewer)
    o = stored.orthanc
    w.kind_combo.setCurrentText("DIMSE")
    assert not w.password_edit.isEnabled()
    w.address_edit.setText(f"{o.aet}@127.0.0.1:{o.dicom_port}")
    w.calling_aet_edit.setText("MEDCNN_WIDGET")
    assert w.test()
    _idle(qtbot, w)
    assert w.test_status.text().startswith("OK:"), w.test_status.text()
    w.address_edit.setText(f"NOT_ORTHANC@127.0.0.1:{o.dicom_port}")
    assert w.test()
    _idle(qtbot, w)
    text = w.test_status.text()
    # Orthanc rejects or aborts the association, depending on timing
    assert text.startswith("Failed: ") and "NOT_ORTHANC" in text, text
    w.address_edit.setText("no address")
    assert not w.test()
    assert "AET@HOST:PORT" in w.test_status.text()


@pytest.mark.gui
def test_results_of_a_deidentified_scan_need_confirmation(
    make_napari_viewer, qtbot, stored, tiny, user_dirs, monkeypatch
):
    from napari_medcnn.widgets.pacs import dialogs

    viewer = make_napari_viewer()
    w = _dock(viewer)
    w.set_server(stored.server())
    (layer,) = viewer.open(str(stored.deid), plugin=PLUGIN)
    _classify(layer, tiny)
    viewer.layers.selection.active = layer
    asked = []

    def answer(reply):
        def ask(parent, n, label):
            asked.append((n, label))
            return reply

        return ask

    monkeypatch.setattr(dialogs, "ask_confirm_deidentified", answer(False))
    assert not w.send_results()
    assert asked == [(1, stored.server().label)]
    assert w.status.text() == "Not sent: the results are de-identified."
    import pydicom

    first = next(stored.deid.rglob("*.dcm"))
    deid_study = str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
    client = connect(stored.server())
    assert client.find_series(deid_study, modality="SR") == []

    monkeypatch.setattr(dialogs, "ask_confirm_deidentified", answer(True))
    assert w.send_results()
    _idle(qtbot, w)
    assert w.status.text() == "Sent SR: 1 object(s) stored.", w.status.text()
    (sr_series,) = client.find_series(deid_study, modality="SR")
    assert sr_series.n_instances == 1


@pytest.mark.gui
def test_send_seg_and_parametric_map_then_retrieve_skips_them(
    make_napari_viewer, qtbot, stored, user_dirs
):
    """A Labels layer is sent as a SEG, a saliency overlay as a Parametric
    Map; retrieving every series of the study then loads only the image
    series (the result series are kept in the cache, not loaded)."""
    viewer = make_napari_viewer()
    w = _dock(viewer)
    w.set_server(stored.server())
    (scan,) = viewer.open(str(stored.raw), plugin=PLUGIN)
    geometry = {"scale": scan.scale, "translate": scan.translate}
    labels = np.zeros(scan.data.shape, np.uint8)
    labels[2:4, 10:20, 8:18] = 1
    seg_layer = viewer.add_labels(labels, name="lesion", **geometry)
    saliency = np.zeros(scan.data.shape, np.float32)
    saliency[:, 12:28, 10:24] = 0.8
    record = {"method": "gradcam", "target_name": "tumor", "model_id": "abc123",
              "model_name": "tiny"}  # fmt: skip
    pm_layer = viewer.add_image(
        saliency, name="saliency", **geometry,
        metadata={"saliency": record, "source_layer": scan.name},
    )  # fmt: skip

    for layer, kind in ((seg_layer, "SEG"), (pm_layer, "PM")):
        viewer.layers.selection.active = layer
        assert kind in w.send_target.text()
        assert w.send_results()
        _idle(qtbot, w)
        assert w.status.text() == f"Sent {kind}: 1 object(s) stored.", w.status.text()
    client = connect(stored.server())
    assert client.find_series(str(stored.study_uid), modality="SEG")

    _search(qtbot, w, patient_id=PHI_ID)
    assert len(w.rows) >= 3  # the MR series and its results
    w.select_rows(list(range(len(w.rows))))
    n_before = len(viewer.layers)
    assert w.retrieve()
    _idle(qtbot, w)
    got = w.last_retrieved
    assert len(got.folders) == len(w.rows)
    assert got.not_images  # the SEG at least (and the SR of another test)
    n_added = len(w.rows) - len(got.not_images)  # the MR series, the map
    assert len(viewer.layers) == n_before + n_added, w.status.text()
    assert w.status.text() == (
        f"Retrieved {len(w.rows)} series: {n_added} layer(s) added. "
        f"{len(got.not_images)} series hold no image (not loaded)."
    )


@pytest.mark.gui
def test_a_destroyed_panel_deletes_the_session_cache(
    make_napari_viewer, qtbot, user_dirs
):
    """The panel's ``destroyed`` path (napari deleting the dock) clears the
    session cache; a panel with a chosen ``cache_dir`` leaves it alone."""
    from napari_medcnn.pacs import series_dir
    from napari_medcnn.widgets.pacs import PacsWidget

    viewer = make_napari_viewer()
    mine = user_dirs / "mine"
    kept = PacsWidget(viewer, cache_dir=mine)
    series_dir(mine, "1.2", "3.4").mkdir(parents=True)
    kept.close()
    assert (mine / "1.2" / "3.4").is_dir()

    w = PacsWidget(viewer)
    folder = series_dir(None, "1.2", "3.4")
    folder.mkdir(parents=True)
    (folder / "a.dcm").write_bytes(b"x")
    w.deleteLater()
    qtbot.waitUntil(lambda: not folder.exists(), timeout=WAIT_MS)
    assert _on_disk(user_dirs) == []
