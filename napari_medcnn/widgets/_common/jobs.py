"""Shared plumbing for the widgets' worker jobs (no Qt widgets).

:class:`WorkerPanel` runs one napari ``thread_worker`` at a time for a
panel; :func:`load_model_job` loads a checkpoint in one (the Classify and
Saliency panels), :func:`default_model_file` names the default model.

superqt, which napari's ``thread_worker`` uses, treats a ``RuntimeError``
raised in a worker as "the worker was deleted" and emits neither
``errored`` nor ``finished``, which would leave a panel busy for ever.
Torch raises ``RuntimeError`` for shape problems, pydicom for decoding
ones, so every job re-raises them as :class:`JobError`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
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


def load_model_job(path: str, device: Any = None) -> Any:
    """Load a checkpoint (``LoadedModel``) in a worker thread; torch is
    imported there, not when a widget docks."""
    from napari_medcnn.models.checkpoint import load_checkpoint

    return guarded_call(load_checkpoint, path, device)


def default_model_file() -> Path:
    """The default model's weights path (it may not exist yet)."""
    from napari_medcnn.models.checkpoint import default_model_path

    return Path(default_model_path())


class JobHandle:
    """The running worker, reachable after the panel itself is gone."""

    worker: Any = None

    def quit(self, *_args) -> None:
        if self.worker is not None:
            self.worker.quit()


class WorkerPanel:
    """Mixin for a panel that runs one worker at a time (no Qt import here).

    The panel provides ``self._job`` (a :class:`JobHandle`), ``self.progress``
    (a progress bar) and ``self.status`` (a label), usually those of a
    :class:`~napari_medcnn.widgets._common.controls.RunControls`, and
    ``_update_buttons()``;
    it may override :meth:`_say`, :meth:`_on_errored` and :meth:`_on_aborted`.
    Workers are made with ``ignore_errors=True``: an error ends the job with
    :meth:`_on_errored`, never a re-raise into Qt's event loop.
    """

    def cancel(self) -> None:
        """Ask the running worker to stop after its current step."""
        if self._job.worker is not None:
            self._say("Cancelling…")
            self._job.worker.quit()

    def _say(self, message: str) -> None:
        self.status.setText(message)

    def _start(self, worker: Any, message: str) -> None:
        self._job.worker = worker
        worker.errored.connect(self._on_errored)
        if hasattr(worker, "aborted"):  # generator workers only
            worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.progress.setRange(0, 0)  # busy until the first progress event
        self._say(message)
        self._update_buttons()
        worker.start()

    def _show_step(self, event: Any) -> tuple[int, int] | None:
        """Move the bar to step ``i`` of ``n`` of a ``(stage, i, n, ...)``
        event; returns ``(i, n)``, or None for any other event."""
        try:
            _stage, i, n = event[:3]
        except (TypeError, ValueError):
            return None
        if not n:
            return None
        self.progress.setRange(0, int(n))
        self.progress.setValue(int(i))
        return int(i), int(n)

    def _on_errored(self, exc: Exception) -> None:
        self._say(f"Failed: {exc}")

    def _on_aborted(self) -> None:
        self._say("Cancelled.")

    def _on_finished(self) -> None:
        self._job.worker = None
        if self.progress.maximum() == 0:  # still busy-style: show it as done
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        self._update_buttons()
