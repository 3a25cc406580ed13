"""``napari-medcnn info PATH...``: one JSON summary per scan (name, shape,
spacing, modality, quality), never any patient data."""

from __future__ import annotations

import argparse
import json
from typing import Any

from napari_medcnn.cli.options import EXIT_STATUS, exit_status


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


def add_info(sub: argparse._SubParsersAction) -> None:
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
