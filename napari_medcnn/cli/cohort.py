"""``napari-medcnn cohort INPUT... --out DIR``: classify (and explain) every
series, volume and image of a cohort, resumably, on local worker processes
or a Dask cluster; thin over :func:`napari_medcnn.cohort.iter_cohort`.

Progress is a bar with the ETA (rich) on a terminal, one line per tenth of
the items otherwise.  Exit status (:data:`EXIT`): 0 when every item is
``ok`` (or skipped: not an image), 1 when some are ``error`` (the run still
completed), 2 for bad arguments (nothing written)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from napari_medcnn.cli.manifest import (
    PassphraseError,
    add_passphrase_option,
    passphrase_arg,
)
from napari_medcnn.cli.options import add_model_options

EXIT = (
    "Exit status: 0 done; 1 done, but some items failed (error rows; skipped "
    "non-image items do not count); 2 nothing done: bad arguments, inputs, "
    "model or output folder, or an unreachable scheduler (nothing written)."
)


def add_cohort(sub: argparse._SubParsersAction) -> None:
    from napari_medcnn.cli.explain import METHOD_ALIASES

    p = sub.add_parser(
        "cohort",
        help="classify a whole cohort (folders or a CSV manifest), resumably",
        description="Find every DICOM series, NIfTI volume and image under "
        "the INPUT folders (or listed in a CSV manifest with a 'path' column; "
        "'series_uid', 'id' and other columns are carried through), classify "
        "each with the model (optionally explain it), and write into DIR: "
        "results.csv, results.parquet, summary.json and a self-contained "
        "report.html, plus thumbs/ and saliency/. Every finished item is "
        "journalled at once (DIR/journal.jsonl): rerunning the same command "
        "skips what is done, so a crash or a reboot loses at most the items "
        "in flight. A failing item (corrupt file, missing decoder, out of "
        "memory) is an 'error' row with its reason; the run goes on.",
        epilog="No patient name, ID or birth date is written anywhere unless "
        "--include-phi. Dask on a cluster: start a scheduler and workers "
        "(e.g. with dask-jobqueue on SLURM, see the README) on machines "
        "that share DIR, then pass --executor dask --scheduler ADDR. " + EXIT,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="folder, file or .csv")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_model_options(p)
    p.add_argument(
        "--scope",
        choices=("slice", "volume"),
        help="slice: a 2D model on every slice; volume: a whole-volume model "
        "(default: what the model's card says)",
    )
    p.add_argument(
        "--explain",
        choices=sorted(METHOD_ALIASES),
        metavar="METHOD",
        help="also write a saliency map per item (as 'explain'; e.g. gradcam, "
        "occlusion) and draw it on the thumbnails",
    )
    p.add_argument(
        "--no-trust-metrics",
        action="store_true",
        help="with --explain: skip the deletion/insertion check of each map "
        "against a random order (saves 1-2 s per item)",
    )
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="de-identify each DICOM series (PS3.15 Basic Profile) into "
        "DIR/deid/ first and read the copy",
    )
    p.add_argument(
        "--key-file",
        metavar="FILE",
        help="de-identification project key (reproducible pseudonyms); an "
        "encrypted one needs its passphrase",
    )
    add_passphrase_option(
        p,
        " Opens an encrypted --key-file (a remote Dask cluster's workers "
        "need NAPARI_MEDCNN_PASSPHRASE set on their own machines).",
    )
    p.add_argument("--executor", choices=("local", "dask"), default="local")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes (default: one per CPU core)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="an existing Dask scheduler, e.g. tcp://host:8786 (--executor dask)",
    )
    p.add_argument(
        "--redo-errors", action="store_true", help="retry items that failed before"
    )
    p.add_argument(
        "--include-phi",
        action="store_true",
        help="keep paths as given even where they name the patient",
    )
    p.add_argument("--top", type=int, default=12, help="items in the report gallery")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_run_cohort)


def _options(args: argparse.Namespace):
    from napari_medcnn.cli.explain import METHOD_ALIASES
    from napari_medcnn.cohort import CohortOptions

    return CohortOptions(
        model=args.model,
        scope=args.scope,
        explain=METHOD_ALIASES[args.explain] if args.explain else None,
        deidentify=args.deidentify,
        key_file=args.key_file,
        passphrase=passphrase_arg(args.passphrase_file),
        include_phi=args.include_phi,
        device=args.device,
        trust_metrics=not args.no_trust_metrics,
    )


class _Progress:
    """A rich progress bar on a terminal; sparse plain lines otherwise."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None
        self.task = None
        self.last = -1

    def __call__(self, ev: Any) -> None:
        if self.quiet:
            return
        if ev.stage == "start":
            self._start(ev)
        elif ev.stage == "item":
            self._item(ev)
        elif ev.stage == "write":
            self.stop()

    def _start(self, ev: Any) -> None:
        if ev.done:
            print(f"resuming: {ev.done} of {ev.total} items already done", flush=True)
        if sys.stdout.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("cohort"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[errors]} error(s)"),
            )
            self.bar.start()
            self.task = self.bar.add_task(
                "cohort", total=ev.total, completed=ev.done, errors=0
            )
        else:
            print(f"{ev.total - ev.done} item(s) to do", flush=True)

    def _item(self, ev: Any) -> None:
        row = ev.row or {}
        if row.get("status") == "error":
            msg = f"error: {row.get('error')}"
            if self.bar is not None:
                self.bar.console.print(msg, markup=False, highlight=False)
            else:
                print(msg, file=sys.stderr, flush=True)
        if self.bar is not None:
            errors = self.bar.tasks[0].fields["errors"]
            errors += row.get("status") == "error"
            self.bar.update(self.task, completed=ev.done, errors=errors)
            return
        step = max(1, ev.total // 10)
        if ev.done // step != self.last or ev.done == ev.total:
            self.last = ev.done // step
            eta = "" if ev.eta_s is None else f", about {ev.eta_s:.0f} s left"
            print(f"{ev.done}/{ev.total} done{eta}", flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _run_cohort(args: argparse.Namespace) -> int:
    from napari_medcnn._progress import drain
    from napari_medcnn.cohort import CohortInputError, iter_cohort

    if args.workers is not None and args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.scheduler and args.executor != "dask":
        print("error: --scheduler needs --executor dask", file=sys.stderr)
        return 2
    try:
        options = _options(args)
    except PassphraseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    progress = _Progress(args.quiet)
    gen = iter_cohort(
        args.inputs,
        args.out,
        options,
        executor=args.executor,
        workers=args.workers,
        scheduler=args.scheduler,
        redo_errors=args.redo_errors,
        report=not args.no_report,
        top_n=args.top,
    )
    try:
        result = drain(gen, progress)
    except CohortInputError as exc:
        progress.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        progress.stop()
        gen.close()
        print(
            f"interrupted: finished items are journalled in {args.out}; run the "
            "same command again to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        progress.stop()
    s = result.summary
    status = ", ".join(f"{n} {k}" for k, n in s["status"].items())
    labels = ", ".join(f"{n} {k}" for k, n in s["labels"].items()) or "none"
    rate = s.get("items_per_s")
    speed = f" at {rate:.2f} items/s" if rate else ""
    print(f"{s['n_items']} item(s): {status}; labels: {labels}{speed}")
    if s.get("outside_domain"):
        print(f"{s['outside_domain']} item(s) outside the model's domain")
    for name, path in result.files.items():
        print(f"wrote {name}: {path}")
    return 1 if result.n_errors else 0
