"""The one place that imports the Qt binding and configures pyqtgraph.

PySide6 must be imported before pyqtgraph (pyqtgraph would otherwise pick PyQt6
if present), and pyqtgraph's default column-major image order would transpose
every CT slice: both are fixed here, once, and every UI module imports from here.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

# isort: split
import pyqtgraph as pg
from pyqtgraph.util.garbage_collector import GarbageCollector

pg.setConfigOptions(imageAxisOrder="row-major", antialias=False, background="k", foreground="#d0d0d0")

__all__ = ["GarbageCollector", "QtCore", "QtGui", "QtWidgets", "pg"]
