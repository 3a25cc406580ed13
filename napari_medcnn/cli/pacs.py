"""``napari-medcnn pacs echo|find|get|send``: thin over
:mod:`napari_medcnn.pacs`.

The server is ``--dicomweb URL``, ``--dimse AET@HOST:PORT`` or a saved
``--profile NAME``.  Secrets come only from environment variables
(``--password-env VAR``, ``--token-env VAR``) or the profile, never from
the command line, and are never printed.  In transit: HTTPS and DICOM TLS
(``--tls``) verify the server against ``--ca-bundle`` (or the system's
CAs), and ``--client-cert``/``--client-key`` present a client certificate
(file paths only).  Patient names are masked in
``find`` unless ``--show-names``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

from napari_medcnn.cli.manifest import PassphraseError
from napari_medcnn.cli.options import EXIT_DONE, EXIT_NOTHING, EXIT_STATUS, exit_status
from napari_medcnn.cli.pacs_vault import (
    add_open_cache,
    add_vault_options,
    get_into_vault,
    print_table,
    send_passphrase,
    series_to_get,
)

__all__ = ["add_pacs", "run_pacs", "server_from_args"]


_ACTIONS = {
    "echo": "test the connection (C-ECHO, or a QIDO-RS search)",
    "find": "search studies (or the series of --study) with the filters; "
    "patient names are masked unless --show-names",
    "get": "retrieve --series (or every series of --study) into --out DIR "
    "(required: <DIR>/<study>/<series>/), atomically: a failed or "
    "interrupted retrieve leaves no partial series",
    "send": "store FILES (DICOM files or folders) with STOW-RS or C-STORE, "
    "optionally de-identified first (--deidentify); de-identified objects "
    "(or results of a de-identified scan) are refused unless "
    "--confirm-deidentified",
}
_EPILOG = (
    "Secrets are read from environment variables (--password-env, "
    "--token-env) or a saved profile (mode 0600 in the user's config folder), "
    "never from the command line, and never printed. " + EXIT_STATUS
)


def _common_options() -> argparse.ArgumentParser:
    """The options every action takes (server, auth, filters, output)."""
    p = argparse.ArgumentParser(add_help=False)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dicomweb", metavar="URL", help="DICOMweb root URL")
    where.add_argument("--dimse", metavar="AET@HOST:PORT", help="DIMSE node")
    where.add_argument("--profile", metavar="NAME", help="a saved server profile")
    p.add_argument("--calling-aet", metavar="AET", help="our AE title (DIMSE)")
    p.add_argument(
        "--storage-port",
        type=int,
        metavar="PORT",
        help="port of our Storage SCP for C-MOVE (the PACS must know our "
        "calling AE title at this port)",
    )
    p.add_argument(
        "--retrieve",
        choices=("auto", "get", "move"),
        help="DIMSE retrieve: C-GET, falling back to C-MOVE (auto, default)",
    )
    p.add_argument("--user", metavar="U", help="HTTP basic user (DICOMweb)")
    p.add_argument("--password-env", metavar="VAR", help="variable with the password")
    p.add_argument("--token-env", metavar="VAR", help="variable with a bearer token")
    p.add_argument(
        "--ca-bundle",
        metavar="F",
        help="CA bundle (PEM) verifying the server over HTTPS or DICOM TLS "
        "(default: the system's CAs)",
    )
    p.add_argument(
        "--client-cert",
        metavar="F",
        help="our client certificate (PEM) for servers that require one "
        "(HTTPS or DICOM TLS; also our Storage SCP's for C-MOVE over TLS)",
    )
    p.add_argument(
        "--client-key",
        metavar="F",
        help="its unencrypted private key (PEM); not needed when the "
        "certificate file holds the key",
    )
    p.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="DIMSE over TLS (with --ca-bundle, and --client-cert when the "
        "PACS requires one); DICOMweb uses an https:// URL instead",
    )
    p.add_argument("--timeout", type=float, metavar="S", help="seconds (default 30)")
    p.add_argument(
        "--save-profile",
        metavar="NAME",
        help="after a successful command, save the server as profile NAME "
        "(secrets only as variable names)",
    )
    f = p.add_argument_group("filters")
    f.add_argument("--patient-id")
    f.add_argument("--patient-name")
    f.add_argument("--date", metavar="FROM-TO", help="YYYYMMDD-YYYYMMDD or one date")
    f.add_argument("--modality")
    f.add_argument("--accession")
    f.add_argument("--description")
    f.add_argument("--study", metavar="UID")
    f.add_argument("--series", metavar="UID")
    p.add_argument("--out", metavar="DIR", help="get: folder to write into (required)")
    p.add_argument("--json", action="store_true", help="find: print JSON")
    p.add_argument("--show-names", action="store_true", help="find: show patient names")
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="send: de-identify (PS3.15 Basic Profile) before sending",
    )
    p.add_argument("--key", metavar="KEYFILE", help="send --deidentify: project key")
    p.add_argument(
        "--confirm-deidentified",
        action="store_true",
        help="send: send de-identified objects (or results of a de-identified "
        "scan) too; without it they are refused (--deidentify implies it)",
    )
    add_vault_options(p)  # --keep-encrypted, --passphrase-file (pacs_vault.py)
    return p


def add_pacs(sub: argparse._SubParsersAction) -> None:
    """Register the ``pacs`` subcommand (actions echo, find, get, send)."""
    p = sub.add_parser(
        "pacs",
        help="search, retrieve from and send to a PACS (DICOMweb or DIMSE)",
        description="napari-medcnn pacs echo|find|get|send --dicomweb URL | "
        "--dimse AET@HOST:PORT | --profile NAME [options] [FILES]. "
        + " ".join(f"{k}: {v}." for k, v in _ACTIONS.items()),
        epilog=_EPILOG,
    )
    acts = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = _common_options()
    for name, text in _ACTIONS.items():
        a = acts.add_parser(
            name, parents=[common], help=text, description=text, epilog=_EPILOG
        )
        if name == "send":
            a.add_argument("files", nargs="+", metavar="FILES")
        else:
            a.set_defaults(files=[])
    p.set_defaults(func=run_pacs)
    add_open_cache(acts)  # its own func: needs no server


def server_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~napari_medcnn.pacs.Server` the options name.

    Raises:
        ValueError: no server given, a bad address, or an unknown profile.
    """
    from napari_medcnn.pacs import Server, load_profiles

    opts: dict[str, Any] = {}
    for name, key in (
        ("calling_aet", "calling_aet"), ("storage_port", "storage_port"),
        ("retrieve", "retrieve"), ("user", "user"),
        ("password_env", "password_env"), ("token_env", "token_env"),
        ("ca_bundle", "ca_bundle"), ("timeout", "timeout"),
        ("client_cert", "client_cert"), ("client_key", "client_key"),
        ("tls", "tls"),
    ):  # fmt: skip
        value = getattr(args, name, None)
        if value is not None:
            opts[key] = value
    _check_files(opts)
    if args.profile:
        profiles = load_profiles()
        if args.profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none saved"
            raise ValueError(f"no PACS profile {args.profile!r} ({known})")
        return profiles[args.profile].with_(**opts)
    if args.dicomweb:
        return Server(args.dicomweb, "dicomweb", url=args.dicomweb, **opts)
    if args.dimse:
        return Server.dimse(args.dimse, **opts)
    raise ValueError(
        "give a server: --dicomweb URL, --dimse AET@HOST:PORT or --profile"
    )


