"""A cohort run, as a progress generator that the CLI drains and the Cohort
widget runs in a worker thread.

:func:`iter_cohort` checks everything that can be checked before work
starts (the output folder, the model and scope, the inputs, the executor:
any problem raises :class:`CohortInputError` and nothing is written), then
processes every item not yet journalled for this task, appending each row to
the journal as it finishes, and finally writes ``results.csv``,
``results.parquet``, ``summary.json`` and ``report.html`` from the journal.
Closing the generator (Cancel in napari, Ctrl-C on the command line) stops
the workers; what finished is journalled, the tables are written for it,
and a rerun resumes.

Output folder layout::

    journal.jsonl     append-only rows (the source of truth; 0600)
    results.csv  results.parquet  summary.json  report.html
    thumbs/<key>.png  saliency/<key>.nii.gz|.npy(+.json)  deid/<key>/...
    .lock             held while a run writes here
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from napari_medcnn.cohort.executors import ExecutorError, make_executor
from napari_medcnn.cohort.items import CohortInputError, Item, iter_discover
from napari_medcnn.cohort.journal import JOURNAL_NAME, Journal
from napari_medcnn.cohort.results import summary, write_results
from napari_medcnn.cohort.task import CohortOptions, load_model, task_id

__all__ = ["CohortEvent", "CohortResult", "iter_cohort", "OUTPUT_NAMES"]

#: the files a run writes at the top of its output folder
OUTPUT_NAMES = ("results.csv", "results.parquet", "summary.json", "report.html")


@dataclass
class CohortEvent:
    """One progress event.

    Attributes:
        stage: ``discover`` (finding items), ``start`` (``total`` items to
            do, ``done`` already journalled), ``item`` (one finished:
            ``row``), ``wait`` (a heartbeat about every half second while no
            item finishes: closing the generator then cancels at once),
            ``write`` (the tables and report).
        done: items finished so far (this run plus earlier runs).
        total: items in the cohort (for ``discover``: folders or rows seen).
        row: the finished row (``item`` events).
        eta_s: estimated seconds left, from this run's throughput.
        items: every item of the cohort (``start`` events), e.g. to open
            a row's series while the run goes on.
        rows: the rows already journalled by earlier runs (``start``).
    """

    stage: str
    done: int
    total: int
    row: dict[str, Any] | None = None
    eta_s: float | None = None
    items: list[Item] | None = None
    rows: list[dict[str, Any]] | None = None


@dataclass
class CohortResult:
    """What a run leaves.

    Attributes:
        out_dir: the output folder.
        rows: one row per item, in input order (journalled ones only).
        items: every item, in input order (paths for opening in napari).
        summary: the ``summary.json`` content.
        files: name -> path of the tables and report written.
        cancelled: the run was stopped before every item was done.
    """

    out_dir: Path
    rows: list[dict[str, Any]]
    items: list[Item]
    summary: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    cancelled: bool = False

    @property
    def n_errors(self) -> int:
        return sum(1 for r in self.rows if r.get("status") == "error")


def check_out_dir(out: Path) -> None:
    """Refuse an output folder that is a file, or a non-empty folder that is
    not a cohort output folder (nothing of the user's is overwritten).

    Raises:
        CohortInputError: with the reason.
    """
    if out.exists() and not out.is_dir():
        raise CohortInputError(f"{out}: the output folder is a file; give a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / JOURNAL_NAME).exists():
        raise CohortInputError(
            f"{out}: the folder is not empty and holds no {JOURNAL_NAME}; it is "
            "not a cohort output folder, so nothing is written into it: give "
            "a new or empty folder, or the folder of an earlier cohort run to "
            "resume it"
        )


class _Lock:
    """An exclusive lock on ``<out>/.lock`` for the run's duration."""

    def __init__(self, out: Path):
        self.path = out / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self.fd)
            self.fd = None
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise CohortInputError(
                    f"{self.path.parent}: another cohort run is writing there"
                ) from exc
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _check_key(options: CohortOptions) -> None:
    """With ``deidentify``: an existing ``key_file`` must open (an
    encrypted one with ``options.passphrase`` or the environment variable
    ``NAPARI_MEDCNN_PASSPHRASE``), checked once here rather than failing
    every item.

    Raises:
        CohortInputError: the key file cannot be read, is encrypted and no
            passphrase was given, or the passphrase is wrong.
    """
    if not options.deidentify or not options.key_file:
        return
    if not Path(options.key_file).exists():
        return  # made by _make_key once everything else is checked
    from napari_medcnn.deid.keys import KeyFileError, ProjectKey

    try:
        ProjectKey.from_file(options.key_file, passphrase=options.passphrase)
    except KeyFileError as exc:
        raise CohortInputError(str(exc)) from None


def _make_key(options: CohortOptions) -> None:
    """Create a missing ``key_file`` once, here, before any worker starts
    (sealed under the passphrase when one is given): workers that each
    created it would pseudonymise with different keys."""
    if not options.deidentify or not options.key_file:
        return
    if Path(options.key_file).exists():
        return
    from napari_medcnn.deid.keys import KeyFileError, ProjectKey

    try:
        ProjectKey.from_file(
            options.key_file, create=True, passphrase=options.passphrase
        )
    except (KeyFileError, OSError) as exc:
        raise CohortInputError(
            f"cannot create key file {options.key_file}: {exc}"
        ) from None


