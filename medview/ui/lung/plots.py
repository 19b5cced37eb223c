"""The lung sound workspace's plot items: cycle bands over the waveform and spectrogram, their overview and legend.

A band is coloured by the class its cycle was given (``CLASS_COLOURS``), grey
until classified; its edges drag to correct the cycle.  Above
``panel.MAX_BAND_ITEMS`` cycles in view the bands are drawn by one
``CycleOverview`` instead of one item each.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from medview.ui.qt import QtCore, QtGui, QtWidgets, pg

CLASS_COLOURS = {
    "normal": (120, 200, 120),
    "crackle": (255, 170, 60),
    "wheeze": (90, 170, 255),
    "both": (230, 80, 200),
    "abnormal": (255, 110, 80),
}
UNCLASSIFIED_COLOUR = (180, 180, 180)
#: what the band legend calls each colour
LEGEND_TEXT = {
    "normal": "normal",
    "crackle": "crackle",
    "wheeze": "wheeze",
    "both": "both (crackle + wheeze)",
    "abnormal": "abnormal (crackle, wheeze or both)",
}
BAND_ALPHA = 70
#: a band's edges, and the stronger edges that mark the band under the mouse (its fill stays as translucent)
EDGE_ALPHA, EDGE_WIDTH, HOVER_EDGE_WIDTH = 150, 1, 3


def clock(seconds: float) -> str:
    """``seconds`` as minutes:seconds.hundredths, the way an audio player shows time."""
    minutes, rest = divmod(max(0.0, seconds), 60.0)
    return f"{int(minutes)}:{rest:05.2f}"


class TimeSelectViewBox(pg.ViewBox):
    """A plot's view box where Shift + left drag selects a span of time; other drags pan as usual."""

    span_dragged = QtCore.Signal(float, float)

    def mouseDragEvent(self, ev: Any, axis: int | None = None) -> None:
        selecting = ev.modifiers() & QtCore.Qt.KeyboardModifier.ShiftModifier
        if ev.button() != QtCore.Qt.MouseButton.LeftButton or not selecting:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        start = self.mapSceneToView(ev.buttonDownScenePos()).x()
        end = self.mapSceneToView(ev.scenePos()).x()
        self.span_dragged.emit(min(start, end), max(start, end))


class CycleRegion(pg.LinearRegionItem):
    """A cycle's band: its edges and body drag to correct it, except under Shift, which selects.

    Under the mouse the band keeps its translucent fill (pyqtgraph's default hover
    fill was opaque enough to hide the waveform) and only its edges thicken.
    """

    def __init__(self, values: tuple[float, float], **kwargs: Any) -> None:
        super().__init__(values, **kwargs)
        self.edge_pen = self.hover_edge_pen = pg.mkPen(UNCLASSIFIED_COLOUR)
        self.set_colour(UNCLASSIFIED_COLOUR)

    def set_colour(self, colour: tuple[int, int, int]) -> None:
        """Fill and edges in the colour of the cycle's class; the same translucent fill under the mouse."""
        brush = band_brush(colour)
        self.setBrush(brush)
        self.setHoverBrush(brush)
        self.edge_pen = pg.mkPen(*colour, EDGE_ALPHA, width=EDGE_WIDTH)
        self.hover_edge_pen = pg.mkPen(*colour, width=HOVER_EDGE_WIDTH)
        for line in self.lines:
            line.setHoverPen(self.hover_edge_pen)  # an edge about to be dragged
        self._show_edges()

    def setMouseHover(self, hover: bool) -> None:
        super().setMouseHover(hover)
        self._show_edges()

    def _show_edges(self) -> None:
        for line in self.lines:
            line.setPen(self.hover_edge_pen if self.mouseHovering else self.edge_pen)

    def mouseDragEvent(self, ev: Any) -> None:
        if ev.modifiers() & QtCore.Qt.KeyboardModifier.ShiftModifier:
            ev.ignore()  # left to the view box below: a selection
            return
        super().mouseDragEvent(ev)


@functools.cache
def band_brush(colour: tuple[int, int, int]) -> QtGui.QBrush:
    """The translucent brush of a cycle band of ``colour`` (one per class colour, shared)."""
    return pg.mkBrush(*colour, BAND_ALPHA)


