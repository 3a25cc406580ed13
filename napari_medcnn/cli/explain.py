"""``napari-medcnn explain``: a saliency map for one scan, aligned with it.

Thin over :func:`napari_medcnn.saliency.explain` and
:mod:`napari_medcnn.saliency.export`: the scan is read with
:func:`napari_medcnn.io.load` (as napari reads it), the map is written in
the array order and geometry of that scan (``.npy``, ``.nii.gz`` with the
scan's affine, ``.png`` composited on the windowed scan, or ``.dcm``: a
DICOM Parametric Map on the source series, see
:mod:`napari_medcnn.export.pmap`) with a JSON sidecar, and the trust
metrics are printed as JSON.  A trust check that
the map fails is also printed plainly on stderr (``TRUST CHECK FAILED:
...``).  No patient data is printed or written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from napari_medcnn.cli.options import (
    EXIT_NOTHING,
    EXIT_STATUS,
    ModelArgError,
    add_model_options,
    add_overwrite_option,
    load_model_arg,
    refuse_existing,
)

#: command-line method names -> core method names
METHOD_ALIASES = {
    "layercam": "layercam",
    "hirescam": "hirescam",
    "gradcam": "gradcam",
    "gradcampp": "gradcam++",
    "gradcam++": "gradcam++",
    "ig": "integrated_gradients",
    "integrated_gradients": "integrated_gradients",
    "occlusion": "occlusion",
    "smoothgrad": "smoothgrad",
    "gradient": "gradient",
    "gradient_x_input": "gradient_x_input",
}


def add_explain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="write a saliency map aligned with a scan and print trust metrics",
        description="Load PATH (DICOM file or folder, NIfTI, image), explain "
        "the model's decision with a saliency method, write the map aligned "
        "with the scan as the reader loads it (.npy in array order, .nii/"
        ".nii.gz with the scan's affine, .png composited on the windowed "
        "scan) plus a JSON sidecar, and print as JSON the deletion AUC, the "
        "random-order deletion AUC, the insertion AUCs and the randomisation "
        "sanity-check correlation.",
        epilog="Metrics: a faithful map has a deletion AUC below the random "
        "one and an insertion AUC above it; a randomisation correlation near "
        "1 means the map hardly depends on the trained weights. The map and "
        "its sidecar are new files: an existing FILE or sidecar (say, a "
        "classify --json export named like the map) is refused unless "
        "--overwrite. " + EXIT_STATUS + " (1: the map could not be written "
        "completely.)",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument(
        "--method",
        default="gradcam",
        choices=sorted(METHOD_ALIASES),
        help="saliency method (default gradcam: Grad-CAM on the deepest "
        "stage of at least 16x16 cells, where the input allows; --layer last "
        "for the last feature map; layercam fuses stages; gradcampp = "
        "Grad-CAM++, ig = Integrated Gradients)",
    )
    p.add_argument(
        "--target",
        metavar="CLASS",
        help="class name or index to explain (default: the predicted class)",
    )
    add_model_options(p)
    p.add_argument(
        "--out",
        metavar="FILE",
        required=True,
        help="output map: .npy, .nii, .nii.gz, .png, or .dcm (a DICOM "
        "Parametric Map of the source series: DICOM inputs only) (sidecar: "
        "FILE stem + .json)",
    )
    p.add_argument(
        "--overlay-sc",
        metavar="FILE",
        help="with a .dcm map: also write the map drawn on the scan (the "
        "slice of the highest value, or --slice) as an RGB DICOM Secondary "
        "Capture, for viewers without Parametric Map support",
    )
    add_overwrite_option(p)
    p.add_argument(
        "--series", type=int, default=0, help="which scan of PATH (default 0)"
    )
    p.add_argument(
        "--slice",
        type=int,
        dest="slice_index",
        help="explain only this slice of a volume (2D models; default: all)",
    )
    p.add_argument(
        "--layer",
        help="Grad-CAM layer name or 'last', or LayerCAM / HiResCAM layer "
        "names separated by commas (default: found)",
    )
    p.add_argument("--normalize", choices=("volume", "slice"), default="volume")
    p.add_argument("--steps", type=int, default=32, help="IG steps (default 32)")
    p.add_argument(
        "--baseline", choices=("black", "blurred", "mean"), help="IG baseline"
    )
    p.add_argument("--window-mm", type=float, default=10.0, help="occlusion (mm)")
    p.add_argument("--stride-mm", type=float, default=5.0, help="occlusion (mm)")
    p.add_argument("--samples", type=int, default=16, help="SmoothGrad samples")
    p.add_argument("--no-metrics", action="store_true", help="skip trust metrics")
    p.add_argument("--colormap", default="inferno", help="PNG colormap")
    p.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="PNG: hide map values below this percentile (0-100)",
    )
    p.set_defaults(func=_run_explain)


def method_params(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The method's own keyword arguments from the command line."""
    if method in ("gradcam", "gradcam++"):
        return {"layer": args.layer} if args.layer else {}
    if method in ("layercam", "hirescam"):
        return {"layers": args.layer} if args.layer else {}
    if method == "integrated_gradients":
        p: dict[str, Any] = {"n_steps": args.steps}
        if args.baseline:
            p["baseline"] = args.baseline
        return p
    if method == "occlusion":
        return {"window_mm": args.window_mm, "stride_mm": args.stride_mm}
    if method == "smoothgrad":
        return {"n_samples": args.samples}
    return {}


