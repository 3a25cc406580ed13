"""The Cohort dock widget in a real napari window (run under xvfb-run): a
real cohort (DICOM series with PHI, NIfTI, PNG, a corrupt file) is run with
the shipped model and Grad-CAM in worker processes; the table fills in,
filters and sorts; a row opens as layers with the reader's geometry, its
classification and its saliency overlay at its most telling slice; Cancel
stops the run with the finished items journalled, and Run resumes."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_medcnn.io import load
from napari_medcnn.io.synth import COHORT_PATIENTS, write_cohort
from napari_medcnn.widgets._common.layers import current_slice_index
from napari_medcnn.widgets.cohort.rows import COLUMN_KEYS

PLUGIN = "napari-medcnn"
WAIT_MS = 120_000
PHI = [s for name, pid in COHORT_PATIENTS for s in (*name.split("^"), pid)]


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cohort") / "in"
    made = write_cohort(
        root, n_dicom=2, n_nifti=2, n_png=1, corrupt=("png",),
        non_image_folder=False, shape=(6, 48, 48),
    )  # fmt: skip
    return root, made


def _dock(viewer):
    _dock_widget, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Cohort")
    return widget


def _idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)


def _ready(viewer, qtbot):
    w = _dock(viewer)
    _idle(qtbot, w)  # the default model loads in a worker
    assert w.model is not None, w.status.text()
    return w


def _journal_lines(out: Path) -> int:
    return sum(1 for line in (out / "journal.jsonl").read_bytes().split(b"\n") if line)


def _view_row(w, key: str) -> int:
    from napari_medcnn.widgets.cohort.table import KEY_ROLE

    for r in range(w.proxy.rowCount()):
        if w.proxy.index(r, 0).data(KEY_ROLE) == key:
            return r
    raise AssertionError(f"{key} not shown")


def _workers_alive() -> list:
    return [p for p in mp.active_children() if p.name.startswith("napari-medcnn")]


@pytest.mark.gui
def test_run_filter_sort_and_open(
    make_napari_viewer, qtbot, small_cohort, tmp_path, caplog, monkeypatch
):
    from napari_medcnn.widgets.cohort import widget as widget_module

    caplog.set_level("DEBUG", logger="napari_medcnn")
    root, made = small_cohort
    out = tmp_path / "out"
    viewer = make_napari_viewer()
    w = _ready(viewer, qtbot)
    w.set_input(root)
    w.set_output(out)
    w.set_options(explain="gradcam", trust_metrics=False, workers=1)
    assert w.options().explain == "gradcam" and not w.options().trust_metrics
    assert not w.report_button.isEnabled()
    assert w.run()
    assert not w.run_button.isEnabled() and w.cancel_button.isEnabled()
    _idle(qtbot, w)
    assert w.run_button.isEnabled() and not w.cancel_button.isEnabled()
    assert w.outcome is not None and not w.outcome.cancelled, w.status.text()
    assert w.status.text().startswith("Done: 6 items"), w.status.text()

    # one row per item, the corrupt PNG an error naming its file
    rows = w.results.rows()
    assert len(rows) == w.results.rowCount() == w.proxy.rowCount() == 6
    assert all(r is not None for r in rows)
    (bad,) = made["corrupt"]
    by_path = {w.results.item_of(r["key"]).path: r for r in rows}
    assert by_path[str(bad)]["status"] == "error"
    assert str(bad) in by_path[str(bad)]["error"]
    assert sorted(r["status"] for r in rows) == ["error"] + ["ok"] * 5
    for r in rows:
        if r["status"] == "ok":
            assert r["saliency_file"] and (out / r["saliency_file"]).is_file()

    # filters: counts on the buttons, visible rows
    positive = [r for r in rows if r["status"] == "ok" and r["p_tumor"] >= 0.5]
    outside = [r for r in rows if r.get("in_domain") is False]
    assert w.filter_bar.buttons["positive"].text() == f"tumor ≥ 0.5 ({len(positive)})"
    for which, expected in (
        ("errors", [by_path[str(bad)]]),
        ("positive", positive),
        ("outside", outside),
        ("all", rows),
    ):
        w.set_filter(which)
        shown = w.visible_rows()
        assert sorted(r["key"] for r in shown) == sorted(r["key"] for r in expected)
    assert w.filter_bar.current == "all"

    # numeric sort on P(tumor), blanks (the error row) last
    col = COLUMN_KEYS.index("positive")
    assert w.proxy.headerData(col, Qt.Orientation.Horizontal) == "P(tumor)"
    for order in (Qt.SortOrder.DescendingOrder, Qt.SortOrder.AscendingOrder):
        w.table.sortByColumn(col, order)
        ordered = w.visible_rows()
        assert ordered[-1]["status"] == "error"  # blank: last either way
        p = [r["p_tumor"] for r in ordered[:-1]]
        assert p == sorted(p, reverse=order == Qt.SortOrder.DescendingOrder)

    # the report, in the browser
    assert w.report_button.isEnabled() and w.report_path == out / "report.html"
    opened_urls = []
    monkeypatch.setattr(
        widget_module.QDesktopServices, "openUrl", lambda url: opened_urls.append(url)
    )
    w.report_button.click()
    assert [u.toLocalFile() for u in opened_urls] == [str(out / "report.html")]

    # open a DICOM series: the scan with the reader's geometry, the record,
    # the overlay, the row's top slice
    dicom = [r for r in rows if r["kind"] == "dicom"]
    row = dicom[0]
    item = w.results.item_of(row["key"])
    assert w.open_row(_view_row(w, row["key"]))
    qtbot.waitUntil(
        lambda: w.open_worker is None and w.opened is not None, timeout=WAIT_MS
    )
    layer, overlay = w.opened
    (scan,) = load(item.path, include_phi=False)
    assert layer.data.shape == scan.data.shape == (6, 48, 48)
    np.testing.assert_allclose(layer.scale, scan.spacing)
    np.testing.assert_allclose(layer.translate, scan.origin)
    rec = layer.metadata["classification"]
    assert rec["source"] == "cohort" and rec["label"] == row["label"]
    assert rec["probabilities_by_class"]["tumor"] == pytest.approx(row["p_tumor"])
    assert overlay is not None and overlay in viewer.layers
    assert overlay.data.shape == layer.data.shape
    np.testing.assert_allclose(overlay.scale, layer.scale)
    np.testing.assert_allclose(overlay.translate, layer.translate)
    assert row["top_slice"] is not None
    assert current_slice_index(layer, viewer.dims.point) == row["top_slice"]
    n_layers = len(viewer.layers)

    # the same row again: updated in place, no duplicates
    assert w.open_row(_view_row(w, row["key"]))
    qtbot.waitUntil(lambda: w.open_worker is None, timeout=WAIT_MS)
    assert len(viewer.layers) == n_layers
    assert [lay.name for lay in viewer.layers].count(layer.name) == 1

    # another item (a 2D PNG, no slices) replaces the previous one's layers
    png = by_path[str(made["png"][0])]
    assert w.open_row(_view_row(w, png["key"]))
    qtbot.waitUntil(
        lambda: w.open_worker is None and w.opened[0] is not layer, timeout=WAIT_MS
    )
    assert layer not in viewer.layers and overlay not in viewer.layers
    assert w.opened[0].data.shape == (48, 48) and w.opened[1] is not None

    # an error row says why instead of opening
    w.open_row(_view_row(w, by_path[str(bad)]["key"]))
    qtbot.waitUntil(lambda: w.open_worker is None, timeout=WAIT_MS)
    assert "cannot open" in w.open_status.text()

    # no patient data in what the panel shows or logs
    ours = [
        r.getMessage() for r in caplog.records if r.name.startswith("napari_medcnn")
    ]
    shown = "\n".join(
        [*ours, w.status.text(), w.open_status.text(), w.detail.text.text()]
        + [lay.name for lay in viewer.layers]
        + [w.proxy.index(r, c).data() or "" for r in range(6) for c in range(7)]
    )
    for phi in PHI:
        assert phi not in shown


@pytest.mark.gui
def test_bad_input_is_a_clear_message(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    viewer = make_napari_viewer()
    w = _ready(viewer, qtbot)
    (tmp_path / "empty").mkdir()
    w.set_input(tmp_path / "empty")
    w.set_output(tmp_path / "out")
    assert w.run()
    _idle(qtbot, w)
    assert shown and "the folder is empty" in str(shown[-1])
    assert "Traceback" not in str(shown[-1])
    assert w.status.text().startswith("Cannot run:")
    assert not (tmp_path / "out").exists()
    w.set_input("")
    assert not w.run() and "Choose a folder" in w.status.text()


@pytest.mark.gui
def test_cancel_then_resume(make_napari_viewer, qtbot, tmp_path):
    root = tmp_path / "in"
    write_cohort(
        root, n_dicom=0, n_nifti=10, n_png=2, corrupt=(),
        non_image_folder=False, shape=(6, 48, 48),
    )  # fmt: skip
    out = tmp_path / "out"
    viewer = make_napari_viewer()
    w = _ready(viewer, qtbot)
    w.set_input(root)
    w.set_output(out)
    w.set_options(workers=1)
    # cancel as soon as the first item is in the table
    cancel = w.progressed.connect(lambda ev: ev.stage == "item" and w.cancel())
    assert w.run()
    _idle(qtbot, w)
    w.progressed.disconnect(cancel)
    assert w.outcome.cancelled and w.outcome.total == 12
    assert w.status.text().startswith("Cancelled"), w.status.text()
    assert _workers_alive() == []  # the worker processes were stopped
    done = _journal_lines(out)
    assert 1 <= done < 12
    assert (out / "results.csv").is_file()  # the tables for what finished
    assert sum(r is not None for r in w.results.rows()) == done

    # Run again: resumes, each item done exactly once
    statuses = []
    w.progressed.connect(lambda ev: statuses.append(w.status.text()))
    assert w.run()
    _idle(qtbot, w)
    assert f"resuming: {done} of 12 done" in statuses, statuses
    assert not w.outcome.cancelled and w.outcome.done == 12
    assert _journal_lines(out) == 12
    assert all(r is not None and r["status"] == "ok" for r in w.results.rows())
    assert _workers_alive() == []


@pytest.mark.gui
def test_manifest_ids(make_napari_viewer, qtbot, small_cohort, tmp_path):
    root, made = small_cohort
    manifest = tmp_path / "cohort.csv"
    a, b = made["nifti"]
    manifest.write_text(
        f"path,id,site\n{a},case-a,north\n{b},case-b,south\n"
        f"{tmp_path / 'gone.nii.gz'},case-c,east\n"
    )
    viewer = make_napari_viewer()
    w = _ready(viewer, qtbot)
    w.set_input(manifest)
    w.set_output(tmp_path / "out")
    w.set_options(workers=1)
    assert w.run()
    _idle(qtbot, w)
    assert not w.outcome.cancelled, w.status.text()
    col = COLUMN_KEYS.index("id")
    ids = sorted(w.proxy.index(r, col).data() for r in range(w.proxy.rowCount()))
    assert ids == ["case-a", "case-b", "case-c"]
    by_id = {r["id"]: r for r in w.results.rows()}
    assert by_id["case-a"]["status"] == "ok" and by_id["case-a"]["site"] == "north"
    assert by_id["case-c"]["status"] == "error"
    w.set_filter("errors")
    assert [r["id"] for r in w.visible_rows()] == ["case-c"]


# -- the table's logic, without Qt ---------------------------------------------------
def test_rows_sort_filter_and_record():
    from napari_medcnn.widgets.cohort import rows as R

    ok = {
        "key": "a" * 16, "status": "ok", "name": "MR T1", "path": "/x/[redacted]",
        "label": "tumor", "probability": 0.9, "p_no_tumor": 0.1, "p_tumor": 0.9,
        "in_domain": False, "domain_score": 0.8, "domain_reasons": "too dark; odd",
        "uncertainty": 0.47, "top_slice": 3, "n_slices": 6,
    }  # fmt: skip
    err = {"key": "b" * 16, "status": "error", "path": "/x/bad.png", "name": ""}
    pos = R.positive_of(["no_tumor", "tumor"])
    assert pos == "tumor" and R.header_text("positive", pos) == "P(tumor)"
    assert R.cell_text(ok, "positive", ok["key"], pos) == "0.900"
    assert R.cell_text(ok, "domain", ok["key"], pos) == "out"
    assert R.cell_text(err, "name", err["key"], pos) == "bad.png"
    assert R.cell_text(err, "id", err["key"], pos) == "b" * R.KEY_DIGITS
    assert R.cell_text(None, "status", "c" * 16, pos) == "pending"
    # numbers sort as numbers (0.47 < 10.0 although "10" < "4" as text)
    big = {**ok, "uncertainty": 10.0}
    assert R.sort_key(ok, "uncertainty", "", pos) < R.sort_key(
        big, "uncertainty", "", pos
    )
    assert R.sort_key(ok, "positive", "", pos) < R.sort_key(err, "positive", "", pos)
    assert R.count([ok, err, None], pos) == {
        "all": 3, "positive": 1, "outside": 1, "errors": 1,
    }  # fmt: skip
    rec = R.row_record(ok, ["no_tumor", "tumor"])
    assert rec["classes"] == ["no_tumor", "tumor"] and rec["index"] == 1
    assert rec["probabilities"] == [0.1, 0.9] and rec["source"] == "cohort"
    assert rec["domain"] == {
        "in_domain": False, "score": 0.8, "reasons": ["too dark", "odd"],
    }  # fmt: skip
    sal = {**ok, "saliency_file": "saliency/a.nii.gz", "explain_method": "gradcam"}
    assert "gradcam (beats a random order" in R.row_summary(
        {**sal, "saliency_trusted": True}, pos
    )
    assert "do not rely on it" in R.row_summary({**sal, "saliency_trusted": False}, pos)
    assert R.format_eta(75) == "1:15" and R.format_eta(None) == ""
    assert R.progress_text(3, 6, 4.0, 1) == "Running: 3 / 6 done · ETA 0:04 · 1 error"


def _deid_patient_ids(out: Path) -> set[str]:
    """The PatientID of each de-identified series under ``out/deid``."""
    import pydicom

    ids = set()
    for folder in sorted((out / "deid").iterdir()):
        first = next(p for p in sorted(folder.rglob("*")) if p.is_file())
        ids.add(str(pydicom.dcmread(first, stop_before_pixels=True).PatientID))
    return ids


@pytest.mark.gui
def test_deidentify_with_a_sealed_project_key(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """The panel's project key and passphrase: a new key file is created
    once and sealed, the same patient gets the same pseudonym in every item
    (4 series of 3 patients: 3 pseudonyms; a one-off key per item gives 4),
    the passphrase is written nowhere, and a wrong one is a clear message
    before anything is written."""
    import napari.utils.notifications as notifications

    from napari_medcnn.deid.keys import is_sealed_file

    shown = []
    monkeypatch.setattr(notifications, "show_error", shown.append)
    root = tmp_path / "in"
    write_cohort(
        root, n_dicom=4, n_nifti=0, n_png=0, corrupt=(),
        non_image_folder=False, shape=(4, 32, 32),
    )  # fmt: skip
    key = tmp_path / "project.key"
    secret = "correct horse battery staple"
    viewer = make_napari_viewer()
    w = _ready(viewer, qtbot)
    assert not w.key_edit.isEnabled()  # de-identification is off
    w.set_input(root)
    w.set_output(tmp_path / "out")
    w.set_options(workers=1, deidentify=True, key_file=key, passphrase=secret)
    assert w.key_edit.isEnabled() and w.passphrase_edit.isEnabled()
    assert secret not in repr(w.options())
    assert w.run()
    _idle(qtbot, w)
    assert w.outcome.done == 4, w.status.text()
    assert is_sealed_file(key)
    assert len(_deid_patient_ids(tmp_path / "out")) == 3
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".csv", ".html"):
            assert secret not in path.read_text(errors="replace"), path

    # without a key file: one-off keys, no linkage across items
    w.set_output(tmp_path / "out_oneoff")
    w.set_options(workers=1, deidentify=True)
    assert w.run()
    _idle(qtbot, w)
    assert len(_deid_patient_ids(tmp_path / "out_oneoff")) == 4

    # a wrong passphrase: refused before anything is written
    w.set_output(tmp_path / "out_wrong")
    w.set_options(workers=1, deidentify=True, key_file=key, passphrase="wrong")
    assert w.run()
    _idle(qtbot, w)
    assert shown and "authentication failed" in str(shown[-1]), shown
    assert "wrong" not in w.status.text().replace("wrong passphrase", "")
    assert not (tmp_path / "out_wrong").exists()
