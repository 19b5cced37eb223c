"""Paper 004's protocol: a snapshot ensemble of the lung-sound CNN over ICBHI respiratory cycles.

- Inputs exactly as the app computes them (``medview.preprocess.audio``): 22,050
  Hz, 9 s sample-padded segments, log-mel (FFT 512, hop 512, 50 mels), z-score,
  2 chunks of 193 frames; each chunk carries its cycle's label.
- Augmentation, drawn anew every epoch from the seed and the epoch number: a
  cyclic roll of each segment by a random offset; VTLP with a warp factor from
  U(0.9, 1.1) and F_hi from U(3200, 3800) applied to the mel filterbank; and,
  once before training, a time-stretched copy (rate from U(0.9, 1.1)) of every
  wheeze and both cycle, doubling those classes.
- Focal loss with gamma 1; Adam at lr 1e-4, batch 32; the paper's L2
  regularisation of 0.001 (Keras: 0.001 * sum(w^2) added to the loss) is the
  same gradient as a weight decay of 0.002 on the conv and dense kernels.
- Snapshot ensemble: cosine annealing of the learning rate from 1e-4 to 0
  within each cycle, restarted every cycle (stepped per batch), a snapshot of
  the weights at the end of each cycle; M = 8 cycles of 20 epochs in the paper.
  The ensemble averages the class probabilities of all snapshots over all
  chunks of a cycle; the argmax is the cycle's label.
- Evaluation per cycle: ICBHI specificity, sensitivity and score, 4-class and
  2-class (normal vs any adventitious sound, from the same predictions), on
  the official split when given, else on ``repeats`` random 80/20 splits by
  patient (paper: 10), averaged; the bundle is the ensemble of the first split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import Dataset

from medview.engine.manifest import DataProvenance, InputSpec
from medview.engine.pipelines.lung_sound import snapshot_probabilities
from medview.io.audio import ICBHI_CLASSES
from medview.models import create_model
from medview.preprocess.audio import (
    CHUNKS_PER_SEGMENT,
    HOP_LENGTH,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    SEGMENT_SAMPLES,
    SEGMENT_SECONDS,
    cycle_chunks,
    log_mel,
    mel_filterbank,
    sample_padded_segments,
    split_chunks,
)
from training.common.loop import fit
from training.common.losses import classification_step, focal_loss
from training.common.metrics import icbhi_scores, normalised_confusion
from training.common.report import PaperRow, plot_confusion, plot_history
from training.common.run import RunOptions, TaskOutcome, finish_report, manifest_metrics, start_run
from training.common.seeding import seed_everything
from training.common.splits import Split, official_split, random_patient_splits
from training.export import as_shipped, export_bundle
from training.lung.data import LabelledCycle, read_icbhi_dataset

log = logging.getLogger("training.lung")

LEARNING_RATE, BATCH, L2_DECAY, FOCAL_GAMMA = 1e-4, 32, 2 * 0.001, 1.0
STRETCHED = (ICBHI_CLASSES.index("wheeze"), ICBHI_CLASSES.index("both"))
TEST_FRACTION = 0.2

PAPER_ROWS = (
    PaperRow("specificity", "Sp (4-class)", 0.873),
    PaperRow("sensitivity", "Se (4-class)", 0.694),
    PaperRow("score", "ICBHI score (4-class)", 0.784),
    PaperRow("specificity_2class", "Sp (2-class)", None),
    PaperRow("sensitivity_2class", "Se (2-class)", None),
    PaperRow("score_2class", "ICBHI score (2-class)", 0.837),
)


@dataclass(frozen=True)
class LungSettings:
    """Task options beyond :class:`RunOptions` (``medview-train lung --help``)."""

    cycles: int = 8  # snapshots (M)
    epochs_per_cycle: int = 20
    repeats: int = 10  # random patient splits to evaluate (paper: 10), without an official split


def _stretch(samples: np.ndarray, rate: float) -> np.ndarray:
    import librosa  # training only: the app never time-stretches

    return librosa.effects.time_stretch(samples, rate=rate).astype(np.float32)


class AugmentedChunks(Dataset):
    """The training cycles as chunks, re-augmented by :meth:`draw` at the start of every epoch."""

    def __init__(self, cycles: Sequence[LabelledCycle], seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.waves = [cycle.samples for cycle in cycles]
        self.labels = [cycle.label for cycle in cycles]
        for cycle in cycles:
            if cycle.label in STRETCHED:
                self.waves.append(_stretch(cycle.samples, float(rng.uniform(0.9, 1.1))))
                self.labels.append(cycle.label)
        self.seed = seed
        # chunks per cycle do not depend on the augmentation (a roll keeps the length): count them once
        self.count = sum(-(-wave.size // SEGMENT_SAMPLES) * CHUNKS_PER_SEGMENT for wave in self.waves)
        self.inputs = np.zeros((0, 1, N_MELS, 1), dtype=np.float32)
        self.targets = np.zeros(0, dtype=np.int64)

    def draw(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        inputs, targets = [], []
        for wave, label in zip(self.waves, self.labels, strict=True):
            filterbank = mel_filterbank(
                vtlp_alpha=float(rng.uniform(0.9, 1.1)), vtlp_f_hi=float(rng.uniform(3200, 3800))
            )
            for segment in sample_padded_segments(wave):
                rolled = np.roll(segment, int(rng.integers(segment.size)))
                chunks = split_chunks(log_mel(rolled, filterbank))
                inputs.append(chunks[:, None])
                targets.extend([label] * len(chunks))
        self.inputs = np.concatenate(inputs)
        self.targets = np.asarray(targets, dtype=np.int64)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.inputs[index]), int(self.targets[index])


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    kernels = [p for p in model.parameters() if p.ndim > 1]
    others = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.Adam(
        [{"params": kernels, "weight_decay": L2_DECAY}, {"params": others, "weight_decay": 0.0}], lr=LEARNING_RATE
    )


def ensemble_probabilities(
    networks: Sequence[nn.Module], cycles: Sequence[LabelledCycle], device: torch.device
) -> np.ndarray:
    """(cycles, classes): snapshot- and chunk-averaged probabilities, computed by the app's pipeline code."""
    for network in networks:
        network.eval()
    chunks = [cycle_chunks(cycle.samples) for cycle in cycles]
    owner = np.repeat(np.arange(len(cycles)), [len(c) for c in chunks])
    per_chunk = snapshot_probabilities(networks, np.concatenate(chunks), device)
    return np.stack([per_chunk[owner == i].mean(axis=0) for i in range(len(cycles))])


