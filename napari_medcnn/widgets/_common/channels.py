"""The Classify and Saliency widgets' list of image layers: ticked layers are
the channels.

The order of the ticked layers in the list is the channel order the model
receives; the user reorders them by dragging or with the Up / Down buttons
(:meth:`ChannelList.move_current`).  Layers are held as item data and
compared with ``==`` (the viewer may hand out ``PublicOnlyProxy`` wrappers,
for which ``is`` fails).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QAbstractItemView, QListWidget, QListWidgetItem

from napari_medcnn.widgets._common.layers import contains

_LAYER_ROLE = Qt.ItemDataRole.UserRole


class ChannelList(QListWidget):
    """Checkable, reorderable list of image layers.

    Signals:
        channels_changed: a tick or the order of the items changed.
    """

    channels_changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDragDropMode(QAbstractItemView.DragDropMode.InternalMove)
        self.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setToolTip(
            "Tick the image layer(s) to classify. With several layers, their "
            "order here is the channel order the model receives: drag to "
            "reorder, or use Up / Down."
        )
        self.itemChanged.connect(self._emit)
        self.model().rowsMoved.connect(self._emit)

    # -- queries -----------------------------------------------------------
    def layers(self) -> list[Any]:
        """Every listed layer, in list order."""
        return [self.item(r).data(_LAYER_ROLE) for r in range(self.count())]

    def checked(self) -> list[Any]:
        """The ticked layers, in list order (= channel order)."""
        out = []
        for r in range(self.count()):
            item = self.item(r)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(item.data(_LAYER_ROLE))
        return out

    # -- changes -----------------------------------------------------------
    def sync(self, layers: Sequence[Any]) -> None:
        """Show ``layers`` (image layers of the viewer): keep the order and
        ticks of those already listed, drop removed ones, append new ones
        unticked, and refresh names."""
        kept = [(lay, chk) for lay, chk in self._entries() if contains(layers, lay)]
        new = [
            (lay, False) for lay in layers if not contains([k for k, _ in kept], lay)
        ]
        self._fill(kept + new)

    def set_checked(self, layers: Sequence[Any]) -> None:
        """Tick exactly ``layers``, moved to the top in the given order."""
        rest = [lay for lay in self.layers() if not contains(layers, lay)]
        listed = [lay for lay in layers if contains(self.layers(), lay)]
        self._fill([(lay, True) for lay in listed] + [(lay, False) for lay in rest])

    def move_current(self, delta: int) -> None:
        """Move the selected item up (``-1``) or down (``+1``)."""
        row = self.currentRow()
        dest = row + delta
        if row < 0 or not 0 <= dest < self.count():
            return
        entries = self._entries()
        entries.insert(dest, entries.pop(row))
        self._fill(entries)
        self.setCurrentRow(dest)

    # -- internals ---------------------------------------------------------
    def _is_checked(self, row: int) -> bool:
        return self.item(row).checkState() == Qt.CheckState.Checked

    def _fill(self, entries: Sequence[tuple[Any, bool]]) -> None:
        before = [(lay.name, chk) for lay, chk in self._entries()]
        self.blockSignals(True)
        try:
            self.clear()
            for layer, checked in entries:
                item = QListWidgetItem(str(layer.name))
                item.setData(_LAYER_ROLE, layer)
                item.setFlags(
                    Qt.ItemFlag.ItemIsEnabled
                    | Qt.ItemFlag.ItemIsSelectable
                    | Qt.ItemFlag.ItemIsUserCheckable
                    | Qt.ItemFlag.ItemIsDragEnabled
                )
                item.setCheckState(
                    Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked
                )
                self.addItem(item)
        finally:
            self.blockSignals(False)
        if [(lay.name, chk) for lay, chk in entries] != before:
            self.channels_changed.emit()

    def _entries(self) -> list[tuple[Any, bool]]:
        return [
            (self.item(r).data(_LAYER_ROLE), self._is_checked(r))
            for r in range(self.count())
        ]

    def _emit(self, *_args) -> None:
        self.channels_changed.emit()
