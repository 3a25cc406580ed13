"""Qt layout of the labelling widget (widgets only, no behaviour)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

TARGETS = {
    "slice": "Current slice",
    "range": "Slice range",
    "whole": "Whole image / volume",
}


def _row(*widgets: QWidget) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


def build_ui(panel: Any) -> None:
    """Create the labelling panel's child widgets as attributes of ``panel``."""
    layout = QVBoxLayout(panel)

    panel.scan_combo = QComboBox()
    panel.scan_combo.setToolTip("The image layer (scan) being labelled.")
    layout.addLayout(_row(QLabel("Scan:"), panel.scan_combo))

    # -- classes -------------------------------------------------------------
    box = QGroupBox("Classes (keys 1–9)")
    v = QVBoxLayout(box)
    panel.classes_edit = QLineEdit()
    panel.classes_edit.setPlaceholderText("e.g. normal, lesion")
    panel.classes_edit.setToolTip(
        "Class names separated by commas; the first is key 1, the second key 2…"
    )
    panel.classes_button = QPushButton("Set")
    panel.from_model_button = QPushButton("From model")
    panel.from_model_button.setToolTip(
        "Use the classes of the current model (Classify widget, else the default)."
    )
    v.addLayout(_row(panel.classes_edit, panel.classes_button, panel.from_model_button))
    panel.class_grid = QGridLayout()
    v.addLayout(panel.class_grid)
    panel.class_buttons = []
    layout.addWidget(box)

    # -- what a class button / key labels ------------------------------------
    box = QGroupBox("Label")
    g = QGridLayout(box)
    panel.target_combo = QComboBox()
    for key, text in TARGETS.items():
        panel.target_combo.addItem(text, key)
    panel.target_combo.setToolTip(
        "What a class button or key 1–9 labels: the slice napari shows, the "
        "slice range below, or the whole 2D image / 3D volume."
    )
    g.addWidget(QLabel("Apply to:"), 0, 0)
    g.addWidget(panel.target_combo, 0, 1, 1, 3)
    panel.range_from = QSpinBox()
    panel.range_to = QSpinBox()
    panel.from_here_button = QPushButton("From here")
    panel.to_here_button = QPushButton("To here")
    g.addWidget(QLabel("Slices:"), 1, 0)
    g.addWidget(panel.range_from, 1, 1)
    g.addWidget(panel.from_here_button, 1, 2)
    g.addWidget(panel.range_to, 2, 1)
    g.addWidget(panel.to_here_button, 2, 2)
    panel.unlabel_button = QPushButton("Remove label")
    panel.unlabel_button.setToolTip("Remove the label of the current target (0 key).")
    g.addWidget(panel.unlabel_button, 1, 3, 2, 1)
    layout.addWidget(box)

    # -- labelled items ------------------------------------------------------
    panel.counts_label = QLabel("No labels yet.")
    panel.counts_label.setWordWrap(True)
    layout.addWidget(panel.counts_label)
    panel.items_list = QListWidget()
    panel.items_list.setToolTip("Labelled items; click one to go to it.")
    panel.items_list.setMinimumHeight(90)
    layout.addWidget(panel.items_list)
    panel.next_button = QPushButton("Next case")
    panel.next_button.setToolTip(
        "Go to the most informative unlabelled slice or image of the open "
        "layers (highest model uncertainty: entropy, or MC-dropout mutual "
        "information for models with dropout)."
    )
    layout.addWidget(panel.next_button)

    # -- region labels -------------------------------------------------------
    box = QGroupBox("Region labels → probability map")
    g = QGridLayout(box)
    panel.labels_combo = QComboBox()
    panel.labels_combo.setToolTip(
        "A Labels layer painted on the scan: value 1 is the first class, 2 the "
        "second… (0 = unlabelled)."
    )
    g.addWidget(QLabel("Labels layer:"), 0, 0)
    g.addWidget(panel.labels_combo, 0, 1, 1, 3)
    panel.patch_spin = QDoubleSpinBox()
    panel.patch_spin.setRange(1.0, 500.0)
    panel.patch_spin.setValue(16.0)
    panel.patch_spin.setSuffix(" mm")
    panel.patch_dims_combo = QComboBox()
    panel.patch_dims_combo.addItem("2D patches", 2)
    panel.patch_dims_combo.addItem("3D patches", 3)
    panel.region_epochs = QSpinBox()
    panel.region_epochs.setRange(1, 200)
    panel.region_epochs.setValue(10)
    panel.region_epochs.setToolTip("Epochs of patch-classifier training.")
    g.addWidget(QLabel("Patch:"), 1, 0)
    g.addWidget(panel.patch_spin, 1, 1)
    g.addWidget(panel.patch_dims_combo, 1, 2, 1, 2)
    g.addWidget(QLabel("Epochs:"), 2, 0)
    g.addWidget(panel.region_epochs, 2, 1)
    panel.region_button = QPushButton("Train && map")
    panel.region_button.setToolTip(
        "Train the patch classifier on the painted regions (continuing from "
        "the previous one) and show its class-probability map."
    )
    panel.to_labels_button = QPushButton("Map → Labels")
    panel.to_labels_button.setToolTip(
        "Copy the predicted classes into a Labels layer to correct and retrain."
    )
    g.addWidget(panel.region_button, 3, 0, 1, 2)
    g.addWidget(panel.to_labels_button, 3, 2, 1, 2)
    layout.addWidget(box)

    # -- job status ----------------------------------------------------------
    panel.progress = QProgressBar()
    panel.progress.setRange(0, 1)
    panel.progress.setValue(0)
    panel.cancel_button = QPushButton("Cancel")
    layout.addLayout(_row(panel.progress, panel.cancel_button))
    panel.status = QLabel("")
    panel.status.setWordWrap(True)
    layout.addWidget(panel.status)
    layout.addStretch(1)


def set_class_buttons(panel: Any, classes: Sequence[str], on_click) -> None:
    """Rebuild the class buttons: ``k. name`` for the first nine classes."""
    for b in panel.class_buttons:
        panel.class_grid.removeWidget(b)
        b.deleteLater()
    panel.class_buttons = []
    for i, name in enumerate(classes):
        text = f"{i + 1}. {name}" if i < 9 else name
        b = QPushButton(text)
        b.setToolTip(
            f"Label the chosen target as '{name}'"
            + (f" (key {i + 1})" if i < 9 else "")
        )
        b.clicked.connect(lambda _=False, n=name: on_click(n))
        panel.class_grid.addWidget(b, i // 3, i % 3)
        panel.class_buttons.append(b)
