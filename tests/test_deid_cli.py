"""De-identification: pixel blanking (Clean Pixel Data), burned-in text
flags, and the ``napari-medcnn deidentify`` subcommand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from test_deid_export import KEY, phi_series

from napari_medcnn.cli import main
from napari_medcnn.io.deid import DeidOptions, deidentify


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
    rc = main(["deidentify", str(root), "--out", str(tmp_path / "out"), *args])
    out = capsys.readouterr()
    assert rc == 0, out.err
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
    assert rc == 1  # a file was skipped
    assert "dry run: nothing was written" in out.out and "readme.txt" in out.err
    assert "(0008,0050)  Z" in out.out
    assert main(["deidentify", str(root)]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
    assert main(["deidentify", str(root), "--out", str(root / "x")]) == 2
    assert "overlaps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["deidentify", str(root), "--out", "o", "--blank", "1,2,3"])
