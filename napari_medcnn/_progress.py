"""Draining the progress generators that all long work is written as.

Long work (loading a folder, classifying, explaining, training,
de-identifying) is a generator: it yields progress events and *returns* its
result.  A widget runs it in a napari ``thread_worker``; the CLI, scripts
and tests drain it here.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

R = TypeVar("R")


def drain(
    gen: Generator[Any, None, R], on_event: Callable[[Any], Any] | None = None
) -> R:
    """Run ``gen`` to the end and return its return value.

    Args:
        gen: a progress generator.
        on_event: called with every event it yields (e.g. to print
            progress); ``None`` ignores the events.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)