def _epochs_per_cycle(options: RunOptions, settings: LungSettings) -> int:
    """``--epochs`` (all cycles together) when given, else the settings' epochs per cycle."""
    if options.epochs is None:
        return settings.epochs_per_cycle
    if options.epochs % settings.cycles:
        raise ValueError(f"--epochs {options.epochs} is not a multiple of the {settings.cycles} snapshot cycles")
    return options.epochs // settings.cycles


def _train_ensemble(
    options: RunOptions, settings: LungSettings, cycles: Sequence[LabelledCycle], name: str
) -> tuple[list[nn.Module], list[dict[str, float]]]:
    generator = seed_everything(options.seed)
    data = AugmentedChunks(cycles, options.seed)
    model = create_model("lung_sound_cnn", num_classes=len(ICBHI_CLASSES))
    epochs_per_cycle = _epochs_per_cycle(options, settings)

    def cosine_restarts(optimizer: torch.optim.Optimizer, batches_per_epoch: int) -> LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=batches_per_epoch * epochs_per_cycle)

    result = fit(
        model,
        _optimizer(model),
        data,
        classification_step(partial(focal_loss, gamma=FOCAL_GAMMA)),
        options.fit_config(
            f"lung-{name}",
            {"train": [cycle.item_id for cycle in cycles], "cycles": settings.cycles},
            epochs=epochs_per_cycle * settings.cycles,
            batch_size=options.batch_size or BATCH,
            snapshot_every=epochs_per_cycle,
            scheduler_per_batch=True,
        ),
        device=options.torch_device(),
        scheduler_factory=cosine_restarts,
        generator=generator,
        on_epoch_start=data.draw,
    )
    networks = []
    for state in result.snapshots:
        network = create_model("lung_sound_cnn", num_classes=len(ICBHI_CLASSES))
        network.load_state_dict(state)
        networks.append(network)
    return networks, result.history


