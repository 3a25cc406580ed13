"""``napari-medcnn`` command line: thin over the same core functions as napari.

Subcommands (one small ``_add_<name>`` / ``_run_<name>`` pair each; a new
one is added by appending its ``_add_`` function to :data:`SUBCOMMANDS`):

* ``info PATH...``: one JSON summary per scan (name, shape, spacing,
  modality, quality), never any PHI.
* ``demo``: napari with the plugin's widgets docked and a sample scan;
  ``--screenshot PNG --quit`` renders it to a file and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: npe2 display names of the dock widgets the demo opens (see napari.yaml).
DEMO_WIDGETS = ("DICOM series browser", "Window / level")
SAMPLE_KEYS = ("ct_slice", "mr_slice", "mr_volume")
PLUGIN = "napari-medcnn"


# -- info -------------------------------------------------------------------
def scan_summary(scan: Any, source: str) -> dict[str, Any]:
    """JSON-able summary of a :class:`Scan`: no metadata, so no PHI.

    ``source`` is the path as the user typed it (not read from the file).
    """
    return {
        "input": source,
        "name": scan.name,
        "shape": [int(s) for s in scan.data.shape],
        "dtype": str(scan.data.dtype),
        "rgb": bool(scan.rgb),
        "spacing_mm": [round(float(s), 6) for s in scan.spacing],
        "modality": scan.modality,
        "window": None if scan.window is None else [float(v) for v in scan.window],
        "quality": scan.quality.to_dict(),
    }


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="print a JSON summary of each scan (no PHI)",
        description="Load each PATH (DICOM file or folder, NIfTI, image) and "
        "print a JSON list with one summary per scan: name, shape, spacing "
        "(mm), modality and the data-quality report. No patient data.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from .io import ScanReadError, load

    out: list[dict[str, Any]] = []
    rc = 0
    for path in args.paths:
        try:
            scans = load(path, include_phi=False)
        except ScanReadError as exc:
            out.append({"input": path, "error": exc.reason})
            rc = 1
            continue
        except Exception as exc:  # report and go on with the other paths
            out.append({"input": path, "error": f"{type(exc).__name__}: {exc}"})
            rc = 1
            continue
        out.extend(scan_summary(scan, path) for scan in scans)
    print(json.dumps(out, indent=2))
    return rc


# -- demo -------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="open napari with the plugin's widgets and a sample scan",
        description="Open napari with the series browser and window/level "
        "widgets docked and a sample scan loaded.",
    )
    p.add_argument("--sample", choices=SAMPLE_KEYS, default="ct_slice")
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
    widgets = {
        name: viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]
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

    result = {"rc": 0}
    # held here while napari runs; also refits the view once laid out
    timer = _when_ready(browser, lambda: _finish(viewer, args, result))
    napari.run()
    del timer
    QApplication.processEvents()
    return result["rc"]


def _pydicom_test_folder() -> str | None:
    """pydicom's folder of real test files (CT, MR, SR, RT...), if installed."""
    from pathlib import Path

    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm", download=False)
    return str(Path(path).parent) if path else None


def _when_ready(browser: Any, then: Callable[[], None]) -> Any:
    """Call ``then`` once the window has had time to paint (1.5 s) and the
    series browser is idle (at most 60 s).  Returns the QTimer: keep it."""
    from qtpy.QtCore import QTimer

    ticks = [0]
    timer = QTimer()
    timer.setInterval(100)

    def tick() -> None:
        ticks[0] += 1
        if (ticks[0] >= 15 and browser.worker is None) or ticks[0] >= 600:
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


# -- entry point ------------------------------------------------------------
SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_info,
    _add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-medcnn`` argument parser with every subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-medcnn",
        description="Load, check and view medical scans (DICOM, NIfTI, images).",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
