"""No command replaces a file it did not create in the same run (issue 13):
the shared check in ``_atomic``, and every CLI subcommand that writes files
(classify, explain and its sidecar, train, deidentify in test_deid_cli.py,
demo --screenshot), plus the demo's no-display message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import make_checkpoint
from pydicom.data import get_testdata_file

from napari_medcnn._atomic import OverwriteError, atomic_write, check_overwrite
from napari_medcnn.cli import main
from napari_medcnn.cli.demo import no_display_reason

CT_SMALL = Path(get_testdata_file("CT_small.dcm", download=False))
DATA = Path(__file__).resolve().parents[2] / "napari_medcnn" / "data"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


# -- the shared check ------------------------------------------------------------
def test_check_overwrite_names_the_file(tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text("{}")
    with pytest.raises(OverwriteError, match="mine.json already exists") as err:
        check_overwrite([tmp_path / "new.json", mine])
    assert err.value.path == mine and isinstance(err.value, FileExistsError)
    assert check_overwrite([mine, None], overwrite=True) == [mine]
    with pytest.raises(OverwriteError, match="folder"):
        check_overwrite(tmp_path, overwrite=True)  # never a folder
    with pytest.raises(ValueError, match="same file"):
        check_overwrite([tmp_path / "a.csv", tmp_path / "x" / ".." / "a.csv"])


def test_atomic_write_without_overwrite_keeps_the_old_file(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write(path, b"one", overwrite=False)
    with pytest.raises(OverwriteError):
        atomic_write(path, b"two", overwrite=False)
    assert path.read_bytes() == b"one"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary
    atomic_write(path, b"three")  # the plugin's own files: replaced
    assert path.read_bytes() == b"three"


# -- classify then explain: the new user's report ----------------------------------
def test_explain_does_not_replace_a_classify_export(tmp_path, capsys, tiny):
    ct_json = tmp_path / "ct.json"
    rc = main(["classify", str(CT_SMALL), "--model", str(tiny),
               "--json", str(ct_json)])  # fmt: skip
    assert rc == 0
    records = ct_json.read_text()
    capsys.readouterr()
    # the sidecar of ct.png is ct.json: refused before any work, nothing
    # written, the message names the file and the way out
    rc = main(["explain", str(CT_SMALL), "--model", str(tiny), "--no-metrics",
               "--out", str(tmp_path / "ct.png")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and str(ct_json) in err and "--overwrite" in err
    assert ct_json.read_text() == records
    assert not (tmp_path / "ct.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.json"]
    # asked for: both are written
    rc = main(["explain", str(CT_SMALL), "--model", str(tiny), "--no-metrics",
               "--out", str(tmp_path / "ct.png"), "--overwrite"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert json.loads(ct_json.read_text())["file"] == "ct.png"
    # the map itself is refused too
    rc = main(["explain", str(CT_SMALL), "--model", str(tiny), "--no-metrics",
               "--out", str(tmp_path / "ct.png")])  # fmt: skip
    assert rc == 2 and "ct.png already exists" in capsys.readouterr().err


def test_classify_refuses_existing_outputs_before_any_work(tmp_path, capsys, tiny):
    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    cs.write_text("my spreadsheet")
    rc = main(["classify", str(CT_SMALL), "--model", str(tiny), "--json", str(js),
               "--csv", str(cs)])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 2 and str(cs) in out.err and out.out == ""  # nothing classified
    assert cs.read_text() == "my spreadsheet" and not js.exists()
    # --json and --csv on one file: the second would replace the first
    rc = main(["classify", str(CT_SMALL), "--model", str(tiny), "--json", str(js),
               "--csv", str(js)])  # fmt: skip
    assert rc == 2 and "same file" in capsys.readouterr().err
    rc = main(["classify", str(CT_SMALL), "--model", str(tiny), "--json", str(js),
               "--csv", str(cs), "--overwrite"])  # fmt: skip
    assert rc == 0
    assert len(cs.read_text().splitlines()) == 2  # header and one record
    assert json.loads(js.read_text())[0]["label"]


def test_classify_prints_the_scope_the_option_offers(tmp_path, capsys, tiny):
    import nibabel as nib
    import numpy as np

    vol = np.random.default_rng(1).random((20, 22, 4)).astype(np.float32)
    path = tmp_path / "head.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.5, 1.0])), path)
    assert main(["classify", str(path), "--model", str(tiny)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "(slice, 4 slices" in line, line  # --scope slice|volume
    assert "(slices" not in line


def test_train_refuses_an_existing_checkpoint(tmp_path, capsys, tiny):
    out = tmp_path / "tuned.safetensors"
    out.with_suffix(".json").write_text("{}")  # someone's card, no weights
    labels = tmp_path / "labels.csv"
    labels.write_text("a.png,x\n")
    rc = main(["train", "--labels", str(labels), "--model", str(tiny),
               "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "tuned.json already exists" in err
    assert out.with_suffix(".json").read_text() == "{}" and not out.exists()
    summary = tmp_path / "s.json"
    summary.write_text("keep")
    rc = main(["train", "--labels", str(labels), "--model", str(tiny),
               "--out", str(tmp_path / "other"), "--json", str(summary)])  # fmt: skip
    assert rc == 2 and "s.json already exists" in capsys.readouterr().err
    assert summary.read_text() == "keep"
    # the summary cannot be written over the run's own card either
    card = tmp_path / "c.json"
    rc = main(["train", "--labels", str(labels), "--model", str(tiny),
               "--out", str(tmp_path / "c"), "--json", str(card)])  # fmt: skip
    assert rc == 2 and "same file" in capsys.readouterr().err


# -- demo ------------------------------------------------------------------------
def test_demo_refuses_an_existing_screenshot_before_napari(tmp_path, capsys):
    png = tmp_path / "demo.png"
    png.write_bytes(b"not mine to replace")
    assert main(["demo", "--screenshot", str(png), "--quit"]) == 2
    assert "demo.png already exists" in capsys.readouterr().err
    assert png.read_bytes() == b"not mine to replace"


def test_no_display_is_detected():
    linux = "linux"
    assert "no display" in no_display_reason({}, linux)
    assert "scripts/demo.sh" in no_display_reason({"DISPLAY": ""}, linux)
    assert no_display_reason({"DISPLAY": ":0"}, linux) is None
    assert no_display_reason({"WAYLAND_DISPLAY": "wayland-0"}, linux) is None
    assert no_display_reason({"QT_QPA_PLATFORM": "offscreen"}, linux) is None
    assert no_display_reason({"QT_QPA_PLATFORM": "xcb"}, linux) is not None
    assert no_display_reason({}, "darwin") is None
    assert no_display_reason({}, "win32") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland")
def test_demo_without_display_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "napari_medcnn.cli", "demo", "--quit"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no display" in proc.stderr and "scripts/demo.sh" in proc.stderr
    assert "xcb" not in proc.stderr
