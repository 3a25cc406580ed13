"""Group boxes and rows of the Cohort dock widget (Qt widgets only).

* :class:`InputsBox`: the cohort (a folder or a CSV manifest) and the
  output folder.
* :class:`OptionsBox`: the model row (default model or a checkpoint file,
  as in the Classify panel) and the run options: scope, saliency method,
  de-identification (with the project key file and its passphrase),
  retrying failed items, executor, workers and Dask scheduler.
* :class:`FilterBar`: one exclusive button per table filter, with counts.
* :class:`DetailPane`: the selected row's thumbnail and summary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_medcnn.widgets.cohort import rows as R

#: scope key (``CohortOptions.scope``) -> combo text
SCOPES = {
    None: "as the model's card says",
    "slice": "slices (2D model on every slice)",
    "volume": "whole volume (3D / sequence model)",
}
EXECUTORS = {
    "local": "local processes",
    "dask": "Dask (local cluster or scheduler)",
}
#: longest side of the detail pane's thumbnail, pixels
THUMB_PX = 120


class InputsBox(QGroupBox):
    """Where the cohort is, and where its results go.

    Attributes:
        input_edit: a folder (searched recursively) or a ``.csv`` manifest.
        folder_button, manifest_button: browse for either.
        out_edit, out_button: the output folder (new, or an earlier run's
            to resume it).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Cohort", parent)
        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("Folder, or CSV manifest with a path column")
        self.input_edit.setToolTip(
            "A folder (every DICOM series, NIfTI volume and image below it is "
            "one item) or a CSV manifest with a 'path' column (optional "
            "'series_uid', 'id' and other columns, carried through)."
        )
        self.folder_button = QPushButton("Folder…")
        self.manifest_button = QPushButton("Manifest…")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("Output folder (new, or a run to resume)")
        self.out_edit.setToolTip(
            "results.csv, results.parquet, summary.json, report.html, "
            "thumbs/ and saliency/ go here. Every finished item is journalled "
            "at once: running again on the same folder resumes."
        )
        self.out_button = QPushButton("Browse…")
        grid = QGridLayout(self)
        grid.addWidget(QLabel("Input"), 0, 0)
        grid.addWidget(self.input_edit, 0, 1)
        grid.addWidget(self.folder_button, 0, 2)
        grid.addWidget(self.manifest_button, 0, 3)
        grid.addWidget(QLabel("Output"), 1, 0)
        grid.addWidget(self.out_edit, 1, 1)
        grid.addWidget(self.out_button, 1, 2, 1, 2)
        grid.setColumnStretch(1, 1)


