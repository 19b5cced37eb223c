"""The one exception hierarchy of MedView.

Every error a user can cause (a bad file, a bad bundle) is a ``MedviewError``
whose message names the file and says what was expected and what was found.
The UI shows these messages as they are; anything else is a bug and is shown
with its traceback under "details".
"""

from __future__ import annotations

from pathlib import Path


class MedviewError(Exception):
    """Base class of every error MedView reports to the user."""

    def __init__(self, message: str, *, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class InputError(MedviewError):
    """A file or folder the user opened cannot be read as what it claims to be."""


class DicomError(InputError):
    """A DICOM file or series is unreadable or inconsistent."""


class ExportError(MedviewError):
    """A file cannot be written where the user asked (an export, a saved mask)."""


class ModelError(MedviewError):
    """A model bundle is invalid or a model cannot run."""


class ChecksumError(ModelError):
    """A weights file does not match the checksum its manifest records."""


class PlaybackError(MedviewError):
    """Sound cannot be played: no output device, or the audio library is missing."""


class Cancelled(MedviewError):
    """Long work was cancelled by the user; not an error to show."""

    def __init__(self) -> None:
        super().__init__("cancelled by the user")
