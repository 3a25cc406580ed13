"""Qt building blocks several panels lay out alike.

* :class:`RunControls`: the panel's action buttons, Cancel, a progress bar
  and a status line: the controls a
  :class:`~napari_medcnn.widgets._common.jobs.WorkerPanel` drives.
* :func:`scrolled_layout`: a vertical scroll area filling a panel, so a tall
  panel scrolls on a short screen.
* :func:`select_table_rows` / :func:`selected_table_rows`: set and read the
  selected rows of a row-selecting table.
"""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)


class RunControls(QWidget):
    """Action buttons, Cancel and a progress bar, with a status line below.

    Args:
        actions: texts of the action buttons (``buttons``, in order), left of
            Cancel.  Without any, the row is the progress bar then Cancel.
        status: the status line's first text.
        progress_below: put the progress bar on its own line under the
            buttons instead of at the end of their row.

    Attributes:
        buttons: the action buttons, in the order of ``actions``.
        cancel_button: disabled until a job runs.
        progress: the progress bar, at 0.
        status: a word-wrapped label.
    """

    def __init__(
        self,
        actions: Sequence[str] = ("Run",),
        status: str = "",
        progress_below: bool = False,
        parent: QWidget | None = None,
    ):
        super().__init__(parent)
        self.buttons = [QPushButton(text) for text in actions]
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setValue(0)
        self.status = QLabel(status)
        self.status.setWordWrap(True)

        row = QHBoxLayout()
        if not self.buttons and not progress_below:
            row.addWidget(self.progress, 1)
            row.addWidget(self.cancel_button)
        else:
            for button in self.buttons:
                row.addWidget(button)
            row.addWidget(self.cancel_button)
            if not progress_below:
                row.addWidget(self.progress, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        if progress_below:
            layout.addWidget(self.progress)
        layout.addWidget(self.status)

    @property
    def run_button(self) -> QPushButton:
        """The first action button."""
        return self.buttons[0]


def scrolled_layout(w: QWidget) -> QVBoxLayout:
    """Put a vertical scroll area in ``w`` and return its content's layout.

    On a short screen the panel scrolls instead of making napari's window
    taller than the screen or squashing the plots.
    """
    inner = QWidget()
    scroll = QScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(inner)
    outer = QVBoxLayout(w)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    return QVBoxLayout(inner)


def select_table_rows(table: QTableWidget, rows: Sequence[int]) -> None:
    """Select ``rows`` of ``table`` (as a user would), replacing the
    selection, whatever the table's own selection mode."""
    table.clearSelection()
    mode = table.selectionMode()
    table.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
    for r in rows:
        table.selectRow(r)
    table.setSelectionMode(mode)


def selected_table_rows(table: QTableWidget) -> list[int]:
    """Indices of the selected rows of ``table``, ascending."""
    return sorted({i.row() for i in table.selectionModel().selectedRows()})
