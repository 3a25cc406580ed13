"""Child widgets, layout and file dialogs of the Classify dock widget."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QWidget

from napari_medcnn.widgets._model_panel import (
    add_model_controls,
    build_model_controls,
    build_run_controls,
    build_scope_buttons,
    scrolled_layout,
)
from napari_medcnn.widgets._plots import PlotColors, ProbabilityBars, SliceCurve

#: scope key -> radio-button text, in display order.
SCOPES = {"slice": "Current slice", "slices": "Every slice", "volume": "Whole volume"}


def build_ui(w: QWidget, colors: PlotColors) -> None:
    """Create the panel's child widgets as attributes of ``w`` and lay them
    out: layers and channel order, model, scope, run/cancel/progress, status,
    summary, probability bars, per-slice curve, export buttons."""
    grid, model_row = build_model_controls(w)
    scope_row = build_scope_buttons(w, SCOPES)
    scope_row.insertWidget(0, QLabel("Scope:"))
    run_row = build_run_controls(w)
    w.summary = QLabel("")
    w.summary.setWordWrap(True)
    w.summary.setTextFormat(Qt.TextFormat.RichText)
    w.bars = ProbabilityBars(colors)
    w.curve = SliceCurve(colors)
    w.curve.setVisible(False)
    w.csv_button = QPushButton("Export CSV…")
    w.json_button = QPushButton("Export JSON…")
    export_row = QHBoxLayout()
    export_row.addStretch(1)
    export_row.addWidget(w.csv_button)
    export_row.addWidget(w.json_button)
    layout = scrolled_layout(w)
    add_model_controls(layout, w, grid, model_row)
    layout.addLayout(scope_row)
    layout.addLayout(run_row)
    layout.addWidget(w.status)
    layout.addWidget(w.summary)
    layout.addWidget(w.bars)
    layout.addWidget(w.curve, 10)
    layout.addLayout(export_row)
    layout.addStretch(1)  # takes the room the hidden curve leaves


def ask_export_path(parent: QWidget, name: str, fmt: str) -> tuple[str, bool] | None:
    """Ask where to export (``fmt`` is ``csv`` or ``json``); None when
    cancelled.  The suffix is added when the user left it out.

    Returns:
        (path, confirmed): ``confirmed`` is True when the dialog itself
        chose ``path``, so the user confirmed replacing it if it exists
        (not when the suffix was added afterwards).
    """
    stem = "".join(c if c.isalnum() else "_" for c in name)
    default = f"{stem or 'classification'}_classification.{fmt}"
    filt = "CSV (*.csv)" if fmt == "csv" else "JSON (*.json)"
    path, _ = QFileDialog.getSaveFileName(
        parent, "Export classification", default, filt
    )
    if not path:
        return None
    if path.lower().endswith(f".{fmt}"):
        return path, True
    return f"{path}.{fmt}", False
