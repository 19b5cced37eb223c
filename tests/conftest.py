"""Shared fixtures: where the real sample data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDVIEW_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESOURCES = REPO_ROOT / "resources"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public sample data (../shared/data); tests needing it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set MEDVIEW_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_series_dir() -> Path:
    """The CT series bundled with the app (resources/samples)."""
    folder = RESOURCES / "samples" / "totalsegmentator_ct" / "dicom"
    assert folder.is_dir(), f"bundled sample series missing: {folder}"
    return folder
