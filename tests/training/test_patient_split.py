"""Train/validation groups are patients (a hashed patient ID), not studies:
two studies of one patient land on the same side of every split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medcnn.io import load
from napari_medcnn.io.metadata import patient_hash
from napari_medcnn.io.synth import write_series
from napari_medcnn.training.data.splits import plan_split
from napari_medcnn.training.labels.store import LabelStore, group_key, sidecar_path

SLICES = 3


def _write(tmp_path, name: str, patient_id: str, seed: str):
    vol = np.random.default_rng(len(seed)).integers(0, 500, (SLICES, 8, 8))
    write_series(
        vol.astype(float),
        tmp_path / name,
        patient_id=patient_id,
        patient_name=f"Doe^{patient_id}",
        seed=seed,  # the seed makes the study UID: one study per call
    )
    (scan,) = load(tmp_path / name, include_phi=False)
    return scan


@pytest.fixture
def cohort(tmp_path):
    """Patient P1 with two studies, and five other patients with one each."""
    scans = {
        "p1_study1": _write(tmp_path, "p1_study1", "P1-SECRET", "p1a"),
        "p1_study2": _write(tmp_path, "p1_study2", "P1-SECRET", "p1b"),
    }
    for k in range(2, 7):
        scans[f"p{k}"] = _write(tmp_path, f"p{k}", f"P{k}-SECRET", f"p{k}")
    return scans


def test_two_studies_of_one_patient_share_a_group(cohort):
    a, b = cohort["p1_study1"], cohort["p1_study2"]
    assert a.metadata["study_uid"] != b.metadata["study_uid"]
    ga, gb = group_key(a.metadata), group_key(b.metadata)
    assert ga == gb and ga.startswith("patient:")
    others = {group_key(s.metadata) for k, s in cohort.items() if k.startswith("p")}
    assert len(others) == 6  # one group per patient
    for scan in cohort.values():  # only the hash travels, never the ID
        text = json.dumps(scan.layer_metadata())
        assert "SECRET" not in text and "patient_id" not in scan.metadata


def _labels_and_groups(cohort, key):
    labels, groups, owner = [], [], []
    for k, (name, scan) in enumerate(sorted(cohort.items())):
        labels += [k % 2] * SLICES  # alternate classes between scans
        groups += [key(scan.metadata)] * SLICES
        owner += [name] * SLICES
    return np.array(labels), np.array(groups, dtype=object), np.array(owner)


@pytest.mark.parametrize("kfold", [None, 3])
def test_two_studies_of_one_patient_land_on_the_same_side(cohort, kfold):
    labels, groups, owner = _labels_and_groups(cohort, group_key)
    p1 = np.isin(owner, ["p1_study1", "p1_study2"])
    for seed in range(12):
        plan = plan_split(labels, groups, val_fraction=0.3, kfold=kfold, seed=seed)
        assert plan.method in ("group_holdout", "group_kfold")
        for _, val in plan.folds:
            in_val = np.isin(np.flatnonzero(p1), val)
            assert in_val.all() or not in_val.any()


def test_a_split_by_study_would_have_separated_them(cohort):
    """The same cohort split by study UID puts the two studies on opposite
    sides for some seed: what the patient key prevents."""

    def by_study(md):
        return md["study_uid"]

    labels, groups, owner = _labels_and_groups(cohort, by_study)
    p1 = np.isin(owner, ["p1_study1", "p1_study2"])
    separated = 0
    for seed in range(12):
        plan = plan_split(labels, groups, val_fraction=0.3, kfold=None, seed=seed)
        in_val = np.isin(np.flatnonzero(p1), plan.folds[0][1])
        separated += bool(in_val.any() and not in_val.all())
    assert separated > 0


def test_fallbacks_study_then_none():
    assert group_key({"study_uid": "1.2.3"}).startswith("study:")
    assert group_key({"study_uid": "1.2.3", "patient_id_hash": None}).startswith(
        "study:"
    )
    assert group_key({}) is None and group_key(None) is None
    assert patient_hash("  ") is None and patient_hash(None) is None
    assert patient_hash(" P1 ") == patient_hash("P1") != patient_hash("P2")
    assert len(patient_hash("P1")) == 16 and "P1" not in patient_hash("P1")


def test_a_study_grouped_sidecar_is_upgraded_on_open(cohort, tmp_path):
    scan = cohort["p1_study1"]
    folder = tmp_path / "p1_study1"
    md_old = {k: v for k, v in scan.metadata.items() if k != "patient_id_hash"}
    store = LabelStore.open(folder, md_old, n_slices=SLICES, classes=["a", "b"])
    store.label_slice(0, "a")
    assert store.group.startswith("study:")  # as sidecars were written before
    again = LabelStore.open(folder, scan.metadata, n_slices=SLICES)
    assert again.group == group_key(scan.metadata)
    path = sidecar_path(folder, again.key)
    saved = json.loads(path.read_text())
    assert saved["group"].startswith("patient:") and "SECRET" not in path.read_text()
    assert again.ranges() == [(0, 0, "a")]
