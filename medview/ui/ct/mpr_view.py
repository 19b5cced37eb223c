"""Axial, coronal and sagittal views of one volume with a linked crosshair."""

from __future__ import annotations

from typing import cast

from medview.io.volume import Volume
from medview.ui.ct.layers import LayerStack
from medview.ui.ct.planes import PLANES, voxel_to_display
from medview.ui.ct.slice_view import SliceView, Tool
from medview.ui.provenance import DemoBannerLabel
from medview.ui.qt import QtCore, QtWidgets

BANNER_TOP = 44  # px: below the two lines of study text and the orientation letter


class MprView(QtWidgets.QWidget):
    """Three linked ``SliceView``s: a click in one moves the other two to that point.

    The axial view is the main one (large, left); ``set_single`` enlarges one view (the one under the mouse,
    or the one last clicked) to the whole area for a full-size reading, as a double-click on a view does.
    """

    window_changed = QtCore.Signal(float, float)
    enlarged_changed = QtCore.Signal(bool)  # one view shown alone (True) or all three (False)

    def __init__(self, layers: LayerStack, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.layers = layers
        self.views = {plane: SliceView(plane, layers) for plane in PLANES}
        self.position: tuple[int, int, int] | None = None
        self.enlarged: SliceView | None = None  # the view shown alone, if any
        self._last_used: SliceView = self.views["axial"]  # the view keys and F2 go to
        side = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        side.addWidget(self.views["coronal"])
        side.addWidget(self.views["sagittal"])
        self.side = side
        splitter = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        splitter.addWidget(self.views["axial"])
        splitter.addWidget(side)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 1)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        # on the axial image itself, below its top read-outs, while a demo model's overlay is shown
        self.banner = DemoBannerLabel(self.axial)
        self.axial.installEventFilter(self)
        layers.changed.connect(self._update_banner)
        for view in self.views.values():
            view.position_picked.connect(self.set_position)
            view.window_changed.connect(self._on_window_changed)
            view.slice_changed.connect(self._on_slice_changed)
            view.activated.connect(self._on_view_used)
            view.enlarge_requested.connect(self._toggle_enlarged)

    @property
    def axial(self) -> SliceView:
        """The axial view (the one the slice keys, cine and the findings drive)."""
        return self.views["axial"]

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if watched is self.axial and event.type() == QtCore.QEvent.Type.Resize:
            self._place_banner()
        return super().eventFilter(watched, event)

    def _update_banner(self) -> None:
        self.banner.setVisible(self.layers.demo_shown())
        self._place_banner()

    def _place_banner(self) -> None:
        self.banner.adjustSize()
        self.banner.move((self.axial.width() - self.banner.width()) // 2, BANNER_TOP)
        self.banner.raise_()

    def set_volume(self, volume: Volume | None, window: tuple[float, float] | None = None) -> None:
        """Show ``volume`` in all three planes, crosshair at its centre."""
        for view in self.views.values():
            view.set_volume(volume, window)
        self.position = None
        if volume is not None:
            self.set_position(*(size // 2 for size in volume.shape))

    def set_position(self, z: int, y: int, x: int) -> None:
        """Move every view to the planes through voxel (z, y, x) and draw the crosshair."""
        self.position = (z, y, x)
        for plane, view in self.views.items():
            if view.volume is None:
                continue
            index, _, _ = voxel_to_display(view.volume.shape, plane, (z, y, x))
            view.blockSignals(True)
            view.set_index(index)
            view.blockSignals(False)
            view.show_crosshair((z, y, x))

    def _on_slice_changed(self, _index: int) -> None:
        # scrolling one plane moves the crosshair line in the other two
        if self.position is None:
            return
        z, y, x = self.position
        source = self.sender()
        if source is self.views["axial"]:
            z = source.index
        elif source is self.views["coronal"]:
            y = source.index
        elif source is self.views["sagittal"]:
            x = source.index
        self.position = (z, y, x)
        for view in self.views.values():
            view.show_crosshair(self.position)

    def _on_window_changed(self, center: float, width: float) -> None:
        for view in self.views.values():
            if view.display_window != (center, width):
                view.blockSignals(True)
                view.set_window(center, width)
                view.blockSignals(False)
        self.window_changed.emit(center, width)

    def set_window(self, center: float, width: float) -> None:
        """Apply a window to all three planes."""
        self.axial.set_window(center, width)

    def set_tool(self, tool: Tool) -> None:
        """Set the left-drag tool in every plane."""
        for view in self.views.values():
            view.set_tool(tool)

    def set_single(self, single: bool) -> None:
        """One view enlarged to the whole area (True: the view under the mouse, else the last one used), or the
        three-plane layout (False)."""
        if not single:
            self.enlarged = None
        else:
            under_mouse = [view for view in self.views.values() if view.isVisible() and view.underMouse()]
            self.enlarged = under_mouse[0] if under_mouse else self._last_used
        for view in self.views.values():
            view.setVisible(self.enlarged is None or view is self.enlarged)
        self.side.setVisible(self.enlarged is None or self.enlarged is not self.axial)
        self.enlarged_changed.emit(self.enlarged is not None)

    def _toggle_enlarged(self) -> None:
        self._last_used = cast(SliceView, self.sender())
        self.set_single(self.enlarged is None)

    def _on_view_used(self) -> None:
        self._last_used = cast(SliceView, self.sender())

    def navigation_target(self) -> SliceView:
        """The view slice keys scroll when no view has the focus: the enlarged one, else the last one used."""
        return self.enlarged or self._last_used

    def volume_shown(self) -> bool:
        """Whether a volume is on screen."""
        return self.axial.volume is not None

    def refresh(self) -> None:
        """Redraw all planes (new slices arrived while loading)."""
        for view in self.views.values():
            view.refresh()
