"""What the screenshot scripts share (run as ``python scripts/NAME.py``,
which puts this folder on ``sys.path``): letting Qt work while a script
waits, the Colin27 slab written as a DICOM series, and the PACS + Classify
window layout."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLUGIN = "napari-medcnn"


def pump(seconds: float) -> None:
    """Let Qt process events for ``seconds``."""
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def wait(test: Callable[[], bool], limit: float = 300.0) -> None:
    """Process events until ``test()`` is true (at most ``limit`` s)."""
    end = time.perf_counter() + limit
    while not test() and time.perf_counter() < end:
        pump(0.1)


def write_head_series(out: Path, patient_name: str, patient_id: str, seed: str) -> Path:
    """A 3 mm axial slab (24 slices) of the shipped Colin27 T1 head as a
    DICOM MR series of a synthetic patient; returns its folder."""
    from napari_medcnn.io import load
    from napari_medcnn.io.synth import write_series

    (head,) = load(Path("napari_medcnn/data/colin27_t1.nii.gz"))
    dz, dy, dx = (float(s) for s in head.spacing)
    step = 3
    z0 = head.data.shape[0] // 2 - 10
    slab = head.data[z0 : z0 + 24 * step : step].astype("float64")
    write_series(
        slab, out, spacing=(dz * step, dy, dx), origin=(-90.0, -126.0, -20.0),
        modality="MR", patient_name=patient_name, patient_id=patient_id,
        series_description="T1 axial 3 mm", seed=seed,
    )  # fmt: skip
    return out


def pacs_and_classify(viewer: Any) -> tuple[Any, Any, Any]:
    """Dock the PACS panel on the right and Classify under napari's layer
    list on the left (layer controls hidden, the classification gets the
    height), with the public QMainWindow API of the docks' parent.

    Returns:
        (the PACS dock, the PACS widget, the Classify widget).
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    pdock, pacs = viewer.window.add_plugin_dock_widget(PLUGIN, "PACS")
    cdock, classify = viewer.window.add_plugin_dock_widget(PLUGIN, "Classify")
    main_window = pdock.parent()
    main_window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, cdock)
    pump(0.2)
    for d in main_window.findChildren(QDockWidget):
        if d.windowTitle() == "layer controls":
            d.hide()  # room for the classification under the layer list
    pump(0.2)
    left = [d for d in main_window.findChildren(QDockWidget)
            if d.isVisible() and main_window.dockWidgetArea(d)
            == Qt.DockWidgetArea.LeftDockWidgetArea]  # fmt: skip
    main_window.resizeDocks([pdock], [560], Qt.Orientation.Horizontal)
    main_window.resizeDocks(left, [440] * len(left), Qt.Orientation.Horizontal)
    heights = [100] * (len(left) - 1) + [860]
    main_window.resizeDocks(left, heights, Qt.Orientation.Vertical)
    return pdock, pacs, classify