def _check_model(options: CohortOptions):
    from napari_medcnn.inference.request import check_request
    from napari_medcnn.models.checkpoint import CheckpointError

    try:
        loaded = load_model(options)
    except CheckpointError as exc:
        raise CohortInputError(str(exc)) from exc
    if options.scope is not None:
        scope = "volume" if options.scope == "volume" else "slices"
        try:
            check_request(loaded.card, scope=scope)
        except ValueError as exc:
            raise CohortInputError(str(exc)) from exc
    if options.explain:
        from napari_medcnn.saliency import available_methods

        methods = available_methods(loaded.model)
        if options.explain not in methods:
            raise CohortInputError(
                f"{options.explain} does not work with this model; use one of "
                f"{', '.join(methods)}"
            )
    return loaded


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def iter_cohort(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: CohortOptions | None = None,
    *,
    executor: str = "local",
    workers: int | None = None,
    scheduler: str | None = None,
    redo_errors: bool = False,
    report: bool = True,
    top_n: int = 12,
) -> Generator[CohortEvent, None, CohortResult]:
    """Classify (and explain) every item of a cohort, resumably.

    Args:
        inputs: folders, files and CSV manifests (see ``items.py``).
        out_dir: the output folder (created; or an earlier run's, resumed).
        options: what to do per item (model, scope, explain, de-identify).
        executor: ``local`` (worker processes) or ``dask``.
        workers: worker processes (default: one per core).
        scheduler: a Dask scheduler address (``executor="dask"`` only).
        redo_errors: process items journalled as ``error`` again.
        report: write ``report.html``.
        top_n: items in the report's gallery.

    Yields:
        :class:`CohortEvent` progress.

    Returns:
        The :class:`CohortResult`.

    Raises:
        CohortInputError: bad inputs, output folder, model, scope or
            executor settings; raised before anything is written.
    """
    options = options or CohortOptions()
    out = Path(out_dir)
    check_out_dir(out)
    _check_key(options)
    key_options = options  # with the passphrase, to seal a new key file
    if executor == "dask" and scheduler and options.passphrase is not None:
        # never send a secret to a remote cluster: its workers read
        # NAPARI_MEDCNN_PASSPHRASE from their own environment
        options = replace(options, passphrase=None)
    loaded = _check_model(options)
    task = task_id(loaded.card.model_id, options, loaded.card)
    try:
        ex = make_executor(executor, workers=workers, scheduler=scheduler)
    except ValueError as exc:
        raise CohortInputError(str(exc)) from exc
    # workers start (import torch, load the model) while items are found
    ex.start(options, out)
    try:
        items = yield from _discovered(inputs)
        try:
            ex.wait_ready()
        except ExecutorError as exc:
            raise CohortInputError(str(exc)) from exc
        _make_key(key_options)
        out.mkdir(parents=True, exist_ok=True)
        with _Lock(out):
            result = yield from _process(
                out, items, task, loaded, options, ex, redo_errors, report, top_n
            )
    finally:
        ex.close()
    yield CohortEvent("write", len(result.rows), len(items))
    return result


def _process(
    out, items, task, loaded, options, ex, redo_errors, report, top_n
) -> Generator[CohortEvent, None, CohortResult]:
    """Run the items not yet journalled; the tables at the end, or when
    the generator is closed (cancel)."""
    started, t0 = _now(), time.perf_counter()
    processed = 0
    cancelled = True
    journal = Journal(out / JOURNAL_NAME)
    try:
        journal.open()
        done = journal.done(task, redo_errors=redo_errors)
        keys = {it.key for it in items}
        todo = [it for it in items if it.key not in done]
        n_done = len(keys & done)
        latest = journal.latest(task)
        earlier = [latest[it.key] for it in items if it.key in done]
        yield CohortEvent("start", n_done, len(items), items=items, rows=earlier)
        for row in ex.rows(todo, options, out):
            if row is None:  # no item finished yet: a chance to cancel
                yield CohortEvent("wait", n_done + processed, len(items))
                continue
            journal.append(task, row)
            processed += 1
            rate = processed / max(time.perf_counter() - t0, 1e-9)
            left = len(todo) - processed
            yield CohortEvent("item", n_done + processed, len(items), row, left / rate)
        cancelled = False
    finally:
        journal.close()
        ex.close()
        # the tables for what is journalled, also after a cancel
        result = _finish(
            out, items, task, loaded, options, ex, started, t0, processed,
            cancelled, report, top_n,
        )  # fmt: skip
    return result


def _discovered(inputs) -> Generator[CohortEvent, None, list[Item]]:
    gen = iter_discover(inputs)
    while True:
        try:
            stage, i, n = next(gen)
        except StopIteration as stop:
            return stop.value
        yield CohortEvent(stage, i, n)


def _finish(
    out, items, task, loaded, options, ex, started, t0, processed, cancelled,
    report, top_n,
) -> CohortResult:  # fmt: skip
    latest = Journal(out / JOURNAL_NAME).latest(task)
    rows = [latest[it.key] for it in items if it.key in latest]
    elapsed = time.perf_counter() - t0
    card = loaded.card
    run = {
        "model_id": card.model_id,
        "model_name": card.name,
        "classes": list(card.classes),
        "task": task,
        "executor": ex.name,
        "workers": ex.workers,
        "options": {
            "scope": options.scope,
            "explain": options.explain,
            "deidentify": options.deidentify,
        },
        "started_at": started,
        "finished_at": _now(),
        "elapsed_s": round(elapsed, 3),
        "processed_this_run": processed,
        "items_per_s": round(processed / elapsed, 4) if elapsed > 0 else None,
        "complete": len(rows) == len(items),
        "cancelled": cancelled,
    }
    summ = summary(rows, run=run)
    files = write_results(rows, out, classes=card.classes, summary=summ)
    if report:
        from napari_medcnn.cohort.report import write_report

        files["report"] = write_report(
            rows,
            out,
            classes=list(card.classes),
            top_n=top_n,
            model={"id": card.model_id, "name": card.name},
            summary=summ,
            include_phi=options.include_phi,
        )
    return CohortResult(out, rows, items, summ, files, cancelled)
