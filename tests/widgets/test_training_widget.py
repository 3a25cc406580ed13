"""The Fine-tune widget in a real napari window, opened through the manifest.

A synthetic NIfTI volume (bright square on half of its slices) is labelled
with the keys 1 and 2 in the "Label images" widget, then fine-tuned from a
tiny checkpoint: progress events, pause, cancel (the parent stays, the best
weights so far are kept), continue from them and finish; the new model is
loaded by the Classify widget and classifies.  A subprocess run stopped by
closing the panel leaves the labels and the parent untouched.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from _helpers import make_checkpoint

pytestmark = pytest.mark.gui

PLUGIN = "napari-medcnn"
WAIT_MS = 90_000
N_SLICES = 24


def write_volume(path: Path) -> Path:
    """24 slices of 32x32 noise; slices 12-23 hold a bright square (lesion)."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    vol = rng.normal(100.0, 20.0, (N_SLICES, 32, 32)).astype(np.float32)
    vol[N_SLICES // 2 :, 8:24, 8:24] += 300.0
    affine = np.diag([0.9, 0.9, 2.0, 1.0])
    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), affine), str(path))
    return path


def press(viewer, qtbot, key: str) -> None:
    """A real key press on napari's Qt viewer, which hands it to the
    viewer's key bindings (the test reaches it through the private
    ``_qt_viewer``: there is no public handle; plugin code never does)."""
    from qtpy.QtCore import Qt

    qtbot.keyClick(viewer.window._qt_viewer, getattr(Qt.Key, f"Key_{key}"))


def go_to_slice(viewer, layer, index: int) -> None:
    viewer.dims.set_point(0, layer.data_to_world([index, 0, 0])[0])


def open_for_labelling(viewer, path: Path) -> tuple:
    """Write the volume to ``path``, open it and dock "Label images" with
    the classes normal and lesion; returns (layer, panel)."""
    layer = viewer.open(write_volume(path), plugin=PLUGIN)[0]
    _dock, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Label images")
    panel.set_classes(["normal", "lesion"])
    return layer, panel


def label_with_keys(viewer, qtbot, tmp_path) -> tuple:
    """Open the volume, dock "Label images", label every slice with keys."""
    path = tmp_path / "scan.nii.gz"
    layer, panel = open_for_labelling(viewer, path)
    viewer.layers.selection.active = layer
    for i in range(N_SLICES):
        go_to_slice(viewer, layer, i)
        press(viewer, qtbot, "1" if i < N_SLICES // 2 else "2")
    assert panel.store.counts() == {"normal": 12, "lesion": 12}
    return path, layer, panel


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("parent") / "tiny")


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)


def test_label_train_pause_cancel_continue_and_classify(
    make_napari_viewer, qtbot, tmp_path, parent
):
    viewer = make_napari_viewer()
    _path, layer, _labels = label_with_keys(viewer, qtbot, tmp_path)
    _d, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
    _wait_idle(qtbot, classify)
    assert classify.load_model(str(parent))
    _wait_idle(qtbot, classify)
    _d, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    assert "24 labels" in train.labels_info.text()
    out = tmp_path / "models" / "tuned.safetensors"
    train.set_parent("file", str(parent))
    train.set_output(out)
    train.set_split("holdout")
    train.epochs_spin.setValue(6)
    train.batch_spin.setValue(8)
    parent_hash = sha(parent)

    # start, see progress, pause (paused events keep coming), cancel
    assert train.start()
    assert not train.start_button.isEnabled() and train.cancel_button.isEnabled()
    run = train.run_handle
    qtbot.waitUntil(lambda: len(train.history) >= 1, timeout=WAIT_MS)
    assert run.events > 1 and train.progress.maximum() > 1
    assert run.pbar is not None and run.pbar.total > 0
    train.toggle_pause()
    qtbot.waitUntil(lambda: "Paused" in train.status.text(), timeout=WAIT_MS)
    seen = run.events
    qtbot.waitUntil(lambda: run.events > seen + 2, timeout=WAIT_MS)  # responsive
    train.cancel()
    _wait_idle(qtbot, train)
    assert train.summary["cancelled"] and run.pbar is None  # bar closed
    assert not out.exists() and sha(parent) == parent_hash
    assert train.kept is not None and train.continue_button.isEnabled()
    best = train.save_best(tmp_path / "best.safetensors")
    assert best.exists() and best.with_suffix(".json").exists()
    saved = best.read_bytes()
    with pytest.raises(FileExistsError, match="best.safetensors already exists"):
        train.save_best(best)  # not asked to replace it
    assert train.save_best(best, overwrite=True) == best
    assert best.read_bytes() == saved  # the same weights, replaced on request

    # continue from the kept weights and finish
    assert train.continue_training()
    _wait_idle(qtbot, train)
    summary = train.summary
    assert not summary["cancelled"], train.status.text()
    assert train.checkpoint == out and out.exists()
    assert summary["classes"] == ["normal", "lesion"]
    assert summary["advice"]["verdict"] in (
        "still improving",
        "plateaued",
        "overfitting",
    )
    assert not train.matrix.isHidden() and train.matrix.matrix.sum() > 0
    assert "prec." in train.metrics_label.text()
    assert sha(parent) == parent_hash

    # the Classify widget got the new model and classifies with it
    qtbot.waitUntil(
        lambda: (
            classify.model is not None
            and Path(classify.model.path).resolve() == out.resolve()
            # the load worker returns the model before it finishes
            and classify.worker is None
        ),
        timeout=WAIT_MS,
    )
    viewer.layers.selection.active = layer
    go_to_slice(viewer, layer, 20)
    classify.set_channels([layer])
    assert classify.run()
    _wait_idle(qtbot, classify)
    assert classify.record["label"] in ("normal", "lesion")
    assert classify.record["classes"] == ["normal", "lesion"]


