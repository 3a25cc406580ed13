"""``napari-medcnn classify PATH...``: classify each scan with a checkpoint
and write one record per scan (no patient data) to JSON and/or CSV; one
summary line per scan on standard output (label and probability, or why
the input is outside the model's domain, with the uncertainty).  With
``--sr DIR``, also one DICOM Comprehensive 3D SR per DICOM series (see
:mod:`napari_medcnn.export.sr`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_medcnn.cli.options import (
    EXIT_NOTHING,
    EXIT_STATUS,
    SCOPE_OPTIONS,
    ModelArgError,
    add_model_options,
    add_overwrite_option,
    exit_status,
    load_model_arg,
    refuse_existing,
)


def add_classify(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument(
        "--sr",
        metavar="DIR",
        help="also write one DICOM Comprehensive 3D SR (TID 1500 measurement "
        "report) per series into DIR, for the series' patient and study; "
        "file names come from the series (no patient data). DICOM inputs "
        "only: NIfTI and image inputs are refused",
    )
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
    from napari_medcnn.inference.request import check_request
    from napari_medcnn.io import ScanReadError, load

    if not refuse_existing((args.json, args.csv), args.overwrite):
        return EXIT_NOTHING
    if args.sr and (why := _no_dicom_source(args.paths)):
        print(f"error: --sr: {why}", file=sys.stderr)
        return EXIT_NOTHING
    try:
        loaded = load_model_arg(args)
    except ModelArgError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        req = check_request(loaded.card, scope=args.scope, names=SCOPE_OPTIONS)
    except ValueError as exc:  # the scope does not fit the model
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scope = "volume" if req.scope == "volume" else "slice"  # as --scope
    records: list[dict[str, Any]] = []
    srs: list[tuple[Any, Any, dict[str, Any]]] = []  # (scan, result, record)
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
                rec, result = _classify_scan(scan, path, loaded, scope, args)
                records.append(rec)
                if args.sr:
                    srs.append((scan, result, rec))
            except Exception as exc:  # CardError, ValueError, torch errors
                msg = f"{type(exc).__name__}: {exc}"
                records.append(results.error_record(path, msg, scan.name))
    for rec in records:
        print(_summary_line(rec))
    failed = sum(1 for rec in records if rec.get("error"))
    rc = exit_status(len(records) - failed, failed)
    if srs:
        rc = max(rc, _write_srs(srs, args.sr, loaded.card, args.overwrite))
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


def _no_dicom_source(paths: list[str]) -> str | None:
    """Why a DICOM result cannot be written for one of ``paths`` (a NIfTI
    file or a plain image has no DICOM source), or None."""
    from napari_medcnn.export.sources import refuse_non_dicom
    from napari_medcnn.io import detect_format

    for path in paths:
        if detect_format(path) in ("nifti", "image"):
            try:
                refuse_non_dicom([path])
            except ValueError as exc:
                return str(exc)
    return None


def _write_srs(
    srs: list[tuple[Any, Any, dict[str, Any]]], out: str, card: Any, overwrite: bool
) -> int:
    """Write one SR per classified series into ``out``; 0, or 1 when one
    could not be written (reported on standard error)."""
    from pathlib import Path

    from napari_medcnn.export.common import safe_file_stem
    from napari_medcnn.export.sources import source_images
    from napari_medcnn.export.sr import write_classification_sr

    rc, used = 0, set()
    for scan, result, rec in srs:
        where = f"{rec.get('path')} [{scan.name}]"
        try:
            src = source_images(scan)
            stem = safe_file_stem(src.first, "SR")
            name, k = stem, 1
            while name in used:  # a series split in several scans
                k += 1
                name = f"{stem}_{k}"
            used.add(name)
            target = Path(out) / f"{name}.dcm"
            write_classification_sr(result, src, target, card=card, overwrite=overwrite)
        except (OSError, ValueError) as exc:  # ExportError is a ValueError
            why = scan.redact(str(exc))  # a file name may name the patient
            print(f"error: {where}: no SR written: {why}", file=sys.stderr)
            rc = 1
            continue
        print(f"wrote SR of {where} to {target}")
    return rc


def _classify_scan(
    scan: Any, path: str, loaded: Any, scope: str, args: argparse.Namespace
) -> tuple[dict[str, Any], Any]:
    """Classify one :class:`Scan`; the record (no PHI) for ``path`` and
    the :class:`ClassificationResult`."""
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.predict import classify_scan
    from napari_medcnn.inference.records import classification_record
    from napari_medcnn.saliency.slices import classify_slice_importance

    result = drain(
        classify_scan(
            scan,
            loaded,
            scope,
            batch_size=args.batch_size,
            device=args.device,
            slice_importance=classify_slice_importance,
        )
    )
    record = classification_record(
        result,
        name=scan.name,
        channel_layers=[scan.name],
        metadata=scan.metadata,
        path=scan.redact(path),  # a folder may be named after the patient
        channel_names=loaded.card.channel_names,
    )
    return record, result


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
