"""Group boxes of the labelling widget: classes, target, region labels.

Each box makes and lays out its own fields; the panel keeps them as its
attributes and wires them to its behaviour.

* :class:`ClassBox`: the class names and one button per class
  (:meth:`ClassBox.show_classes`), emitting ``label_clicked(name)``.
* :class:`TargetBox`: what a class button or key labels (the current
  slice, a slice range, the whole image / volume) and "Remove label".
* :class:`RegionBox`: the painted Labels layer, patch settings and the
  "Train & map" / "Map → Labels" buttons.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
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


def hbox(*widgets: QWidget) -> QHBoxLayout:
    """A row of ``widgets``."""
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


class ClassBox(QGroupBox):
    """Class names (comma separated, "Set", "From model") and class buttons.

    Signals:
        label_clicked: the name of the class whose button was clicked.

    Attributes:
        classes_edit, classes_button, from_model_button: the names, and
            the buttons that apply them or take the model's.
        buttons: ``k. name`` buttons for the first nine classes (keys 1–9),
            the name alone after those.
    """

    label_clicked = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Classes (keys 1–9)", parent)
        self.classes_edit = QLineEdit()
        self.classes_edit.setPlaceholderText("e.g. normal, lesion")
        self.classes_edit.setToolTip(
            "Class names separated by commas; the first is key 1, the second key 2…"
        )
        self.classes_button = QPushButton("Set")
        self.from_model_button = QPushButton("From model")
        self.from_model_button.setToolTip(
            "Use the classes of the current model (Classify widget, else the default)."
        )
        self.grid = QGridLayout()
        self.buttons: list[QPushButton] = []
        v = QVBoxLayout(self)
        v.addLayout(
            hbox(self.classes_edit, self.classes_button, self.from_model_button)
        )
        v.addLayout(self.grid)

    def show_classes(self, classes: Sequence[str]) -> None:
        """Rebuild the class buttons: ``k. name`` for the first nine classes."""
        for b in self.buttons:
            self.grid.removeWidget(b)
            b.deleteLater()
        self.buttons = []
        for i, name in enumerate(classes):
            text = f"{i + 1}. {name}" if i < 9 else name
            b = QPushButton(text)
            b.setToolTip(
                f"Label the chosen target as '{name}'"
                + (f" (key {i + 1})" if i < 9 else "")
            )
            b.clicked.connect(lambda _=False, n=name: self.label_clicked.emit(n))
            self.grid.addWidget(b, i // 3, i % 3)
            self.buttons.append(b)


class TargetBox(QGroupBox):
    """What a class button or key 1–9 labels, and "Remove label".

    Attributes:
        target_combo: ``slice``, ``range`` or ``whole`` (item data).
        range_from, range_to, from_here_button, to_here_button: the slice
            range and the buttons that set its ends to the current slice.
        unlabel_button: remove the label of the current target.
        mask_button: "Draw lesion mask" (volumes).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Label", parent)
        self.target_combo = QComboBox()
        for key, text in TARGETS.items():
            self.target_combo.addItem(text, key)
        self.target_combo.setToolTip(
            "What a class button or key 1–9 labels: the slice napari shows, the "
            "slice range below, or the whole 2D image / 3D volume."
        )
        self.range_from = QSpinBox()
        self.range_to = QSpinBox()
        self.from_here_button = QPushButton("From here")
        self.to_here_button = QPushButton("To here")
        self.unlabel_button = QPushButton("Remove label")
        self.unlabel_button.setToolTip(
            "Remove the label of the current target (0 key)."
        )
        self.mask_button = QPushButton("Draw lesion mask")
        self.mask_button.setToolTip(
            "Paint where the finding is in this volume (a Labels layer on its "
            "grid, saved beside the labels). A CNN+RNN trained in Fine-tune "
            "learns from the masks where findings are, which volume labels "
            "alone cannot teach from a few dozen scans."
        )
        g = QGridLayout(self)
        g.addWidget(QLabel("Apply to:"), 0, 0)
        g.addWidget(self.target_combo, 0, 1, 1, 3)
        g.addWidget(QLabel("Slices:"), 1, 0)
        g.addWidget(self.range_from, 1, 1)
        g.addWidget(self.from_here_button, 1, 2)
        g.addWidget(self.range_to, 2, 1)
        g.addWidget(self.to_here_button, 2, 2)
        g.addWidget(self.unlabel_button, 1, 3, 2, 1)
        g.addWidget(self.mask_button, 3, 0, 1, 4)


class RegionBox(QGroupBox):
    """Region labels: a painted Labels layer -> a probability map.

    Attributes:
        labels_combo: the Labels layers (value 1 = first class...).
        patch_spin, patch_dims_combo, region_epochs: patch size (mm), 2D or
            3D patches, training epochs.
        region_button, to_labels_button: "Train & map" and "Map → Labels".
        seg_button: "Export SEG…" (the probability map as a FRACTIONAL
            DICOM SEG, else the Labels layer as a BINARY one).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Region labels → probability map", parent)
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip(
            "A Labels layer painted on the scan: value 1 is the first class, 2 "
            "the second… (0 = unlabelled)."
        )
        self.patch_spin = QDoubleSpinBox()
        self.patch_spin.setRange(1.0, 500.0)
        self.patch_spin.setValue(16.0)
        self.patch_spin.setSuffix(" mm")
        self.patch_dims_combo = QComboBox()
        self.patch_dims_combo.addItem("2D patches", 2)
        self.patch_dims_combo.addItem("3D patches", 3)
        self.region_epochs = QSpinBox()
        self.region_epochs.setRange(1, 200)
        self.region_epochs.setValue(10)
        self.region_epochs.setToolTip("Epochs of patch-classifier training.")
        self.region_button = QPushButton("Train && map")
        self.region_button.setToolTip(
            "Train the patch classifier on the painted regions (continuing from "
            "the previous one) and show its class-probability map."
        )
        self.to_labels_button = QPushButton("Map → Labels")
        self.to_labels_button.setToolTip(
            "Copy the predicted classes into a Labels layer to correct and retrain."
        )
        self.seg_button = QPushButton("Export SEG…")
        self.seg_button.setToolTip(
            "Save the probability map (one segment per class, FRACTIONAL), or "
            "without one the Labels layer (BINARY), as a DICOM Segmentation of "
            "the scan's series (DICOM scans only)."
        )
        g = QGridLayout(self)
        g.addWidget(QLabel("Labels layer:"), 0, 0)
        g.addWidget(self.labels_combo, 0, 1, 1, 3)
        g.addWidget(QLabel("Patch:"), 1, 0)
        g.addWidget(self.patch_spin, 1, 1)
        g.addWidget(self.patch_dims_combo, 1, 2, 1, 2)
        g.addWidget(QLabel("Epochs:"), 2, 0)
        g.addWidget(self.region_epochs, 2, 1)
        g.addWidget(self.region_button, 3, 0, 1, 2)
        g.addWidget(self.to_labels_button, 3, 2, 1, 2)
        g.addWidget(self.seg_button, 4, 2, 1, 2)

    def fill_labels(self, labels: list[Any]) -> None:
        """Offer the Labels layers ``labels``, keeping the chosen one."""
        current = self.labels_combo.currentData()
        self.labels_combo.blockSignals(True)
        self.labels_combo.clear()
        for lay in labels:  # "Map → Labels" output included: correct, retrain
            self.labels_combo.addItem(str(lay.name), lay)
        for i in range(self.labels_combo.count()):
            if self.labels_combo.itemData(i) == current:
                self.labels_combo.setCurrentIndex(i)
        self.labels_combo.blockSignals(False)