def test_errors_are_clear(make_napari_viewer, qtbot, tmp_path, parent, monkeypatch):
    errors = []
    monkeypatch.setattr(
        "napari.utils.notifications.show_error", lambda m: errors.append(str(m))
    )
    viewer = make_napari_viewer()
    layer, labels = open_for_labelling(viewer, tmp_path / "few.nii.gz")
    labels.set_target("range")
    labels.set_range(0, 2)
    assert labels.label("normal")
    _d, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    train.set_parent("file", str(parent))
    train.set_output(tmp_path / "x.safetensors")
    assert not train.start()
    assert "at least 2 classes with at least 5" in errors[-1]
    labels.set_range(3, 5)
    assert labels.label("normal")
    labels.set_range(6, 23)
    assert labels.label("lesion")
    train.set_output(parent)
    assert not train.start() and "parent" in errors[-1]
    # an existing checkpoint (here only its card) is refused before training
    # unless the user agreed to replace it
    card = tmp_path / "someone.json"
    card.write_text("{}")
    train.set_output(tmp_path / "someone.safetensors")
    assert not train.start()
    assert "someone.json already exists" in errors[-1] and card.read_text() == "{}"
    assert layer.metadata["medcnn_labels"]["slices"] == [
        [0, 5, "normal"],
        [6, 23, "lesion"],
    ]


def test_subprocess_run_stops_cleanly_when_the_panel_closes(
    make_napari_viewer, qtbot, tmp_path, parent
):
    viewer = make_napari_viewer()
    path = write_volume(tmp_path / "scan.nii.gz")
    layer = viewer.open(path, plugin=PLUGIN)[0]
    _d, labels = viewer.window.add_plugin_dock_widget(PLUGIN, "Label images")
    labels.set_classes(["normal", "lesion"])
    labels.set_target("range")
    labels.set_range(0, 11)
    labels.label(1)
    labels.set_range(12, 23)
    labels.label(2)
    sidecar = Path(str(path) + ".medcnn-labels.json")
    labels_hash, parent_hash = sha(sidecar), sha(parent)
    viewer.window.remove_dock_widget(_d)  # the sidecar is what Fine-tune reads
    layer.metadata = {k: v for k, v in layer.metadata.items() if k != "medcnn_labels"}
    dock, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    assert "24 labels" in train.labels_info.text()
    train.set_parent("file", str(parent))
    out = tmp_path / "never.safetensors"
    train.set_output(out)
    train.set_split("holdout")
    train.set_mode("subprocess")
    train.epochs_spin.setValue(200)
    assert train.start()
    run = train.run_handle
    qtbot.waitUntil(lambda: run.events >= 1, timeout=WAIT_MS)  # the child trains
    viewer.window.remove_dock_widget(dock)  # closing the panel mid-training
    qtbot.waitUntil(lambda: run.done, timeout=WAIT_MS)
    assert run.control.cancelled and run.pbar is None
    qtbot.waitUntil(lambda: not multiprocessing.active_children(), timeout=WAIT_MS)
    assert not out.exists()
    assert sha(sidecar) == labels_hash and sha(parent) == parent_hash


