"""Fine-tune dock widget: train on the labels of the open layers, watch it learn.

A stateful panel (a small ``QWidget``) over the core trainer
(:func:`napari_medcnn.training.finetune.finetune`).  The labels are those
of the open image layers (made with the "Label images" widget and saved in
their sidecars).  The user picks the parent (the default model, the
Classify widget's current model, a checkpoint file, or a fresh seed CNN),
epochs, frozen-backbone epochs, augmentation switches (with a preview
layer), class balance and validation split, and presses Start.

Training runs off the UI thread, in a ``thread_worker`` or a spawned
process (:mod:`.jobs`), with all CPU cores but one.  A napari
progress bar with ETA and a live plot of loss and accuracy/AUC per epoch
follow it; Pause/Resume and Cancel act between batches.  At the end the
confusion matrix, per-class metrics and the recommendation ("still
improving", "plateaued", "overfitting") are shown, the checkpoint is
written atomically and handed to the open Classify and Saliency widgets
(``_common.model_events``).  A cancelled run keeps the parent and offers its
best-so-far weights ("Save best so far…", "Continue training").  Closing
the panel or napari cancels the run; labels are already on disk and the
parent is never written.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QSize
from qtpy.QtWidgets import QLabel, QPushButton, QScrollArea, QVBoxLayout, QWidget

from napari_medcnn.widgets._common.controls import RunControls
from napari_medcnn.widgets._common.layers import RESULT_KEY
from napari_medcnn.widgets._common.model_events import publish_model
from napari_medcnn.widgets._common.plots import theme_colors
from napari_medcnn.widgets.training.boxes import (
    AugmentBox,
    ModelBox,
    TrainingBox,
    hbox,
)
from napari_medcnn.widgets.training.jobs import (
    DEFAULT_MODE,
    preview_job,
    publish,
    train_job,
)
from napari_medcnn.widgets.training.plots import (
    ConfusionPlot,
    LearningCurves,
    metrics_html,
)
from napari_medcnn.widgets.training.run import TrainRun
from napari_medcnn.widgets.training.settings import SettingsMixin, label_classes

if TYPE_CHECKING:
    import napari

PREVIEW_LAYER = "augmentation preview"


class TrainingWidget(SettingsMixin, QWidget):
    """Dock widget that fine-tunes a model on the labels of the open layers.

    Args:
        viewer: the napari viewer.
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("napari_medcnn_training")
        self._viewer = viewer
        self._run: TrainRun | None = None
        self._tmp = tempfile.TemporaryDirectory(
            prefix="medcnn-train-", ignore_cleanup_errors=True
        )
        self._kept: dict[str, Any] | None = None  # the cancelled run's state
        self._summary: dict[str, Any] | None = None
        self._checkpoint: Path | None = None
        self._out_confirmed: str | None = None  # an output the user may replace
        self._preview_worker: Any = None
        self._n_runs = 0
        self.history: list[dict[str, float]] = []
        self._colors = theme_colors(getattr(viewer, "theme", "dark"))

        # -- child widgets: model, training, augmentation, labels, run, results
        self.model_box = mb = ModelBox()
        self.parent_combo, self.parent_edit = mb.parent_combo, mb.parent_edit
        self.parent_browse, self.out_edit = mb.parent_browse, mb.out_edit
        self.out_browse = mb.out_browse
        self.training_box = tb = TrainingBox()
        self.epochs_spin, self.freeze_spin = tb.epochs_spin, tb.freeze_spin
        self.batch_spin, self.balance_combo = tb.batch_spin, tb.balance_combo
        self.split_combo, self.mode_combo = tb.split_combo, tb.mode_combo
        self.augment_box = ab = AugmentBox()
        self.augment_checks, self.preview_button = ab.augment_checks, ab.preview_button
        self.labels_info = QLabel("No labels found in the open layers.")
        self.labels_info.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh")
        self.run_controls = rc = RunControls(("Start", "Pause"), progress_below=True)
        self.start_button, self.pause_button = rc.buttons
        self.cancel_button, self.progress, self.status = (
            rc.cancel_button, rc.progress, rc.status,
        )  # fmt: skip
        self.progress.setRange(0, 1)
        self.progress.setFormat("%p %")
        self.curves = LearningCurves(self._colors)
        self.matrix = ConfusionPlot(self._colors)
        self.matrix.setVisible(False)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        self.save_best_button = QPushButton("Save best so far…")
        self.continue_button = QPushButton("Continue training")
        self.continue_button.setToolTip(
            "Start again from the cancelled run's best weights."
        )
        body = QWidget()
        layout = QVBoxLayout(body)
        for w in (self.model_box, self.training_box, self.augment_box):
            layout.addWidget(w)
        layout.addLayout(hbox(self.labels_info, self.refresh_button, stretch=0))
        for w in (self.run_controls, self.curves, self.matrix, self.metrics_label):
            layout.addWidget(w)
        layout.addLayout(hbox(self.save_best_button, self.continue_button))
        layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

        self.set_mode(DEFAULT_MODE)
        self.augment_box.set_defaults(None)

        self.parent_combo.currentIndexChanged.connect(self._update_buttons)
        self.parent_browse.clicked.connect(self._browse_parent)
        self.out_browse.clicked.connect(self._browse_out)
        self.refresh_button.clicked.connect(self.refresh_labels)
        self.preview_button.clicked.connect(self.preview_augmentation)
        self.start_button.clicked.connect(lambda: self.start())
        self.pause_button.clicked.connect(self.toggle_pause)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_best_button.clicked.connect(self._save_best_dialog)
        self.continue_button.clicked.connect(self.continue_training)
        for emitter in (viewer.layers.events.inserted, viewer.layers.events.removed):
            emitter.connect(self.refresh_labels)
        viewer.events.theme.connect(self._on_theme)
        self.refresh_labels()
        self._update_buttons()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(420, 900)

    def event(self, event: QEvent) -> bool:
        """napari closes a dock by un-parenting its widget (and deletes it
        with the window): either way a running job is cancelled."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            run = getattr(self, "_run", None)  # None during __init__
            if run is not None:
                run.stop()
        return super().event(event)

    # -- public API ------------------------------------------------------
    @property
    def worker(self):
        """The running training worker, or None."""
        return self._run.worker if self._run is not None else None

    @property
    def run_handle(self) -> TrainRun | None:
        """The running job (worker, control, progress), or None."""
        return self._run

    @property
    def checkpoint(self) -> Path | None:
        """The last checkpoint written by a completed run."""
        return self._checkpoint

    @property
    def summary(self) -> dict[str, Any] | None:
        """The last run's summary (metrics, advice, ``cancelled``...)."""
        return self._summary

    @property
    def kept(self) -> dict[str, Any] | None:
        """The cancelled run's best-so-far state (``staging``, ``epochs_run``)."""
        return self._kept

    def set_parent(self, kind: str, path: str | None = None) -> None:
        """``default``, ``current``, ``file`` (with ``path``) or ``scratch``."""
        self.parent_combo.setCurrentIndex(self.parent_combo.findData(kind))
        if path is not None:
            self.parent_edit.setText(str(path))

    def set_output(self, path: str | Path, overwrite: bool = False) -> None:
        """Where the new checkpoint is written; an existing checkpoint there
        is refused when training starts unless ``overwrite``."""
        self.out_edit.setText(str(path))
        self._out_confirmed = str(path) if overwrite else None

    def set_mode(self, mode: str) -> None:
        """``thread`` or ``subprocess``."""
        self.mode_combo.setCurrentIndex(self.mode_combo.findData(mode))

    def set_split(self, split: str) -> None:
        """``auto``, ``holdout`` or ``kfold``."""
        self.split_combo.setCurrentIndex(self.split_combo.findData(split))

    def refresh_labels(self, _event=None) -> dict[str, int]:
        """Count the labels of the open layers; returns them per class."""
        counts: dict[str, int] = {}
        sources = self.sources()
        for src in sources:
            for item in label_classes(src["labels"]):
                counts[item] = counts.get(item, 0) + 1
        if not sources:
            self.labels_info.setText("No labels in the open layers: label some.")
        else:
            text = ", ".join(f"{c}: {n}" for c, n in counts.items())
            self.labels_info.setText(
                f"{sum(counts.values())} labels in {len(sources)} scan(s): {text}"
            )
            if sources[0].get("modality"):
                self.augment_box.set_defaults(sources[0]["modality"])
        volume = any(src["labels"].get("volume_label") for src in sources)
        self.model_box.show_volume_options(volume)
        return counts

    def start(self, resume: bool = False) -> bool:
        """Start training in a worker (``resume``: from the cancelled run's
        best weights, for the epochs it had left).  Bad settings are refused
        at once with a message.  Returns whether a run started."""
        from napari.qt.threading import thread_worker

        from napari_medcnn.training.control import TrainControl

        if self._run is not None:
            return False
        try:
            settings = self._settings(resume)
        except ValueError as exc:
            self._error(str(exc))
            return False
        mode = settings.pop("mode")
        control = (
            TrainControl.for_processes() if mode == "subprocess" else TrainControl()
        )
        staging = str(
            Path(self._tmp.name) / f"run{len(list(Path(self._tmp.name).iterdir()))}"
        )
        run = TrainRun(control, staging)
        worker = thread_worker(train_job, start_thread=False, ignore_errors=True)(
            settings.pop("sources"),
            settings.pop("parent"),
            staging,
            settings.pop("config"),
            control,
            mode=mode,
            **settings,
        )
        run.worker = worker
        self._run = run
        self.destroyed.connect(run.stop)
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_done)
        worker.errored.connect(self._on_errored)
        worker.finished.connect(run.finished)
        worker.finished.connect(self._on_finished)
        self.history = []
        self.curves.clear()
        self.matrix.setVisible(False)
        self.metrics_label.setText("")
        self.progress.setRange(0, 0)
        self._say("Preparing the labelled examples…")
        self._update_buttons()
        worker.start()
        return True

    def continue_training(self) -> bool:
        """Start again from the cancelled run's best-so-far weights."""
        if self._kept is None:
            self._error("Nothing to continue: no cancelled run is kept.")
            return False
        return self.start(resume=True)

    def toggle_pause(self) -> None:
        """Pause a running run, or resume a paused one."""
        run = self._run
        if run is None:
            return
        if run.control.paused:
            run.control.resume()
            self.pause_button.setText("Pause")
            self._say("Resumed.")
        else:
            run.control.pause()
            self.pause_button.setText("Resume")
            self._say("Pausing after this batch…")

    def cancel(self) -> None:
        """Stop after the current batch; the parent model stays, the best
        weights so far are kept for "Save best so far…" / "Continue"."""
        if self._run is not None:
            self._run.control.cancel()
            self.pause_button.setText("Pause")
            self._say("Cancelling after this batch…")

    def save_best(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the cancelled run's best-so-far checkpoint to ``path`` (an
        existing checkpoint is refused, ``OverwriteError``, unless
        ``overwrite``)."""
        if self._kept is None:
            raise ValueError("no cancelled run to save")
        out = publish(self._kept["staging"], path, overwrite=overwrite)
        self._say(f"Best-so-far model saved to {out.name}.")
        return out

    def preview_augmentation(self) -> bool:
        """Show nine augmented copies of a labelled example as a layer."""
        from napari.qt.threading import thread_worker

        sources = self.sources()
        if not sources or self._preview_worker is not None:
            if not sources:
                self._error("Label an image or slice first: the preview uses it.")
            return False
        try:
            parent = self._parent_path()
        except ValueError as exc:
            self._error(str(exc))
            return False
        worker = thread_worker(preview_job, start_thread=False, ignore_errors=True)(
            sources[0],
            parent,
            self.augment_box.config(),
            self.model_box.volume_arch(),
            self.model_box.slices_spin.value(),
        )
        worker.returned.connect(self._show_preview)
        worker.errored.connect(lambda e: self._error(f"Preview failed: {e}"))
        worker.finished.connect(self._preview_done)
        self._preview_worker = worker
        worker.start()
        return True

    # -- worker events ---------------------------------------------------
    def _on_event(self, ev: Any) -> None:
        run = self._run
        if run is None:
            return
        if isinstance(ev, tuple):
            stage, i, n = ev[:3]
            self._say(f"Preparing the labelled examples… {i}/{n}")
            return
        text = run.update(ev)
        if text is None:  # a batch shortly after the last one shown
            return
        done, total, _eta = run.progress_of(ev)
        if ev.kind != "paused":
            self.progress.setRange(0, total)
            self.progress.setValue(done)
        if ev.kind == "epoch":
            from napari_medcnn.training.advice import recommend

            self.curves.add_epoch(ev.metrics, run.phase or None)
            self.history.append(dict(ev.metrics))
            hint = recommend(self.curves.history)
            text += f" · {hint.verdict}"
        self._say(text)

    def _on_done(self, summary: dict[str, Any]) -> None:
        self._summary = summary
        if summary.get("cancelled"):
            n = int(summary.get("epochs_run") or 0)
            parent = self._kept["parent"] if self._kept else self._parent_or_none()
            self._kept = {"staging": summary["staging"], "epochs_run": n,
                          "parent": parent} if n else None  # fmt: skip
            keep = " Its best weights are kept: save or continue them." if n else ""
            self._say(
                f"Cancelled after {n} epoch(s); the parent model is unchanged.{keep}"
            )
            return
        self._kept = None
        out = self.out_edit.text().strip()
        try:
            self._checkpoint = publish(
                summary["staging"], out, overwrite=self._may_replace(out)
            )
        except OSError as exc:
            self._error(f"Trained, but the checkpoint could not be written: {exc}")
            return
        summary["checkpoint"] = str(self._checkpoint)
        cm = summary.get("confusion_matrix")
        if cm:
            self.matrix.show_matrix(cm, summary.get("classes") or [])
            self.matrix.setVisible(True)
        self.metrics_label.setText(metrics_html(summary, self._colors))
        asked = publish_model(self._viewer, self._checkpoint)
        used = f"; loaded in {len(asked)} widget(s)" if asked else ""
        why = summary.get("stop_reason", "completed").replace("_", " ")
        self._say(f"Done ({why}): saved {self._checkpoint.name}{used}.")

    def _parent_or_none(self) -> str | None:
        try:
            return self._parent_path()
        except ValueError:
            return None

    def _on_errored(self, exc: Exception) -> None:
        self._error(f"Training stopped: {exc}")

    def _on_finished(self) -> None:
        self._run = None
        self.pause_button.setText("Pause")
        self.progress.setRange(0, 1)
        self.progress.setValue(
            1 if self._summary and not self._summary.get("cancelled") else 0
        )
        self._update_buttons()
        self.refresh_labels()

    def _show_preview(self, image: Any) -> None:
        if PREVIEW_LAYER in self._viewer.layers:
            self._viewer.layers[PREVIEW_LAYER].data = image
        else:
            self._viewer.add_image(
                image, name=PREVIEW_LAYER, metadata={RESULT_KEY: "preview"},
                colormap="gray", contrast_limits=(0.0, 1.0),
            )  # fmt: skip
        self._say("Augmentation preview: the first tile is unaugmented.")

    def _preview_done(self) -> None:
        self._preview_worker = None

    # -- display ---------------------------------------------------------
    def _update_buttons(self, *_args) -> None:
        busy = self._run is not None
        self.start_button.setEnabled(not busy)
        self.pause_button.setEnabled(busy)
        self.cancel_button.setEnabled(busy)
        self.save_best_button.setEnabled(not busy and self._kept is not None)
        self.continue_button.setEnabled(not busy and self._kept is not None)
        is_file = self.parent_combo.currentData() == "file"
        self.parent_edit.setEnabled(is_file and not busy)
        self.parent_browse.setEnabled(is_file and not busy)
        for w in (self.mode_combo, self.epochs_spin, self.freeze_spin,
                  self.batch_spin, self.balance_combo, self.split_combo):  # fmt: skip
            w.setEnabled(not busy)

    def _on_theme(self, _event=None) -> None:
        self._colors = theme_colors(self._viewer.theme)
        self.curves.set_colors(self._colors)
        self.matrix.set_colors(self._colors)

    def _say(self, message: str, warn: bool = False) -> None:
        self.status.setText(message)
        self.status.setStyleSheet(f"color: {self._colors.marker};" if warn else "")

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._say(message, warn=True)
        show_error(message)
