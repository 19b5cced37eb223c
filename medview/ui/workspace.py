"""What the window asks of each workspace that runs models: the CT findings, lung sounds, skin lesions."""

from __future__ import annotations

from typing import Protocol

from medview.engine.api import InferenceService


class ModelWorkspace(Protocol):
    """A workspace with models to run: it gets the engine once it is built and lists its bundles again on request."""

    def set_engine(self, engine: InferenceService) -> None:
        """Use ``engine`` from now on (it is built off the GUI thread, after the window shows)."""

    def refresh_models(self) -> None:
        """List the installed bundles of this workspace's tasks again (after an import or removal)."""
