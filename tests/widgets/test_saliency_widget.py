"""The Saliency dock widget in a real napari window.

Opened through the manifest, as a user opens it from the Plugins menu.  The
first test runs the default method (LayerCAM) with the shipped default
model on the real MR sample slice; the others use tiny untrained checkpoints
(``test_classify_widget.make_checkpoint``).  Set
``NAPARI_MEDCNN_SCREENSHOTS`` to a folder to keep the screenshot (the
README's ``docs/saliency_mr.png``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import make_checkpoint

from napari_medcnn.models.checkpoint import default_model_path
from napari_medcnn.widgets.saliency.layers import overlay_name, reference_name

PLUGIN = "napari-medcnn"
WAIT_MS = 120_000
pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def errors(monkeypatch):
    import napari.utils.notifications as notifications

    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_error", lambda m: shown.append(str(m)))
    return shown


def _dock(viewer, qtbot, model=None):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Saliency")
    _wait(qtbot, widget)  # the default model may be loading
    if model is not None:
        assert widget.load_model(str(model))
        _wait(qtbot, widget)
        assert Path(widget.model.path).stem == Path(model).stem
    return widget


def _wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)


def _run(qtbot, widget):
    assert widget.run()
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    _wait(qtbot, widget)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def _same_geometry(overlay, source):
    assert overlay.data.shape == source.data.shape[: source.ndim]
    np.testing.assert_allclose(overlay.scale, source.scale)
    np.testing.assert_allclose(overlay.translate, source.translate)
    np.testing.assert_allclose(
        overlay.affine.affine_matrix, source.affine.affine_matrix
    )


def _screenshot(viewer, name):
    from qtpy.QtWidgets import QApplication

    viewer.window.resize(1500, 950)
    for _ in range(5):
        QApplication.processEvents()
        time.sleep(0.05)
    keep = os.environ.get("NAPARI_MEDCNN_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(Path(keep) / name), canvas_only=False, flash=False)


@pytest.mark.skipif(not default_model_path().exists(), reason="no default model")
def test_default_method_on_the_mr_sample_with_the_default_model(
    make_napari_viewer, qtbot, tmp_path
):
    from napari_medcnn.io import load

    viewer = make_napari_viewer()
    (src,) = viewer.open_sample(PLUGIN, "mr_slice")
    widget = _dock(viewer, qtbot)
    assert widget.model is not None and "gradcam" in widget.methods()
    assert widget.method_combo.currentData() == "gradcam"  # the default
    _run(qtbot, widget)
    (ov,) = widget.overlays
    assert ov.name == overlay_name(src.name, "gradcam")
    _same_geometry(ov, src)
    rec = ov.metadata["saliency"]
    assert rec["method"] == "gradcam" and min(rec["params"]["map_resolution"]) >= 16
    m = rec["metrics"]
    assert 0 <= m["deletion_auc"] <= 1 and 0 <= m["deletion_auc_random"] <= 1
    assert "correlation" in m["randomization"] and m["insertion_auc"] >= 0
    assert "deletion AUC" in widget.metrics_label.text()
    assert ov.blending == "translucent" and "inferno" in ov.colormap.name
    # the same run again updates the layer of that name
    n = len(viewer.layers)
    widget.metrics_check.setChecked(False)  # (only to save time)
    widget.set_target("tumor")
    _run(qtbot, widget)
    assert len(viewer.layers) == n and widget.overlays == [ov]
    assert ov.metadata["saliency"]["target_name"] == "tumor"
    widget.set_target(None)  # back to the predicted class
    _run(qtbot, widget)
    assert widget.overlays == [ov] and ov.data.max() > 0
    # display controls act on the layer
    widget.threshold_spin.setValue(60)
    widget.blending_combo.setCurrentText("additive")
    widget.colormap_combo.setCurrentText("turbo")
    widget.opacity_slider.setValue(35)
    assert ov.contrast_limits[0] > 0 and ov.blending == "additive"
    assert "turbo" in ov.colormap.name and ov.opacity == pytest.approx(0.35)
    assert ov.metadata["saliency"]["display"]["threshold_percentile"] == 60
    widget.blending_combo.setCurrentText("translucent")
    widget.colormap_combo.setCurrentText("inferno")
    widget.opacity_slider.setValue(55)
    widget.threshold_spin.setValue(30)
    widget.metrics_check.setChecked(True)
    _run(qtbot, widget)  # metrics shown for the screenshot
    _screenshot(viewer, "saliency_mr.png")
    # export: NIfTI aligned with the scan as the reader loads it
    out, side = widget.export(tmp_path / "map.nii.gz")
    back, scan = load(out)[0], load(src.metadata["source_paths"][0])[0]
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)
    np.testing.assert_allclose(back.data, ov.data, atol=1e-6)
    assert side.exists()


def test_volume_two_methods_side_by_side_and_current_slice(
    make_napari_viewer, qtbot, tiny, tmp_path, monkeypatch
):
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, (8, 40, 36)).astype(np.float32)
    vol[3:6, 10:22, 12:26] += 300
    viewer = make_napari_viewer()
    src = viewer.add_image(
        vol, name="vol", scale=(2.5, 0.8, 0.7), translate=(-10, 5, 3)
    )
    widget = _dock(viewer, qtbot, tiny)
    widget.set_scope("volume")
    widget.set_method("gradcam", compare="gradient_x_input")
    _run(qtbot, widget)
    overlays = widget.overlays
    assert [o.name for o in overlays] == [
        overlay_name("vol", "gradcam"),
        overlay_name("vol", "gradient_x_input"),
    ]
    for ov in overlays:
        _same_geometry(ov, src)
        assert ov.data[2].max() > 0 and ov.data[6].max() > 0  # every slice
        assert "deletion_auc" in ov.metadata["saliency"]["metrics"]
    text = widget.metrics_label.text()
    assert text.count("(lower is better)") == 2  # one deletion line a map
    # a map that fails its own check says so (here: ties with random)
    failed = [o for o in overlays if o.metadata["saliency"]["warnings"]]
    assert all("TRUST CHECK" in o.metadata["saliency"]["warnings"][0] for o in failed)
    # side by side: a second view of the scan, grid with two layers a view
    assert widget.side_check.isEnabled()
    viewer.layers.move(0, len(viewer.layers))  # the scan on top of its maps
    before = [lay.name for lay in viewer.layers]
    assert before[-1] == "vol"
    widget.side_check.setChecked(True)
    assert viewer.canvas.grid.enabled and viewer.canvas.grid.stride == 2
    names = [lay.name for lay in viewer.layers][:4]
    assert names == ["vol", overlays[0].name, reference_name("vol"), overlays[1].name]
    widget.side_check.setChecked(False)
    assert not viewer.canvas.grid.enabled and reference_name("vol") not in viewer.layers
    assert [lay.name for lay in viewer.layers] == before  # order restored
    # current slice only: updated by name, the other slices are 0
    n = len(viewer.layers)
    viewer.dims.set_point(0, -10 + 4 * 2.5)
    widget.set_scope("slice")
    widget.set_method("gradcam")
    _run(qtbot, widget)
    assert len(viewer.layers) == n
    ov = widget.overlays[0]
    assert ov.metadata["saliency"]["slice_index"] == 4
    assert ov.data[4].max() > 0 and not np.delete(ov.data, 4, 0).any()
    _export_never_replaces_unasked(widget, tmp_path, monkeypatch)


def _export_never_replaces_unasked(widget, tmp_path, monkeypatch):
    """Programmatic exports refuse existing files; through the dialog, the
    confirmed map may be replaced with its own sidecar, but a new map never
    replaces someone's ``<stem>.json`` (a classification export, say)."""
    import napari_medcnn.widgets.saliency.dialogs as ui

    ct_json = tmp_path / "ct.json"
    ct_json.write_text("[]")  # classify --json ct.json
    with pytest.raises(FileExistsError, match="ct.json already exists"):
        widget.export(tmp_path / "ct.npy")
    assert ct_json.read_text() == "[]" and not (tmp_path / "ct.npy").exists()

    class Dialog:
        answer = ("", "")

        @staticmethod
        def getSaveFileName(*_args, **_kwargs):  # noqa: N802 (Qt API)
            return Dialog.answer

    monkeypatch.setattr(ui, "QFileDialog", Dialog)
    Dialog.answer = (str(tmp_path / "ct.npy"), "NumPy (*.npy)")
    widget.export_button.click()  # confirmed ct.npy, not ct.json
    assert ct_json.read_text() == "[]" and not (tmp_path / "ct.npy").exists()
    assert "ct.json already exists" in widget.status.text()
    out, side = widget.export(tmp_path / "map.npy")
    side.write_text("{}")
    Dialog.answer = (str(out), "NumPy (*.npy)")
    widget.export_button.click()  # replacing an export: map and sidecar
    assert json.loads(side.read_text())["file"] == "map.npy"
    assert "Exported" in widget.status.text()


