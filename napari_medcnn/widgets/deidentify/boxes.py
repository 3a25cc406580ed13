"""Group boxes of the De-identify dock widget: the scans and the profile.

* :class:`ScansBox`: the scans (an image layer read from DICOM, or a
  folder) and the export folder.
* :class:`ProfileBox`: one check box per option of the PS3.15 Annex E
  Basic Profile (``DeidOptions`` fields).
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QWidget,
)

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


class ScansBox(QGroupBox):
    """Where the scans come from, and where the copies go.

    Attributes:
        source_group, layer_radio, folder_radio: an image layer or a folder.
        layer_combo: image layers read from DICOM files.
        folder_edit, folder_browse: a folder with DICOM files.
        out_edit, out_browse: the export folder.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Scans", parent)
        self.source_group = QButtonGroup(self)
        self.layer_radio = QRadioButton("Image layer")
        self.folder_radio = QRadioButton("Folder")
        self.source_group.addButton(self.layer_radio, 0)
        self.source_group.addButton(self.folder_radio, 1)
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("Image layers read from DICOM files")
        self.folder_edit = QLineEdit()
        self.folder_edit.setPlaceholderText("Folder with DICOM files")
        self.folder_browse = QPushButton("Browse…")
        self.out_edit = QLineEdit()
        self.out_edit.setPlaceholderText("Export folder (separate from the inputs)")
        self.out_browse = QPushButton("Browse…")
        grid = QGridLayout(self)
        grid.addWidget(self.layer_radio, 0, 0)
        grid.addWidget(self.layer_combo, 0, 1, 1, 2)
        grid.addWidget(self.folder_radio, 1, 0)
        grid.addWidget(self.folder_edit, 1, 1)
        grid.addWidget(self.folder_browse, 1, 2)
        grid.addWidget(QLabel("Export to"), 2, 0)
        grid.addWidget(self.out_edit, 2, 1)
        grid.addWidget(self.out_browse, 2, 2)


class ProfileBox(QGroupBox):
    """The profile options (:data:`OPTION_BOXES`), two per row.

    Attributes:
        option_boxes: ``DeidOptions`` field -> ``QCheckBox`` ("Keep safe
            private tags" ticked).
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Profile options (PS3.15 Annex E Basic Profile)", parent)
        self.option_boxes: dict[str, QCheckBox] = {}
        grid = QGridLayout(self)
        for i, (name, (text, tip)) in enumerate(OPTION_BOXES.items()):
            box = QCheckBox(text)
            box.setToolTip(tip)
            self.option_boxes[name] = box
            grid.addWidget(box, i // 2, i % 2)
        self.option_boxes["retain_safe_private"].setChecked(True)
