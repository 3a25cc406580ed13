"""DICOM export from the dock widgets in a real napari window: the Classify
widget's "Export DICOM SR…", the Saliency widget's ``.dcm`` map export and
the Labels writer that finds its scan among the open layers."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from _helpers import make_checkpoint

PLUGIN = "napari-medcnn"
WAIT_MS = 120_000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from napari_medcnn.io.synth import write_series

    root = tmp_path_factory.mktemp("widget_export")
    vol = np.random.default_rng(2).integers(0, 700, (4, 24, 20)).astype(np.float64)
    write_series(vol, root / "ct", spacing=(2.0, 0.9, 0.9), modality="CT")
    return {"series": root / "ct", "model": make_checkpoint(root / "tiny")}


def _dock(viewer, qtbot, name, model):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.load_model(str(model))
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    return widget


@pytest.mark.gui
def test_widgets_export_dicom(make_napari_viewer, qtbot, data, tmp_path):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(data["series"]), plugin=PLUGIN)
    sources = sorted(data["series"].glob("*.dcm"))
    series_uid = pydicom.dcmread(sources[0]).SeriesInstanceUID

    classify = _dock(viewer, qtbot, "Classify", data["model"])
    assert not classify.sr_button.isEnabled()  # nothing classified yet
    classify.set_scope("slices")
    assert classify.run()
    qtbot.waitUntil(lambda: classify.worker is None, timeout=WAIT_MS)
    assert classify.sr_button.isEnabled()
    out = classify.export_sr(tmp_path)
    sr = hd.sr.srread(out)
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert ev.SeriesInstanceUID == series_uid
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1 + 2 + 4  # classification, classes, slices

    saliency = _dock(viewer, qtbot, "Saliency", data["model"])
    saliency.metrics_check.setChecked(False)
    assert saliency.run()
    qtbot.waitUntil(lambda: saliency.worker is None, timeout=WAIT_MS)
    pm_path, side = saliency.export(tmp_path / "map.dcm")
    pm = hd.pm.ParametricMap.from_file(pm_path)
    assert pm.NumberOfFrames == 4 and Path(side).exists()
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid

    from napari_medcnn.widgets.writers import write_labels

    labels = np.zeros(layer.data.shape, np.uint8)
    labels[1, 5:10, 5:10] = 1
    viewer.add_labels(labels, name="drawn")  # no metadata: found by its grid
    (seg_path,) = write_labels(str(tmp_path / "seg.dcm"), labels, {"name": "drawn"})
    seg = hd.seg.segread(seg_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid


@pytest.mark.gui
def test_labelling_widget_exports_seg(make_napari_viewer, qtbot, data, tmp_path):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(data["series"]), plugin=PLUGIN)
    series_uid = pydicom.dcmread(next(data["series"].glob("*.dcm"))).SeriesInstanceUID
    paint = np.zeros(layer.data.shape, np.int32)
    paint[:, 2:20, 2:9] = 1
    paint[:, 2:20, 11:18] = 2
    viewer.add_labels(paint, name="painted", scale=layer.scale,
                      translate=layer.translate)  # fmt: skip
    _dock_widget, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Label images")
    panel.set_layer(layer)
    panel.set_classes(["left", "right"])
    seg = hd.seg.segread(panel.export_seg(tmp_path / "labels.dcm"))
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 2
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["left", "right"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid
    panel.patch_spin.setValue(16.0)  # 18 pixels
    panel.region_epochs.setValue(1)
    assert panel.train_regions()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=WAIT_MS)
    assert panel.probability_map is not None, panel.status.text()
    seg = hd.seg.segread(panel.export_seg(tmp_path / "map.dcm"))
    assert seg.SegmentationType == "FRACTIONAL" and seg.number_of_segments == 2
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
