"""``napari-medcnn classify``: DICOM file, DICOM series, NIfTI; JSON and CSV
records, per-input errors, and no patient data in anything written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from _helpers import make_checkpoint

from napari_medcnn.cli import main

DATA = Path(__file__).resolve().parents[2] / "napari_medcnn" / "data"
PHI = ("Doe", "Jane", "PID-7788", "19700101")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_models")
    return {
        "slice": make_checkpoint(root / "slice"),
        "sequence": make_checkpoint(root / "seq", kind="sequence"),
    }


@pytest.fixture
def series_root(tmp_path):
    """Two MR series of patient Doe^Jane (PID-7788) in one folder."""
    from napari_medcnn.io.synth import write_series

    rng = np.random.default_rng(0)
    for i, n in enumerate((5, 3)):
        write_series(
            rng.integers(0, 800, size=(n, 24, 20)).astype(np.float64),
            tmp_path / "dicom" / f"s{i}",
            spacing=(3.0, 0.9, 0.9),
            modality="MR",
            series_description=f"T1 part {i}",
            series_number=i + 1,
            patient_name="Doe^Jane",
            patient_id="PID-7788",
            seed=f"s{i}",
        )
    return tmp_path / "dicom"


def _classify(capsys, tmp_path, *args):
    js, cs = tmp_path / "out.json", tmp_path / "out.csv"
    for old in (js, cs):  # each call is a new run: no file of an earlier one
        old.unlink(missing_ok=True)
    rc = main(["classify", *map(str, args), "--json", str(js), "--csv", str(cs)])
    out = capsys.readouterr()
    records = json.loads(js.read_text())
    rows = list(csv.DictReader(cs.open(newline="")))
    everything = out.out + out.err + js.read_text() + cs.read_text()
    for phi in PHI:
        assert phi not in everything
    return rc, records, rows, out


def test_dicom_file_slice(capsys, tmp_path, models):
    path = DATA / "colin27_t1_axial.dcm"
    rc, records, rows, out = _classify(
        capsys, tmp_path, path, "--model", models["slice"]
    )
    assert rc == 0
    (rec,) = records
    assert rec["path"] == str(path) and rec["scope"] == "slice"
    assert rec["label"] in ("no_tumor", "tumor") and rec["modality"] == "MR"
    assert rec["series_uid"] and rec["model_id"] and rec["n_slices"] is None
    assert sum(rec["probabilities"]) == pytest.approx(1, abs=1e-5)
    (row,) = rows
    assert float(row["p_tumor"]) == pytest.approx(rec["probabilities"][1], abs=1e-5)
    assert row["slice_probabilities"] == "" and row["label"] == rec["label"]
    assert rec["label"] in out.out and "wrote 1 record(s)" in out.out


def test_dicom_series_folder_one_record_per_series(
    capsys, tmp_path, models, series_root
):
    rc, records, rows, _out = _classify(
        capsys, tmp_path, series_root, "--model", models["slice"], "--scope", "slice"
    )
    assert rc == 0
    assert sorted(r["n_slices"] for r in records) == [3, 5]
    assert len({r["series_uid"] for r in records}) == 2
    for rec, row in zip(records, rows):
        assert rec["scope"] == "slices" and rec["path"] == str(series_root)
        assert np.asarray(rec["slice_probabilities"]).shape == (rec["n_slices"], 2)
        # the scan's probabilities are the mean over its slices
        np.testing.assert_allclose(
            np.mean(rec["slice_probabilities"], axis=0), rec["probabilities"], atol=1e-5
        )
        assert json.loads(row["slice_probabilities"]) == rec["slice_probabilities"]
        assert row["series_uid"] == rec["series_uid"]


def test_nifti_and_volume_scope(capsys, tmp_path, models):
    import nibabel as nib

    vol = np.random.default_rng(1).random((20, 22, 7)).astype(np.float32)
    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.5, 1.0])), path)
    rc, records, _rows, _out = _classify(
        capsys, tmp_path, path, "--model", models["slice"]
    )
    assert rc == 0 and records[0]["scope"] == "slices"
    assert records[0]["n_slices"] == 7  # the reader's (z, y, x): k is z
    rc, records, _rows, _out = _classify(
        capsys, tmp_path, path, "--model", models["sequence"]
    )
    assert rc == 0 and records[0]["scope"] == "volume"  # from the card
    assert records[0]["n_slices"] == 7  # the CNN+RNN's per-slice outputs


def test_bad_input_is_reported_and_others_go_on(capsys, tmp_path, models):
    missing = tmp_path / "nothere.dcm"
    good = DATA / "colin27_t1_axial.dcm"
    rc, records, rows, out = _classify(
        capsys, tmp_path, missing, good, "--model", models["slice"]
    )
    assert rc == 1
    assert records[0]["path"] == str(missing) and records[0]["error"]
    assert records[1]["label"] and not records[1].get("error")
    assert rows[0]["error"] and rows[1]["error"] == ""
    assert "ERROR" in out.out
    # a 2D image cannot go through a whole-volume model: per-input error
    rc, records, _rows, _out = _classify(
        capsys, tmp_path, good, "--model", models["sequence"]
    )
    assert rc == 2 and "whole volumes" in records[0]["error"]  # none done


def test_model_problems_stop_before_any_input(capsys, tmp_path, models, monkeypatch):
    import napari_medcnn.models.checkpoint as checkpoint

    good = str(DATA / "colin27_t1_axial.dcm")
    assert (
        main(["classify", good, "--model", str(models["slice"]), "--scope", "volume"])
        == 2
    )
    assert "--scope slice" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    bad.with_suffix(".json").write_text(
        models["slice"].with_suffix(".json").read_text()
    )
    assert main(["classify", good, "--model", str(bad)]) == 2
    assert "cannot read weights" in capsys.readouterr().err
    monkeypatch.setattr(checkpoint, "DEFAULT_MODEL", tmp_path / "none.safetensors")
    assert main(["classify", good]) == 2
    assert "default model not found" in capsys.readouterr().err
