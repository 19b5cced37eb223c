"""Shared fixtures: where the real sample data lives."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDVIEW_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
RESOURCES = REPO_ROOT / "resources"
_SESSION_CACHE: list[str] = []


#: the caches tests write to go to folders of this test session, never the user's: the ONNX graphs the engines
#: export (MEDVIEW_CACHE_DIR) and the CNN features training computes (MEDVIEW_TRAIN_CACHE)
SESSION_CACHES = ("MEDVIEW_CACHE_DIR", "MEDVIEW_TRAIN_CACHE")


def pytest_configure(config: pytest.Config) -> None:
    for variable in SESSION_CACHES:
        if variable not in os.environ:
            _SESSION_CACHE.append(variable)
            os.environ[variable] = tempfile.mkdtemp(prefix=f"medview-test-{variable.lower()}-")


def pytest_unconfigure(config: pytest.Config) -> None:
    for variable in _SESSION_CACHE:
        shutil.rmtree(os.environ.pop(variable), ignore_errors=True)


@pytest.fixture(autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What MedView keeps per user (received studies, the audit log) goes to a fresh folder per test."""
    folder = tmp_path_factory.mktemp("medview_data")
    monkeypatch.setenv("MEDVIEW_DATA_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public sample data (../shared/data); tests needing it skip without it (fail under CI)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set MEDVIEW_SHARED_DATA)")
    return SHARED_DATA


#: skips that say what this machine is, not what it lacks: they stay skips under CI too
MACHINE_SKIPS = ("this machine has", "no SIGKILL on this platform", "needs a CUDA device", "extension loads here")


def under_ci() -> bool:
    """CI sets CI=true: there every data folder, tool and bundle a test needs must be present."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` run where torch sees a CUDA device, and skip (a fact of the machine) elsewhere."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device (run with -m gpu on a machine with one)")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under CI a skip for something missing (the shared data, a bundle, dcmtk) fails, naming what is missing:
    a moved data folder silently skipped a third of the suite before."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not (report.skipped and under_ci()) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(allowed in reason for allowed in MACHINE_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"under CI nothing a test needs may be missing, but it would skip: {reason}"


@pytest.fixture(scope="session")
def sample_series_dir() -> Path:
    """The CT series bundled with the app (resources/samples)."""
    folder = RESOURCES / "samples" / "totalsegmentator_ct" / "dicom"
    assert folder.is_dir(), f"bundled sample series missing: {folder}"
    return folder


def _use_alsa_config(config: Path | str | None) -> None:
    """Point ALSA at ``config`` (None: the system's own) and make PortAudio probe the devices again."""
    sounddevice = pytest.importorskip("sounddevice")
    if config is None:
        os.environ.pop("ALSA_CONFIG_PATH", None)
    else:
        os.environ["ALSA_CONFIG_PATH"] = str(config)
    sounddevice._terminate()  # PortAudio lists the devices only when it starts
    sounddevice._initialize()


@contextmanager
def _alsa_config(text: str, folder: Path) -> Iterator[None]:
    previous = os.environ.get("ALSA_CONFIG_PATH")
    config = folder / "asound.conf"
    config.write_text("</usr/share/alsa/alsa.conf>\n" + text, encoding="utf-8")
    _use_alsa_config(config)
    try:
        yield
    finally:
        _use_alsa_config(previous)


def played_frames(played: Path) -> np.ndarray:
    """What the ``audio_output`` device received, without the silence PortAudio primes and pads the stream with."""
    return np.trim_zeros(np.fromfile(played, dtype="<f4"))


@pytest.fixture
def audio_output(tmp_path: Path) -> Iterator[Path]:
    """A null ALSA output device (PLATFORM.md) that records what is played, as raw float32, in the returned file.

    Playback through it runs faster than real time, with real PortAudio callbacks.
    """
    played = tmp_path / "played.f32"
    with _alsa_config(f'pcm.!default {{ type file slave.pcm "null" file "{played}" format "raw" }}\n', tmp_path):
        yield played


@pytest.fixture
def no_audio_output(tmp_path: Path) -> Iterator[None]:
    """ALSA's own configuration without a sound card, as on most workstations (skips where there is a card)."""
    with _alsa_config("", tmp_path):
        import sounddevice

        if len(sounddevice.query_devices()):
            pytest.skip("this machine has an audio output device")
        yield
