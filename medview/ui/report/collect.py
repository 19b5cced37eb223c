"""Gathering the case report from the window: each workspace's ``report_section``, and the patient lines."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from medview import __version__
from medview.errors import ExportError
from medview.io.volume import Volume
from medview.ui.report.identifiers import patient_rows
from medview.ui.report.sections import CaseReport, LungSection, ReportSection, SeriesSection, SkinSection
from medview.ui.workspace import ModelWorkspace

REPORT_TITLE = "MedView case report"
NOTHING_TO_REPORT = "nothing to report: open a series, a recording or photos first"
S = TypeVar("S", SeriesSection, LungSection, SkinSection)


class OpenVolume(Protocol):
    """The CT workspace, as far as the report reads it: the open volume, whose patient the report is about."""

    @property
    def volume(self) -> Volume | None:
        """The open volume, or None."""
        ...


class ReportSource(Protocol):
    """What the report reads of the window: the open volume (for the patient lines) and the workspaces."""

    @property
    def ct(self) -> OpenVolume:
        """The CT workspace."""
        ...

    @property
    def model_workspaces(self) -> Sequence[ModelWorkspace]:
        """Every workspace that runs models: each gives its part of the report."""
        ...


def collect_report(window: ReportSource, *, anonymise: bool = False, ct_only: bool = False) -> CaseReport:
    """Gather the current case from ``window``'s workspaces (GUI thread: key images are drawn by widgets).

    ``anonymise`` replaces the patient's name, ID, birth date and the accession
    number with "ANONYMISED" (on the key images too) and keeps only the year of
    dates.  ``ct_only`` leaves out the lung sound and skin sections: a report filed
    into the CT patient's study must not carry a recording or photos that may be
    another patient's.  Raises ``ExportError`` when nothing is open.
    """
    sections = [workspace.report_section(anonymise=anonymise) for workspace in window.model_workspaces]
    ct, lung, skin = _one(sections, SeriesSection), _one(sections, LungSection), _one(sections, SkinSection)
    if ct_only:
        lung = skin = None
    if ct is None and lung is None and skin is None:
        raise ExportError(NOTHING_TO_REPORT)
    return CaseReport(
        title=REPORT_TITLE,
        created=datetime.now().astimezone(),
        version=__version__,
        anonymised=anonymise,
        identifiers=patient_rows(window.ct.volume, anonymise),
        ct=ct,
        lung=lung,
        skin=skin,
    )


def _one(sections: Sequence[ReportSection | None], kind: type[S]) -> S | None:
    return next((section for section in sections if isinstance(section, kind)), None)
