"""DICOM series browser dock widget: scan a folder, list its series, load some.

A stateful panel (a small ``QWidget``).  Scanning and loading run as core
generators (:func:`napari_medcnn.io.dicom.find.iter_scan_folder` and
:func:`iter_load_series`) in napari ``thread_worker`` threads, so napari
never freezes; Cancel calls ``worker.quit()``.  Patient names are masked
(``display_row(mask_names=True)``) unless "Show patient names" is ticked.
Log lines carry counts only: no names, paths or UIDs (PHI).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

if TYPE_CHECKING:
    import napari

    from napari_medcnn.io.scan import Scan

from napari_medcnn.widgets._common.controls import (
    select_table_rows,
    selected_table_rows,
)
from napari_medcnn.widgets._common.jobs import JobError, JobHandle, WorkerPanel, guarded  # noqa: F401  (JobError re-exported)

log = logging.getLogger(__name__)

#: (header, display_row key) of the table's columns, in order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("Patient", "patient"),
    ("Study", "study"),
    ("Date", "date"),
    ("Modality", "modality"),
    ("Description", "description"),
    ("Images", "images"),
    ("Dimensions", "dimensions"),
    ("Spacing", "spacing"),
)
_INDEX_ROLE = Qt.ItemDataRole.UserRole
_STUDY_KEYS = ("study", "date")
# Widest a column starts (other, patient) in px: long texts elide, the tooltip
# has them in full, and the user can widen a column.
_MAX_COLUMN_PX = (130, 200)


def iter_scan_job(folder: str) -> Generator[Any, None, list[Any]]:
    """:func:`iter_scan_folder` for a worker thread (core generator, no Qt;
    ``RuntimeError`` re-raised as :class:`JobError`, see ``_common.jobs``)."""
    from napari_medcnn.io.dicom.find import iter_scan_folder

    return (yield from guarded(iter_scan_folder(folder)))


def iter_load_series(
    infos: Sequence[Any], *, include_phi: bool = False
) -> Iterator[tuple[str, int, int, Any]]:
    """Load series one by one (core generator, no Qt).

    Yields ``("load", i, n, result)`` after each series, where ``result`` is
    the :class:`Scan` or, when that series failed, the exception: one broken
    series never stops the others.
    """
    from napari_medcnn.io.dicom.load import load_series

    n = len(infos)
    for i, info in enumerate(infos):
        try:
            result: Any = load_series(info, include_phi=include_phi)
        except Exception as exc:  # reported per series by the widget
            result = exc
        yield ("load", i + 1, n, result)


def _reason(exc: BaseException) -> str:
    """An error's message without the file path (folder names can be PHI)."""
    return str(getattr(exc, "reason", None) or exc)


