"""The verdict of a skin photo carries the model's validated sensitivity and specificity with their 95% intervals
(issue 20), when the bundle records them; driven through the real window."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from medview.config import resources_dir

RESULT_TIMEOUT_MS = 60_000


def test_the_verdict_shows_the_validated_rates_with_their_95_percent_intervals(
    qtbot: Any, window: Any, shared_data: Path, tmp_path: Path
) -> None:
    from medview.engine.service import Engine

    bundle = Path(shutil.copytree(resources_dir() / "models" / "skin-demo", tmp_path / "models" / "skin-demo"))
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    manifest["metrics"].update(
        sensitivity=0.9589,
        specificity=0.2866,
        sensitivity_ci_low=0.886,
        sensitivity_ci_high=0.9859,
        specificity_ci_low=0.2389,
        specificity_ci_high=0.3396,
    )
    manifest["trained_on"]["counts"]["test"] = 380
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")

    window.set_engine(Engine([bundle.parent], device_preference="cpu"))
    photo = shared_data / "skin" / "isic2017_256px" / "images" / "ISIC_0000550.jpg"
    window.open_paths([photo])
    skin = window.skin
    qtbot.waitUntil(
        lambda: len(skin.entries) == 1 and skin.entries[0].result is not None and not skin.running,
        timeout=RESULT_TIMEOUT_MS,
    )
    threshold = manifest["thresholds"]["malignant"]
    verdict = skin.views[0].verdict.text()
    assert (
        f"Validated: sensitivity 0.96, specificity 0.29 at threshold {threshold:g} "
        "(95% CI: sensitivity 0.89–0.99, specificity 0.24–0.34); on 380 held-out images"
    ) in verdict
