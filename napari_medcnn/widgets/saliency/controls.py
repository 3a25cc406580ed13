"""Child widgets, layout and dialogs of the Saliency dock widget."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QWidget,
)

from napari_medcnn.widgets._model_panel import (
    add_model_controls,
    build_model_controls,
    build_run_controls,
    build_scope_buttons,
    scrolled_layout,
)
from napari_medcnn.widgets._plots import PlotColors
from napari_medcnn.widgets._saliency_jobs import METHOD_LABELS, offered_methods
from napari_medcnn.widgets._saliency_layers import BLENDINGS, COLORMAPS
from napari_medcnn.widgets._saliency_plot import SliceImportance

SCOPES = {"slice": "Current slice", "volume": "Whole volume"}
EXPORT_FILTERS = "NIfTI (*.nii.gz);;NumPy (*.npy);;PNG overlay (*.png)"


def _spin(lo, hi, value, step=1, decimals=None, suffix=""):
    box = QSpinBox() if decimals is None else QDoubleSpinBox()
    if decimals is not None:
        box.setDecimals(decimals)
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    if suffix:
        box.setSuffix(suffix)
    return box


def build_ui(w: QWidget, colors: PlotColors) -> None:
    """Create the panel's child widgets as attributes of ``w`` and lay them
    out: layers, model, method(s), target, scope, parameters, run/cancel,
    display, metrics, slice importance, export."""
    grid, model_row = build_model_controls(w)
    w.channels.setToolTip(
        "Tick the image layer(s) to explain; with several, their order is "
        "the channel order of the model's card (drag or Up / Down)."
    )
    w.method_combo = QComboBox()
    w.compare_check = QCheckBox("Compare with")
    w.method2_combo = QComboBox()
    w.method2_combo.setEnabled(False)
    w.method_note = QLabel("")
    w.method_note.setWordWrap(True)
    w.target_combo = QComboBox()
    scope_row = build_scope_buttons(w, SCOPES)
    w.normalize_combo = QComboBox()
    w.normalize_combo.addItem("one scale for the volume", "volume")
    w.normalize_combo.addItem("per slice", "slice")
    w.metrics_check = QCheckBox("Trust metrics (deletion / insertion, randomisation)")
    w.metrics_check.setChecked(True)
    w.layer_edit = QLineEdit()
    w.layer_edit.setPlaceholderText(
        "automatic (deepest stage of >= 16x16 cells; 'last' for the last)"
    )
    w.steps_spin = _spin(2, 512, 32)
    w.baseline_combo = QComboBox()
    w.baseline_combo.addItems(["black", "blurred", "mean"])
    w.window_spin = _spin(0.5, 500.0, 10.0, 1.0, 1, " mm")
    w.stride_spin = _spin(0.5, 500.0, 5.0, 1.0, 1, " mm")
    w.samples_spin = _spin(1, 256, 16)
    run_row = build_run_controls(w)
    w.colormap_combo = QComboBox()
    w.colormap_combo.addItems(list(COLORMAPS))
    w.blending_combo = QComboBox()
    w.blending_combo.addItems(list(BLENDINGS))
    w.opacity_slider = QSlider(Qt.Orientation.Horizontal)
    w.opacity_slider.setRange(0, 100)
    w.opacity_slider.setValue(60)
    w.threshold_spin = _spin(0.0, 99.0, 0.0, 5.0, 0, " %")
    w.threshold_spin.setToolTip(
        "Hide map values below this percentile of the map's positive values"
    )
    w.side_check = QCheckBox("Side by side (grid)")
    w.side_check.setEnabled(False)
    w.trust_label = QLabel("")
    w.trust_label.setObjectName("saliency_trust_warning")
    w.trust_label.setWordWrap(True)
    w.trust_label.setTextFormat(Qt.TextFormat.RichText)
    w.trust_label.setVisible(False)
    w.metrics_label = QLabel("")
    w.metrics_label.setWordWrap(True)
    w.metrics_label.setTextFormat(Qt.TextFormat.RichText)
    w.importance = SliceImportance(colors)
    w.importance.setVisible(False)
    w.export_button = QPushButton("Export map…")

    form = QFormLayout()
    form.addRow("Method", w.method_combo)
    form.addRow(w.compare_check, w.method2_combo)
    form.addRow("Target class", w.target_combo)
    form.addRow("Scope", scope_row)
    form.addRow("Normalise", w.normalize_combo)
    params = QFormLayout()
    params.addRow("CAM layer(s)", w.layer_edit)
    params.addRow("IG steps", w.steps_spin)
    params.addRow("IG baseline", w.baseline_combo)
    params.addRow("Occlusion window", w.window_spin)
    params.addRow("Occlusion stride", w.stride_spin)
    params.addRow("SmoothGrad samples", w.samples_spin)
    w.params_form = params
    w.param_rows = {
        "layercam": [w.layer_edit],
        "gradcam": [w.layer_edit],
        "gradcam++": [w.layer_edit],
        "hirescam": [w.layer_edit],
        "integrated_gradients": [w.steps_spin, w.baseline_combo],
        "occlusion": [w.window_spin, w.stride_spin],
        "smoothgrad": [w.samples_spin],
    }
    display = QFormLayout()
    display.addRow("Colormap", w.colormap_combo)
    display.addRow("Blending", w.blending_combo)
    display.addRow("Opacity", w.opacity_slider)
    display.addRow("Threshold", w.threshold_spin)
    display.addRow("", w.side_check)
    export_row = QHBoxLayout()
    export_row.addStretch(1)
    export_row.addWidget(w.export_button)

    layout = scrolled_layout(w)
    add_model_controls(layout, w, grid, model_row)
    layout.addLayout(form)
    layout.addWidget(w.method_note)
    layout.addWidget(w.metrics_check)
    w.params_title = QLabel("<b>Parameters</b>")
    layout.addWidget(w.params_title)
    layout.addLayout(params)
    layout.addLayout(run_row)
    layout.addWidget(w.status)
    layout.addWidget(QLabel("<b>Display</b>"))
    layout.addLayout(display)
    layout.addWidget(w.trust_label)
    layout.addWidget(w.metrics_label)
    layout.addWidget(w.importance, 10)
    layout.addLayout(export_row)
    layout.addStretch(1)


def show_param_rows(w: QWidget, methods: list[str]) -> None:
    """Show only the parameter rows of the chosen ``methods``."""
    wanted = {id(f) for m in methods for f in w.param_rows.get(m, [])}
    for fields in w.param_rows.values():
        for field in fields:
            on = id(field) in wanted
            field.setVisible(on)
            label = w.params_form.labelForField(field)
            if label is not None:
                label.setVisible(on)
    w.params_title.setVisible(bool(wanted))


def read_params(w: QWidget, method: str) -> dict:
    """The chosen method's own parameters, as ``explain`` takes them."""
    if method in ("gradcam", "gradcam++"):
        layer = w.layer_edit.text().strip()
        return {"layer": layer} if layer else {}
    if method in ("layercam", "hirescam"):
        layers = w.layer_edit.text().strip()
        return {"layers": layers} if layers else {}
    if method == "integrated_gradients":
        return {
            "n_steps": w.steps_spin.value(),
            "baseline": w.baseline_combo.currentText(),
        }
    if method == "occlusion":
        return {"window_mm": w.window_spin.value(), "stride_mm": w.stride_spin.value()}
    if method == "smoothgrad":
        return {"n_samples": w.samples_spin.value()}
    return {}


