"""The Qt user interface (PySide6 + pyqtgraph). Never imports torch."""
