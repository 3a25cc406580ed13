"""Child widgets, layout and file dialogs of the Classify dock widget."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ._channels import ChannelList
from ._plots import PlotColors, ProbabilityBars, SliceCurve

#: scope key -> radio-button text, in display order.
SCOPES = {"slice": "Current slice", "slices": "Every slice", "volume": "Whole volume"}
MODEL_FILTER = "Model checkpoints (*.safetensors *.pt *.pth *.json)"


def build_ui(w: QWidget, colors: PlotColors) -> None:
    """Create the panel's child widgets as attributes of ``w`` and lay them
    out: layers and channel order, model, scope, run/cancel/progress, status,
    summary, probability bars, per-slice curve, export buttons."""
    w.channels = ChannelList()
    w.up_button = QPushButton("Up")
    w.down_button = QPushButton("Down")
    w.channel_label = QLabel()
    w.channel_label.setWordWrap(True)
    w.model_label = QLabel("No model loaded.")
    w.model_label.setWordWrap(True)
    w.default_button = QPushButton("Default model")
    w.browse_button = QPushButton("Model file…")
    w.scope_group = QButtonGroup(w)
    w.scope_buttons = {k: QRadioButton(t) for k, t in SCOPES.items()}
    for i, button in enumerate(w.scope_buttons.values()):
        w.scope_group.addButton(button, i)
    w.scope_buttons["slice"].setChecked(True)
    w.run_button = QPushButton("Run")
    w.cancel_button = QPushButton("Cancel")
    w.cancel_button.setEnabled(False)
    w.progress = QProgressBar()
    w.progress.setValue(0)
    w.status = QLabel("")
    w.status.setWordWrap(True)
    w.summary = QLabel("")
    w.summary.setWordWrap(True)
    w.summary.setTextFormat(Qt.TextFormat.RichText)
    w.bars = ProbabilityBars(colors)
    w.curve = SliceCurve(colors)
    w.curve.setVisible(False)
    w.csv_button = QPushButton("Export CSV…")
    w.json_button = QPushButton("Export JSON…")
    grid = QGridLayout()
    grid.addWidget(QLabel("<b>Image layers</b> (ticked, in channel order)"), 0, 0)
    grid.addWidget(w.channels, 1, 0, 2, 1)
    grid.addWidget(w.up_button, 1, 1)
    grid.addWidget(w.down_button, 2, 1)
    w.channels.setMaximumHeight(3 * w.fontMetrics().height() + 16)
    model_row = QHBoxLayout()
    model_row.addWidget(QLabel("<b>Model</b>"))
    model_row.addStretch(1)
    model_row.addWidget(w.default_button)
    model_row.addWidget(w.browse_button)
    scope_row = QHBoxLayout()
    scope_row.addWidget(QLabel("Scope:"))
    for button in w.scope_buttons.values():
        scope_row.addWidget(button)
    scope_row.addStretch(1)
    run_row = QHBoxLayout()
    run_row.addWidget(w.run_button)
    run_row.addWidget(w.cancel_button)
    run_row.addWidget(w.progress, 1)
    export_row = QHBoxLayout()
    export_row.addStretch(1)
    export_row.addWidget(w.csv_button)
    export_row.addWidget(w.json_button)
    # a scroll area: on a short screen the panel scrolls instead of making
    # napari's window taller than the screen or squashing the plots
    inner = QWidget()
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(inner)
    outer = QVBoxLayout(w)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    layout = QVBoxLayout(inner)
    layout.addLayout(grid)
    layout.addWidget(w.channel_label)
    layout.addLayout(model_row)
    layout.addWidget(w.model_label)
    layout.addLayout(scope_row)
    layout.addLayout(run_row)
    layout.addWidget(w.status)
    layout.addWidget(w.summary)
    layout.addWidget(w.bars)
    layout.addWidget(w.curve, 10)
    layout.addLayout(export_row)
    layout.addStretch(1)  # takes the room the hidden curve leaves


def ask_model_path(parent: QWidget, start: str) -> str | None:
    """Ask for a checkpoint file; None when cancelled."""
    path, _ = QFileDialog.getOpenFileName(
        parent, "Model checkpoint", start, MODEL_FILTER
    )
    return path or None


def ask_export_path(parent: QWidget, name: str, fmt: str) -> str | None:
    """Ask where to export (``fmt`` is ``csv`` or ``json``); None when
    cancelled.  The suffix is added when the user left it out."""
    stem = "".join(c if c.isalnum() else "_" for c in name)
    default = f"{stem or 'classification'}_classification.{fmt}"
    filt = "CSV (*.csv)" if fmt == "csv" else "JSON (*.json)"
    path, _ = QFileDialog.getSaveFileName(
        parent, "Export classification", default, filt
    )
    if not path:
        return None
    return path if path.lower().endswith(f".{fmt}") else f"{path}.{fmt}"
