"""Evaluation reports in each paper's own table layout, beside the paper's numbers, plus the figures.

A task describes its table once (:class:`PaperRow` list: metric key, label as
the paper prints it, the paper's value); :func:`paper_table` prints the run's
values next to them and :func:`write_report` saves the table, the raw metrics
and the figures (confusion matrix, ROC curves, loss curves) in the run folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: training runs on machines without a display

import matplotlib.pyplot as plt
import numpy as np


@dataclass(frozen=True)
class PaperRow:
    """One line of a paper's results table: our metric key, the paper's label, the paper's value (or None)."""

    key: str
    label: str
    paper: float | None
    unit: str = "%"  # "%" for fractions shown as percent, "mm", "" for plain numbers


def _format(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "%":
        return f"{100 * value:.2f}%"
    if math.isinf(value):
        return "inf"
    return f"{value:.3f}{(' ' + unit) if unit else ''}"


def paper_table(title: str, rows: Sequence[PaperRow], measured: Mapping[str, float], *, paper_name: str) -> str:
    """A plain-text table: metric | this run | paper."""
    header = ("metric", "this run", paper_name)
    lines = [(row.label, _format(measured.get(row.key), row.unit), _format(row.paper, row.unit)) for row in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(3)]
    rule = "  ".join("-" * width for width in widths)
    body = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in [header, *lines]
    ]
    return "\n".join([title, rule, body[0], rule, *body[1:], rule])


def write_report(run_dir: Path, name: str, table: str, metrics: Mapping[str, float]) -> None:
    """Save ``table`` as ``<name>.txt`` and ``metrics`` as ``<name>.json`` in ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"{name}.txt").write_text(table + "\n", encoding="utf-8")
    clean = {key: (value if math.isfinite(value) else str(value)) for key, value in metrics.items()}
    (run_dir / f"{name}.json").write_text(json.dumps(clean, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def plot_confusion(path: Path, matrix: np.ndarray, class_names: Sequence[str], title: str) -> None:
    """A row-normalised confusion matrix (rows: true class) as PNG."""
    figure, axes = plt.subplots(figsize=(1.4 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    image = axes.imshow(matrix, vmin=0, vmax=1, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for (row, column), value in np.ndenumerate(matrix):
        axes.text(column, row, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_roc(path: Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], title: str) -> None:
    """ROC curves ``{name: (fpr, tpr, auc)}`` on one plot as PNG."""
    figure, axes = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        axes.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
    axes.set_xlabel("1 - specificity")
    axes.set_ylabel("sensitivity")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.legend(loc="lower right")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_history(path: Path, history: Sequence[Mapping[str, float]], title: str) -> None:
    """Loss (and accuracy, when recorded) per epoch as PNG; ``history`` has one dict per epoch."""
    if not history:
        return
    keys = sorted({key for epoch in history for key in epoch if key != "epoch"})
    loss_keys = [key for key in keys if "loss" in key]
    other_keys = [key for key in keys if "loss" not in key]
    figure, axes = plt.subplots(1, 2 if other_keys else 1, figsize=(10 if other_keys else 5, 4), squeeze=False)
    epochs = [epoch.get("epoch", index + 1) for index, epoch in enumerate(history)]
    for panel, group in zip(axes[0], [loss_keys, other_keys], strict=False):
        for key in group:
            panel.plot(epochs, [epoch.get(key, np.nan) for epoch in history], label=key)
        panel.set_xlabel("epoch")
        panel.legend()
    axes[0][0].set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def comparison_table(
    title: str,
    columns: Mapping[str, Mapping[str, float]],
    paper: tuple[str, Mapping[str, float]],
    *,
    positive: str,
    unit: str,
) -> str:
    """Previous bundle | this run | the paper on the same test items, rates with their 95% intervals, as text.

    Each column's metrics carry ``n`` (test items) and ``positives``; ``paper``
    is the paper's name and whatever of these metrics it reports.
    """
    rows = [
        ("AUC", "auc", False),
        (f"sensitivity ({positive})", "sensitivity", True),
        (f"specificity ({positive})", "specificity", True),
        ("balanced accuracy", "balanced_accuracy", False),
        ("accuracy", "accuracy", False),
        (f"threshold ({positive})", "threshold", False),
        (f"test {unit} ({positive})", "n", False),
    ]
    header = ["", *columns, paper[0]]
    lines = [header]
    for label, key, interval in rows:
        line = [label]
        for metrics in [*columns.values(), paper[1]]:
            value = metrics.get(key)
            if value is None:
                line.append("-")
            elif key == "n":
                line.append(f"{int(value)} ({int(metrics['positives'])})")
            elif interval and f"{key}_ci_low" in metrics:
                line.append(f"{value:.3f} ({metrics[f'{key}_ci_low']:.3f}-{metrics[f'{key}_ci_high']:.3f})")
            else:
                line.append(f"{value:.3f}")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([title, rule, text[0], rule, *text[1:], rule])
