"""The lung sound workspace's cycle table: a model whose rows are made when the view first shows them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medview.ui.qt import QtCore, QtGui

#: the cycle table's column of the predicted class, coloured by it
PREDICTED_COLUMN = 4


class CycleTableModel(QtCore.QAbstractTableModel):
    """The cycle table: each row's text made when the view first asks for it.

    ``row_cells(row)`` gives a row's texts and the colour of its predicted class.
    A 30-minute recording's 1,081 rows as QTableWidgetItems held the window
    185 ms each time its results were shown (bench.scale); a view asks only for
    the rows it shows.
    """

    def __init__(
        self,
        row_cells: Callable[[int], tuple[list[str], tuple[int, int, int] | None]],
        parent: QtCore.QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._row_cells = row_cells
        self._headers: list[str] = []
        self._rows = 0
        self._made: dict[int, tuple[list[str], QtGui.QBrush | None]] = {}

    def reset(self, headers: list[str], rows: int) -> None:
        """Show ``rows`` rows under ``headers``, every row's text made afresh."""
        self.beginResetModel()
        self._headers, self._rows = headers, rows
        self._made.clear()
        self.endResetModel()

    def _row(self, row: int) -> tuple[list[str], QtGui.QBrush | None]:
        made = self._made.get(row)
        if made is None:
            cells, colour = self._row_cells(row)
            made = self._made[row] = (cells, None if colour is None else QtGui.QBrush(QtGui.QColor(*colour)))
        return made

    def rowCount(self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else self._rows

    def columnCount(self, parent: QtCore.QModelIndex | QtCore.QPersistentModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._headers)

    def data(self, index: QtCore.QModelIndex | QtCore.QPersistentModelIndex, role: int = 0) -> Any:
        if not index.isValid():
            return None
        if role in (QtCore.Qt.ItemDataRole.DisplayRole, QtCore.Qt.ItemDataRole.ToolTipRole):
            return self._row(index.row())[0][index.column()]  # the tip: a cell too narrow for its text
        if role == QtCore.Qt.ItemDataRole.ForegroundRole and index.column() == PREDICTED_COLUMN:
            return self._row(index.row())[1]
        return None

    def headerData(self, section: int, orientation: QtCore.Qt.Orientation, role: int = 0) -> Any:
        if orientation == QtCore.Qt.Orientation.Horizontal and role == QtCore.Qt.ItemDataRole.DisplayRole:
            return self._headers[section]
        return None
