"""``napari-medcnn`` command line: thin over the same core functions as napari.

Subcommands (one small ``_add_<name>`` / ``_run_<name>`` pair each; a new
one is added by appending its ``_add_`` function to :data:`SUBCOMMANDS`):

* ``info PATH...``: one JSON summary per scan (name, shape, spacing,
  modality, quality), never any PHI.
* ``classify PATH...``: classify each scan with a checkpoint and write one
  record per scan (no PHI) to JSON and/or CSV.
* ``demo``: napari with the plugin's widgets docked and a sample scan
  (classified when the default model is installed); ``--screenshot PNG
  --quit`` renders it to a file and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

#: npe2 display names of the dock widgets the demo opens (see napari.yaml).
DEMO_WIDGETS = ("DICOM series browser", "Classify", "Window / level")
CLASSIFY_WIDGET = DEMO_WIDGETS[1]
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


# -- classify -----------------------------------------------------------------
def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify",
        help="classify scans with a CNN checkpoint (no PHI in the output)",
        description="Load each PATH (DICOM file or folder, NIfTI, image) and "
        "classify every scan in it: one record per scan (input path, series "
        "name and UID, label, class probabilities, per-slice probabilities). "
        "Scope 'slice' runs a 2D model on every slice of a volume (the scan's "
        "probabilities are the mean over slices) or on a 2D image; scope "
        "'volume' runs a whole-volume (3D or CNN+RNN) model. A scan that "
        "fails is reported and the others go on (exit status 1); a model "
        "that cannot be loaded stops everything (exit status 2).",
        epilog="CSV: one row per scan with a p_<class> column per class; the "
        "per-slice probabilities are a JSON list of per-slice lists in the "
        "'slice_probabilities' column. No patient name, ID or birth date is "
        "ever written.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument(
        "--model",
        metavar="CKPT",
        help="checkpoint (.safetensors, .pt or its .json card); default: the "
        "Br35H brain-MR model shipped with the plugin",
    )
    p.add_argument(
        "--scope",
        choices=("slice", "volume"),
        help="slice: 2D model, every slice; volume: whole-volume model "
        "(default: what the model's card says)",
    )
    p.add_argument("--json", metavar="OUT", help="write the records as a JSON list")
    p.add_argument("--csv", metavar="OUT", help="write the records as CSV")
    p.add_argument("--device", help="torch device (default: cuda, mps, then cpu)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="slices per batch (default: 4 per CPU thread, 32 on a GPU)",
    )
    p.set_defaults(func=_run_classify)


def _run_classify(args: argparse.Namespace) -> int:
    from . import results
    from .inference import default_model_path
    from .io import ScanReadError, load
    from .models.checkpoint import CheckpointError, load_checkpoint

    model_path = args.model or default_model_path()
    if args.model is None and not default_model_path().exists():
        print(
            f"error: default model not found ({model_path}); pass --model CKPT",
            file=sys.stderr,
        )
        return 2
    try:
        loaded = load_checkpoint(model_path, args.device)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    card = loaded.card
    scope = args.scope or ("slice" if card.input_kind == "slice" else "volume")
    if (scope == "slice") != (card.input_kind == "slice"):
        kind = "2D slices" if card.input_kind == "slice" else "whole volumes"
        other = "volume" if scope == "slice" else "slice"
        print(
            f"error: model '{card.name or card.arch}' reads {kind}: use "
            f"--scope {other}",
            file=sys.stderr,
        )
        return 2
    records: list[dict[str, Any]] = []
    rc = 0
    for path in args.paths:
        try:
            scans = load(path, include_phi=False)
        except ScanReadError as exc:
            records.append(results.error_record(path, exc.reason))
            rc = 1
            continue
        except Exception as exc:  # report and go on with the other paths
            records.append(results.error_record(path, f"{type(exc).__name__}: {exc}"))
            rc = 1
            continue
        for scan in scans:
            try:
                records.append(_classify_scan(scan, path, loaded, scope, args))
            except Exception as exc:  # CardError, ValueError, torch errors
                msg = f"{type(exc).__name__}: {exc}"
                records.append(results.error_record(path, msg, scan.name))
                rc = 1
    for rec in records:
        print(_summary_line(rec))
    for out, write in ((args.json, results.write_json), (args.csv, results.write_csv)):
        if out:
            write(records, out)
            print(f"wrote {len(records)} record(s) to {out}")
    return rc


def _classify_scan(
    scan: Any, path: str, loaded: Any, scope: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Classify one :class:`Scan`; the record (no PHI) for ``path``."""
    from .inference import classify, run
    from .results import classification_record

    if scope == "slice":
        scope = "slices" if scan.ndim_spatial == 3 else "slice"
    result = run(
        classify(
            [scan.data],
            loaded,
            scope=scope,
            spacing=scan.spacing,
            rgb=scan.rgb,
            batch_size=args.batch_size,
            device=args.device,
        )
    )
    return classification_record(
        result,
        name=scan.name,
        channel_layers=[scan.name],
        metadata=scan.metadata,
        path=path,
        channel_names=loaded.card.channel_names,
    )


def _summary_line(rec: dict[str, Any]) -> str:
    where = f"{rec.get('path')} [{rec.get('name')}]" if rec.get("name") else rec["path"]
    if rec.get("error"):
        return f"{where}: ERROR {rec['error']}"
    p = rec["probabilities"][rec["index"]]
    n = f", {rec['n_slices']} slices" if rec.get("n_slices") else ""
    pct = "n/a" if p is None else f"{100 * p:.1f}%"
    return f"{where}: {rec['label']} {pct} ({rec['scope']}{n})"


# -- demo -------------------------------------------------------------------
def _add_demo(sub: argparse._SubParsersAction) -> None:
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


# -- entry point ------------------------------------------------------------
SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_info,
    _add_classify,
    _add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-medcnn`` argument parser with every subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="napari-medcnn",
        description="Load, check, view and classify medical scans (DICOM, NIfTI, "
        "images).",
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