def parse_target(text: str | None, classes: list[str]) -> Any:
    """A class name, or an index given as digits (None: predicted)."""
    if text is None or text in classes:
        return text
    try:
        return int(text)
    except ValueError:
        return text  # explain() reports the valid classes


def metrics_summary(result: Any) -> dict[str, Any]:
    """The printed metrics: AUCs and the randomisation correlation."""
    m = result.metrics or {}
    rand = m.get("randomization") or {}
    out = {
        k: (round(float(m[k]), 4) if m.get(k) is not None else None)
        for k in (
            "deletion_auc",
            "deletion_auc_random",
            "insertion_auc",
            "insertion_auc_random",
        )
    }
    corr = rand.get("correlation")
    out["randomization_correlation"] = None if corr is None else round(corr, 4)
    out["randomization_passed"] = rand.get("passed")
    out["randomization_status"] = rand.get("status")
    out["trust_checks"] = m.get("trust_checks") or {}
    return out


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _write_dicom_map(
    args: argparse.Namespace,
    result: Any,
    scan: Any,
    card: Any,
    overlay: dict[str, Any],
) -> tuple[Any, Any]:
    """Write the Parametric Map (and ``--overlay-sc``) and the sidecar;
    (map path, sidecar path).  Everything is built before anything is
    written, so a refusal leaves no file."""
    from pathlib import Path

    from napari_medcnn._atomic import atomic_write_text
    from napari_medcnn.export.common import write_dataset
    from napari_medcnn.export.pmap import (
        saliency_parametric_map,
        saliency_secondary_capture,
    )
    from napari_medcnn.export.sources import source_images
    from napari_medcnn.saliency.export import saliency_record, sidecar_path

    src = source_images(scan, with_pixels=False)
    pm = saliency_parametric_map(result, src, card=card)
    sc = None
    if args.overlay_sc:
        sc = saliency_secondary_capture(
            result, src, scan.data, slice_index=args.slice_index,
            window=scan.window, colormap=overlay["colormap"],
            threshold_percentile=overlay["threshold_percentile"], card=card,
        )  # fmt: skip
    out = write_dataset(pm, args.out, overwrite=args.overwrite)
    extra: dict[str, Any] = {"file": Path(args.out).name, "format": "dicom"}
    extra["sop_class"] = "Parametric Map Storage"
    if sc is not None:
        write_dataset(sc, args.overlay_sc, overwrite=args.overwrite)
        extra["overlay_sc"] = Path(args.overlay_sc).name
    rec = saliency_record(
        result, source_name=scan.name, model_name=card.name,
        spacing=scan.spacing, extra=extra,
    )  # fmt: skip
    side = atomic_write_text(sidecar_path(args.out), json.dumps(rec, indent=2) + "\n")
    return out, side


