"""One plane of a CT volume: scroll, zoom, pan, window/level, cursor read-out, overlays.

Mouse: wheel scrolls slices (Ctrl+wheel zooms), left-drag pans (or draws the
active measurement), left-click moves the crosshair, right-drag sets the window
(horizontal = width, vertical = level).  Keys: arrows/Page Up/Page Down/Home/End
scroll, R resets the view.

The image is drawn in millimetres (the ImageItem's rectangle is the slice's
physical size), so the aspect ratio is right for any pixel spacing and
measurement handles live in mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from medview.io.volume import Volume
from medview.measure import distance_mm, region_stats
from medview.ui.ct.layers import HeatmapLayer, LabelLayer, Layer, LayerStack, outline
from medview.ui.ct.planes import (
    Plane,
    display_to_voxel,
    edge_letters,
    extract_plane,
    plane_count,
    plane_spacing,
    voxel_to_display,
)
from medview.ui.qt import QtCore, QtGui, QtWidgets, pg

Tool = Literal["navigate", "distance", "rectangle", "ellipse"]
#: a right-drag this many pixels long changes the window by its own width
WINDOW_DRAG_PIXELS_PER_WIDTH = 400.0
WINDOW_DRAG_MIN_WIDTH = 20.0  # HU: the smallest step is this width's share
MEASUREMENT_COLOUR = (0, 255, 160)
TOOLS: tuple[Tool, ...] = ("navigate", "distance", "rectangle", "ellipse")
#: when each view builds its (hidden) colour bar: after start-up's first frames, before a first finding is likely
COLOUR_BAR_BUILD_MS = 2_000
DEFAULT_WINDOW = (40.0, 400.0)  # HU centre, width: soft tissue, until the series names its own


@dataclass(eq=False)
class Measurement:
    """A measurement drawn on one slice of one plane; shown only on that slice."""

    kind: Tool
    plane: Plane
    index: int
    roi: pg.ROI
    label: pg.TextItem
    text: str = ""


def voxel_label(z: int, y: int, x: int, slice_count: int) -> str:
    """Where a voxel is, as every read-out says it: column and row from 0 (as DICOM pixel data counts them),
    the axial slice from 1 of ``slice_count`` (as the slice counter shows it)."""
    return f"(x {x}, y {y}, slice {z + 1}/{slice_count})"


class CrosshairLine(QtWidgets.QGraphicsLineItem):
    """One line of the crosshair, drawn across the image only: a pyqtgraph InfiniteLine ran on past the image to
    the view's edges, lines in the empty space above and below the coronal and sagittal images."""

    def __init__(self, vertical: bool) -> None:
        super().__init__()
        pen = pg.mkPen((255, 220, 0, 160), width=1)
        pen.setCosmetic(True)  # one pixel wide at any zoom
        self.setPen(pen)
        self.setZValue(50)
        self.vertical = vertical
        self._value = 0.0
        self.setVisible(False)

    def value(self) -> float:
        """Where the line is: x (vertical line) or y (horizontal line) in view (mm) coordinates."""
        return self._value

    def place(self, value: float, extent: float) -> None:
        """Put the line at ``value`` (mm), from 0 to ``extent`` (mm) along the image, and show it."""
        self._value = value
        if self.vertical:
            self.setLine(value, 0.0, value, extent)
        else:
            self.setLine(0.0, value, extent, value)
        self.setVisible(True)


