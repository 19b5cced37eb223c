"""Findings read back from DICOM: a measurement report (with its SEG and map) found beside the open series.

MedView did not run the model now: the finding says it was loaded from the
PACS (or the folder), when and by which model it was written, and shows the
report's groups as they were stored.  The verdict line, the validated
performance and the demo flag come from the report's algorithm identification,
so a reader sees them as beside any other verdict.
"""

from __future__ import annotations

import html

import numpy as np

from medview.engine.api import Provenance
from medview.io.volume import Volume
from medview.ui.ct.findings.base import Finding
from medview.ui.ct.layers import HeatmapLayer, LabelLayer
from medview.ui.provenance import verdict_html
from medview.workflows.dicom_results import ReopenedResult

MASK_COLOUR = (255, 140, 40)


def _measured(result: ReopenedResult, meaning: str) -> float | None:
    for group in result.report.groups:
        for name, value, _unit in group.measurements:
            if name == meaning:
                return value
    return None


def headline(result: ReopenedResult) -> str:
    """The finding in one line, as the report states it."""
    groups = result.report.groups
    if result.kind == "kidney stone" and groups:
        run = groups[0]
        present = dict(run.evaluations).get("Kidney stone", "")
        positive, run_count = (
            _measured(result, "Slices at or above the threshold"),
            _measured(result, "Slices the model ran on"),
        )
        counts = f": {positive:.0f} of {run_count:.0f} slices at or above the threshold" if positive is not None else ""
        return f"Kidney stone {present.lower() or 'reported'}{counts}"
    if result.kind == "COVID-19" and groups:
        votes = [f"{value:.0f} {name.removeprefix('Groups voting ')}" for name, value, _ in groups[0].measurements]
        return f"COVID-19 verdict: {groups[0].finding}" + (f" (votes: {', '.join(votes)})" if votes else "")
    volume_ml = _measured(result, "Volume")
    if volume_ml is not None:
        first, last = (
            _measured(result, "First slice holding the finding (1-based)"),
            _measured(result, "Last slice holding the finding (1-based)"),
        )
        extent = f" on slices {first:.0f}-{last:.0f}" if first is not None and last is not None else ""
        return f"{result.kind.capitalize()} volume {volume_ml:,.1f} mL{extent}"
    return f"{result.kind}: {len(groups)} measurement group(s)"


def provenance_of(result: ReopenedResult) -> Provenance:
    """The provenance the report carries: model, version, demo flag, threshold, validated line, training data."""
    algorithm = result.report.algorithm
    parameters = dict(algorithm.parameters) if algorithm is not None else {}
    try:
        threshold: float | None = float(parameters["threshold"])
    except (KeyError, ValueError):
        threshold = None
    report = result.report
    note = f"loaded from {report.path.name}, written {report.written or 'at an unknown time'}"
    note += f" by {report.manufacturer}" if report.manufacturer else ""
    return Provenance(
        model_id=algorithm.name if algorithm is not None else "unknown model",
        model_version=algorithm.version if algorithm is not None else "",
        task=result.kind,
        arch="stored result",
        demo=algorithm.demo if algorithm is not None else False,
        training_data=parameters.get("training data", "not recorded in the report"),
        metrics={},
        threshold=threshold,
        device="not run here",
        seconds=0.0,
        notes=(note, "MedView did not run the model now: these are the stored results"),
        validated=parameters.get("validated", ""),
    )


def _groups_table(result: ReopenedResult) -> str:
    rows = []
    for group in result.report.groups:
        measured = "<br>".join(
            f"{html.escape(name)}: {value:g}{'' if unit in ('1', '') else ' ' + html.escape(unit)}"
            for name, value, unit in group.measurements
        )
        evaluated = "<br>".join(f"{html.escape(name)}: {html.escape(value)}" for name, value in group.evaluations)
        slices = ", ".join(str(z + 1) for z in group.slices[:12]) + (" …" if len(group.slices) > 12 else "")
        rows.append(
            f"<tr><td>{html.escape(group.label)}</td><td>{html.escape(group.finding)}</td>"
            f"<td>{measured}</td><td>{evaluated}</td><td>{slices}</td></tr>"
        )
    header = "<tr><th>Group</th><th>Finding</th><th>Measurements</th><th>Evaluations</th><th>Slices</th></tr>"
    return f"<table cellspacing='2' border='1'>{header}{''.join(rows)}</table>"


def reopened_finding(result: ReopenedResult, volume: Volume) -> Finding:
    """The finding of a report read back, with the SEG's mask and the map as overlays."""
    provenance = provenance_of(result)
    line = headline(result)
    model = f"{provenance.model_id} {provenance.model_version}".strip()
    demo = provenance.demo
    mask_layer = None
    if result.mask is not None:
        mask_layer = LabelLayer(
            name=f"{result.kind.capitalize()} [stored, {model}]",
            labels=result.mask.astype(np.uint8),
            names={1: result.kind},
            colours={1: MASK_COLOUR},
            opacity=0.4,
            demo=demo,
        )
    heatmap_layer = None
    if result.map is not None:
        values = np.zeros(volume.shape, np.float16)  # as the run's own maps: half the memory of float32
        for z, plane in result.map.values.items():
            values[z] = plane
        low, high = result.map.value_range
        heatmap_layer = HeatmapLayer(
            name=f"{result.map.explanation or result.map.label} [stored, {model}]",
            values=values,
            levels=(low, high),
            threshold=low + 0.05 * (high - low),
            opacity=0.6,
            visible=False,
            demo=demo,
            legend=result.map.explanation,
        )
    stored = (
        f"<p>Stored result, read back from <b>{html.escape(result.report.path.name)}</b> "
        f"(written {html.escape(result.report.written or 'at an unknown time')}): MedView did not run the model "
        "now.</p>"
    )
    return Finding(
        kind=result.kind,
        title=f"Stored: {line}: {model}{' (demo)' if demo else ''}",
        provenance=provenance,
        summary_html=verdict_html(line, provenance) + stored,
        result=result,
        mask_layer=mask_layer,
        heatmap_layer=heatmap_layer,
        more_html=_groups_table(result),
        more_title="The report's measurement groups",
        stored=True,
    )
