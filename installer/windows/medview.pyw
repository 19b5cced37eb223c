"""MedView's Windows launcher: the Python and resources installed beside it; nothing from the network.

The Start menu entry runs it with pythonw.exe (no console window); medview-selftest.cmd runs it with
python.exe and --self-test, so the steps print in the console.
"""

import os
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
os.environ.setdefault("MEDVIEW_RESOURCES", str(here / "resources"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model bundles are local: timm's hub client never tries
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # onnxruntime's usage telemetry to Microsoft: off

from medview.app import run  # noqa: E402 - after the environment is set

sys.exit(run())
