"""Worker plumbing and status line of the Saliency panel (a mixin).

The panel keeps one worker at a time in a :class:`JobHandle` (model load
or saliency job): Run and the model buttons are disabled while it runs,
Cancel quits it, ``errored`` shows the message and ``finished`` frees the
panel.  Model loading reuses the Classify widget's job and dialog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._classify_jobs import default_model_file
from ._classify_jobs import load_model_job as _load_model_job
from ._classify_ui import ask_model_path


class JobPanelMixin:
    """Needs ``_job``, ``_pending``, ``_model``, ``_colors``, ``status``,
    ``progress``, ``set_model`` and ``_update_buttons`` on the panel."""

    @property
    def worker(self):
        """The running worker (model load or saliency), or None."""
        return self._job.worker

    def load_model(self, path: str | None = None) -> bool:
        """Load a checkpoint (None: the default model) in a worker."""
        from napari.qt.threading import thread_worker

        if self._job.worker is not None:
            return False
        target = Path(path) if path is not None else default_model_file()
        if path is None and not target.exists():
            self._error(f"Default model not found: {target}")
            return False
        worker = thread_worker(_load_model_job, start_thread=False, ignore_errors=True)(
            str(target)
        )
        worker.returned.connect(self.set_model)
        self._pending = {"kind": "load"}
        self._start(worker, f"Loading model {target.name}…")
        return True

    def cancel(self) -> None:
        """Stop the running worker after its current step."""
        if self._job.worker is not None:
            self._say("Cancelling…")
            self._job.worker.quit()

    # -- worker plumbing -------------------------------------------------
    def _start(self, worker, message: str) -> None:
        self._job.worker = worker
        worker.errored.connect(self._on_errored)
        if hasattr(worker, "aborted"):
            worker.aborted.connect(lambda: self._say("Cancelled."))
        worker.finished.connect(self._on_finished)
        self.progress.setRange(0, 0)
        self._say(message)
        self._update_buttons()
        worker.start()

    def _on_progress(self, event: Any) -> None:
        from napari.utils.notifications import show_warning

        if event and event[0] == "warning":
            self._say(str(event[1]), warn=True)
            show_warning(f"Saliency: {event[1]}")
            return
        try:
            _stage, i, n = event[:3]
        except (TypeError, ValueError):
            return
        if n:
            self.progress.setRange(0, int(n))
            self.progress.setValue(int(i))
            label = event[3] if len(event) > 3 else ""
            self._say(f"Explaining {label}… {100 * i // n} %")

    def _on_errored(self, exc: Exception) -> None:
        if self._pending.get("kind") == "load":
            kept = "; the previous model stays" if self._model is not None else ""
            self._error(f"Model not loaded{kept}: {exc}")
        else:
            self._error(f"Saliency failed: {exc}")

    def _on_finished(self) -> None:
        self._job.worker = None
        self._pending = {}
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
        self._update_buttons()

    def _say(self, message: str, warn: bool = False) -> None:
        self.status.setText(message)
        self.status.setStyleSheet(f"color: {self._colors.marker};" if warn else "")

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._say(message, warn=True)
        show_error(message)

    def _browse_model(self) -> None:
        path = ask_model_path(self, str(default_model_file().parent))
        if path:
            self.load_model(path)
