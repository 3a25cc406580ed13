"""Group boxes of the Fine-tune widget: model, training options, augmentation.

Each box makes and lays out its own fields; the panel keeps them as its
attributes and reads them (:mod:`.settings`).

* :class:`ModelBox`: the parent to start from and where to save.
* :class:`TrainingBox`: epochs, frozen-backbone epochs, batch size, class
  balance, validation split and where training runs.
* :class:`AugmentBox`: one switch per augmentation and "Preview".
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_medcnn.training.data.augment import STRENGTH

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
#: what a volume-labelled run trains (keys: ``training.transfer.VOLUME_ARCHS``
#: plus ``slice``, the parent's 2D architecture)
ARCHS = {
    "slice": "2D slices (the parent's network)",
    "cnn_rnn": "CNN+RNN (reads the slices in order)",
    "slice_pool": "Slice pool (order-blind baseline)",
    "resnet3d": "3D ResNet",
    "densenet3d": "3D DenseNet",
}
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


def combo_box(items: dict[str, str]) -> QComboBox:
    """A combo box of ``items`` (key -> text); the keys are the item data."""
    combo = QComboBox()
    for key, text in items.items():
        combo.addItem(text, key)
    return combo


def spin_box(lo: int, hi: int, value: int) -> QSpinBox:
    """A ``QSpinBox`` from ``lo`` to ``hi`` at ``value``."""
    spin = QSpinBox()
    spin.setRange(lo, hi)
    spin.setValue(value)
    return spin


def hbox(*widgets: QWidget, stretch: int | None = None) -> QHBoxLayout:
    """A row of ``widgets``; ``stretch=0``: the first one takes the room."""
    row = QHBoxLayout()
    for i, w in enumerate(widgets):
        row.addWidget(w, 1 if i == 0 and stretch == 0 else 0)
    return row


class ModelBox(QGroupBox):
    """The parent model and the output checkpoint.

    Attributes:
        parent_combo: ``default``, ``current``, ``file`` or ``scratch``.
        parent_edit, parent_browse: the parent checkpoint file (``file``).
        out_edit, out_browse: where the new checkpoint is written.
        arch_combo, slices_spin: with volume labels, what to train (keys of
            ``ARCHS``; a CNN+RNN's slice encoder starts from the parent) and
            the slices per prepared volume; hidden otherwise.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Model", parent)
        self.parent_combo = combo_box(PARENTS)
        self.parent_edit = QLineEdit()
        self.parent_edit.setPlaceholderText("parent checkpoint (.safetensors)")
        self.parent_browse = QPushButton("…")
        self.out_edit = QLineEdit(
            str(Path.home() / "napari-medcnn" / "finetuned.safetensors")
        )
        self.out_browse = QPushButton("…")
        self.arch_combo = combo_box(ARCHS)
        self.arch_combo.setCurrentIndex(self.arch_combo.findData("cnn_rnn"))
        self.arch_combo.setToolTip(
            "Volume labels train a volume model: a CNN+RNN reads the slices in "
            "order (its slice encoder starts from the parent), a slice pool "
            "ignores their order, a 3D CNN learns from scratch."
        )
        self.slices_spin = spin_box(2, 512, 32)
        self.slices_spin.setToolTip("Slices of each prepared volume.")
        form = QFormLayout(self)
        self._form = form
        form.addRow("Start from:", self.parent_combo)
        form.addRow("Parent file:", hbox(self.parent_edit, self.parent_browse))
        form.addRow("Architecture:", self.arch_combo)
        form.addRow("Slices:", self.slices_spin)
        form.addRow("Save as:", hbox(self.out_edit, self.out_browse))
        self.show_volume_options(False)

    def show_volume_options(self, show: bool) -> None:
        """Show the architecture and slice-count rows (volume labels)."""
        self._form.setRowVisible(self.arch_combo, show)
        self._form.setRowVisible(self.slices_spin, show)

    def volume_arch(self) -> str | None:
        """The chosen volume architecture, None for 2D or when hidden."""
        if self.arch_combo.isHidden():
            return None
        key = self.arch_combo.currentData()
        return None if key == "slice" else key


class TrainingBox(QGroupBox):
    """How to train.

    Attributes:
        epochs_spin, freeze_spin, batch_spin: epochs, epochs that train only
            the class head, batch size.
        balance_combo, split_combo, mode_combo: class balance, validation
            split and where training runs (keys of ``BALANCE``, ``SPLITS``,
            ``MODES``).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Training", parent)
        self.epochs_spin = spin_box(1, 1000, 20)
        self.freeze_spin = spin_box(0, 1000, 0)
        self.freeze_spin.setToolTip("Train only the class head for these first epochs.")
        self.batch_spin = spin_box(1, 1024, 32)
        self.balance_combo = combo_box(BALANCE)
        self.split_combo = combo_box(SPLITS)
        self.split_combo.setToolTip(
            "Validation split by patient/study when the scans have one; k-fold "
            "cross-validation when there are few labels."
        )
        self.mode_combo = combo_box(MODES)
        self.mode_combo.setToolTip(
            "Where training runs: a worker thread of napari, or a separate process "
            "(never competes with napari for Python's GIL). Both leave one CPU "
            "core for napari."
        )
        form = QFormLayout(self)
        form.addRow("Epochs:", self.epochs_spin)
        form.addRow("Freeze backbone:", self.freeze_spin)
        form.addRow("Batch size:", self.batch_spin)
        form.addRow("Balance:", self.balance_combo)
        form.addRow("Validation:", self.split_combo)
        form.addRow("Run in:", self.mode_combo)


class AugmentBox(QGroupBox):
    """One check box per augmentation (``AUGMENT``), and "Preview".

    Attributes:
        augment_checks: augmentation name -> ``QCheckBox``.
        preview_button: show augmented copies of a labelled example.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Augmentation", parent)
        grid = QGridLayout(self)
        self.augment_checks: dict[str, QCheckBox] = {}
        for i, key in enumerate(AUGMENT):
            check = QCheckBox(key)
            check.setToolTip(AUGMENT_TIPS[key])
            self.augment_checks[key] = check
            grid.addWidget(check, i // 4, i % 4)
        self.preview_button = QPushButton("Preview augmentation")
        self.preview_button.setToolTip(
            "Show nine augmented copies of a labelled example as a napari layer."
        )
        grid.addWidget(self.preview_button, (len(AUGMENT) + 3) // 4, 0, 1, 4)

    def config(self) -> dict[str, bool]:
        """Augmentation name -> on."""
        return {k: c.isChecked() for k, c in self.augment_checks.items()}

    def set_defaults(self, modality: str | None) -> None:
        """Tick the default augmentations for ``modality`` (None: any)."""
        from napari_medcnn.training.data.augment import default_config

        for key, on in default_config(modality).items():
            if key in self.augment_checks:
                self.augment_checks[key].setChecked(on)
