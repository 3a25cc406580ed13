"""Classify dock widget: run a CNN checkpoint on image layers, show the result.

A stateful panel (a small ``QWidget``).  The user ticks the image layer(s)
whose order is the channel order (``_common.channels``), picks a model (the
default Br35H brain-MR model or a checkpoint file) and a scope (the current
slice, every slice, or the whole volume for volume/sequence models), and
presses Run.  Model loading and classification run as core functions in
napari ``thread_worker`` threads (``_common.jobs.load_model_job``,
:func:`iter_classify_job` over :func:`napari_medcnn.inference.predict.classify`), so
napari never freezes; Cancel calls ``worker.quit()``.

The result is shown as probability bars and, for volumes, a per-slice curve
(:mod:`.plots`; for sequence models with the slice importance too) whose
marker follows ``viewer.dims`` and whose clicks move napari to that slice.
The record (:func:`napari_medcnn.inference.records.classification_record`,
no patient data) is stored in the first channel
layer's ``metadata["classification"]`` and can be exported to CSV or JSON.
torch is imported only inside the worker functions.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from napari_medcnn.widgets._common.channels import aligned
from napari_medcnn.widgets._common.controls import RunControls, scrolled_layout
from napari_medcnn.widgets._common.jobs import default_model_file
from napari_medcnn.widgets._common.layers import (
    contains,
    current_slice_index,
    curve_axis,
    slice_axis,
    slice_world_position,
)
from napari_medcnn.widgets._common.model_panel import (
    ModelControls,
    ModelPanelMixin,
    ScopeButtons,
)
from napari_medcnn.widgets._common.plots import theme_colors
from napari_medcnn.widgets.classify.dialogs import ask_export_path
from napari_medcnn.widgets.classify.jobs import (
    SCOPE_CHOICES,
    iter_classify_job,
    job_arguments,
)
from napari_medcnn.widgets.classify.plots import ProbabilityBars, SliceCurve
from napari_medcnn.widgets.classify.view import ResultView

if TYPE_CHECKING:
    import napari

#: scope key -> radio-button text, in display order.


class ClassifyWidget(ModelPanelMixin, QWidget):
    """Dock widget that classifies image layers with a CNN checkpoint.

    Args:
        viewer: the napari viewer whose image layers are offered.
        model: checkpoint to load at start; None loads the default model
            when it exists (otherwise the panel says it is missing).
    """

    _job_failed = "Classification failed"

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        model: str | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("napari_medcnn_classify")
        self._init_panel(viewer)
        self._record: dict[str, Any] | None = None
        self._result_layer: Any = None
        self._result: Any = None  # the ClassificationResult, for the DICOM SR
        self._result_card: Any = None
        # the layer's data axis the per-slice curve runs along (a volume
        # model's card may slice coronally or sagittally)
        self._curve_axis = 0

        self._colors = theme_colors(getattr(viewer, "theme", "dark"))

        # -- child widgets: layers and model, scope, run, result, export -----
        self.model_controls = mc = ModelControls()
        self.channels, self.up_button, self.down_button = (
            mc.channels, mc.up_button, mc.down_button,
        )  # fmt: skip
        self.channel_label, self.model_label = mc.channel_label, mc.model_label
        self.default_button, self.browse_button = mc.default_button, mc.browse_button
        self.scope_box = ScopeButtons(SCOPE_CHOICES, "Scope:")
        self.scope_group, self.scope_buttons = (
            self.scope_box.group,
            self.scope_box.buttons,
        )
        self.run_controls = rc = RunControls()
        self.run_button, self.cancel_button = rc.run_button, rc.cancel_button
        self.progress, self.status = rc.progress, rc.status
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.bars = ProbabilityBars(self._colors)
        self.curve = SliceCurve(self._colors)
        self.curve.setVisible(False)
        self.csv_button = QPushButton("Export CSV…")
        self.json_button = QPushButton("Export JSON…")
        self.sr_button = QPushButton("Export DICOM SR…")
        self.sr_button.setToolTip(
            "A DICOM Comprehensive 3D SR of this classification for the "
            "source series' patient and study (DICOM layers only)"
        )
        export_row = QHBoxLayout()
        export_row.addStretch(1)
        export_row.addWidget(self.csv_button)
        export_row.addWidget(self.json_button)
        export_row.addWidget(self.sr_button)
        layout = scrolled_layout(self)
        layout.addWidget(self.model_controls)
        layout.addWidget(self.scope_box)
        layout.addWidget(self.run_controls)
        layout.addWidget(self.summary)
        layout.addWidget(self.bars)
        layout.addWidget(self.curve, 10)
        layout.addLayout(export_row)
        layout.addStretch(1)  # takes the room the hidden curve leaves
        self._view = ResultView(self.summary, self.bars, self.curve, self._colors)

        self._connect_model_controls()
        self.csv_button.clicked.connect(lambda: self._export_dialog("csv"))
        self.json_button.clicked.connect(lambda: self._export_dialog("json"))
        self.sr_button.clicked.connect(lambda: self._export_dialog("dcm"))
        self.curve.slice_clicked.connect(self.go_to_slice)
        # napari holds these weakly, but a closed panel's Python side may
        # outlive its Qt side: disconnect them when Qt destroys the panel, so
        # no viewer event reaches it afterwards
        listening = (
            (viewer.layers.events.inserted, self._on_layers_changed),
            (viewer.layers.events.removed, self._on_layers_changed),
            (viewer.layers.events.renamed, self._on_layers_changed),
            (viewer.layers.selection.events.active, self._on_active_changed),
            (viewer.dims.events.point, self._on_dims_point),
            (viewer.events.theme, self._on_theme),
        )
        for emitter, callback in listening:
            emitter.connect(callback)
        self.destroyed.connect(partial(_disconnect, listening))
        self._on_layers_changed()
        self._on_active_changed()
        self._update_model_info()
        self._update_buttons()
        self._load_first(
            model,
            f"Default model not found ({default_model_file().name} is not "
            "installed or not trained yet). Choose a checkpoint with "
            "“Model file…”.",
        )

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        """Room for the plots when first docked."""
        return QSize(420, 640)

    # -- public API ------------------------------------------------------
    @property
    def record(self) -> dict[str, Any] | None:
        """The last classification record (also in the layer metadata)."""
        return self._record

    def run(self) -> bool:
        """Classify the ticked layers with the chosen scope, in a worker.

        Input the model cannot take is refused at once with a message.
        Returns whether a job started.
        """
        from napari.qt.threading import thread_worker

        if self._job.worker is not None:
            return False
        layers = self._card_ordered_layers()
        try:
            kwargs = job_arguments(
                self._model, layers, self.scope, self._viewer.dims.point
            )
            inputs = self._channel_inputs(layers)  # one grid, or refused
        except ValueError as exc:  # CardError is a ValueError
            self._error(str(exc))
            return False
        worker = thread_worker(
            aligned(iter_classify_job), start_thread=False, ignore_errors=True
        )(inputs, self._model, **kwargs)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_classified)
        self._pending = {"kind": "classify", "layers": layers}
        self._start(worker, "Classifying…")
        return True

    def current_slice(self, layer: Any | None = None) -> int:
        """The slice (data index, axis 0) of ``layer`` (default: the first
        ticked layer) napari shows now; 0 without a layer."""
        layers = [layer] if layer is not None else self.selected_layers()
        if not layers:
            return 0
        return current_slice_index(layers[0], self._viewer.dims.point)

    def go_to_slice(self, index: int) -> None:
        """Move napari to slice ``index`` of the classified layer."""
        layer = self._result_layer
        if layer is None or not contains(self._viewer.layers, layer):
            return
        axis = slice_axis(self._viewer.dims.ndim, layer, self._curve_axis)
        self._viewer.dims.set_point(
            axis, slice_world_position(layer, index, self._curve_axis)
        )

    def export(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the last record to ``path`` (CSV for ``.csv``, else JSON).

        An existing file is refused (``OverwriteError``, a
        ``FileExistsError``) unless ``overwrite``; the export buttons pass
        True when the user confirmed replacing it in the save dialog.
        """
        from napari_medcnn.inference.records import write_records

        if self._record is None:
            raise ValueError("nothing to export: classify first")
        return write_records([self._record], path, overwrite=overwrite)

    def export_sr(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the last classification as a DICOM Comprehensive 3D SR
        (:mod:`napari_medcnn.export.sr`) to ``path`` (a ``.dcm`` file, or a
        folder: named from the series).  An existing file is refused unless
        ``overwrite``.

        Raises:
            ValueError: nothing classified yet, or the layer has no DICOM
                source (NIfTI, image, a layer made in napari): the message
                says why.
        """
        from napari_medcnn.export.sources import source_images
        from napari_medcnn.export.sr import write_classification_sr

        layer = self._result_layer
        if self._result is None or layer is None:
            raise ValueError("nothing to export: classify first")
        shape = np.shape(layer.data)
        spatial = len(shape) - (1 if getattr(layer, "rgb", False) else 0)
        src = source_images(
            dict(layer.metadata),
            n_slices=shape[0] if spatial == 3 else 1,
            name=str(layer.name),
        )
        return write_classification_sr(
            self._result, src, path, card=self._result_card, overwrite=overwrite
        )

    def _default_model(self) -> Path:
        return default_model_file()  # this module's name, which tests swap

    def _on_progress(self, event: Any) -> None:
        step = self._show_step(event)
        if step is not None:
            self._say(f"Classifying… {step[0]} / {step[1]}")

    def _on_model_loaded(self, loaded: Any) -> None:
        self._model = loaded
        self._update_model_info()
        card = loaded.card
        self._say(f"Model loaded: {card.name or card.arch}.")

    def _on_classified(self, result: Any) -> None:
        from napari.utils.notifications import show_warning

        from napari_medcnn.inference.records import classification_record

        layers = self._pending.get("layers") or []
        if not layers:
            return
        first = layers[0]
        record = classification_record(
            result,
            name=str(first.name),
            channel_layers=[str(lay.name) for lay in layers],
            metadata=first.metadata,
            channel_names=self._model.card.channel_names if self._model else (),
        )
        self._record = record
        first.metadata = {**first.metadata, "classification": record}
        self._result_layer = first
        self._result = result
        self._result_card = self._model.card if self._model else None
        self._curve_axis = curve_axis(self._result_card, result.scope)
        current = None
        if result.slice_probabilities is not None:
            current = current_slice_index(
                first, self._viewer.dims.point, self._curve_axis
            )
        self._view.show(record, current)
        self._say(f"Done: {record['label']} ({result.elapsed_s:.2f} s).")
        if result.warnings:
            show_warning(f"Classify '{first.name}': " + "; ".join(result.warnings))

    # -- viewer events ---------------------------------------------------
    def _on_layers_changed(self, _event=None) -> None:
        from napari.layers import Image

        self._sync_channels(
            [lay for lay in self._viewer.layers if isinstance(lay, Image)]
        )

    def _on_active_changed(self, _event=None) -> None:
        """Single-channel models follow napari's selected image layer."""
        from napari.layers import Image

        active = self._viewer.layers.selection.active
        n = self._model.card.in_channels if self._model is not None else 1
        if isinstance(active, Image) and n == 1:
            self.set_channels([active])

    def _on_dims_point(self, _event=None) -> None:
        layer = self._result_layer
        if self.curve.isHidden() or layer is None:
            return
        if contains(self._viewer.layers, layer):
            self.curve.set_current(
                current_slice_index(layer, self._viewer.dims.point, self._curve_axis)
            )

    def _on_theme(self, _event=None) -> None:
        self._colors = theme_colors(self._viewer.theme)
        self._view.set_colors(self._colors)

    # -- display ---------------------------------------------------------
    def _update_model_info(self) -> None:
        self._show_model_text()
        slice_model = self._model is None or self._model.card.input_kind == "slice"
        self.scope_buttons["volume"].setEnabled(not slice_model)
        for key in ("slice", "slices"):
            self.scope_buttons[key].setEnabled(slice_model)
        if slice_model and self.scope == "volume":
            self.set_scope("slice")
        elif not slice_model:
            self.set_scope("volume")
        self._update_channel_label()
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self._job.worker is not None
        for w in (self.default_button, self.browse_button, self.channels):
            w.setEnabled(not busy)
        self.run_button.setEnabled(not busy and self._model is not None)
        self.cancel_button.setEnabled(busy)
        for w in (self.csv_button, self.json_button):
            w.setEnabled(not busy and self._record is not None)
        layer = self._result_layer
        dicom = layer is not None and bool(layer.metadata.get("source_paths"))
        self.sr_button.setEnabled(not busy and self._result is not None and dicom)

    def _export_dialog(self, fmt: str) -> None:
        if self._record is None:
            return
        asked = ask_export_path(self, self._record.get("name") or "", fmt)
        if not asked:
            return
        path, confirmed = asked
        write = self.export_sr if fmt == "dcm" else self.export
        try:
            write(path, overwrite=confirmed)
        except (OSError, ValueError) as exc:  # ExportError: no DICOM source
            self._error(f"Export failed: {exc}")
            return
        self._say(f"Exported to {Path(path).name}.")


def _disconnect(connections: Any, *_args: Any) -> None:
    """Disconnect ``(napari emitter, callback)`` pairs (a closed panel)."""
    for emitter, callback in connections:
        emitter.disconnect(callback)
