"""Orthanc for the tests: ``bench.orthanc``'s launcher, skipping where Orthanc is not installed (CI installs it,
and a skip fails there) and failing where it does not start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.orthanc import LOCALHOST, PACS_TITLE, OrthancMissing, RunningOrthanc, free_port
from bench.orthanc import start_orthanc as _start

__all__ = ["LOCALHOST", "PACS_TITLE", "RunningOrthanc", "free_port", "start_orthanc"]


def start_orthanc(
    folder: Path, medview_title: str, medview_port: int, extra: dict[str, Any] | None = None
) -> RunningOrthanc:
    """``bench.orthanc.start_orthanc``, as a skip when Orthanc is missing and a failure when it does not start."""
    try:
        return _start(folder, medview_title, medview_port, extra)
    except OrthancMissing as error:
        pytest.skip(str(error))
    except RuntimeError as error:
        pytest.fail(str(error))
