"""De-identify dock widget: export de-identified copies of DICOM scans.

A stateful panel (a small ``QWidget``).  The scans come from an image layer
read from DICOM (its ``metadata["source_paths"]``) or a folder.  The user
picks the profile options, may blank rectangles drawn in a Shapes layer,
previews the dry-run summary (tags and actions, never values) and exports
to a folder.  Both run :func:`napari_medcnn.deid.run.iter_deidentify` in a
napari ``thread_worker`` with progress and Cancel; after an export the
de-identified series are re-read with :func:`napari_medcnn.io.load` and
shown, which proves that they still load.  Status lines, notifications and
log lines carry counts only: no names, values or input paths.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QSize
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medcnn.deid.options import DeidOptions
from napari_medcnn.widgets._common.controls import RunControls
from napari_medcnn.widgets._common.jobs import JobHandle, WorkerPanel
from napari_medcnn.widgets.deidentify.boxes import NO_SHAPES, ProfileBox, ScansBox
from napari_medcnn.widgets.deidentify.jobs import iter_export_job, iter_preview_job
from napari_medcnn.widgets.deidentify.shapes import shapes_to_rects

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)

SUFFIX = " (de-identified)"


class DeidentifyWidget(WorkerPanel, QWidget):
    """Dock widget that exports de-identified copies of DICOM scans.

    Args:
        viewer: the napari viewer whose image (source) and shapes (blanking)
            layers are offered, and where the re-read series are added.
    """

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("napari_medcnn_deidentify")
        self._viewer = viewer
        self._job = JobHandle()
        self.destroyed.connect(self._job.quit)
        self.result: Any = None
        self.added_layers: list[Any] = []

        # -- child widgets: scans, profile, blanking / key / manifest, run,
        # summary
        self.scans_box = sb = ScansBox()
        self.source_group, self.layer_radio = sb.source_group, sb.layer_radio
        self.folder_radio, self.layer_combo = sb.folder_radio, sb.layer_combo
        self.folder_edit, self.folder_browse = sb.folder_edit, sb.folder_browse
        self.out_edit, self.out_browse = sb.out_edit, sb.out_browse
        self.profile_box = ProfileBox()
        self.option_boxes = self.profile_box.option_boxes
        self.shapes_combo = QComboBox()
        self.shapes_combo.setToolTip(
            "Rectangles of this Shapes layer (drawn over the image) are set to "
            "black in every frame: Clean Pixel Data."
        )
        self.key_edit = QLineEdit()
        self.key_edit.setPlaceholderText("none: one-off key, new UIDs every export")
        self.key_edit.setToolTip(
            "Project key file: the same key gives the same UIDs, pseudonyms and "
            "date shifts in every export. Created if missing. Keep it private."
        )
        self.key_browse = QPushButton("Browse…")
        self.manifest_edit = QLineEdit()
        self.manifest_edit.setPlaceholderText("none: no original -> new mapping")
        self.manifest_edit.setToolTip(
            "Where to write the mapping from original to new identifiers (JSON, "
            "or CSV for .csv). It re-identifies the export: keep it apart."
        )
        self.manifest_browse = QPushButton("Browse…")
        # typed here, held in memory only: never saved, logged or shown
        self.passphrase_edit = QLineEdit()
        self.passphrase_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.passphrase_edit.setPlaceholderText(
            "encrypts the manifest and a new key file; opens an encrypted key"
        )
        self.passphrase_edit.setToolTip(
            "With a passphrase the manifest and a new key file are encrypted "
            "(AES-256-GCM, key from scrypt); 'napari-medcnn manifest show' "
            "decrypts the manifest. A manifest needs a passphrase unless "
            "'Plaintext manifest' is ticked."
        )
        self.plaintext_check = QCheckBox("Plaintext manifest (unsafe)")
        self.plaintext_check.setToolTip(
            "Write the manifest unencrypted: it re-identifies every patient "
            "and only file permissions (0600) protect it."
        )
        self.run_controls = rc = RunControls(
            ("Preview (dry run)", "Export"),
            "Choose the scans and an export folder.",
            progress_below=True,
        )
        self.preview_button, self.export_button = rc.buttons
        self.cancel_button, self.progress, self.status = (
            rc.cancel_button, rc.progress, rc.status,
        )  # fmt: skip
        self.summary = QPlainTextEdit()
        self.summary.setReadOnly(True)
        self.summary.setPlaceholderText(
            "The dry-run summary (tags and actions) appears here."
        )
        extra = QGridLayout()
        extra.addWidget(QLabel("Blank"), 0, 0)
        extra.addWidget(self.shapes_combo, 0, 1, 1, 2)
        extra.addWidget(QLabel("Key file"), 1, 0)
        extra.addWidget(self.key_edit, 1, 1)
        extra.addWidget(self.key_browse, 1, 2)
        extra.addWidget(QLabel("Manifest"), 2, 0)
        extra.addWidget(self.manifest_edit, 2, 1)
        extra.addWidget(self.manifest_browse, 2, 2)
        extra.addWidget(QLabel("Passphrase"), 3, 0)
        extra.addWidget(self.passphrase_edit, 3, 1)
        extra.addWidget(self.plaintext_check, 3, 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.scans_box)
        layout.addWidget(self.profile_box)
        layout.addLayout(extra)
        layout.addWidget(self.run_controls)
        layout.addWidget(self.summary, 1)

        self.layer_radio.setChecked(True)
        self.folder_browse.clicked.connect(lambda: self._pick_dir(self.folder_edit))
        self.out_browse.clicked.connect(lambda: self._pick_dir(self.out_edit))
        self.key_browse.clicked.connect(lambda: self._pick_file(self.key_edit))
        self.manifest_browse.clicked.connect(
            lambda: self._pick_file(self.manifest_edit)
        )
        self.preview_button.clicked.connect(self.preview)
        self.export_button.clicked.connect(self.export)
        self.cancel_button.clicked.connect(self.cancel)
        self.folder_edit.textEdited.connect(
            lambda _t: self.folder_radio.setChecked(True)
        )
        for emitter in (
            viewer.layers.events.inserted,
            viewer.layers.events.removed,
            viewer.layers.events.renamed,
        ):
            emitter.connect(self._refresh_layers)
        self._refresh_layers()
        self._update_buttons()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        """Room for the options and the summary when first docked."""
        return QSize(440, 560)

    # -- public API ------------------------------------------------------
    @property
    def worker(self):
        """The running preview/export worker, or None."""
        return self._job.worker

    def set_source_layer(self, layer: Any) -> None:
        """Take the scans from ``layer`` (an image layer read from DICOM)."""
        self._refresh_layers()
        index = self.layer_combo.findText(layer.name)
        if index < 0:
            raise ValueError(f"layer {layer.name!r} was not read from DICOM files")
        self.layer_combo.setCurrentIndex(index)
        self.layer_radio.setChecked(True)

    def set_folder(self, path: str) -> None:
        """Take the scans from a folder (searched recursively)."""
        self.folder_edit.setText(str(path))
        self.folder_radio.setChecked(True)

    def set_output(self, path: str) -> None:
        """The export folder."""
        self.out_edit.setText(str(path))

    def set_options(self, options: DeidOptions) -> None:
        """Tick the option boxes (rectangles come from the Shapes choice)."""
        for name, box in self.option_boxes.items():
            box.setChecked(bool(getattr(options, name)))

    def set_blank_layer(self, layer: Any | None) -> None:
        """Blank the rectangles of this Shapes layer (None: no blanking)."""
        self._refresh_layers()
        self.shapes_combo.setCurrentText(NO_SHAPES if layer is None else layer.name)

    def options(self) -> DeidOptions:
        """The options as the panel shows them, rectangles included."""
        flags = {n: box.isChecked() for n, box in self.option_boxes.items()}
        options = DeidOptions(**flags)
        shapes = self._layer(self.shapes_combo.currentText(), "shapes")
        if shapes is not None:
            image = self._source_layer() if self.layer_radio.isChecked() else None
            options = replace(options, blank_rectangles=shapes_to_rects(shapes, image))
        return options

    def inputs(self) -> list[str]:
        """The files or folder to de-identify."""
        if self.folder_radio.isChecked():
            folder = self.folder_edit.text().strip()
            return [folder] if folder else []
        layer = self._source_layer()
        return list(layer.metadata.get("source_paths") or []) if layer else []

    def preview(self) -> None:
        """Dry run in a worker; the summary fills when it ends."""
        if not self._ready(need_output=False):
            return
        from napari.qt.threading import thread_worker

        worker = thread_worker(
            iter_preview_job, start_thread=False, ignore_errors=True
        )(self.inputs(), self.options(), self._text(self.key_edit),
          self._passphrase())  # fmt: skip
        worker.returned.connect(self._on_previewed)
        self._start(worker, "Preview…")

    def export(self) -> None:
        """Export in a worker, then add the re-read series to the viewer."""
        if not self._ready(need_output=True):
            return
        from napari.qt.threading import thread_worker

        worker = thread_worker(iter_export_job, start_thread=False, ignore_errors=True)(
            self.inputs(),
            self.out_edit.text().strip(),
            self.options(),
            self._text(self.key_edit),
            self._text(self.manifest_edit),
            self._passphrase(),
            self.plaintext_check.isChecked(),
        )
        worker.returned.connect(self._on_exported)
        self._start(worker, "Exporting…")

    # -- worker plumbing (the rest in _common.jobs.WorkerPanel) ------------
    def _start(self, worker, message: str) -> None:
        worker.yielded.connect(self._on_progress)
        super()._start(worker, message)

    def _on_progress(self, event: Any) -> None:
        step = self._show_step(event)
        if step is not None:
            what = {"load": "Re-reading series", "preview": "Preview"}
            self._say(f"{what.get(event[0], 'Export')}… {step[0]} / {step[1]}")

    def _on_previewed(self, result: Any) -> None:
        self.result = result
        self.summary.setPlainText(result.report.summary_text())
        n = result.report.n_files
        self.status.setText(
            f"Preview: {n} file(s) would be de-identified.{_extra(result)}"
        )
        log.info("de-identify preview: %d files", n)

    def _on_exported(self, value: Any) -> None:
        from napari.utils.notifications import show_warning

        result, scans, unloadable = value
        self.result = result
        self.summary.setPlainText(result.report.summary_text())
        self.added_layers = [self._show(scan) for scan in scans]
        msg = (
            f"Exported {len(result.outputs)} file(s); re-read {len(scans)} "
            f"series.{_extra(result)}"
        )
        if unloadable:
            msg += f" {unloadable} series hold no image (not shown)."
        self.status.setText(msg)
        if result.report.flagged:
            show_warning(
                f"De-identify: {len(result.report.flagged)} file(s) may carry "
                "burned-in text in the pixels; see the summary."
            )
        log.info("de-identify: %d files, %d series", len(result.outputs), len(scans))

    def _show(self, scan: Any) -> Any:
        data, kwargs, _kind = scan.to_layer_data()
        kwargs["name"] = scan.name + SUFFIX
        if kwargs["name"] in self._viewer.layers:  # replace, don't pile up
            self._viewer.layers.remove(kwargs["name"])
        return self._viewer.add_image(data, **kwargs)

    def _on_errored(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"Failed: {exc}")
        show_error(f"De-identify: {exc}")
        log.warning("de-identify: job failed (%s)", type(exc).__name__)

    def _on_aborted(self) -> None:
        self.status.setText("Cancelled: only complete files were written.")

    # -- helpers -------------------------------------------------------------
    def _ready(self, need_output: bool) -> bool:
        from napari.utils.notifications import show_error

        if self._job.worker is not None:
            return False
        problem = None
        if not self.inputs():
            problem = "Choose an image layer read from DICOM, or a folder."
        elif need_output and not self.out_edit.text().strip():
            problem = "Choose an export folder."
        elif (
            need_output
            and self._text(self.manifest_edit)
            and self._passphrase() is None
            and not self.plaintext_check.isChecked()
        ):
            problem = (
                "The manifest re-identifies every patient: type a passphrase "
                "to encrypt it, or tick 'Plaintext manifest (unsafe)'."
            )
        if problem:
            self.status.setText(problem)
            show_error(problem)
            return False
        return True

    def _layer(self, name: str, kind: str) -> Any | None:
        names = {lay.name: lay for lay in self._viewer.layers}
        layer = names.get(name)
        return layer if layer is not None and _kind(layer) == kind else None

    def _source_layer(self) -> Any | None:
        return self._layer(self.layer_combo.currentText(), "image")

    def _refresh_layers(self, _event=None) -> None:
        layers = list(self._viewer.layers)
        images = [
            lay.name
            for lay in layers
            if _kind(lay) == "image" and lay.metadata.get("source_paths")
        ]
        shapes = [lay.name for lay in layers if _kind(lay) == "shapes"]
        for combo, names in ((self.layer_combo, images),
                             (self.shapes_combo, [NO_SHAPES, *shapes])):  # fmt: skip
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)

    def _update_buttons(self) -> None:
        busy = self._job.worker is not None
        for button in (self.preview_button, self.export_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _passphrase(self) -> str | None:
        return self.passphrase_edit.text() or None

    @staticmethod
    def _text(edit) -> str | None:
        return edit.text().strip() or None

    def _pick_dir(self, edit) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder", edit.text())
        if folder:
            edit.setText(folder)
            if edit is self.folder_edit:
                self.folder_radio.setChecked(True)

    def _pick_file(self, edit) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Choose a file",
            edit.text(),
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        if path:
            edit.setText(path)


def _kind(layer: Any) -> str:
    """``image``, ``shapes`` or ``other`` for a napari layer."""
    from napari.layers import Image, Shapes

    if isinstance(layer, Image):
        return "image"
    return "shapes" if isinstance(layer, Shapes) else "other"


def _extra(result: Any) -> str:
    """Counts of skipped, failed and flagged files for a status line."""
    parts = []
    if result.skipped:
        parts.append(f"{len(result.skipped)} skipped (not DICOM)")
    if result.failed:
        parts.append(f"{len(result.failed)} failed")
    if result.report.flagged:
        parts.append(f"{len(result.report.flagged)} may carry burned-in text")
    return (" " + "; ".join(parts) + ".") if parts else ""