def _run_explain(args: argparse.Namespace) -> int:
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.request import default_scope
    from napari_medcnn.io import ScanReadError, load
    from napari_medcnn.saliency import available_methods, explain
    from napari_medcnn.saliency.export import map_format, sidecar_path, write_map

    method = METHOD_ALIASES[args.method]
    try:
        fmt = map_format(args.out)
    except ValueError as exc:
        return _fail(str(exc), 2)
    if args.overlay_sc and fmt != "dicom":
        return _fail("--overlay-sc goes with a DICOM map (--out FILE.dcm)", 2)
    if fmt == "dicom":
        from napari_medcnn.export.sources import refuse_non_dicom
        from napari_medcnn.io import detect_format

        if detect_format(args.path) in ("nifti", "image"):
            try:
                refuse_non_dicom([args.path])
            except ValueError as exc:
                return _fail(str(exc), 2)
    outputs = (args.out, sidecar_path(args.out), args.overlay_sc)
    if not refuse_existing(outputs, args.overwrite):
        return EXIT_NOTHING
    try:
        loaded = load_model_arg(args)
    except ModelArgError as exc:
        return _fail(str(exc), 2)
    card = loaded.card
    if method not in available_methods(loaded.model):
        return _fail(
            f"{method} needs a convolutional layer and this model has none; "
            f"use one of {', '.join(available_methods(loaded.model))}",
            2,
        )
    try:
        scans = load(args.path, include_phi=False)
    except ScanReadError as exc:
        return _fail(exc.reason if exc.path in exc.reason else str(exc), 2)
    if not 0 <= args.series < len(scans):
        return _fail(
            f"{args.path} holds {len(scans)} scan(s); --series out of range", 2
        )
    if len(scans) > 1:
        print(
            f"note: {len(scans)} scans found; explaining #{args.series} "
            f"({scans[args.series].name})",
            file=sys.stderr,
        )
    scan = scans[args.series]
    scope = default_scope(card, scan.ndim_spatial, args.slice_index)
    try:
        result = drain(
            explain(
                [scan.data], loaded, method, parse_target(args.target, card.classes),
                spacing=scan.spacing, slice_index=args.slice_index, scope=scope,
                rgb=scan.rgb, normalize=args.normalize, metrics=not args.no_metrics,
                device=args.device, **method_params(args, method),
            )
        )  # fmt: skip
    except ValueError as exc:  # bad target, unfit input: the user's to fix
        return _fail(str(exc), 2)
    except Exception as exc:  # torch errors: report, no traceback
        return _fail(f"{type(exc).__name__}: {exc}", 2)
    overlay = {"colormap": args.colormap, "threshold_percentile": args.threshold}
    if fmt == "dicom":
        try:
            out, side = _write_dicom_map(args, result, scan, card, overlay)
        except ValueError as exc:  # ExportError: no source, slices unmatched
            return _fail(scan.redact(str(exc)), 2)
        except OSError as exc:
            return _fail(f"cannot write {args.out}: {scan.redact(str(exc))}", 1)
    else:
        try:
            out, side = write_map(
                args.out, result, image=scan.data, affine=scan.affine,
                spacing=scan.spacing, window=scan.window, rgb=scan.rgb,
                source_name=scan.name, model_name=card.name, overlay=overlay,
                overwrite=args.overwrite,
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            return _fail(f"cannot write {args.out}: {exc}", 1)
    summary = {
        "input": args.path,
        "name": scan.name,
        "out": str(out),
        "sidecar": str(side) if side else None,
        "method": result.method,
        "target": result.target,
        "target_name": result.target_name,
        "probability": result.params.get("probability"),
        "model_id": result.model_id,
        "scope": result.scope,
        "shape": list(result.map.shape),
        "layers": result.params.get("layers") or result.params.get("layer"),
        "map_resolution": result.params.get("map_resolution"),
        **metrics_summary(result),
        "warnings": result.warnings,
    }
    print(json.dumps(summary, indent=2))
    for warning in result.warnings:
        if warning.startswith("TRUST CHECK"):
            print(warning, file=sys.stderr)
    return 0
