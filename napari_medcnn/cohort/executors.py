"""Where cohort items run: local worker processes, or a Dask cluster.

Both executors run the same pure :func:`~napari_medcnn.cohort.task.process_item`
and yield its rows as they finish (in completion order; the run sorts them
back into input order), and ``None`` as a heartbeat every fraction of a
second while no row comes, so that a cancel is honoured promptly.  Each
starts in the background while the run finds its items, and a bad setting
(an unreachable scheduler) is reported before anything is written:

    ex = make_executor("dask", workers=2, scheduler=None)
    ex.start(options, out_dir)  # starts in the background
    ...                         # (find the items meanwhile)
    ex.wait_ready()             # may raise ExecutorError
    for row in ex.rows(items, options, out_dir): ...
    ex.close()                  # also on cancel (GeneratorExit)

* ``local`` (:class:`LocalExecutor`): N spawned worker processes (default:
  the CPU count), one torch thread each, the model loaded once per worker
  at start-up.  Each worker takes one item at a time from its own queue, so
  the parent always knows which item a worker holds: a worker that dies (the
  kernel's out-of-memory killer, a native decoder's crash) turns exactly
  that item into an ``error`` row and is replaced, and the run goes on.
  Cancelling terminates the workers at once.
* ``dask`` (:class:`DaskExecutor`): ``dask.distributed``; with no scheduler
  address a ``LocalCluster`` of N single-threaded worker processes, else an
  existing cluster (``tcp://host:8786``; the output folder must then be on
  a file system the workers share).  A worker plugin sets one torch thread
  and loads the model once per worker; items are submitted with
  back-pressure (at most two per worker in flight, topped up from
  ``as_completed``).  A task that kills its worker is not retried on the
  others: it becomes that item's ``error`` row.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from napari_medcnn.cohort.items import Item
from napari_medcnn.cohort.task import CohortOptions, error_row, process_item

__all__ = [
    "EXECUTORS",
    "DaskExecutor",
    "ExecutorError",
    "LocalExecutor",
    "make_executor",
]

EXECUTORS = ("local", "dask")
#: seconds between liveness checks of local workers
POLL_S = 0.5


class ExecutorError(RuntimeError):
    """The executor cannot start (e.g. the scheduler cannot be reached)."""


def default_workers() -> int:
    """One worker per CPU core."""
    return max(1, os.cpu_count() or 1)


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _one_thread() -> None:
    """One torch/BLAS thread in this worker process (N workers share the
    cores; more threads each would only fight over them)."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)


def _warm(options: CohortOptions) -> None:
    """Load the model into this process's cache (errors surface per item)."""
    from napari_medcnn.cohort.task import load_model

    with contextlib.suppress(Exception):  # each item reports it, naming its file
        load_model(options)


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if name == "SIGKILL":
            return (
                "the worker process was killed (SIGKILL; most often the "
                "system ran out of memory)"
            )
        return f"the worker process crashed ({name}, in a native library)"
    return f"the worker process exited unexpectedly (exit status {exitcode})"


# -- local ---------------------------------------------------------------------
#: workers that may die before they are ready before the run gives up
MAX_START_FAILURES = 3


