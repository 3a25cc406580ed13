"""De-identification: pixel blanking (Clean Pixel Data), burned-in text
flags, and the ``napari-medcnn deidentify`` subcommand."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _helpers import KEY, phi_series
from pydicom.data import get_testdata_file

from napari_medcnn.cli import main
from napari_medcnn.deid.run import DeidOptions, deidentify


@pytest.fixture
def series(tmp_path):
    root = tmp_path / "in"
    return root, phi_series(root / "DOE_JANE" / "ct")


# -- pixels ------------------------------------------------------------------------
def test_blank_rectangles_recorded_and_rest_untouched(series, tmp_path):
    root, paths = series
    opts = DeidOptions(blank_rectangles=((2, 1, 4, 3), (50, 50, 5, 5)))
    result = deidentify([root], tmp_path / "out", key=KEY, options=opts)
    for src, out in zip(result.sources, result.outputs):
        a, d = pydicom.dcmread(src), pydicom.dcmread(out)
        pa, pd = a.pixel_array, d.pixel_array
        assert (pd[1:4, 2:6] == pa.min()).all()
        mask = np.ones(pa.shape, bool)
        mask[1:4, 2:6] = False
        np.testing.assert_array_equal(pd[mask], pa[mask])
        assert "113101" in [i.CodeValue for i in d.DeidentificationMethodCodeSequence]
        assert "Clean Pixel Data: 1 rectangle(s) blanked" in d.DeidentificationMethod
    assert ("(7FE0,0010)", "C") in {(r.tag, r.action) for r in result.report.rows()}


def test_blank_compressed_colour_image(tmp_path):
    src = Path(get_testdata_file("SC_rgb_rle.dcm", download=False))
    opts = DeidOptions(blank_rectangles=((0, 0, 10, 5),))
    result = deidentify([src], tmp_path / "out", key=KEY, options=opts)
    d = pydicom.dcmread(result.outputs[0])
    assert not d.file_meta.TransferSyntaxUID.is_compressed
    orig = pydicom.dcmread(src).pixel_array
    px = d.pixel_array
    assert (px[:5, :10] == orig.min()).all()
    np.testing.assert_array_equal(px[5:], orig[5:])
    assert result.report.flagged  # SC/OT: may carry burned-in text


def test_burned_in_flags(tmp_path):
    us = Path(get_testdata_file("ExplVR_BigEnd.dcm", download=False))  # US
    sc = Path(get_testdata_file("SC_rgb.dcm", download=False))
    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    result = deidentify([us, sc, ct], tmp_path / "out", key=KEY)
    flagged = result.report.flagged
    assert len(flagged) == 2
    reasons = sorted(", ".join(r) for r in flagged.values())
    assert any("modality US" in r for r in reasons)
    assert any("secondary capture" in r for r in reasons)
    assert "burned-in" in result.report.summary_text()


# -- command line ------------------------------------------------------------------
def test_cli_deidentify(series, tmp_path, capsys):
    root, _ = series
    key, mf, rep = tmp_path / "k" / "proj.key", tmp_path / "m.json", tmp_path / "r.json"
    args = ["--keep-dates-shifted", "--keep-patient-characteristics"]
    args += ["--key", str(key), "--manifest", str(mf), "--report", str(rep)]
    # no passphrase: the old plaintext key and manifest, on explicit request
    # only (the encrypted ones are tested in test_manifest_cli.py)
    args += ["--plaintext-manifest"]
    rc = main(["deidentify", str(root), "--out", str(tmp_path / "out"), *args])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "--plaintext-manifest is unsafe" in out.err
    assert "will not be encrypted" in out.err
    assert "wrote 5 file(s)" in out.out and "(0010,0010)" in out.out
    for phi in ("Doe", "PID-0042", "ACC-77812", "19600214"):
        assert phi not in out.out and phi not in rep.read_text()
    assert key.exists() and mf.exists()
    d = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    assert d.PatientSex == "F" and d.PatientAge == "061Y"
    assert [i.CodeValue for i in d.DeidentificationMethodCodeSequence] == [
        "113100", "113107", "113108", "113111"]  # fmt: skip
    # same key again: same names, so a later export adds to this one
    names = sorted(p.name for p in (tmp_path / "out").rglob("*.dcm"))
    main(["deidentify", str(root), "--out", str(tmp_path / "again"), "--key", str(key)])
    assert sorted(p.name for p in (tmp_path / "again").rglob("*.dcm")) == names


def test_cli_dry_run_and_errors(series, tmp_path, capsys):
    root, _ = series
    (root / "readme.txt").write_text("x")
    rc = main(["deidentify", str(root), "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0  # a skipped non-DICOM file is reported, not an error
    assert "dry run: nothing was written" in out.out and "readme.txt" in out.err
    assert "(0008,0050)  Z" in out.out
    assert main(["deidentify", str(root)]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    assert main(["deidentify", str(root), "--out", str(root / "x")]) == 2
    assert "overlaps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["deidentify", str(root), "--out", "o", "--blank", "1,2,3"])


# -- exit status and output folder (issue 13) ----------------------------------
def _deid(capsys, *args):
    rc = main(["deidentify", *map(str, args)])
    return rc, capsys.readouterr()


def test_cli_skipped_non_dicom_is_not_an_error(series, tmp_path, capsys):
    root, _ = series
    (root / "notes.txt").write_text("scanner notes")
    out = tmp_path / "out"
    rc, cap = _deid(capsys, root, "--out", out)
    assert rc == 0, cap.err
    assert "skipped: " in cap.err and "notes.txt: not a DICOM file" in cap.err
    assert "wrote 5 file(s)" in cap.out and len(list(out.rglob("*.dcm"))) == 5


def test_cli_nothing_to_do_exits_2_and_creates_nothing(series, tmp_path, capsys):
    root, _ = series
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    # an empty folder: 0 files is nothing done, in a dry run too
    rc, cap = _deid(capsys, empty, "--out", out)
    assert rc == 2 and "no DICOM file" in cap.err
    assert not out.exists()
    rc, cap = _deid(capsys, empty, "--dry-run")
    assert rc == 2 and "nothing to de-identify (no DICOM file)" in cap.err
    # a folder of non-DICOM files only
    (empty / "notes.txt").write_text("x")
    rc, cap = _deid(capsys, empty, "--out", out)
    assert rc == 2 and "no DICOM file" in cap.err and not out.exists()
    # an input that does not exist: bad arguments, named
    rc, cap = _deid(capsys, tmp_path / "nothere", root, "--out", out)
    assert rc == 2 and "no such file or folder" in cap.err and "nothere" in cap.err
    assert not out.exists()
    # every DICOM file fails: nothing done, no folder left behind
    bad = tmp_path / "bad"
    bad.mkdir()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    del ds.SOPInstanceUID
    ds.save_as(bad / "no_uid.dcm")
    rc, cap = _deid(capsys, bad, "--out", out)
    assert rc == 2 and "failed: " in cap.err and not out.exists()
    # one good file and one that fails: done with a failure
    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    rc, cap = _deid(capsys, bad / "no_uid.dcm", ct, "--out", out)
    assert rc == 1 and "failed: " in cap.err and len(list(out.rglob("*.dcm"))) == 1


def test_cli_refuses_a_non_empty_output_folder(series, tmp_path, capsys):
    root, _ = series
    out = tmp_path / "out"
    assert _deid(capsys, root, "--out", out)[0] == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    # a second run (a new one-off key) would add a second, differently
    # pseudonymised copy: refused, and nothing is added
    rc, cap = _deid(capsys, root, "--out", out)
    assert rc == 2 and "not empty" in cap.err and str(out) in cap.err
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    # --overwrite is about files, never about mixing two exports
    assert _deid(capsys, root, "--out", out, "--overwrite")[0] == 2
    (tmp_path / "empty_out").mkdir()
    assert _deid(capsys, root, "--out", tmp_path / "empty_out")[0] == 0


def test_cli_refuses_to_overwrite_report_and_manifest(series, tmp_path, capsys):
    root, _ = series
    report, manifest = tmp_path / "report.json", tmp_path / "map.json"
    report.write_text("my notes")
    rc, cap = _deid(capsys, root, "--dry-run", "--report", report)
    assert rc == 2 and str(report) in cap.err and "--overwrite" in cap.err
    assert report.read_text() == "my notes"
    rc, cap = _deid(capsys, root, "--dry-run", "--report", report, "--overwrite")
    assert rc == 0 and json.loads(report.read_text())["files"] == 5
    manifest.write_text("keep me")
    out = tmp_path / "out"
    # (plaintext manifests here, the old behaviour, now asked for explicitly)
    rc, cap = _deid(capsys, root, "--out", out, "--manifest", manifest,
                    "--plaintext-manifest")  # fmt: skip
    assert rc == 2 and str(manifest) in cap.err
    assert manifest.read_text() == "keep me" and not out.exists()
    rc, cap = _deid(capsys, root, "--out", out, "--manifest", manifest, "--overwrite",
                    "--plaintext-manifest")  # fmt: skip
    assert rc == 0 and json.loads(manifest.read_text())["files"]
    # one path for two outputs of the same run
    rc, cap = _deid(capsys, root, "--dry-run", "--report", report, "--manifest",
                    report, "--overwrite")  # fmt: skip
    assert rc == 0  # a dry run writes no manifest
    rc, cap = _deid(capsys, root, "--out", tmp_path / "o2", "--report", report,
                    "--manifest", report, "--overwrite",
                    "--plaintext-manifest")  # fmt: skip
    assert rc == 2 and "same file" in cap.err


def test_dry_run_names_the_input_of_each_burned_in_flag(tmp_path, capsys):
    """The burned-in list names the input file (standard error), as well as
    the pseudonymised output name (the report, PHI-free)."""
    src = tmp_path / "in" / "DOE_JANE"
    src.mkdir(parents=True)
    for name in ("SC_rgb.dcm", "CT_small.dcm"):
        shutil.copy(get_testdata_file(name, download=False), src / name)
    report = tmp_path / "r.json"
    rc, cap = _deid(capsys, src.parent, "--dry-run", "--report", report)
    assert rc == 0
    lines = [ln for ln in cap.err.splitlines() if ln.startswith("burned-in text?")]
    assert len(lines) == 1
    assert str(src / "SC_rgb.dcm") in lines[0] and "secondary capture" in lines[0]
    flagged = json.loads(report.read_text())["burned_in_flagged"]
    (name,) = flagged
    assert f"(output {name})" in lines[0] and name in cap.out
    # the report and standard output stay free of input paths
    assert "DOE_JANE" not in report.read_text() and "DOE_JANE" not in cap.out


def test_every_subcommand_documents_its_exit_status(capsys):
    from napari_medcnn.cli import build_parser

    sub = next(
        a
        for a in build_parser()._actions
        if a.__class__.__name__ == "_SubParsersAction"
    )
    assert set(sub.choices) >= {"info", "classify", "explain", "train", "demo",
                                "deidentify"}  # fmt: skip
    for name, parser in sub.choices.items():
        text = " ".join(parser.format_help().split())
        assert "Exit status: 0 done; 1 done, but some items failed" in text, name
        assert "2 nothing done" in text, name
