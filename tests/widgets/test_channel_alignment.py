"""Ticked layers of different geometry become one model input
(``widgets._common.channels``): the layers' geometries, the card's channel
order, and the Classify widget resampling (with a message) or refusing.

The classification itself is replaced by a stand-in that keeps the arrays
it receives, so the GUI test stays fast.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _helpers import make_checkpoint

from napari_medcnn.inference.predict import ClassificationResult
from napari_medcnn.preprocessing.channels import ChannelGeometry, align_channels
from napari_medcnn.widgets._common.channels import (
    channel_inputs,
    layer_geometries,
    order_for_card,
)

PLUGIN = "napari-medcnn"
WAIT_MS = 120_000


# -- no viewer ------------------------------------------------------------------------
def test_layer_geometry_is_napari_data_to_world():
    from napari.layers import Image

    layer = Image(
        np.zeros((5, 6, 7)),
        scale=(3.0, 0.9, 0.8),
        translate=(1.0, -2.0, 4.0),
        rotate=(10, 0, 0),
        affine=np.diag([1.0, 1.0, 2.0, 1.0]),
    )
    (g,) = layer_geometries([layer])
    assert g.frame == "napari" and g.shape == (5, 6, 7)
    for point in ([0, 0, 0], [4, 5, 6], [1.5, 2.25, 3]):
        assert g.index_to_world(point) == pytest.approx(layer.data_to_world(point))
    same = ChannelGeometry.from_transform(
        (5, 6, 7), layer.scale, layer.translate, layer.rotate, np.diag([1, 1, 2, 1])
    )
    assert same.same_as(g, tolerance=1e-6)


def test_reader_volumes_are_placed_in_the_patient():
    """Two volumes the reader loaded, axial and sagittal, share a frame only
    through their LPS affines; a layer without one sends all to napari's."""
    from napari.layers import Image

    from napari_medcnn.io.scan import Scan, geometry_from_affine

    def layer(affine, shape, name):
        spacing, origin, _dirs = geometry_from_affine(affine)
        scan = Scan(np.zeros(shape, np.float32), spacing, origin, affine, name)
        data, kwargs, _ = scan.to_layer_data()
        return Image(data, **kwargs)

    axial = np.diag([3.0, 1.0, 1.0, 1.0])
    axial[:3, 3] = (-30, -40, -50)
    sagittal = np.array(  # z along x (LR), y along -z, x along y
        [[0, 0, 1.0, -40], [0, 1.0, 0, -40], [-2.0, 0, 0, 40], [0, 0, 0, 1]]
    )
    ax, sag = layer(axial, (20, 80, 80), "MR T1"), layer(sagittal, (40, 80, 30), "T2")
    geoms = layer_geometries([ax, sag])
    assert {g.frame for g in geoms} == {"lps"}
    inputs = channel_inputs([ax, sag])
    assert inputs.resample == [1] and "orientation 90.0° apart" in inputs.messages[0]
    ax.metadata = {**ax.metadata, "frame_of_reference_uid": "1.2.3"}
    sag.metadata = {**sag.metadata, "frame_of_reference_uid": "1.2.4"}
    assert (
        "different DICOM frames of reference" in channel_inputs([ax, sag]).messages[-1]
    )
    ax.scale = (2.0, 1.0, 1.0)  # moved by the user: the viewer's frame counts
    assert {g.frame for g in layer_geometries([ax, sag])} == {"napari"}


def test_card_order_from_layer_names():
    def lay(name, **md):
        return SimpleNamespace(name=name, metadata=md)

    card = SimpleNamespace(channel_names=["T1", "T2", "FLAIR"])
    flair, t1, t2 = lay("MR t2_flair"), lay("x", series_description="T1w"), lay("T2")
    ordered, notes = order_for_card([flair, t1, t2], card)
    assert ordered == [t1, t2, flair]
    assert notes == ["Channels put in the model's order: T1 = 'x', T2 = 'T2', "
                     "FLAIR = 'MR t2_flair'."]  # fmt: skip
    assert order_for_card([t1, t2, flair], card) == ([t1, t2, flair], [])
    dwi = lay("dwi_b1000")
    kept, notes = order_for_card([t1, t2, dwi], card)
    assert kept == [t1, t2, dwi] and "'dwi_b1000' matches none" in notes[0]


# -- the Classify widget ------------------------------------------------------------
def _fake_classify(received):
    def classify(images, model, **kwargs):
        received.append(list(images))
        yield ("classify", 1, 1)
        return ClassificationResult(
            classes=["no_tumor", "tumor"],
            probabilities=[0.5, 0.5],
            label="no_tumor",
            index=0,
            scope=kwargs.get("scope", "slice"),
        )

    return classify


@pytest.mark.gui
def test_classify_resamples_a_second_series_and_refuses_a_far_one(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    import napari.utils.notifications as notifications

    import napari_medcnn.inference.predict as inference

    two = make_checkpoint(tmp_path / "two", in_channels=2)  # "MR", "T2"
    received, warned, errors = [], [], []
    monkeypatch.setattr(inference, "classify", _fake_classify(received))
    monkeypatch.setattr(notifications, "show_warning", warned.append)
    monkeypatch.setattr(notifications, "show_error", errors.append)
    rng = np.random.default_rng(0)
    viewer = make_napari_viewer()
    t1 = viewer.add_image(rng.random((8, 32, 32)), name="MR", translate=(0, 2, 2))
    t2_data = rng.random((4, 40, 40)).astype(np.float32)
    t2 = viewer.add_image(t2_data, name="T2", scale=(2.0, 0.8, 0.8))
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert widget.load_model(str(two))
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    assert Path(widget.model.path).stem == "two"

    widget.set_channels([t1, t2])
    assert widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)
    said = "T2: resampled from 0.8×0.8×2.0 mm onto MR's 1.0×1.0×1.0 mm grid"
    assert any(said in w for w in warned)
    assert said in widget.channel_label.text()  # stays under the layer list
    (images,) = received
    assert images[0] is t1.data and images[1].shape == t1.data.shape
    g1, g2 = (
        ChannelGeometry.from_transform(lay.data.shape, lay.scale, lay.translate)
        for lay in (t1, t2)
    )
    (_, expected), _ = align_channels([t1.data, t2_data], [g1, g2])
    assert np.array_equal(images[1], expected)
    assert t1.metadata["classification"]["channel_layers"] == ["MR", "T2"]
    assert not errors

    t2.translate = (0, 0, 500)  # nowhere near the first layer
    assert not widget.run()  # refused at once, no job
    assert widget.worker is None and len(received) == 1
    assert "'T2' does not overlap 'MR' at all" in errors[-1]
    widget.set_channels([t2, t1])  # another choice clears the notes
    assert "resampled" not in widget.channel_label.text()
