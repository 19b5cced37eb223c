"""A CT finding's results as DICOM objects for the PACS: which objects, what they say, in which codes.

``write_result_objects`` writes, for one engine result on the series it came from:

- liver (or lung) segmentation: the SEG, a measurement report whose volumetric
  group references the SEG's segment (volume in mL, first and last slice), and
  the probability map as a Parametric Map;
- kidney stone: a measurement report with one group for the run (stone present
  or absent, slices run and positive, the threshold and its validated
  sensitivity and specificity, the ROI among the algorithm's parameters) and
  one per positive slice with its probability and image; the Grad-CAM maps as
  a Parametric Map;
- COVID-19: a measurement report with the patient verdict (coded finding,
  votes per class, the 0.9 rule) and one group per 50-slice group with its
  class probabilities, padding and slices; the Grad-CAM maps as a Parametric Map;
- optionally a Secondary Capture series with the overlay and the warning burned
  in, for PACS viewers that show neither SEG nor parametric maps.

The io writers take plain data; this module is where the engine's results
become that data (io may not import the engine).  ``reopen_results`` goes the
other way: the reports found beside a series, each with its SEG and map.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medview.engine.api import CovidResult, Heatmap, Provenance, SegmentationResult, SliceClassificationResult
from medview.errors import Cancelled, InputError, MedviewError
from medview.io import dicom_results as dr
from medview.io.mask_export import CodeTriple
from medview.io.volume import Volume
from medview.progress import CancelCheck

KIDNEY_STONE: CodeTriple = ("95570007", "SCT", "Kidney stone")
KIDNEY: CodeTriple = ("64033007", "SCT", "Kidney")
LUNG: CodeTriple = ("39607008", "SCT", "Lung")
#: segmented structures by the engine's label name: the SR's finding type and the SEG's property type
STRUCTURES: dict[str, CodeTriple] = {"liver": ("10200004", "SCT", "Liver"), "lungs": LUNG, "lung": LUNG}
#: the COVID-19 model's classes as SNOMED CT findings
COVID_CLASSES: dict[str, CodeTriple] = {
    "covid_pneumonia": ("840539006", "SCT", "COVID-19"),
    "non_covid_pneumonia": ("233604007", "SCT", "Pneumonia"),
    "healthy": ("17621005", "SCT", "Normal"),
}
#: soft-tissue and lung windows (centre, width) for burned-in captures
ABDOMEN_WINDOW = (40.0, 400.0)
LUNG_WINDOW = (-600.0, 1500.0)
OVERLAY_COLOUR = (255, 140, 40)


@dataclass(frozen=True)
class WrittenObjects:
    """What one result became: the files, and why an object that might be expected was not written."""

    files: tuple[Path, ...]
    notes: tuple[str, ...] = ()


def algorithm_of(provenance: Provenance, **parameters: str) -> dr.Algorithm:
    """The algorithm identification of a result: model id and version, demo flag, threshold, validated line."""
    values: dict[str, str] = {}
    if provenance.threshold is not None:
        values["threshold"] = f"{provenance.threshold:g}"
    values.update(parameters)
    if provenance.validated:
        values["validated"] = provenance.validated
    values["training data"] = provenance.training_data
    return dr.Algorithm(provenance.model_id, provenance.model_version, provenance.demo, values)


def _operating_point(provenance: Provenance) -> tuple[dr.Numeric, ...]:
    """The threshold and the validated sensitivity and specificity at it, as far as the bundle records them."""
    measured = []
    if provenance.threshold is not None:
        measured.append(dr.Numeric(dr.THRESHOLD, provenance.threshold))
    for concept, key in ((dr.SENSITIVITY, "sensitivity"), (dr.SPECIFICITY, "specificity")):
        if key in provenance.metrics:
            measured.append(dr.Numeric(concept, float(provenance.metrics[key])))
    return tuple(measured)


def kidney_groups(result: SliceClassificationResult) -> list[dr.FindingGroup]:
    """The run (stone present or absent over the slices run) and each positive slice with its probability."""
    positive = result.positive_slices()
    probability = dict(zip(result.slice_indices, result.probabilities.tolist(), strict=True))
    run = dr.FindingGroup(
        label=f"kidney stone, {len(result.slice_indices)} slices run",
        finding=KIDNEY_STONE,
        site=KIDNEY,
        slices=tuple(result.slice_indices),
        measurements=(
            dr.Numeric(dr.SLICES_RUN, len(result.slice_indices)),
            dr.Numeric(dr.SLICES_POSITIVE, len(positive)),
            *_operating_point(result.provenance),
        ),
        evaluations=(dr.Coded(KIDNEY_STONE, dr.PRESENT if positive else dr.ABSENT),),
    )
    slices = [
        dr.FindingGroup(
            label=f"kidney stone, slice {index + 1}",
            finding=KIDNEY_STONE,
            site=KIDNEY,
            slices=(index,),
            measurements=(dr.Numeric(dr.PROBABILITY, round(probability[index], 4)),),
            evaluations=(dr.Coded(KIDNEY_STONE, dr.PRESENT),),
        )
        for index in positive
    ]
    return [run, *slices]


def covid_groups(result: CovidResult) -> list[dr.FindingGroup]:
    """The patient verdict with its votes and the 0.9 rule, then each 50-slice group with its probabilities."""
    verdict = _coded(COVID_CLASSES, result.verdict)
    patient = dr.FindingGroup(
        label=f"COVID-19 verdict: {result.verdict.replace('_', ' ')}",
        finding=verdict,
        site=LUNG,
        slices=tuple(result.kept_slices),
        measurements=tuple(dr.Numeric(dr.class_votes(name), result.votes.get(name, 0)) for name in result.class_names),
        evaluations=(dr.Coded(dr.RULE_SWITCHED, dr.YES if result.switched else dr.NO),),
    )
    groups = []
    for group in result.groups:
        real = tuple(sorted({int(s) for s in group.sources if s is not None}))
        label = group.scores.label
        groups.append(
            dr.FindingGroup(
                label=f"COVID-19 group: {group.description}",
                finding=_coded(COVID_CLASSES, label),
                site=LUNG,
                slices=real,
                measurements=(
                    *(
                        dr.Numeric(dr.class_probability(name), round(float(value), 4))
                        for name, value in group.scores.probabilities.items()
                    ),
                    dr.Numeric(dr.PADDING_SLOTS, sum(source is None for source in group.sources)),
                ),
            )
        )
    return [patient, *groups]


def _coded(table: Mapping[str, CodeTriple], name: str) -> CodeTriple:
    """A class's or structure's code from ``table`` (SNOMED CT), else a private one (``MVC-<NAME>``)."""
    return table.get(name.lower()) or (dr.private_code("MVC", name), dr.PRIVATE, name.replace("_", " "))


def segmentation_groups(result: SegmentationResult, seg_file: Path) -> list[dr.FindingGroup]:
    """The segmented structure: its volume and slice range, measured on the SEG's segment."""
    structure = _coded(STRUCTURES, result.label_name)
    measurements = [dr.Numeric(dr.VOLUME, round(result.volume_ml, 1), dr.MILLILITRE)]
    if result.slice_range is not None:
        first, last = result.slice_range
        measurements += [dr.Numeric(dr.FIRST_SLICE, first + 1), dr.Numeric(dr.LAST_SLICE, last + 1)]
    return [
        dr.FindingGroup(
            label=f"{result.label_name} segmentation",
            finding=structure,
            site=structure,
            measurements=tuple(measurements),
            segment_file=seg_file,
        )
    ]


