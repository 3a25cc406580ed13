"""The Classify dock widget in a real napari window, and the result records.

The widget is opened through the manifest, as a user opens it from the
Plugins menu.  Models are tiny untrained checkpoints written by a fixture
(the default Br35H model may not exist yet); every job is awaited on the
widget's worker.  Set ``NAPARI_MEDCNN_SCREENSHOTS`` to a folder to keep the
screenshots of the docked widget.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from _helpers import make_checkpoint

from napari_medcnn.inference.predict import ClassificationResult
from napari_medcnn.inference.records import (
    classification_record,
    csv_columns,
    to_csv,
    write_csv,
    write_json,
)

PLUGIN = "napari-medcnn"
WIDGET = "Classify"
WAIT_MS = 120_000
PHI = ("Doe", "Jane", "PID-7788")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


def _result(slices=None, warnings=()):
    return ClassificationResult(
        classes=["no_tumor", "tumor"],
        probabilities=[0.25, 0.75],
        label="tumor",
        index=1,
        scope="slices" if slices is not None else "slice",
        slice_probabilities=slices,
        model_id="abc123",
        model_name="tiny",
        model_path="/somewhere/private/tiny.safetensors",
        warnings=list(warnings),
    )


# -- core: records and export (no Qt) -------------------------------------------
def test_record_keeps_identity_but_no_patient_data():
    md = {
        "patient_name": "Doe^Jane",
        "patient_id": "PID-7788",
        "patient_birth_date": "19700101",
        "series_uid": "1.2.3.4",
        "modality": "MR",
        "source_paths": ["/data/Doe_Jane/IM0001.dcm"],
    }
    slices = np.array([[0.9, 0.1], [0.2, 0.8], [np.nan, np.nan]])
    rec = classification_record(
        _result(slices), name="MR T1", channel_layers=["MR T1"], metadata=md
    )
    assert rec["series_uid"] == "1.2.3.4" and rec["modality"] == "MR"
    assert rec["name"] == "MR T1" and rec["channel_layers"] == ["MR T1"]
    assert rec["probabilities_by_class"] == {"no_tumor": 0.25, "tumor": 0.75}
    assert rec["n_slices"] == 3 and rec["slice_probabilities"][2] == [None, None]
    assert rec["model_file"] == "tiny.safetensors"  # not the folder
    text = json.dumps(rec, allow_nan=False)
    for phi in (*PHI, "19700101", "/data/", "private"):
        assert phi not in text


def test_export_json_and_csv_atomically(tmp_path):
    recs = [
        classification_record(_result(np.array([[0.5, 0.5], [0.1, 0.9]])), name="a"),
        classification_record(_result(), name="b", channel_layers=["b", "c"]),
    ]
    js = write_json(recs, tmp_path / "out.json")
    assert json.loads(js.read_text()) == recs
    path = write_csv(recs, tmp_path / "out.csv")
    rows = list(csv.DictReader(path.open()))
    assert csv_columns(recs)[-12:] == [
        "p_no_tumor",
        "p_tumor",
        "uncertainty",
        "in_domain",
        "domain_score",
        "domain_reasons",
        "warnings",
        "error",
        "slice_probabilities",
        "slice_in_domain",
        "slice_importance",
        "slice_importance_method",
    ]
    assert [r["label"] for r in rows] == ["tumor", "tumor"]
    assert float(rows[0]["p_tumor"]) == pytest.approx(0.75)
    assert json.loads(rows[0]["slice_probabilities"]) == [[0.5, 0.5], [0.1, 0.9]]
    assert rows[1]["slice_probabilities"] == "" and rows[1]["channel_layers"] == "b; c"
    # an existing file is refused unless asked; replacing it then leaves no
    # temporary file behind
    with pytest.raises(FileExistsError, match="out.csv already exists"):
        write_csv(recs[:1], path)
    assert len(list(csv.DictReader(path.open()))) == 2
    write_csv(recs[:1], path, overwrite=True)
    assert len(list(csv.DictReader(path.open()))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.json"]
    assert to_csv([]).strip() == ",".join(csv_columns([]))


# -- GUI helpers -----------------------------------------------------------------
def _dock(viewer):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


def _wait_idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)


def _with_model(qtbot, viewer, path):
    widget = _dock(viewer)
    _wait_idle(qtbot, widget)  # the default model may be loading
    assert widget.load_model(str(path))
    _wait_idle(qtbot, widget)
    assert widget.model is not None and Path(widget.model.path).stem == path.stem
    return widget


def _run(qtbot, widget):
    assert widget.run()
    assert not widget.run_button.isEnabled()  # disabled while running
    assert widget.cancel_button.isEnabled()
    _wait_idle(qtbot, widget)
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def _screenshot(viewer, tmp_path, name):
    """Save the window (dock included); keep it when asked to (env var)."""
    from qtpy.QtWidgets import QApplication

    viewer.window.resize(1500, 950)
    for _ in range(5):
        QApplication.processEvents()
        time.sleep(0.05)
    png = tmp_path / name
    viewer.screenshot(str(png), canvas_only=False, flash=False)
    keep = os.environ.get("NAPARI_MEDCNN_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / name)
    return png


def _click_curve(canvas, x, y=0.5):
    """A real matplotlib button press at data (x, y) through the canvas."""
    from matplotlib.backend_bases import MouseEvent

    canvas.draw()
    px, py = canvas.ax.transData.transform((x, y))
    event = MouseEvent("button_press_event", canvas, px, py, button=1)
    canvas.callbacks.process("button_press_event", event)


# -- GUI -------------------------------------------------------------------------
@pytest.mark.gui
def test_classify_mr_slice_through_manifest(
    make_napari_viewer, qtbot, tiny, tmp_path, monkeypatch
):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample(PLUGIN, "mr_slice")
    widget = _with_model(qtbot, viewer, tiny)
    assert widget.selected_layers() == [layer]
    assert "MR" in widget.channel_label.text()  # the card's expected channel
    assert not widget.scope_buttons["volume"].isEnabled()  # a slice model
    _run(qtbot, widget)
    rec = layer.metadata["classification"]
    assert rec["label"] in ("no_tumor", "tumor") and rec["scope"] == "slice"
    assert rec["channel_layers"] == [layer.name]
    assert sum(rec["probabilities"]) == pytest.approx(1, abs=1e-5)
    assert rec["label"] in widget.summary.text()
    colors = widget.bars.bar_colors()
    assert colors[rec["index"]] != colors[1 - rec["index"]]  # predicted highlighted
    assert not widget.curve.isVisibleTo(widget)
    out = widget.export(tmp_path / "slice.json")
    assert json.loads(out.read_text())[0]["label"] == rec["label"]
    _export_refuses_unconfirmed_replacing(widget, out, monkeypatch)
    png = _screenshot(viewer, tmp_path, "classify_mr_slice.png")
    assert png.stat().st_size > 10_000


@pytest.mark.gui
def test_volume_curve_follows_dims_and_click_moves_them(
    make_napari_viewer, qtbot, tiny
):
    rng = np.random.default_rng(0)
    vol = rng.normal(100, 20, (12, 40, 40)).astype(np.float32)
    vol[5:8, 10:25, 12:30] += 200
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, name="vol", scale=(2.5, 1, 1), translate=(-10, 5, 5))
    widget = _with_model(qtbot, viewer, tiny)
    viewer.dims.set_point(0, -10 + 3 * 2.5)  # world mm of slice 3
    assert widget.current_slice() == 3
    widget.set_scope("slice")
    _run(qtbot, widget)
    assert layer.metadata["classification"]["slice_index"] == 3

    widget.set_scope("slices")
    _run(qtbot, widget)
    rec = layer.metadata["classification"]
    assert rec["scope"] == "slices" and rec["n_slices"] == 12
    assert np.asarray(rec["slice_probabilities"]).shape == (12, 2)
    assert widget.curve.isVisibleTo(widget) and widget.curve.n_slices == 12
    assert widget.curve.current == 3
    viewer.dims.set_point(0, -10 + 7 * 2.5)
    assert widget.curve.current == 7
    _click_curve(widget.curve, 5.2)
    assert viewer.dims.point[0] == pytest.approx(-10 + 5 * 2.5)
    assert viewer.dims.current_step[0] == 5
    assert widget.curve.current == 5


@pytest.mark.gui
def test_coronal_volume_model_curve_runs_along_the_coronal_axis(
    make_napari_viewer, qtbot, tmp_path
):
    """A CNN+RNN whose card slices coronally: the per-slice curve has one
    point per coronal slice, follows napari's coronal slider, and a click
    moves that slider (not the axial one)."""
    import torch

    from napari_medcnn.models import build_model
    from napari_medcnn.models.card import ModelCard
    from napari_medcnn.models.checkpoint import save_checkpoint
    from napari_medcnn.preprocessing.volume import volume_record

    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 2, "hidden_size": 8,
          "encoder_kwargs": {"widths": (4, 8, 8), "pooled_size": 2}}  # fmt: skip
    record = volume_record(6, (16, 16), slice_axis="coronal", crop_depth=False)
    card = ModelCard(arch="cnn_rnn", arch_kwargs=kw, classes=["normal", "lesion"],
                     spatial_dims=3, in_channels=1, input_size=[16, 16],
                     input_kind="sequence", preprocessing=record,
                     name="tiny coronal")  # fmt: skip
    ckpt = save_checkpoint(build_model("cnn_rnn", **kw).eval(), card, tmp_path / "c")
    vol = np.random.default_rng(2).normal(100, 20, (10, 14, 12)).astype(np.float32)
    viewer = make_napari_viewer()
    layer = viewer.add_image(
        vol, name="vol", scale=(2.0, 1.5, 1.0), translate=(0, 3, 0)
    )
    widget = _with_model(qtbot, viewer, ckpt)
    widget.set_scope("volume")
    _run(qtbot, widget)
    rec = layer.metadata["classification"]
    assert len(rec["slice_probabilities"]) == 14  # coronal slices of the scan
    assert widget.curve.n_slices == 14
    viewer.dims.set_point(1, 3 + 9 * 1.5)  # world mm of coronal slice 9
    assert widget.curve.current == 9
    axial = viewer.dims.point[0]
    _click_curve(widget.curve, 4.1)
    assert viewer.dims.point[1] == pytest.approx(3 + 4 * 1.5)
    assert viewer.dims.point[0] == axial
    assert widget.curve.current == 4


@pytest.mark.gui
def test_sequence_model_two_channels_in_order(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    import napari.utils.notifications as notifications

    seq = make_checkpoint(tmp_path / "seq", in_channels=2, kind="sequence")
    rng = np.random.default_rng(1)
    viewer = make_napari_viewer()
    t1 = viewer.add_image(rng.random((6, 24, 24)), name="T1")
    t2 = viewer.add_image(rng.random((6, 24, 24)), name="T2")
    widget = _with_model(qtbot, viewer, seq)
    assert widget.scope == "volume" and widget.scope_buttons["volume"].isEnabled()
    assert not widget.scope_buttons["slices"].isEnabled()
    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    widget.set_channels([t1])
    assert not widget.run()  # refused before any compute
    assert "takes 2 channel" in shown[-1]
    widget.set_channels([t1, t2])
    widget.channels.setCurrentRow(1)
    widget.up_button.click()  # reorder: T2 becomes channel 1
    assert widget.selected_layers() == [t2, t1]
    assert "1. T2" in widget.channel_label.text()
    _run(qtbot, widget)
    rec = t2.metadata["classification"]
    assert rec["channel_layers"] == ["T2", "T1"] and rec["model_channels"] == [
        "MR",
        "T2",
    ]
    assert rec["scope"] == "volume" and rec["n_slices"] == 6
    assert widget.curve.isVisibleTo(widget)
    # layers of different shapes: put on the first one's grid, said so
    small = viewer.add_image(rng.random((6, 20, 24)), name="small")
    widget.set_channels([t1, small])
    _run(qtbot, widget)
    assert "small: resampled" in widget.channel_label.text()
    assert t1.metadata["classification"]["channel_layers"] == ["T1", "small"]


@pytest.mark.gui
def test_sequence_model_draws_slice_importance(make_napari_viewer, qtbot, tmp_path):
    """A sequence model's record carries the slice importance (occlusion),
    drawn on the curve against its own axis; clicks still pick slices."""
    seq = make_checkpoint(tmp_path / "seq", kind="sequence")
    vol = np.random.default_rng(3).random((7, 24, 24)).astype(np.float32)
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol, name="vol", scale=(3, 1, 1))
    widget = _with_model(qtbot, viewer, seq)
    _run(qtbot, widget)
    rec = layer.metadata["classification"]
    assert rec["slice_importance_method"] == "occlusion"
    assert len(rec["slice_importance"]) == 7
    assert sum(rec["slice_importance"]) in (0, pytest.approx(1.0, abs=1e-4))
    np.testing.assert_allclose(widget.curve.importance, rec["slice_importance"])
    assert len(widget.curve.figure.axes) == 2  # the importance axis, right
    assert "importance (occlusion)" in widget.curve.figure.axes[1].get_ylabel()
    _click_curve(widget.curve, 4.1)
    assert viewer.dims.current_step[0] == 4
    # a slice model's record has none: the curve has one axis again
    widget.load_model(str(make_checkpoint(tmp_path / "slice")))
    _wait_idle(qtbot, widget)
    widget.set_scope("slices")
    _run(qtbot, widget)
    assert "slice_importance" not in layer.metadata["classification"]
    assert widget.curve.importance is None and len(widget.curve.figure.axes) == 1


@pytest.mark.gui
def test_cancel_stops_the_job(make_napari_viewer, qtbot, tiny, monkeypatch):
    import napari_medcnn.inference.predict as inference

    def endless(images, model, **kwargs):
        i = 0
        while True:
            i += 1
            time.sleep(0.01)
            yield ("classify", i, 10**6)

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.random.default_rng(0).random((32, 32)), name="im")
    widget = _with_model(qtbot, viewer, tiny)
    monkeypatch.setattr(inference, "classify", endless)
    assert widget.run()
    qtbot.waitUntil(lambda: widget.progress.value() > 0, timeout=WAIT_MS)
    widget.cancel_button.click()
    _wait_idle(qtbot, widget)
    assert widget.status.text() == "Cancelled."
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert "classification" not in layer.metadata and widget.record is None


@pytest.mark.gui
def test_bad_checkpoint_keeps_previous_model(
    make_napari_viewer, qtbot, tiny, tmp_path, monkeypatch
):
    import napari.utils.notifications as notifications

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    shutil.copy(tiny.with_suffix(".json"), corrupt.with_suffix(".json"))
    no_fields = tmp_path / "nofields.safetensors"
    shutil.copy(tiny, no_fields)
    card = json.loads(tiny.with_suffix(".json").read_text())
    del card["classes"]
    no_fields.with_suffix(".json").write_text(json.dumps(card))

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    widget = _with_model(qtbot, viewer, tiny)
    before = widget.model
    for bad, why in ((corrupt, "cannot read weights"), (no_fields, "missing")):
        assert widget.load_model(str(bad))
        _wait_idle(qtbot, widget)
        assert why in str(shown[-1]) and bad.stem in str(shown[-1])
        assert widget.model is before
    assert "tiny" in widget.model_label.text()


@pytest.mark.gui
def test_missing_default_model_is_said(make_napari_viewer, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    import napari_medcnn.widgets.classify.widget as classify_widget

    missing = tmp_path / "weights" / "br35h_default.safetensors"
    monkeypatch.setattr(classify_widget, "default_model_file", lambda: missing)
    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    viewer.add_image(np.ones((8, 8)), name="im")
    widget = _dock(viewer)
    assert widget.model is None and widget.worker is None
    assert "Default model not found" in widget.status.text()
    assert not widget.run_button.isEnabled()
    assert not widget.load_model(None)
    assert "Default model not found" in shown[-1]


@pytest.mark.gui
def test_phi_stays_out_and_warnings_are_shown(
    make_napari_viewer, qtbot, tiny, tmp_path, monkeypatch
):
    import napari.utils.notifications as notifications
    from qtpy.QtWidgets import QFileDialog

    warned = []
    monkeypatch.setattr(notifications, "show_warning", warned.append)
    viewer = make_napari_viewer()
    md = {"patient_name": "Doe^Jane", "patient_id": "PID-7788", "series_uid": "1.2.9"}
    layer = viewer.add_image(np.zeros((32, 32)), name="MR opted-in", metadata=md)
    widget = _with_model(qtbot, viewer, tiny)
    _run(qtbot, widget)
    assert warned and "constant" in warned[-1]
    rec = layer.metadata["classification"]
    assert rec["series_uid"] == "1.2.9" and rec["warnings"]
    assert layer.metadata["patient_name"] == "Doe^Jane"  # the layer keeps its own
    for fmt in ("csv", "json"):
        target = tmp_path / f"export.{fmt}"
        monkeypatch.setattr(
            QFileDialog, "getSaveFileName", lambda *a, t=target, **k: (str(t), "")
        )
        getattr(widget, f"{fmt}_button").click()
        text = target.read_text()
        assert "1.2.9" in text
        for phi in PHI:
            assert phi not in text
    assert not any(phi in json.dumps(rec) for phi in PHI)


@pytest.mark.gui
def test_screenshots_mr_slice_and_volume(make_napari_viewer, qtbot, tiny, tmp_path):
    """What the user sees: the dock after classifying a slice and a volume."""
    from napari_medcnn.models.checkpoint import default_model_path

    model = default_model_path() if default_model_path().exists() else tiny
    viewer = make_napari_viewer(show=True)
    (mr,) = viewer.open_sample(PLUGIN, "mr_slice")
    widget = _with_model(qtbot, viewer, model)
    _run(qtbot, widget)
    assert widget.bars.isVisibleTo(widget) and widget.bars.height() >= 100
    _screenshot(viewer, tmp_path, "classify_mr_slice_window.png")
    viewer.layers.clear()
    (vol,) = viewer.open_sample(PLUGIN, "mr_volume")
    widget.set_channels([vol])
    widget.set_scope("slices")
    _run(qtbot, widget)
    assert vol.metadata["classification"]["n_slices"] == vol.data.shape[0]
    assert widget.curve.isVisibleTo(widget) and widget.curve.height() >= 150
    png = _screenshot(viewer, tmp_path, "classify_mr_volume_window.png")
    assert png.stat().st_size > 10_000
    viewer.theme = "light"  # the plots follow the theme
    assert widget.curve.colors.background == widget.bars.colors.background
    assert widget.bars.figure.get_facecolor()[0] > 0.8
    _screenshot(viewer, tmp_path, "classify_mr_volume_light.png")


def _export_refuses_unconfirmed_replacing(widget, out, monkeypatch):
    """A programmatic export never replaces a file unless asked; the Export
    buttons replace one only when the save dialog itself chose it (Qt asked
    the user), not when the suffix was added after the dialog."""
    import napari_medcnn.widgets.classify.dialogs as ui

    mine = "a file the user keeps"
    out.write_text(mine)
    with pytest.raises(FileExistsError, match="slice.json already exists"):
        widget.export(out)
    assert out.read_text() == mine

    class Dialog:
        answer = ""

        @staticmethod
        def getSaveFileName(*_args, **_kwargs):  # noqa: N802 (Qt API)
            return Dialog.answer, ""

    monkeypatch.setattr(ui, "QFileDialog", Dialog)
    Dialog.answer = str(out.with_suffix(""))  # typed without the suffix
    widget.json_button.click()
    assert out.read_text() == mine and "already exists" in widget.status.text()
    Dialog.answer = str(out)  # chosen, and confirmed, in the dialog
    widget.json_button.click()
    assert json.loads(out.read_text())[0]["label"] == widget.record["label"]
    assert "Exported" in widget.status.text()


def _callbacks_of(emitter, obj) -> int:
    """How many of ``emitter``'s callbacks call a method of ``obj``."""
    n = 0
    for cb in emitter.callbacks:
        target = cb[0]() if isinstance(cb, tuple) else getattr(cb, "__self__", None)
        n += target is obj
    return n


