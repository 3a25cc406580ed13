"""``napari-medcnn manifest show|rekey``: read an encrypted manifest for an
authorised re-identification, and change a sealed file's passphrase.

Also the passphrase options shared with ``deidentify``: the passphrase
comes from ``--passphrase-file FILE`` or the environment variable
``NAPARI_MEDCNN_PASSPHRASE``, never from the command line (the process list
shows every argument to every user of the machine).

Exit status: 0 done; 1 ``show --find`` with several values, some not in
the manifest; 2 nothing done: bad arguments, an unreadable passphrase
file, a wrong passphrase or a changed or truncated file ("authentication
failed"), or no ``--find`` value in the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from napari_medcnn.cli.options import EXIT_DONE, EXIT_NOTHING, EXIT_STATUS, exit_status

__all__ = [
    "PassphraseError",
    "add_manifest",
    "add_passphrase_option",
    "passphrase_arg",
]


class PassphraseError(Exception):
    """The passphrase option or file cannot be used (exit status 2)."""


def add_passphrase_option(p: argparse.ArgumentParser, help_extra: str = "") -> None:
    """Add ``--passphrase-file FILE`` to a parser."""
    p.add_argument(
        "--passphrase-file",
        metavar="FILE",
        help="read the passphrase from FILE (its contents less one trailing "
        "newline; keep it mode 0600); default: the environment variable "
        "NAPARI_MEDCNN_PASSPHRASE. Never on the command line." + help_extra,
    )


def passphrase_arg(
    path: str | None, *, env: bool = True, what: str = "--passphrase-file"
) -> bytes | None:
    """The passphrase from ``path``, else (with ``env``) from
    ``NAPARI_MEDCNN_PASSPHRASE``; None when neither is given.

    Raises:
        PassphraseError: the file cannot be read or is empty, or the
            variable is set but empty (messages never quote a passphrase).
    """
    from napari_medcnn.deid.sealed import (
        ENV_PASSPHRASE,
        SealedFileError,
        read_passphrase_file,
    )

    if path is not None:
        try:
            return read_passphrase_file(path)
        except SealedFileError as exc:
            raise PassphraseError(f"{what}: {exc}") from None
    if env and ENV_PASSPHRASE in os.environ:
        value = os.environ[ENV_PASSPHRASE]
        if not value:
            raise PassphraseError(f"the environment variable {ENV_PASSPHRASE} is empty")
        return value.encode("utf-8")
    return None


def add_manifest(sub: argparse._SubParsersAction) -> None:
    """Register the ``manifest`` subcommand (``show`` and ``rekey``)."""
    p = sub.add_parser(
        "manifest",
        help="decrypt and show a de-identification manifest, or change the "
        "passphrase of an encrypted manifest or key file",
        description="Work on the files that re-identify a de-identified "
        "export: the --manifest and --key files of 'napari-medcnn "
        "deidentify', encrypted (AES-256-GCM under a key derived from the "
        "passphrase with scrypt) when a passphrase was given.",
        epilog=EXIT_STATUS,
    )
    verbs = p.add_subparsers(dest="verb", metavar="ACTION", required=True)
    show = verbs.add_parser(
        "show",
        help="decrypt and print the mapping, or look pseudonyms up",
        description="Print the original -> new identifier mapping of a "
        "manifest (JSON, to standard output), or with --find only the "
        "original identifiers behind a pseudonym, a new UID or an output "
        "file name. For an authorised re-identification only: the output "
        "holds names and IDs.",
        epilog="Exit status: 0 done; 1 done, but some items failed (some "
        "--find values are not in the manifest); 2 nothing done: bad "
        "arguments, a wrong passphrase or a changed or truncated file "
        "(authentication failed), or no --find value found.",
    )
    show.add_argument("file", metavar="FILE", help="the manifest")
    add_passphrase_option(show)
    show.add_argument(
        "--find",
        action="append",
        default=[],
        metavar="PSEUDONYM",
        help="print only the records whose new value is this: a patient "
        "pseudonym (ANON-...), a new study, series or instance UID, or an "
        "output file name; repeat for more",
    )
    show.set_defaults(func=run_show)
    rekey = verbs.add_parser(
        "rekey",
        help="re-encrypt a manifest or key file under a new passphrase",
        description="Decrypt FILE with the current passphrase and write it "
        "again, encrypted under the new one (atomically: a crash leaves the "
        "old file or the new one, never a part; mode 0600). A plaintext "
        "FILE (written without a passphrase) is encrypted. The old "
        "passphrase no longer opens it.",
        epilog="Exit status: 0 done; 1 done, but some items failed (not "
        "used); 2 nothing done: bad arguments, a wrong passphrase or a "
        "changed or truncated file (authentication failed); the file is "
        "left as it was.",
    )
    rekey.add_argument("file", metavar="FILE", help="a manifest or key file")
    add_passphrase_option(rekey, " (the current passphrase)")
    rekey.add_argument(
        "--new-passphrase-file",
        metavar="FILE",
        required=True,
        help="read the new passphrase from FILE",
    )
    rekey.set_defaults(func=run_rekey)


def run_show(args: argparse.Namespace) -> int:
    """Run ``manifest show``; returns the exit status."""
    from napari_medcnn.deid.reidentify import find, read_manifest
    from napari_medcnn.deid.sealed import SealedFileError

    try:
        data, sealed = read_manifest(args.file, passphrase_arg(args.passphrase_file))
    except (PassphraseError, SealedFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    if not sealed:
        print(
            f"warning: {args.file} is a plaintext manifest: anyone who can read "
            "it can re-identify the export; encrypt it with 'napari-medcnn "
            "manifest rekey'",
            file=sys.stderr,
        )
    if not args.find:
        print(json.dumps(data, indent=2))
        return EXIT_DONE
    found: list = []
    missing = 0
    for term in args.find:
        hits = find(data, term)
        if not hits:
            missing += 1
            print(f"not found: {term}", file=sys.stderr)
        found.extend(hits)
    print(json.dumps(found, indent=2))
    return exit_status(len(args.find) - missing, missing)


def run_rekey(args: argparse.Namespace) -> int:
    """Run ``manifest rekey``; returns the exit status."""
    from napari_medcnn.deid.reidentify import rekey
    from napari_medcnn.deid.sealed import SealedFileError

    try:
        old = passphrase_arg(args.passphrase_file)
        new = passphrase_arg(args.new_passphrase_file, env=False,
                             what="--new-passphrase-file")  # fmt: skip
        if old is not None and old == new:
            raise PassphraseError("the new passphrase is the same as the old one")
        was_sealed = rekey(args.file, old, new)
    except (PassphraseError, SealedFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    how = "re-encrypted" if was_sealed else "encrypted (it was plaintext)"
    print(f"{how} {args.file} under the new passphrase")
    return EXIT_DONE
