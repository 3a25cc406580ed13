"""``napari-medcnn`` command line: thin over the same core functions as napari.

Subcommands (one small ``_add_<name>`` / ``_run_<name>`` pair each; a new
one is added by appending its ``_add_`` function to :data:`SUBCOMMANDS`):

* ``info PATH...``: one JSON summary per scan (name, shape, spacing,
  modality, quality), never any PHI.
* ``classify PATH...``: classify each scan with a checkpoint and write one
  record per scan (no PHI) to JSON and/or CSV.
* ``train --labels SIDECAR_OR_CSV... --out CKPT``: fine-tune a model on
  label sidecars or a ``path,label`` CSV (see ``cli_train.py``).
* ``demo``: napari with the plugin's widgets docked and a sample scan
  (classified when the default model is installed); ``--screenshot PNG
  --quit`` renders it to a file and exits.
* ``explain PATH``: a saliency map aligned with the scan (.npy, .nii.gz or
  .png, with a JSON sidecar) and its trust metrics printed as JSON.
* ``deidentify IN... --out DIR``: DICOM PS3.15 Annex E Basic Profile
  de-identification (with its options) into a new folder; ``--dry-run``
  lists the changes by tag and action, never values.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from napari_medcnn.cli.deid import _add_deidentify
from napari_medcnn.cli.demo import (
    CLASSIFY_WIDGET,
    DEMO_WIDGETS,
    PLUGIN,
    SAMPLE_KEYS,
    add_demo,
)
from napari_medcnn.cli.explain import _add_explain
from napari_medcnn.cli.options import (
    EXIT_NOTHING,
    EXIT_STATUS,
    ModelArgError,
    add_model_options,
    add_overwrite_option,
    exit_status,
    load_model_arg,
    refuse_existing,
)
from napari_medcnn.cli.train import _add_train

__all__ = ["CLASSIFY_WIDGET", "DEMO_WIDGETS", "PLUGIN", "SAMPLE_KEYS", "main"]


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
        "(mm), modality and the data-quality report. A folder's own findings "
        "(non-image series skipped, files that could not be read) come once, "
        "in an entry with 'input' and 'folder_quality'. No patient data.",
        epilog=EXIT_STATUS,
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from napari_medcnn.io import ScanReadError, load

    out: list[dict[str, Any]] = []
    failed = 0
    for path in args.paths:
        try:
            scans = load(path, include_phi=False)
        except ScanReadError as exc:
            out.append({"input": path, "error": exc.reason})
            failed += 1
            continue
        except Exception as exc:  # report and go on with the other paths
            out.append({"input": path, "error": f"{type(exc).__name__}: {exc}"})
            failed += 1
            continue
        folder = getattr(scans, "folder_quality", None)
        if folder is not None and folder.issues:  # once, not in every scan
            out.append({"input": path, "folder_quality": folder.to_dict()})
        out.extend(scan_summary(scan, path) for scan in scans)
    print(json.dumps(out, indent=2))
    return exit_status(len(out) - failed, failed)


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
        "fails is reported and the others go on; a model that cannot be "
        "loaded, or an output file that exists, stops everything before "
        "any scan is read.",
        epilog="CSV: one row per scan with a p_<class> column per class; the "
        "per-slice probabilities are a JSON list of per-slice lists in the "
        "'slice_probabilities' column. No patient name, ID or birth date is "
        "ever written. " + EXIT_STATUS,
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    add_model_options(p)
    p.add_argument(
        "--scope",
        choices=("slice", "volume"),
        help="slice: 2D model, every slice; volume: whole-volume model "
        "(default: what the model's card says)",
    )
    p.add_argument("--json", metavar="OUT", help="write the records as a JSON list")
    p.add_argument("--csv", metavar="OUT", help="write the records as CSV")
    add_overwrite_option(p)
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="slices per batch (default: 4 per CPU thread, 32 on a GPU)",
    )
    p.set_defaults(func=_run_classify)


def _run_classify(args: argparse.Namespace) -> int:
    from napari_medcnn.inference import records as results
    from napari_medcnn.io import ScanReadError, load

    if not refuse_existing((args.json, args.csv), args.overwrite):
        return EXIT_NOTHING
    try:
        loaded = load_model_arg(args)
    except ModelArgError as exc:
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
    for path in args.paths:
        try:
            scans = load(path, include_phi=False)
        except ScanReadError as exc:
            records.append(results.error_record(path, exc.reason))
            continue
        except Exception as exc:  # report and go on with the other paths
            records.append(results.error_record(path, f"{type(exc).__name__}: {exc}"))
            continue
        for scan in scans:
            try:
                records.append(_classify_scan(scan, path, loaded, scope, args))
            except Exception as exc:  # CardError, ValueError, torch errors
                msg = f"{type(exc).__name__}: {exc}"
                records.append(results.error_record(path, msg, scan.name))
    for rec in records:
        print(_summary_line(rec))
    failed = sum(1 for rec in records if rec.get("error"))
    rc = exit_status(len(records) - failed, failed)
    for out, write in ((args.json, results.write_json), (args.csv, results.write_csv)):
        if not out:
            continue
        try:
            write(records, out, overwrite=args.overwrite)
        except OSError as exc:  # e.g. the file appeared meanwhile, disk full
            print(f"error: cannot write {out}: {exc}", file=sys.stderr)
            rc = max(rc, 1)
            continue
        print(f"wrote {len(records)} record(s) to {out}")
    return rc


def _classify_scan(
    scan: Any, path: str, loaded: Any, scope: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Classify one :class:`Scan`; the record (no PHI) for ``path``."""
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.predict import classify_scan
    from napari_medcnn.inference.records import classification_record

    result = drain(
        classify_scan(
            scan, loaded, scope, batch_size=args.batch_size, device=args.device
        )
    )
    return classification_record(
        result,
        name=scan.name,
        channel_layers=[scan.name],
        metadata=scan.metadata,
        path=scan.redact(path),  # a folder may be named after the patient
        channel_names=loaded.card.channel_names,
    )


def _summary_line(rec: dict[str, Any]) -> str:
    where = f"{rec.get('path')} [{rec.get('name')}]" if rec.get("name") else rec["path"]
    if rec.get("error"):
        return f"{where}: ERROR {rec['error']}"
    p = rec["probabilities"][rec["index"]]
    n = f", {rec['n_slices']} slices" if rec.get("n_slices") else ""
    pct = "n/a" if p is None else f"{100 * p:.1f}%"
    scope = "slice" if rec["scope"] == "slices" else rec["scope"]  # as --scope
    domain = rec.get("domain") or {}
    if not domain.get("in_domain", True):
        why = "; ".join(domain.get("reasons") or []) or "unlike the training images"
        return f"{where}: outside the model's domain: {why} ({scope}{n})"
    u = rec.get("uncertainty")
    unc = "" if u is None else f", uncertainty {u:.2f}"
    return f"{where}: {rec['label']} {pct} ({scope}{n}{unc})"


# -- entry point ------------------------------------------------------------
SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_info,
    _add_classify,
    add_demo,
    _add_explain,
    _add_deidentify,
    _add_train,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``napari-medcnn`` argument parser with every subcommand."""
    from napari_medcnn import __version__

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