def _check_files(opts: dict[str, Any]) -> None:
    """A named CA bundle, certificate or key file must exist (said before
    any connection, exit status 2)."""
    import os

    for key, what, flag in (
        ("ca_bundle", "CA bundle", "--ca-bundle"),
        ("client_cert", "client certificate", "--client-cert"),
        ("client_key", "client key", "--client-key"),
    ):
        path = opts.get(key)
        if path and not os.path.isfile(path):
            raise ValueError(f"{what} {path} not found ({flag})")


def _study_filters(args) -> dict[str, Any]:
    return {
        "patient_id": args.patient_id,
        "patient_name": args.patient_name,
        "date": args.date,
        "modality": args.modality,
        "accession": args.accession,
        "description": args.description,
        "study_uid": args.study,
    }


def _find(client, args) -> int:
    if args.study:
        found = client.find_series(
            args.study,
            modality=args.modality,
            description=args.description,
            series_uid=args.series,
        )
        mask = not args.show_names
        tokens: frozenset[str] = frozenset()
        if mask:  # a series response need not carry the patient: ask the study
            for study in client.find_studies(study_uid=args.study):
                tokens |= study.tokens
        rows = [
            {**s.display_row(mask, tokens), "series_uid": s.series_uid} for s in found
        ]
    else:
        studies = client.find_studies(**_study_filters(args))
        rows = [
            {**s.display_row(mask_names=not args.show_names), "study_uid": s.study_uid}
            for s in studies
        ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows)
    return EXIT_DONE


