"""Qt layout of the Fine-tune widget (widgets only, no behaviour)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medcnn.training.data.augment import STRENGTH
from napari_medcnn.widgets._plots import PlotColors
from napari_medcnn.widgets._train_plot import ConfusionPlot, LearningCurves

PARENTS = {
    "default": "Default model",
    "current": "Current model (Classify widget)",
    "file": "Checkpoint file",
    "scratch": "From scratch (seed CNN)",
}
BALANCE = {
    "weighted_loss": "Weighted loss",
    "sampler": "Class-balanced sampling",
    "none": "None",
}
SPLITS = {"auto": "Auto (k-fold if few labels)", "holdout": "Hold-out 20 %",
          "kfold": "5-fold"}  # fmt: skip
MODES = {"thread": "Worker thread", "subprocess": "Subprocess"}
_S = STRENGTH
# the Fine-tune panel's augmentation switches (in order) and their tooltips
AUGMENT_TIPS = {
    "flip": "Mirror left-right (half the samples).",
    "rotate": f"Rotate in-plane by up to {_S['rotate_deg']:g} degrees.",
    "affine": f"Zoom by up to {_S['scale']:.0%} and shift by up to "
    f"{_S['translate_px']:g} pixels.",
    "elastic": "Smooth random deformation.",
    "intensity": "Scale and shift intensities a little.",
    "gamma": f"Random gamma curve ({_S['gamma_low']:g}-{_S['gamma_high']:g}).",
    "histogram": "Random monotone intensity curve: contrast differences "
    "between sequences, scanners and sites.",
    "blur": "Gaussian blur (sigma 0.3-1 pixel).",
    "noise": "Gaussian noise.",
    "cutout": f"Erase one random square (up to {_S['cutout_px']:g} pixels).",
}
AUGMENT = tuple(AUGMENT_TIPS)


def _combo(items: dict[str, str]) -> QComboBox:
    combo = QComboBox()
    for key, text in items.items():
        combo.addItem(text, key)
    return combo


def _spin(lo: int, hi: int, value: int) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(lo, hi)
    spin.setValue(value)
    return spin


def build_ui(panel: Any, colors: PlotColors) -> None:
    """Create the Fine-tune panel's child widgets as attributes of ``panel``."""
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    body = QWidget()
    scroll.setWidget(body)
    outer.addWidget(scroll)
    layout = QVBoxLayout(body)

    box = QGroupBox("Model")
    form = QFormLayout(box)
    panel.parent_combo = _combo(PARENTS)
    form.addRow("Start from:", panel.parent_combo)
    panel.parent_edit = QLineEdit()
    panel.parent_edit.setPlaceholderText("parent checkpoint (.safetensors)")
    panel.parent_browse = QPushButton("…")
    form.addRow("Parent file:", _hbox(panel.parent_edit, panel.parent_browse))
    panel.out_edit = QLineEdit(
        str(Path.home() / "napari-medcnn" / "finetuned.safetensors")
    )
    panel.out_browse = QPushButton("…")
    form.addRow("Save as:", _hbox(panel.out_edit, panel.out_browse))
    layout.addWidget(box)

    box = QGroupBox("Training")
    form = QFormLayout(box)
    panel.epochs_spin = _spin(1, 1000, 20)
    panel.freeze_spin = _spin(0, 1000, 0)
    panel.freeze_spin.setToolTip("Train only the class head for these first epochs.")
    panel.batch_spin = _spin(1, 1024, 32)
    form.addRow("Epochs:", panel.epochs_spin)
    form.addRow("Freeze backbone:", panel.freeze_spin)
    form.addRow("Batch size:", panel.batch_spin)
    panel.balance_combo = _combo(BALANCE)
    form.addRow("Balance:", panel.balance_combo)
    panel.split_combo = _combo(SPLITS)
    panel.split_combo.setToolTip(
        "Validation split by patient/study when the scans have one; k-fold "
        "cross-validation when there are few labels."
    )
    form.addRow("Validation:", panel.split_combo)
    panel.mode_combo = _combo(MODES)
    panel.mode_combo.setToolTip(
        "Where training runs: a worker thread of napari, or a separate process "
        "(never competes with napari for Python's GIL). Both leave one CPU "
        "core for napari."
    )
    form.addRow("Run in:", panel.mode_combo)
    layout.addWidget(box)

    box = QGroupBox("Augmentation")
    grid = QGridLayout(box)
    panel.augment_checks = {}
    for i, key in enumerate(AUGMENT):
        check = QCheckBox(key)
        check.setToolTip(AUGMENT_TIPS[key])
        panel.augment_checks[key] = check
        grid.addWidget(check, i // 4, i % 4)
    panel.preview_button = QPushButton("Preview augmentation")
    panel.preview_button.setToolTip(
        "Show nine augmented copies of a labelled example as a napari layer."
    )
    grid.addWidget(panel.preview_button, (len(AUGMENT) + 3) // 4, 0, 1, 4)
    layout.addWidget(box)

    panel.labels_info = QLabel("No labels found in the open layers.")
    panel.labels_info.setWordWrap(True)
    panel.refresh_button = QPushButton("Refresh")
    layout.addLayout(_hbox(panel.labels_info, panel.refresh_button, stretch=0))

    panel.start_button = QPushButton("Start")
    panel.pause_button = QPushButton("Pause")
    panel.cancel_button = QPushButton("Cancel")
    layout.addLayout(_hbox(panel.start_button, panel.pause_button, panel.cancel_button))
    panel.progress = QProgressBar()
    panel.progress.setRange(0, 1)
    panel.progress.setValue(0)
    panel.progress.setFormat("%p %")
    layout.addWidget(panel.progress)
    panel.status = QLabel("")
    panel.status.setWordWrap(True)
    layout.addWidget(panel.status)

    panel.curves = LearningCurves(colors)
    layout.addWidget(panel.curves)
    panel.matrix = ConfusionPlot(colors)
    panel.matrix.setVisible(False)
    layout.addWidget(panel.matrix)
    panel.metrics_label = QLabel("")
    panel.metrics_label.setWordWrap(True)
    layout.addWidget(panel.metrics_label)
    panel.save_best_button = QPushButton("Save best so far…")
    panel.continue_button = QPushButton("Continue training")
    panel.continue_button.setToolTip(
        "Start again from the cancelled run's best weights."
    )
    layout.addLayout(_hbox(panel.save_best_button, panel.continue_button))
    layout.addStretch(1)


def _hbox(*widgets: QWidget, stretch: int | None = None) -> QHBoxLayout:
    row = QHBoxLayout()
    for i, w in enumerate(widgets):
        row.addWidget(w, 1 if i == 0 and stretch == 0 else 0)
    return row


def ask_save_path(parent: QWidget, start: str) -> str:
    """A save dialog for a checkpoint; '' when cancelled."""
    path, _ = QFileDialog.getSaveFileName(
        parent, "Save checkpoint", start, "Checkpoints (*.safetensors)"
    )
    return path


def ask_open_path(parent: QWidget, start: str) -> str:
    """An open dialog for a parent checkpoint; '' when cancelled."""
    path, _ = QFileDialog.getOpenFileName(
        parent, "Parent checkpoint", start, "Checkpoints (*.safetensors *.json)"
    )
    return path
