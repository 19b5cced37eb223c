"""The lung sound workspace says, beside the cycles' verdict, what about a recording its model was not validated on
(``engine.fitness.audio_fitness``): a real ICBHI recording resampled to 2 kHz, through the real window and the
shipped demo bundle."""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

import pytest
import soundfile

from medview.engine.fitness import audio_fitness
from medview.preprocess.audio import resample
from medview.ui.provenance import WARNING_STYLE
from tests.gui.test_lung_panel import ICBHI, open_and_classify

MEDITRON = "102_1b1_Ar_sc_Meditron"


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    if not shipped_engine.cards("lung_sound"):
        pytest.skip("no lung_sound bundle in resources/models")
    return shipped_engine


def test_a_recording_below_the_validated_sample_rate_is_warned_of_beside_the_verdict(
    qtbot: Any,
    window: Any,
    engine: Any,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    source = shared_data / ICBHI / f"{MEDITRON}.wav"
    samples, rate = soundfile.read(source, dtype="float32")
    path = tmp_path / f"{MEDITRON}_2kHz.wav"
    soundfile.write(path, resample(samples, rate, 2000), 2000, subtype="PCM_16")
    shutil.copy(source.with_suffix(".txt"), path.with_suffix(".txt"))  # its annotated cycles, unchanged
    window.set_engine(engine)

    result = open_and_classify(qtbot, window, path)
    lung = window.lung
    recording = lung.opened_recording.recording
    assert recording.sample_rate == 2000
    card = lung.selected_card()
    (warning,) = audio_fitness(card, recording, result.cycles)
    assert warning.startswith("The recording is sampled at 2000 Hz;")
    assert "4000 Hz or more" in warning
    assert lung.fitness_warnings == (warning,)

    # in the details, right under the verdict and the model's validated performance, before how it was reached
    details = lung.details.text()
    verdict = f"{len(result.scores)} cycles: "
    shown = f"<p style='{WARNING_STYLE}'>&nbsp;⚠ {html.escape(warning)}&nbsp;</p>"
    assert shown in details
    assert details.index(verdict) < details.index("Validated: ") < details.index(shown)
    assert details.index(shown) < details.index("Ensemble of ") < details.index("<table")
    assert lung.details.isVisible()

    # the original recording, at 44.1 kHz, draws none: the warning is about this recording, not the model
    open_and_classify(qtbot, window, source)
    assert lung.fitness_warnings == ()
    assert "⚠" not in lung.details.text()