def _get(client, args) -> int:
    from napari_medcnn._progress import drain
    from napari_medcnn.pacs import PacsError

    if not args.study:
        print("error: get needs --study UID (and optionally --series UID)",
              file=sys.stderr)  # fmt: skip
        return EXIT_NOTHING
    if args.keep_encrypted:
        return get_into_vault(client, args)
    if not args.out:
        print("error: get needs --out DIR: retrieved series are written only "
              "into a folder you choose (the PACS cache is deleted at exit)",
              file=sys.stderr)  # fmt: skip
        return EXIT_NOTHING
    series = series_to_get(client, args)
    done = failed = 0

    def show(event) -> None:
        _stage, i, n = event
        print(f"\r  {i}/{n or '?'} instances", end="", file=sys.stderr, flush=True)

    for uid in series:
        try:
            folder = drain(client.retrieve_series(args.study, uid, args.out), show)
        except (PacsError, OSError, ValueError) as exc:
            print(f"\nfailed: series {uid}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print("", file=sys.stderr)
        print(folder)
        done += 1
    return exit_status(done, failed)


def _send(client, args) -> int:
    from napari_medcnn.pacs import send

    if not args.files:
        print("error: send needs FILES (DICOM files or folders)", file=sys.stderr)
        return EXIT_NOTHING
    files = list(args.files)
    with tempfile.TemporaryDirectory(prefix="napari-medcnn-send-") as tmp:
        if args.deidentify:
            from napari_medcnn.deid.run import DeidError, KeyFileError
            from napari_medcnn.pacs.store import deidentify_for_sending

            try:
                files = [str(p) for p in deidentify_for_sending(
                    files, f"{tmp}/out", key_file=args.key,
                    passphrase=send_passphrase(args))]  # fmt: skip
            except (DeidError, KeyFileError, PassphraseError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_NOTHING
        # --deidentify asked for de-identified copies: that is the confirmation
        confirm = args.confirm_deidentified or args.deidentify
        result = send(client, files, confirm_deidentified=confirm)
    for path, reason in result.failed:
        print(f"failed: {path}: {reason}", file=sys.stderr)
    print(f"stored {len(result.stored)} instance(s); {len(result.failed)} failed")
    return exit_status(len(result.stored), len(result.failed))


def run_pacs(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit status."""
    from napari_medcnn.pacs import PacsError, connect, save_profile

    try:
        server = server_from_args(args)
        client = connect(server)
    except (ValueError, PacsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    try:
        if args.action == "echo":
            seconds = client.echo()
            print(f"{server.label}: OK ({seconds * 1000:.0f} ms)")
            rc = EXIT_DONE
        elif args.action == "find":
            rc = _find(client, args)
        elif args.action == "get":
            rc = _get(client, args)
        else:
            rc = _send(client, args)
    except (PacsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    if args.save_profile and rc != EXIT_NOTHING:
        path = save_profile(server.with_(name=args.save_profile))
        print(f"saved profile {args.save_profile!r} in {path}")
    return rc
