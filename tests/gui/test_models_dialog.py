"""The Models dialog on real widgets: listing, model cards, what is missing, importing folders and zips."""

from __future__ import annotations

import shutil
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from medview.config import Settings
from medview.engine.bundles import sha256_file
from medview.engine.manifest import DataProvenance, InputSpec, ModelCard, WeightFile, write_manifest
from medview.ui.models_dialog import ModelsDialog
from medview.ui.qt import QtWidgets
from medview.ui.workers import TaskRunner


def _bundle(folder: Path, *, demo: bool = True) -> Path:
    """A valid bundle on disk (manifest + checksummed safetensors); the dialog never reads the weights."""
    folder.mkdir(parents=True)
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(folder / "weights.safetensors"))
    card = ModelCard(
        id="lung-sound-demo",
        version="1.2.0",
        task="lung_sound",
        arch="lung_sound_cnn",
        arch_args={"num_classes": 4},
        weights=(WeightFile("weights.safetensors", sha256_file(folder / "weights.safetensors"), "safetensors"),),
        input=InputSpec(modality="audio", sample_rate=22050, normalisation="zscore"),
        class_names=("normal", "crackle", "wheeze", "both"),
        thresholds={},
        target_layer="features.6",
        trained_on=DataProvenance("ICBHI 2017 sample", "patients 102/104", {"cycles": 80}, demo=demo),
        metrics={"icbhi_score": 0.61},
        library_versions={"torch": "2.13.0"},
        created="2026-11-23T10:00:00+00:00",
        bundle_dir=folder,
    )
    write_manifest(card)
    return folder