class OptionsBox(QGroupBox):
    """The model and the run options.

    Attributes:
        model_label: the chosen model; default_button, browse_button load
            the shipped model or a checkpoint file.
        scope_combo: data ``None``/``slice``/``volume`` (:data:`SCOPES`).
        explain_combo: data None (no saliency) or a core method name.
        trust_check: with a method, measure each map's deletion and
            insertion AUCs against a random order (``trust_metrics``).
        deid_check: de-identify DICOM series into the output folder first.
        key_edit, key_button: the project key file of the de-identification
            (empty: a one-off key per item, so pseudonyms do not link
            across items); a missing file is created once before the run.
        passphrase_edit: opens a sealed key file, or seals a new one (never
            shown, logged or written; empty: none).
        redo_check: process items that failed in an earlier run again.
        executor_combo: data ``local`` or ``dask``.
        workers_spin: worker processes (default: one per CPU core).
        scheduler_edit: a Dask scheduler address (shown for Dask only;
            empty: a local cluster).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model and options", parent)
        self.model_label = QLabel("No model loaded.")
        self.model_label.setWordWrap(True)
        self.default_button = QPushButton("Default model")
        self.browse_button = QPushButton("Model file…")
        self.scope_combo = QComboBox()
        for key, text in SCOPES.items():
            self.scope_combo.addItem(text, key)
        self.explain_combo = QComboBox()
        self.explain_combo.setToolTip(
            "Also write a saliency map per item (saliency/), drawn on the "
            "thumbnails and shown over the scan when a row is opened."
        )
        self.set_methods({})
        self.trust_check = QCheckBox("Trust metrics")
        self.trust_check.setChecked(True)
        self.trust_check.setToolTip(
            "With a saliency method, also measure each map's deletion and "
            "insertion AUCs against a random order (about 10x the time of the "
            "map); a map no better than random is flagged."
        )
        self.deid_check = QCheckBox("De-identify DICOM first")
        self.deid_check.setToolTip(
            "De-identify each DICOM series (PS3.15 Basic Profile) into the "
            "output folder's deid/ and classify the copy."
        )
        self.key_edit = QLineEdit()
        self.key_edit.setPlaceholderText("empty: a one-off key per item")
        self.key_edit.setToolTip(
            "The project key: the same patient gets the same pseudonym and "
            "shifted dates in every item and every run (a missing file is "
            "created before the run). Empty: each item gets its own one-off "
            "key, so pseudonyms do not link across items."
        )
        self.key_button = QPushButton("Key file…")
        self.passphrase_edit = QLineEdit()
        self.passphrase_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase_edit.setPlaceholderText("passphrase (optional)")
        self.passphrase_edit.setToolTip(
            "Opens a key file sealed under a passphrase, or seals a new one. "
            "Never shown, logged or written anywhere."
        )
        self.redo_check = QCheckBox("Retry failed items")
        self.redo_check.setToolTip("Items journalled as 'error' are processed again.")
        self.executor_combo = QComboBox()
        for key, text in EXECUTORS.items():
            self.executor_combo.addItem(text, key)
        self.workers_spin = QSpinBox()
        self.workers_spin.setRange(1, 256)
        self.workers_spin.setValue(max(1, os.cpu_count() or 1))
        self.workers_spin.setToolTip("Worker processes, one torch thread each.")
        self.scheduler_edit = QLineEdit()
        self.scheduler_edit.setPlaceholderText(
            "empty: a local cluster; or tcp://host:8786"
        )
        self.scheduler_edit.setToolTip(
            "An existing Dask scheduler (the output folder must be on a file "
            "system its workers share); empty: a local cluster."
        )
        self.scheduler_edit.setEnabled(False)

        model_row = QHBoxLayout()
        model_row.addWidget(QLabel("<b>Model</b>"))
        model_row.addStretch(1)
        model_row.addWidget(self.default_button)
        model_row.addWidget(self.browse_button)
        grid = QGridLayout()
        grid.addWidget(QLabel("Scope"), 0, 0)
        grid.addWidget(self.scope_combo, 0, 1, 1, 3)
        grid.addWidget(QLabel("Saliency"), 1, 0)
        grid.addWidget(self.explain_combo, 1, 1)
        grid.addWidget(self.trust_check, 1, 2, 1, 2)
        grid.addWidget(QLabel("Executor"), 2, 0)
        grid.addWidget(self.executor_combo, 2, 1)
        grid.addWidget(QLabel("Workers"), 2, 2)
        grid.addWidget(self.workers_spin, 2, 3)
        self.scheduler_label = QLabel("Scheduler")
        grid.addWidget(self.scheduler_label, 3, 0)
        grid.addWidget(self.scheduler_edit, 3, 1, 1, 3)
        grid.addWidget(self.deid_check, 4, 0, 1, 2)
        grid.addWidget(self.redo_check, 4, 2, 1, 2)
        self.key_label = QLabel("Project key")
        grid.addWidget(self.key_label, 5, 0)
        grid.addWidget(self.key_edit, 5, 1, 1, 2)
        grid.addWidget(self.key_button, 5, 3)
        grid.addWidget(self.passphrase_edit, 6, 1, 1, 3)
        grid.setColumnStretch(1, 1)
        layout = QGridLayout(self)
        layout.addLayout(model_row, 0, 0)
        layout.addWidget(self.model_label, 1, 0)
        layout.addLayout(grid, 2, 0)
        self.executor_combo.currentIndexChanged.connect(self._on_executor)
        self.explain_combo.currentIndexChanged.connect(self._on_explain)
        self.deid_check.toggled.connect(self._on_deid)
        self._on_explain()
        self._on_executor()
        self._on_deid()

    def set_methods(self, labels: Mapping[str, str]) -> None:
        """Offer "none" and these saliency methods (core name -> label),
        keeping the current choice when it is still offered."""
        current = self.explain_combo.currentData()
        self.explain_combo.blockSignals(True)
        self.explain_combo.clear()
        self.explain_combo.addItem("none", None)
        for name, label in labels.items():
            self.explain_combo.addItem(label, name)
        index = self.explain_combo.findData(current)
        self.explain_combo.setCurrentIndex(max(index, 0))
        self.explain_combo.blockSignals(False)

    def _on_explain(self, _index: int = 0) -> None:
        self.trust_check.setEnabled(self.explain_combo.currentData() is not None)

    def key_file(self) -> str | None:
        """The project key file, or None (a one-off key per item)."""
        text = self.key_edit.text().strip()
        return text or None

    def passphrase(self) -> bytes | None:
        """The passphrase as UTF-8 bytes, or None when the field is empty."""
        text = self.passphrase_edit.text()
        return text.encode("utf-8") if text else None

    def _on_deid(self, _checked: bool = False) -> None:
        """The key file and passphrase apply to de-identification only."""
        on = self.deid_check.isChecked()
        for w in (self.key_label, self.key_edit, self.key_button, self.passphrase_edit):
            w.setEnabled(on)

    def _on_executor(self, _index: int = 0) -> None:
        """The scheduler row is shown for Dask only."""
        dask = self.executor_combo.currentData() == "dask"
        self.scheduler_label.setVisible(dask)
        self.scheduler_edit.setVisible(dask)
        self.scheduler_edit.setEnabled(dask)


class FilterBar(QWidget):
    """Exclusive buttons, one per filter of :data:`.rows.FILTERS`.

    Signals:
        filter_changed(str): the chosen filter key.
    """

    filter_changed = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(QLabel("Show"))
        for i, key in enumerate(R.FILTERS):
            button = QPushButton(R.filter_text(key, None))
            button.setCheckable(True)
            self.group.addButton(button, i)
            self.buttons[key] = button
            row.addWidget(button)
        row.addStretch(1)
        self.buttons["all"].setChecked(True)
        self.group.idClicked.connect(lambda i: self.filter_changed.emit(R.FILTERS[i]))

    @property
    def current(self) -> str:
        return next(k for k, b in self.buttons.items() if b.isChecked())

    def set_current(self, key: str) -> None:
        self.buttons[key].setChecked(True)

    def set_counts(self, counts: Mapping[str, int], positive: str | None) -> None:
        """Label each button with its filter and how many rows it shows."""
        for key, button in self.buttons.items():
            button.setText(f"{R.filter_text(key, positive)} ({counts.get(key, 0)})")


class DetailPane(QWidget):
    """The selected row: its thumbnail (with the saliency overlay when the
    run drew one) and its summary (no patient data: redacted names)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.thumb = QLabel()
        self.thumb.setFixedSize(THUMB_PX, THUMB_PX)
        self.thumb.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text = QLabel("Select a row to see it; double-click to open it.")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.thumb)
        row.addWidget(self.text, 1)

    def show_row(self, text: str, thumbnail: str | None) -> None:
        """Show ``text`` and the PNG at ``thumbnail`` (None: no picture)."""
        self.text.setText(text)
        pix = QPixmap(thumbnail) if thumbnail else QPixmap()
        if pix.isNull():
            self.thumb.clear()
            return
        self.thumb.setPixmap(
            pix.scaled(
                THUMB_PX,
                THUMB_PX,
                Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
        )
