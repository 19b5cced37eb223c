"""Docked panels around the viewer: study browser, DICOM tags, overlay layers."""

from __future__ import annotations

import numpy as np

from medview.io.dicom import DicomSource, SeriesInfo, TagRow
from medview.ui.ct.layers import HeatmapLayer, LabelLayer, Layer, LayerStack
from medview.ui.qt import QtCore, QtGui, QtWidgets

THUMBNAIL_SIZE = 64


def fit_names_to_width(view: QtWidgets.QAbstractItemView) -> None:
    """Long names are elided in the middle (the full name in each item's tooltip) instead of running behind a
    horizontal scroll bar: a clinician reads the start and the end of a series or layer name, never scrolls."""
    view.setTextElideMode(QtCore.Qt.TextElideMode.ElideMiddle)
    view.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAlwaysOff)


def thumbnail_image(plane: np.ndarray, window: tuple[float, float]) -> QtGui.QImage:
    """A windowed 8-bit square thumbnail of a 2-D slice."""
    center, width = window
    scaled = np.clip((plane.astype(np.float32) - (center - width / 2)) / width * 255.0, 0, 255).astype(np.uint8)
    step = max(1, max(scaled.shape) // THUMBNAIL_SIZE)
    small = np.ascontiguousarray(scaled[::step, ::step])
    image = QtGui.QImage(
        small.data, small.shape[1], small.shape[0], small.strides[0], QtGui.QImage.Format.Format_Grayscale8
    )
    return image.copy()  # detach from the numpy buffer


def _browser_entry(series: SeriesInfo) -> tuple[str, str, int]:
    """What makes two scans of a series the same browser entry."""
    return (series.study_uid, series.series_uid, series.part)


class StudyBrowserPanel(QtWidgets.QTreeWidget):
    """Patients > studies > series, with description, modality, slice count and thumbnail."""

    series_activated = QtCore.Signal(object)  # SeriesInfo

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("study_browser")
        self.setHeaderLabels(["Patient / study / series", "Modality", "Images"])
        self.setIconSize(QtCore.QSize(THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        fit_names_to_width(self)
        # modality and image count are read under the series name, beside its thumbnail: as columns they took
        # a third of a narrow dock and left the name "CT Bo…"; the columns keep them for sorting and scripts
        self.setColumnHidden(1, True)
        self.setColumnHidden(2, True)
        self.setIndentation(12)  # three levels at the default 20 px took a fifth of a 220 px dock
        self.itemActivated.connect(self._on_item_activated)
        self.itemDoubleClicked.connect(self._on_item_activated)
        self.series_items: dict[int, QtWidgets.QTreeWidgetItem] = {}

    def add_series(self, series_list: list[SeriesInfo]) -> None:
        """Add scanned series under their patient and study (existing entries are kept)."""
        for series in series_list:
            patient = self._child(
                self.invisibleRootItem(), f"{series.patient_name or 'anonymous'} ({series.patient_id or 'no ID'})"
            )
            study = self._child(patient, f"{series.study_date or 'no date'}  {series.study_description}".strip())
            item = QtWidgets.QTreeWidgetItem()
            self._fill_series_item(item, series)
            study.addChild(item)
            self.series_items[id(series)] = item
        self.expandAll()

    def add_or_update_series(self, series: SeriesInfo) -> QtWidgets.QTreeWidgetItem:
        """Show ``series``, updating the listed item of the same series (study, series UID and part) if there is one.

        A series received from a PACS grows as its instances arrive: it is
        listed once, with its image count kept current, not once per arrival.
        The item keeps its thumbnail; activating it loads the newest state.
        """
        key = _browser_entry(series)
        for item in list(self.series_items.values()):
            listed = item.data(0, QtCore.Qt.ItemDataRole.UserRole)
            if isinstance(listed, SeriesInfo) and _browser_entry(listed) == key:
                self.series_items.pop(id(listed), None)
                self._fill_series_item(item, series)
                self.series_items[id(series)] = item
                return item
        self.add_series([series])
        return self.series_items[id(series)]

    def _fill_series_item(self, item: QtWidgets.QTreeWidgetItem, series: SeriesInfo) -> None:
        count = f"{series.slice_count} image{'s' if series.slice_count != 1 else ''}"
        for column, text in enumerate(
            (f"{series.display_name}\n{series.modality}, {count}", series.modality, str(series.slice_count))
        ):
            item.setText(column, text)
        item.setData(0, QtCore.Qt.ItemDataRole.UserRole, series)
        item.setToolTip(0, "\n".join([series.display_name, f"{series.modality}, {count}", *series.notes]))
        if series.notes:
            item.setForeground(0, QtGui.QBrush(QtGui.QColor("#e0b040")))
        else:
            item.setData(0, QtCore.Qt.ItemDataRole.ForegroundRole, None)  # back to the style's colour

    def set_thumbnail(self, series: SeriesInfo, image: QtGui.QImage) -> None:
        """Show a series' thumbnail once it has been decoded."""
        item = self.series_items.get(id(series))
        if item is not None:
            item.setIcon(0, QtGui.QIcon(QtGui.QPixmap.fromImage(image)))

    def _child(self, parent: QtWidgets.QTreeWidgetItem, text: str) -> QtWidgets.QTreeWidgetItem:
        for index in range(parent.childCount()):
            child = parent.child(index)
            if child is not None and child.text(0) == text:
                return child
        item = QtWidgets.QTreeWidgetItem([text])
        item.setToolTip(0, text)
        parent.addChild(item)
        return item

    def _on_item_activated(self, item: QtWidgets.QTreeWidgetItem, _column: int = 0) -> None:
        series = item.data(0, QtCore.Qt.ItemDataRole.UserRole)
        if isinstance(series, SeriesInfo):
            self.series_activated.emit(series)


class TagBrowserPanel(QtWidgets.QWidget):
    """The DICOM header of the current slice's file, searchable by tag, name, keyword or value."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("tag_browser")
        self.search = QtWidgets.QLineEdit(placeholderText="Search tag, name, keyword or value")
        self.search.setClearButtonEnabled(True)
        self.source_label = QtWidgets.QLabel()
        self.source_label.setWordWrap(True)
        self.tree = QtWidgets.QTreeWidget()
        self.tree.setHeaderLabels(["Tag", "Name", "VR", "Value"])
        self.tree.setColumnWidth(0, 95)
        self.tree.setColumnWidth(1, 200)
        self.tree.setColumnWidth(2, 35)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.search)
        layout.addWidget(self.source_label)
        layout.addWidget(self.tree)
        self.search.textChanged.connect(self._apply_filter)
        self.current: DicomSource | None = None

    def set_rows(self, source_label: str, rows: list[TagRow]) -> None:
        """Show a header as a tree (sequence items indented under their sequence)."""
        self.tree.clear()
        self.source_label.setText(source_label)
        parents: list[QtWidgets.QTreeWidgetItem] = []
        for row in rows:
            item = QtWidgets.QTreeWidgetItem([row.tag, row.name, row.vr, row.value])
            item.setData(0, QtCore.Qt.ItemDataRole.UserRole, row.keyword)
            if row.keyword:
                item.setToolTip(1, row.keyword)
            del parents[row.depth :]
            (parents[-1].addChild(item) if parents else self.tree.addTopLevelItem(item))
            if row.vr == "SQ":
                parents.append(item)
        self.tree.expandAll()
        self._apply_filter(self.search.text())

    def set_message(self, text: str) -> None:
        """Show why there is no header (NIfTI volume, unreadable file)."""
        self.tree.clear()
        self.source_label.setText(text)

    def _apply_filter(self, text: str) -> None:
        needle = text.strip().lower()

        def visit(item: QtWidgets.QTreeWidgetItem | None) -> bool:
            if item is None:
                return False
            keyword = str(item.data(0, QtCore.Qt.ItemDataRole.UserRole) or "")
            own = not needle or needle in keyword.lower() or any(needle in item.text(c).lower() for c in range(4))
            child_match = False
            for index in range(item.childCount()):
                child_match |= visit(item.child(index))
            item.setHidden(not (own or child_match))
            return own or child_match

        for index in range(self.tree.topLevelItemCount()):
            visit(self.tree.topLevelItem(index))

    def visible_tags(self) -> list[str]:
        """Tags of the rows the filter leaves visible (top level), for tests and copying."""
        rows = (self.tree.topLevelItem(i) for i in range(self.tree.topLevelItemCount()))
        return [row.text(0) for row in rows if row is not None and not row.isHidden()]


class LayersPanel(QtWidgets.QWidget):
    """Toggle, opacity and outline mode for each overlay, and the measurements toggle."""

    def __init__(self, layers: LayerStack, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("layers_panel")
        self.layers = layers
        self.list = QtWidgets.QListWidget()
        fit_names_to_width(self.list)
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.outline = QtWidgets.QCheckBox("Outline only")
        self.remove_button = QtWidgets.QPushButton("Remove")
        self.measurements = QtWidgets.QCheckBox("Show measurements")
        self.measurements.setChecked(True)
        form = QtWidgets.QFormLayout()
        form.addRow("Opacity", self.opacity)
        form.addRow(self.outline)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.list)
        layout.addLayout(form)
        layout.addWidget(self.remove_button)
        layout.addWidget(self.measurements)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.currentRowChanged.connect(self._on_selection)
        self.opacity.valueChanged.connect(lambda v: self._set(opacity=v / 100))
        self.outline.toggled.connect(lambda checked: self._set(outline_only=checked))
        self.remove_button.clicked.connect(self._remove_selected)
        self.measurements.toggled.connect(self._on_measurements_toggled)
        layers.changed.connect(self._rebuild)
        self._rebuild()

    def _rebuild(self) -> None:
        current = self.list.currentRow()
        self.list.blockSignals(True)
        self.list.clear()
        for layer in self.layers.layers:
            kind = (
                "mask" if isinstance(layer, LabelLayer) else "heatmap" if isinstance(layer, HeatmapLayer) else "layer"
            )
            item = QtWidgets.QListWidgetItem(f"{layer.name} ({kind})")
            item.setToolTip(item.text())
            item.setFlags(item.flags() | QtCore.Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(QtCore.Qt.CheckState.Checked if layer.visible else QtCore.Qt.CheckState.Unchecked)
            self.list.addItem(item)
        self.list.blockSignals(False)
        if self.layers.layers:
            self.list.setCurrentRow(min(max(current, 0), len(self.layers.layers) - 1))
        self._on_selection(self.list.currentRow())

    def selected_layer(self) -> Layer | None:
        """The layer whose settings the controls show."""
        row = self.list.currentRow()
        return self.layers.layers[row] if 0 <= row < len(self.layers.layers) else None

    def _on_selection(self, _row: int) -> None:
        layer = self.selected_layer()
        for control in (self.opacity, self.outline, self.remove_button):
            control.setEnabled(layer is not None)
        if layer is None:
            return
        for control in (self.opacity, self.outline):
            control.blockSignals(True)
        self.opacity.setValue(round(layer.opacity * 100))
        self.outline.setEnabled(isinstance(layer, LabelLayer))
        self.outline.setChecked(isinstance(layer, LabelLayer) and layer.outline_only)
        for control in (self.opacity, self.outline):
            control.blockSignals(False)

    def _on_item_changed(self, item: QtWidgets.QListWidgetItem) -> None:
        row = self.list.row(item)
        layer = self.layers.layers[row]
        self.layers.update(layer, visible=item.checkState() == QtCore.Qt.CheckState.Checked)

    def _set(self, **settings: object) -> None:
        layer = self.selected_layer()
        if layer is not None:
            self.layers.update(layer, **settings)

    def _remove_selected(self) -> None:
        layer = self.selected_layer()
        if layer is not None:
            self.layers.remove(layer)

    def _on_measurements_toggled(self, checked: bool) -> None:
        self.layers.show_measurements = checked
        self.layers.changed.emit()
