"""One way for every benchmark to report: a table on stdout and, for ``bench.summary``, JSON lines.

A benchmark builds ``Row``s (what was measured, its median and best, the
reference it is a ratio of, the target) and calls ``report``.  When the
environment names a file in ``MEDVIEW_BENCH_JSON``, each row is also appended
there as one JSON line with the benchmark's name, so ``bench.summary`` can run
every benchmark and print one table of targets and measured values.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

JSON_ENV = "MEDVIEW_BENCH_JSON"


@dataclass(frozen=True)
class Row:
    """One measured case: median (and best) in ``unit``; ``target`` is an upper bound unless ``at_least``."""

    case: str
    median: float
    unit: str = "s"
    best: float | None = None
    reference: float | None = None
    target: float | None = None
    at_least: bool = False  # the target is a lower bound (an F1 score, a throughput)

    @property
    def ratio(self) -> float | None:
        return self.median / self.reference if self.reference else None

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        met = self.median >= self.target if self.at_least else self.median <= self.target
        return "meets" if met else "misses"

    def cells(self, digits: int) -> list[str]:
        best = f"{self.best:.{digits}f}" if self.best is not None else ""
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else ""
        bound = "≥" if self.at_least else "≤"
        target = f"{bound} {self.target:g}" if self.target is not None else ""
        return [self.case, self.unit, f"{self.median:.{digits}f}", best, ratio, target, self.verdict]


def report(benchmark: str, title: str, rows: Sequence[Row], digits: int = 3) -> None:
    """Print ``rows`` as a markdown table under ``title``; append them to ``$MEDVIEW_BENCH_JSON`` when set."""
    print(f"\n{title}\n")
    header = ["case", "unit", "median", "best", "ratio", "target", "verdict"]
    for line in [header, ["---"] * len(header), *(row.cells(digits) for row in rows)]:
        print("| " + " | ".join(line) + " |")
    destination = os.environ.get(JSON_ENV)
    if destination:
        with open(destination, "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({"benchmark": benchmark, **asdict(row), "verdict": row.verdict}) + "\n")
