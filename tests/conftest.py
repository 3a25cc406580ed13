"""Shared test fixtures.

napari's pytest plugin (entry point ``pytest11: napari``, registered by
napari 0.9 itself) provides ``make_napari_viewer``; pytest-qt provides
``qtbot``.  Tests that open a real napari window are marked ``gui`` and need
a display: run them under Xvfb (``xvfb-run -a python -m pytest``).  Without
one they are skipped, so ``pytest -m "not gui"`` and a plain ``pytest`` on a
headless machine both stay green.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

#: Patient names written into the synthetic series: PHI stand-ins that must
#: never appear in a log line, a masked table cell or the CLI's output.
from _helpers import PATIENT_NAMES


def _has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM", "") in {"offscreen", "minimal"}:
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config, items):
    """Skip ``gui`` tests when there is no display to open a window on."""
    if _has_display():
        return
    skip = pytest.mark.skip(reason="no display: run under xvfb-run")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@dataclass
class SeriesFolder:
    """A folder with two synthetic DICOM series (a CT and an MR)."""

    root: Path
    ct_dir: Path
    mr_dir: Path
    ct_volume: np.ndarray
    ct_spacing: tuple[float, float, float]
    ct_origin: tuple[float, float, float]
    ct_window: tuple[float, float]


@pytest.fixture
def two_series_folder(tmp_path) -> SeriesFolder:
    """Two series of two patients, written with ``io.synth.write_series``.

    CT: 6 slices of 24x20, spacing (2.5, 0.8, 0.7) mm, axial, HU with a
    window (40, 400).  MR: 4 slices of 16x16, 1 mm.
    """
    from napari_medcnn.io.synth import write_series

    root = tmp_path / "dicom"
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 1500, size=(6, 24, 20)).astype(np.float64)
    ct_spacing, ct_origin, ct_window = (2.5, 0.8, 0.7), (-80.0, -60.0, 30.0), (40, 400)
    write_series(
        ct,
        root / "ct",
        spacing=ct_spacing,
        origin=ct_origin,
        modality="CT",
        intercept=-1024.0,
        series_description="CT abdomen",
        series_number=2,
        patient_name=PATIENT_NAMES[0],
        patient_id="PID-CT-0001",
        window=ct_window,
        seed="ct",
    )
    mr = rng.integers(0, 800, size=(4, 16, 16)).astype(np.float64)
    write_series(
        mr,
        root / "mr",
        modality="MR",
        series_description="T1 brain",
        series_number=5,
        patient_name=PATIENT_NAMES[1],
        patient_id="PID-MR-0002",
        seed="mr",
    )
    return SeriesFolder(
        root=root,
        ct_dir=root / "ct",
        mr_dir=root / "mr",
        ct_volume=ct,
        ct_spacing=ct_spacing,
        ct_origin=ct_origin,
        ct_window=ct_window,
    )


@pytest.fixture
def ct_small_path() -> Path:
    """pydicom's real CT slice ``CT_small.dcm`` (installed, never downloaded)."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm", download=False))
