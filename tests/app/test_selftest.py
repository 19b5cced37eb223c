"""``medview --self-test`` as hospital IT runs it after an install: a fresh process, fresh user folders, offscreen."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECORDING = Path("lung_sound") / "icbhi_sample" / "104_1b1_Lr_sc_Litt3200.wav"  # the smallest, 15 s at 4 kHz
STEP = re.compile(r"^self-test (\S+)\s+(ok|FAILED|skipped)\s+(\d+\.\d\d) s  (.*)$", re.MULTILINE)


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
    assert list(steps) == ["window", "series", "recording", "engine", "lung-sounds", "liver", "network", "close"]
    assert {status for status, _, _ in steps.values()} == {"ok"}, output
    assert re.fullmatch(r"time to window \d+\.\d\d s from process start", steps["window"][2])
    assert steps["series"][2].startswith("20 x 512 x 512 voxels from ")
    assert steps["series"][2].endswith(str(Path("samples") / "totalsegmentator_ct" / "dicom"))
    # the cycles of the official annotation file, each classified by the shipped ensemble
    cycles = len([line for line in recording.with_suffix(".txt").read_text().splitlines() if line.strip()])
    assert f"{recording.name}: 15.0 s at 4000 Hz, {cycles} cycles" in steps["recording"][2]
    assert steps["lung-sounds"][2].startswith(f"{cycles} cycles: ")
    assert "lung-sound" in steps["lung-sounds"][2]
    assert re.match(r"Liver [\d,]+ mL: liver-eas-unet .*, slices \d+-\d+ of 20", steps["liver"][2])
    assert "models" in steps["engine"][2]
    assert re.search(r"^self-test passed in \d+\.\d s$", output, re.MULTILINE)
    assert "Traceback" not in output
    # the ONNX graphs of the models that ran went to the cache folder given, nowhere else
    assert any((tmp_path / "cache").rglob("*.onnx"))
    # onnxruntime's telemetry is off: it neither tries to upload nor keeps its device id and event store
    assert steps["network"][2].endswith("onnxruntime telemetry off")
    assert not (tmp_path / "home" / ".cache" / "Microsoft").exists()


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
