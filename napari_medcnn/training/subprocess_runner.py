"""Run a training generator in a spawned process, streaming its events.

A worker *thread* shares the GIL with napari's event loop; a *process*
does not.  :func:`run_in_subprocess` starts ``target(**kwargs,
control=...)`` (a generator function importable at module level) in a
``spawn`` process, forwards every yielded event over a queue and returns
the generator's return value, so a widget wraps it in ``thread_worker``
exactly like the in-thread generator.  Pause/cancel go through a
process-safe :class:`~.control.TrainControl`; closing the generator
(``worker.quit()``, napari closing) cancels the child and reaps it.

:func:`finetune_job` is the picklable fine-tuning target: it writes the
checkpoint in the child and returns a JSON-safe summary with its path.
"""

from __future__ import annotations

import os
import queue as queue_mod
import traceback
from collections.abc import Callable, Generator
from typing import Any

from napari_medcnn._progress import drain
from napari_medcnn.training.control import TrainControl


class SubprocessError(RuntimeError):
    """The child failed; the message carries its exception and traceback."""


def _child(target, kwargs, q, control, threads) -> None:
    try:
        if threads:
            import torch

            torch.set_num_threads(threads)
        gen = target(**kwargs, control=control)
        result = drain(gen, lambda ev: q.put(("event", ev)))
        q.put(("result", result))
    except BaseException as exc:  # report everything, then exit
        q.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def default_threads() -> int:
    """Torch threads for the child: all cores but one (kept for the UI)."""
    return max(1, (os.cpu_count() or 2) - 1)


def run_in_subprocess(
    target: Callable[..., Generator[Any, None, Any]],
    kwargs: dict[str, Any] | None = None,
    *,
    control: TrainControl | None = None,
    threads: int | None = None,
    poll_s: float = 0.05,
    join_timeout_s: float = 10.0,
) -> Generator[Any, None, Any]:
    """Drive ``target`` in a spawned process (a generator of its events).

    Args:
        target: module-level generator function taking ``control=``.
        kwargs: its other arguments (picklable).
        control: made with :meth:`TrainControl.for_processes`; pass your
            own to pause or cancel (one is made when None).
        threads: torch threads in the child (default :func:`default_threads`).
        poll_s: seconds between checks that the child is alive.

    Yields:
        The child's events, unchanged.

    Returns:
        The child's return value.

    Raises:
        SubprocessError: the child raised or died.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    control = control or TrainControl.for_processes(ctx)
    q = ctx.Queue()
    proc = ctx.Process(
        target=_child,
        args=(target, kwargs or {}, q, control, threads or default_threads()),
        daemon=True,
    )
    proc.start()
    finished = False
    try:
        while True:
            try:
                msg = q.get(timeout=poll_s)
            except queue_mod.Empty:
                if proc.is_alive():
                    continue
                # the child's last message can reach the pipe between the
                # timeout and the check: read once more before giving up
                try:
                    msg = q.get(timeout=max(poll_s, 0.5))
                except queue_mod.Empty:
                    raise SubprocessError(
                        f"training process exited with code {proc.exitcode}"
                    ) from None
            if msg[0] == "event":
                yield msg[1]
            elif msg[0] == "result":
                finished = True
                return msg[1]
            else:
                finished = True
                raise SubprocessError(f"{msg[1]}\n{msg[2]}")
    finally:
        if not finished:
            control.cancel()  # generator closed early: stop the child cleanly
        proc.join(join_timeout_s)
        if proc.is_alive():
            proc.terminate()
            proc.join(join_timeout_s)
        q.close()


def finetune_job(
    data: Any,
    parent: str | None = None,
    *,
    out: str | None = None,
    control: TrainControl | None = None,
    **kwargs: Any,
) -> Generator[Any, None, dict[str, Any]]:
    """Picklable fine-tuning target for :func:`run_in_subprocess`.

    Same arguments as :func:`~.finetune.finetune` (``parent`` a path);
    returns :meth:`FinetuneResult.summary` plus ``history`` and
    ``cancelled``; the model is in the checkpoint at ``out``.
    """
    from napari_medcnn.training.finetune import finetune

    res = yield from finetune(data, parent, out=out, control=control, **kwargs)
    summary = res.summary()
    summary.update(history=res.history, cancelled=res.cancelled)
    return summary