class _SliceViewBox(pg.ViewBox):
    """ViewBox with the radiology mouse map; forwards gestures to its ``SliceView``."""

    def __init__(self, owner: SliceView) -> None:
        super().__init__(invertY=True, lockAspect=True, enableMenu=False)
        self.owner = owner

    def wheelEvent(self, ev: QtWidgets.QGraphicsSceneWheelEvent, axis: int | None = None) -> None:
        if ev.modifiers() & QtCore.Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        steps = 1 if ev.delta() > 0 else -1
        self.owner.step(steps)
        ev.accept()

    def mouseClickEvent(self, ev: pg.GraphicsScene.mouseEvents.MouseClickEvent) -> None:
        if ev.button() == QtCore.Qt.MouseButton.LeftButton and ev.double():
            self.owner.enlarge_requested.emit()
            ev.accept()
        elif ev.button() == QtCore.Qt.MouseButton.LeftButton:
            self.owner._on_left_click(self.mapSceneToView(ev.scenePos()))
            ev.accept()
        else:
            ev.ignore()

    def mouseDragEvent(self, ev: pg.GraphicsScene.mouseEvents.MouseDragEvent, axis: int | None = None) -> None:
        if ev.button() == QtCore.Qt.MouseButton.RightButton:
            ev.accept()
            if ev.isStart():
                self.owner.begin_window_drag()
            delta = ev.screenPos() - ev.buttonDownScreenPos()
            self.owner.drag_window(delta.x(), delta.y())
            return
        if ev.button() == QtCore.Qt.MouseButton.LeftButton and self.owner.tool != "navigate":
            ev.accept()
            self.owner._on_measure_drag(
                self.mapSceneToView(ev.buttonDownScenePos()), self.mapSceneToView(ev.scenePos()), ev.isFinish()
            )
            return
        super().mouseDragEvent(ev, axis)


