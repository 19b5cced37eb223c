"""``medview-train evaluate BUNDLE --data DIR``: a bundle's measures on a labelled folder, through the app's path.

A hospital checks a bundle on its own held-out cases before relying on it.  The
bundle is verified as ``medview-train verify`` does, then loaded by the app's own
engine (``medview.engine.service.Engine``), and every item of the folder goes
through the same call the workstation makes: ``classify_skin`` for a photo,
``classify_kidney_slices`` for CT slices, ``classify_lung_sound`` for a
recording's cycles, ``classify_covid`` for a patient's series,
``segment_liver`` for a liver case (via ``training.liver.compare``).  The folder
is read by the task's training reader, so any layout training accepts works here.

The report is the paper's table layout with the paper's numbers beside the
measured ones (the constants of each task's ``train`` module), the rates'
95% Wilson intervals, and two lines: what the bundle's manifest records about
its own validation (``validated_summary``) and the same summary measured on this
folder.  Binary tasks are read at the bundle's threshold, the lung-sound model
by the 4-class argmax per cycle, the COVID model by its patient vote.
"""

from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from medview.engine.api import DEMO_BANNER, validated_summary
from medview.engine.manifest import ModelCard
from medview.errors import InputError, MedviewError, ModelError
from training.common.operating_point import wilson_interval
from training.common.report import PaperRow, paper_table

#: slices read and sent to the engine at a time: bounds memory on a folder of thousands of slices
KIDNEY_CHUNK = 64
T = TypeVar("T")


@dataclass(frozen=True)
class ItemScore:
    """One evaluated item: its id, its true class, the class the bundle gave it, and the bundle's probabilities."""

    item: str
    truth: str
    predicted: str
    probabilities: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A bundle measured on a folder: the table, the metrics, each item's result, recorded vs measured."""

    card: ModelCard
    data: Path
    title: str
    table: str
    metrics: Mapping[str, float]
    items: tuple[ItemScore, ...]
    recorded: str  # the bundle's own validation line
    measured: str  # the same summary measured on this folder
    notes: tuple[str, ...] = ()
    cases: tuple[Any, ...] = ()  # liver: training.liver.compare.CaseComparison per case

    def write_items(self, path: Path) -> None:
        """Each item's id, true class, the bundle's class and probabilities as CSV: which cases it got wrong."""
        columns = list(dict.fromkeys(key for item in self.items for key in item.probabilities))
        with Path(path).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["item", "truth", "predicted", *columns])
            for item in self.items:
                chances = [f"{item.probabilities[key]:.6g}" if key in item.probabilities else "" for key in columns]
                writer.writerow([item.item, item.truth, item.predicted, *chances])

    def report(self) -> str:
        """The table with the recorded and measured lines under it, as printed and written by ``--output``."""
        lines = [
            self.table,
            "",
            f"recorded in the bundle: {self.recorded}",
            f"measured on this folder: {self.measured}",
        ]
        return "\n".join([*lines, *self.notes])


def _progress(items: Iterable[T], description: str, unit: str, enabled: bool) -> Iterable[T]:
    """``items`` with a progress bar on stderr (stdout carries the table)."""
    return tqdm(items, desc=description, unit=unit, disable=not enabled, file=sys.stderr, leave=False)


def _without_prefix(line: str) -> str:
    return line.removeprefix("Validated: ")


def _measured_line(
    card: ModelCard, metrics: Mapping[str, float], count: int, unit: str, threshold: float | None
) -> str:
    """``validated_summary`` of the measured metrics: the same wording as the bundle's line, so the two compare."""
    counts = {"test": count, unit: count} if unit != "patients" else {"test": count}
    measured = replace(card, metrics=dict(metrics), trained_on=replace(card.trained_on, counts=counts))
    return _without_prefix(validated_summary(measured, threshold)).replace(" held-out ", " ")


def _interval(metrics: Mapping[str, float], key: str) -> str:
    low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return "" if low is None or high is None else f", 95% CI {100 * low:.1f}–{100 * high:.1f}%"


