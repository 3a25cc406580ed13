"""The Cohort widget's results table: a Qt model over the run's rows.

:class:`ResultsModel` holds one entry per cohort item, in input order: the
item's result row, or None while it is pending.  It fills from the run's
``start`` event (every item, and the rows earlier runs journalled) and
updates one entry per ``item`` event, so the table fills in live.
:class:`ResultsProxy` sorts (numbers as numbers, blanks last: the sort keys
of :mod:`.rows`) and filters (:data:`.rows.FILTERS`) without copying rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from qtpy.QtGui import QBrush, QColor

from napari_medcnn.widgets.cohort import rows as R

#: item data role holding an entry's item key
KEY_ROLE = Qt.ItemDataRole.UserRole
#: text colours of statuses and of an outside-domain cell
COLOURS = {"error": "#e0533d", R.PENDING: "#8a8f98", "skipped": "#8a8f98"}
OUTSIDE_COLOUR = "#e3b617"


class ResultsModel(QAbstractTableModel):
    """One row per cohort item (see module doc).

    Args:
        parent: the owning Qt object.
    """

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._rows: dict[str, dict[str, Any] | None] = {}
        self._items: dict[str, Any] = {}
        self._classes: list[str] = []
        self.positive: str | None = None

    # -- content -----------------------------------------------------------
    def set_classes(self, classes: Sequence[str]) -> None:
        """The model's classes: names the positive-probability column."""
        self._classes = list(classes)
        self.positive = R.positive_of(self._classes)
        self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, len(R.COLUMNS) - 1)
        if self._keys:
            self._changed(0, len(self._keys) - 1)

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def set_items(
        self, items: Sequence[Any], rows: Sequence[Mapping[str, Any]] = ()
    ) -> None:
        """Show every item, with the rows already done (the rest pending)."""
        done = {str(r.get("key")): dict(r) for r in rows}
        self.beginResetModel()
        self._keys = [it.key for it in items]
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._items = {it.key: it for it in items}
        self._rows = {k: done.get(k) for k in self._keys}
        self.endResetModel()

    def set_row(self, row: Mapping[str, Any]) -> None:
        """Put one finished row in place (appended when its item is new)."""
        key = str(row.get("key"))
        if key not in self._index:
            n = len(self._keys)
            self.beginInsertRows(QModelIndex(), n, n)
            self._keys.append(key)
            self._index[key] = n
            self._rows[key] = dict(row)
            self.endInsertRows()
            return
        self._rows[key] = dict(row)
        r = self._index[key]
        self._changed(r, r)

    def clear(self) -> None:
        """No item at all."""
        self.set_items([])

    def _changed(self, first: int, last: int) -> None:
        self.dataChanged.emit(
            self.index(first, 0), self.index(last, len(R.COLUMNS) - 1)
        )

    # -- queries -----------------------------------------------------------
    def key_at(self, r: int) -> str:
        return self._keys[r]

    def row_at(self, r: int) -> dict[str, Any] | None:
        """The result row at source row ``r`` (None: pending)."""
        return self._rows[self._keys[r]]

    def row_of(self, key: str) -> dict[str, Any] | None:
        return self._rows.get(key)

    def item_of(self, key: str) -> Any:
        """The cohort ``Item`` of ``key`` (None for a row without one)."""
        return self._items.get(key)

    def rows(self) -> list[dict[str, Any] | None]:
        """Every entry's row, in input order (None: pending)."""
        return [self._rows[k] for k in self._keys]

    def counts(self) -> dict[str, int]:
        """Filter key -> rows it shows."""
        return R.count(self.rows(), self.positive)

    def sort_key(self, r: int, column: int) -> tuple:
        key = self._keys[r]
        return R.sort_key(self._rows[key], R.COLUMN_KEYS[column], key, self.positive)

    def accepts(self, r: int, which: str) -> bool:
        return R.accepts(self.row_at(r), which, self.positive)

    # -- QAbstractTableModel ---------------------------------------------------
    def rowCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(self._keys)

    def columnCount(self, parent: QModelIndex | None = None) -> int:  # noqa: N802
        return 0 if parent is not None and parent.isValid() else len(R.COLUMNS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):  # noqa: N802
        if orientation != Qt.Orientation.Horizontal:
            return None
        key = R.COLUMN_KEYS[section]
        if role == Qt.ItemDataRole.DisplayRole:
            return R.header_text(key, self.positive)
        if role == Qt.ItemDataRole.ToolTipRole:
            return _HEADER_TIPS.get(key, "")
        return None

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        key = self._keys[index.row()]
        row = self._rows[key]
        col = R.COLUMN_KEYS[index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return R.cell_text(row, col, key, self.positive)
        if role == KEY_ROLE:
            return key
        if role == Qt.ItemDataRole.ToolTipRole:
            return R.row_summary(row, self.positive)
        if role == Qt.ItemDataRole.ForegroundRole:
            status = R.status_of(row)
            if col == "domain" and R.in_domain(row) is False:
                return QBrush(QColor(OUTSIDE_COLOUR))
            colour = COLOURS.get(status)
            return QBrush(QColor(colour)) if colour else None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in R.NUMERIC:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


_HEADER_TIPS = {
    "status": "ok, error, skipped (no image), or pending (not processed yet)",
    "name": "the series or file name (patient data redacted); the tooltip "
    "has the redacted path",
    "id": "the manifest's id column, else the start of the item key",
    "label": "the predicted class",
    "positive": "probability of the positive class (0..1)",
    "domain": "in / out of the model's training domain",
    "uncertainty": "normalised entropy: 0 certain, 1 coin flip",
}


class ResultsProxy(QSortFilterProxyModel):
    """Sorts and filters a :class:`ResultsModel` (see module doc)."""

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self._filter = "all"
        self.setDynamicSortFilter(True)

    @property
    def filter(self) -> str:
        """The filter key (one of :data:`.rows.FILTERS`)."""
        return self._filter

    def set_filter(self, which: str) -> None:
        if which not in R.FILTERS:
            raise ValueError(f"unknown filter {which!r}; use one of {R.FILTERS}")
        self._filter = which
        self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, _parent: QModelIndex) -> bool:  # noqa: N802
        return self.sourceModel().accepts(source_row, self._filter)

    def lessThan(self, left: QModelIndex, right: QModelIndex) -> bool:  # noqa: N802
        """By :func:`.rows.sort_key`; blanks (pending items, errors without
        a value) go last in both directions."""
        src = self.sourceModel()
        a = src.sort_key(left.row(), left.column())
        b = src.sort_key(right.row(), right.column())
        if a[0] != b[0]:  # one blank: Qt reverses the result when descending
            ascending = self.sortOrder() == Qt.SortOrder.AscendingOrder
            return a[0] < b[0] if ascending else a[0] > b[0]
        return a < b
