"""Settings survive a kill -9 in the middle of saving: the file is always the old or the new one, never torn."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medview.config import Settings

SAVE_FOREVER = """
import sys
from pathlib import Path
from medview.config import Settings

folder = Path(sys.argv[1])
settings = Settings()
settings.recent_paths = [f"/studies/{number:04d}" for number in range(10)]
settings.last_directory = "/round/first"
settings.save(folder)  # one whole file before the kill can come: a busy machine may not reach it in 50 ms
print("saving", flush=True)
for round_number in range(1_000_000):
    settings.last_directory = f"/round/{round_number}"
    settings.pacs_remote_host = "pacs.example" + "x" * (round_number % 200)
    settings.save(folder)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="no SIGKILL on this platform")
@pytest.mark.parametrize("after_s", [0.05, 0.2, 0.5])
def test_settings_saved_in_a_loop_read_back_whole_after_kill_9(tmp_path: Path, after_s: float) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SAVE_FOREVER, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stdout.readline() == b"saving\n"
    time.sleep(after_s)
    process.kill()
    assert process.wait(timeout=30) == -signal.SIGKILL

    raw = json.loads((tmp_path / "settings.json").read_text(encoding="utf-8"))  # whole JSON, not a torn write
    loaded = Settings.load(tmp_path)
    assert loaded.recent_paths == [f"/studies/{number:04d}" for number in range(10)]
    assert loaded.last_directory == raw["last_directory"]
    assert loaded.last_directory.startswith("/round/")
    assert loaded.pacs_remote_host.startswith("pacs.example")
