"""Child widgets of the Saliency dock widget that carry their own logic.

* :class:`MethodChooser`: the method (and a second one to compare), the
  target class, the scope and the normalisation; :meth:`MethodChooser.
  offer` fills them for a model.
* :class:`MethodParams`: each method's own parameters (CAM layers, IG
  steps and baseline, occlusion window and stride, SmoothGrad samples);
  only the rows of the chosen methods are shown, and :meth:`MethodParams.
  read` turns them into ``explain`` keyword arguments.
* :class:`DisplayControls`: colormap, blending, opacity, threshold and
  "Side by side", read as :class:`~napari_medcnn.widgets.saliency.layers.
  DisplayOptions`.
"""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medcnn.widgets._common.model_panel import ScopeButtons
from napari_medcnn.widgets.saliency.jobs import METHOD_LABELS, offered_methods
from napari_medcnn.widgets.saliency.layers import BLENDINGS, COLORMAPS, DisplayOptions

SCOPES = {"slice": "Current slice", "volume": "Whole volume"}


def spin_box(lo, hi, value, step=1, decimals=None, suffix=""):
    """A ``QSpinBox`` (``decimals`` None) or ``QDoubleSpinBox``."""
    box = QSpinBox() if decimals is None else QDoubleSpinBox()
    if decimals is not None:
        box.setDecimals(decimals)
    box.setRange(lo, hi)
    box.setSingleStep(step)
    box.setValue(value)
    if suffix:
        box.setSuffix(suffix)
    return box


class MethodChooser(QWidget):
    """What to explain, and how: a form, with a note on missing methods.

    Attributes:
        method_combo, compare_check, method2_combo: the method, and a second
            one to compare with (enabled by ``compare_check``).
        target_combo: "Predicted class" (None) or a class name.
        scope_box: a ``ScopeButtons`` (current slice or whole volume).
        normalize_combo: one scale for the volume, or per slice.
        method_note: why some methods are missing (hidden when none are).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.method_combo = QComboBox()
        self.compare_check = QCheckBox("Compare with")
        self.method2_combo = QComboBox()
        self.method2_combo.setEnabled(False)
        self.method_note = QLabel("")
        self.method_note.setWordWrap(True)
        self.target_combo = QComboBox()
        self.scope_box = ScopeButtons(SCOPES)
        self.normalize_combo = QComboBox()
        self.normalize_combo.addItem("one scale for the volume", "volume")
        self.normalize_combo.addItem("per slice", "slice")
        form = QFormLayout()
        form.addRow("Method", self.method_combo)
        form.addRow(self.compare_check, self.method2_combo)
        form.addRow("Target class", self.target_combo)
        form.addRow("Scope", self.scope_box)
        form.addRow("Normalise", self.normalize_combo)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.method_note)
        self.compare_check.toggled.connect(self.method2_combo.setEnabled)

    def chosen(self) -> list[str]:
        """The method, then the one to compare with when that is on."""
        chosen = [self.method_combo.currentData()]
        second = self.method2_combo.currentData()
        if self.compare_check.isChecked() and second and second not in chosen:
            chosen.append(second)
        return chosen

    def offer(self, model) -> None:
        """Offer ``model``'s methods and classes (None: empty the combos),
        set the scopes it allows and say why methods are missing."""
        for combo in (self.method_combo, self.method2_combo, self.target_combo):
            combo.clear()
        note = ""
        if model is not None:
            methods, note = offered_methods(model)
            for combo in (self.method_combo, self.method2_combo):
                for m in methods:
                    combo.addItem(METHOD_LABELS[m], m)
            if len(methods) > 1:
                self.method2_combo.setCurrentIndex(1)
            self.target_combo.addItem("Predicted class", None)
            for name in model.card.classes:
                self.target_combo.addItem(name, name)
            whole = model.card.input_kind != "slice"
            self.scope_box.buttons["slice"].setEnabled(not whole)
            if whole:
                self.scope_box.buttons["volume"].setChecked(True)
        self.method_note.setText(note)
        self.method_note.setVisible(bool(note))


class MethodParams(QWidget):
    """The "Parameters" title and one form row per method parameter.

    Attributes:
        layer_edit, steps_spin, baseline_combo, window_spin, stride_spin,
            samples_spin: the parameter fields.
        rows: method -> the fields it uses.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.layer_edit = QLineEdit()
        self.layer_edit.setPlaceholderText(
            "automatic (deepest stage of >= 16x16 cells; 'last' for the last)"
        )
        self.steps_spin = spin_box(2, 512, 32)
        self.baseline_combo = QComboBox()
        self.baseline_combo.addItems(["black", "blurred", "mean"])
        self.window_spin = spin_box(0.5, 500.0, 10.0, 1.0, 1, " mm")
        self.stride_spin = spin_box(0.5, 500.0, 5.0, 1.0, 1, " mm")
        self.samples_spin = spin_box(1, 256, 16)
        self.rows = {
            "layercam": [self.layer_edit],
            "gradcam": [self.layer_edit],
            "gradcam++": [self.layer_edit],
            "hirescam": [self.layer_edit],
            "integrated_gradients": [self.steps_spin, self.baseline_combo],
            "occlusion": [self.window_spin, self.stride_spin],
            "smoothgrad": [self.samples_spin],
        }
        self.title = QLabel("<b>Parameters</b>")
        self.form = QFormLayout()
        self.form.addRow("CAM layer(s)", self.layer_edit)
        self.form.addRow("IG steps", self.steps_spin)
        self.form.addRow("IG baseline", self.baseline_combo)
        self.form.addRow("Occlusion window", self.window_spin)
        self.form.addRow("Occlusion stride", self.stride_spin)
        self.form.addRow("SmoothGrad samples", self.samples_spin)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addLayout(self.form)

    def show_for(self, methods: list[str]) -> None:
        """Show only the parameter rows of the chosen ``methods``."""
        wanted = {id(f) for m in methods for f in self.rows.get(m, [])}
        for fields in self.rows.values():
            for field in fields:
                on = id(field) in wanted
                field.setVisible(on)
                label = self.form.labelForField(field)
                if label is not None:
                    label.setVisible(on)
        self.title.setVisible(bool(wanted))

    def read(self, method: str) -> dict:
        """The chosen method's own parameters, as ``explain`` takes them."""
        if method in ("gradcam", "gradcam++"):
            layer = self.layer_edit.text().strip()
            return {"layer": layer} if layer else {}
        if method in ("layercam", "hirescam"):
            layers = self.layer_edit.text().strip()
            return {"layers": layers} if layers else {}
        if method == "integrated_gradients":
            return {
                "n_steps": self.steps_spin.value(),
                "baseline": self.baseline_combo.currentText(),
            }
        if method == "occlusion":
            return {
                "window_mm": self.window_spin.value(),
                "stride_mm": self.stride_spin.value(),
            }
        if method == "smoothgrad":
            return {"n_samples": self.samples_spin.value()}
        return {}


