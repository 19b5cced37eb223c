"""Overlay layers drawn over the CT image: label masks, heatmaps, measurements.

A layer holds numpy data on the volume's ``[z, y, x]`` grid and its display
settings; ``LayerStack`` announces changes so every slice view redraws.  The
slice views cut each layer with the same ``planes.extract_plane`` as the image,
so overlays cannot be misregistered against the anatomy.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from medview.ui.qt import QtCore, pg

#: colours of label values 1, 2, ... (RGB); label 0 is transparent
LABEL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 64, 64),
    (64, 200, 255),
    (255, 200, 0),
    (120, 255, 120),
    (220, 90, 255),
    (255, 140, 40),
)


@dataclass(eq=False)
class Layer:
    """What every layer has: a name, visibility and opacity."""

    name: str
    visible: bool = True
    opacity: float = 0.5
    #: drawn from a demo model's output: the views say "demo model: not for diagnosis" while it shows
    demo: bool = False
    #: what the finding says about single axial slices (e.g. kept or left out, and why), keyed by slice
    #: index; the axial view shows it under the slice number while the layer is visible
    slice_notes: Mapping[int, str] = field(default_factory=dict)
    #: bumped by ``LayerStack.update`` and ``touch``: the views draw a layer again only when it changed
    revision: int = 0


@dataclass(eq=False)
class LabelLayer(Layer):
    """An integer label mask (0 = background) with a colour per label."""

    labels: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1), np.uint8))
    names: dict[int, str] = field(default_factory=dict)
    colours: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    outline_only: bool = False

    def __post_init__(self) -> None:
        # the table size depends on the largest label: computed once, not on every slice change
        self._top_label = max(int(self.labels.max()), 1) if self.labels.size else 1

    def colour(self, label: int) -> tuple[int, int, int]:
        """Display colour of ``label``: chosen, or from the default palette."""
        return self.colours.get(label, LABEL_COLOURS[(label - 1) % len(LABEL_COLOURS)])

    def lookup_table(self) -> np.ndarray:
        """RGBA table indexed by label value; alpha 255 where drawn (opacity is applied on the item)."""
        top = self._top_label
        table = np.zeros((top + 1, 4), np.uint8)
        for label in range(1, top + 1):
            table[label, :3] = self.colour(label)
            table[label, 3] = 255
        return table


@dataclass(eq=False)
class HeatmapLayer(Layer):
    """A continuous map (probability, Grad-CAM) shown with a colour map and a colour bar."""

    values: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1), np.float32))
    levels: tuple[float, float] = (0.0, 1.0)
    colormap: str = "inferno"
    #: values below this are transparent so the anatomy shows through
    threshold: float | None = None
    #: what the map shows and on which scale, the colour bar's label: "liver probability 0-1",
    #: "Grad-CAM, covid pneumonia class, one scale for the volume"; empty: the layer's name
    legend: str = ""

    @property
    def bar_label(self) -> str:
        """The colour bar's label, as the HTML it is drawn from: the legend (a new line where it has one), or
        the layer's name."""
        return html.escape(self.legend or self.name).replace("\n", "<br>")

    def lookup_table(self) -> np.ndarray:
        """RGBA table of 256 entries from the colour map."""
        return pg.colormap.get(self.colormap).getLookupTable(nPts=256, alpha=True)


def outline(mask: np.ndarray) -> np.ndarray:
    """Keep only the border pixels of each labelled region of a 2-D label image."""
    border = np.zeros(mask.shape, dtype=bool)
    border[1:, :] |= mask[1:, :] != mask[:-1, :]
    border[:-1, :] |= mask[:-1, :] != mask[1:, :]
    border[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    border[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    return np.where(border, mask, 0)


class LayerStack(QtCore.QObject):
    """The ordered overlays of one volume; views listen to ``changed``."""

    changed = QtCore.Signal()

    def __init__(self, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.layers: list[Layer] = []
        self.show_measurements = True

    def add(self, *layers: Layer) -> None:
        """Add ``layers`` on top, in order; the views redraw once (each redraw renders every visible layer)."""
        self.layers.extend(layers)
        self.changed.emit()

    def remove(self, layer: Layer) -> None:
        """Remove a layer."""
        self.layers.remove(layer)
        self.changed.emit()

    def slice_notes(self, index: int) -> list[str]:
        """The notes visible layers hold for axial slice ``index``."""
        return [layer.slice_notes[index] for layer in self.layers if layer.visible and index in layer.slice_notes]

    def demo_shown(self) -> bool:
        """A visible layer comes from a demo model."""
        return any(layer.visible and layer.demo for layer in self.layers)

    def clear(self) -> None:
        """Remove every layer (a new volume was opened)."""
        self.layers.clear()
        self.changed.emit()

    def update(self, layer: Layer, **settings: object) -> None:
        """Change display settings of ``layer`` (visible, opacity, outline_only, ...)."""
        for key, value in settings.items():
            if not hasattr(layer, key):
                raise AttributeError(f"{type(layer).__name__} has no setting {key!r}")
            setattr(layer, key, value)
        self.touch(layer)

    def touch(self, layer: Layer) -> None:
        """``layer``'s data changed in place (a mask filling while its model runs): the views draw it again."""
        layer.revision += 1
        self.changed.emit()