def test_cnn_rnn_slice_importance_and_cancel(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    import napari_medcnn.saliency as saliency

    seq = make_checkpoint(tmp_path / "seq", kind="sequence")
    viewer = make_napari_viewer()
    src = viewer.add_image(
        np.random.default_rng(1).random((6, 24, 24)), name="seq", scale=(3, 1, 1)
    )
    widget = _dock(viewer, qtbot, seq)
    assert widget.scope == "volume" and not widget.scope_buttons["slice"].isEnabled()
    widget.metrics_check.setChecked(False)
    widget.set_method("gradcam")
    _run(qtbot, widget)
    (ov,) = widget.overlays
    _same_geometry(ov, src)
    assert widget.importance.isVisibleTo(widget) and widget.importance.n_slices == 6
    assert len(ov.metadata["saliency"]["slice_importance"]) == 6
    widget.importance.slice_clicked.emit(4)
    assert viewer.dims.current_step[0] == 4

    def endless(*_args, **_kwargs):
        i = 0
        while True:
            i += 1
            time.sleep(0.01)
            yield ("explain", i % 50, 50)

    monkeypatch.setattr(saliency, "explain", endless)
    before = ov.metadata["saliency"]
    assert widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=WAIT_MS)
    widget.cancel_button.click()
    _wait(qtbot, widget)
    assert widget.status.text() == "Cancelled."
    assert widget.run_button.isEnabled() and widget.overlays == [ov]
    assert ov.metadata["saliency"] == before


