"""The ``napari-medcnn`` command line: ``info`` (no PHI) and ``demo``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from _helpers import PATIENT_NAMES

from napari_medcnn.cli import main


def _info(capsys, *paths):
    rc = main(["info", *map(str, paths)])
    return rc, json.loads(capsys.readouterr().out)


def test_info_dicom_file(capsys, ct_small_path):
    rc, out = _info(capsys, ct_small_path)
    assert rc == 0
    (scan,) = out
    assert scan["shape"] == [128, 128]
    assert scan["modality"] == "CT"
    assert scan["spacing_mm"] == pytest.approx([0.661468, 0.661468])
    assert set(scan["quality"]) == {"ok", "issues"}


def test_info_series_has_no_phi(capsys, two_series_folder):
    rc, out = _info(capsys, two_series_folder.root)
    assert rc == 0
    assert sorted(s["modality"] for s in out) == ["CT", "MR"]
    ct = next(s for s in out if s["modality"] == "CT")
    assert ct["shape"] == list(two_series_folder.ct_volume.shape)
    assert ct["spacing_mm"] == pytest.approx(list(two_series_folder.ct_spacing))
    text = json.dumps(out)
    for name in PATIENT_NAMES:
        for part in name.split("^"):
            assert part not in text
    assert "PID-" not in text


def test_info_reports_unreadable_path(capsys, tmp_path):
    rc, out = _info(capsys, tmp_path / "missing.dcm")
    assert rc == 2  # nothing could be read: nothing done
    assert out[0]["error"]


@pytest.mark.gui
def test_demo_screenshot(tmp_path):
    png = tmp_path / "demo.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_medcnn.cli",
            "demo",
            "--screenshot",
            str(png),
            "--quit",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    from PIL import Image

    img = np.asarray(Image.open(png).convert("L"), dtype=float)
    assert img.shape[0] > 400 and img.shape[1] > 600
    assert img.std() > 10  # not a blank window
