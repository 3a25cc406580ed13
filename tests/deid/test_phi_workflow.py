"""PHI grep over the whole workflow run on scans that carry PHI.

A user loads a DICOM series whose headers (and folder name) hold a
patient's name, ID, birth date, accession number, address and physician,
then classifies it, explains the decision, labels slices, fine-tunes a
model on those labels, classifies again with the new model and exports
everything, all through the same core and command line a user runs.
Every file written (exports, maps, sidecars, checkpoints and cards), the
file names, everything printed and every log record are searched for the
PHI strings.  (De-identification itself is covered by test_deid_phi.py.)
"""

from __future__ import annotations

import json
import logging

import pytest
from _helpers import PHI, make_checkpoint, phi_series

from napari_medcnn.cli import main
from napari_medcnn.io import load
from napari_medcnn.training.labels.keys import LABELS_DIR
from napari_medcnn.training.labels.store import LabelStore

#: PHI values and the parts of them a leak could show
NEEDLES = {*PHI, "Doe", "Jane", "House", "Gregory", "DOE_JANE", "Privet", "Elsewhere"}


def _grep(text: str) -> list[str]:
    low = text.lower()
    return sorted(s for s in NEEDLES if s.lower() in low)


@pytest.mark.slow
def test_load_classify_explain_label_finetune_export_writes_no_phi(
    tmp_path, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "incoming" / "DOE_JANE"
    phi_series(src, n=12)
    work = tmp_path / "work"
    work.mkdir()
    parent = make_checkpoint(work / "models" / "parent")
    printed: list[str] = []

    def run(*args) -> int:
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        printed.append(out.out + out.err)
        return rc

    # load: the layer name must not repeat the description "CT for Doe^Jane"
    (scan,) = load(src)
    assert (
        _grep(scan.name) == [] and _grep(json.dumps(scan.metadata, default=str)) == []
    )

    # classify and export (JSON + CSV)
    assert run("classify", src, "--model", parent, "--json", work / "c1.json",
               "--csv", work / "c1.csv") == 0  # fmt: skip
    # explain: an aligned NIfTI map and a PNG, each with a JSON sidecar
    assert run("explain", src, "--model", parent, "--method", "gradcam",
               "--out", work / "map.nii.gz") == 0  # fmt: skip
    assert run("explain", src, "--model", parent, "--method", "gradcam",
               "--slice", "5", "--out", work / "slice.png") == 0  # fmt: skip

    # label slices (the sidecar lands beside the scan, in its folder)
    store = LabelStore.open(
        src, scan.metadata, scan.data, n_slices=scan.data.shape[0],
        classes=["no_tumor", "tumor"],
    )  # fmt: skip
    store.label_slices(0, 5, "no_tumor")
    store.label_slices(6, 11, "tumor")
    sidecars = sorted((src / LABELS_DIR).glob("*.json"))
    assert sidecars

    # fine-tune on those labels, then classify with the new model
    assert run("train", "--labels", *sidecars, "--model", parent, "--out",
               work / "tuned.safetensors", "--epochs", "2", "--min-per-class",
               "3", "--json", work / "train.json") == 0  # fmt: skip
    assert run("classify", src, "--model", work / "tuned.safetensors",
               "--scope", "slice", "--json", work / "c2.json") == 0  # fmt: skip

    written = [p for p in work.rglob("*") if p.is_file()]
    written += [p for p in (src / LABELS_DIR).rglob("*") if p.is_file()]
    assert {p.suffix for p in written} >= {
        ".json",
        ".csv",
        ".gz",
        ".png",
        ".safetensors",
    }
    hits = []
    for p in written:
        where = str(p.relative_to(tmp_path))
        text = p.read_bytes().decode("latin-1")
        hits += [
            f"{where}: {s}"
            for s in _grep(text + where.replace("incoming/DOE_JANE", ""))
        ]
    assert hits == []
    # what was shown: the input path the user typed may be echoed back
    shown = "\n".join(printed).replace(str(src), "<input>")
    assert _grep(shown) == []
    logs = "\n".join(r.getMessage() for r in caplog.records).replace(
        str(src), "<input>"
    )
    assert _grep(logs) == []