def _title(card: ModelCard, what: str, data: Path) -> str:
    demo = f" [{DEMO_BANNER}]" if card.is_demo else ""
    return f"{what} in {data}; bundle {card.label}{demo}"


def _positive_and_threshold(card: ModelCard, expected: str) -> tuple[str, float, tuple[str, ...]]:
    positive = str(card.input.extra.get("positive_class", card.class_names[-1]))
    if positive != expected:
        raise ModelError(
            f"bundle {card.label}: positive class {positive!r}, expected {expected!r}", path=card.bundle_dir
        )
    if positive in card.thresholds:
        return positive, float(card.thresholds[positive]), ()
    return positive, 0.5, (f"note: the bundle records no threshold for {positive}; read at 0.5",)


def _check_classes(card: ModelCard, names: Sequence[str]) -> None:
    if set(names) - set(card.class_names):
        raise ModelError(
            f"bundle {card.label} has the classes {', '.join(card.class_names)}; the data's are {', '.join(names)}",
            path=card.bundle_dir,
        )


def _binary_rows(
    positive: str, metrics: Mapping[str, float], paper: Mapping[str, float | None], more: Sequence[PaperRow]
) -> list[PaperRow]:
    """AUC, sensitivity and specificity (with their intervals), balanced accuracy and accuracy, then the rows
    of the paper's own table that these do not already give."""
    rows = [
        PaperRow("auc", f"AUC ({positive})", paper.get("auc"), unit=""),
        PaperRow(
            "sensitivity", f"Sensitivity ({positive}){_interval(metrics, 'sensitivity')}", paper.get("sensitivity")
        ),
        PaperRow(
            "specificity", f"Specificity ({positive}){_interval(metrics, 'specificity')}", paper.get("specificity")
        ),
        PaperRow("balanced_accuracy", "Balanced accuracy", paper.get("balanced_accuracy")),
        PaperRow("accuracy", "Accuracy", paper.get("accuracy")),
    ]
    keys = {row.key for row in rows}
    return rows + [row for row in more if row.key not in keys and row.key in metrics]


