"""A liver bundle's masks against reference liver masks, through the app's own path: ``medview-train liver-compare``.

Each case's CT is read the way the viewer reads it (a DICOM folder: its largest
series through ``load_dicom``; a NIfTI/NRRD file: ``read_volume``), the
reference mask is put on the CT's grid by ``read_label_map``, and the bundle
segments the volume through ``Engine.segment_liver`` exactly as the viewer's
"Segment liver" does (same preprocessing, batches, threshold, device choice).
Per case: Dice, VOE (1 - Jaccard), ASD in mm (average symmetric surface
distance on the CT's voxel spacing, ``training.common.metrics``), the predicted
and reference liver volume in mL, and the time; then the mean over the cases, as
a markdown table.  Cases are read one at a time, so a LiTS-sized dataset does
not have to fit in memory; ``--limit`` stops after the first N cases.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medview.engine.manifest import ModelCard
from medview.errors import ModelError
from training.common.metrics import mask_volume_ml, segmentation_metrics
from training.liver.data import LiverCaseFiles

TASK = "liver_segmentation"
#: paper 001's headline numbers on the LiTS test cases, printed under the table
PAPER_DICE, PAPER_ASD_MM = 0.9220, 7.65


@dataclass(frozen=True)
class CaseComparison:
    """One case: the bundle's mask against the reference mask."""

    name: str
    side: str | None  # the cases table's train/test column, when it has one
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    dice: float
    voe: float
    asd_mm: float
    predicted_ml: float
    reference_ml: float
    read_seconds: float
    segment_seconds: float

    @property
    def volume_difference(self) -> float:
        """(predicted - reference) / reference; inf when the reference is empty (never, for a listed case)."""
        return (self.predicted_ml - self.reference_ml) / self.reference_ml if self.reference_ml else math.inf


def choose_card(engine: Any, bundle: Path | None) -> ModelCard:
    """The engine's liver bundle: the one in folder ``bundle``, else the only installed one."""
    cards = engine.cards(TASK)
    if bundle is not None:
        wanted = Path(bundle).resolve()
        for card in cards:
            if Path(card.bundle_dir).resolve() == wanted:
                return card
        problems = "; ".join(str(problem) for problem in engine.problems()) or "no manifest.json there"
        raise ModelError(f"no {TASK} bundle in {bundle} ({problems})")
    if not cards:
        raise ModelError(f"no {TASK} bundle installed in {', '.join(map(str, engine.model_folders))}")
    if len(cards) > 1:
        names = ", ".join(f"{card.label} ({card.bundle_dir})" for card in cards)
        raise ModelError(f"several {TASK} bundles ({names}): choose one with --bundle")
    return cards[0]


def compare_case(engine: Any, card: ModelCard, case: LiverCaseFiles) -> CaseComparison:
    """Read ``case`` as the viewer does, segment it with ``card`` and measure the mask against the reference."""
    started = time.perf_counter()
    loaded = case.load()
    read_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = engine.segment_liver(card, loaded.volume)
    segment_seconds = time.perf_counter() - started
    spacing = loaded.volume.spacing
    metrics = segmentation_metrics(result.mask, loaded.liver, spacing)
    return CaseComparison(
        name=case.name,
        side=case.official_side,
        shape=loaded.volume.shape,
        spacing=spacing,
        dice=metrics["dice"],
        voe=metrics["voe"],
        asd_mm=metrics["asd_mm"],
        predicted_ml=mask_volume_ml(result.mask, spacing),
        reference_ml=mask_volume_ml(loaded.liver, spacing),
        read_seconds=read_seconds,
        segment_seconds=segment_seconds,
    )


def compare_cases(
    engine: Any,
    card: ModelCard,
    cases: Sequence[LiverCaseFiles],
    on_case: Callable[[CaseComparison], None] | None = None,
) -> list[CaseComparison]:
    """``compare_case`` over ``cases`` in order, one volume in memory at a time."""
    results = []
    for case in cases:
        comparison = compare_case(engine, card, case)
        if on_case is not None:
            on_case(comparison)
        results.append(comparison)
    return results


def _number(value: float, digits: int) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def markdown_table(results: Sequence[CaseComparison]) -> str:
    """Per case and mean: Dice, VOE, ASD, predicted and reference volume, as a markdown table."""
    header = (
        "| case | split | voxels (z×y×x) | spacing mm (z, y, x) | Dice | VOE | ASD mm "
        "| predicted mL | reference mL | ΔV | read s | segment s |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        lines.append(
            f"| {r.name} | {r.side or '-'} | {'×'.join(map(str, r.shape))} "
            f"| {', '.join(f'{s:.3g}' for s in r.spacing)} | {r.dice:.4f} | {r.voe:.4f} | {_number(r.asd_mm, 2)} "
            f"| {r.predicted_ml:.1f} | {r.reference_ml:.1f} | {100 * r.volume_difference:+.1f}% "
            f"| {r.read_seconds:.1f} | {r.segment_seconds:.1f} |"
        )
    if results:

        def mean(key: str) -> float:
            values = [getattr(r, key) for r in results]
            return math.inf if any(math.isinf(v) for v in values) else float(np.mean(values))

        read_total = sum(r.read_seconds for r in results)
        segment_total = sum(r.segment_seconds for r in results)
        lines.append(
            f"| **mean of {len(results)}** | | | | **{mean('dice'):.4f}** | **{mean('voe'):.4f}** "
            f"| **{_number(mean('asd_mm'), 2)}** | {mean('predicted_ml'):.1f} | {mean('reference_ml'):.1f} "
            f"| {100 * mean('volume_difference'):+.1f}% | {read_total:.1f} (sum) | {segment_total:.1f} (sum) |"
        )
    return "\n".join(lines)


def describe_bundle(card: ModelCard) -> str:
    """The lines printed above the table: which bundle, trained on what, and the paper's targets."""
    trained = card.trained_on
    lines = [
        f"bundle: {card.label} ({card.arch}) in {card.bundle_dir}",
        f"trained on: {trained.dataset}; split: {trained.split}",
        f"paper 001 on LiTS test cases: Dice {PAPER_DICE:.4f}, ASD {PAPER_ASD_MM:.2f} mm",
    ]
    if card.is_demo:
        lines.insert(1, "demo model: not for diagnosis")
    return "\n".join(lines)
