"""Child widgets and layout of the De-identify dock widget, and the helper
that turns a Shapes layer into pixel rectangles to blank."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from napari_medcnn.widgets._jobs import build_progress_controls

#: option field of DeidOptions -> (checkbox text, tooltip).
OPTION_BOXES: dict[str, tuple[str, str]] = {
    "retain_dates_shifted": (
        "Shift dates (keep intervals)",
        "Retain Longitudinal Temporal Information with Modified Dates: every "
        "date of a patient moves back by the same 1-10 years (from the key); "
        "times of day are kept.",
    ),
    "retain_patient_characteristics": (
        "Keep patient characteristics",
        "Keep age, sex, size (m), weight (kg), ethnic group, smoking and "
        "pregnancy status.",
    ),
    "retain_device_identity": (
        "Keep device identity",
        "Keep device serial numbers, station names and detector IDs.",
    ),
    "retain_institution_identity": (
        "Keep institution",
        "Keep institution name, address and department.",
    ),
    "clean_descriptors": (
        "Clean descriptors",
        "Keep series/study descriptions, protocol names and comments with "
        "names, IDs, dates and long numbers redacted (otherwise removed).",
    ),
    "retain_uids": ("Keep UIDs", "Keep the original UIDs (off: keyed new UIDs)."),
    "retain_safe_private": (
        "Keep safe private tags",
        "Keep safe-listed private attributes (diffusion b-values and "
        "directions, Philips scaling); all other private tags are removed.",
    ),
}
NO_SHAPES = "(no blanking)"


def build_ui(w: QWidget) -> None:
    """Create the panel's child widgets as attributes of ``w`` and lay them
    out: source, output, options, blanking, key and manifest, actions,
    progress, status and the dry-run summary."""
    w.source_group = QButtonGroup(w)
    w.layer_radio = QRadioButton("Image layer")
    w.folder_radio = QRadioButton("Folder")
    w.source_group.addButton(w.layer_radio, 0)
    w.source_group.addButton(w.folder_radio, 1)
    w.layer_combo = QComboBox()
    w.layer_combo.setToolTip("Image layers read from DICOM files")
    w.folder_edit = QLineEdit()
    w.folder_edit.setPlaceholderText("Folder with DICOM files")
    w.folder_browse = QPushButton("Browse…")
    w.out_edit = QLineEdit()
    w.out_edit.setPlaceholderText("Export folder (separate from the inputs)")
    w.out_browse = QPushButton("Browse…")
    w.option_boxes = {}
    for name, (text, tip) in OPTION_BOXES.items():
        box = QCheckBox(text)
        box.setToolTip(tip)
        w.option_boxes[name] = box
    w.option_boxes["retain_safe_private"].setChecked(True)
    w.shapes_combo = QComboBox()
    w.shapes_combo.setToolTip(
        "Rectangles of this Shapes layer (drawn over the image) are set to "
        "black in every frame: Clean Pixel Data."
    )
    w.key_edit = QLineEdit()
    w.key_edit.setPlaceholderText("none: one-off key, new UIDs every export")
    w.key_edit.setToolTip(
        "Project key file: the same key gives the same UIDs, pseudonyms and "
        "date shifts in every export. Created if missing. Keep it private."
    )
    w.key_browse = QPushButton("Browse…")
    w.manifest_edit = QLineEdit()
    w.manifest_edit.setPlaceholderText("none: no original -> new mapping")
    w.manifest_edit.setToolTip(
        "Where to write the mapping from original to new identifiers (JSON, or "
        "CSV for .csv). It re-identifies the export: keep it apart."
    )
    w.manifest_browse = QPushButton("Browse…")
    w.preview_button = QPushButton("Preview (dry run)")
    w.export_button = QPushButton("Export")
    build_progress_controls(w, "Choose the scans and an export folder.")
    w.summary = QPlainTextEdit()
    w.summary.setReadOnly(True)
    w.summary.setPlaceholderText("The dry-run summary (tags and actions) appears here.")

    source = QGroupBox("Scans")
    grid = QGridLayout(source)
    grid.addWidget(w.layer_radio, 0, 0)
    grid.addWidget(w.layer_combo, 0, 1, 1, 2)
    grid.addWidget(w.folder_radio, 1, 0)
    grid.addWidget(w.folder_edit, 1, 1)
    grid.addWidget(w.folder_browse, 1, 2)
    grid.addWidget(QLabel("Export to"), 2, 0)
    grid.addWidget(w.out_edit, 2, 1)
    grid.addWidget(w.out_browse, 2, 2)
    options = QGroupBox("Profile options (PS3.15 Annex E Basic Profile)")
    ogrid = QGridLayout(options)
    for i, box in enumerate(w.option_boxes.values()):
        ogrid.addWidget(box, i // 2, i % 2)
    extra = QGridLayout()
    extra.addWidget(QLabel("Blank"), 0, 0)
    extra.addWidget(w.shapes_combo, 0, 1, 1, 2)
    extra.addWidget(QLabel("Key file"), 1, 0)
    extra.addWidget(w.key_edit, 1, 1)
    extra.addWidget(w.key_browse, 1, 2)
    extra.addWidget(QLabel("Manifest"), 2, 0)
    extra.addWidget(w.manifest_edit, 2, 1)
    extra.addWidget(w.manifest_browse, 2, 2)
    buttons = QHBoxLayout()
    buttons.addWidget(w.preview_button)
    buttons.addWidget(w.export_button)
    buttons.addWidget(w.cancel_button)
    layout = QVBoxLayout(w)
    layout.addWidget(source)
    layout.addWidget(options)
    layout.addLayout(extra)
    layout.addLayout(buttons)
    layout.addWidget(w.progress)
    layout.addWidget(w.status)
    layout.addWidget(w.summary, 1)


def shapes_to_rects(shapes: Any, image: Any | None) -> tuple[tuple[int, ...], ...]:
    """Bounding boxes of a Shapes layer's shapes as ``(x, y, width, height)``
    pixel rectangles of ``image`` (via world coordinates, so scale and
    translate are honoured); without an image, the shapes' own last two
    coordinates are taken as (row, column) pixels."""
    rects = []
    for verts in shapes.data:
        pts = np.asarray(verts, dtype=float)
        if image is not None:
            world = np.array([shapes.data_to_world(p) for p in pts])
            pts = np.array([image.world_to_data(p) for p in world])
        rows, cols = pts[:, -2], pts[:, -1]
        y0, x0 = int(np.floor(rows.min() + 0.5)), int(np.floor(cols.min() + 0.5))
        y1, x1 = int(np.floor(rows.max() + 0.5)), int(np.floor(cols.max() + 0.5))
        if y1 > y0 and x1 > x0:
            rects.append((x0, y0, x1 - x0, y1 - y0))
    return tuple(rects)