class SeriesBrowser(WorkerPanel, QWidget):
    """Dock widget listing the DICOM series of a folder, and loading them.

    Args:
        viewer: the napari viewer the loaded series are added to.
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("napari_medcnn_series_browser")
        self._viewer = viewer
        self._series: list[Any] = []
        # a closed panel stops its job; the slot must not hold `self`
        self._job = JobHandle()
        self.destroyed.connect(self._job.quit)

        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("Folder with DICOM files")
        self.browse_button = QPushButton("Browse…")
        self.scan_button = QPushButton("Scan")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setTextVisible(True)
        self.progress.setValue(0)
        self.status = QLabel("Choose a folder and press Scan.")
        self.status.setWordWrap(True)
        self.show_names = QCheckBox("Show patient names")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([h for h, _ in COLUMNS])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(
            self.fontMetrics().height() + 8
        )
        self.table.setWordWrap(False)
        self.table.setTextElideMode(Qt.TextElideMode.ElideRight)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setStretchLastSection(True)
        self.load_button = QPushButton("Load selected")
        self.load_button.setEnabled(False)

        row1 = QHBoxLayout()
        row1.addWidget(self.folder_edit, 1)
        row1.addWidget(self.browse_button)
        row2 = QHBoxLayout()
        row2.addWidget(self.scan_button)
        row2.addWidget(self.cancel_button)
        row2.addWidget(self.progress, 1)
        row3 = QHBoxLayout()
        row3.addWidget(self.show_names)
        row3.addStretch(1)
        row3.addWidget(self.load_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.status)
        layout.addWidget(self.table, 1)
        layout.addLayout(row3)

        self.browse_button.clicked.connect(self._browse)
        self.folder_edit.returnPressed.connect(self.scan)
        self.scan_button.clicked.connect(self.scan)
        self.cancel_button.clicked.connect(self.cancel)
        self.load_button.clicked.connect(self.load_selected)
        self.show_names.toggled.connect(self._fill_table)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        self.table.cellDoubleClicked.connect(self._load_row)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        """Wide enough for the table's main columns when first docked."""
        return QSize(520, 420)

    # -- public API ------------------------------------------------------
    @property
    def worker(self):
        """The running scan/load worker, or None."""
        return self._job.worker

    @property
    def series(self) -> list[Any]:
        """The :class:`SeriesInfo` list of the last scan, in table order."""
        return list(self._series)

    def set_folder(self, path: str) -> None:
        """Put ``path`` in the folder box (does not scan)."""
        self.folder_edit.setText(str(path))

    def scan(self) -> None:
        """Scan the folder in a worker thread; the table fills when it ends."""
        from napari.qt.threading import thread_worker

        if self._job.worker is not None:
            return
        folder = self.folder_edit.text().strip()
        if not folder:
            self._error("Choose a folder to scan first.")
            return
        worker = thread_worker(iter_scan_job, start_thread=False, ignore_errors=True)(
            folder
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_scanned)
        self._start(worker, "Scanning…")

    def select_rows(self, rows: Sequence[int]) -> None:
        """Select table rows (as a user would), replacing the selection."""
        select_table_rows(self.table, rows)

    def selected_series(self) -> list[Any]:
        """Loadable (image) series of the selected rows, in table order."""
        rows = selected_table_rows(self.table)
        out = []
        for r in rows:
            info = self._info_at(r)
            if info is not None and info.kind == "image":
                out.append(info)
        return out

    def load_selected(self) -> None:
        """Load the selected series in a worker; each becomes an image layer."""
        from napari.qt.threading import thread_worker

        from napari_medcnn.config import include_phi_default

        infos = self.selected_series()
        if self._job.worker is not None or not infos:
            return
        worker = thread_worker(
            iter_load_series, start_thread=False, ignore_errors=True
        )(infos, include_phi=include_phi_default())
        worker.yielded.connect(self._on_loaded)
        n = len(infos)
        self._start(worker, f"Loading {n} series…")
        self.progress.setRange(0, n)

    # -- worker plumbing (the rest in _common.jobs.WorkerPanel) ------------
    def _on_progress(self, event: Any) -> None:
        step = self._show_step(event)
        if step is not None:
            self._say(f"Scanning… {step[0]} / {step[1]} files")

    def _on_scanned(self, series: list[Any] | None) -> None:
        self._series = list(series or [])  # ordered by patient, study, series
        self._fill_table()
        n_img = sum(1 for s in self._series if s.kind == "image")
        n_files = sum(s.n_files for s in self._series)
        msg = (
            f"{len(self._series)} series ({n_img} loadable) in {n_files} files."
            if self._series
            else "No DICOM series found in this folder."
        )
        self.status.setText(msg)
        log.info(
            "series scan: %d series, %d image, %d files",
            len(self._series),
            n_img,
            n_files,
        )

    def _on_loaded(self, event: Any) -> None:
        from napari.utils.notifications import show_error, show_warning

        _stage, i, n, result = event
        self.progress.setRange(0, int(n))
        self.progress.setValue(int(i))
        if isinstance(result, BaseException):
            show_error(f"Series {i} of {n} could not be loaded: {_reason(result)}")
            log.warning("series load: %d of %d failed", i, n)
            return
        scan: Scan = result
        data, kwargs, _kind = scan.to_layer_data()
        self._viewer.add_image(data, **kwargs)
        if not scan.quality.ok:
            show_warning(
                f"{scan.name}: data-quality warnings\n{scan.quality.summary()}"
            )
        self.status.setText(f"Loaded {i} / {n} series.")

    def _on_errored(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"Failed: {_reason(exc)}")
        show_error(f"DICOM series browser: {_reason(exc)}")
        log.warning("series browser: job failed (%s)", type(exc).__name__)

    # -- table -----------------------------------------------------------
    def _fill_table(self, *_args) -> None:
        """(Re)write the table; patient and study cells are shown once per
        group, so the rows read as patients > studies > series."""
        mask = not self.show_names.isChecked()
        self.table.clearContents()
        self.table.setRowCount(len(self._series))
        grey = QBrush(QColor(128, 128, 128))
        prev = None
        for r, info in enumerate(self._series):
            row = info.display_row(mask_names=mask)
            same_patient = prev is not None and prev.patient_key == info.patient_key
            same_study = same_patient and prev.study_uid == info.study_uid
            loadable = info.kind == "image"
            for c, (_header, key) in enumerate(COLUMNS):
                value = row.get(key, "")
                text = "" if value is None else str(value)
                shown = text
                if (key == "patient" and same_patient) or (
                    key in _STUDY_KEYS and same_study
                ):
                    shown = ""
                item = QTableWidgetItem(shown)
                item.setData(_INDEX_ROLE, r)
                item.setToolTip(text)
                if not loadable:
                    item.setFlags(Qt.ItemFlag.NoItemFlags)
                    item.setForeground(grey)
                    item.setToolTip(
                        f"Not an image series ({info.sop_class_name}); "
                        "it cannot be loaded."
                    )
                self.table.setItem(r, c, item)
            prev = info
        self.table.resizeColumnsToContents()
        for c, (_header, key) in enumerate(COLUMNS):
            limit = _MAX_COLUMN_PX[key == "patient"]
            if self.table.columnWidth(c) > limit:
                self.table.setColumnWidth(c, limit)
        self._update_buttons()

    def _info_at(self, row: int) -> Any | None:
        item = self.table.item(row, 0)
        if item is None:
            return None
        idx = item.data(_INDEX_ROLE)
        return self._series[idx] if idx is not None else None

    def _load_row(self, row: int, _col: int) -> None:
        self.select_rows([row])
        self.load_selected()

    def _update_buttons(self) -> None:
        busy = self._job.worker is not None
        self.scan_button.setEnabled(not busy)
        self.browse_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.load_button.setEnabled(not busy and bool(self.selected_series()))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Folder with DICOM files", self.folder_edit.text()
        )
        if folder:
            self.set_folder(folder)

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(message)
        show_error(message)