class SliceView(QtWidgets.QWidget):
    """Displays one plane of a volume with its overlays and on-screen read-outs."""

    slice_changed = QtCore.Signal(int)
    #: voxel (z, y, x) clicked: the MPR views move their crosshair there
    position_picked = QtCore.Signal(int, int, int)
    #: voxel under the mouse and its value, for the status bar
    hovered = QtCore.Signal(int, int, int, float)
    window_changed = QtCore.Signal(float, float)
    measurements_changed = QtCore.Signal()
    #: clicked or scrolled: the view the slice keys and F2 go to
    activated = QtCore.Signal()
    #: double-clicked: enlarge this view to the whole area, or back to three views
    enlarge_requested = QtCore.Signal()

    def __init__(self, plane: Plane, layers: LayerStack, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName(f"{plane}_view")
        self.plane: Plane = plane
        self.layers = layers
        self.volume: Volume | None = None
        self.index = 0
        self.display_window = DEFAULT_WINDOW  # center, width
        self.tool: Tool = "navigate"
        self.measurements: list[Measurement] = []
        self._drawing: Measurement | None = None
        self._cursor_point: QtCore.QPointF | None = None  # the mouse over the view, in view (mm) coordinates
        self._window_at_drag_start = self.display_window

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.view_box = _SliceViewBox(self)
        self.graphics.addItem(self.view_box, row=0, col=0)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.view_box.addItem(self.image_item)
        self.overlay_items: list[pg.ImageItem] = []
        self._overlay_drawn: list[tuple[Layer, int, int] | None] = []  # per item: (layer, its revision, slice)
        self.colour_bar: pg.ColorBarItem | None = None
        # made after start-up, not when the first map is shown: a ColorBarItem is a PlotItem with its menus,
        # 20-35 ms to build, and three of them added to a COVID-19 finding's arrival on the GUI thread; made in the
        # event loop's first pass, they held back the window's first frame (bench.startup)
        QtCore.QTimer.singleShot(COLOUR_BAR_BUILD_MS, self, self._colour_bar)
        self.crosshair = (CrosshairLine(vertical=True), CrosshairLine(vertical=False))
        for line in self.crosshair:
            self.view_box.addItem(line, ignoreBounds=True)
        self.graphics.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.view_box.sigResized.connect(self._place_labels)

        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.graphics)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)

        self.corner_labels = {
            name: self._make_label() for name in ("top_left", "top_right", "bottom_left", "bottom_right", "center")
        }
        self.corner_labels["bottom_left"].setWordWrap(True)
        self.edge_labels = {name: self._make_label(bold=True) for name in ("left", "right", "top", "bottom")}
        self.layers.changed.connect(self._on_layers_changed)

    # ------------------------------------------------------------------ setup

    def _make_label(self, bold: bool = False) -> QtWidgets.QLabel:
        label = QtWidgets.QLabel(self.graphics)
        label.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        weight = "bold" if bold else "normal"
        label.setStyleSheet(f"color: #e8e8a0; background: transparent; font-weight: {weight};")
        return label

    def set_volume(self, volume: Volume | None, window: tuple[float, float] | None = None) -> None:
        """Show ``volume`` (None clears), starting at its middle slice."""
        self.volume = volume
        self.clear_measurements()
        # nothing read off the previous volume stays: its cursor position may lie outside this one
        self._cursor_point = None
        for line in self.crosshair:
            line.setVisible(False)
        if volume is None:
            self.image_item.clear()
            for label in (*self.corner_labels.values(), *self.edge_labels.values()):
                label.setText("")
            return
        if window is not None:
            self.display_window = window
        count = plane_count(volume.shape, self.plane)
        self.index = count // 2
        letters = edge_letters(volume.direction_matrix, self.plane)
        for side, label in self.edge_labels.items():
            label.setText(letters[side])
        # the rectangle must be set after the image exists: ImageItem scales it by the image size
        self.image_item.setImage(self.current_image(), autoLevels=False, levels=self._levels())
        rows, cols = self.image_item.image.shape[:2]
        row_mm, col_mm = plane_spacing(volume.spacing, self.plane)
        self.image_item.setRect(QtCore.QRectF(0, 0, cols * col_mm, rows * row_mm))
        self.refresh()
        self.reset_view()

    def reset_view(self) -> None:
        """Fit the slice in the view."""
        self.view_box.autoRange(padding=0.02)

    # ------------------------------------------------------------------ slice and window

    @property
    def slice_count(self) -> int:
        """How many slices this view's plane has in the open volume (0 without one)."""
        return plane_count(self.volume.shape, self.plane) if self.volume is not None else 0

    def set_index(self, index: int) -> None:
        """Go to slice ``index`` (clamped)."""
        if self.volume is None:
            return
        index = int(np.clip(index, 0, self.slice_count - 1))
        if index == self.index and self.image_item.image is not None:
            return
        self.index = index
        self.refresh()
        self.slice_changed.emit(index)

    def step(self, delta: int) -> None:
        """Scroll by ``delta`` slices."""
        self.set_index(self.index + delta)

    def set_window(self, center: float, width: float) -> None:
        """Set the display window in HU."""
        self.display_window = (float(center), max(1.0, float(width)))
        self.image_item.setLevels(self._levels())
        self._update_read_outs()
        self.window_changed.emit(*self.display_window)

    def begin_window_drag(self) -> None:
        """A right-drag starts: its changes are measured from the window at this moment."""
        self._window_at_drag_start = self.display_window

    def drag_window(self, dx: float, dy: float) -> None:
        """Right-drag ``dx``, ``dy`` pixels from where it started: right widens the window, down raises the level.

        Each pixel changes the window by a fixed share of the width the drag started from (as OHIF and Weasis
        scale it), so a narrow brain window moves in small steps and a wide lung window in large ones, and
        the change does not compound as the width grows during the drag.
        """
        center, width = self._window_at_drag_start
        step = max(width, WINDOW_DRAG_MIN_WIDTH) / WINDOW_DRAG_PIXELS_PER_WIDTH
        self.set_window(center + dy * step, width + dx * step)

    def _levels(self) -> tuple[float, float]:
        center, width = self.display_window
        return (center - width / 2, center + width / 2)

    def current_image(self) -> np.ndarray | None:
        """The displayed 2-D slice in display orientation (HU)."""
        if self.volume is None:
            return None
        return extract_plane(self.volume.voxels, self.plane, self.index)

    def refresh(self) -> None:
        """Redraw the slice and its overlays (after a scroll or when new data arrived)."""
        image = self.current_image()
        if image is None:
            return
        self.image_item.setImage(image, autoLevels=False, levels=self._levels())
        self._render_overlays(redraw=True)
        self._update_measurement_visibility()
        self._update_read_outs()

    # ------------------------------------------------------------------ overlays

    def _on_layers_changed(self) -> None:
        self._render_overlays()
        self._update_read_outs()  # a layer shown or hidden brings its slice notes with it

    def _render_overlays(self, redraw: bool = False) -> None:
        """Show the visible layers on this slice; only those not drawn yet as they are now get drawn, unless
        ``redraw`` (another slice, or new data): each COVID-19 finding added redrew every earlier overlay."""
        if self.volume is None:
            return
        visible = [layer for layer in self.layers.layers if layer.visible]
        while len(self.overlay_items) < len(visible):
            item = pg.ImageItem(axisOrder="row-major")
            item.setZValue(10 + len(self.overlay_items))
            self.view_box.addItem(item)
            self.overlay_items.append(item)
            self._overlay_drawn.append(None)
        for slot in range(len(visible), len(self.overlay_items)):
            self.overlay_items[slot].setVisible(False)
            self._overlay_drawn[slot] = None  # a layer changed while not shown is drawn afresh when it comes back
        rect = self.image_item.mapRectToParent(self.image_item.boundingRect())
        heatmap_shown = None
        for slot, (item, layer) in enumerate(zip(self.overlay_items, visible, strict=False)):
            item.setVisible(True)
            item.setOpacity(layer.opacity)
            drawn = (layer, layer.revision, self.index)
            if redraw or self._overlay_drawn[slot] != drawn:
                self._draw_overlay(item, layer)
                self._overlay_drawn[slot] = drawn
            item.setRect(rect)
            if isinstance(layer, HeatmapLayer):
                heatmap_shown = layer
        self._show_colour_bar(heatmap_shown)
        self._update_measurement_visibility()

    def _draw_overlay(self, item: pg.ImageItem, layer: Layer) -> None:
        """Put ``layer``'s plane of this slice into ``item``."""
        if isinstance(layer, LabelLayer):
            plane = extract_plane(layer.labels, self.plane, self.index)
            if layer.outline_only:
                plane = outline(plane)
            table = layer.lookup_table()
            item.setImage(plane, lut=table, levels=(0, len(table) - 1), autoLevels=False)
        elif isinstance(layer, HeatmapLayer):
            plane = extract_plane(layer.values, self.plane, self.index).astype(np.float32)
            if layer.threshold is not None:
                plane = np.where(plane >= layer.threshold, plane, np.nan)
            item.setImage(plane, lut=layer.lookup_table(), levels=layer.levels, autoLevels=False)

    def _show_colour_bar(self, layer: HeatmapLayer | None) -> None:
        """The bar of ``layer``, the topmost map shown, labelled with what it shows and its scale; with other
        maps shown under it, the label says the bar is the top one's only."""
        if layer is None:
            if self.colour_bar is not None:
                self.colour_bar.setVisible(False)
            return
        colour_bar = self._colour_bar()
        colour_bar.setColorMap(pg.colormap.get(layer.colormap))
        colour_bar.setLevels(layer.levels)
        colour_bar.setVisible(True)  # first: a hidden axis sizes itself for no label, which then covers the bar
        label = layer.bar_label
        maps = sum(isinstance(each, HeatmapLayer) and each.visible for each in self.layers.layers)
        if maps > 1:
            label += f"<br>(the top one of the {maps} maps shown)"
        axis = colour_bar.getAxis("left")  # where pyqtgraph puts a vertical bar's label
        if axis.labelText != label:  # laying the label out again costs a few ms on every slice change
            axis.setLabel(label, **{"font-size": "8pt", "color": axis.textPen().color().name()})

    def _colour_bar(self) -> pg.ColorBarItem:
        """The colour bar beside the image, made once, hidden (a hidden bar takes no room in the layout)."""
        if self.colour_bar is None:
            self.colour_bar = pg.ColorBarItem(interactive=False, width=12, colorMap="inferno")
            self.graphics.addItem(self.colour_bar, row=0, col=1)
            self.colour_bar.setVisible(False)
        return self.colour_bar

    # ------------------------------------------------------------------ crosshair and read-outs

    def show_crosshair(self, voxel: tuple[int, int, int]) -> None:
        """Draw the crosshair through ``voxel`` (from another plane's click)."""
        if self.volume is None:
            return
        _, row, col = voxel_to_display(self.volume.shape, self.plane, voxel)
        row_mm, col_mm = plane_spacing(self.volume.spacing, self.plane)
        image = self.image_item.mapRectToParent(self.image_item.boundingRect())
        self.crosshair[0].place((col + 0.5) * col_mm, image.height())
        self.crosshair[1].place((row + 0.5) * row_mm, image.width())

    @property
    def value_unit(self) -> str:
        """ " HU" for CT (and volumes of unknown modality, read as CT), else nothing."""
        return " HU" if self.volume is not None and self.volume.modality in ("CT", "") else ""

    def _view_to_pixel(self, point: QtCore.QPointF) -> tuple[int, int] | None:
        image = self.current_image()
        if image is None or self.volume is None:
            return None
        row_mm, col_mm = plane_spacing(self.volume.spacing, self.plane)
        row, col = int(np.floor(point.y() / row_mm)), int(np.floor(point.x() / col_mm))
        if 0 <= row < image.shape[0] and 0 <= col < image.shape[1]:
            return row, col
        return None

    def voxel_at(self, point: QtCore.QPointF) -> tuple[int, int, int] | None:
        """Voxel (z, y, x) under a point in view (mm) coordinates, or None outside the image."""
        pixel = self._view_to_pixel(point)
        if pixel is None or self.volume is None:
            return None
        return display_to_voxel(self.volume.shape, self.plane, self.index, *pixel)

    @property
    def cursor_voxel(self) -> tuple[int, int, int] | None:
        """The voxel (z, y, x) under the mouse on the slice shown now, or None when the mouse is off the image."""
        return self.voxel_at(self._cursor_point) if self._cursor_point is not None else None

    def _on_mouse_moved(self, scene_pos: QtCore.QPointF) -> None:
        self._cursor_point = self.view_box.mapSceneToView(scene_pos)
        self._update_read_outs()
        voxel = self.cursor_voxel
        if voxel is not None and self.volume is not None:
            self.hovered.emit(*voxel, float(self.volume.voxels[voxel]))

    def leaveEvent(self, event: QtCore.QEvent) -> None:
        """The mouse left the view: its read-out goes (a stale value would read as this slice's)."""
        super().leaveEvent(event)
        self._cursor_point = None
        self._update_read_outs()

    def _on_left_click(self, point: QtCore.QPointF) -> None:
        self.setFocus()
        self.activated.emit()
        voxel = self.voxel_at(point)
        if voxel is not None and self.tool == "navigate":
            self.position_picked.emit(*voxel)

    def _update_read_outs(self) -> None:
        volume = self.volume
        if volume is None:
            return
        center, width = self.display_window
        self.corner_labels["top_right"].setText(f"W {width:.0f}  L {center:.0f}")
        info = volume.info
        self.corner_labels["top_left"].setText(
            "\n".join(t for t in (info.get("PatientName", ""), info.get("StudyDate", ""), volume.description) if t)
        )
        position = ""
        if self.plane == "axial":
            z_mm = volume.index_to_lps(self.index, 0, 0)[2]
            position = f"  z {z_mm:.1f} mm"
        notes = self.layers.slice_notes(self.index) if self.plane == "axial" else []
        self.corner_labels["bottom_left"].setText(
            "\n".join([*notes, f"{self.plane.capitalize()} {self.index + 1}/{self.slice_count}{position}"])
        )
        voxel = self.cursor_voxel  # recomputed: after a scroll the mouse is over another voxel
        if voxel is not None:
            z, y, x = voxel
            self.corner_labels["bottom_right"].setText(
                f"{volume.voxels[z, y, x]:.0f}{self.value_unit}  {voxel_label(z, y, x, volume.shape[0])}"
            )
        else:
            self.corner_labels["bottom_right"].setText("")
        missing = self.plane == "axial" and self.index in volume.missing_slices
        self.corner_labels["center"].setText("missing slice: not in the series" if missing else "")
        self._place_labels()

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place_labels()

    def _place_labels(self) -> None:
        # the read-outs sit on the image: left of the colour bar when a map shows one
        width = self.graphics.mapFromScene(self.view_box.sceneBoundingRect().topRight()).x()
        height, margin = self.graphics.height(), 6
        labels = {**self.corner_labels, **self.edge_labels}
        for name, label in labels.items():
            if label.wordWrap():
                # a long slice note wraps instead of running off a narrow view (adjustSize would wrap short
                # lines too: a word-wrapped QLabel picks its own narrower width)
                lines = label.text().splitlines() or [""]
                natural = max(label.fontMetrics().horizontalAdvance(line) for line in lines) + 4
                fitted = min(natural, max(int(width * 0.7), 120))
                label.resize(fitted, label.heightForWidth(fitted))
            else:
                label.adjustSize()
            w, h = label.width(), label.height()
            x = {"left": margin, "right": width - w - margin}.get(name.split("_")[-1], (width - w) // 2)
            y = {"top": margin, "bottom": height - h - margin}.get(name.split("_")[0], (height - h) // 2)
            if name in ("left", "right"):
                y = (height - h) // 2
            label.move(int(x), int(y))
        for row, downwards in (
            (("top_left", "top", "top_right"), True),
            (("bottom_left", "bottom", "bottom_right"), False),
        ):
            self._unstack_row([labels[name] for name in row], downwards, margin)

    @staticmethod
    def _unstack_row(row: list[QtWidgets.QLabel], downwards: bool, margin: int) -> None:
        """In a view too narrow for one row of read-outs (the MPR views at 1280x720), move each label that
        would cover one to its left off the image's edge, below it (top row) or above it (bottom row)."""
        placed: list[QtWidgets.QLabel] = []
        for label in row:
            if not label.text():
                continue
            for other in placed:
                if label.geometry().intersects(other.geometry().adjusted(-margin, 0, margin, 0)):
                    y = other.y() + other.height() if downwards else other.y() - label.height()
                    label.move(label.x(), y)
            placed.append(label)

    # ------------------------------------------------------------------ keys

    def keyPressEvent(self, event: QtGui.QKeyEvent) -> None:
        key = event.key()
        steps: dict[int, int] = {
            QtCore.Qt.Key.Key_Up: 1,
            QtCore.Qt.Key.Key_Down: -1,
            QtCore.Qt.Key.Key_PageUp: 10,
            QtCore.Qt.Key.Key_PageDown: -10,
        }
        if key in steps:
            self.step(steps[key])
        elif key == QtCore.Qt.Key.Key_Home:
            self.set_index(0)
        elif key == QtCore.Qt.Key.Key_End:
            self.set_index(self.slice_count - 1)
        elif key == QtCore.Qt.Key.Key_R:
            self.reset_view()
        elif key in (QtCore.Qt.Key.Key_Delete, QtCore.Qt.Key.Key_Backspace):
            self.delete_last_measurement()
        else:
            super().keyPressEvent(event)

    # ------------------------------------------------------------------ measurements

    def set_tool(self, tool: Tool) -> None:
        """Choose what a left-drag does: pan, or draw a distance/rectangle/ellipse."""
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS}, got {tool!r}")
        self.tool = tool

    def add_measurement(self, kind: Tool, start: QtCore.QPointF, end: QtCore.QPointF) -> Measurement:
        """Create a measurement between two points in view (mm) coordinates."""
        pen = pg.mkPen(MEASUREMENT_COLOUR, width=2)
        if kind == "distance":
            roi: pg.ROI = pg.LineSegmentROI([start, end], pen=pen)
        else:
            corner = QtCore.QPointF(min(start.x(), end.x()), min(start.y(), end.y()))
            size = QtCore.QPointF(abs(end.x() - start.x()), abs(end.y() - start.y()))
            roi = pg.RectROI(corner, size, pen=pen) if kind == "rectangle" else pg.EllipseROI(corner, size, pen=pen)
            for handle in list(roi.getHandles()):
                if handle.typ == "r":  # statistics assume an axis-aligned region
                    roi.removeHandle(handle)
        # on a dark backing, above the crosshair: mint text alone vanished over bright lung and bone
        label = pg.TextItem(color=MEASUREMENT_COLOUR, anchor=(0, 1), fill=pg.mkBrush(0, 0, 0, 190))
        label.setZValue(60)
        self.view_box.addItem(roi)
        self.view_box.addItem(label)
        measurement = Measurement(kind, self.plane, self.index, roi, label)
        roi.sigRegionChanged.connect(lambda: self._update_measurement(measurement))
        self.measurements.append(measurement)
        self._update_measurement(measurement)
        self._update_measurement_visibility()
        return measurement

    def _on_measure_drag(self, start: QtCore.QPointF, current: QtCore.QPointF, finished: bool) -> None:
        if self.volume is None:
            return
        if self._drawing is not None:
            self._remove(self._drawing)
        self._drawing = self.add_measurement(self.tool, start, current)
        if finished:
            self._drawing = None
            self.measurements_changed.emit()

    def _update_measurement(self, measurement: Measurement) -> None:
        if self.volume is None:
            return
        row_mm, col_mm = plane_spacing(self.volume.spacing, self.plane)
        roi = measurement.roi
        if measurement.kind == "distance":
            handles = [roi.mapToParent(h.pos()) for h in roi.getHandles()]
            start = (handles[0].y() / row_mm, handles[0].x() / col_mm)
            end = (handles[1].y() / row_mm, handles[1].x() / col_mm)
            measurement.text = f"{distance_mm(start, end, (row_mm, col_mm)):.1f} mm"
            anchor = handles[1]
        else:
            position, size = roi.pos(), roi.size()
            image = extract_plane(self.volume.voxels, measurement.plane, measurement.index)
            stats = region_stats(
                image,
                (row_mm, col_mm),
                (position.y() / row_mm, position.x() / col_mm),
                (size.y() / row_mm, size.x() / col_mm),
                "rectangle" if measurement.kind == "rectangle" else "ellipse",
            )
            if stats is None:
                measurement.text = "too small"
            else:
                unit = self.value_unit
                measurement.text = (
                    f"mean {stats.mean:.1f}{unit}  SD {stats.std:.1f}{unit}\narea {stats.area_mm2:.1f} mm²"
                )
            anchor = QtCore.QPointF(position.x(), position.y())
        measurement.label.setText(measurement.text)
        measurement.label.setPos(anchor)

    def _update_measurement_visibility(self) -> None:
        for measurement in self.measurements:
            shown = measurement.index == self.index and self.layers.show_measurements
            measurement.roi.setVisible(shown)
            measurement.label.setVisible(shown)

    def _remove(self, measurement: Measurement) -> None:
        self.view_box.removeItem(measurement.roi)
        self.view_box.removeItem(measurement.label)
        self.measurements.remove(measurement)

    def delete_last_measurement(self) -> None:
        """Remove the newest measurement on the current slice."""
        on_slice = [m for m in self.measurements if m.index == self.index]
        if on_slice:
            self._remove(on_slice[-1])
            self.measurements_changed.emit()

    def clear_measurements(self) -> None:
        """Remove every measurement of this view."""
        for measurement in list(self.measurements):
            self._remove(measurement)
        self.measurements_changed.emit()