def _splits(cycles: Sequence[LabelledCycle], settings: LungSettings, seed: int) -> list[Split]:
    patients = [cycle.patient for cycle in cycles]
    official = official_split([c.official_side for c in cycles], patients, "the ICBHI challenge's official split")
    if official is not None:
        return [official]
    pairs = random_patient_splits(patients, repeats=settings.repeats, test_fraction=TEST_FRACTION, seed=seed)
    return [
        Split(
            train, np.zeros(0, dtype=int), test, f"random 80/20 split {number} of {len(pairs)} by patient, seed {seed}"
        )
        for number, (train, test) in enumerate(pairs, start=1)
    ]


def train_lung(options: RunOptions, settings: LungSettings | None = None) -> TaskOutcome:
    """Train and evaluate the snapshot ensemble; export the first split's ensemble with ``bundle_dir``."""
    settings = settings or LungSettings()
    start_run(options, "lung")
    cycles = read_icbhi_dataset(options.data)
    patients = [cycle.patient for cycle in cycles]
    counts = {name: sum(c.label == i for c in cycles) for i, name in enumerate(ICBHI_CLASSES)}
    log.info("%s: %d cycles of %d patients %s", options.data, len(cycles), len(set(patients)), counts)
    ids = [cycle.item_id for cycle in cycles]
    labels = np.asarray([cycle.label for cycle in cycles])
    device = options.torch_device()

    per_split, bundle_networks, first_split = [], None, None
    for number, split in enumerate(_splits(cycles, settings, options.seed), start=1):
        split.check(patients)
        split.save(options.run_dir / f"split-{number}.json", ids, patients, [ICBHI_CLASSES[i] for i in labels])
        networks, history = _train_ensemble(options, settings, [cycles[i] for i in split.train], f"split{number}")
        plot_history(options.run_dir / f"history-{number}.png", history, f"lung split {number}")
        shipped = [as_shipped(network, options.half).to(device) for network in networks]
        probabilities = ensemble_probabilities(shipped, [cycles[i] for i in split.test], device)
        predicted = probabilities.argmax(1)
        scores = icbhi_scores(labels[split.test], predicted)
        log.info("split %d: %s", number, ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        per_split.append(scores)
        if number == 1:
            bundle_networks, first_split = networks, split
            matrix = normalised_confusion(labels[split.test], predicted, len(ICBHI_CLASSES))
            plot_confusion(options.run_dir / "confusion.png", matrix, ICBHI_CLASSES, "lung sounds, split 1")
    metrics = {key: float(np.mean([s[key] for s in per_split])) for key in per_split[0]}
    title = (
        f"Lung sounds, SE-{settings.cycles}cycle, per cycle, mean of {len(per_split)} split(s) "
        f"({len(first_split.test)} test cycles in split 1)"
    )
    table = finish_report(options.run_dir, title, PAPER_ROWS, metrics, "paper 004 (SE-8cycle)")

    card = None
    if options.bundle_dir is not None:
        card = export_bundle(
            bundle_networks,
            options.bundle_dir,
            model_id="lung-sound-snapshot-ensemble",
            version=options.version,
            task="lung_sound",
            arch="lung_sound_cnn",
            arch_args={"num_classes": len(ICBHI_CLASSES)},
            input_spec=InputSpec(
                modality="audio",
                sample_rate=SAMPLE_RATE,
                normalisation="zscore",
                extra={
                    "segment_s": SEGMENT_SECONDS,
                    "chunks_per_segment": CHUNKS_PER_SEGMENT,
                    "n_fft": N_FFT,
                    "hop_length": HOP_LENGTH,
                    "n_mels": N_MELS,
                },
            ),
            class_names=ICBHI_CLASSES,
            trained_on=DataProvenance(
                dataset=f"ICBHI 2017 ({options.data.name})",
                split=first_split.provenance(ids),
                counts={
                    "cycles": len(cycles),
                    "patients": len(set(patients)),
                    **counts,
                    "train_split1": len(first_split.train),
                },
                demo=options.demo,
                notes=_notes(options, settings, len(cycles)),
            ),
            metrics=manifest_metrics(metrics),
            half=options.half,
        )
        log.info("bundle written: %s", options.bundle_dir)
    return TaskOutcome(metrics, table, card)


def _notes(options: RunOptions, settings: LungSettings, cycles: int) -> str:
    parts = [f"{settings.cycles} snapshots, {_epochs_per_cycle(options, settings)} epochs per cycle (paper: 8 x 20)"]
    if options.demo:
        parts.append(f"demo model trained on {cycles} cycles of 3 public ICBHI patients: not for diagnosis")
    return "; ".join(parts)
