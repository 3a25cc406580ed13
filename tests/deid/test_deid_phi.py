"""PHI grep: a workflow on scans with known PHI strings writes none of them.

The workflow, through the command line as a user runs it: ``deidentify``
the PHI-laden scans (JSON report, key file, manifest apart), then ``info``
and ``classify`` (JSON and CSV export) on the de-identified copies, with a
checkpoint (weights and model card) saved next to them.  Every file written
and the encrypted manifest (which holds the link, written apart, on
request), everything printed and every log record is searched for the PHI
strings; ``manifest show`` then decrypts the link.

A second test runs ``classify`` on the original scans: the record's input
path and layer name (from Series Description) both name the patient there,
and must come out redacted.
"""

from __future__ import annotations

import json

from _helpers import PHI, make_checkpoint, phi_series

from napari_medcnn.cli import main

#: the PHI of the series, and the parts of names a leak could show
NEEDLES = {*PHI, "Doe", "Jane", "House", "Gregory", "DOE_JANE", "Privet"}


def _grep(text: str) -> list[str]:
    return sorted(s for s in NEEDLES if s in text)


def test_workflow_writes_and_logs_no_phi(tmp_path, capsys, caplog):
    caplog.set_level("DEBUG")
    src = tmp_path / "incoming" / "DOE_JANE"
    phi_series(src / "ct", n=4)
    work = tmp_path / "work"
    work.mkdir()
    model = make_checkpoint(work / "models" / "tiny")
    printed = []

    def run(*args) -> int:
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        printed.append(out.out + out.err)
        return rc

    manifest = tmp_path / "private" / "manifest.json"
    secret = tmp_path / "private" / "passphrase"
    secret.parent.mkdir()
    secret.write_text("correct horse battery staple\n")
    assert run("deidentify", src, "--out", work / "deid", "--key",
               tmp_path / "private" / "project.key", "--manifest", manifest,
               "--passphrase-file", secret,
               "--report", work / "report.json", "--keep-dates-shifted",
               "--clean-descriptors") == 0  # fmt: skip
    assert run("info", work / "deid") == 0
    assert run("classify", work / "deid", "--model", model, "--json",
               work / "deid.json", "--csv", work / "deid.csv") == 0  # fmt: skip
    records = json.loads((work / "deid.json").read_text())
    assert len(records) == 1 and records[0]["label"]

    written = [p for p in work.rglob("*") if p.is_file()]
    assert len(written) >= 4 + 3  # the exports, the report, the model files
    hits = []
    for p in written:
        data = p.read_bytes().decode("latin-1")
        hits += [f"{p.relative_to(work)}: {s}" for s in _grep(data + str(p))]
    assert hits == []
    # what the user was shown (stderr may name input paths the user typed:
    # the one PHI-bearing folder name here is allowed only there)
    shown = "\n".join(printed).replace(str(src), "<input>")
    assert _grep(shown) == []
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert _grep(logs.replace(str(src), "<input>")) == []
    # the manifest, and only the manifest, links back to the patient: it is
    # encrypted, so not even its bytes hold the PHI
    blob = manifest.read_bytes().decode("latin-1")
    assert _grep(blob) == []
    assert run("manifest", "show", manifest, "--passphrase-file", secret) == 0
    assert "PID-0042" in printed[-1]


def test_classify_on_original_phi_scan_writes_no_phi(tmp_path, capsys):
    src = tmp_path / "incoming" / "DOE_JANE"
    phi_series(src / "ct", n=3)
    model = make_checkpoint(tmp_path / "models" / "tiny")
    out = tmp_path / "out.json"
    assert main(["classify", str(src), "--model", str(model), "--json", str(out)]) == 0
    capsys.readouterr()
    assert _grep(out.read_text()) == []