def test_out_of_memory_stops_with_advice_and_frees_the_progress_bar(
    make_napari_viewer, qtbot, tmp_path, parent, monkeypatch
):
    from napari_medcnn.training import finetune as core
    from napari_medcnn.training.trainer import (
        TrainConfig,
        TrainEvent,
        TrainingOutOfMemory,
        oom_advice,
    )

    def out_of_memory(data, parent=None, **kwargs):
        yield TrainEvent("batch", 1, 2, 1, 3, {"loss": 0.7, "eta_s": 1.0})
        raise TrainingOutOfMemory(oom_advice(TrainConfig(batch_size=8)))

    monkeypatch.setattr(core, "finetune", out_of_memory)
    errors = []
    monkeypatch.setattr(
        "napari.utils.notifications.show_error", lambda m: errors.append(str(m))
    )
    viewer = make_napari_viewer()
    label_with_keys(viewer, qtbot, tmp_path)
    _d, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    train.set_parent("file", str(parent))
    train.set_output(tmp_path / "oom.safetensors")
    train.set_split("holdout")
    train.set_mode("thread")  # the injected core error lives in this process
    assert train.start()
    run = train.run_handle
    _wait_idle(qtbot, train)
    assert run.done and run.pbar is None and run.events == 1
    assert "Out of memory" in errors[-1] and "lower the batch size" in errors[-1]
    assert train.start_button.isEnabled() and not train.cancel_button.isEnabled()
    assert not (tmp_path / "oom.safetensors").exists()


def _open_and_label(viewer, panel, vol: np.ndarray, path: Path, i: int):
    """Save ``vol`` as NIfTI, open it and label it as a whole volume in
    Label images: "lesion" for odd ``i``, else "normal"."""
    import nibabel as nib

    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), np.eye(4)), str(path))
    layer = viewer.open(path, plugin=PLUGIN)[0]
    panel.set_layer(layer)
    panel.set_classes(["normal", "lesion"])
    panel.set_target("whole")
    assert panel.label("lesion" if i % 2 else "normal")
    return layer


def _short_volume_run(train, parent, out: Path, slices: int) -> Path:
    """Fine-tune settings of a short volume run: ``slices`` slices, the
    parent from a file, a hold-out split, 2 epochs of batches of 2."""
    train.model_box.slices_spin.setValue(slices)
    train.set_parent("file", str(parent))
    train.set_output(out)
    train.set_split("holdout")
    train.epochs_spin.setValue(2)
    train.batch_spin.setValue(2)
    return out


def test_volume_labels_train_a_cnn_rnn(make_napari_viewer, qtbot, tmp_path, parent):
    """Whole-volume labels show the architecture choice; CNN+RNN trains
    (its encoder from the 2D parent) and the Classify widget reads volumes
    with it."""

    viewer = make_napari_viewer()
    _d, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Label images")
    rng = np.random.default_rng(1)
    layers = []
    for i in range(10):
        vol = rng.normal(100.0, 20.0, (12, 32, 32)).astype(np.float32)
        if i % 2:
            z = int(rng.integers(2, 9))
            vol[z : z + 3, 10:20, 10:20] += 300.0
        layers.append(
            _open_and_label(viewer, panel, vol, tmp_path / f"vol{i}.nii.gz", i)
        )
    _d, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    train.refresh_labels()
    assert not train.model_box.arch_combo.isHidden()
    assert train.model_box.volume_arch() == "cnn_rnn"  # the default choice
    out = _short_volume_run(train, parent, tmp_path / "vol_model.safetensors", 6)
    assert train.start()
    _wait_idle(qtbot, train)
    assert not train.summary["cancelled"], train.status.text()
    assert len(train.history) >= 1 and out.exists()
    import json

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["input_kind"] == "sequence" and card["input_size"][0] == 6
    assert card["provenance"]["start"]["start"] == "encoder"
    # the Preview shows slices of an augmented volume
    assert train.preview_augmentation()
    qtbot.waitUntil(lambda: train._preview_worker is None, timeout=WAIT_MS)
    preview = [lay for lay in viewer.layers if "preview" in lay.name.lower()]
    assert preview and preview[-1].data.ndim == 2
    _d, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
    _wait_idle(qtbot, classify)
    assert classify.load_model(str(out))
    _wait_idle(qtbot, classify)
    classify.set_channels([layers[1]])
    assert classify.run()
    _wait_idle(qtbot, classify)
    assert classify.record["scope"] == "volume"
    # per slice of the scan (12), not of the model's input (6)
    assert len(classify.record["slice_probabilities"]) == 12
    assert len(classify.record["slice_importance"]) == 12


