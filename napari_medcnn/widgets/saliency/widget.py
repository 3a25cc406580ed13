"""Saliency dock widget: where did the model look, and how far to trust it.

A stateful panel (a small ``QWidget``).  The user ticks the image layer(s)
(channel order = the card's), picks a model (the default one or a
checkpoint file, loaded as in the Classify widget), a method (and, to see
where two methods disagree, a second one), the target class (default: the
predicted one), the scope (current slice or whole volume) and presses Run.
:func:`napari_medcnn.saliency.explain` runs in a napari ``thread_worker``
with progress and Cancel.

Each map becomes an Image layer named ``<source> · saliency <method>``,
updated by name on the next run, with the source's scale, translate and
affine (:mod:`.layers`).  Colormap, blending, opacity and a
percentile threshold apply live; "Side by side" shows two maps in napari's
grid.  The trust metrics are shown beside each map and stored in its
layer's ``metadata["saliency"]``; CNN+RNN models also get the
slice-importance curve.  Maps export to NIfTI, NumPy or PNG with a JSON
sidecar (:mod:`napari_medcnn.saliency.export`).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from napari_medcnn.widgets._common.channels import aligned
from napari_medcnn.widgets._common.controls import RunControls, scrolled_layout
from napari_medcnn.widgets._common.layers import (
    contains,
    current_slice_index,
    curve_axis,
    slice_axis,
    slice_world_position,
)
from napari_medcnn.widgets._common.model_panel import ModelControls, ModelPanelMixin
from napari_medcnn.widgets._common.plots import theme_colors
from napari_medcnn.widgets.saliency.controls import (
    DisplayControls,
    MethodChooser,
    MethodParams,
)
from napari_medcnn.widgets.saliency.dialogs import ask_export_path
from napari_medcnn.widgets.saliency.jobs import iter_saliency_job, job_arguments
from napari_medcnn.widgets.saliency.layers import (
    DisplayOptions,
    apply_display,
    is_overlay,
)
from napari_medcnn.widgets.saliency.plots import SliceImportance
from napari_medcnn.widgets.saliency.texts import result_html, trust_alerts

if TYPE_CHECKING:
    import napari


class SaliencyWidget(ModelPanelMixin, QWidget):
    """Dock widget that overlays saliency maps with their trust metrics.

    Args:
        viewer: the napari viewer.
        model: checkpoint to load at start; None: the default model when
            it is installed.
    """

    _job_failed = "Saliency failed"

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        model: str | None = None,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.setObjectName("napari_medcnn_saliency")
        self._init_panel(viewer)
        self._shown: list[dict[str, Any]] = []  # result, layer, source, record
        self._colors = theme_colors(getattr(viewer, "theme", "dark"))

        # -- child widgets: layers and model, method, target, scope,
        # parameters, run, display, metrics, slice importance, export
        self.model_controls = mc = ModelControls()
        mc.channels.setToolTip(
            "Tick the image layer(s) to explain; with several, their order is "
            "the channel order of the model's card (drag or Up / Down)."
        )
        self.channels, self.up_button, self.down_button = (
            mc.channels, mc.up_button, mc.down_button,
        )  # fmt: skip
        self.channel_label, self.model_label = mc.channel_label, mc.model_label
        self.default_button, self.browse_button = mc.default_button, mc.browse_button
        self.chooser = ch = MethodChooser()
        self.method_combo, self.compare_check = ch.method_combo, ch.compare_check
        self.method2_combo, self.method_note = ch.method2_combo, ch.method_note
        self.target_combo, self.normalize_combo = ch.target_combo, ch.normalize_combo
        self.scope_group, self.scope_buttons = ch.scope_box.group, ch.scope_box.buttons
        self.metrics_check = QCheckBox(
            "Trust metrics (deletion / insertion, randomisation)"
        )
        self.metrics_check.setChecked(True)
        self.params = pm = MethodParams()
        self.layer_edit, self.steps_spin, self.baseline_combo = (
            pm.layer_edit, pm.steps_spin, pm.baseline_combo,
        )  # fmt: skip
        self.window_spin, self.stride_spin, self.samples_spin = (
            pm.window_spin, pm.stride_spin, pm.samples_spin,
        )  # fmt: skip
        self.run_controls = rc = RunControls()
        self.run_button, self.cancel_button = rc.run_button, rc.cancel_button
        self.progress, self.status = rc.progress, rc.status
        self.display_controls = dc = DisplayControls()
        self.colormap_combo, self.blending_combo = dc.colormap_combo, dc.blending_combo
        self.opacity_slider, self.threshold_spin = dc.opacity_slider, dc.threshold_spin
        self.side_check = dc.side_check
        self.trust_label = QLabel("")
        self.trust_label.setObjectName("saliency_trust_warning")
        self.trust_label.setWordWrap(True)
        self.trust_label.setTextFormat(Qt.TextFormat.RichText)
        self.trust_label.setVisible(False)
        self.metrics_label = QLabel("")
        self.metrics_label.setWordWrap(True)
        self.metrics_label.setTextFormat(Qt.TextFormat.RichText)
        self.importance = SliceImportance(self._colors)
        self.importance.setVisible(False)
        self.export_button = QPushButton("Export map…")

        export_row = QHBoxLayout()
        export_row.addStretch(1)
        export_row.addWidget(self.export_button)
        layout = scrolled_layout(self)
        layout.addWidget(self.model_controls)
        layout.addWidget(self.chooser)
        layout.addWidget(self.metrics_check)
        layout.addWidget(self.params)
        layout.addWidget(self.run_controls)
        layout.addWidget(self.display_controls)
        layout.addWidget(self.trust_label)
        layout.addWidget(self.metrics_label)
        layout.addWidget(self.importance, 10)
        layout.addLayout(export_row)
        layout.addStretch(1)

        self._connect_model_controls()
        for signal in (
            self.compare_check.toggled,
            self.method_combo.currentIndexChanged,
            self.method2_combo.currentIndexChanged,
        ):
            signal.connect(self._on_method_changed)
        self.display_controls.changed.connect(self._on_display_changed)
        self.side_check.toggled.connect(self.side_by_side)
        self.importance.slice_clicked.connect(self.go_to_slice)
        self.export_button.clicked.connect(self._export_dialog)
        for emitter, callback in (
            (viewer.layers.events.inserted, self._on_layers_changed),
            (viewer.layers.events.removed, self._on_layers_changed),
            (viewer.layers.events.renamed, self._on_layers_changed),
            (viewer.dims.events.point, self._on_dims_point),
        ):
            emitter.connect(callback)
        self._on_layers_changed()
        self._update_model()
        self._load_first(model, "Default model not found: choose a checkpoint.")

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        return QSize(420, 760)

    # -- public API ------------------------------------------------------
    @property
    def overlays(self) -> list[Any]:
        """The overlay layers of the last run still in the viewer."""
        return [s["layer"] for s in self._shown if self._alive(s["layer"])]

    @property
    def results(self) -> list[Any]:
        """The ``SaliencyResult`` objects of the last run."""
        return [s["result"] for s in self._shown]

    def methods(self) -> list[str]:
        """Methods the current model is offered."""
        combo = self.method_combo
        return [combo.itemData(i) for i in range(combo.count())]

    def set_method(self, method: str, compare: str | None = None) -> None:
        """Choose the method, and a second one to compare (None: off)."""
        for combo, value in (
            (self.method_combo, method),
            (self.method2_combo, compare),
        ):
            if value is None:
                continue
            i = combo.findData(value)
            if i < 0:
                raise ValueError(
                    f"method {value!r} is not offered for this model; offered: "
                    f"{', '.join(self.methods())}"
                )
            combo.setCurrentIndex(i)
        self.compare_check.setChecked(compare is not None)

    def set_target(self, target: str | None) -> None:
        """Explain class ``target`` (None: the predicted class)."""
        i = self.target_combo.findData(target)
        if i < 0:
            classes = self._model.card.classes if self._model else []
            raise ValueError(f"no class named {target!r}; valid: {classes}")
        self.target_combo.setCurrentIndex(i)

    def display(self) -> DisplayOptions:
        """The display settings of the overlays."""
        return self.display_controls.options()

    def set_model(self, loaded: Any) -> None:
        """Use an already loaded ``LoadedModel``."""
        self._model = loaded
        self._update_model()

    def run(self) -> bool:
        """Explain the ticked layers in a worker; bad input is refused at
        once with a message.  Returns whether a job started."""
        from napari.qt.threading import thread_worker

        if self._job.worker is not None:
            return False
        layers = self._card_ordered_layers()
        try:
            common = job_arguments(
                self._model, layers, self.scope, self._viewer.dims.point,
                self.target_combo.currentData(),
            )  # fmt: skip
            inputs = self._channel_inputs(layers)  # one grid, or refused
        except ValueError as exc:  # CardError is a ValueError
            self._error(str(exc))
            return False
        runs = [(m, self.params.read(m)) for m in self.chooser.chosen()]
        common.update(
            normalize=self.normalize_combo.currentData(),
            metrics=self.metrics_check.isChecked(),
        )
        worker = thread_worker(
            aligned(iter_saliency_job), start_thread=False, ignore_errors=True
        )(inputs, self._model, runs, **common)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_explained)
        self._pending = {"kind": "explain", "layers": layers}
        self._start(worker, "Explaining…")
        return True

    def side_by_side(self, on: bool = True) -> bool:
        """Show the two maps of a comparison side by side (napari grid)."""
        from napari_medcnn.widgets.saliency.layers import set_side_by_side

        shown = [s for s in self._shown if self._alive(s["layer"])]
        if not shown:
            return False
        try:
            state = set_side_by_side(
                self._viewer, shown[0]["source"], [s["layer"] for s in shown], on
            )
        except (ValueError, KeyError) as exc:  # a layer vanished meanwhile
            self._error(f"Side by side failed: {exc}")
            return False
        return state

    def go_to_slice(self, index: int) -> None:
        """Move napari to slice ``index`` of the explained layer."""
        if not self._shown or not self._alive(self._shown[0]["source"]):
            return
        source = self._shown[0]["source"]
        data_axis = self._curve_axis()
        axis = slice_axis(self._viewer.dims.ndim, source, data_axis)
        self._viewer.dims.set_point(
            axis, slice_world_position(source, index, data_axis)
        )

    def _curve_axis(self) -> int:
        """The source layer's data axis the slice-importance curve runs
        along (the card's slice axis for a volume model)."""
        card = self._model.card if self._model is not None else None
        scope = self._shown[0]["result"].scope if self._shown else "slice"
        return curve_axis(card, scope)

    def export(
        self, path: str | Path, index: int = 0, overwrite: bool = False
    ) -> tuple[Path, Path | None]:
        """Write map ``index`` of the last run (format from the suffix:
        ``.nii.gz``/``.nii``, ``.npy``, ``.png``, ``.dcm``: a DICOM
        Parametric Map of the source series) and its JSON sidecar
        (``<stem>.json``).  An existing map or sidecar is refused
        (``OverwriteError``, a ``FileExistsError``) unless ``overwrite``.

        Returns:
            (map path, sidecar path).
        """
        from napari_medcnn.widgets.saliency.layers import export_overlay

        if not self._shown:
            raise ValueError("nothing to export: run first")
        shown = self._shown[index]
        name = self._model.card.name if self._model else None
        return export_overlay(
            path, shown["result"], shown["source"], self.display(), name,
            overwrite=overwrite, card=self._model.card if self._model else None,
        )  # fmt: skip

    def _on_model_loaded(self, loaded: Any) -> None:
        self.set_model(loaded)

    def _on_progress(self, event: Any) -> None:
        from napari.utils.notifications import show_warning

        if event and event[0] == "warning":
            self._say(str(event[1]), warn=True)
            show_warning(f"Saliency: {event[1]}")
            return
        if self._show_step(event) is not None:
            i, n = event[1:3]
            label = event[3] if len(event) > 3 else ""
            self._say(f"Explaining {label}… {100 * i // n} %")

    def _on_explained(self, results: list[Any]) -> None:
        from napari.utils.notifications import show_warning

        from napari_medcnn.saliency.export import saliency_record
        from napari_medcnn.widgets.saliency.layers import show_overlay

        layers = [lay for lay in self._pending.get("layers") or [] if self._alive(lay)]
        if not layers:
            return
        source, display, card = layers[0], self.display(), self._model.card
        self.side_by_side(False)
        self._shown = []
        for result in results:
            record = saliency_record(
                result, source_name=str(source.name), model_name=card.name,
                spacing=tuple(source.scale),
                extra={"channel_layers": [str(lay.name) for lay in layers]},
            )  # fmt: skip
            layer = show_overlay(
                self._viewer, source, result.map, result.method, record, display
            )
            self._shown.append(
                {"result": result, "layer": layer, "source": source, "record": record}
            )
            if result.warnings:
                show_warning(f"Saliency {result.method}: " + "; ".join(result.warnings))
        self._show_texts()
        took = sum(r.elapsed_s for r in results)
        self._say(f"Done ({took:.1f} s).")

    @property
    def trust_warnings(self) -> list[str]:
        """The failed trust checks of the last run, as the warning label
        above the metrics shows them (empty when every check passed)."""
        return trust_alerts([s["record"] for s in self._shown])

    def _show_texts(self) -> None:
        alerts = self.trust_warnings
        self.trust_label.setText(
            "".join(
                f'<p style="color:{self._colors.marker}"><b>⚠ {html.escape(a)}</b></p>'
                for a in alerts
            )
        )
        self.trust_label.setVisible(bool(alerts))
        self.metrics_label.setText(
            "<br><br>".join(
                result_html(s["layer"].metadata["saliency"], self._colors.marker)
                for s in self._shown
            )
        )
        first = self._shown[0]["result"] if self._shown else None
        if first is not None and first.slice_importance is not None:
            self.importance.show_importance(
                first.slice_importance, first.slice_attention
            )
            self.importance.setVisible(True)
            self._on_dims_point()
        else:
            self.importance.setVisible(False)
        self.side_check.blockSignals(True)
        self.side_check.setChecked(False)
        self.side_check.blockSignals(False)
        self._update_buttons()

    # -- viewer and control events ----------------------------------------
    def _on_layers_changed(self, _event=None) -> None:
        from napari.layers import Image

        images = [
            lay
            for lay in self._viewer.layers
            if isinstance(lay, Image) and not is_overlay(lay)
        ]
        self._sync_channels(images)

    def _on_dims_point(self, _event=None) -> None:
        if self.importance.isHidden() or not self._shown:
            return
        source = self._shown[0]["source"]
        if self._alive(source):
            self.importance.set_current(
                current_slice_index(source, self._viewer.dims.point, self._curve_axis())
            )

    def _on_method_changed(self, *_args) -> None:
        self.params.show_for(self.chooser.chosen())

    def _on_display_changed(self, *_args) -> None:
        display = self.display()
        for layer in self.overlays:
            apply_display(layer, display)

    # -- helpers ---------------------------------------------------------
    def _alive(self, layer: Any) -> bool:
        return contains(self._viewer.layers, layer)

    def _update_model(self) -> None:
        self._show_model_text()
        self.chooser.offer(self._model)
        self._update_channel_label()
        self._update_buttons()
        if self._model is not None:
            card = self._model.card
            self._say(f"Model loaded: {card.name or card.arch}.")

    def _update_buttons(self) -> None:
        busy = self._job.worker is not None
        for w in (self.default_button, self.browse_button, self.channels):
            w.setEnabled(not busy)
        self.run_button.setEnabled(not busy and self._model is not None)
        self.cancel_button.setEnabled(busy)
        self.export_button.setEnabled(not busy and bool(self._shown))
        self.side_check.setEnabled(not busy and len(self.overlays) >= 2)

    def _export_dialog(self) -> None:
        if not self._shown:
            return
        asked = ask_export_path(self, str(self._shown[0]["layer"].name))
        if not asked:
            return
        path, confirmed = asked
        # the dialog confirmed the map; its sidecar is replaced with it only
        # when the map itself existed (a previous export): a new map never
        # replaces someone's <stem>.json (say, a classification export)
        from napari_medcnn.saliency.export import sidecar_path

        side_free = Path(path).exists() or not sidecar_path(path).exists()
        try:
            out, _side = self.export(path, overwrite=confirmed and side_free)
        except (OSError, ValueError) as exc:
            self._error(f"Export failed: {exc}")
            return
        self._say(f"Exported to {out.name} (+ JSON sidecar).")