def fill_model_controls(w: QWidget, model) -> str:
    """Offer ``model``'s methods and classes (None: empty the combos) and
    set the scopes it allows.  Returns why methods are missing, or ""."""
    for combo in (w.method_combo, w.method2_combo, w.target_combo):
        combo.clear()
    if model is None:
        return ""
    methods, note = offered_methods(model)
    for combo in (w.method_combo, w.method2_combo):
        for m in methods:
            combo.addItem(METHOD_LABELS[m], m)
    if len(methods) > 1:
        w.method2_combo.setCurrentIndex(1)
    w.target_combo.addItem("Predicted class", None)
    for name in model.card.classes:
        w.target_combo.addItem(name, name)
    whole = model.card.input_kind != "slice"
    w.scope_buttons["slice"].setEnabled(not whole)
    if whole:
        w.scope_buttons["volume"].setChecked(True)
    return note


def ask_export_path(parent: QWidget, name: str) -> tuple[str, bool] | None:
    """Ask where to save the map; the suffix follows the chosen filter.

    Returns:
        (path, confirmed), or None when cancelled: ``confirmed`` is True
        when the dialog itself chose ``path`` (the user confirmed replacing
        it if it exists), not when the suffix was added afterwards.
    """
    stem = "".join(c if c.isalnum() else "_" for c in name) or "saliency"
    path, chosen = QFileDialog.getSaveFileName(
        parent, "Export saliency map", f"{stem}.nii.gz", EXPORT_FILTERS
    )
    if not path:
        return None
    suffix = ".png" if "png" in chosen else ".npy" if "npy" in chosen else ".nii.gz"
    known = (".nii.gz", ".nii", ".npy", ".png")
    if path.lower().endswith(known):
        return path, True
    return path + suffix, False
