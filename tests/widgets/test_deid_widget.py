"""The De-identify dock widget in a real napari window (run under xvfb-run):
opened through the manifest, a loaded series is previewed, exported in a
worker, re-read and shown; blanking from a Shapes layer; Cancel; errors."""

from __future__ import annotations

import time

import numpy as np
import pydicom
import pytest
from _helpers import PHI, grep_phi, phi_series

from napari_medcnn.io import load

PLUGIN = "napari-medcnn"
WAIT_MS = 60_000
pytestmark = pytest.mark.gui


def _dock(viewer):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "De-identify")
    return widget


def _idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)


def _add_series(viewer, folder):
    (scan,) = load(folder, include_phi=False)
    data, kwargs, _ = scan.to_layer_data()
    return viewer.add_image(data, **kwargs), scan


def test_deidentify_loaded_series_and_show_it(
    make_napari_viewer, qtbot, tmp_path, caplog
):
    caplog.set_level("DEBUG")
    src = tmp_path / "DOE_JANE" / "ct"
    phi_series(src)
    viewer = make_napari_viewer()
    layer, scan = _add_series(viewer, src)
    w = _dock(viewer)
    w.set_source_layer(layer)
    assert len(w.inputs()) == 5
    w.preview()
    assert not w.export_button.isEnabled()  # disabled while running
    _idle(qtbot, w)
    text = w.summary.toPlainText()
    assert "(0010,0010)" in text and "Patient's Name" in text
    assert "5 file(s)" in text
    assert not (tmp_path / "out").exists()  # a preview writes nothing
    w.set_output(str(tmp_path / "out"))
    w.export()
    _idle(qtbot, w)
    assert w.export_button.isEnabled() and not w.cancel_button.isEnabled()
    assert "Exported 5 file(s); re-read 1 series" in w.status.text()
    (shown,) = w.added_layers
    assert shown.name.endswith("(de-identified)") and shown in viewer.layers
    np.testing.assert_array_equal(shown.data, layer.data)
    np.testing.assert_allclose(shown.scale, layer.scale)
    np.testing.assert_allclose(shown.translate, layer.translate)
    assert all(str(tmp_path / "out") in p for p in shown.metadata["source_paths"])
    assert grep_phi(tmp_path / "out") == []
    # the source layer's own name comes from the reader; what this panel
    # writes, shows and logs must be clean
    ours = [
        r.getMessage() for r in caplog.records if r.name.startswith("napari_medcnn")
    ]
    everything = "\n".join(
        [*ours, w.status.text(), w.summary.toPlainText(), shown.name]
    )
    for phi in (*PHI, "Doe", "DOE_JANE"):
        assert phi not in everything
    # a second export into the same (now full) folder is refused: it would
    # add a second copy; nothing is added and the error names the folder
    before = sorted((tmp_path / "out").rglob("*"))
    w.export()
    _idle(qtbot, w)
    assert "not empty" in w.status.text() and str(tmp_path / "out") in w.status.text()
    assert sorted((tmp_path / "out").rglob("*")) == before
    # into a new folder: the layer is replaced instead of piling up duplicates
    w.set_output(str(tmp_path / "out2"))
    w.export()
    _idle(qtbot, w)
    assert "Exported 5 file(s)" in w.status.text()
    assert sum(lay.name == shown.name for lay in viewer.layers) == 1


def test_blank_rectangle_drawn_in_a_shapes_layer(make_napari_viewer, qtbot, tmp_path):
    src = tmp_path / "in"
    phi_series(src, n=3)
    viewer = make_napari_viewer()
    layer, scan = _add_series(viewer, src)
    # a rectangle over rows 2..5 and columns 3..7 of slice 1, in world mm
    z, y, x = (np.array(layer.translate) + np.array(layer.scale) * [1, 2, 3]).tolist()
    dy, dx = 3 * layer.scale[1], 4 * layer.scale[2]
    rect = np.array([[z, y, x], [z, y, x + dx], [z, y + dy, x + dx], [z, y + dy, x]])
    shapes = viewer.add_shapes([rect], shape_type="rectangle", name="text box")
    w = _dock(viewer)
    w.set_source_layer(layer)
    w.set_blank_layer(shapes)
    assert w.options().blank_rectangles == ((3, 2, 4, 3),)
    w.set_output(str(tmp_path / "out"))
    w.export()
    _idle(qtbot, w)
    (shown,) = w.added_layers
    lo = scan.data.min(axis=(1, 2))
    for k in range(3):  # every slice, not only the one drawn on
        assert (shown.data[k, 2:5, 3:7] == lo[k]).all()
    mask = np.ones(scan.data.shape, bool)
    mask[:, 2:5, 3:7] = False
    np.testing.assert_array_equal(shown.data[mask], scan.data[mask])
    ds = pydicom.dcmread(w.result.outputs[0])
    assert "113101" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]


def test_folder_source_and_options(make_napari_viewer, qtbot, tmp_path):
    from napari_medcnn.deid.run import DeidOptions

    phi_series(tmp_path / "in")
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    viewer = make_napari_viewer()
    w = _dock(viewer)
    w.set_folder(str(tmp_path / "in"))
    w.set_options(DeidOptions(retain_dates_shifted=True, clean_descriptors=True))
    opts = w.options()
    assert opts.retain_dates_shifted and opts.clean_descriptors
    assert opts.retain_safe_private and not opts.retain_patient_characteristics
    w.set_output(str(tmp_path / "out"))
    w.export()
    _idle(qtbot, w)
    assert "1 skipped (not DICOM)" in w.status.text()
    ds = pydicom.dcmread(w.result.outputs[0])
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert ds.SeriesDescription == "CT for"  # cleaned: the name is gone


def test_cancel(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import napari_medcnn.deid.run as deid

    def endless(inputs, out_dir, **kwargs):
        i = 0
        while True:
            i += 1
            time.sleep(0.01)
            yield ("deidentify", i, 10**6)

    monkeypatch.setattr(deid, "iter_deidentify", endless)
    viewer = make_napari_viewer()
    w = _dock(viewer)
    w.set_folder(str(tmp_path))
    w.set_output(str(tmp_path / "out"))
    w.export()
    qtbot.waitUntil(lambda: w.progress.value() > 0, timeout=WAIT_MS)
    assert w.cancel_button.isEnabled()
    w.cancel_button.click()
    _idle(qtbot, w)
    assert w.status.text().startswith("Cancelled")
    assert w.export_button.isEnabled() and not w.cancel_button.isEnabled()


def test_read_only_output_is_notified(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import errno

    import napari.utils.notifications as notifications

    from napari_medcnn.deid import write as deid_write

    def refuse(folder):
        raise OSError(errno.EROFS, "Read-only file system")

    shown = []
    monkeypatch.setattr(deid_write, "_open_probe", refuse)
    monkeypatch.setattr(notifications, "show_error", shown.append)
    phi_series(tmp_path / "in", n=2)
    viewer = make_napari_viewer()
    w = _dock(viewer)
    w.set_folder(str(tmp_path / "in"))
    w.set_output(str(tmp_path / "out"))
    w.export()
    _idle(qtbot, w)
    assert any("Read-only file system" in str(m) for m in shown)
    assert len(viewer.layers) == 0 and w.export_button.isEnabled()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
