"""About, keyboard shortcuts, and the readable error/problem dialogs."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from types import TracebackType

from medview import __version__
from medview.config import Settings, cache_dir, config_dir, data_dir
from medview.ui.qt import QtCore, QtGui, QtWidgets

LIBRARIES = ("PySide6-Essentials", "pyqtgraph", "numpy", "pydicom", "SimpleITK", "highdicom", "pylibjpeg", "torch")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that matter, read from package metadata.

    Package metadata, not imports: the UI must not import torch to report its version.
    """
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


INTENDED_USE = (
    "Intended use: MedView shows CT series, lung sound recordings and skin lesion photos, and the output of AI "
    "models beside them, to support trained clinicians reading them. It does not diagnose: every AI result is to "
    "be checked against the images or sounds by a qualified clinician, and results of demo models (marked so on "
    "screen) are not for diagnosis. MedView is not cleared as a medical device."
)


def folder_lines(settings: Settings) -> list[str]:
    """Where MedView keeps what, for IT and for the user: settings, data, audit log, models, cache."""
    return [
        f"Settings: {config_dir()}",
        f"Data (received studies): {data_dir()}",
        f"Audit log: {data_dir() / 'audit'}",
        *(f"Model bundles: {folder}" for folder in settings.model_folders()),
        f"Cache (rebuilt when deleted): {cache_dir()}",
    ]


def about_text(device: str = "", receiver: str = "", settings: Settings | None = None) -> str:
    """The About text; also what the copy button puts on the clipboard."""
    lines = [
        f"MedView {__version__}",
        INTENDED_USE,
        "",
        f"Python {platform.python_version()} on {platform.platform()}",
        *(f"{name} {version}" for name, version in library_versions().items()),
        f"Inference device: {device or 'chosen when the first model runs (no model loaded yet)'}",
        "Offline: MedView opens no outgoing connection; patient data stays on this machine.",
        f"DICOM receiver (PACS push to this machine): {receiver or 'off'}",
        "",
        *folder_lines(settings or Settings()),
    ]
    return "\n".join(lines)


class AboutDialog(QtWidgets.QDialog):
    """Versions of the app and its libraries, the device, with copy to clipboard."""

    def __init__(
        self,
        parent: QtWidgets.QWidget | None = None,
        device: str = "",
        receiver: str = "",
        settings: Settings | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("About MedView")
        self.text = about_text(device, receiver, settings)
        label = QtWidgets.QLabel(self.text)
        label.setWordWrap(True)
        label.setMinimumWidth(560)
        label.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        copy = QtWidgets.QPushButton("Copy to clipboard")
        copy.clicked.connect(lambda: QtWidgets.QApplication.clipboard().setText(self.text))
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        buttons.addButton(copy, QtWidgets.QDialogButtonBox.ButtonRole.ActionRole)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(label)
        layout.addWidget(buttons)


class ShortcutsDialog(QtWidgets.QDialog):
    """Every keyboard shortcut and mouse gesture, built from the live actions."""

    MOUSE = (
        ("Mouse wheel / Up, Down", "Next / previous slice"),
        ("Page Up / Page Down", "Ten slices"),
        ("Home / End", "First / last slice"),
        ("Ctrl + wheel", "Zoom"),
        ("Left drag", "Pan (or draw the active measurement)"),
        ("Left click", "Move the crosshair (all three planes follow)"),
        ("Right drag", "Window: horizontal = width, vertical = level"),
        ("R", "Fit the image in the view"),
        ("Delete", "Remove the newest measurement on this slice"),
    )

    def __init__(self, actions: list[QtGui.QAction], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = [(a.shortcut().toString(), a.text().replace("&", "")) for a in actions if not a.shortcut().isEmpty()]
        rows += list(self.MOUSE)
        self.table = QtWidgets.QTableWidget(len(rows), 2)
        self.table.setHorizontalHeaderLabels(["Key", "Action"])
        self.table.verticalHeader().setVisible(False)
        for row, (key, text) in enumerate(rows):
            self.table.setItem(row, 0, QtWidgets.QTableWidgetItem(key))
            self.table.setItem(row, 1, QtWidgets.QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        buttons = QtWidgets.QDialogButtonBox(QtWidgets.QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.table)
        layout.addWidget(buttons)
        self.resize(520, 520)


def show_message(
    parent: QtWidgets.QWidget | None, title: str, text: str, details: str = "", warning: bool = True
) -> QtWidgets.QMessageBox:
    """A non-blocking message box: readable text, technical details folded away."""
    box = QtWidgets.QMessageBox(parent)
    box.setIcon(QtWidgets.QMessageBox.Icon.Warning if warning else QtWidgets.QMessageBox.Icon.Information)
    box.setWindowTitle(title)
    box.setText(text)
    if details:
        box.setDetailedText(details)
    box.setWindowModality(QtCore.Qt.WindowModality.NonModal)
    box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
    box.show()
    return box


def install_excepthook(parent_getter: object) -> None:
    """Show unexpected exceptions on the GUI thread as a readable dialog, not a crash."""
    import traceback

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        details = "".join(traceback.format_exception(kind, error, trace))
        sys.__stderr__.write(details) if sys.__stderr__ else None
        parent = parent_getter() if callable(parent_getter) else None
        show_message(
            parent, "Unexpected error", f"Something went wrong: {error}\nYour open work is unchanged.", details
        )

    sys.excepthook = hook
