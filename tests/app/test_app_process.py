"""The app as a process: UI without torch, start-up smoke test, a real window under Xvfb."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"


def run_python(code: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment."""
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=REPO,
        check=False,
    )


def test_ui_import_leaves_torch_unloaded() -> None:
    result = run_python(
        """
        import sys
        import medview.app, medview.ui.main_window, medview.ui.ct.slice_view, medview.ui.ct.panels
        import medview.ui.skin.panel
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm"))
        print("LOADED", loaded)
        sys.exit(1 if loaded else 0)
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _start_script(quit_after_ms: int) -> str:
    return f"""
        import sys
        from medview.ui.qt import QtCore, QtWidgets
        import medview.app as app_module

        QtCore.QTimer.singleShot({quit_after_ms}, lambda: (print("TIMEOUT"), QtWidgets.QApplication.exit(3)))

        def on_shown():
            window = next(w for w in QtWidgets.QApplication.topLevelWidgets() if w.objectName() == "main_window")
            def loaded(volume):
                print("LOADED", volume.shape)
                def layers_ready():
                    if window.ct.layers.layers:
                        print("LAYERS", [layer.name for layer in window.ct.layers.layers])
                        print("PHOTOS", sorted(entry.path.name for entry in window.skin.entries))
                        finish(window)
                    else:
                        QtCore.QTimer.singleShot(50, layers_ready)
                layers_ready()
            window.ct.volume_loaded.connect(loaded)

        def finish(window):
            target = sys.argv[-1] if len(sys.argv) > 1 and sys.argv[-1].endswith(".png") else None
            if target:
                QtWidgets.QApplication.processEvents()
                screen = QtWidgets.QApplication.primaryScreen()
                screen.grabWindow(0).save(target)
                print("SCREENSHOT", target)
            window.close()
            QtWidgets.QApplication.exit(0)

        QtCore.QTimer.singleShot(0, on_shown)
        sys.exit(app_module.run(["--sample"]))
        """


def test_app_starts_on_the_sample_and_exits_cleanly(tmp_path: Path) -> None:
    result = run_python(_start_script(60000), env={"MEDVIEW_CONFIG_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED (20, 512, 512)" in result.stdout
    assert "liver_mask.nii.gz" in result.stdout
    assert "'ISIC_0000155.jpg'" in result.stdout  # the sample photos are listed in the skin workspace
    assert "Traceback" not in result.stderr
    # the audit log (MEDVIEW_DATA_DIR of this test, inherited) records the app's own start and stop around the rest
    from medview.audit import audit_log

    events = [event.event_type for event in audit_log().read_events()]
    assert events[0] == "Application Start", events
    assert events[-1] == "Application Stop", events


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="xvfb-run not installed (bootstrap installs it)")
def test_real_window_screenshot_under_xvfb(tmp_path: Path) -> None:
    """Open the real window on a virtual X screen and save what the user sees."""
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / "screenshot_sample_liver.png"
    target.unlink(missing_ok=True)
    script = tmp_path / "start.py"
    script.write_text(textwrap.dedent(_start_script(90000)))
    environment = {**os.environ, "QT_QPA_PLATFORM": "xcb", "MEDVIEW_CONFIG_DIR": str(tmp_path)}
    result = subprocess.run(
        ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", sys.executable, str(script), str(target)],
        capture_output=True,
        text=True,
        timeout=180,
        env=environment,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert target.is_file(), result.stdout

    from PIL import Image

    pixels = np.asarray(Image.open(target).convert("RGB")).astype(int)
    assert pixels.std() > 20, "the screenshot is blank"
    # the liver overlay is drawn in red over grey anatomy: there must be clearly red pixels
    red = (pixels[..., 0] > pixels[..., 1] + 50) & (pixels[..., 0] > pixels[..., 2] + 50)
    assert red.sum() > 5000, f"no liver overlay visible ({red.sum()} red pixels)"