def _local_worker(wid: int, inbox, outbox, options: CohortOptions, out_dir: str):
    """A local worker's main loop: say ready, then one item at a time until
    ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    _one_thread()
    _warm(options)
    outbox.put(("ready", wid, None))
    while True:
        item = inbox.get()
        if item is None:
            return
        outbox.put(("row", wid, process_item(item, options, out_dir)))


class LocalExecutor:
    """Worker processes on this machine (see module doc).

    An item goes only to a worker that said it is ready (torch imported,
    model loaded), so a worker that cannot start is never blamed on an
    item; after :data:`MAX_START_FAILURES` such deaths the run stops with
    :class:`ExecutorError`.

    Args:
        workers: how many processes (default: one per CPU core).
    """

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = max(1, int(workers or default_workers()))
        self._procs: dict[int, tuple[Any, Any]] = {}
        self._holding: dict[int, Item | None] = {}

    def busy(self) -> dict[int, str]:
        """process id -> key of the item each busy worker holds now."""
        return {
            self._procs[wid][0].pid: item.key
            for wid, item in self._holding.items()
            if item is not None and wid in self._procs
        }

    def start(self, options: CohortOptions, out_dir: str | os.PathLike) -> None:
        """Spawn the workers now, so that they import torch and load the
        model while the parent finds the items."""
        self._ctx = mp.get_context("spawn")  # never fork a process with torch/Qt
        self._outbox = self._ctx.Queue()
        self._args = (options, str(out_dir))
        self._ready: set[int] = set()
        self._failures = 0
        self._holding = {}
        for wid in range(self.workers):
            self._spawn(wid)

    def wait_ready(self) -> None:
        """Nothing to wait for: workers say they are ready per item."""

    def _spawn(self, wid: int) -> None:
        inbox = self._ctx.Queue()
        proc = self._ctx.Process(
            target=_local_worker,
            args=(wid, inbox, self._outbox, *self._args),
            name=f"napari-medcnn-cohort-{wid}",
            daemon=True,
        )
        proc.start()
        self._procs[wid] = (proc, inbox)
        self._holding[wid] = None

    def rows(
        self, items: Sequence[Item], options: CohortOptions, out_dir: str | os.PathLike
    ) -> Iterator[dict[str, Any] | None]:
        """Process ``items``; yield each row as it finishes, and None about
        every :data:`POLL_S` seconds while none does (the workers are
        started first if :meth:`start` was not called).

        Raises:
            ExecutorError: the worker processes die while starting.
        """
        if not self._procs:
            self.start(options, out_dir)
        pending = deque(items)
        holding = self._holding
        try:
            while pending or any(v is not None for v in holding.values()):
                for wid in self._ready:
                    if holding[wid] is None and pending:
                        holding[wid] = pending.popleft()
                        self._procs[wid][1].put(holding[wid])
                try:
                    kind, wid, row = self._outbox.get(timeout=POLL_S)
                except queue.Empty:
                    yield from self._reap()
                    yield None  # a heartbeat: the run can be cancelled now
                    continue
                if kind == "ready":
                    self._ready.add(wid)
                    continue
                holding[wid] = None
                yield row
        finally:
            self.close()

    def _reap(self) -> Iterator[dict]:
        """Rows for the items of dead workers; replace those workers."""
        for wid, (proc, _) in list(self._procs.items()):
            if proc.is_alive():
                continue
            proc.join(0)
            item = self._holding.get(wid)
            if wid not in self._ready:
                self._failures += 1
                if self._failures >= MAX_START_FAILURES:
                    raise ExecutorError(
                        f"the cohort worker processes die while starting "
                        f"({_death_reason(proc.exitcode)}); a script that "
                        "starts a cohort run must guard it with "
                        "'if __name__ == \"__main__\":'"
                    )
            self._ready.discard(wid)
            if item is not None:
                self._holding[wid] = None
                where = item.files[0] if len(item.files) == 1 else item.path
                yield error_row(
                    item, f"{where}: {_death_reason(proc.exitcode)}", self._args[0]
                )
            self._spawn(wid)

    def close(self) -> None:
        """Stop every worker now (items in flight are lost, not journalled)."""
        procs, self._procs = self._procs, {}
        for proc, _ in procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc, inbox in procs.values():
            proc.join(2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
            inbox.close()
            inbox.cancel_join_thread()


# -- dask ----------------------------------------------------------------------
def _dask_plugin(options: CohortOptions):
    from distributed import WorkerPlugin

    class ModelPlugin(WorkerPlugin):
        """One torch thread and the model loaded once, per Dask worker."""

        name = "napari-medcnn-model"

        def __init__(self, opts: CohortOptions):
            self.options = opts

        def setup(self, worker) -> None:
            _one_thread()
            _warm(self.options)

    return ModelPlugin(options)


class DaskExecutor:
    """A ``dask.distributed`` cluster (see module doc).

    Args:
        workers: worker processes of the ``LocalCluster`` (default: one per
            core); ignored with ``scheduler``.
        scheduler: the address of an existing scheduler, or None.
        connect_timeout_s: how long to try reaching ``scheduler``, seconds.
    """

    name = "dask"

    def __init__(
        self,
        workers: int | None = None,
        scheduler: str | None = None,
        connect_timeout_s: float = 10.0,
    ):
        self.workers = max(1, int(workers or default_workers()))
        self.scheduler = scheduler
        self.timeout = connect_timeout_s
        self.client = None
        self.cluster = None

    def start(self, options: CohortOptions, out_dir: str | os.PathLike) -> None:
        """Start the ``LocalCluster`` or connect to the scheduler, in a
        thread, so that the workers start while the items are found;
        :meth:`wait_ready` waits for it and reports a failure."""
        self._thread = threading.Thread(
            target=self._connect, args=(options,), name="napari-medcnn-dask-start"
        )
        self._error: ExecutorError | None = None
        self._thread.start()

    def wait_ready(self) -> None:
        """Wait until the cluster is up and every worker has the model.

        Raises:
            ExecutorError: the scheduler cannot be reached.
        """
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join()
        if self._error is not None:
            raise self._error
        if self.client is None:
            raise ExecutorError("DaskExecutor used before start()")

    def _connect(self, options: CohortOptions) -> None:
        import dask
        from distributed import Client, LocalCluster

        dask.config.set(
            {
                # a task that kills its worker is that item's error: not retried
                "distributed.scheduler.allowed-failures": 0,
                # Dask's nannies set MALLOC_TRIM_THRESHOLD_=65536, which also
                # pins glibc's mmap threshold: every large array is mapped and
                # unmapped again, and an item took 1.7x the CPU time (measured
                # 0.98 s against 0.57 s); glibc's own dynamic thresholds then
                # (the nannies still give one OpenMP/BLAS thread per worker)
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
            }
        )
        try:
            if self.scheduler:
                self.client = Client(
                    self.scheduler, timeout=f"{self.timeout}s", set_as_default=False
                )
            else:
                self.cluster = LocalCluster(
                    n_workers=self.workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
                self.client = Client(self.cluster, set_as_default=False)
            self.client.register_plugin(_dask_plugin(options))
            if self.scheduler:
                info = self.client.scheduler_info()
                self.workers = max(1, len(info.get("workers", {})))
        except (OSError, TimeoutError) as exc:
            where = self.scheduler or "a local cluster"
            self._error = ExecutorError(
                f"cannot reach the Dask scheduler at {where}: {exc}"
            )
            self._close_now()
        except Exception as exc:  # noqa: BLE001 - reported by wait_ready
            self._error = ExecutorError(
                f"the Dask cluster did not start ({type(exc).__name__}: {exc})"
            )
            self._close_now()

    def rows(
        self, items: Sequence[Item], options: CohortOptions, out_dir: str | os.PathLike
    ) -> Iterator[dict[str, Any] | None]:
        """Process ``items`` on the cluster; yield rows as they finish, and
        None while none does."""
        from distributed import as_completed

        if getattr(self, "_thread", None) is None:
            self.start(options, out_dir)
        self.wait_ready()
        out = str(Path(out_dir).resolve())
        pending = deque(items)
        by_future: dict[Any, Item] = {}
        limit = 2 * self.workers

        def submit() -> Any:
            item = pending.popleft()
            fut = self.client.submit(
                process_item, item, options, out, pure=False, retries=0
            )
            by_future[fut] = item
            return fut

        try:
            first = [submit() for _ in range(min(limit, len(pending)))]
            ac = as_completed(first, loop=self.client.loop)
            while not ac.is_empty():
                if not ac.has_ready():
                    time.sleep(POLL_S / 5)
                    yield None  # a heartbeat: the run can be cancelled now
                    continue
                fut = next(ac)
                item = by_future.pop(fut)
                try:
                    row = fut.result()
                except Exception as exc:  # KilledWorker, lost connection
                    where = item.files[0] if len(item.files) == 1 else item.path
                    why = _dask_reason(exc)
                    row = error_row(item, f"{where}: {why}", options)
                fut.release()
                if pending:
                    ac.add(submit())
                yield row
        finally:
            for fut in by_future:
                fut.cancel()
            self.close()

    def close(self) -> None:
        """Close the client (and the LocalCluster this executor started),
        after a start still under way has ended."""
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._close_now()

    def _close_now(self) -> None:
        client, cluster = self.client, self.cluster
        self.client = self.cluster = None
        for thing in (client, cluster):
            if thing is not None:
                with contextlib.suppress(Exception):  # closing a broken link
                    thing.close()


def _dask_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return (
            "the Dask worker running it died (most often out of memory, or a "
            "native library crashed)"
        )
    return f"the Dask task failed ({name}: {exc})"


def make_executor(
    name: str, *, workers: int | None = None, scheduler: str | None = None
) -> LocalExecutor | DaskExecutor:
    """The executor called ``name`` (``local`` or ``dask``).

    Raises:
        ValueError: an unknown name, or a scheduler given to ``local``.
    """
    if name == "local":
        if scheduler:
            raise ValueError("--scheduler needs --executor dask")
        return LocalExecutor(workers)
    if name == "dask":
        return DaskExecutor(workers, scheduler)
    raise ValueError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")
