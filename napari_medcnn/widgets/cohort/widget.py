"""Cohort dock widget: classify (and explain) a whole cohort, resumably, and
open any of its items in napari.

A stateful panel (a small ``QWidget``).  The user picks a folder or a CSV
manifest, an output folder, a model (the shipped default or a checkpoint
file, loaded in a worker as in the Classify panel) and the options (scope,
saliency method, de-identification, executor and workers), then presses
Run.  :func:`napari_medcnn.cohort.iter_cohort` runs in a napari
``thread_worker`` (:func:`.jobs.iter_cohort_job`); the items themselves
are processed in worker processes (or on a Dask cluster), so napari never
freezes.

* **Progress**: done / total on the bar, the ETA and the error count on
  the status line.
* **Cancel** closes the core generator in its thread at the next finished
  item: the worker processes stop, finished items stay journalled, the
  tables and the report are written for them.  **Run** again on the same
  output folder resumes ("resuming: N of M done").
* **Results**: a sortable table (numbers sort as numbers) that fills in
  live, with filters ("<positive> >= 0.5", "outside domain", "errors",
  "all").  Selecting a row shows its thumbnail and summary; double-click
  (or Enter, or "Open in napari") loads the item in a worker and shows it
  with the reader's geometry, the row's classification in
  ``metadata["classification"]``, its saliency overlay, at its most
  telling slice (:mod:`.layers`).
* **Open report** shows ``report.html`` in the browser once written.

No patient data reaches the status line, notifications or log lines: rows
carry redacted names and paths, and log lines carry counts only.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QEvent, QModelIndex, QSize, QTimer, QUrl, Signal
from qtpy.QtGui import QDesktopServices
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from napari_medcnn.widgets._common.controls import RunControls
from napari_medcnn.widgets._common.jobs import (
    JobHandle,
    WorkerPanel,
    default_model_file,
)
from napari_medcnn.widgets._common.model_panel import (
    ModelLoading,
    ask_model_path,
    model_text,
)
from napari_medcnn.widgets.cohort import rows as R
from napari_medcnn.widgets.cohort.boxes import (
    DetailPane,
    FilterBar,
    InputsBox,
    OptionsBox,
)
from napari_medcnn.widgets.cohort.jobs import (
    CohortControl,
    CohortJobHandle,
    CohortOutcome,
    iter_cohort_job,
    open_item,
)
from napari_medcnn.widgets.cohort.layers import remove_items, show_item
from napari_medcnn.widgets.cohort.table import KEY_ROLE, ResultsModel, ResultsProxy

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

#: milliseconds between two updates of the filter counts during a run
COUNTS_MS = 300
WARN_COLOUR = "#e3b617"
LIGHT_WARN_COLOUR = "#b35c00"


class CohortWidget(ModelLoading, WorkerPanel, QWidget):
    """Dock widget that runs a cohort job and browses its results.

    Args:
        viewer: the napari viewer where opened items are shown.
        model: checkpoint to load at start; None loads the default model
            when it exists (otherwise the panel says it is missing).

    Signals:
        progressed(object): a run's ``CohortEvent``, once the panel shows it
            (table, bar and status line updated).
    """

    progressed = Signal(object)

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        model: str | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("napari_medcnn_cohort")
        self._viewer = viewer
        self._job = CohortJobHandle()
        self._opener = JobHandle()
        self.destroyed.connect(self._job.quit)
        self._model: Any = None
        self._model_path: str | None = None  # None: the shipped default
        self._pending: dict[str, Any] = {}
        self._outcome: CohortOutcome | None = None
        self._out_dir: Path | None = None  # where the table's rows live
        self._errors = 0
        self._resumed = 0
        self._queued_open: str | None = None
        self.opened: tuple[Any, Any] | None = None  # (scan, overlay) layers

        # -- child widgets -------------------------------------------------
        self.inputs_box = ib = InputsBox()
        self.input_edit, self.out_edit = ib.input_edit, ib.out_edit
        self.options_box = ob = OptionsBox()
        self.model_label = ob.model_label
        self.default_button, self.browse_button = ob.default_button, ob.browse_button
        self.scope_combo, self.explain_combo = ob.scope_combo, ob.explain_combo
        self.deid_check, self.redo_check = ob.deid_check, ob.redo_check
        self.key_edit, self.passphrase_edit = ob.key_edit, ob.passphrase_edit
        self.trust_check = ob.trust_check
        self.executor_combo, self.workers_spin = ob.executor_combo, ob.workers_spin
        self.scheduler_edit = ob.scheduler_edit
        self.run_controls = rc = RunControls(
            ("Run",), "Choose a folder or a manifest and an output folder.",
            progress_below=True,
        )  # fmt: skip
        self.run_button, self.cancel_button = rc.run_button, rc.cancel_button
        self.progress, self.status = rc.progress, rc.status
        self.progress.setFormat("%v / %m")
        self.filter_bar = FilterBar()
        self.results = ResultsModel(self)
        self.proxy = ResultsProxy(self)
        self.proxy.setSourceModel(self.results)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(
            self.fontMetrics().height() + 6
        )
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(
            R.COLUMN_KEYS.index("name"), QHeaderView.ResizeMode.Stretch
        )
        header.setStretchLastSection(False)
        self.table.setMinimumHeight(160)
        self.detail = DetailPane()
        self.open_button = QPushButton("Open in napari")
        self.open_button.setToolTip(
            "Load the selected item with its classification and saliency overlay "
            "(or double-click a row)."
        )
        self.keep_check = QCheckBox("Keep opened items")
        self.keep_check.setToolTip(
            "Off: opening an item removes the layers of the item opened before."
        )
        self.report_button = QPushButton("Open report")
        self.folder_button = QPushButton("Open folder")
        self.open_status = QLabel("")
        self.open_status.setWordWrap(True)
        actions = QHBoxLayout()
        actions.addWidget(self.open_button)
        actions.addWidget(self.keep_check)
        actions.addStretch(1)
        actions.addWidget(self.report_button)
        actions.addWidget(self.folder_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.inputs_box)
        layout.addWidget(self.options_box)
        layout.addWidget(self.run_controls)
        layout.addWidget(self.filter_bar)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.detail)
        layout.addLayout(actions)
        layout.addWidget(self.open_status)
        self._counts_timer = QTimer(self)
        self._counts_timer.setSingleShot(True)
        self._counts_timer.setInterval(COUNTS_MS)
        self._counts_timer.timeout.connect(self._update_counts)

        # -- connections -----------------------------------------------------
        ib.folder_button.clicked.connect(self._browse_folder)
        ib.manifest_button.clicked.connect(self._browse_manifest)
        ib.out_button.clicked.connect(self._browse_output)
        self.out_edit.editingFinished.connect(self._update_buttons)
        self.default_button.clicked.connect(lambda: self.load_model(None))
        self.browse_button.clicked.connect(self._browse_model)
        ob.key_button.clicked.connect(self._browse_key)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.filter_bar.filter_changed.connect(self.set_filter)
        self.table.activated.connect(lambda index: self.open_row(index.row()))
        self.table.selectionModel().currentRowChanged.connect(self._on_current)
        self.open_button.clicked.connect(self._open_current)
        self.report_button.clicked.connect(self.open_report)
        self.folder_button.clicked.connect(self.open_folder)
        self.destroyed.connect(self._opener.quit)

        self._update_counts()
        self._update_buttons()
        self._load_first(
            model,
            f"Default model not found ({default_model_file().name}). Choose a "
            "checkpoint with “Model file…”.",
        )

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        """Room for the options and the table when first docked."""
        return QSize(520, 900)

    def event(self, event: QEvent) -> bool:
        """napari closes a dock by un-parenting its widget: a running cohort
        job is cancelled (its finished items stay journalled)."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            job = getattr(self, "_job", None)  # None during __init__
            if job is not None and job.control is not None:
                job.control.cancel()
        return super().event(event)

    # -- public API --------------------------------------------------------
    @property
    def worker(self):
        """The running worker (model load or cohort run), or None."""
        return self._job.worker

    @property
    def open_worker(self):
        """The worker loading an item to open, or None."""
        return self._opener.worker

    @property
    def model(self):
        """The loaded model (``LoadedModel``), or None."""
        return self._model

    @property
    def outcome(self) -> CohortOutcome | None:
        """How the last run ended (``cancelled``, ``result``, ``report``)."""
        return self._outcome

    @property
    def report_path(self) -> Path | None:
        """``report.html`` of the output folder, once written."""
        out = self._out_dir or self._output_path()
        path = out / "report.html" if out is not None else None
        return path if path is not None and path.is_file() else None

    def set_input(self, path: str | Path) -> None:
        """The cohort: a folder (searched recursively) or a CSV manifest."""
        self.input_edit.setText(str(path))
        self._update_buttons()

    def set_output(self, path: str | Path) -> None:
        """The output folder (new, or an earlier run's to resume it)."""
        self.out_edit.setText(str(path))
        self._update_buttons()

    def set_options(
        self,
        *,
        scope: str | None = None,
        explain: str | None = None,
        trust_metrics: bool = True,
        deidentify: bool = False,
        key_file: str | os.PathLike | None = None,
        passphrase: str | None = None,
        executor: str = "local",
        workers: int | None = None,
        scheduler: str | None = None,
        redo_errors: bool = False,
    ) -> None:
        """Set every option (what the controls show).

        Raises:
            ValueError: a scope, method or executor the panel does not offer
                (methods come with the loaded model).
        """
        for combo, value, what in (
            (self.scope_combo, scope, "scope"),
            (self.explain_combo, explain, "saliency method"),
            (self.executor_combo, executor, "executor"),
        ):
            index = combo.findData(value)
            if index < 0:
                raise ValueError(f"{what} {value!r} is not offered here")
            combo.setCurrentIndex(index)
        self.trust_check.setChecked(bool(trust_metrics))
        self.deid_check.setChecked(bool(deidentify))
        self.key_edit.setText(str(key_file) if key_file else "")
        self.passphrase_edit.setText(passphrase or "")
        self.redo_check.setChecked(bool(redo_errors))
        if workers is not None:
            self.workers_spin.setValue(int(workers))
        self.scheduler_edit.setText(scheduler or "")

    def inputs(self) -> list[str]:
        """The inputs of the run ([] when none is given)."""
        text = self.input_edit.text().strip()
        return [text] if text else []

    def options(self) -> Any:
        """The ``CohortOptions`` as the panel shows them."""
        from napari_medcnn.cohort import CohortOptions

        deidentify = self.deid_check.isChecked()
        return CohortOptions(
            model=self._model_path,
            scope=self.scope_combo.currentData(),
            explain=self.explain_combo.currentData(),
            trust_metrics=self.trust_check.isChecked(),
            deidentify=deidentify,
            key_file=self.options_box.key_file() if deidentify else None,
            passphrase=self.options_box.passphrase() if deidentify else None,
        )

    def run_arguments(self) -> dict[str, Any]:
        """The executor settings of ``iter_cohort``."""
        executor = self.executor_combo.currentData()
        scheduler = self.scheduler_edit.text().strip() if executor == "dask" else ""
        return {
            "executor": executor,
            "workers": self.workers_spin.value(),
            "scheduler": scheduler or None,
            "redo_errors": self.redo_check.isChecked(),
        }

    def run(self) -> bool:
        """Run (or resume) the cohort in a worker; the table fills in live.

        Missing inputs are refused at once with a message; bad ones
        (``CohortInputError``) when the worker starts, before anything is
        written.  Returns whether a job started.
        """
        from napari.qt.threading import thread_worker

        if self._job.worker is not None:
            return False
        problem = None
        if not self.inputs():
            problem = "Choose a folder or a CSV manifest."
        elif self._output_path() is None:
            problem = "Choose an output folder."
        elif self._model is None:
            problem = "No model loaded: choose a model first."
        if problem:
            self._error(problem)
            return False
        out = self._output_path()
        control = CohortControl()
        worker = thread_worker(iter_cohort_job, start_thread=False, ignore_errors=True)(
            self.inputs(), str(out), self.options(), control, **self.run_arguments()
        )
        worker.yielded.connect(self._on_event)
        worker.returned.connect(self._on_done)
        self._job.control = control
        self._pending = {"kind": "run"}
        self._outcome = None
        self._out_dir = out
        self._errors = self._resumed = 0
        self.results.clear()
        self.detail.show_row("", None)
        self._start(worker, "Finding the items…")
        log.info("cohort: run started")
        return True

    def cancel(self) -> None:
        """Stop the run at the next finished item (see module doc); a model
        load is quit."""
        control = self._job.control
        if control is not None:
            control.cancel()
            self._say("Cancelling…")
        else:
            WorkerPanel.cancel(self)

    def set_filter(self, which: str) -> None:
        """Show only the rows of filter ``which`` (:data:`.rows.FILTERS`)."""
        self.proxy.set_filter(which)
        if self.filter_bar.current != which:
            self.filter_bar.set_current(which)

    def visible_rows(self) -> list[dict[str, Any] | None]:
        """The rows the table shows, in its order (None: pending)."""
        out = []
        for r in range(self.proxy.rowCount()):
            key = self.proxy.index(r, 0).data(KEY_ROLE)
            out.append(self.results.row_of(key))
        return out

    def open_row(self, view_row: int) -> bool:
        """Open the item shown at ``view_row`` of the table (see
        :meth:`open_key`)."""
        key = self.proxy.index(view_row, 0).data(KEY_ROLE)
        return key is not None and self.open_key(key)

    def open_key(self, key: str) -> bool:
        """Load item ``key`` in a worker, then show it (:mod:`.layers`).

        While an item loads, the latest request waits for it.  Returns
        whether loading started or was queued.
        """
        from napari.qt.threading import thread_worker

        item = self.results.item_of(key)
        row = self.results.row_of(key)
        name = R.display_name(row) or f"item {key}"
        if item is None or item.kind in ("folder", "missing"):
            why = (row or {}).get("error") or "it holds no image"
            self._open_error(f"{name}: cannot open ({why})")
            return False
        if self._opener.worker is not None:
            self._queued_open = key
            return True
        worker = thread_worker(open_item, start_thread=False, ignore_errors=True)(
            item, row, str(self._out_dir)
        )
        worker.returned.connect(self._on_opened)
        worker.errored.connect(self._on_open_failed)
        worker.finished.connect(self._on_open_finished)
        self._opener.worker = worker
        self.open_status.setStyleSheet("")
        self.open_status.setText(f"Opening {name}…")
        self._update_buttons()
        worker.start()
        return True

    def open_report(self) -> bool:
        """Show ``report.html`` in the browser; False when there is none."""
        path = self.report_path
        if path is None:
            return False
        return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(path))))

    def open_folder(self) -> bool:
        """Show the output folder in the file manager."""
        out = self._out_dir or self._output_path()
        if out is None or not out.is_dir():
            return False
        return bool(QDesktopServices.openUrl(QUrl.fromLocalFile(str(out))))

    # -- the run's events --------------------------------------------------
    def _on_event(self, ev: Any) -> None:
        if ev.stage == "discover":
            self.progress.setRange(0, max(int(ev.total), 1))
            self.progress.setValue(int(ev.done))
            self._say(f"Finding the items… {ev.done} / {ev.total}")
            self.progressed.emit(ev)
            return
        self.progress.setRange(0, max(int(ev.total), 1))
        self.progress.setValue(int(ev.done))
        if ev.stage == "start":
            self.results.set_items(ev.items or [], ev.rows or [])
            self.table.resizeColumnsToContents()
            self._errors = sum(R.status_of(r) == "error" for r in ev.rows or [])
            self._resumed = int(ev.done)
            if ev.done:
                self._say(f"resuming: {ev.done} of {ev.total} done")
            else:
                self._say(f"{ev.total} item(s) to do: starting the workers…")
            self._update_counts()
        elif ev.stage == "item" and ev.row is not None:
            self.results.set_row(ev.row)
            self._errors += R.status_of(ev.row) == "error"
            text = R.progress_text(ev.done, ev.total, ev.eta_s, self._errors)
            if self._resumed:
                text += f" (resumed at {self._resumed})"
            self._say(text)
            if not self._counts_timer.isActive():
                self._counts_timer.start()
        elif ev.stage == "write":
            self._say("Writing the tables and the report…")
        self.progressed.emit(ev)

    def _on_done(self, outcome: CohortOutcome) -> None:
        self._outcome = outcome
        self._update_counts()
        self.table.resizeColumnsToContents()
        if outcome.cancelled:
            self._say(
                f"Cancelled: {outcome.done} of {outcome.total} done and journalled. "
                "Run again with the same output folder to resume.",
                warn=True,
            )
            log.info("cohort: cancelled at %d of %d", outcome.done, outcome.total)
            return
        self._say(_summary_text(outcome.result.summary), warn=self._errors > 0)
        log.info("cohort: %d items done, %d errors", outcome.done, self._errors)

    # -- worker plumbing (the rest in _common.jobs.WorkerPanel) ------------
    def _on_errored(self, exc: Exception) -> None:
        from napari_medcnn.cohort import CohortInputError

        kind = self._pending.get("kind")
        if kind == "load":
            kept = "; the previous model stays" if self._model is not None else ""
            self._error(f"Model not loaded{kept}: {exc}")
        elif isinstance(exc, CohortInputError):
            self._error(f"Cannot run: {exc}")
        else:
            self._error(f"Cohort run failed: {exc}")
        log.warning("cohort: job failed (%s)", type(exc).__name__)

    def _on_finished(self) -> None:
        self._job.control = None
        self._pending = {}
        WorkerPanel._on_finished(self)

    def _on_model_loaded(self, loaded: Any) -> None:
        from napari_medcnn.widgets.saliency.jobs import METHOD_LABELS, offered_methods

        self._model = loaded
        self._model_path = self._pending.get("path")
        card = loaded.card
        text, tip = model_text(loaded)
        self.model_label.setText(text)
        self.model_label.setToolTip(tip)
        methods, _why = offered_methods(loaded)
        self.options_box.set_methods({m: METHOD_LABELS[m] for m in methods})
        volume = card.input_kind != "slice"
        combo_model = self.scope_combo.model()
        for i in range(self.scope_combo.count()):
            scope = self.scope_combo.itemData(i)
            ok = scope is None or (scope == "volume") == volume
            combo_model.item(i).setEnabled(ok)
        self.scope_combo.setCurrentIndex(0)
        self.results.set_classes(card.classes)
        self._update_counts()
        self._say(f"Model loaded: {card.name or card.arch}.")

    def _on_opened(self, opened: Any) -> None:
        from napari.utils.notifications import show_warning

        row = self.results.row_of(opened.key)  # it may have finished since
        record = None
        if row is not None and R.status_of(row) == "ok":
            record = R.row_record(row, self.results.classes)
        name = R.display_name(row) or opened.scan.redact(opened.scan.name)
        if not self.keep_check.isChecked():
            remove_items(self._viewer, keep=opened.key)
        self.opened = show_item(self._viewer, opened, row, record, name)
        text = f"Opened {name}"
        if record is not None:
            p = R.value_of(row, "positive", self.results.positive)
            text += f": {record['label']}"
            if p is not None and self.results.positive:
                text += f", P({self.results.positive}) {p:.3f}"
            if R.in_domain(row) is False:
                text += ", OUTSIDE the model's domain"
        if row is not None and row.get("top_slice") is not None:
            text += f"; slice {row['top_slice']}"
        if self.opened[1] is not None:
            text += f"; saliency {row.get('explain_method') or 'map'}"
            if row.get("saliency_trusted") is False:
                text += " (no better than a random order)"
        self.open_status.setStyleSheet("")
        self.open_status.setText(text + ".")
        if opened.notes:
            show_warning(f"Cohort: {name}: " + "; ".join(opened.notes))

    def _on_open_failed(self, exc: Exception) -> None:
        self._open_error(str(exc))

    def _open_error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.open_status.setStyleSheet(f"color: {self._warn_colour()};")
        self.open_status.setText(message)
        show_error(message)
        log.warning("cohort: an item could not be opened")

    def _on_open_finished(self) -> None:
        self._opener.worker = None
        queued, self._queued_open = self._queued_open, None
        self._update_buttons()
        if queued is not None:
            self.open_key(queued)

    def _open_current(self) -> None:
        index = self.table.currentIndex()
        if index.isValid():
            self.open_row(index.row())

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            self.detail.show_row("", None)
            return
        key = current.data(KEY_ROLE)
        row = self.results.row_of(key)
        thumb = None
        rel = (row or {}).get("thumbnail")
        if rel and self._out_dir is not None:
            thumb = str(self._out_dir / rel)
        self.detail.show_row(R.row_summary(row, self.results.positive), thumb)
        self._update_buttons()

    # -- display -----------------------------------------------------------
    def _update_counts(self) -> None:
        self.filter_bar.set_counts(self.results.counts(), self.results.positive)

    def _update_buttons(self) -> None:
        busy = self._job.worker is not None
        for w in (
            self.inputs_box, self.default_button, self.browse_button,
            self.scope_combo, self.explain_combo, self.deid_check, self.redo_check,
            self.executor_combo, self.workers_spin,
        ):  # fmt: skip
            w.setEnabled(not busy)
        ob = self.options_box
        key_on = not busy and self.deid_check.isChecked()
        for w in (ob.key_label, ob.key_edit, ob.key_button, ob.passphrase_edit):
            w.setEnabled(key_on)
        explaining = self.explain_combo.currentData() is not None
        self.trust_check.setEnabled(not busy and explaining)
        dask = self.executor_combo.currentData() == "dask"
        self.scheduler_edit.setEnabled(not busy and dask)
        self.run_button.setEnabled(not busy and self._model is not None)
        self.cancel_button.setEnabled(busy)
        self.open_button.setEnabled(self.table.currentIndex().isValid())
        self.report_button.setEnabled(self.report_path is not None)
        out = self._out_dir or self._output_path()
        self.folder_button.setEnabled(out is not None and out.is_dir())

    def _say(self, message: str, warn: bool = False) -> None:
        self.status.setText(message)
        self.status.setStyleSheet(f"color: {self._warn_colour()};" if warn else "")

    def _warn_colour(self) -> str:
        """napari's warning colour on a dark theme; a darker orange on a
        light one, where the theme's yellow is too pale to read."""
        try:
            from napari.utils.theme import get_theme

            theme = get_theme(self._viewer.theme)
            r, g, b = theme.background.as_rgb_tuple()[:3]
            if 0.299 * r + 0.587 * g + 0.114 * b < 128:
                return theme.warning.as_hex()
            return LIGHT_WARN_COLOUR
        except Exception:  # an unknown or "system" theme
            return WARN_COLOUR

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self._say(message, warn=True)
        show_error(message)

    def _output_path(self) -> Path | None:
        text = self.out_edit.text().strip()
        return Path(text).expanduser() if text else None

    # -- dialogs -------------------------------------------------------------
    def _browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Cohort folder", self.input_edit.text()
        )
        if folder:
            self._picked_input(folder)

    def _browse_manifest(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Cohort manifest", self.input_edit.text(), "CSV manifest (*.csv)"
        )
        if path:
            self._picked_input(path)

    def _picked_input(self, path: str) -> None:
        """Take ``path``; suggest ``<name>_cohort`` beside it as the output
        folder when none is chosen yet."""
        self.set_input(path)
        if not self.out_edit.text().strip():
            p = Path(path)
            stem = p.stem if p.suffix.lower() == ".csv" else p.name
            self.set_output(p.parent / f"{stem}_cohort")

    def _browse_output(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Output folder", self.out_edit.text()
        )
        if folder:
            self.set_output(folder)

    def _browse_key(self) -> None:
        # a save dialog: an existing key or the name of a new one
        path, _ = QFileDialog.getSaveFileName(
            self, "Project key file (existing, or a new one to create)",
            self.key_edit.text(), "Project key (*.key *.json);;All files (*)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )  # fmt: skip
        if path:
            self.key_edit.setText(path)

    def _browse_model(self) -> None:
        path = ask_model_path(self, str(self._default_model().parent))
        if path:
            self.load_model(path)


def _summary_text(summary: dict[str, Any]) -> str:
    """ "Done: 6 items: 5 ok, 1 error; labels: 4 no_tumor, 1 tumor; ..."."""
    status = ", ".join(f"{n} {k}" for k, n in summary.get("status", {}).items())
    labels = ", ".join(f"{n} {k}" for k, n in summary.get("labels", {}).items())
    text = f"Done: {summary.get('n_items', 0)} items: {status or 'none'}"
    if labels:
        text += f"; labels: {labels}"
    if summary.get("outside_domain"):
        text += f"; {summary['outside_domain']} outside the model's domain"
    rate = summary.get("items_per_s")
    if rate:
        text += f"; {rate:.2f} items/s"
    return text + "."
