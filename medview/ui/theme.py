"""The dark theme: reading rooms are dim, and a bright UI around a CT slice tires the eye."""

from __future__ import annotations

from medview.ui.qt import QtGui, QtWidgets


def apply_dark_theme(app: QtWidgets.QApplication) -> None:
    """Fusion style with a dark palette."""
    app.setStyle("Fusion")
    palette = QtGui.QPalette()
    colours = {
        QtGui.QPalette.ColorRole.Window: "#202124",
        QtGui.QPalette.ColorRole.WindowText: "#e0e0e0",
        QtGui.QPalette.ColorRole.Base: "#17181a",
        QtGui.QPalette.ColorRole.AlternateBase: "#26272b",
        QtGui.QPalette.ColorRole.ToolTipBase: "#303134",
        QtGui.QPalette.ColorRole.ToolTipText: "#e0e0e0",
        QtGui.QPalette.ColorRole.Text: "#e0e0e0",
        QtGui.QPalette.ColorRole.Button: "#2b2c30",
        QtGui.QPalette.ColorRole.ButtonText: "#e0e0e0",
        QtGui.QPalette.ColorRole.BrightText: "#ff5050",
        QtGui.QPalette.ColorRole.Highlight: "#2f6fb0",
        QtGui.QPalette.ColorRole.HighlightedText: "#ffffff",
        QtGui.QPalette.ColorRole.PlaceholderText: "#8a8a8a",
    }
    for role, colour in colours.items():
        palette.setColor(role, QtGui.QColor(colour))
    palette.setColor(QtGui.QPalette.ColorGroup.Disabled, QtGui.QPalette.ColorRole.Text, QtGui.QColor("#6a6a6a"))
    palette.setColor(QtGui.QPalette.ColorGroup.Disabled, QtGui.QPalette.ColorRole.ButtonText, QtGui.QColor("#6a6a6a"))
    app.setPalette(palette)
