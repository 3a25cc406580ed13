"""``napari-medcnn demo``: napari with the plugin's widgets and a sample.

Split from :mod:`napari_medcnn.cli`; napari is imported only when the demo
runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: npe2 display names of the dock widgets the demo opens (see napari.yaml).
DEMO_WIDGETS = ("DICOM series browser", "Classify", "Window / level")
CLASSIFY_WIDGET = DEMO_WIDGETS[1]
SAMPLE_KEYS = ("ct_slice", "mr_slice", "mr_volume")
PLUGIN = "napari-medcnn"


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="open napari with the plugin's widgets and a sample scan",
        description="Open napari with the series browser, window/level and "
        "classify widgets docked and a sample scan loaded; when the default "
        "model is installed, the sample is classified.",
    )
    p.add_argument("--sample", choices=SAMPLE_KEYS, default="mr_slice")
    p.add_argument(
        "--folder",
        help="DICOM folder the series browser scans at start (default: the "
        "real test files that ship with pydicom)",
    )
    p.add_argument(
        "--no-scan", action="store_true", help="leave the series browser empty"
    )
    p.add_argument(
        "--screenshot",
        metavar="PNG",
        help="once the window has rendered, save it (widgets included) here",
    )
    p.add_argument("--quit", action="store_true", help="exit once rendered (and saved)")
    p.add_argument(
        "--size",
        type=_window_size,
        default="1500x950",
        help="window size WIDTHxHEIGHT in pixels (default 1500x950)",
    )
    p.set_defaults(func=_run_demo)


def _window_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT, got {text!r}"
        ) from None
    return width, height


def _run_demo(args: argparse.Namespace) -> int:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(title="napari-medcnn demo")
    viewer.window.resize(*args.size)
    # the classifier shares a tabbed dock with the series browser (and is
    # the tab shown), so both get the height their table and plots need
    widgets = {
        name: viewer.window.add_plugin_dock_widget(
            PLUGIN, name, tabify=name == CLASSIFY_WIDGET
        )[1]
        for name in DEMO_WIDGETS
    }
    try:
        layers = viewer.open_sample(PLUGIN, args.sample)
    except Exception as exc:  # keep the window up; say why there is no scan
        print(f"sample {args.sample!r} could not be opened: {exc}", file=sys.stderr)
        layers = []
    window_level = widgets["Window / level"]
    if layers and layers[-1].metadata.get("modality") == "CT":
        # CT_small is an abdominal slice: show it in the abdomen window
        window_level.set_preset("abdomen")
    browser = widgets["DICOM series browser"]
    folder = None if args.no_scan else (args.folder or _pydicom_test_folder())
    if folder:
        browser.set_folder(folder)
        browser.scan()

    classifier = widgets[CLASSIFY_WIDGET]
    result = {"rc": 0}
    timers: list[Any] = []  # held here while napari runs

    def classify_then_finish() -> None:
        # the widget loads the default model (when installed) at start and
        # follows the sample layer; classify it so the result shows
        model = classifier.model
        if layers and model is not None and layers[-1].ndim == 3:
            # a volume: the per-slice curve (2D model) or the whole volume
            slice_model = model.card.input_kind == "slice"
            classifier.set_scope("slices" if slice_model else "volume")
        if layers and model is not None and classifier.run():
            timers.append(
                _when_ready([classifier], lambda: _finish(viewer, args, result), 3)
            )
        else:
            _finish(viewer, args, result)

    timers.append(_when_ready([browser, classifier], classify_then_finish))
    napari.run()
    timers.clear()
    QApplication.processEvents()
    return result["rc"]


def _pydicom_test_folder() -> str | None:
    """pydicom's folder of real test files (CT, MR, SR, RT...), if installed."""
    from pathlib import Path

    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    return str(Path(path).parent) if path else None


def _when_ready(
    widgets: Sequence[Any], then: Callable[[], None], min_ticks: int = 15
) -> Any:
    """Call ``then`` once the window has had time to paint (``min_ticks``
    tenths of a second, default 1.5 s) and every widget's worker is idle (at
    most 60 s).  Returns the QTimer: keep it."""
    from qtpy.QtCore import QTimer

    ticks = [0]
    timer = QTimer()
    timer.setInterval(100)

    def tick() -> None:
        ticks[0] += 1
        idle = all(w.worker is None for w in widgets)
        if (ticks[0] >= min_ticks and idle) or ticks[0] >= 600:
            timer.stop()
            then()

    timer.timeout.connect(tick)
    timer.start()
    return timer


def _finish(viewer: Any, args: argparse.Namespace, result: dict) -> None:
    from qtpy.QtWidgets import QApplication

    viewer.reset_view()  # fit the scan to the canvas as finally laid out
    if args.screenshot:
        try:
            QApplication.processEvents()
            viewer.screenshot(args.screenshot, canvas_only=False, flash=False)
            print(f"screenshot written to {args.screenshot}")
        except Exception as exc:  # report, exit non-zero
            print(f"screenshot failed: {exc}", file=sys.stderr)
            result["rc"] = 1
    if args.quit:
        viewer.close()
        QApplication.quit()
