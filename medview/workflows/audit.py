"""The audit records every workflow writes the same way."""

from __future__ import annotations

from pathlib import Path

from medview.audit import audit_log
from medview.engine.api import Provenance


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
