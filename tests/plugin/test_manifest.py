"""The npe2 manifest: valid, every contribution resolvable, readers reachable
through npe2, and shipped inside the wheel."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import npe2
import numpy as np
import pytest

PLUGIN = "napari-medcnn"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest():
    # npe2.read() uses the global manager: make sure it knows the plugin
    pm = npe2.PluginManager.instance()
    pm.discover()
    return pm.get_manifest(PLUGIN)


def test_npe2_validate_cli():
    npe2_exe = Path(sys.executable).with_name("npe2")
    cmd = [str(npe2_exe)] if npe2_exe.exists() else [sys.executable, "-m", "npe2"]
    proc = subprocess.run(
        [*cmd, "validate", PLUGIN], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_every_command_resolves(manifest):
    for cmd in manifest.contributions.commands:
        module, _, attr = cmd.python_name.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        assert callable(obj), cmd.id


def test_widget_and_sample_names_match_cli(manifest):
    from napari_medcnn.cli import DEMO_WIDGETS, SAMPLE_KEYS

    names = {w.display_name for w in manifest.contributions.widgets}
    assert set(DEMO_WIDGETS) <= names
    assert {s.key for s in manifest.contributions.sample_data} == set(SAMPLE_KEYS)


def _read(path):
    npe2.PluginManager.instance().discover()
    layers = npe2.read([str(path)], stack=False, plugin_name=PLUGIN)
    assert layers, path
    return layers


def test_npe2_read_dicom_file(ct_small_path):
    data, kwargs, kind = _read(ct_small_path)[0]
    assert kind == "image"
    assert np.asarray(data).shape == (128, 128)
    assert kwargs["metadata"]["modality"] == "CT"
    assert all(s > 0 for s in kwargs["scale"])


def test_npe2_read_series_folder(two_series_folder):
    layers = _read(two_series_folder.ct_dir)
    assert len(layers) == 1
    data, kwargs, _ = layers[0]
    assert np.asarray(data).shape == two_series_folder.ct_volume.shape
    np.testing.assert_allclose(kwargs["scale"], two_series_folder.ct_spacing)


def test_npe2_read_nifti(tmp_path):
    import nibabel as nib

    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.diag([1.5, 2.0, 2.5, 1.0])), path)
    data, kwargs, _ = _read(path)[0]
    assert sorted(np.asarray(data).shape) == [4, 5, 6]
    assert sorted(kwargs["scale"]) == [1.5, 2.0, 2.5]


def test_wheel_ships_manifest(tmp_path):
    """Build a wheel from a copy of the sources (the repo stays clean) and
    check napari.yaml is inside, with the entry point that finds it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "napari.yaml"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(
        REPO / "napari_medcnn",
        src / "napari_medcnn",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    out = tmp_path / "dist"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("napari_medcnn-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "napari_medcnn/napari.yaml" in names
        shipped = zf.read("napari_medcnn/napari.yaml").decode()
        (ep,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(ep).decode()
    assert shipped == (REPO / "napari.yaml").read_text()
    assert "napari-medcnn = napari_medcnn:napari.yaml" in entry_points
