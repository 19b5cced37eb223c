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
- ``lopo``: leave-one-patient-out instead, for data of a few patients (the
  public sample has 3): one ensemble per patient left out, the scores of the
  pooled held-out predictions, and the bundle an ensemble of every patient.

The shipped default weighs the focal loss by inverse class frequency (the
alpha of Lin et al.'s focal loss, a setting the paper leaves at 1): without it
an ensemble trained on 60 normal and 9 crackle cycles calls every cycle
normal.  ``--paper`` trains without the weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import soundfile
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
from training.common.losses import classification_step, focal_loss, inverse_frequency_weights
from training.common.metrics import icbhi_scores, normalised_confusion
from training.common.report import PaperRow, plot_confusion, plot_history
from training.common.run import (
    RunOptions,
    TaskOutcome,
    elapsed_training_seconds,
    finish_report,
    machine_description,
    manifest_metrics,
    start_run,
)
from training.common.seeding import seed_everything
from training.common.splits import Split, official_split, random_patient_splits
from training.export import ResponseEvidence, as_shipped, export_bundle
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
    lopo: bool = False  # leave-one-patient-out evaluation, a final ensemble of every patient for the bundle
    paper: bool = False  # the paper's unweighted focal loss (no class weights)


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
    weights = (
        None if settings.paper else inverse_frequency_weights(data.labels, len(ICBHI_CLASSES))
    )  # the stretched copies included
    model = create_model("lung_sound_cnn", num_classes=len(ICBHI_CLASSES))
    epochs_per_cycle = _epochs_per_cycle(options, settings)

    def cosine_restarts(optimizer: torch.optim.Optimizer, batches_per_epoch: int) -> LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=batches_per_epoch * epochs_per_cycle)

    result = fit(
        model,
        _optimizer(model),
        data,
        classification_step(partial(focal_loss, gamma=FOCAL_GAMMA, weights=weights)),
        options.fit_config(
            f"lung-{name}",
            {"train": [cycle.item_id for cycle in cycles], "cycles": settings.cycles, "paper": settings.paper},
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


def recording_rates(root: Path) -> list[int]:
    """The sample rate of every WAV recording under ``root``, read from the headers (the validated rates)."""
    return [soundfile.info(str(path)).samplerate for path in sorted(Path(root).rglob("*.wav"))]


def _lopo_splits(cycles: Sequence[LabelledCycle]) -> list[Split]:
    """One split per patient: that patient's cycles test, everyone else's train."""
    patients = np.asarray([cycle.patient for cycle in cycles])
    return [
        Split(
            np.flatnonzero(patients != patient),
            np.zeros(0, dtype=int),
            np.flatnonzero(patients == patient),
            f"leave-one-patient-out: patient {patient} held out",
        )
        for patient in sorted(set(patients.tolist()))
    ]


@torch.no_grad()
def silence_probabilities(networks: Sequence[nn.Module], device: torch.device) -> np.ndarray:
    """The ensemble's class probabilities for a cycle of silence, as the app would prepare it."""
    chunks = cycle_chunks(np.zeros(SEGMENT_SAMPLES, dtype=np.float32))
    return snapshot_probabilities(networks, chunks, device).mean(axis=0)


def train_lung(options: RunOptions, settings: LungSettings | None = None) -> TaskOutcome:
    """Train and evaluate the snapshot ensemble; export it with ``bundle_dir``.

    The bundle is the first split's ensemble, or with ``lopo`` an ensemble of every patient.
    """
    settings = settings or LungSettings()
    started = time.perf_counter()
    start_run(options, "lung")
    cycles = read_icbhi_dataset(options.data)
    patients = [cycle.patient for cycle in cycles]
    counts = {name: sum(c.label == i for c in cycles) for i, name in enumerate(ICBHI_CLASSES)}
    log.info("%s: %d cycles of %d patients %s", options.data, len(cycles), len(set(patients)), counts)
    ids = [cycle.item_id for cycle in cycles]
    labels = np.asarray([cycle.label for cycle in cycles])
    device = options.torch_device()

    splits = _lopo_splits(cycles) if settings.lopo else _splits(cycles, settings, options.seed)
    per_split, bundle_networks, first_split = [], None, None
    pooled = np.full((len(cycles), len(ICBHI_CLASSES)), np.nan)
    for number, split in enumerate(splits, start=1):
        split.check(patients)
        split.save(options.run_dir / f"split-{number}.json", ids, patients, [ICBHI_CLASSES[i] for i in labels])
        networks, history = _train_ensemble(options, settings, [cycles[i] for i in split.train], f"split{number}")
        plot_history(options.run_dir / f"history-{number}.png", history, f"lung split {number}")
        shipped = [as_shipped(network, options.half).to(device) for network in networks]
        probabilities = ensemble_probabilities(shipped, [cycles[i] for i in split.test], device)
        pooled[split.test] = probabilities
        predicted = probabilities.argmax(1)
        scores = icbhi_scores(labels[split.test], predicted)
        log.info("split %d (%s): %s", number, split.description, ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        per_split.append(scores)
        if number == 1:
            bundle_networks, first_split = networks, split
    if settings.lopo:
        # pooled held-out predictions: one patient's cycles may be all normal, which leaves its own sensitivity empty
        predicted = pooled.argmax(1)
        metrics = icbhi_scores(labels, predicted)
        matrix_title = "lung sounds, leave-one-patient-out (pooled)"
        evaluated = np.arange(len(cycles))
    else:
        metrics = {key: float(np.mean([s[key] for s in per_split])) for key in per_split[0]}
        evaluated = first_split.test
        predicted = pooled[evaluated].argmax(1)
        matrix_title = "lung sounds, split 1"
    matrix = normalised_confusion(labels[evaluated], predicted, len(ICBHI_CLASSES))
    plot_confusion(options.run_dir / "confusion.png", matrix, ICBHI_CLASSES, matrix_title)
    metrics["predicted_classes"] = float(len(set(predicted.tolist())))
    for index, name in enumerate(ICBHI_CLASSES):
        truth = labels[evaluated] == index
        if truth.any():
            metrics[f"recall/{name}"] = float(np.mean(predicted[truth] == index))
    if settings.lopo:
        title = (
            f"Lung sounds, SE-{settings.cycles}cycle, per cycle, leave-one-patient-out over {len(splits)} patients "
            f"({len(cycles)} held-out cycles pooled)"
        )
        bundle_networks, _ = _train_ensemble(options, settings, cycles, "all-patients")
    else:
        title = (
            f"Lung sounds, SE-{settings.cycles}cycle, per cycle, mean of {len(per_split)} split(s) "
            f"({len(first_split.test)} test cycles in split 1)"
        )
    rows = (
        *PAPER_ROWS,
        *(PaperRow(f"recall/{name}", f"recall {name}", None) for name in ICBHI_CLASSES if counts[name]),
        PaperRow("predicted_classes", "classes predicted", None, unit=""),
    )
    table = finish_report(options.run_dir, title, rows, metrics, "paper 004 (SE-8cycle)")
    metrics["training_seconds"] = elapsed_training_seconds(started)

    card = None
    if options.bundle_dir is not None:
        shipped = [as_shipped(network, options.half).to(device) for network in bundle_networks]
        evidence = ResponseEvidence(
            probabilities=pooled[evaluated], labels=labels[evaluated], blank=silence_probabilities(shipped, device)
        )
        lengths = [len(cycle.samples) / SAMPLE_RATE for cycle in cycles]
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
                    "min_sample_rate_hz": min(recording_rates(options.data)),
                    # to the 0.01 s outside the measured range: rounding 6.194 to 6.19 warned about a training cycle
                    "cycle_seconds": [math.floor(min(lengths) * 100) / 100, math.ceil(max(lengths) * 100) / 100],
                },
            ),
            class_names=ICBHI_CLASSES,
            trained_on=DataProvenance(
                dataset=f"ICBHI 2017 ({options.data.name})",
                split=(
                    Split(
                        np.arange(len(cycles)),
                        np.zeros(0, dtype=int),
                        np.zeros(0, dtype=int),
                        f"leave-one-patient-out over {len(splits)} patients for the scores; the bundle's ensemble "
                        "trained on every patient",
                    ).provenance(ids)
                    if settings.lopo
                    else first_split.provenance(ids)
                ),
                counts={
                    "cycles": len(cycles),
                    "patients": len(set(patients)),
                    **counts,
                    **(
                        {"test": len(cycles), "test_patients": len(set(patients))}
                        if settings.lopo
                        else {"train_split1": len(first_split.train)}
                    ),
                },
                demo=options.demo,
                notes=_notes(options, settings, len(cycles), metrics["training_seconds"]),
            ),
            metrics=manifest_metrics(metrics),
            half=options.half,
            evidence=evidence,
        )
        log.info("bundle written: %s", options.bundle_dir)
    log.info("training took %.0f s", metrics["training_seconds"])
    return TaskOutcome(metrics, table, card)


def _notes(options: RunOptions, settings: LungSettings, cycles: int, training_seconds: float) -> str:
    parts = [f"{settings.cycles} snapshots, {_epochs_per_cycle(options, settings)} epochs per cycle (paper: 8 x 20)"]
    parts.append(
        "focal loss without class weights (the paper's)"
        if settings.paper
        else "focal loss weighted by inverse class frequency (the paper's alpha is 1; --paper trains without)"
    )
    if settings.lopo:
        parts.append("scores of the pooled leave-one-patient-out predictions")
    parts.append(f"training took {training_seconds / 60:.0f} min on {machine_description()}")
    if options.demo:
        parts.append(f"demo model trained on {cycles} cycles of 3 public ICBHI patients: not for diagnosis")
    return "; ".join(parts)
