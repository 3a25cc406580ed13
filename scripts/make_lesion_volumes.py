"""Labelled test volumes: synthetic lesions in one real healthy head.

    .venv/bin/python scripts/make_lesion_volumes.py [SOURCE] --out DIR \\
        [--n 60] [--lesion-fraction 0.5] [--seed 0] [--shape 48 64 64]

SOURCE is ``colin27`` (the default: the Colin27 T1 head shipped with the
plugin, else Debian's ``mricron-data``) or a healthy scan: a NIfTI file, or
anything else ``napari_medcnn.io.load`` reads as a 3D volume (a DICOM
series folder, a multi-frame file; the first volume is used).  Writes
``vol_000.nii.gz``..., ``labels.csv`` (``path,label,group``) and
``lesions.json`` (per volume: label, slice range along axis 0 as the reader
loads it, centre, diameters) into ``--out``; see
:mod:`napari_medcnn.io.lesions` for how each volume is made.

For tests and benchmarks only: these are ellipsoids in one head, not
disease.  Never train or validate a clinical-sounding model on them.

Prints a one-line summary.  Exit status 0 when the volumes were written,
2 for bad input (a missing or unreadable file, a 2D image, fewer than 3
slices, a head too small for the lesions, existing files without
``--overwrite``), with a message that names the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _source(arg: str):
    """``colin27`` as is; a NIfTI path as is (the generator reads it); any
    other path through the plugin's reader, as a Scan."""
    if arg.lower() == "colin27" or arg.lower().endswith((".nii", ".nii.gz")):
        return arg
    from napari_medcnn.io import ScanReadError, load

    scans = load(arg)
    volumes = [s for s in scans if s.ndim_spatial == 3 and not s.rgb]
    if not volumes:
        shapes = ", ".join(str(tuple(s.data.shape)) for s in scans) or "none"
        raise ScanReadError(arg, f"no 3D grey volume found (scans: {shapes})")
    if len(volumes) > 1:
        print(
            f"{arg}: {len(volumes)} volumes found; using the first ({volumes[0].name})",
            file=sys.stderr,
        )
    return volumes[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=(
            "Write labelled test volumes: synthetic lesions inserted into a "
            "real healthy head (for tests and benchmarks only)."
        )
    )
    ap.add_argument(
        "source",
        nargs="?",
        default="colin27",
        help="'colin27' (default) or a healthy scan: NIfTI file, DICOM folder...",
    )
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--n", type=int, default=60, help="number of volumes")
    ap.add_argument(
        "--lesion-fraction",
        type=float,
        default=0.5,
        help="share of volumes with a lesion (exactly round(n * fraction))",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("S", "H", "W"),
        help="resample the head's bounding box to this many voxels",
    )
    ap.add_argument(
        "--zoom", type=float, help="or scale the number of voxels by this factor"
    )
    ap.add_argument(
        "--rim",
        type=float,
        default=0.0,
        help="probability of an enhancing rim around a lesion (0 to 1)",
    )
    ap.add_argument(
        "--polarity", choices=("bright", "dark", "either"), default="bright"
    )
    ap.add_argument(
        "--masks", action="store_true", help="also write masks/vol_XXX.nii.gz"
    )
    ap.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = ap.parse_args(argv)

    from napari_medcnn._atomic import OverwriteError
    from napari_medcnn.io.lesions import SourceError, make_cohort
    from napari_medcnn.io.scan import ScanReadError

    if args.shape is not None and args.zoom is not None:
        print("error: give --shape or --zoom, not both", file=sys.stderr)
        return 2
    try:
        summary = make_cohort(
            _source(args.source),
            args.out,
            args.n,
            lesion_fraction=args.lesion_fraction,
            seed=args.seed,
            shape=args.shape,
            zoom=args.zoom,
            lesion={"rim": args.rim, "polarity": args.polarity},
            write_masks=args.masks,
            overwrite=args.overwrite,
        )
    except (ScanReadError, SourceError, OverwriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {args.source}: {exc}", file=sys.stderr)
        return 2
    shape = "x".join(str(s) for s in summary["shape"])
    spacing = "x".join(f"{s:.2f}" for s in summary["spacing_mm"])
    print(
        f"wrote {summary['n']} volumes ({summary['n_lesion']} lesion, "
        f"{summary['n_normal']} normal) of {shape} voxels at {spacing} mm from "
        f"{summary['source']} to {summary['out_dir']} in "
        f"{summary['seconds']:.1f} s (labels.csv, lesions.json)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