class CycleOverview(pg.GraphicsObject):
    """Every cycle's band in one item, drawn as one row of pixels stretched to the view's height; not editable
    (zoom in for that).

    Drawn as translucent rectangles, Qt's raster engine took ~45 ms per repaint for the 1,081 bands of a
    30-minute recording, and a playing recording repaints the plots 30 times a second; the row, built with
    numpy and scaled in one drawImage, takes ~3 ms.
    """

    def __init__(self) -> None:
        super().__init__()
        self.starts = np.empty(0)
        self.ends = np.empty(0)
        self.rgba = np.empty((0, 4), np.uint8)  # each band's colour and alpha

    def set_bands(self, spans: list[tuple[float, float]], colours: list[tuple[int, int, int]]) -> None:
        """Draw one translucent band per (start, end) span in seconds, in its colour."""
        self.prepareGeometryChange()
        self.starts = np.array([start for start, _ in spans], dtype=float)
        self.ends = np.array([end for _, end in spans], dtype=float)
        self.rgba = np.array([(*colour, BAND_ALPHA) for colour in colours], dtype=np.uint8).reshape(-1, 4)
        self.update()

    def viewRangeChanged(self) -> None:
        self.prepareGeometryChange()

    def boundingRect(self) -> QtCore.QRectF:
        view = self.viewRect()
        if view is None or not len(self.starts):
            return QtCore.QRectF()
        left = float(self.starts.min())
        return QtCore.QRectF(left, view.top(), float(self.ends.max()) - left, view.height())

    def paint(self, painter: QtGui.QPainter, *_args: Any) -> None:
        view = self.viewRect()
        if view is None or not len(self.starts):
            return
        to_device = painter.deviceTransform()  # a plot's: x scaled and shifted, no rotation
        target = to_device.mapRect(view)
        width = max(1, round(target.width()))
        scale, shift = to_device.m11(), to_device.dx() - target.left()
        first = np.clip(np.floor(self.starts * scale + shift), 0, width).astype(int)
        last = np.clip(np.ceil(self.ends * scale + shift), 0, width).astype(int)
        last = np.maximum(last, np.minimum(first + 1, width))  # a band narrower than a pixel still shows
        row = np.zeros((1, width, 4), np.uint8)
        for index in np.flatnonzero(last > first):
            row[0, first[index] : last[index]] = self.rgba[index]
        image = QtGui.QImage(row.data, width, 1, width * 4, QtGui.QImage.Format.Format_RGBA8888)
        painter.save()
        painter.resetTransform()
        painter.drawImage(target, image)
        painter.restore()


class BandLegendPanel(QtWidgets.QWidget):
    """What the colours of the cycle bands mean, beside the plots: the classes of the current view, and grey."""

    SWATCH = 14

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("band_legend")
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Maximum, QtWidgets.QSizePolicy.Policy.Preferred)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.setSpacing(4)
        layout.addWidget(QtWidgets.QLabel("<b>Cycle bands</b>"))
        #: each colour's text and swatch, by class name ("" for not classified); the view's classes are shown
        self.entries: dict[str, QtWidgets.QLabel] = {}
        self.swatches: dict[str, QtWidgets.QLabel] = {}
        every = [(name, CLASS_COLOURS[name], LEGEND_TEXT[name]) for name in LEGEND_TEXT]
        for name, colour, text in [*every, ("", UNCLASSIFIED_COLOUR, "not classified (or edited)")]:
            swatch = QtWidgets.QLabel()
            swatch.setPixmap(self._swatch(colour))
            label = QtWidgets.QLabel(text)
            line = QtWidgets.QHBoxLayout()
            line.setSpacing(6)
            line.addWidget(swatch)
            line.addWidget(label, stretch=1)
            layout.addLayout(line)
            self.entries[name], self.swatches[name] = label, swatch
        layout.addStretch(1)

    def set_classes(self, names: Sequence[str]) -> None:
        """Show the colours of ``names`` (the classes of the current view), then "not classified"."""
        for name, label in self.entries.items():
            shown = name == "" or name in names
            label.setVisible(shown)
            self.swatches[name].setVisible(shown)

    def shown_names(self) -> list[str]:
        """The classes the legend shows, top to bottom ("" for not classified)."""
        return [name for name, label in self.entries.items() if not label.isHidden()]

    def _swatch(self, colour: tuple[int, int, int]) -> QtGui.QPixmap:
        """A small band: the class colour, as bright as a band's edge, framed in the full colour."""
        pixmap = QtGui.QPixmap(self.SWATCH, self.SWATCH)
        pixmap.fill(QtGui.QColor(*colour, EDGE_ALPHA))
        painter = QtGui.QPainter(pixmap)
        painter.setPen(QtGui.QColor(*colour))
        painter.drawRect(0, 0, self.SWATCH - 1, self.SWATCH - 1)
        painter.end()
        return pixmap