def _binary_evaluation(
    card: ModelCard,
    data: Path,
    scored: Sequence[ItemScore],
    metrics: dict[str, float],
    rows: Sequence[PaperRow],
    *,
    what: str,
    group: str,
    unit: str,
    positive: str,
    threshold: float,
    paper_name: str,
    notes: Sequence[str],
) -> Evaluation:
    metrics.setdefault("balanced_accuracy", (metrics["sensitivity"] + metrics["specificity"]) / 2)
    positives = sum(item.truth == positive for item in scored)
    title = _title(card, f"{what}: {len(scored)} {unit} ({positives} {positive}) of {group}", data)
    title += f", threshold {threshold:g} ({positive})"
    return Evaluation(
        card=card,
        data=data,
        title=title,
        table=paper_table(title, rows, metrics, paper_name=paper_name),
        metrics=metrics,
        items=tuple(scored),
        recorded=_without_prefix(validated_summary(card, threshold)),
        measured=_measured_line(card, metrics, len(scored), "images", threshold),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- skin (paper 003)


def evaluate_skin(engine: Any, card: ModelCard, data: Path, *, progress: bool = True) -> Evaluation:
    """Every labelled photo under ``data`` through ``Engine.classify_skin``, malignant at the bundle's threshold."""
    from medview.io.photo import read_photo
    from training.skin.data import read_skin_sources
    from training.skin.train import PAPER_ROWS
    from training.skin.train import evaluate as skin_metrics

    dataset = read_skin_sources(data).dataset
    _check_classes(card, dataset.class_names)
    positive, threshold, notes = _positive_and_threshold(card, "malignant")
    scored, probabilities = [], []
    for item, name in _progress(list(zip(dataset.items, dataset.ids, strict=True)), "photos", "photo", progress):
        result = engine.classify_skin(card, read_photo(item.path).rgb, explain=False)
        chances = {key: float(value) for key, value in result.scores.probabilities.items()}
        probabilities.append([chances[class_name] for class_name in dataset.class_names])
        scored.append(ItemScore(name, dataset.class_names[item.label], result.label, chances))
    metrics = skin_metrics(np.asarray(dataset.labels), np.asarray(probabilities), threshold)
    paper = {row.key: row.paper for row in reversed(PAPER_ROWS)}  # the first row of a key gives its paper value
    patients = len(set(dataset.patients))
    return _binary_evaluation(
        card,
        data,
        scored,
        metrics,
        _binary_rows(positive, metrics, paper, PAPER_ROWS),
        what="Skin lesions",
        group=f"{patients} patient(s)",
        unit="photos",
        positive=positive,
        threshold=threshold,
        paper_name="paper 003 (ResNet18 + RF)",
        notes=notes,
    )


# --------------------------------------------------------------------------- kidney (paper 000)


def _kidney_slices(
    engine: Any, card: ModelCard, data: Path, progress: bool
) -> tuple[list[str], list[str], list[float], list[str], str]:
    """(ids, true classes, stone probabilities, patients, layout) of every slice of the folder, one patient
    (scan) per slice."""
    from medview.io.volume import Volume
    from training.common.datasets import LabelledImages
    from training.kidney.data import CASES_FILE, kidney_set_from_images, read_kidney_cases, read_kidney_dataset

    ids: list[str] = []
    truth: list[str] = []
    chances: list[float] = []
    patients: list[str] = []
    if (data / CASES_FILE).is_file():  # CT volumes with kidney masks: the slices with kidney, the mask as the ROI
        cases = read_kidney_cases(data, data / CASES_FILE)
        for case in _progress(cases, "CT cases", "case", progress):
            slices = [int(z) for z in np.flatnonzero(case.kidney.any(axis=(1, 2)))]
            result = engine.classify_kidney_slices(card, case.volume, slices, roi=case.kidney, roi_source="kidney mask")
            ids += [f"{case.name}#z{z}" for z in slices]
            truth += ["stone" if z in case.stone_slices else "normal" for z in slices]
            chances += [float(p) for p in result.probabilities]
            patients += [case.patient] * len(slices)
        return ids, truth, chances, patients, f"{CASES_FILE}: CT volumes, kidney masks as ROI"
    dataset = read_kidney_dataset(data)
    low, high = card.input.hu_window or (0.0, 1.0)
    bar = tqdm(
        total=len(dataset.items), desc="slices", unit="slice", disable=not progress, file=sys.stderr, leave=False
    )
    for start in range(0, len(dataset.items), KIDNEY_CHUNK):
        chunk = LabelledImages(
            dataset.items[start : start + KIDNEY_CHUNK], dataset.class_names, dataset.layout, dataset.root
        )
        unit = kidney_set_from_images(chunk).unit
        # the 8-bit exports are already windowed: as HU whose window (the bundle's) gives back the unit image
        volume = Volume(voxels=unit * (high - low) + low, spacing=(1.0, 1.0, 1.0), modality="CT")
        result = engine.classify_kidney_slices(card, volume, range(len(unit)))
        chances += [float(p) for p in result.probabilities]
        bar.update(len(unit))
    bar.close()
    ids = list(dataset.ids)
    truth = [dataset.class_names[label] for label in dataset.labels]
    return ids, truth, chances, list(dataset.patients), dataset.layout


def evaluate_kidney(engine: Any, card: ModelCard, data: Path, *, progress: bool = True) -> Evaluation:
    """Every labelled slice under ``data`` through ``Engine.classify_kidney_slices``, stone at the bundle's
    threshold; 8-bit slices as CT in HU that the bundle's window turns back into the slice."""
    from training.kidney.data import CLASS_NAMES
    from training.kidney.train import PAPER_HOLDOUT
    from training.kidney.train import evaluate as kidney_metrics

    _check_classes(card, CLASS_NAMES)
    if card.input.hu_window is None:
        raise ModelError(f"bundle {card.label}: no input.hu_window", path=card.bundle_dir)
    positive, threshold, notes = _positive_and_threshold(card, "stone")
    ids, truth, chances, patients, layout = _kidney_slices(engine, card, data, progress)
    scored = [
        ItemScore(item, true_class, positive if chance >= threshold else "normal", {positive: chance})
        for item, true_class, chance in zip(ids, truth, chances, strict=True)
    ]
    labels = np.asarray([CLASS_NAMES.index(name) for name in truth])
    metrics = kidney_metrics(labels, np.asarray(chances), threshold, patients)  # intervals over the scans
    paper = dict(PAPER_HOLDOUT) | {"sensitivity": PAPER_HOLDOUT["recall"]}
    more = [PaperRow("precision", "Precision", paper["precision"]), PaperRow("f1", "F1", paper["f1"])]
    more.append(PaperRow("kappa", "Kappa", paper["kappa"], unit=""))
    return _binary_evaluation(
        card,
        data,
        scored,
        metrics,
        _binary_rows(positive, metrics, paper, more),
        what="Kidney stone",
        group=f"{len(set(patients))} scan(s) ({layout})",
        unit="slices",
        positive=positive,
        threshold=threshold,
        paper_name="paper 000 (ResNet18 hybrid)",
        notes=notes,
    )


# --------------------------------------------------------------------------- lung sounds (paper 004)


def evaluate_lung_sound(engine: Any, card: ModelCard, data: Path, *, progress: bool = True) -> Evaluation:
    """Every annotated cycle under ``data`` through ``Engine.classify_lung_sound`` (a recording at a time),
    the 4-class argmax per cycle, scored as the ICBHI challenge scores."""
    from medview.io.audio import ICBHI_CLASSES, read_recording
    from training.common.metrics import icbhi_scores
    from training.lung.data import AUDIO_SUFFIXES, read_icbhi_dataset
    from training.lung.train import PAPER_ROWS

    _check_classes(card, ICBHI_CLASSES)
    by_recording: dict[str, list[Any]] = defaultdict(list)
    for cycle in read_icbhi_dataset(data):
        by_recording[cycle.recording].append(cycle)
    paths = {path.name: path for path in data.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES}
    scored, truth, predicted, patients = [], [], [], set()
    for name, cycles in _progress(list(by_recording.items()), "recordings", "recording", progress):
        result = engine.classify_lung_sound(card, read_recording(paths[name]), [(c.start_s, c.end_s) for c in cycles])
        for cycle, scores in zip(cycles, result.scores, strict=True):
            chances = {key: float(value) for key, value in scores.probabilities.items()}
            scored.append(ItemScore(cycle.item_id, ICBHI_CLASSES[cycle.label], scores.label, chances))
            truth.append(cycle.label)
            predicted.append(ICBHI_CLASSES.index(scores.label))
            patients.add(cycle.patient)
    metrics = icbhi_scores(truth, predicted)
    truth_array, predicted_array = np.asarray(truth), np.asarray(predicted)
    normal, abnormal = truth_array == 0, truth_array != 0
    for key, rows, hits in (
        ("specificity", normal, int((predicted_array[normal] == 0).sum())),
        ("sensitivity", abnormal, int((predicted_array[abnormal] == truth_array[abnormal]).sum())),
    ):
        metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = wilson_interval(hits, int(rows.sum()))
    rows = [
        replace(row, label=row.label + _interval(metrics, row.key))
        if row.key in ("sensitivity", "specificity")
        else row
        for row in PAPER_ROWS
    ]
    title = _title(
        card,
        f"Lung sounds (ICBHI, 4-class argmax per cycle): {len(scored)} cycles ({int(abnormal.sum())} abnormal) "
        f"of {len(by_recording)} recording(s) of {len(patients)} patient(s)",
        data,
    )
    return Evaluation(
        card=card,
        data=data,
        title=title,
        table=paper_table(title, rows, metrics, paper_name="paper 004 (SE-8cycle)"),
        metrics=metrics,
        items=tuple(scored),
        recorded=_without_prefix(validated_summary(card, None)),
        measured=_measured_line(card, metrics, len(scored), "cycles", None),
    )


# --------------------------------------------------------------------------- COVID-19 CT (paper 002)


def _lung_card(engine: Any, card: ModelCard) -> ModelCard | None:
    """The lung U-Net bundle beside the COVID bundle (``<name>-lung-unet``), else the only one installed beside
    it, else None (the classical lung mask, as in the app without a lung bundle)."""
    lung_cards = engine.cards("lung_segmentation")
    beside = Path(card.bundle_dir).parent / f"{Path(card.bundle_dir).name}-lung-unet"
    for lung in lung_cards:
        if Path(lung.bundle_dir).resolve() == beside.resolve():
            return lung
    return lung_cards[0] if len(lung_cards) == 1 else None


def evaluate_covid(engine: Any, card: ModelCard, data: Path, *, progress: bool = True) -> Evaluation:
    """Every patient under ``data`` through ``Engine.classify_covid``: the patient vote, per-class measures.

    A patient in whom no lung is found gets no verdict (as in the app) and is counted, not scored.
    """
    from medview.models.covid import CLASS_NAMES
    from training.common.metrics import multiclass_metrics
    from training.covid.data import read_covid_dataset
    from training.covid.train import PAPER_ROWS

    patients = read_covid_dataset(data)
    names = card.class_names
    _check_classes(card, CLASS_NAMES)
    lung_card = _lung_card(engine, card)
    scored, truth, verdicts, means, notes = [], [], [], [], []
    source = "the classical method"
    for patient in _progress(patients, "patients", "patient", progress):
        volume = patient.load()
        true_class = CLASS_NAMES[patient.label]
        try:
            result = engine.classify_covid(card, volume, lung_card=lung_card)
        except InputError as error:  # no lung found, not an axial chest series: no verdict, as in the app
            notes.append(f"no verdict for {patient.name}: {error}")
            continue
        if not result.groups:
            notes.append(f"no verdict for {patient.name}: no slice group to classify")
            continue
        source = result.lung_mask_source
        mean = np.mean([[group.scores.probabilities[name] for name in names] for group in result.groups], axis=0)
        scored.append(
            ItemScore(patient.name, true_class, result.verdict, dict(zip(names, map(float, mean), strict=True)))
        )
        truth.append(names.index(true_class))
        verdicts.append(names.index(result.verdict))
        means.append(mean)
    if not scored:
        raise InputError(f"no patient got a verdict ({len(patients)} patients)", path=data)
    metrics = multiclass_metrics(truth, verdicts, np.stack(means), names)
    metrics["patients_without_lung_found"] = float(len(patients) - len(scored))
    rows = [
        replace(row, label="patients without a verdict (no lung found)")
        if row.key == "patients_without_lung_found"
        else row
        for row in PAPER_ROWS
        if row.key in metrics
    ]
    title = _title(
        card,
        f"COVID-19 CT, per patient: {len(patients)} patient(s) ({len(scored)} with a verdict), lung masks by {source}",
        data,
    )
    return Evaluation(
        card=card,
        data=data,
        title=title,
        table=paper_table(title, rows, metrics, paper_name="paper 002"),
        metrics=metrics,
        items=tuple(scored),
        recorded=_without_prefix(validated_summary(card, None)),
        measured=_measured_line(card, metrics, len(scored), "patients", None),
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- liver (paper 001)


def evaluate_liver(engine: Any, card: ModelCard, data: Path, *, progress: bool = True) -> Evaluation:
    """Every liver case under ``data`` through ``training.liver.compare`` (``Engine.segment_liver``): the mean
    Dice, VOE and ASD beside the paper's, and the per-case table of ``liver-compare``."""
    from training.liver.compare import compare_cases, markdown_table
    from training.liver.data import list_liver_cases
    from training.liver.train import PAPER_ROWS

    cases = list_liver_cases(data)
    bar = tqdm(total=len(cases), desc="liver cases", unit="case", disable=not progress, file=sys.stderr, leave=False)
    results = compare_cases(engine, card, cases, on_case=lambda _result: bar.update())
    bar.close()

    def mean(values: list[float]) -> float:
        return math.inf if any(math.isinf(value) for value in values) else float(np.mean(values))

    metrics = {
        "dice": mean([r.dice for r in results]),
        "voe": mean([r.voe for r in results]),
        "jaccard": mean([1 - r.voe for r in results]),
        "asd_mm": mean([r.asd_mm for r in results]),
    }
    rows = [row for row in PAPER_ROWS if row.key in metrics]
    title = _title(card, f"Liver segmentation, mean over {len(results)} case(s)", data)
    threshold = card.thresholds.get("liver")
    scored = [ItemScore(r.name, "liver mask", "liver mask", {"dice": r.dice}) for r in results]
    return Evaluation(
        card=card,
        data=data,
        title=title,
        table=paper_table(title, rows, metrics, paper_name="paper 001 (LiTS)") + "\n\n" + markdown_table(results),
        metrics=metrics,
        items=tuple(scored),
        recorded=_without_prefix(validated_summary(card, threshold)),
        measured=_measured_line(card, metrics, len(results), "volumes", threshold),
        cases=tuple(results),
    )


EVALUATORS: Mapping[str, Callable[..., Evaluation]] = {
    "skin_lesion": evaluate_skin,
    "kidney_stone": evaluate_kidney,
    "lung_sound": evaluate_lung_sound,
    "covid_ct": evaluate_covid,
    "liver_segmentation": evaluate_liver,
}


# --------------------------------------------------------------------------- the command


def load_bundle(bundle: Path, device: str = "auto") -> tuple[Any, ModelCard]:
    """The engine and the card of ``bundle``, verified as ``medview-train verify`` does (manifest, checksums,
    weights fitting the architecture, a forward pass) and loaded by the app's engine."""
    from medview.engine.service import Engine
    from training.export import check_bundle

    card = check_bundle(bundle)
    if card.task not in EVALUATORS:
        raise ModelError(
            f"bundle {card.label} is a {card.task!r} model; evaluate measures {', '.join(EVALUATORS)} models",
            path=bundle,
        )
    engine = Engine([Path(bundle).parent], device)
    engine.prepare(card)
    return engine, card


def evaluate_bundle(bundle: Path, data: Path, *, device: str = "auto", progress: bool = True) -> Evaluation:
    """``bundle`` measured on the labelled folder ``data`` through the app's engine; ``MedviewError`` on a bad
    bundle or a folder without the task's layout."""
    engine, card = load_bundle(bundle, device)
    if not Path(data).is_dir():
        raise InputError("not a folder", path=data)
    return EVALUATORS[card.task](engine, card, Path(data), progress=progress)


def _failed(where: Path, error: Exception) -> int:
    message = str(error) if getattr(error, "path", None) is not None else f"{where}: {error}"
    sys.stderr.write(f"medview-train evaluate: {' '.join(message.split())}\n")
    return 1


def run_evaluate(
    bundle: Path,
    data: Path,
    *,
    device: str = "auto",
    output: Path | None = None,
    items: Path | None = None,
    progress: bool = True,
) -> int:
    """The ``evaluate`` command: the report on stdout (and in ``output``; each item's result in the CSV
    ``items``), progress on stderr; 0, or 1 with a one-line message naming the bundle or the folder and what is
    wrong with it."""
    if not Path(data).is_dir():  # before the bundle loads: a mistyped folder is told at once
        return _failed(data, InputError("not a folder", path=data))
    try:
        engine, card = load_bundle(bundle, device)
    except ModuleNotFoundError as error:
        return _failed(bundle, RuntimeError(f"{error.name} is missing; install the training extras (medview[train])"))
    except MedviewError as error:
        return _failed(bundle, error)
    sys.stderr.write(f"bundle {card.label} ({card.task}) on {engine.device_name()}\n")
    try:
        evaluation = EVALUATORS[card.task](engine, card, Path(data), progress=progress)
    except (MedviewError, ValueError) as error:
        return _failed(data, error)
    report = evaluation.report()
    sys.stdout.write(report + "\n")
    try:
        if output is not None:
            Path(output).write_text(report + "\n", encoding="utf-8")
        if items is not None:
            evaluation.write_items(Path(items))
    except OSError as error:
        return _failed(Path(error.filename or ""), RuntimeError(f"cannot write: {error.strerror}"))
    return 0
