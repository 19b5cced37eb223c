"""What a DICOM scan finds: sources (files, zip members, frames), slice headers, series, problems."""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from medview.errors import DicomError
from medview.io.sources import split_archive_label
from medview.io.volume import (
    source_path_label,
)

IMAGE_STORAGE_MARKERS = ("Image Storage",)
#: air, for slices missing from a series
MISSING_SLICE_VALUE = -1024
#: the largest series opened, in voxels (4 GiB as int16): a damaged header claiming more is refused, not allocated
MAX_VOXELS = 1 << 31
#: starts the stand-in MedView makes for files that carry no SeriesInstanceUID (see ``_series_uid_or_stand_in``)
SYNTHETIC_SERIES_PREFIX = "no-series-uid:"
_ORIENTATION_DECIMALS = 3


@dataclass(frozen=True)
class DicomSource:
    """Where an instance's bytes live: a file, or a member of a zip archive."""

    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        return source_path_label(self.path, self.member)

    @classmethod
    def from_label(cls, label: str) -> DicomSource:
        """The source a ``label`` names (``Volume.slice_files``): a file, or ``archive.zip!member``.

        A file whose own name holds a "!" stays a file.
        """
        return cls(*split_archive_label(label))

    def open(self) -> str | io.BytesIO:
        """A path or an in-memory file pydicom can read."""
        if self.member is None:
            return str(self.path)
        with zipfile.ZipFile(self.path) as archive:
            return io.BytesIO(archive.read(self.member))

    def size(self) -> int:
        """The file's size in bytes (a zip member's uncompressed size)."""
        if self.member is None:
            return self.path.stat().st_size
        with zipfile.ZipFile(self.path) as archive:
            return archive.getinfo(self.member).file_size


@dataclass(frozen=True)
class SliceHeader:
    """What the loader needs to know about one image plane (one frame)."""

    source: DicomSource
    frame: int | None  # frame index inside an enhanced multi-frame object, else None
    sop_instance_uid: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]
    slice_thickness: float | None
    instance_number: int | None
    rescale: tuple[float, float]  # slope, intercept
    #: one sample per pixel, MONOCHROME1/2, as the header says: the only files handed to GDCM, whose
    #: decoders abort the whole process (std::terminate) when the header and the pixel data disagree
    monochrome: bool = False

    def __post_init__(self) -> None:
        if not all(math.isfinite(value) for value in self.rescale):
            raise DicomError(
                f"expected finite RescaleSlope and RescaleIntercept, got {self.rescale[0]} and {self.rescale[1]}",
                path=self.source.label,
            )


@dataclass
class SeriesInfo:
    """One series as listed in the study browser, before it is decoded."""

    series_uid: str
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_description: str
    series_description: str
    series_number: int | None
    modality: str
    slices: list[SliceHeader]
    body_part: str = ""  # Body Part Examined as the scanner wrote it; often absent
    patient_birth_date: str = ""
    accession_number: str = ""
    window: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)
    part: int = 0  # >0 when a series was split by orientation or size

    @property
    def slice_count(self) -> int:
        return len(self.slices)

    @property
    def display_name(self) -> str:
        number = f"#{self.series_number} " if self.series_number is not None else ""
        text = f"{number}{self.series_description or self.modality or 'series'}"
        return f"{text} (part {self.part + 1})" if self.part else text


@dataclass(frozen=True)
class FileProblem:
    """A file that was skipped, and why, in words for the user."""

    label: str
    message: str

    def __str__(self) -> str:
        return f"{self.label}: {self.message}"


@dataclass
class ScanResult:
    """Every series found under the paths the user opened, and every skipped file."""

    series: list[SeriesInfo] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
