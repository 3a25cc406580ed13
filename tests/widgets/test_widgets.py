"""The plugin's dock widgets and sample data in a real napari window.

Every widget is opened through the manifest
(``viewer.window.add_plugin_dock_widget("napari-medcnn", ...)``), as a user
opens it from the Plugins menu.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from _helpers import PATIENT_NAMES

from napari_medcnn.io.windows import CT_PRESETS, limits_to_window, window_to_limits

PLUGIN = "napari-medcnn"
WAIT_MS = 60_000


def _dock(viewer, name):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    return widget


def _ct_layer(viewer, window=(40.0, 400.0)):
    data = np.linspace(-1000, 1500, 32 * 32, dtype=np.float32).reshape(32, 32)
    md = {"modality": "CT", "window": {"center": window[0], "width": window[1]}}
    return viewer.add_image(data, name="ct", metadata=md)


# -- window / level -----------------------------------------------------------
def test_window_presets_and_limits():
    """Core (no Qt): radiology values, and limits <-> window round trip."""
    assert CT_PRESETS["brain"] == (40, 80)
    assert CT_PRESETS["lung"] == (-600, 1500)
    assert CT_PRESETS["bone"] == (400, 1800)
    assert set(CT_PRESETS) == {
        "brain",
        "subdural",
        "stroke",
        "lung",
        "mediastinum",
        "abdomen",
        "liver",
        "bone",
    }
    for center, width in CT_PRESETS.values():
        lo, hi = window_to_limits(center, width)
        assert hi - lo == pytest.approx(width)
        assert limits_to_window(lo, hi) == pytest.approx((center, width))
    with pytest.raises(ValueError):
        window_to_limits(0, 0)
    with pytest.raises(ValueError):
        limits_to_window(5, 5)
    with pytest.raises(TypeError):
        CT_PRESETS["brain"] = (0, 1)  # read-only for every caller


def test_window_options_by_modality():
    from types import SimpleNamespace

    from napari_medcnn.widgets.window_level import window_options

    ct = SimpleNamespace(
        metadata={"modality": "CT", "window": {"center": 40, "width": 400}}
    )
    mr = SimpleNamespace(metadata={"modality": "MR", "window": [300, 600]})
    bare = SimpleNamespace(metadata={})
    assert list(window_options(ct)) == [*CT_PRESETS, "File window", "Free"]
    assert window_options(mr) == {"File window": (300.0, 600.0), "Free": None}
    assert window_options(bare) == {"Free": None}
    assert window_options(None) == {"Free": None}


@pytest.mark.gui
def test_window_level_presets_for_ct(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = _ct_layer(viewer)
    wl = _dock(viewer, "Window / level")
    assert wl.layer is layer
    for name in (*CT_PRESETS, "File window", "Free"):
        assert name in wl._preset.choices
    wl.set_preset("lung")
    assert layer.contrast_limits == pytest.approx([-1350.0, 150.0])
    wl.set_preset("bone")
    assert layer.contrast_limits == pytest.approx(window_to_limits(400, 1800))
    wl.set_preset("File window")
    assert layer.contrast_limits == pytest.approx([-160.0, 240.0])


@pytest.mark.gui
def test_window_level_free_and_sync(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = _ct_layer(viewer)
    wl = _dock(viewer, "Window / level")
    wl._center.value = 100.0
    wl._width.value = 50.0
    assert layer.contrast_limits == pytest.approx([75.0, 125.0])
    assert wl._preset.value == "Free"
    # a change made elsewhere (layer controls) shows up in the panel
    layer.contrast_limits = (-600 - 750, -600 + 750)
    assert wl._center.value == pytest.approx(-600.0)
    assert wl._width.value == pytest.approx(1500.0)
    assert wl._preset.value == "lung"


@pytest.mark.gui
def test_window_level_follows_selected_layer(make_napari_viewer):
    viewer = make_napari_viewer()
    ct = _ct_layer(viewer)
    wl = _dock(viewer, "Window / level")
    mr = viewer.add_image(
        np.arange(64, dtype=np.float32).reshape(8, 8),
        name="mr",
        metadata={"modality": "MR"},
    )
    viewer.layers.selection.active = mr
    assert wl.layer is mr
    assert wl._preset.choices == ("Free",)  # no CT presets, no file window
    wl._center.value, wl._width.value = 10.0, 4.0
    assert mr.contrast_limits == pytest.approx([8.0, 12.0])
    viewer.layers.selection.active = ct
    assert wl.layer is ct
    assert "lung" in wl._preset.choices
    viewer.layers.remove(ct)
    assert wl.layer is mr


# -- series browser -------------------------------------------------------------
def _wait_idle(qtbot, browser):
    qtbot.waitUntil(lambda: browser.worker is None, timeout=WAIT_MS)


def _table_text(browser):
    t = browser.table
    return [
        [t.item(r, c).text() for c in range(t.columnCount())]
        for r in range(t.rowCount())
    ]


@pytest.mark.gui
def test_series_browser_scan_mask_and_load(
    make_napari_viewer, qtbot, two_series_folder, caplog
):
    caplog.set_level("DEBUG")
    viewer = make_napari_viewer()
    browser = _dock(viewer, "DICOM series browser")
    browser.set_folder(str(two_series_folder.root))
    browser.scan()
    assert not browser.scan_button.isEnabled()  # disabled while running
    _wait_idle(qtbot, browser)
    assert browser.scan_button.isEnabled()

    rows = _table_text(browser)
    assert len(rows) == 2
    flat = " ".join(" ".join(r) for r in rows)
    for name in PATIENT_NAMES:
        for part in name.split("^"):
            assert part not in flat  # masked by default
    keys = {s.patient_key for s in browser.series}
    assert len(keys) == 2
    assert all(any(k in r[0] for k in keys) for r in rows)
    modalities = sorted(r[3] for r in rows)
    assert modalities == ["CT", "MR"]

    browser.show_names.setChecked(True)
    flat = " ".join(" ".join(r) for r in _table_text(browser))
    assert "Doe" in flat and "Roe" in flat
    browser.show_names.setChecked(False)

    ct_row = next(i for i, r in enumerate(rows) if r[3] == "CT")
    ct_info = browser.series[ct_row]
    assert ct_info.n_files == 6
    assert rows[ct_row][5] == "6"  # number of images
    browser.select_rows([ct_row])
    assert browser.load_button.isEnabled()
    browser.load_selected()
    _wait_idle(qtbot, browser)
    assert len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.data.shape == two_series_folder.ct_volume.shape
    np.testing.assert_allclose(layer.scale, two_series_folder.ct_spacing, rtol=1e-6)
    # axial series, identity orientation: translate is the origin in (z, y, x)
    ox, oy, oz = two_series_folder.ct_origin
    np.testing.assert_allclose(layer.translate, (oz, oy, ox), atol=1e-6)
    assert layer.metadata["modality"] == "CT"
    np.testing.assert_allclose(layer.data, two_series_folder.ct_volume, atol=0.5)
    md_text = repr(layer.metadata)
    assert "Doe" not in md_text and "PID-CT" not in md_text  # no PHI by default
    # no PHI (names, IDs, paths) in any log line
    for phi in ("Doe", "Roe", "PID-", str(two_series_folder.root)):
        assert phi not in caplog.text


@pytest.mark.gui
def test_series_browser_shows_quality_warnings(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    import napari.utils.notifications as notifications

    from napari_medcnn.io.synth import write_series

    vol = np.zeros((6, 8, 8))
    write_series(vol, tmp_path / "gap", modality="CT", skip=(3,), seed="gap")
    warned = []
    monkeypatch.setattr(notifications, "show_warning", warned.append)
    viewer = make_napari_viewer()
    browser = _dock(viewer, "DICOM series browser")
    browser.set_folder(str(tmp_path))
    browser.scan()
    _wait_idle(qtbot, browser)
    browser.select_rows([0])
    browser.load_selected()
    _wait_idle(qtbot, browser)
    assert len(viewer.layers) == 1
    assert not viewer.layers[0].metadata["quality"]["ok"]
    assert len(warned) == 1 and viewer.layers[0].name in warned[0]


@pytest.mark.gui
def test_series_browser_non_image_series_not_loadable(
    make_napari_viewer, qtbot, two_series_folder
):
    import shutil

    from pydicom.data import get_testdata_file

    sr = get_testdata_file("test-SR.dcm", download=False)
    (two_series_folder.root / "sr").mkdir()
    shutil.copy(sr, two_series_folder.root / "sr" / "report.dcm")
    viewer = make_napari_viewer()
    browser = _dock(viewer, "DICOM series browser")
    browser.set_folder(str(two_series_folder.root))
    browser.scan()
    _wait_idle(qtbot, browser)
    kinds = [s.kind for s in browser.series]
    assert kinds.count("image") == 2 and "non-image" in kinds
    r = kinds.index("non-image")
    from qtpy.QtCore import Qt

    assert not browser.table.item(r, 0).flags() & Qt.ItemFlag.ItemIsEnabled
    browser.select_rows([r])
    assert browser.selected_series() == []
    assert not browser.load_button.isEnabled()


@pytest.mark.gui
def test_series_browser_cancel(make_napari_viewer, qtbot, monkeypatch):
    import napari_medcnn.io.dicom.find as series

    def endless(path, *, workers=None):
        i = 0
        while True:
            i += 1
            time.sleep(0.01)
            yield ("scan", i, 10**6)

    monkeypatch.setattr(series, "iter_scan_folder", endless)
    viewer = make_napari_viewer()
    browser = _dock(viewer, "DICOM series browser")
    browser.set_folder("/nonexistent")
    browser.scan()
    qtbot.waitUntil(lambda: browser.progress.value() > 0, timeout=WAIT_MS)
    assert browser.cancel_button.isEnabled()
    browser.cancel_button.click()
    _wait_idle(qtbot, browser)
    assert browser.status.text() == "Cancelled."
    assert browser.scan_button.isEnabled() and not browser.cancel_button.isEnabled()


@pytest.mark.gui
def test_series_browser_error_is_notified(make_napari_viewer, qtbot, monkeypatch):
    import napari.utils.notifications as notifications

    import napari_medcnn.io.dicom.find as series

    def broken(path, *, workers=None):
        yield ("scan", 0, 1)
        raise RuntimeError("disk on fire")

    shown = []
    monkeypatch.setattr(series, "iter_scan_folder", broken)
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    browser = _dock(viewer, "DICOM series browser")
    browser.set_folder("/anywhere")
    browser.scan()
    _wait_idle(qtbot, browser)
    assert any("disk on fire" in str(m) for m in shown)
    assert browser.scan_button.isEnabled()
    assert browser.table.rowCount() == 0


# -- sample data ----------------------------------------------------------------
@pytest.mark.gui
@pytest.mark.parametrize(
    ("key", "ndim", "modality"),
    [("ct_slice", 2, "CT"), ("mr_slice", 2, "MR"), ("mr_volume", 3, "MR")],
)
@pytest.mark.gui
def test_sample_data(make_napari_viewer, key, ndim, modality):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, key)
    assert len(layers) == 1
    layer = layers[0]
    assert layer.ndim == ndim
    assert layer.metadata["modality"] == modality
    assert all(s > 0 for s in layer.scale)
    lo, hi = layer.contrast_limits
    assert hi > lo
    assert float(np.std(layer.data)) > 0  # a real image, not a blank