@pytest.mark.gui
def test_closed_panel_stops_listening(make_napari_viewer, qtbot, monkeypatch):
    import napari.utils.events.event as napari_event

    errors = []
    real = napari_event._handle_exception
    monkeypatch.setattr(
        napari_event,
        "_handle_exception",
        lambda *a, **k: (errors.append(a), real(*a, **k)),
    )
    viewer = make_napari_viewer()
    widget = _dock(viewer)
    _wait_idle(qtbot, widget)
    emitters = {
        "inserted": viewer.layers.events.inserted,
        "removed": viewer.layers.events.removed,
        "renamed": viewer.layers.events.renamed,
        "active": viewer.layers.selection.events.active,
        "point": viewer.dims.events.point,
        "theme": viewer.events.theme,
    }
    ones, zeros = dict.fromkeys(emitters, 1), dict.fromkeys(emitters, 0)
    assert {k: _callbacks_of(e, widget) for k, e in emitters.items()} == ones
    viewer.window.remove_dock_widget(widget)
    with qtbot.waitSignal(widget.destroyed, timeout=WAIT_MS):
        widget.deleteLater()
    # the panel's Qt side is gone while its Python side lives on (this test
    # holds it): it is no longer connected to any viewer event
    assert {k: _callbacks_of(e, widget) for k, e in emitters.items()} == zeros
    # every viewer event fires once more: none reaches the panel or fails
    called = []
    for name in ("_on_layers_changed", "_on_active_changed", "_on_dims_point",
                 "_on_theme"):  # fmt: skip
        setattr(widget, name, lambda *_a, name=name: called.append(name))
    viewer.add_image(np.zeros((3, 8, 8)), name="after")
    viewer.add_image(np.zeros((3, 8, 8)), name="other")
    viewer.dims.set_point(0, 2)
    viewer.layers["after"].name = "renamed"
    viewer.layers.selection.active = viewer.layers["renamed"]
    viewer.layers.remove("other")
    viewer.theme = "light" if viewer.theme != "light" else "dark"
    qtbot.wait(50)
    assert called == [] and errors == []
    assert [lay.name for lay in viewer.layers] == ["renamed"]