def _grad_cam_maps(
    heatmaps: Mapping[int, Heatmap], inside: np.ndarray | None = None
) -> tuple[dict[int, np.ndarray], float]:
    """Grad-CAM values on one scale for the run (divided by the run's highest value), and that value;
    only ``inside`` a mask (the lungs) when one is given, as the viewer shows them."""
    values = {z: h.values * inside[z] if inside is not None else h.values for z, h in heatmaps.items()}
    peak = max((float(v.max()) for v in values.values() if v.size), default=0.0)
    if peak <= 0:
        return {}, 0.0
    return {z: np.clip(v / peak, 0.0, 1.0).astype(np.float32) for z, v in values.items()}, peak


@dataclass
class _Plan:
    """What one result writes besides its report: maps, captures, and how to draw them."""

    algorithm: dr.Algorithm
    groups: list[dr.FindingGroup]
    what: str  # the report's series description, after "AI"
    maps: dict[int, np.ndarray]  # slice -> values for the parametric map
    meaning: dr.MapMeaning | None
    map_what: str  # the map's series description, after "AI"
    overlays: dict[int, np.ndarray]  # slice -> what a capture draws
    captions: dict[int, str]
    window: tuple[float, float]
    colour: tuple[int, int, int] | None  # a mask's colour; None draws a map


def _segmentation_plan(result: SegmentationResult, seg: Path, volume: Volume) -> _Plan:
    name = result.label_name
    kept = [int(z) for z in np.flatnonzero(np.asarray(result.probability).max(axis=(1, 2)) > 0.01)]
    return _Plan(
        algorithm=algorithm_of(result.provenance),
        groups=segmentation_groups(result, seg),
        what=f"{name} report",
        maps={z: np.asarray(result.probability[z], dtype=np.float32) for z in kept if z not in volume.missing_slices},
        meaning=dr.MapMeaning(f"{name[:11]}_PROB", f"Probability of {name}"),
        map_what=f"{name} probability map",
        overlays={int(z): result.mask[z].astype(np.float32) for z in np.flatnonzero(result.mask.any(axis=(1, 2)))},
        captions={},
        window=ABDOMEN_WINDOW if name.lower() == "liver" else LUNG_WINDOW,
        colour=OVERLAY_COLOUR,
    )