def test_3d_cnn_gradcam_is_an_overlay_on_the_scan(make_napari_viewer, qtbot, tmp_path):
    """A 3D ResNet reads the volume resized to its 8 x 16 x 16 input; its
    Grad-CAM comes back as an overlay of the scan's shape, scale and
    translate."""
    import torch

    from napari_medcnn.models import build_model
    from napari_medcnn.models.card import ModelCard
    from napari_medcnn.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    kw = {
        "spatial_dims": 3, "in_channels": 1, "num_classes": 2,
        "block_inplanes": [4, 8, 8, 8], "conv1_t_stride": 1,
    }  # fmt: skip
    card = ModelCard(
        arch="resnet", arch_kwargs=kw, classes=["a", "b"], spatial_dims=3,
        in_channels=1, input_size=[8, 16, 16], input_kind="volume",
        preprocessing={"intensity": {"mode": "none"}, "foreground_crop": None,
                       "size": [8, 16, 16]},
    )  # fmt: skip
    path = save_checkpoint(build_model("resnet", **kw).eval(), card, tmp_path / "r3")
    viewer = make_napari_viewer()
    src = viewer.add_image(
        np.random.default_rng(2).random((10, 20, 24)).astype(np.float32),
        name="ct", scale=(2.5, 0.8, 0.8), translate=(-5, 3, 40),
    )  # fmt: skip
    widget = _dock(viewer, qtbot, path)
    assert widget.scope == "volume"
    widget.metrics_check.setChecked(False)
    widget.set_method("gradcam")
    _run(qtbot, widget)
    (ov,) = widget.overlays
    _same_geometry(ov, src)
    assert ov.data.shape == (10, 20, 24) and ov.data.max() == 1.0
    assert ov.metadata["saliency"]["scope"] == "volume"
    assert not widget.importance.isVisibleTo(widget)  # no slices to weigh


def test_bad_input_is_refused_with_a_reason(make_napari_viewer, qtbot, tiny, errors):
    import torch

    from napari_medcnn.models.card import ModelCard
    from napari_medcnn.models.checkpoint import LoadedModel

    viewer = make_napari_viewer()
    a = viewer.add_image(np.random.default_rng(0).random((32, 32)), name="a")
    b = viewer.add_image(np.random.default_rng(1).random((32, 32)), name="b")
    widget = _dock(viewer, qtbot, tiny)
    with pytest.raises(ValueError, match="valid"):
        widget.set_target("oedema")
    widget.set_channels([a, b])  # the tiny model takes one channel
    assert not widget.run()
    assert "channel" in errors[-1] and widget.worker is None
    # a model without convolution: gradient methods only, and why
    card = ModelCard(
        arch="custom", arch_kwargs={}, classes=["x", "y"], spatial_dims=2,
        in_channels=1, input_size=[32, 32], input_kind="slice",
        preprocessing={"intensity": {"mode": "none"}, "foreground_crop": None,
                       "size": [32, 32]},
    )  # fmt: skip
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 2))
    widget.set_model(LoadedModel(mlp.eval(), card, torch.device("cpu"), ""))
    assert "gradcam" not in widget.methods() and "smoothgrad" in widget.methods()
    assert "no convolutional layer" in widget.method_note.text()
    with pytest.raises(ValueError, match="not offered"):
        widget.set_method("gradcam")
    widget.set_channels([a])
    widget.set_method("gradient_x_input")
    widget.metrics_check.setChecked(False)
    _run(qtbot, widget)
    (ov,) = widget.overlays
    _same_geometry(ov, a)
    # a layer removed while it is explained does not crash the panel
    viewer.layers.remove(ov)
    assert widget.overlays == [] and not widget.side_check.isEnabled()
