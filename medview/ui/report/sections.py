"""What the case report holds: plain dataclasses that each workspace fills (``report_section``) and the PDF
lays out.  Nothing here reads a widget; Qt only for the pictures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from medview.ui.qt import QtGui


@dataclass(frozen=True, eq=False)
class KeyImage:
    """A picture as the user sees it on screen, with what it shows in words."""

    image: QtGui.QImage
    caption: str


@dataclass(frozen=True)
class FindingSection:
    """One AI finding of the CT series."""

    kind: str
    title: str
    summary_html: str  # built by MedView from the result; every user/DICOM string in it is escaped there
    provenance: tuple[tuple[str, str], ...]
    model: str  # id and version
    demo: bool
    key_image: KeyImage | None


@dataclass(frozen=True)
class SeriesSection:
    """The open CT series, its findings, and the slice on screen when no finding has an image."""

    description: str
    details: tuple[tuple[str, str], ...]
    findings: tuple[FindingSection, ...]
    key_image: KeyImage | None


@dataclass(frozen=True)
class CycleRow:
    """One row of the lung panel's cycle table."""

    number: int
    start_s: float
    end_s: float
    annotated: str
    predicted: str  # empty: not classified (or edited since)
    probabilities: dict[str, float]  # the 4 ICBHI classes; empty when not classified


@dataclass(frozen=True)
class LungSection:
    """The open lung sound recording and its classified cycles."""

    file: str
    duration_s: float
    sample_rate: int
    channels: int
    note: str  # where the cycles came from
    cycles: tuple[CycleRow, ...]
    model: str  # id and version; empty when not classified
    provenance: tuple[tuple[str, str], ...]
    demo: bool
    snapshots: int
    validated: str = ""  # the model's validated performance, printed under the outcome


@dataclass(frozen=True, eq=False)
class PhotoRow:
    """One lesion photo: the picture, its saliency over it, and the verdict (or why there is none)."""

    file: str
    photo: QtGui.QImage | None
    saliency: QtGui.QImage | None
    verdict: str  # empty without a result
    positive_class: str
    probability: float | None  # of the positive class
    threshold: float
    votes: str
    model: str
    demo: bool
    problem: str  # why there is no result
    validated: str = ""  # the model's validated performance, printed under the verdict


@dataclass(frozen=True)
class ModelSummary:
    """Provenance of one model that classified photos."""

    model: str
    rows: tuple[tuple[str, str], ...]
    demo: bool


@dataclass(frozen=True)
class SkinSection:
    """The lesion photos, most suspicious first, and the models that classified them."""

    photos: tuple[PhotoRow, ...]
    models: tuple[ModelSummary, ...]
    saliency_shown: bool = True  # the workspace shows the saliency maps, so the report does too


@dataclass(frozen=True)
class CaseReport:
    """Everything the PDF shows, gathered from the window at one moment."""

    title: str
    created: datetime
    version: str
    anonymised: bool
    identifiers: tuple[tuple[str, str], ...]  # patient and study
    ct: SeriesSection | None = None
    lung: LungSection | None = None
    skin: SkinSection | None = None

    @property
    def demo(self) -> bool:
        """A demo model contributed a result."""
        return (
            (self.ct is not None and any(finding.demo for finding in self.ct.findings))
            or (self.lung is not None and self.lung.demo)
            or (self.skin is not None and any(model.demo for model in self.skin.models))
        )


#: what a workspace's ``report_section`` gives: the CT series with its findings, the recording, the photos
ReportSection = SeriesSection | LungSection | SkinSection
