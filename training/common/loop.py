"""The one training loop every network of the five papers goes through.

It owns what every paper's protocol shares: epochs over shuffled batches with a
progress bar, validation after each epoch, keeping the best weights by a
monitored validation metric, early stopping, snapshots (paper 004's snapshot
ensemble), a resumable checkpoint written after every epoch, and DistributedDataParallel
when launched by ``torchrun`` with more than one process.  What differs
between papers (loss, metrics, schedule) comes in as functions.

Checkpoints hold only tensors and plain data and are read back with
``torch.load(weights_only=True)``: resuming never unpickles code.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

log = logging.getLogger(__name__)

# (model, batch, device) -> (mean loss of the batch, number of correct predictions, batch size); for a
# segmentation batch "correct" is the sum of the slices' pixel accuracies, a fraction per slice
LossStep = Callable[[nn.Module, Any, torch.device], tuple[torch.Tensor, float, int]]
# (model, device) -> validation metrics; must contain the monitored key
Validate = Callable[[nn.Module, torch.device], Mapping[str, float]]
# (optimizer, batches per epoch in this process) -> scheduler
SchedulerFactory = Callable[[torch.optim.Optimizer, int], torch.optim.lr_scheduler.LRScheduler]


@dataclass(frozen=True)
class FitConfig:
    """How long and how to train; ``monitor`` names a validation metric, higher is better unless ``minimise``."""

    epochs: int
    batch_size: int
    monitor: str = "val_accuracy"
    minimise: bool = False
    patience: int | None = None  # early stopping: epochs without improvement of ``monitor``
    snapshot_every: int | None = None  # keep a copy of the weights every N epochs (snapshot ensembles)
    scheduler_per_batch: bool = False  # step the scheduler after every batch instead of every epoch
    checkpoint: Path | None = None  # written after every epoch
    resume: bool = False  # continue from ``checkpoint`` when it exists (it must match ``fingerprint``)
    fingerprint: str = (
        ""  # what the run is (split digest, architecture, epochs): a checkpoint of another run is refused
    )
    num_workers: int = 0
    progress: bool = True
    description: str = "training"


class RestoredTime:
    """The seconds that epochs restored from checkpoints took in the earlier runs that trained them.

    A run resumed with ``--resume`` skips those epochs, so its own clock would
    record only the rest: a manifest's training time must count them too.  Each
    epoch's record carries its ``seconds``; ``fit`` adds those of the epochs it
    restores here, and ``training.common.run.start_run`` resets it for each
    task's run.  (Checkpoints written before epochs carried ``seconds`` count 0.)
    """

    seconds = 0.0

    @classmethod
    def reset(cls) -> None:
        cls.seconds = 0.0

    @classmethod
    def add(cls, history: Iterable[Mapping[str, float]]) -> None:
        cls.seconds += sum(float(record.get("seconds", 0.0)) for record in history)


@dataclass
class FitResult:
    """What a run produced: the history per epoch, the best weights, and any snapshots."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: int = 0
    best_value: float = math.nan
    snapshots: list[dict[str, torch.Tensor]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` launch (world size 1 when run plainly)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """Read torchrun's variables and join the process group when there is more than one process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))

    def device(self, preferred: torch.device) -> torch.device:
        """One GPU per process under torchrun; the preferred device otherwise."""
        if self.world_size > 1 and preferred.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return preferred


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in _unwrap(model).state_dict().items()}


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _improved(value: float, best: float, minimise: bool) -> bool:
    if math.isnan(best):
        return not math.isnan(value)
    return value < best if minimise else value > best


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_data: Dataset,
    loss_step: LossStep,
    config: FitConfig,
    *,
    device: torch.device,
    validate: Validate | None = None,
    scheduler_factory: SchedulerFactory | None = None,
    generator: torch.Generator | None = None,
    collate: Callable[[list[Any]], Any] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``model`` in place; the result holds the best weights by ``config.monitor``.

    Without ``validate`` the training loss (``minimise``) or accuracy stands in
    for the monitored metric, for both the best weights and early stopping.

    ``on_epoch_start(epoch)`` lets a dataset draw new augmentations per epoch
    (deterministic from the seed and the epoch, so a resumed run matches).
    """
    distributed = Distributed.from_environment()
    device = distributed.device(device)
    model.to(device)
    result = FitResult()
    start_epoch = 1
    # a stage without a checkpoint yet (the run stopped before it) starts from scratch
    resuming = config.resume and config.checkpoint is not None and config.checkpoint.exists()
    if resuming:
        # every process loads the same file before DDP wraps the model, so all continue from the same weights
        state = _load_checkpoint(config.checkpoint, config.fingerprint)
        model.load_state_dict(state["model"])
        model.to(device)
    trained: nn.Module = model
    sampler = None
    if distributed.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        # every process must draw the same permutation for the sampler to hand each a distinct part
        seed = generator.initial_seed() % 2**31 if generator is not None else 0
        sampler = DistributedSampler(train_data, shuffle=True, seed=seed)
    per_process = len(sampler) if sampler is not None else len(train_data)  # type: ignore[arg-type]
    loader = DataLoader(
        train_data,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
        num_workers=config.num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        drop_last=per_process > 1 and per_process % config.batch_size == 1,  # a lone sample breaks BatchNorm
    )
    scheduler = scheduler_factory(optimizer, len(loader)) if scheduler_factory is not None else None
    if resuming:
        start_epoch = _restore(state, optimizer, scheduler, generator, result)
        RestoredTime.add(result.history)
        if distributed.main:
            log.info("resumed %s at epoch %d from %s", config.description, start_epoch, config.checkpoint)
    since_best = 0 if not result.history else int(result.history[-1].get("epochs_since_best", 0))

    for epoch in range(start_epoch, config.epochs + 1):
        if result.stopped_early:
            break
        if sampler is not None:
            sampler.set_epoch(epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        epoch_started = time.perf_counter()
        trained.train()
        total_loss, correct, seen = 0.0, 0.0, 0
        bar: Iterable[Any] = tqdm(
            loader,
            desc=f"{config.description} {epoch}/{config.epochs}",
            disable=not (config.progress and distributed.main),
            leave=False,
            file=sys.stderr,
        )
        for batch in bar:
            optimizer.zero_grad(set_to_none=True)
            loss, batch_correct, batch_size = loss_step(trained, batch, device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{config.description}: the loss became {loss.item()} in epoch {epoch}")
            loss.backward()
            optimizer.step()
            if scheduler is not None and config.scheduler_per_batch:
                scheduler.step()
            total_loss += float(loss.detach()) * batch_size
            correct += batch_correct
            seen += batch_size
        if scheduler is not None and not config.scheduler_per_batch:
            scheduler.step()
        if distributed.world_size > 1:  # every process must see the same numbers to make the same decisions
            totals = torch.tensor([total_loss, correct, seen], dtype=torch.float64, device=device)
            dist.all_reduce(totals)
            total_loss, correct, seen = float(totals[0]), float(totals[1]), int(totals[2])

        record = {
            "epoch": float(epoch),
            "train_loss": total_loss / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
        }
        if validate is not None:
            model.eval()
            with torch.no_grad():
                record.update({f"val_{key}": float(value) for key, value in validate(model, device).items()})
        if validate is not None and config.monitor not in record:
            raise KeyError(f"{config.description}: validation gave {sorted(record)}, not {config.monitor!r}")
        monitored = record.get(config.monitor, record["train_loss"] if config.minimise else record["train_accuracy"])
        if _improved(monitored, result.best_value, config.minimise):
            result.best_value, result.best_epoch, since_best = monitored, epoch, 0
            result.best_state = _cpu_state(model)
        else:
            since_best += 1
        if config.snapshot_every and epoch % config.snapshot_every == 0:
            result.snapshots.append(_cpu_state(model))
        record["epochs_since_best"] = float(since_best)
        record["seconds"] = time.perf_counter() - epoch_started
        result.history.append(record)
        if config.patience is not None and since_best >= config.patience:
            result.stopped_early = True
        if distributed.main:
            log.info(
                "%s epoch %d: %s",
                config.description,
                epoch,
                ", ".join(f"{key} {value:.4f}" for key, value in record.items() if key != "epoch"),
            )
            if config.checkpoint is not None:
                _save(config.checkpoint, config.fingerprint, epoch, model, optimizer, scheduler, generator, result)
        if distributed.world_size > 1:
            dist.barrier()  # nobody runs ahead of the checkpoint
    if result.best_state is None:
        result.best_state = _cpu_state(model)
    return result


def _save(
    path: Path,
    fingerprint: str,
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    generator: torch.Generator | None,
    result: FitResult,
) -> None:
    state = {
        "fingerprint": fingerprint,
        "epoch": epoch,
        "model": _cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "generator": generator.get_state() if generator is not None else None,
        "history": result.history,
        "best_state": result.best_state,
        "best_epoch": result.best_epoch,
        "best_value": result.best_value,
        "snapshots": result.snapshots,
        "stopped_early": result.stopped_early,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save(state, partial)
    partial.replace(path)  # a run killed while saving keeps the previous checkpoint


def _load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint", "") != fingerprint:
        raise ValueError(
            f"checkpoint {path} belongs to another run ({state.get('fingerprint')!r}, this run is {fingerprint!r}): "
            "resuming it could train on this run's test patients; start without --resume"
        )
    return state


def _restore(
    state: Mapping[str, Any],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    generator: torch.Generator | None,
    result: FitResult,
) -> int:
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    result.history = list(state["history"])
    result.best_state = state["best_state"]
    result.best_epoch = int(state["best_epoch"])
    result.best_value = float(state["best_value"])
    result.snapshots = list(state["snapshots"])
    result.stopped_early = bool(state["stopped_early"])
    return int(state["epoch"]) + 1