@pytest.fixture
def dialog(qtbot: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModelsDialog:
    monkeypatch.setenv("MEDVIEW_MODELS_DIR", str(tmp_path / "user-models"))
    monkeypatch.setenv("MEDVIEW_RESOURCES", str(tmp_path / "resources"))
    runner = TaskRunner()
    widget = ModelsDialog(Settings(), runner)
    qtbot.addWidget(widget)
    widget.show()
    yield widget
    runner.pool.waitForDone(5000)


def _import(qtbot: Any, dialog: ModelsDialog, source: Path) -> None:
    task = dialog.import_from(source)
    qtbot.waitUntil(task.done.is_set, timeout=10_000)
    qtbot.wait(50)  # let the queued succeeded/errored signals reach the dialog


def test_without_bundles_the_dialog_says_what_is_missing_and_where_to_put_bundles(dialog: ModelsDialog) -> None:
    assert dialog.table.rowCount() == 0
    text = dialog.missing_label.text()
    assert "Liver segmentation" in text
    assert "Lung sounds" in text
    assert "Skin lesion" in text
    assert str(dialog.settings.user_models_dir()) in text
    assert "works as a viewer" in dialog.card_view.toPlainText()


def test_importing_a_zip_lists_the_bundle_with_its_model_card(qtbot: Any, dialog: ModelsDialog, tmp_path: Path) -> None:
    source = _bundle(tmp_path / "made" / "lung-sound-demo")
    archive = tmp_path / "lung-sound-demo.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in source.iterdir():
            handle.write(path, f"lung-sound-demo/{path.name}")
    with qtbot.waitSignal(dialog.bundles_changed, timeout=10_000):
        dialog.import_from(archive)
    assert dialog.table.rowCount() == 1
    assert dialog.table.item(0, 1).text() == "lung-sound-demo"
    assert "[demo]" in dialog.table.item(0, 3).text()
    card = dialog.card_view.toPlainText()
    assert "Demo model: not for diagnosis" in card
    assert "ICBHI 2017 sample" in card
    assert "icbhi_score 0.61" in card
    assert "80 cycles" in card
    assert "Lung sounds" not in dialog.missing_label.text()
    installed = dialog.settings.user_models_dir() / "lung-sound-demo-1.2.0"
    assert (installed / "manifest.json").is_file()
    assert "Imported lung-sound-demo 1.2.0" in dialog.status_label.text()

    _import(qtbot, dialog, archive)  # the same id and version again is refused, the installed one stays
    assert "already installed" in dialog.status_label.text()
    assert dialog.table.rowCount() == 1


def test_a_tampered_bundle_is_refused_naming_the_file_and_leaves_nothing(
    qtbot: Any, dialog: ModelsDialog, tmp_path: Path
) -> None:
    source = _bundle(tmp_path / "made" / "tampered")
    weights = source / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    _import(qtbot, dialog, source)
    assert "checksum mismatch" in dialog.status_label.text()
    assert "weights.safetensors" in dialog.status_label.text()
    assert dialog.table.rowCount() == 0
    user_dir = dialog.settings.user_models_dir()
    assert not any(user_dir.iterdir())  # no half-imported folder, no staging left over
    assert dialog.import_folder_button.isEnabled()


def test_a_zip_escaping_its_folder_and_a_plain_file_are_refused(
    qtbot: Any, dialog: ModelsDialog, tmp_path: Path
) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("../../outside.txt", "x")
    _import(qtbot, dialog, evil)
    assert "points outside the bundle" in dialog.status_label.text()
    assert not (tmp_path / "outside.txt").exists()
    text = tmp_path / "notes.txt"
    text.write_text("not a bundle")
    _import(qtbot, dialog, text)
    assert "expected a bundle folder or a .zip" in dialog.status_label.text()


def test_a_broken_bundle_in_the_model_folder_is_listed_as_refused(qtbot: Any, tmp_path: Path, monkeypatch) -> None:
    user = tmp_path / "user-models"
    shutil.copytree(_bundle(tmp_path / "made" / "good"), user / "good")
    broken = user / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text('{"schema_version": 99}')
    monkeypatch.setenv("MEDVIEW_MODELS_DIR", str(user))
    monkeypatch.setenv("MEDVIEW_RESOURCES", str(tmp_path / "resources"))  # without the shipped demo bundles
    widget = ModelsDialog(Settings(), TaskRunner())
    qtbot.addWidget(widget)
    assert widget.table.rowCount() == 1
    assert "Refused bundles" in widget.status_label.text()
    assert "schema_version: expected 1, got 99" in widget.status_label.text()


def test_the_main_window_opens_the_models_dialog(qtbot: Any, window: Any) -> None:
    dialog = window.show_models()
    assert dialog.isVisible()
    assert dialog.windowTitle() == "Models"
    dialog.close()


def test_the_engine_loads_after_the_window_and_the_about_dialog_names_its_device(
    qtbot: Any, window: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medview.app import start_engine

    monkeypatch.setenv("MEDVIEW_MODELS_DIR", str(tmp_path / "user-models"))
    monkeypatch.setenv("MEDVIEW_RESOURCES", str(tmp_path / "resources"))  # without the shipped demo bundles
    shutil.copytree(_bundle(tmp_path / "made" / "lung"), tmp_path / "user-models" / "lung")
    window.settings.device = "cpu"
    with qtbot.waitSignal(window.engine_ready, timeout=60_000):
        start_engine(window)
    assert [card.id for card in window.engine.cards("lung_sound")] == ["lung-sound-demo"]
    assert not window.progress.isVisible()  # the engine loads in the background, not as a cancellable load
    window.show_about()
    about = next(w for w in window.findChildren(QtWidgets.QDialog) if w.windowTitle() == "About MedView")
    assert "Inference device: CPU" in about.text


def test_the_engine_starts_after_the_first_slice_of_what_is_opened_or_by_its_timer(
    qtbot: Any, window: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medview.app as app

    monkeypatch.setenv("MEDVIEW_MODELS_DIR", str(tmp_path / "user-models"))
    monkeypatch.setenv("MEDVIEW_RESOURCES", str(tmp_path / "resources"))
    window.settings.device = "cpu"
    starts: list[float] = []
    monkeypatch.setattr(app, "start_engine", lambda _window: starts.append(time.monotonic()))
    monkeypatch.setattr(app, "ENGINE_START_OPENING_MS", 60_000)  # only the first slice can start it here
    app.start_engine_after_first_frames(window, opening=True)
    qtbot.wait(300)
    assert starts == []  # nothing shown yet: torch's import waits
    shown = time.monotonic()
    window.ct.first_slice_shown.emit()
    window.ct.first_slice_shown.emit()  # a second series' first slice starts nothing more
    qtbot.waitUntil(lambda: len(starts) == 1, timeout=5_000)
    assert starts[0] - shown >= app.ENGINE_AFTER_SLICE_MS / 1000 * 0.9
    qtbot.wait(300)
    assert len(starts) == 1
    app.start_engine_after_first_frames(window, opening=False)  # nothing opened: its timer starts it
    qtbot.waitUntil(lambda: len(starts) == 2, timeout=5_000)


def test_a_device_that_is_not_there_leaves_the_viewer_working_and_says_why(qtbot: Any, window: Any) -> None:
    from medview.app import start_engine
    from medview.engine.device import available_devices

    if "cuda" in available_devices():
        pytest.skip("this machine has CUDA")
    window.settings.device = "cuda"
    task = start_engine(window)
    qtbot.waitUntil(lambda: bool(window.engine_problem), timeout=60_000)
    assert task.done.is_set()
    assert window.engine is None
    assert "'cuda' was chosen in the settings but is not available" in window.engine_problem
    assert "AI models unavailable" in window.statusBar().currentMessage()


def test_the_shipped_demo_bundles_are_listed_as_demo_models(qtbot: Any, tmp_path: Path, monkeypatch) -> None:
    from medview.config import resources_dir

    shipped = sorted(path.name for path in (resources_dir() / "models").glob("*/manifest.json"))
    if not shipped:
        pytest.skip("no demo bundles in resources/models")
    monkeypatch.setenv("MEDVIEW_MODELS_DIR", str(tmp_path / "user-models"))
    widget = ModelsDialog(Settings(), TaskRunner())
    qtbot.addWidget(widget)
    assert widget.table.rowCount() == len(shipped)
    assert "Refused" not in widget.status_label.text()
    widget.table.selectRow(0)
    assert "not for diagnosis" in widget.card_view.toPlainText().lower()