def _kidney_plan(result: SliceClassificationResult, roi: str, volume: Volume) -> _Plan:
    maps, peak = _grad_cam_maps(result.heatmaps)
    probability = dict(zip(result.slice_indices, result.probabilities.tolist(), strict=True))
    positive = result.positive_slices()
    threshold = f" (threshold {result.provenance.threshold:g})" if result.provenance.threshold is not None else ""
    return _Plan(
        algorithm=algorithm_of(result.provenance, ROI=roi or result.roi),
        groups=kidney_groups(result),
        what="kidney stone report",
        maps=maps,
        meaning=_grad_cam_meaning(result.positive_class, peak),
        map_what="kidney stone Grad-CAM map",
        overlays={z: maps.get(z, np.zeros(volume.shape[1:], np.float32)) for z in positive},
        captions={z: f"Kidney stone probability {probability[z]:.2f}{threshold}" for z in positive},
        window=ABDOMEN_WINDOW,
        colour=None,
    )


def _covid_plan(result: CovidResult) -> _Plan:
    maps, peak = _grad_cam_maps(result.heatmaps, result.lung_mask)
    target = next(iter({h.target_class for h in result.heatmaps.values()}), "")
    verdict = result.verdict.replace("_", " ")
    return _Plan(
        algorithm=algorithm_of(result.provenance, rule="a healthy majority switches to a pneumonia class above 0.9"),
        groups=covid_groups(result),
        what="COVID-19 report",
        maps=maps,
        meaning=_grad_cam_meaning(target, peak),
        map_what="COVID-19 Grad-CAM map",
        overlays=maps,
        captions={z: f"COVID-19 verdict {verdict}; Grad-CAM" for z in maps},
        window=LUNG_WINDOW,
        colour=None,
    )


def _grad_cam_meaning(target: str, peak: float) -> dr.MapMeaning:
    explanation = f"Grad-CAM of {target.replace('_', ' ')}; 1 = the run's maximum, {peak:.3g}"
    return dr.MapMeaning("GRAD_CAM", explanation, quantity=dr.GRAD_CAM)


def write_result_objects(
    folder: Path,
    volume: Volume,
    result: SegmentationResult | SliceClassificationResult | CovidResult,
    *,
    roi: str = "",
    captures: bool = False,
    cancelled: CancelCheck | None = None,
) -> WrittenObjects:
    """Write ``result`` (on ``volume``'s DICOM series) as DICOM objects into ``folder``; see the module doc.

    ``roi`` names the region a kidney run used.  ``captures`` adds the Secondary
    Capture series.  ``cancelled`` is checked between objects (``Cancelled`` is
    raised; the objects written before it stay in ``folder``).
    """
    provenance = result.provenance
    stem = _free_stem(folder, f"{provenance.model_id}_{provenance.model_version}")
    files: list[Path] = []
    notes: list[str] = []

    def series(what: str) -> str:
        # the demo warning before the model id: Series Description keeps 64 characters, and a long id is cut
        return f"AI {what}" + (" DEMO not for diagnosis" if provenance.demo else "") + f" {provenance.model_id}"

    if isinstance(result, SegmentationResult):
        files.append(_write_seg(folder / f"{stem}_seg.dcm", result, volume, series(f"{result.label_name} SEG")))
        plan = _segmentation_plan(result, files[0], volume)
    elif isinstance(result, SliceClassificationResult):
        plan = _kidney_plan(result, roi, volume)
    else:
        plan = _covid_plan(result)
    steps: list[tuple[str, Callable[[], list[Path]]]] = [
        (
            "",
            lambda: [
                dr.write_measurement_report(
                    folder / f"{stem}_sr.dcm", volume, plan.groups, plan.algorithm, series_description=series(plan.what)
                )
            ],
        ),
    ]
    if plan.maps and plan.meaning is not None:
        meaning = plan.meaning
        steps.append(
            (
                "parametric map",
                lambda: [
                    dr.write_parametric_map(
                        folder / f"{stem}_{'probability' if meaning.quantity == dr.PROBABILITY else 'gradcam'}.dcm",
                        plan.maps,
                        volume,
                        meaning,
                        plan.algorithm,
                        series_description=series(plan.map_what),
                    )
                ],
            )
        )
    else:
        notes.append("no map was computed in this run (Grad-CAM off): no parametric map")
    if captures and plan.overlays:
        capture_folder = folder / f"{stem}_capture"
        steps.append(
            (
                "screenshot series",
                lambda: dr.write_secondary_capture(
                    capture_folder,
                    volume,
                    plan.overlays,
                    plan.algorithm,
                    captions=plan.captions,
                    colour=plan.colour,
                    window=plan.window,
                    series_description=series("overlay capture"),
                ),
            )
        )
    elif captures:
        notes.append("nothing to draw: no screenshot series")
    for optional, step in steps:
        if cancelled is not None and cancelled():
            raise Cancelled
        try:
            files += step()
        except InputError as error:  # the report is written; a map or screenshots this series cannot carry are not
            if not optional:
                raise
            notes.append(f"no {optional}: {error}")
    return WrittenObjects(tuple(files), tuple(notes))


