"""``medview --self-test`` as hospital IT runs it after an install: a fresh process, fresh user folders, offscreen."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medview.app import parse_args
from medview.config import resources_dir
from medview.engine.bundles import find_bundles
from medview.ui.selftest import STEP_TIMEOUT_S, TASK_STEPS, steps_for, tasks_without_step

REPO = Path(__file__).resolve().parents[2]
RECORDING = Path("lung_sound") / "icbhi_sample" / "104_1b1_Lr_sc_Litt3200.wav"  # the smallest, 15 s at 4 kHz
STEP = re.compile(r"^self-test (\S+)\s+(ok|FAILED|skipped)\s+(\d+\.\d\d) s  (.*)$", re.MULTILINE)
#: the AI steps ``medview --self-test`` runs on a plain install: one per task of the bundles shipped
SHIPPED_TASK_STEPS = steps_for(card.task for card in find_bundles([REPO / "resources" / "models"]).cards)


def self_test(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, tuple], str]:
    """Run ``python -m medview --self-test`` with fresh per-user folders; (exit code, steps by name, output)."""
    environment = {
        **os.environ,
        "QT_QPA_PLATFORM": "offscreen",
        "MEDVIEW_CONFIG_DIR": str(tmp_path / "config"),
        "MEDVIEW_DATA_DIR": str(tmp_path / "data"),
        "MEDVIEW_CACHE_DIR": str(tmp_path / "cache"),
        "HOME": str(tmp_path / "home"),  # what a library writes in the home folder stays here, to be looked at
    }
    for name in ("MEDVIEW_MODELS_DIR", "MEDVIEW_RESOURCES", "ORT_DISABLE_TELEMETRY"):
        environment.pop(name, None)
    environment.update(env or {})
    (tmp_path / "home").mkdir(exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "medview", "--self-test", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        cwd=REPO,
        check=False,
    )
    steps = {name: (status, float(seconds), detail) for name, status, seconds, detail in STEP.findall(result.stdout)}
    return result.returncode, steps, result.stdout + result.stderr


def test_every_step_passes_on_the_sample_series_and_a_real_recording(tmp_path: Path, shared_data: Path) -> None:
    recording = shared_data / RECORDING
    code, steps, output = self_test(tmp_path, "--self-test-recording", str(recording))

    assert code == 0, output
    # one step per installed task, each run once: adding a task (with its step) does not change this test
    assert list(steps) == ["window", "series", "recording", "engine", *SHIPPED_TASK_STEPS, "network", "close"]
    assert set(SHIPPED_TASK_STEPS) == set(TASK_STEPS)  # resources/models ships a bundle of every task
    assert {status for status, _, _ in steps.values()} == {"ok"}, output
    assert re.fullmatch(r"time to window \d+\.\d\d s from process start", steps["window"][2])
    assert steps["series"][2].startswith("20 x 512 x 512 voxels from ")
    assert steps["series"][2].endswith(str(Path("samples") / "totalsegmentator_ct" / "dicom"))
    # the cycles of the official annotation file, each classified by the shipped ensemble
    cycles = len([line for line in recording.with_suffix(".txt").read_text().splitlines() if line.strip()])
    assert f"{recording.name}: 15.0 s at 4000 Hz, {cycles} cycles" in steps["recording"][2]
    assert steps["lung-sounds"][2].startswith(f"{cycles} cycles ({recording.name}): ")
    assert "lung-sound" in steps["lung-sounds"][2]
    assert re.match(r"Liver .*[\d,]+ mL.*: liver-eas-unet .*, slices \d+-\d+ of 20", steps["liver"][2])
    # kidney stone and COVID-19 on the same 20-slice series, COVID-19 with the shipped lung U-Net's mask
    # (the findings' titles change with the panel: only what the self-test adds is matched exactly)
    assert re.search(r"Kidney stone\W.*\b\d+ of 20 slices\b.*; Grad-CAM of \d+ slice", steps["kidney"][2])
    assert re.search(r"COVID-19\W.*; \d+ of 20 slices kept, lung mask: lung U-Net covid-lung-unet ", steps["covid"][2])
    # the first bundled photo, with the saliency map the skin workspace shows
    assert re.match(r"ISIC_0000155\.jpg: (benign|malignant) .*, with saliency map; ", steps["skin"][2])
    assert "models" in steps["engine"][2]
    assert re.search(r"^self-test passed in \d+\.\d s$", output, re.MULTILINE)
    assert "Traceback" not in output
    # the ONNX graphs of the models that ran went to the cache folder given, nowhere else
    assert any((tmp_path / "cache").rglob("*.onnx"))
    # onnxruntime's telemetry is off: it neither tries to upload nor keeps its device id and event store
    assert steps["network"][2].endswith("onnxruntime telemetry off")
    assert not (tmp_path / "home" / ".cache" / "Microsoft").exists()


def test_without_a_recording_the_lung_sound_model_runs_on_a_synthetic_signal_and_says_so(tmp_path: Path) -> None:
    """No real recording may be bundled (licence): the lung sound model is run on a synthetic breathing signal,
    and its step says that this checks the model runs, not what it finds."""
    code, steps, output = self_test(tmp_path)

    assert code == 0, output
    assert list(steps) == ["window", "series", "recording", "engine", *SHIPPED_TASK_STEPS, "network", "close"]
    assert {status for status, _, _ in steps.values()} == {"ok"}, output
    assert steps["recording"][2].startswith("self-test-synthetic-breathing.wav: 20.0 s at 4000 Hz, ")
    assert "(synthetic test signal: checks that the model loads and runs, not what it finds)" in steps["lung-sounds"][2]
    assert re.search(r"^self-test passed in \d+\.\d s$", output, re.MULTILINE)


def test_a_model_that_fails_fails_its_step_and_the_self_test(tmp_path: Path, shared_data: Path) -> None:
    """A kidney bundle damaged after the install (its weights no longer match the manifest's checksum): the
    window says so when the model is run, the kidney step fails with that message and the steps after it do not
    run."""
    resources = tmp_path / "resources"
    (resources / "models").mkdir(parents=True)
    (resources / "samples").symlink_to(resources_dir() / "samples")
    for bundle in sorted((resources_dir() / "models").iterdir()):
        if bundle.name != "kidney-demo":
            (resources / "models" / bundle.name).symlink_to(bundle)
    damaged = resources / "models" / "kidney-demo"
    shutil.copytree(resources_dir() / "models" / "kidney-demo", damaged)
    weights = next(damaged.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))

    code, steps, output = self_test(
        tmp_path, "--self-test-recording", str(shared_data / RECORDING), env={"MEDVIEW_RESOURCES": str(resources)}
    )

    assert code == 1, output
    assert steps["liver"][0] == "ok"
    status, _, detail = steps["kidney"]
    assert status == "FAILED"
    assert detail.startswith("the window showed an error: "), detail
    assert "checksum" in detail.lower() or "sha256" in detail.lower(), detail
    after = SHIPPED_TASK_STEPS[SHIPPED_TASK_STEPS.index("kidney") + 1 :]
    assert not set(after) & set(steps)
    assert "close" not in steps
    assert re.search(r"^self-test FAILED after \d+\.\d s$", output, re.MULTILINE)


def test_every_installed_task_has_a_step() -> None:
    """Each task of the shipped bundles is run by a self-test step, each step has a time limit: a bundle of a new
    task without its step would leave its model unchecked (and the self-test refuses to pass then)."""
    tasks = {card.task for card in find_bundles([resources_dir() / "models"]).cards}
    assert tasks
    assert tasks_without_step(tasks) == []
    assert {task for step in steps_for(tasks) for task in TASK_STEPS[step]} >= tasks
    assert set(TASK_STEPS) <= set(STEP_TIMEOUT_S)
    assert tasks_without_step(["liver_segmentation", "a_new_task"]) == ["a_new_task"]


def test_every_resources_path_named_in_help_exists(capsys: pytest.CaptureFixture[str]) -> None:
    """IT follows ``medview --help`` to the sample files: each resources path it names ships."""
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    named = re.findall(r"resources[/\\]([\w./\\-]*\w)", text)
    assert len(named) >= 3, text
    for path in named:
        assert (resources_dir() / path).exists(), f"--help names resources/{path}, which does not exist"


def test_an_error_the_window_shows_fails_the_step_and_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "not_a_recording.wav"
    bad.write_text("just some text, not audio")
    code, steps, output = self_test(tmp_path, "--self-test-recording", str(bad))

    assert code == 1, output
    assert steps["series"][0] == "ok"
    status, _, detail = steps["recording"]
    assert status == "FAILED"
    assert detail.startswith("the window showed an error: ")
    assert "not_a_recording.wav" in detail
    assert "liver" not in steps  # the steps after a failure do not run
    assert re.search(r"^self-test FAILED after \d+\.\d s$", output, re.MULTILINE)


def test_the_network_watch_blocks_and_records_connections_but_not_loopback() -> None:
    script = """
        import socket
        from medview.ui.selftest import NetworkWatch

        watch = NetworkWatch().install()
        for attempt in (lambda: socket.socket().connect(("192.0.2.1", 104)),
                        lambda: socket.getaddrinfo("pacs.example.org", 104)):
            try:
                attempt()
            except OSError as error:
                print("BLOCKED", error)
        server = socket.create_server(("127.0.0.1", 0))
        socket.create_connection(server.getsockname(), timeout=1).close()
        print("LOOPBACK OK")
        print("ATTEMPTS", watch.attempts)
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("BLOCKED")] == [
        "BLOCKED MedView self-test: network use blocked (connect 192.0.2.1:104)",
        "BLOCKED MedView self-test: network use blocked (getaddrinfo 'pacs.example.org')",
    ]
    assert "LOOPBACK OK" in lines
    assert "ATTEMPTS ['connect 192.0.2.1:104', \"getaddrinfo 'pacs.example.org'\"]" in lines


def test_resources_not_found_are_named(tmp_path: Path) -> None:
    """A launcher whose MEDVIEW_RESOURCES points at the wrong folder: the self-test says which folder."""
    empty = tmp_path / "resources"
    empty.mkdir()
    code, steps, output = self_test(tmp_path, env={"MEDVIEW_RESOURCES": str(empty)})
    assert code == 1, output
    assert steps["window"][0] == "ok"
    assert steps["series"][0] == "FAILED"
    assert f"the sample series is missing: {empty}" in steps["series"][2]
