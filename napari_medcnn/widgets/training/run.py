"""One fine-tuning run as the Fine-tune widget sees it (no Qt widgets).

:class:`TrainRun` holds the worker, the pause/cancel control and the
napari progress bar of a run, and turns the trainer's events into progress
(done, total, ETA).  It is a plain object, so the panel's ``destroyed``
signal can still stop the run (:meth:`TrainRun.stop`) after the panel is
gone, and the progress bar is closed on every way out (finished, errored,
aborted, stopped), so it never stays stuck.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

#: the shortest time between two progress updates for batches (s)
UI_INTERVAL_S = 0.25
#: the trainer's per-batch events (the volume stage's and the slice stage's)
BATCHES = ("batch", "slice_batch", "features")


def format_eta(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a number of seconds; '' when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class TrainRun:
    """A running fine-tune job.

    Args:
        control: the run's ``TrainControl``.
        staging: where the job writes its checkpoint.
        label: the napari progress bar's description prefix.
    """

    def __init__(self, control: Any, staging: str, label: str = "Fine-tune"):
        from napari.utils import progress

        self.control = control
        self.staging = staging
        self.label = label
        self.worker: Any = None
        self.done = False
        self.events = 0
        self.phase = ""
        self.pbar = progress(total=0, desc=label)
        self._shown = 0.0  # perf_counter of the last batch shown

    # -- control ---------------------------------------------------------
    def stop(self, *_args) -> None:
        """Cancel the run and quit the worker (panel or napari closing)."""
        if self.control is not None:
            self.control.cancel()
        if self.worker is not None and not self.done:
            self.worker.quit()
        self.close_progress()

    def close_progress(self, *_args) -> None:
        """Close the napari progress bar (idempotent)."""
        if self.pbar is not None:
            with contextlib.suppress(RuntimeError):  # its Qt bar is gone
                self.pbar.close()
            self.pbar = None

    def finished(self, *_args) -> None:
        """Connect to ``worker.finished``: the run is over, whatever the end."""
        self.done = True
        self.close_progress()

    # -- progress --------------------------------------------------------
    def progress_of(self, ev: Any) -> tuple[int, int, float | None]:
        """(done, total, ETA in s) of a ``TrainEvent`` over the whole run
        (k-fold: every fold plus the final all-label run)."""
        m = ev.metrics
        per = max(1, ev.n_epochs * ev.n_steps)
        done = (ev.epoch - 1) * ev.n_steps + ev.step
        eta = m.get("eta_s")
        k = int(m.get("n_folds", 1) or 1)
        if k > 1:
            fold = int(m.get("fold", 1))
            phase = k if fold == 0 else fold - 1  # the final run comes last
            done += phase * per
            left = k - phase  # phases after this one
            if eta is not None and "elapsed_s" in m:
                eta = eta + left * (m["elapsed_s"] + eta)
            self.phase = "final run" if fold == 0 else f"fold {fold}/{k}"
            per *= k + 1
        return done, per, eta

    def update(self, ev: Any) -> str | None:
        """Advance the napari progress bar; returns the status text, or
        None for a batch within :data:`UI_INTERVAL_S` of the last one shown
        (fast batches would otherwise keep napari's event loop busy)."""
        self.events += 1
        now = time.perf_counter()
        if ev.kind in BATCHES and now - self._shown < UI_INTERVAL_S:
            return None
        self._shown = now
        pbar = self.pbar  # napari may process events inside update()
        if ev.kind == "paused":
            if pbar is not None:
                pbar.set_description(f"{self.label} (paused)")
            return "Paused. Resume to continue, or Cancel."
        done, total, eta = self.progress_of(ev)
        where = f"{self.phase}, " if self.phase else ""
        if ev.kind == "features":  # a frozen encoder reads each volume once
            return f"{where}encoding the volumes once: {ev.step}/{ev.n_steps}"
        if ev.kind.startswith("slice_"):  # lesion masks: the slice stage
            where += "slice stage, "
        text = f"{where}epoch {ev.epoch}/{ev.n_epochs}"
        if ev.kind == "slice_epoch":
            text += f", lesion-slice AUC {ev.metrics['val_slice_auc']:.2f}"
        if ev.kind in BATCHES:
            text += f", batch {ev.step}/{ev.n_steps}, loss {ev.metrics['loss']:.3f}"
        if eta is not None:
            text += f" · ETA {format_eta(eta)}"
        if pbar is not None and not self.done:
            if pbar.total != total:
                pbar.total = total
            pbar.set_description(f"{self.label}: {text}")
            pbar.update(max(0, done - pbar.n))
        return text
