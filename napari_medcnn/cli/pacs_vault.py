"""The encrypted PACS cache on the command line (issue 17): ``pacs get
--keep-encrypted DIR`` keeps retrieved series only encrypted (see
:mod:`napari_medcnn.pacs.vault`), ``pacs open-cache DIR --out D`` lists
them or decrypts them for reading, and ``pacs send --deidentify --key K``
opens an encrypted key.

The passphrase comes from ``--passphrase-file FILE`` or the environment
variable ``NAPARI_MEDCNN_PASSPHRASE``, never from the command line.  A
wrong passphrase, or a changed, truncated or swapped file, is
"authentication failed", exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_medcnn.cli.manifest import PassphraseError, add_passphrase_option
from napari_medcnn.cli.options import EXIT_DONE, EXIT_NOTHING, EXIT_STATUS, exit_status

__all__ = [
    "add_open_cache",
    "add_vault_options",
    "get_into_vault",
    "print_table",
    "run_open_cache",
    "send_passphrase",
    "series_to_get",
]

_OPEN_CACHE = (
    "list (--list) or decrypt the series of an encrypted cache made by "
    "'get --keep-encrypted' into --out DIR (<DIR>/<study>/<series>/), "
    "atomically; --study / --series pick series (default: all)"
)


def add_vault_options(p: argparse.ArgumentParser) -> None:
    """Add ``--keep-encrypted DIR`` and ``--passphrase-file FILE`` to the
    options every ``pacs`` action takes."""
    p.add_argument(
        "--keep-encrypted",
        metavar="DIR",
        help="get: keep the retrieved series only encrypted at rest, in the "
        "encrypted cache DIR (made if missing or empty; AES-256-GCM under "
        "the passphrase; file names and plaintext metadata carry no patient "
        "data); instead of --out. Read them with 'pacs open-cache DIR'",
    )
    add_passphrase_option(
        p,
        " get --keep-encrypted: the encrypted cache's passphrase; send "
        "--deidentify: opens an encrypted --key file.",
    )


def add_open_cache(acts: argparse._SubParsersAction) -> None:
    """Register ``pacs open-cache DIR`` (no server needed)."""
    a = acts.add_parser(
        "open-cache",
        help=_OPEN_CACHE,
        description=_OPEN_CACHE + ". The decrypted copy is plaintext: give a "
        "folder you protect, and delete it when done (the napari PACS panel "
        "decrypts into its session cache instead, removed at close).",
        epilog="A wrong passphrase, or a changed, truncated or swapped file in "
        "the cache: 'authentication failed', and nothing is written. " + EXIT_STATUS,
    )
    a.add_argument("cache", metavar="DIR", help="the encrypted cache folder")
    a.add_argument("--out", metavar="DIR", help="folder to decrypt into")
    a.add_argument("--list", action="store_true", help="list the series only")
    a.add_argument("--study", metavar="UID", help="only the series of this study")
    a.add_argument("--series", metavar="UID", help="only this series")
    a.add_argument("--json", action="store_true", help="--list: print JSON")
    add_passphrase_option(a)
    a.set_defaults(func=run_open_cache, files=[])


def _passphrase(args: argparse.Namespace, what: str) -> bytes:
    """The passphrase, or PassphraseError saying how to give one."""
    from napari_medcnn.cli.manifest import passphrase_arg

    value = passphrase_arg(getattr(args, "passphrase_file", None))
    if value is None:
        raise PassphraseError(
            f"{what} needs a passphrase: --passphrase-file FILE or the "
            "environment variable NAPARI_MEDCNN_PASSPHRASE"
        )
    return value


def send_passphrase(args: argparse.Namespace) -> bytes | None:
    """``send --deidentify``: the passphrase that opens an encrypted
    ``--key`` file (None when none is given; the key file then says
    whether it needs one)."""
    from napari_medcnn.cli.manifest import passphrase_arg

    return passphrase_arg(getattr(args, "passphrase_file", None))


def get_into_vault(client: Any, args: argparse.Namespace) -> int:
    """``pacs get --keep-encrypted DIR``: retrieve ``--series`` (or every
    series of ``--study``) into the encrypted cache only; returns the exit
    status."""
    from napari_medcnn._progress import drain
    from napari_medcnn.pacs import PacsError
    from napari_medcnn.pacs.vault import Vault, VaultError, iter_retrieve_to_vault

    if args.out:
        print("error: give --out DIR (plaintext) or --keep-encrypted DIR "
              "(encrypted), not both", file=sys.stderr)  # fmt: skip
        return EXIT_NOTHING
    try:
        passphrase = _passphrase(args, "--keep-encrypted")
        vault = Vault.open_or_create(args.keep_encrypted, passphrase)
    except (PassphraseError, VaultError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    series = series_to_get(client, args)
    done = failed = 0

    def show(event) -> None:
        stage, i, n = event
        what = "instances" if stage == "retrieve" else "sealed"
        print(f"\r  {i}/{n or '?'} {what}", end="", file=sys.stderr, flush=True)

    with vault:
        for uid in series:
            try:
                entry = drain(
                    iter_retrieve_to_vault(client, args.study, uid, vault), show
                )
            except (PacsError, VaultError, OSError, ValueError) as exc:
                print(f"\nfailed: series {uid}: {exc}", file=sys.stderr)
                failed += 1
                continue
            print("", file=sys.stderr)
            print(f"encrypted: series {uid} ({entry.n_instances} instance(s)) "
                  f"in {vault.path}")  # fmt: skip
            done += 1
    return exit_status(done, failed)


def print_table(rows: list[dict[str, str]], empty: str = "(nothing found)") -> None:
    """Print rows of strings as aligned columns (header first), or ``empty``."""
    if not rows:
        print(empty)
        return
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    print("  ".join(c.ljust(width[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(r[c].ljust(width[c]) for c in cols).rstrip())


def run_open_cache(args: argparse.Namespace) -> int:
    """``pacs open-cache DIR``: list or decrypt; returns the exit status."""
    import json

    from napari_medcnn._progress import drain
    from napari_medcnn.pacs import PacsError
    from napari_medcnn.pacs.vault import Vault, VaultError

    if not args.list and not args.out:
        print("error: open-cache needs --out DIR (or --list)", file=sys.stderr)
        return EXIT_NOTHING
    try:
        vault = Vault.open(args.cache, _passphrase(args, "open-cache"))
        with vault:
            chosen = vault.find(args.study, args.series)
            if args.list:
                rows = [{"study_uid": s.study_uid, **s.display_row()} for s in chosen]
                if args.json:
                    print(json.dumps(rows, indent=2))
                else:
                    print_table(rows, "(the encrypted cache is empty)")
                return EXIT_DONE
            if not chosen:
                print("error: no such series in the encrypted cache", file=sys.stderr)
                return EXIT_NOTHING
            done = failed = 0
            for entry in chosen:
                try:
                    folder = drain(vault.iter_extract(entry, args.out))
                except (VaultError, PacsError, OSError, ValueError) as exc:
                    print(f"failed: series {entry.series_uid}: {exc}", file=sys.stderr)
                    failed += 1
                    continue
                print(folder)
                done += 1
    except (PassphraseError, VaultError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    return exit_status(done, failed)


def series_to_get(client: Any, args: argparse.Namespace) -> list[str]:
    """The series UIDs ``pacs get`` retrieves: ``--series``, or every
    series of ``--study`` on the PACS."""
    if args.series:
        return [args.series]
    return [s.series_uid for s in client.find_series(args.study)]