@pytest.mark.gui
def test_domain_banner_grey_bars_and_marked_slices(make_napari_viewer, qtbot, tmp_path):
    """The default model on what it never learned (a CT slice): a banner,
    grey bars; on a whole head (Colin27), the slices outside the domain are
    marked on the curve and the label comes from the others."""
    from pydicom.data import get_testdata_file

    from napari_medcnn.models.checkpoint import default_model_path

    if not default_model_path().exists():
        pytest.skip("no default model")
    viewer = make_napari_viewer(show=True)
    (ct,) = viewer.open(
        get_testdata_file("CT_small.dcm", download=False), plugin=PLUGIN
    )
    widget = _dock(viewer)
    _wait_idle(qtbot, widget)  # the default model loads
    assert widget.model is not None and widget.model.card.domain
    widget.set_channels([ct])
    _run(qtbot, widget)
    rec = ct.metadata["classification"]
    assert rec["domain"]["in_domain"] is False
    assert "OUTSIDE THE MODEL" in widget.summary.text()
    assert "modality CT" in widget.summary.text()
    assert "uncertainty" in widget.summary.text()
    assert widget.bars.out_of_domain
    assert len(set(widget.bars.bar_colors())) == 1  # no class highlighted
    _screenshot(viewer, tmp_path, "classify_ct_out_of_domain.png")

    # a held-out Br35H tumour image: inside the domain, a normal label
    from napari_medcnn.training.data.br35h import br35h_root

    tumour = [f for f in widget.model.card.provenance["test_files"] if "y" in f[:5]]
    viewer.layers.clear()
    (mr,) = viewer.open(str(br35h_root() / tumour[0]), plugin=PLUGIN)
    widget.set_channels([mr])
    widget.set_scope("slice")
    _run(qtbot, widget)
    rec = mr.metadata["classification"]
    assert rec["domain"]["in_domain"] and not widget.bars.out_of_domain
    assert "OUTSIDE" not in widget.summary.text()
    assert "uncertainty" in widget.summary.text()
    _screenshot(viewer, tmp_path, "classify_br35h_tumour.png")

    viewer.layers.clear()
    (head,) = viewer.open(
        str(Path(__file__).parents[2] / "napari_medcnn" / "data" / "colin27_t1.nii.gz"),
        plugin=PLUGIN,
    )
    widget.set_channels([head])
    widget.set_scope("slices")
    _run(qtbot, widget)
    rec = head.metadata["classification"]
    marked = widget.curve.out_of_domain_slices
    assert marked == [i for i, ok in enumerate(rec["slice_in_domain"]) if not ok]
    assert 0 < len(marked) < rec["n_slices"]
    assert not widget.bars.out_of_domain  # the volume has in-domain slices
    assert rec["label"] == "no_tumor"
    viewer.dims.set_point(0, float(head.data_to_world([marked[0], 0, 0])[0]))
    assert "outside domain" in widget.curve.marker_label(marked[0])
    _screenshot(viewer, tmp_path, "classify_colin27_curve.png")