class DisplayControls(QWidget):
    """The "Display" title and form: how the overlays are drawn.

    Signals:
        changed: the colormap, blending, opacity or threshold changed.

    Attributes:
        colormap_combo, blending_combo, opacity_slider, threshold_spin,
            side_check: the display fields ("Side by side" disabled until
            there are two maps).
    """

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.colormap_combo = QComboBox()
        self.colormap_combo.addItems(list(COLORMAPS))
        self.blending_combo = QComboBox()
        self.blending_combo.addItems(list(BLENDINGS))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(60)
        self.threshold_spin = spin_box(0.0, 99.0, 0.0, 5.0, 0, " %")
        self.threshold_spin.setToolTip(
            "Hide map values below this percentile of the map's positive values"
        )
        self.side_check = QCheckBox("Side by side (grid)")
        self.side_check.setEnabled(False)
        form = QFormLayout()
        form.addRow("Colormap", self.colormap_combo)
        form.addRow("Blending", self.blending_combo)
        form.addRow("Opacity", self.opacity_slider)
        form.addRow("Threshold", self.threshold_spin)
        form.addRow("", self.side_check)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("<b>Display</b>"))
        layout.addLayout(form)
        for signal in (
            self.colormap_combo.currentIndexChanged,
            self.blending_combo.currentIndexChanged,
            self.opacity_slider.valueChanged,
            self.threshold_spin.valueChanged,
        ):
            signal.connect(self.changed)

    def options(self) -> DisplayOptions:
        """The display settings of the overlays."""
        return DisplayOptions(
            colormap=self.colormap_combo.currentText(),
            blending=self.blending_combo.currentText(),
            opacity=self.opacity_slider.value() / 100.0,
            threshold_percentile=float(self.threshold_spin.value()),
        )
