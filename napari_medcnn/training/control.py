"""Pause and cancel for a training run, shared with the UI (no Qt).

A :class:`TrainControl` is handed to :func:`~.trainer.fit`; the UI calls
:meth:`~TrainControl.pause`, :meth:`~TrainControl.resume` and
:meth:`~TrainControl.cancel` from any thread, and the trainer checks it
between batches.  While paused the trainer yields ``"paused"`` events about
every ``poll_s`` seconds (so a worker thread stays responsive and the UI can
show the state).  :meth:`TrainControl.for_processes` makes one whose flags
work across a spawned training process (see ``subprocess_runner.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any


class TrainControl:
    """Thread-safe (or process-safe) pause / resume / cancel flags.

    Args:
        poll_s: seconds between ``"paused"`` events while paused.
    """

    def __init__(self, poll_s: float = 0.1, _events: tuple[Any, Any] | None = None):
        self._pause, self._cancel = _events or (threading.Event(), threading.Event())
        self.poll_s = poll_s

    @classmethod
    def for_processes(cls, ctx: Any = None, poll_s: float = 0.1) -> TrainControl:
        """A control whose flags are multiprocessing events (picklable into
        a child started by ``ctx``, default the ``spawn`` context)."""
        import multiprocessing as mp

        ctx = ctx or mp.get_context("spawn")
        return cls(poll_s, (ctx.Event(), ctx.Event()))

    def pause(self) -> None:
        """Ask the trainer to hold after the current batch."""
        self._pause.set()

    def resume(self) -> None:
        """Continue a paused run."""
        self._pause.clear()

    def cancel(self) -> None:
        """Stop after the current batch; the run returns its best-so-far model."""
        self._cancel.set()
        self._pause.clear()

    @property
    def paused(self) -> bool:
        return self._pause.is_set() and not self._cancel.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def wait_while_paused(self) -> float:
        """Sleep up to ``poll_s`` while paused; returns the seconds slept."""
        if not self.paused:
            return 0.0
        t0 = time.perf_counter()
        time.sleep(self.poll_s)
        return time.perf_counter() - t0
