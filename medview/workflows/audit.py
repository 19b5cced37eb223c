"""The audit records every workflow writes the same way: a model run, an export."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from medview.audit import Outcome, audit_log
from medview.engine.api import Provenance
from medview.errors import Cancelled

T = TypeVar("T")


def audit_model_run(
    provenance: Provenance,
    *,
    target: Path | str | None = None,
    series_uid: str | None = None,
    patient_id: str | None = None,
) -> None:
    """Record in the audit log that the model of ``provenance`` ran on ``target`` (a file) or a series."""
    audit_log().record_model_run(
        provenance.model_id,
        provenance.model_version,
        target=target,
        series_uid=series_uid or None,
        patient_id=patient_id or None,
        seconds=provenance.seconds,
        device=provenance.device,
        details={"task": provenance.task, "demo": provenance.demo},
    )


@dataclass(frozen=True)
class AuditedExport:
    """One export as the audit log records it (DICOM PS3.15 "Export"): what left MedView, where to, from whom.

    Every export path (a PDF, a mask, a table, an anonymised series) writes through :meth:`write`, so none
    is left unaudited and a failed one is recorded with why.
    """

    kind: str  # what left: "case report", "cycle table", "liver segmentation (model 1.0)"
    destination: Path | str
    file_format: str = ""
    anonymised: bool = False
    source: Path | str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    patient_id: str | None = None

    def write(self, write: Callable[[], T]) -> T:
        """Run ``write`` and record the export: its success, or its failure with the message, or its cancel (the
        error is raised again).  A ``write`` that returns a path records that path (it may differ from the one
        asked for).

        Each record is fsync-ed (up to ~150 ms): call it on a worker where the export runs on one.
        """
        try:
            written = write()
        except Cancelled:  # what was written before the cancel may be on disk: the log says so
            self._record(self.destination, Outcome.MINOR_FAILURE, "cancelled by the user")
            raise
        except Exception as error:
            self._record(self.destination, Outcome.SERIOUS_FAILURE, export_error_message(self.destination, error))
            raise
        self._record(written if isinstance(written, (Path, str)) else self.destination, Outcome.SUCCESS, "")
        return written

    def _record(self, destination: Path | str, outcome: Outcome, description: str) -> None:
        audit_log().record_export(
            self.kind,
            destination,
            anonymised=self.anonymised,
            file_format=self.file_format,
            source=self.source,
            study_uid=self.study_uid or None,
            series_uid=self.series_uid or None,
            patient_id=self.patient_id or None,
            outcome=outcome,
            outcome_description=description,
        )


def export_error_message(destination: Path | str, error: BaseException) -> str:
    """What went wrong with an export, naming the file: the OS's words for an OSError."""
    if isinstance(error, OSError):
        return f"{destination}: {error.strerror or error}"
    return str(error)
