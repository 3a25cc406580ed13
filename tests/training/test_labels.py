"""Label store: labelling API, sidecars that survive reopening, no PHI,
corrupt files kept, and the CSV reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medcnn.training.labels.store import (
    LABELS_DIR,
    LabelsError,
    LabelStore,
    SidecarCorrupt,
    read_label_csv,
    scan_key,
    sidecar_path,
)


@pytest.fixture
def scan_file(tmp_path):
    p = tmp_path / "scan.nii.gz"
    p.write_bytes(b"not really a nifti, but bytes to hash")
    return p


def test_volume_labels_survive_close_and_reopen(scan_file):
    store = LabelStore.open(scan_file, n_slices=20, classes=["normal", "lesion"])
    store.label_slices(3, 7, "lesion")
    store.label_slice(10, 1)  # key 1 = first class
    store.label_slices(12, 11, 2)  # reversed range, key 2
    store.label_volume("lesion")
    sidecar = scan_file.with_name("scan.nii.gz.medcnn-labels.json")
    assert sidecar.exists()  # saved on every change, no explicit save
    del store  # "napari closes"
    again = LabelStore.open(scan_file, n_slices=20)
    assert again.classes == ["normal", "lesion"]
    want = dict.fromkeys([3, 4, 5, 6, 7, 11, 12], "lesion") | {10: "normal"}
    assert again.slices == want
    assert again.volume_label == "lesion"
    assert again.counts() == {"normal": 1, "lesion": 8}
    assert again.ranges() == [(3, 7, "lesion"), (10, 10, "normal"), (11, 12, "lesion")]
    items = again.items()
    assert items[0].kind == "volume" and items[1].index == 3
    assert items[1].text() == "slice 3: lesion"
    again.unlabel_slices(4, 6)
    assert LabelStore.open(scan_file).ranges()[0] == (3, 3, "lesion")
    assert again.unlabelled_slices()[:4] == [0, 1, 2, 4]


def test_sidecar_holds_no_phi(tmp_path):
    meta = {
        "series_uid": "1.2.3.4",
        "study_uid": "1.2.3",
        "patient_name": "Doe^Jane",
        "patient_id": "PID-1",
    }
    folder = tmp_path / "Doe_Jane_series"
    folder.mkdir()
    store = LabelStore.open(folder, meta, n_slices=5, classes=["a", "b"])
    store.label_slice(0, "a")
    path = sidecar_path(folder, scan_key(folder, meta))
    assert path.parent == folder / LABELS_DIR  # DICOM series: in a folder
    text = path.read_text()
    for phi in ("Doe", "Jane", "PID-1", '1.2.3"'):
        assert phi not in text
    d = json.loads(text)
    assert d["key"] == "series:1.2.3.4" and d["group"].startswith("study:")
    assert d["version"] == 1


def test_key_is_content_hash_without_uid(tmp_path, scan_file):
    k = scan_key(scan_file)
    assert k.startswith("sha256:")
    copy = tmp_path / "renamed.nii.gz"
    copy.write_bytes(scan_file.read_bytes())
    assert scan_key(copy) == k  # content, not name
    data = np.arange(12).reshape(3, 4)
    assert scan_key(None, None, data) == scan_key(None, None, data.copy())
    assert scan_key(None, None, data) != scan_key(None, None, data.T)


def test_corrupt_sidecar_is_kept_and_recovered(scan_file):
    store = LabelStore.open(scan_file, classes=["a", "b"])
    store.label_image("a")
    store.label_image("b")  # second save: the first is kept as .bak
    sidecar = store.path
    sidecar.write_text("{ truncated")
    with pytest.raises(SidecarCorrupt, match="not valid JSON"):
        LabelStore.open(scan_file)
    assert sidecar.read_text() == "{ truncated"  # left untouched
    rec = LabelStore.open(scan_file, on_error="reset")
    assert rec.image_label == "a"  # from the .bak
    assert "corrupt-1" in rec.warnings[0]
    assert sidecar.with_name(sidecar.name + ".corrupt-1").read_text() == "{ truncated"


def test_changed_scan_and_newer_version_are_refused(scan_file):
    store = LabelStore.open(scan_file, classes=["a", "b"])
    store.label_image("a")
    d = json.loads(store.path.read_text())
    d["version"] = 99
    store.path.write_text(json.dumps(d))
    with pytest.raises(SidecarCorrupt, match="newer"):
        LabelStore.open(scan_file)
    d["version"] = 1
    store.path.write_text(json.dumps(d))
    scan_file.write_bytes(b"other content")
    with pytest.raises(LabelsError, match="another scan"):
        LabelStore.open(scan_file)


def test_bad_labelling_calls_have_clear_messages(scan_file):
    store = LabelStore.open(scan_file, n_slices=4, classes=["a", "b"])
    with pytest.raises(LabelsError, match="unknown class 'c'"):
        store.label_slice(0, "c")
    with pytest.raises(LabelsError, match="outside the volume's 4 slices"):
        store.label_slices(2, 4, "a")
    with pytest.raises(LabelsError, match="key 3 has no class"):
        store.label_slice(0, 3)
    with pytest.raises(LabelsError, match="volume"):
        store.label_image("a")
    store.label_slice(0, "b")
    with pytest.raises(LabelsError, match="still used"):
        store.set_classes(["a"])
    image = LabelStore(scan_key(scan_file), ["a", "b"])
    with pytest.raises(LabelsError, match="no slices"):
        image.label_slice(0, "a")


def test_read_label_csv(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,patient\nimg/a.png,tumor,P1\n/abs/b.png,normal,\n")
    rows = read_label_csv(csv)
    assert rows[0].path == tmp_path / "img" / "a.png"
    assert rows[0].label == "tumor" and rows[0].group.startswith("group:")
    assert "P1" not in rows[0].group
    assert str(rows[1].path) == "/abs/b.png" and rows[1].group is None
    bad = tmp_path / "bad.csv"
    bad.write_text("a.png\n")
    with pytest.raises(LabelsError, match="bad.csv:1"):
        read_label_csv(bad)


def test_slice_labels_become_prepared_examples(tmp_path):
    from napari_medcnn.preprocessing.record import default_record
    from napari_medcnn.training.data.dataset import LabeledSet, examples_from_scan

    rec = default_record((16, 16))
    vol = np.random.default_rng(0).random((6, 20, 24)).astype(np.float32)
    meta = {"series_uid": "9.9", "study_uid": "9"}
    store = LabelStore.open(None, meta, n_slices=6, classes=["a", "b", "unused"])
    store.label_slices(0, 2, "a")
    store.label_slices(4, 5, "b")
    store.label_volume("b")
    part = examples_from_scan(store, [vol], rec, (3.0, 0.8, 0.8))
    assert part.x.shape == (5, 1, 16, 16) and part.y.tolist() == [0, 0, 0, 1, 1]
    assert part.items[3] == "series:9.9#slice:4"
    assert set(part.groups) == {store.group}  # one study: one group
    assert "volume label skipped" in part.warnings[0]
    assert part.counts() == {"a": 3, "b": 2, "unused": 0}
    trimmed = part.without_empty_classes()
    assert trimmed.classes == ["a", "b"] and trimmed.y.tolist() == part.y.tolist()
    both = LabeledSet.concat([part, part], ["b", "a", "unused"])
    assert both.y.tolist()[:5] == [1, 1, 1, 0, 0]
    store.n_slices = 9
    store.label_slice(8, "a")
    with pytest.raises(LabelsError, match="do not match"):
        examples_from_scan(store, [vol], rec)
