"""Shared plumbing for the widgets' worker jobs (no Qt widgets).

superqt, which napari's ``thread_worker`` uses, treats a ``RuntimeError``
raised in a worker as "the worker was deleted" and emits neither
``errored`` nor ``finished``, which would leave a panel busy for ever.
Torch raises ``RuntimeError`` for shape problems, pydicom for decoding
ones, so every job re-raises them as :class:`JobError`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any


class JobError(Exception):
    """A worker job failed (wraps the errors superqt would not report)."""


def guarded(gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Run a core generator, turning ``RuntimeError`` into :class:`JobError`."""
    try:
        return (yield from gen)
    except RuntimeError as exc:
        raise JobError(str(exc)) from exc


def guarded_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func``, turning ``RuntimeError`` into :class:`JobError`."""
    try:
        return func(*args, **kwargs)
    except RuntimeError as exc:
        raise JobError(str(exc)) from exc


class JobHandle:
    """The running worker, reachable after the panel itself is gone."""

    worker: Any = None

    def quit(self, *_args) -> None:
        if self.worker is not None:
            self.worker.quit()