def test_painted_lesion_masks_train_an_evidence_cnn_rnn(
    make_napari_viewer, qtbot, tmp_path, parent, monkeypatch
):
    """Label images: whole-volume labels plus a lesion painted with the
    brush (*Draw lesion mask*), saved beside the labels and restored; the
    Fine-tune CNN+RNN then learns from the masks (a fresh evidence encoder,
    the slice stage first) and its card says so; so does the 3D ResNet's
    evidence variant."""
    import json

    from napari_medcnn.training.labels.masks import load_mask, mask_path

    viewer = make_napari_viewer()
    _d, panel = viewer.window.add_plugin_dock_widget(PLUGIN, "Label images")
    rng = np.random.default_rng(2)
    layers, files = [], []
    for i in range(10):
        vol = rng.normal(100.0, 20.0, (12, 32, 32)).astype(np.float32)
        path = tmp_path / f"vol{i}.nii.gz"
        z = int(rng.integers(2, 9))
        if i % 2:
            vol[z : z + 2, 12:18, 12:18] += 150.0
        layer = _open_and_label(viewer, panel, vol, path, i)
        if i % 2:  # paint the lesion on its two slices with the brush
            mask_layer = panel.draw_mask()
            assert mask_layer.mode == "paint" and mask_layer.selected_label == 1
            mask_layer.brush_size = 6
            mask_layer.n_edit_dimensions = 2
            for k in (z, z + 1):
                mask_layer.paint((k, 15, 15), 1)
            assert np.asarray(mask_layer.data)[z, 15, 15] == 1
        layers.append(layer)
        files.append(path)
    # every stroke is saved beside the labels, shortly after it
    saved = mask_path(str(files[1]) + ".medcnn-labels.json")
    qtbot.waitUntil(saved.exists, timeout=5_000)
    assert load_mask(saved, (12, 32, 32)).sum() > 20
    # closing the mask layer loses nothing: the button restores it
    first_mask = next(lay for lay in viewer.layers if lay.name.endswith("lesion mask"))
    painted = np.asarray(first_mask.data).copy()
    viewer.layers.remove(first_mask)
    panel.set_layer(layers[1])
    restored = panel.draw_mask()
    assert np.array_equal(np.asarray(restored.data) > 0, painted > 0)
    _d, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune")
    train.refresh_labels()
    masks = [s["mask"] is not None for s in train.sources()]
    assert masks == [i % 2 == 1 for i in range(10)]
    out = _short_volume_run(train, parent, tmp_path / "evidence_model.safetensors", 8)
    # a short slice stage, in a worker thread (so the setting reaches it)
    monkeypatch.setattr("napari_medcnn.training.transfer.EVIDENCE_SLICE_EPOCHS", 3)
    train.mode_combo.setCurrentIndex(train.mode_combo.findData("thread"))
    assert train.start()
    _wait_idle(qtbot, train)
    assert not train.summary["cancelled"], train.status.text()
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["arch_kwargs"]["slice_features"] == "evidence"
    assert card["provenance"]["train_config"]["slice_epochs"] == 3
    assert card["input_size"][-2:] == [32, 32]  # the scans' own resolution
    stage = card["provenance"]["lesion_masks"]["slice_stage"]
    assert card["provenance"]["lesion_masks"]["volumes"] == 5
    assert stage["lesion_slices"] > 0 and stage["best_epoch"] >= 1
    assert card["provenance"]["start"]["start"] != "encoder"  # a fresh encoder
    # the same masks teach the 3D ResNet's evidence variant
    monkeypatch.setattr("napari_medcnn.training.slice_stage.MIN_SLICES_PER_EPOCH", 32)
    box = train.model_box
    box.arch_combo.setCurrentIndex(box.arch_combo.findData("resnet3d"))
    assert box.volume_arch() == "resnet3d"
    out3 = tmp_path / "evidence_resnet3d.safetensors"
    train.set_output(out3)
    assert train.start()
    _wait_idle(qtbot, train)
    assert not train.summary["cancelled"], train.status.text()
    card3 = json.loads(out3.with_suffix(".json").read_text())
    assert card3["arch"] == "resnet" and card3["arch_kwargs"]["evidence"] is True
    assert card3["provenance"]["lesion_masks"]["slice_stage"]["best_epoch"] >= 1
