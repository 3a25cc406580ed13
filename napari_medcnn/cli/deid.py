"""``napari-medcnn deidentify``: thin over :mod:`napari_medcnn.deid.run`.

Exit status: 0 every DICOM file de-identified (files that are not DICOM
are skipped and listed, which is not an error); 1 some DICOM files failed
and the others were written; 2 nothing done: bad arguments, an input that
does not exist, no DICOM file, an output folder that is not new or empty,
unwritable or full, an existing manifest or report without ``--overwrite``,
an unreadable key file (or an encrypted one without its passphrase, or a
wrong passphrase), ``--manifest`` without a passphrase or
``--plaintext-manifest``, or every DICOM file failed.  With a passphrase
(``--passphrase-file FILE`` or ``NAPARI_MEDCNN_PASSPHRASE``, never an
argument) the manifest and a new key file are sealed
(:mod:`napari_medcnn.deid.sealed`).  Standard output gets the report
(tags and actions, never values); skipped and failed inputs, and the input
file of each burned-in-text flag, are listed on standard error, since input
paths may hold names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_medcnn.cli.manifest import (
    PassphraseError,
    add_passphrase_option,
    passphrase_arg,
)
from napari_medcnn.cli.options import (
    EXIT_NOTHING,
    EXIT_STATUS,
    add_overwrite_option,
    exit_status,
    refuse_existing,
)

__all__ = ["add_deidentify", "parse_rect", "run_deidentify"]


def parse_rect(text: str) -> tuple[int, int, int, int]:
    """``X,Y,W,H`` in pixels -> a rectangle (argparse type)."""
    try:
        x, y, w, h = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected X,Y,WIDTH,HEIGHT in pixels, got {text!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError("rectangle width and height must be > 0")
    return (x, y, w, h)


def add_deidentify(sub: argparse._SubParsersAction) -> None:
    """Register the ``deidentify`` subcommand."""
    p = sub.add_parser(
        "deidentify",
        help="de-identify DICOM files (PS3.15 Annex E Basic Profile)",
        description="Copy every DICOM file under IN (files or folders) to "
        "--out with the DICOM PS3.15 Annex E Basic Application Level "
        "Confidentiality Profile applied (Table E.1-1): identifying attributes "
        "removed, emptied or replaced, UIDs replaced by keyed UIDs, private "
        "attributes removed except a safe list. Inputs are never modified; "
        "files that are not DICOM are skipped and listed.",
        epilog="The same --key file gives the same UIDs, pseudonyms and date "
        "shifts in every run, so exports made into separate folders can be "
        "merged later. Keep the key and the --manifest file apart from the "
        "export: together they re-identify it; with a passphrase both are "
        "encrypted ('napari-medcnn manifest show' reads the manifest). "
        "Files whose pixels may carry burned-in text are listed on standard "
        "error by input file (and output name). "
        + EXIT_STATUS
        + " (Skipped files that are not DICOM are reported, not counted as "
        "failures.)",
    )
    p.add_argument("inputs", nargs="+", metavar="IN")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="export folder (new or empty: a folder with files in it is "
        "refused; created only when the first file is written)",
    )
    p.add_argument(
        "--keep-dates-shifted",
        action="store_true",
        help="Retain Longitudinal Temporal Information with Modified Dates: "
        "shift every date by a per-patient number of days (1 to 10 years "
        "back; intervals kept)",
    )
    p.add_argument(
        "--keep-patient-characteristics",
        action="store_true",
        help="keep age, sex, size, weight, ethnic group, smoking and pregnancy status",
    )
    p.add_argument(
        "--keep-device-identity",
        action="store_true",
        help="keep serial numbers, station names, detector IDs",
    )
    p.add_argument(
        "--keep-institution",
        action="store_true",
        help="keep institution name, address and department",
    )
    p.add_argument(
        "--clean-descriptors",
        action="store_true",
        help="keep descriptions (series, study, protocol, comments) with "
        "names, IDs, dates and long numbers redacted, instead of removing them",
    )
    p.add_argument("--keep-uids", action="store_true", help="keep the original UIDs")
    p.add_argument(
        "--no-safe-private",
        action="store_true",
        help="remove every private attribute, even the safe-listed ones "
        "(diffusion b-values and directions, Philips scaling)",
    )
    p.add_argument(
        "--blank",
        type=parse_rect,
        action="append",
        default=[],
        metavar="X,Y,W,H",
        help="blank this rectangle (pixels, x = column) in every frame; "
        "repeat for more (Clean Pixel Data)",
    )
    p.add_argument(
        "--key",
        metavar="KEYFILE",
        help="project key file (created with a new random key if missing, "
        "encrypted under the passphrase when one is given); without it a "
        "one-off key is used",
    )
    p.add_argument(
        "--manifest",
        metavar="FILE",
        help="write the original -> new identifier mapping here (JSON, or CSV "
        "for .csv), encrypted under the passphrase; must be outside --out. "
        "Needs a passphrase, or --plaintext-manifest",
    )
    add_passphrase_option(
        p,
        " Encrypts --manifest and a new --key file (AES-256-GCM, scrypt), "
        "and opens an encrypted --key file.",
    )
    p.add_argument(
        "--plaintext-manifest",
        action="store_true",
        help="UNSAFE: write --manifest unencrypted (it re-identifies every "
        "patient; only file mode 0600 protects it)",
    )
    p.add_argument("--report", metavar="FILE", help="write the report as JSON (no PHI)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would change, by tag and action; write nothing",
    )
    add_overwrite_option(p)
    p.set_defaults(func=run_deidentify)


def _warn_plaintext_key(key: str | None, passphrase: bytes | None, dry_run: bool):
    """Warn (standard error) that ``--key`` is, or will be, unencrypted."""
    from napari_medcnn.deid.keys import is_sealed_file

    if key is None:
        return
    if Path(key).exists():
        if not is_sealed_file(key):
            print(
                f"warning: the key file {key} is not encrypted: with the "
                "manifest it re-identifies the export; encrypt it with "
                "'napari-medcnn manifest rekey'",
                file=sys.stderr,
            )
    elif passphrase is None and not dry_run:
        print(
            f"warning: the new key file {key} will not be encrypted (no "
            "passphrase given); keep it private, or give --passphrase-file",
            file=sys.stderr,
        )


def run_deidentify(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit status."""
    from napari_medcnn.deid.run import DeidError, DeidOptions, KeyFileError, deidentify

    if not args.out and not args.dry_run:
        print("error: --out DIR is required (or use --dry-run)", file=sys.stderr)
        return EXIT_NOTHING
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:  # named on stderr, like every input path
        print(f"error: no such file or folder: {missing[0]}", file=sys.stderr)
        return EXIT_NOTHING
    manifest = None if args.dry_run else args.manifest
    try:
        passphrase = passphrase_arg(args.passphrase_file)
    except PassphraseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    if manifest is not None and passphrase is None and not args.plaintext_manifest:
        print(
            "error: --manifest re-identifies every patient, so it is written "
            "encrypted: give a passphrase (--passphrase-file FILE or the "
            "environment variable NAPARI_MEDCNN_PASSPHRASE), or pass "
            "--plaintext-manifest to write it unencrypted (unsafe); nothing "
            "was written",
            file=sys.stderr,
        )
        return EXIT_NOTHING
    if not refuse_existing((manifest, args.report), args.overwrite):
        return EXIT_NOTHING
    if manifest is not None and args.plaintext_manifest:
        print(
            "warning: --plaintext-manifest is unsafe: the manifest links every "
            "pseudonym back to the patient's name and ID, and only file mode "
            "0600 protects it; prefer a passphrase, or encrypt it later with "
            "'napari-medcnn manifest rekey'",
            file=sys.stderr,
        )
    _warn_plaintext_key(args.key, passphrase, args.dry_run)
    options = DeidOptions(
        retain_dates_shifted=args.keep_dates_shifted,
        retain_patient_characteristics=args.keep_patient_characteristics,
        retain_device_identity=args.keep_device_identity,
        retain_institution_identity=args.keep_institution,
        clean_descriptors=args.clean_descriptors,
        retain_uids=args.keep_uids,
        retain_safe_private=not args.no_safe_private,
        blank_rectangles=tuple(args.blank),
    )
    try:
        result = deidentify(
            args.inputs,
            args.out,
            options=options,
            key_file=args.key,
            manifest=manifest,
            passphrase=passphrase,
            plaintext_manifest=args.plaintext_manifest,
            dry_run=args.dry_run,
            overwrite=args.overwrite,
        )
    except (DeidError, KeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    print(result.report.summary_text())
    for path, reason in result.skipped:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
    for path, reason in result.failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    for name, why in sorted(result.report.flagged.items()):
        source = result.flagged_inputs.get(name, "?")
        print(
            f"burned-in text?: {source}: {', '.join(why)} (output {name})",
            file=sys.stderr,
        )
    rc = exit_status(result.report.n_files, len(result.failed))
    if result.report.n_files == 0:
        why = "every DICOM file failed" if result.failed else "no DICOM file"
        print(f"error: nothing to de-identify ({why})", file=sys.stderr)
    if args.report:
        from napari_medcnn._atomic import atomic_write_text

        text = json.dumps(result.report.to_dict(), indent=2)
        try:
            atomic_write_text(args.report, text, overwrite=args.overwrite)
        except OSError as exc:
            print(f"error: cannot write {args.report}: {exc}", file=sys.stderr)
            rc = max(rc, 1)
    if args.dry_run:
        print("dry run: nothing was written")
    else:
        print(f"wrote {len(result.outputs)} file(s) to {result.out_dir}")
        if not args.key:
            print("note: one-off key; pass --key FILE to keep UIDs stable")
        if result.manifest:
            how = "plaintext" if args.plaintext_manifest else "encrypted"
            print(f"manifest ({how}; keep it private): {result.manifest}")
    return rc
