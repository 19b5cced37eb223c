"""What the window asks of each workspace that runs models: the CT findings, lung sounds, skin lesions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from medview.engine.api import InferenceService
from medview.engine.manifest import ModelCard

if TYPE_CHECKING:
    from medview.ui.report.sections import ReportSection


class ModelWorkspace(Protocol):
    """A workspace with models to run: it gets the engine once it is built, lists its bundles again on request,
    gives its part of the case report, and lets go of what it holds when the window closes."""

    def set_engine(self, engine: InferenceService) -> None:
        """Use ``engine`` from now on (it is built off the GUI thread, after the window shows)."""

    def refresh_models(self) -> None:
        """List the installed bundles of this workspace's tasks again (after an import or removal)."""

    def chosen_cards(self) -> list[ModelCard]:
        """The bundles a run would use now (for the window to load them before the first run)."""

    def report_section(self, *, anonymise: bool = False) -> ReportSection | None:
        """What the case report prints of this workspace now; None when it holds nothing. GUI thread."""

    def shutdown(self) -> None:
        """Stop its work and release what it holds (an audio device): the window closes."""
