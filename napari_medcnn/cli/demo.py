"""``napari-medcnn demo``: napari with three of the plugin's widgets (series
browser, classify, window/level) and a sample.

Split from :mod:`napari_medcnn.cli`; napari is imported only when the demo
runs, and only once a display is known to exist (:func:`no_display_reason`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from napari_medcnn.cli.options import (
    EXIT_NOTHING,
    EXIT_STATUS,
    add_overwrite_option,
    refuse_existing,
)

#: npe2 display names of the dock widgets the demo opens (see napari.yaml);
#: the other four (Saliency, Label images, Fine-tune, De-identify) stay in
#: the Plugins menu: seven docks leave no room for the scan.
DEMO_WIDGETS = ("DICOM series browser", "Classify", "Window / level")
CLASSIFY_WIDGET = DEMO_WIDGETS[1]
SAMPLE_KEYS = ("ct_slice", "mr_slice", "mr_volume")
PLUGIN = "napari-medcnn"

#: Qt platform plugins that draw without a display server
HEADLESS_QT_PLATFORMS = ("offscreen", "minimal", "eglfs", "linuxfb", "vnc")


def no_display_reason(
    environ: Mapping[str, str] | None = None, platform: str | None = None
) -> str | None:
    """Why napari cannot open a window here, or None when it can.

    On Linux a window needs ``DISPLAY`` (X11) or ``WAYLAND_DISPLAY``, unless
    ``QT_QPA_PLATFORM`` names a platform that needs no display server (such
    as ``offscreen``).  Without this check Qt aborts with a message about
    the ``xcb-cursor0`` library, which sends people after the wrong fix.
    """
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return None
    qpa = env.get("QT_QPA_PLATFORM", "").split(":")[0].strip().lower()
    if qpa in HEADLESS_QT_PLATFORMS:
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return (
        "no display: neither DISPLAY nor WAYLAND_DISPLAY is set, so napari "
        "cannot open a window. Run `bash scripts/demo.sh`, which runs the "
        "demo under Xvfb and writes demo.png, or run `xvfb-run -a "
        "napari-medcnn demo --screenshot demo.png --quit` yourself."
    )


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="open napari with three of the plugin's widgets and a sample scan",
        description="Open napari with the series browser, window/level and "
        "classify widgets docked and a sample scan loaded; when the default "
        "model is installed, the sample is classified. The other widgets "
        "(Saliency, Label images, Fine-tune, De-identify) are in Plugins > "
        "napari-medcnn. Needs a display: without one (no DISPLAY or "
        "WAYLAND_DISPLAY on Linux) it stops and points to scripts/demo.sh, "
        "which uses Xvfb.",
        epilog=EXIT_STATUS + " (1: the screenshot could not be written.)",
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
    add_overwrite_option(p)
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
    if not refuse_existing((args.screenshot,), args.overwrite):
        return EXIT_NOTHING
    reason = no_display_reason()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return EXIT_NOTHING
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
            image = viewer.screenshot(canvas_only=False, flash=False)
            _save_image(args.screenshot, image, overwrite=args.overwrite)
            print(f"screenshot written to {args.screenshot}")
        except Exception as exc:  # report, exit non-zero
            print(f"screenshot failed: {exc}", file=sys.stderr)
            result["rc"] = 1
    if args.quit:
        viewer.close()
        QApplication.quit()


def _save_image(path: str, image: Any, overwrite: bool) -> None:
    """Write an RGB(A) array to ``path`` atomically, in the format its
    suffix names (PNG when unknown); an existing file only if ``overwrite``."""
    import io
    from pathlib import Path

    from PIL import Image

    from napari_medcnn._atomic import atomic_write

    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    img = Image.fromarray(image)
    if fmt == "JPEG":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    atomic_write(path, buf.getvalue(), overwrite=overwrite)