def _free_stem(folder: Path, stem: str) -> str:
    """``stem``, or ``stem_2``, ``stem_3``…: a second export of one model into a folder keeps the first."""
    taken = {path.name for path in folder.iterdir()} if folder.is_dir() else set()
    candidate, number = stem, 1
    while any(name.startswith(f"{candidate}_") for name in taken):
        number += 1
        candidate = f"{stem}_{number}"
    return candidate


def _write_seg(path: Path, result: SegmentationResult, volume: Volume, description: str) -> Path:
    from medview.io.mask_export import write_dicom_seg

    provenance = result.provenance
    parameters = {"demo": str(provenance.demo).lower()}
    if provenance.threshold is not None:
        parameters["threshold"] = f"{provenance.threshold:g}"
    structure = _coded(STRUCTURES, result.label_name)
    return write_dicom_seg(
        path,
        result.mask,
        volume,
        algorithm_name=provenance.model_id,
        algorithm_version=provenance.model_version,
        algorithm_parameters=parameters,
        segment_label=result.label_name.capitalize(),
        property_type=structure,
        series_description=description,
    )


# --------------------------------------------------------------------------- opening them again


@dataclass(frozen=True)
class ReopenedResult:
    """A measurement report found beside a series, with the SEG it measures and the map written with it."""

    kind: str  # "liver", "kidney stone", "COVID-19", or what its first group found
    report: dr.ReadReport
    mask: np.ndarray | None  # bool [z, y, x] from the SEG, on the volume
    map: dr.ReadMap | None


def _kind(report: dr.ReadReport) -> str:
    findings = {group.finding for group in report.groups}
    if "Kidney stone" in findings:
        return "kidney stone"
    if {code[2] for code in COVID_CLASSES.values()} & findings and any(
        group.label.startswith("COVID-19") for group in report.groups
    ):
        return "COVID-19"
    first = report.groups[0].finding if report.groups else "result"
    return first.lower() if first in {code[2] for code in STRUCTURES.values()} else first


def reopen_results(volume: Volume, cancelled: CancelCheck | None = None) -> tuple[list[ReopenedResult], list[str]]:
    """The measurement reports made from ``volume``'s series that lie beside it, each with its SEG and map,
    oldest first; and a line for each object that could not be read.  A map goes with the report of the same
    model written closest in time."""
    from medview.io.volume_files import read_label_map

    found = dr.find_result_files(volume, cancelled=cancelled)
    problems: list[str] = []
    reports, segs, maps = [], {}, []
    for item in found:
        if cancelled is not None and cancelled():
            raise Cancelled
        try:
            if item.sop_class in dr.REPORT_CLASSES:
                reports.append(dr.read_measurement_report(item.path, volume))
            elif item.sop_class == dr.SEGMENTATION_CLASS:
                segs[item.sop_instance_uid] = item.path
            else:
                maps.append(dr.read_parametric_map(item.path, volume))
        except MedviewError as error:
            problems.append(str(error))
    reports.sort(key=lambda report: report.written)
    unpaired = list(maps)
    reopened = []
    for report in reports:
        mask = None
        uids = [group.segment_uid for group in report.groups if group.segment_uid]
        if uids and uids[0] in segs:
            try:
                mask = read_label_map(segs[uids[0]], volume).labels > 0
            except MedviewError as error:
                problems.append(str(error))
        name = report.algorithm.name if report.algorithm is not None else ""
        same_model = [m for m in unpaired if name and m.model == name]
        paired = min(same_model, key=lambda m: abs(_written(m.path) - _written(report.path)), default=None)
        if paired is not None:
            unpaired.remove(paired)
        reopened.append(ReopenedResult(_kind(report), report, mask, paired))
    return reopened, problems


def _written(path: Path) -> float:
    """When an object was written (its Content Date and Time), as seconds, for pairing maps with reports."""
    import datetime as dt

    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ContentDate", "ContentTime"])
    text = f"{header.get('ContentDate', '')}{str(header.get('ContentTime', ''))[:6]}"
    try:
        return dt.datetime.strptime(text, "%Y%m%d%H%M%S").timestamp()
    except ValueError:
        return 0.0
