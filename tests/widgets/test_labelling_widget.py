"""The "Label images" widget in a real napari window, opened through the manifest.

Slices of a synthetic NIfTI volume are labelled with the keys 1, 2 and 0,
with ranges and a volume label; the list counts them and a click moves
napari there; the labels survive closing and reopening the scan (sidecar);
closing the panel gives the keys back.  Region labels painted on a
two-texture image train a patch classifier whose probability map is an
Image layer aligned with the scan, updated by name.  "Next case" moves
napari to the most uncertain unlabelled slice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import make_checkpoint
from test_training_widget import N_SLICES, go_to_slice, press, write_volume

pytestmark = pytest.mark.gui

PLUGIN = "napari-medcnn"
WIDGET = "Label images"
WAIT_MS = 90_000


def _dock(viewer):
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return dock, widget


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)


def test_keys_ranges_list_and_labels_survive_reopening(
    make_napari_viewer, qtbot, tmp_path
):
    from napari.utils.key_bindings import coerce_keybinding

    viewer = make_napari_viewer()
    path = write_volume(tmp_path / "scan.nii.gz")
    layer = viewer.open(path, plugin=PLUGIN)[0]
    dock, panel = _dock(viewer)
    assert panel.layer == layer
    panel.set_classes(["normal", "lesion", "unsure"])
    assert [b.text() for b in panel.class_buttons] == [
        "1. normal",
        "2. lesion",
        "3. unsure",
    ]
    viewer.layers.selection.active = layer
    for i, key in ((2, "1"), (3, "1"), (15, "2"), (16, "3")):
        go_to_slice(viewer, layer, i)
        press(viewer, qtbot, key)
    press(viewer, qtbot, "0")  # removes slice 16's label
    press(viewer, qtbot, "9")  # no ninth class: a message, nothing labelled
    assert "Key 9" in panel.status.text()
    panel.set_target("range")
    panel.set_range(18, 21)
    panel.class_buttons[1].click()
    panel.set_target("whole")
    press(viewer, qtbot, "2")
    store = panel.store
    assert store.counts() == {"normal": 2, "lesion": 6, "unsure": 0}
    assert store.ranges() == [(2, 3, "normal"), (15, 15, "lesion"), (18, 21, "lesion")]
    assert store.volume_label == "lesion"
    texts = [panel.items_list.item(i).text() for i in range(panel.items_list.count())]
    assert texts[0] == "volume: lesion" and "slice 18: lesion" in texts
    assert "normal: 2" in panel.counts_label.text()

    # clicking an item moves napari to it
    row = texts.index("slice 15: lesion")
    item = panel.items_list.item(row)
    rect = panel.items_list.visualItemRect(item)
    from qtpy.QtCore import Qt

    qtbot.mouseClick(
        panel.items_list.viewport(), Qt.MouseButton.LeftButton, pos=rect.center()
    )
    assert panel.current_slice() == 15

    # the sidecar holds the labels and no path or name of the scan
    sidecar = Path(str(path) + ".medcnn-labels.json")
    saved = json.loads(sidecar.read_text())
    assert saved["slices"] == [[2, 3, "normal"], [15, 15, "lesion"], [18, 21, "lesion"]]
    assert "scan" not in sidecar.read_text().replace("scan.nii.gz", "")

    # close the scan and open it again: the labels come back
    viewer.layers.remove(layer)
    assert panel.layer is None and panel.items_list.count() == 0
    layer2 = viewer.open(path, plugin=PLUGIN)[0]
    assert panel.layer == layer2
    assert panel.store.counts() == {"normal": 2, "lesion": 6, "unsure": 0}
    assert panel.items_list.count() == 8

    # closing the panel gives the keys back
    one = coerce_keybinding("1")
    assert one in viewer.keymap and one in layer2.keymap
    viewer.window.remove_dock_widget(dock)
    assert one not in viewer.keymap and one not in layer2.keymap
    assert layer2.data.shape[0] == N_SLICES


def _textures(rng) -> np.ndarray:
    """64x64: smooth noise on the left, fine stripes on the right."""
    from scipy import ndimage

    img = ndimage.gaussian_filter(rng.normal(0, 1, (64, 64)), 3) * 3
    stripes = np.sin(np.arange(64) * np.pi / 2)[None, :] * 1.5
    img[:, 32:] = stripes[:, 32:] + rng.normal(0, 0.3, (64, 32))
    return img.astype(np.float32)


def test_region_labels_give_an_aligned_probability_map(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    image = viewer.add_image(
        _textures(rng), name="textures", scale=(0.5, 0.5), translate=(10.0, -4.0)
    )
    paint = np.zeros((64, 64), np.int32)
    paint[8:56, 4:24] = 1
    paint[8:56, 40:60] = 2
    labels = viewer.add_labels(paint, name="painted", scale=image.scale,
                               translate=image.translate)  # fmt: skip
    _dock_widget, panel = _dock(viewer)
    panel.set_layer(image)
    panel.set_classes(["smooth", "striped"])
    assert panel.labels_combo.currentData() == labels
    panel.patch_spin.setValue(6.0)  # 12 px at 0.5 mm
    panel.region_epochs.setValue(2)
    assert panel.train_regions()
    _wait_idle(qtbot, panel)
    names = ["textures · p(smooth)", "textures · p(striped)"]
    assert all(n in viewer.layers for n in names), panel.status.text()
    striped = viewer.layers[names[1]]
    assert striped.data.shape == (64, 64)
    np.testing.assert_allclose(striped.scale, image.scale)
    np.testing.assert_allclose(striped.translate, image.translate)
    assert striped.data[:, 36:].mean() > striped.data[:, :28].mean() + 0.3

    # correct -> retrain: the same layers are updated, not duplicated
    predicted = panel.map_to_labels()
    assert predicted.name == "textures · regions (predicted)"
    n_layers = len(viewer.layers)
    panel.region_epochs.setValue(1)
    assert panel.train_regions()
    _wait_idle(qtbot, panel)
    assert len(viewer.layers) == n_layers
    assert panel.probability_map.probs.shape == (2, 64, 64)


def test_region_labels_bad_shape_is_refused(make_napari_viewer, monkeypatch):
    errors = []
    monkeypatch.setattr(
        "napari.utils.notifications.show_error", lambda m: errors.append(str(m))
    )
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((32, 32), np.float32), name="img")
    viewer.add_labels(np.zeros((16, 16), np.int32), name="small")
    _dock_widget, panel = _dock(viewer)
    assert not panel.train_regions()
    assert "shape" in errors[-1]


def test_next_case_goes_to_the_most_uncertain_unlabelled_slice(
    make_napari_viewer, qtbot, tmp_path
):
    from napari_medcnn._progress import drain
    from napari_medcnn.training.labels.active import rank_candidates

    tiny = make_checkpoint(tmp_path / "tiny", classes=("normal", "lesion"))
    viewer = make_napari_viewer()
    path = write_volume(tmp_path / "scan.nii.gz")
    layer = viewer.open(path, plugin=PLUGIN)[0]
    _dock_widget, panel = _dock(viewer)
    panel.set_model(str(tiny))
    panel.classes_from_model()
    assert panel.classes == ["normal", "lesion"]
    go_to_slice(viewer, layer, 0)
    panel.set_target("range")
    panel.set_range(0, 5)
    panel.label("normal")
    assert panel.next_case()
    _wait_idle(qtbot, panel)
    expected = drain(
        rank_candidates(
            [{"images": [layer.data], "spacing": layer.scale, "store": panel.store}],
            model=str(tiny),
        )
    ).best(1)[0]
    assert expected.slice >= 6  # labelled slices are skipped
    assert panel.current_slice() == expected.slice
    assert "Next case" in panel.status.text()
