"""Cohort runs end to end, on a real cohort folder (DICOM series with PHI,
NIfTI, PNG, corrupt files, a non-image folder), with the shipped model, real
worker processes and a real Dask LocalCluster."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from napari_medcnn.cohort.items import discover
from napari_medcnn.cohort.task import VOLATILE_COLUMNS
from napari_medcnn.io.synth import COHORT_PATIENTS, write_cohort

pytestmark = pytest.mark.slow

PHI = [s for name, pid in COHORT_PATIENTS for s in (*name.split("^"), pid)]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cohort")
    made = write_cohort(root, shape=(8, 48, 48))
    return root, made


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_medcnn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def read_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def written_text(path: Path) -> str:
    """What a file says: the values of a Parquet table, an HTML page without
    its embedded images (random base64 may spell a 3-letter name), else the
    text."""
    import re

    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist())
    text = path.read_bytes().decode("utf-8", "replace")
    if path.suffix == ".html":
        text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", text)
    return text


def stable(rows):
    return {
        r["key"]: {k: v for k, v in r.items() if k not in VOLATILE_COLUMNS}
        for r in rows
    }


def test_discovery_finds_every_item(cohort):
    root, made = cohort
    items = discover([root])
    assert len(items) == 30
    kinds = sorted(it.kind for it in items)
    assert kinds.count("dicom") == 11  # 10 series + 1 corrupt .dcm
    assert kinds.count("nifti") == 11 and kinds.count("image") == 7
    assert kinds.count("folder") == 1
    series = [it for it in items if it.kind == "dicom" and len(it.files) > 1]
    assert len({it.series_uid for it in series}) == 10
    # keys are stable across discoveries and hold no PHI
    assert [it.key for it in discover([root])] == [it.key for it in items]


def test_local_and_dask_give_the_same_rows(cohort, tmp_path):
    root, made = cohort
    local, dask = tmp_path / "local", tmp_path / "dask"
    r1 = cli("cohort", str(root), "--out", str(local), "--workers", "2")
    assert r1.returncode == 1, r1.stderr  # the corrupt items are errors
    r2 = cli(
        "cohort", str(root), "--out", str(dask), "--workers", "2",
        "--executor", "dask",
    )  # fmt: skip
    assert r2.returncode == 1, r2.stderr
    a, b = read_rows(local), read_rows(dask)
    assert len(a) == len(b) == 30
    assert stable(a) == stable(b)

    by_status = {}
    for r in a:
        by_status.setdefault(r["status"], []).append(r)
    assert len(by_status["ok"]) == 26
    assert len(by_status["skipped"]) == 1
    assert "no DICOM, NIfTI or image file" in by_status["skipped"][0]["error"]
    errors = by_status["error"]
    assert len(errors) == 3
    for bad in made["corrupt"]:
        (row,) = [r for r in errors if r["path"] == str(bad)]
        assert str(bad) in row["error"], row["error"]  # the reason names the file
        assert "\n" not in row["error"]
    for r in by_status["ok"]:
        assert r["label"] in ("no_tumor", "tumor")
        assert abs(float(r["p_no_tumor"]) + float(r["p_tumor"]) - 1) < 1e-4
        assert r["in_domain"] in ("True", "False") and r["uncertainty"] != ""
        assert (local / r["thumbnail"]).is_file()
        assert r["model_id"]

    # the same rows in Parquet, typed
    table = pq.read_table(local / "results.parquet")
    assert table.num_rows == 30
    assert str(table.schema.field("p_tumor").type) == "double"
    assert str(table.schema.field("n_slices").type) == "int64"
    summary = json.loads((local / "summary.json").read_text())
    assert summary["status"] == {"error": 3, "ok": 26, "skipped": 1}
    assert sum(summary["labels"].values()) == 26
    assert summary["executor"] == "local" and summary["workers"] == 2
    assert summary["items_per_s"] > 0

    # no patient name or ID anywhere in what the run wrote
    for out in (local, dask):
        for p in out.rglob("*"):
            assert not [s for s in PHI if s in str(p.relative_to(out))]
            if p.is_file() and p.suffix != ".png":  # thumbnails: pixels only
                text = written_text(p)
                assert not [s for s in PHI if s in text], p
    # stdout names the outputs, and prints no PHI either
    assert "report.html" in r1.stdout
    assert not [s for s in PHI if s in r1.stdout + r1.stderr]


def test_sigkill_half_way_then_resume(cohort, tmp_path):
    root, _ = cohort
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "napari_medcnn.cli", "cohort", str(root),
        "--out", str(out), "--workers", "1", "--no-report",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 12:
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the run never got half-way")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers
        proc.wait()
    first = journal.read_bytes().count(b"\n")
    assert 12 <= first < 30
    assert not (out / "results.csv").exists()  # it died before writing them

    r = cli("cohort", str(root), "--out", str(out), "--workers", "2", "--no-report")
    assert r.returncode == 1, r.stderr
    assert f"resuming: {first} of 30" in r.stdout
    rows = read_rows(out)
    assert len(rows) == 30 and len({r["key"] for r in rows}) == 30
    # every item was processed exactly once over the two runs
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    keys = [e["row"]["key"] for e in entries]
    assert len(keys) == 30 and len(set(keys)) == 30

    # a third run has nothing left to do
    r = cli("cohort", str(root), "--out", str(out), "--no-report")
    assert "resuming: 30 of 30" in r.stdout
    assert journal.read_text().count("\n") == 30


def test_redo_errors_retries_only_the_failures(tmp_path):
    root = tmp_path / "in"
    made = write_cohort(
        root, n_dicom=1, n_nifti=1, n_png=1, corrupt=("png",),
        non_image_folder=False, shape=(4, 32, 32),
    )  # fmt: skip
    out = tmp_path / "out"
    assert cli("cohort", str(root), "--out", str(out), "--workers", "1").returncode == 1
    # the user repairs the broken file
    bad = made["corrupt"][0]
    bad.write_bytes(made["png"][0].read_bytes())
    r = cli("cohort", str(root), "--out", str(out), "--workers", "1")
    assert r.returncode == 1  # errors are done unless asked to redo them
    r = cli("cohort", str(root), "--out", str(out), "--workers", "1", "--redo-errors")
    assert r.returncode == 0, r.stdout + r.stderr
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["ok"] * 4
    lines = (out / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 5  # four items, the repaired one twice


def test_manifest_carries_columns_and_reports_missing_paths(cohort, tmp_path):
    root, made = cohort
    manifest = tmp_path / "cohort.csv"
    series = made["dicom"][0]
    uid = next(it.series_uid for it in discover([series]))
    rel = os.path.relpath(made["nifti"][1], tmp_path)
    manifest.write_text(
        "path,id,site,series_uid\n"
        f"{series},S-001,north,{uid}\n"
        f"{rel},S-002,south,\n"
        f"{made['png'][0]},S-003,east,\n"
        "missing/scan.nii.gz,S-004,west,\n"
    )
    out = tmp_path / "out"
    r = cli("cohort", str(manifest), "--out", str(out), "--workers", "1")
    assert r.returncode == 1, r.stderr
    rows = {r["id"]: r for r in read_rows(out)}
    assert set(rows) == {"S-001", "S-002", "S-003", "S-004"}
    assert rows["S-001"]["series_uid"] == uid and rows["S-001"]["status"] == "ok"
    assert rows["S-002"]["site"] == "south" and rows["S-002"]["status"] == "ok"
    assert rows["S-004"]["status"] == "error"
    assert "missing/scan.nii.gz: no such file or folder" in rows["S-004"]["error"]


def test_a_worker_that_dies_fails_only_its_item(cohort, tmp_path):
    """The kernel's OOM killer sends SIGKILL: that item is an error, the
    worker is replaced and the other items finish."""
    from napari_medcnn.cohort.executors import LocalExecutor
    from napari_medcnn.cohort.task import CohortOptions

    root, made = cohort
    good = [it for it in discover([root]) if "corrupt" not in it.path]
    # DICOM series in folders named after their patients: the dead item's
    # row must not name them either
    items = [it for it in good if it.kind == "dicom"][:6]
    ex = LocalExecutor(workers=2)
    rows, killed = [], None
    for row in ex.rows(items, CohortOptions(thumbnails=False), tmp_path):
        if row is None:  # a heartbeat while no item finishes
            continue
        rows.append(row)
        if killed is None:
            busy = ex.busy()
            if busy:
                pid, killed = next(iter(busy.items()))
                os.kill(pid, signal.SIGKILL)
    assert killed is not None
    assert sorted(r["key"] for r in rows) == sorted(it.key for it in items)
    (dead,) = [r for r in rows if r["key"] == killed]
    assert dead["status"] == "error" and "SIGKILL" in dead["error"]
    assert all(r["status"] == "ok" for r in rows if r["key"] != killed)
    assert "[redacted]" in dead["path"]
    assert not [s for s in PHI if s in json.dumps(rows)]


def test_explain_writes_maps_aligned_with_the_scans(tmp_path):
    import numpy as np

    from napari_medcnn.io import load
    from napari_medcnn.saliency.export import sidecar_path

    root = tmp_path / "in"
    made = write_cohort(
        root, n_dicom=1, n_nifti=1, n_png=1, corrupt=(), non_image_folder=False,
        shape=(6, 48, 48),
    )  # fmt: skip
    out = tmp_path / "out"
    r = cli("cohort", str(root), "--out", str(out), "--workers", "1",
            "--explain", "gradcam")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {r["kind"]: r for r in read_rows(out)}
    assert set(rows) == {"dicom", "nifti", "image"}
    for row in rows.values():
        assert row["explain_method"] == "gradcam"
        sal = out / row["saliency_file"]
        assert sal.is_file() and sidecar_path(sal).is_file()
        # the trust check ran: AUCs in [0, 1] and a verdict
        for col in ("saliency_deletion_auc", "saliency_insertion_auc",
                    "saliency_deletion_auc_random"):  # fmt: skip
            assert 0.0 <= float(row[col]) <= 1.0
        assert row["saliency_trusted"] in ("True", "False")
    # a volume's map has the scan's shape as the reader loads it
    scan = load(made["nifti"][0])[0]
    (m,) = load(out / rows["nifti"]["saliency_file"])
    assert m.data.shape == scan.data.shape
    assert np.allclose(m.spacing, scan.spacing) and np.allclose(m.affine, scan.affine)
    img = np.load(out / rows["image"]["saliency_file"])
    assert img.shape == load(made["png"][0])[0].data.shape[:2]
    assert 0 <= int(rows["nifti"]["top_slice"]) < scan.data.shape[0]


def test_deidentify_first(tmp_path):
    from _helpers import PHI as HEADER_PHI
    from _helpers import grep_phi, phi_series

    root = tmp_path / "in"
    phi_series(root / "Doe_Jane" / "ct", n=5)
    original_uid = next(it.series_uid for it in discover([root]))
    out = tmp_path / "out"
    r = cli("cohort", str(root), "--out", str(out), "--workers", "1",
            "--deidentify", "--key-file", str(tmp_path / "project.key"))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    (row,) = read_rows(out)
    assert row["status"] == "ok"
    # the row names the de-identified series, not the original
    assert row["series_uid"] and row["series_uid"] != original_uid
    assert (out / "deid" / row["key"]).is_dir()
    # nothing the run wrote holds the header's PHI (the copies included)
    assert grep_phi(out / "deid") == []
    needles = set(HEADER_PHI) | {x for s in HEADER_PHI for x in s.split("^")}
    for p in out.rglob("*"):
        if p.is_file() and p.suffix not in (".png", ".dcm"):
            text = written_text(p)
            assert not [s for s in needles if s in text], p
