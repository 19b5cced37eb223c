"""The case report: what the window holds of the current case, gathered into one PDF.

``collect_report`` reads the window's panels into a ``CaseReport`` (plain
dataclasses): the patient and study identifiers of the open CT series (or
"ANONYMISED"), each AI finding of that series with its provenance and a key
image (the axial slice that shows the finding best, with the finding's
overlays drawn as the user set them), the lung sound recording with its cycle
table, and the lesion photos with their verdicts.  ``write_pdf`` lays it out as
HTML in a ``QTextDocument`` and prints that through ``QPdfWriter`` (A4, a footer
with the MedView version, the time and page numbers), so the report needs
nothing beyond Qt.  It prints black on white with ruled tables whatever the
screen's theme: the dark one's light text would vanish on paper.

Key images are drawn by a ``SliceView`` of their own, off screen: the user's
views, slice and overlays are never touched.  ``collect_report`` makes widgets,
so it runs on the GUI thread; ``write_pdf`` paints with QtGui only and may run
on a worker.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medview import __version__
from medview.engine.api import DEMO_BANNER, CovidResult, Provenance, SegmentationResult, SliceClassificationResult
from medview.errors import ExportError
from medview.io.audio import ICBHI_CLASSES
from medview.io.volume import Volume
from medview.ui.ct.findings.base import Finding
from medview.ui.ct.layers import HeatmapLayer, Layer, LayerStack
from medview.ui.ct.mpr_view import BANNER_TOP
from medview.ui.ct.slice_view import SliceView
from medview.ui.provenance import DemoBannerLabel, provenance_rows, validated_line
from medview.ui.qt import QtCore, QtGui
from medview.ui.skin.panel import LesionEntry, rgb_image, saliency_lookup_table

if TYPE_CHECKING:
    from medview.ui.lung.panel import LungSoundPanel
    from medview.ui.main_window import MainWindow
    from medview.ui.skin.panel import SkinPanel

REPORT_TITLE = "MedView case report"
ANONYMISED = "ANONYMISED"
DEMO_WARNING = "Contains results of DEMO models: not for diagnosis"
NOT_A_DIAGNOSIS = "not a diagnosis by itself"
NOTHING_TO_REPORT = "nothing to report: open a series, a recording or photos first"
KEY_IMAGE_SIDE = 520  # px of the off-screen view a key image is grabbed from
PHOTO_SIDE = 150  # px of a lesion photo (and of its saliency) in the report
PHOTO_SCALE = 0.62  # of those pixels, in the HTML's 96 dpi ones: about 25 mm on paper
#: the COVID finding ends with a table of every slice (up to hundreds of rows): the panel's, not the report's
PDF_RESOLUTION = 300  # dpi of the writer's coordinates; text and tables stay vector graphics
PAGE_MARGINS_MM = QtCore.QMarginsF(16, 14, 16, 10)
FOOTER_MM = 11.0
DEMO_COLOUR = "#a84300"
#: print colours, whatever the screen's theme: black text on white paper, tables ruled in mid grey
INK = "#000000"
PAPER = "#ffffff"
RULE_COLOUR = "#808080"
#: a table that only places things side by side: not ruled (the style sheet rules every other table)
LAYOUT_TABLE = "<table class='layout' cellspacing='0' cellpadding='3'"
KEEP_TOGETHER = 0.6  # tables up to this fraction of a page are not split between pages


# --------------------------------------------------------------------------- what the report holds


@dataclass(frozen=True, eq=False)
class KeyImage:
    """A picture as the user sees it on screen, with what it shows in words."""

    image: QtGui.QImage
    caption: str


@dataclass(frozen=True)
class FindingSection:
    """One AI finding of the CT series."""

    kind: str
    title: str
    summary_html: str  # built by MedView from the result; every user/DICOM string in it is escaped there
    provenance: tuple[tuple[str, str], ...]
    model: str  # id and version
    demo: bool
    key_image: KeyImage | None


@dataclass(frozen=True)
class SeriesSection:
    """The open CT series, its findings, and the slice on screen when no finding has an image."""

    description: str
    details: tuple[tuple[str, str], ...]
    findings: tuple[FindingSection, ...]
    key_image: KeyImage | None


@dataclass(frozen=True)
class CycleRow:
    """One row of the lung panel's cycle table."""

    number: int
    start_s: float
    end_s: float
    annotated: str
    predicted: str  # empty: not classified (or edited since)
    probabilities: dict[str, float]  # the 4 ICBHI classes; empty when not classified


@dataclass(frozen=True)
class LungSection:
    """The open lung sound recording and its classified cycles."""

    file: str
    duration_s: float
    sample_rate: int
    channels: int
    note: str  # where the cycles came from
    cycles: tuple[CycleRow, ...]
    model: str  # id and version; empty when not classified
    provenance: tuple[tuple[str, str], ...]
    demo: bool
    snapshots: int
    validated: str = ""  # the model's validated performance, printed under the outcome


@dataclass(frozen=True, eq=False)
class PhotoRow:
    """One lesion photo: the picture, its saliency over it, and the verdict (or why there is none)."""

    file: str
    photo: QtGui.QImage | None
    saliency: QtGui.QImage | None
    verdict: str  # empty without a result
    positive_class: str
    probability: float | None  # of the positive class
    threshold: float
    votes: str
    model: str
    demo: bool
    problem: str  # why there is no result
    validated: str = ""  # the model's validated performance, printed under the verdict


@dataclass(frozen=True)
class ModelSummary:
    """Provenance of one model that classified photos."""

    model: str
    rows: tuple[tuple[str, str], ...]
    demo: bool


@dataclass(frozen=True)
class SkinSection:
    """The lesion photos, most suspicious first, and the models that classified them."""

    photos: tuple[PhotoRow, ...]
    models: tuple[ModelSummary, ...]
    saliency_shown: bool = True  # the workspace shows the saliency maps, so the report does too


@dataclass(frozen=True)
class CaseReport:
    """Everything the PDF shows, gathered from the window at one moment."""

    title: str
    created: datetime
    version: str
    anonymised: bool
    identifiers: tuple[tuple[str, str], ...]  # patient and study
    ct: SeriesSection | None = None
    lung: LungSection | None = None
    skin: SkinSection | None = None

    @property
    def demo(self) -> bool:
        """A demo model contributed a result."""
        return (
            (self.ct is not None and any(finding.demo for finding in self.ct.findings))
            or (self.lung is not None and self.lung.demo)
            or (self.skin is not None and any(model.demo for model in self.skin.models))
        )


# --------------------------------------------------------------------------- gathering


def collect_report(window: MainWindow, *, anonymise: bool = False) -> CaseReport:
    """Gather the current case from ``window``'s panels (GUI thread: key images are drawn by widgets).

    ``anonymise`` replaces the patient's name, ID, birth date and the accession
    number with "ANONYMISED" (on the key images too) and keeps only the year of
    dates.  Raises ``ExportError`` when nothing is open.
    """
    volume = window.volume
    lung = _lung_section(window.lung)
    skin = _skin_section(window.skin)
    if volume is None and lung is None and skin is None:
        raise ExportError(NOTHING_TO_REPORT)
    identifiers = _identifiers(volume, anonymise)
    ct = _series_section(window, volume, anonymise) if volume is not None else None
    return CaseReport(
        title=REPORT_TITLE,
        created=datetime.now().astimezone(),
        version=__version__,
        anonymised=anonymise,
        identifiers=identifiers,
        ct=ct,
        lung=lung,
        skin=skin,
    )


def _identifiers(volume: Volume | None, anonymise: bool) -> tuple[tuple[str, str], ...]:
    """Patient and study rows of the open series."""
    if volume is None:
        return (("Patient", "not recorded: no CT series is open"),)
    info = volume.info
    rows = []
    for keyword, name in (
        ("PatientName", "Patient name"),
        ("PatientID", "Patient ID"),
        ("PatientBirthDate", "Birth date"),
        ("AccessionNumber", "Accession number"),
        ("StudyDate", "Study date"),
        ("StudyDescription", "Study"),
        ("SeriesDescription", "Series"),
    ):
        value = str(info.get(keyword, "") or "")
        if anonymise and keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
            value = ANONYMISED
        elif keyword.endswith("Date"):
            value = _date_text(value, year_only=anonymise)
        rows.append((name, value or "—"))
    return tuple(rows)


def _date_text(value: str, *, year_only: bool) -> str:
    """A DICOM date (YYYYMMDD) as 2022-12-08, or its year alone (nothing when it has none)."""
    if year_only:
        return value[:4] if re.match(r"\d{4}", value) else ""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if re.fullmatch(r"\d{8}", value) else value


def _anonymised_volume(volume: Volume, anonymise: bool) -> Volume:
    """The volume the key images are drawn from: without the name and with the year alone when anonymised."""
    if not anonymise:
        return volume
    info = dict(volume.info)
    info["PatientName"] = ""
    info["PatientID"] = ""
    info["StudyDate"] = _date_text(str(info.get("StudyDate", "")), year_only=True)
    return replace(volume, info=info)  # the voxels are shared, not copied


def _series_section(window: MainWindow, volume: Volume, anonymise: bool) -> SeriesSection:
    shown = _anonymised_volume(volume, anonymise)
    axial = window.mpr.axial
    current = int(np.clip(axial.index, 0, volume.shape[0] - 1))
    findings = []
    for finding in window.findings.current_findings():
        index, reason = key_slice(finding, current)
        image = render_key_image(shown, index, axial.window, finding.layers, reason)
        provenance = finding.provenance
        findings.append(
            FindingSection(
                kind=finding.kind,
                title=finding.title,
                summary_html=finding.summary_html,  # the every-slice tables are in more_html: not printed
                provenance=tuple(provenance_rows(provenance)),
                model=provenance.label,
                demo=_is_demo(provenance, finding.layers),
                key_image=image,
            )
        )
    on_screen = None
    if not findings:
        visible = [layer for layer in window.layers.layers if layer.visible]
        on_screen = render_key_image(shown, current, axial.window, visible, "the slice on screen")
    z, y, x = volume.shape
    spacing = " x ".join(f"{value:.2f}" for value in volume.spacing)
    details = (
        ("Modality", volume.modality or "—"),
        ("Size", f"{z} slices of {x} x {y} pixels"),
        ("Voxel spacing", f"{spacing} mm (z, y, x)"),
    )
    return SeriesSection(volume.description or "CT series", details, tuple(findings), on_screen)


def _is_demo(provenance: Provenance, layers: Iterable[Layer]) -> bool:
    # a COVID finding is a demo one when its lung U-Net was, which only its layers record
    return provenance.demo or any(layer.demo for layer in layers)


def key_slice(finding: Finding, current: int) -> tuple[int, str]:
    """The axial slice that shows ``finding`` best, and why: its largest mask, most probable or most
    explained slice; the slice on screen when the result names none."""
    result = finding.result
    if isinstance(result, SegmentationResult) and result.mask.any():
        index = int(np.argmax(result.mask.sum(axis=(1, 2))))
        return index, f"largest {result.label_name or finding.kind} cross-section"
    if isinstance(result, SliceClassificationResult) and len(result.slice_indices):
        probabilities = dict(zip(result.slice_indices, (float(p) for p in result.probabilities), strict=True))
        explained = set(getattr(finding, "heatmaps", {}) or result.heatmaps)
        positives = result.positive_slices()
        candidates = [i for i in positives if i in explained] or positives or sorted(explained)
        if candidates:
            index = max(candidates, key=probabilities.__getitem__)
            return index, f"{result.positive_class} probability {probabilities[index]:.2f}"
    if isinstance(result, CovidResult) and result.kept_slices:
        kept = list(result.kept_slices)
        layer = finding.heatmap_layer
        if layer is not None and result.heatmaps:
            explained = [i for i in kept if i in result.heatmaps]
            if explained:
                index = max(explained, key=lambda i: float(np.sum(layer.values[i], dtype=np.float32)))
                return index, "widest Grad-CAM inside the lungs"
        index = max(kept, key=lambda i: int(result.lung_mask[i].sum()))
        return index, "largest lung area"
    return current, "the slice on screen"


def render_key_image(
    volume: Volume, index: int, window: tuple[float, float], layers: Sequence[Layer], reason: str
) -> KeyImage:
    """Axial slice ``index`` drawn by a ``SliceView`` of its own, off screen, with ``layers`` over it as they
    are set on screen (a finding whose overlays are all hidden is drawn with them shown, and says so)."""
    drawn = [layer for layer in layers if layer.visible]
    forced = not drawn and bool(layers)
    if forced:
        drawn = [replace(layer, visible=True) for layer in layers if not isinstance(layer, HeatmapLayer)] or [
            replace(layers[0], visible=True)
        ]
    stack = LayerStack()
    view = SliceView("axial", stack)
    view.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen)
    view.resize(KEY_IMAGE_SIDE, KEY_IMAGE_SIDE)
    view.show()
    try:
        view.set_volume(volume, window)
        view.set_index(index)
        stack.add(*drawn)
        if any(layer.demo for layer in drawn):
            banner = DemoBannerLabel(view)
            banner.adjustSize()
            banner.move((view.width() - banner.width()) // 2, BANNER_TOP)
            banner.show()
        view.reset_view()
        image = view.grab().toImage()
    finally:
        view.close()
        view.deleteLater()
    overlays = ", ".join(layer.name for layer in drawn) or "none"
    hidden = " (hidden on screen, drawn here)" if forced else ""
    center, width = window
    caption = (
        f"Axial slice {index + 1} of {volume.shape[0]} ({reason}); window W {width:.0f} L {center:.0f}; "
        f"overlays: {overlays}{hidden}"
    )
    return KeyImage(image, caption)


def cycle_rows(lung: LungSoundPanel) -> list[CycleRow]:
    """The lung panel's cycle table: the same rows its CSV export writes."""
    records = lung.cycle_table()
    rows = []
    for record in records:
        probabilities = {name: float(record[f"p_{name}"]) for name in ICBHI_CLASSES if record[f"p_{name}"]}
        rows.append(
            CycleRow(
                number=int(record["cycle"]),
                start_s=float(record["start_s"]),
                end_s=float(record["end_s"]),
                annotated=record["annotated"],
                predicted=record["predicted"],
                probabilities=probabilities,
            )
        )
    return rows


def _lung_section(lung: LungSoundPanel) -> LungSection | None:
    opened = lung.opened_recording
    if opened is None:
        return None
    recording, result = opened.recording, lung.result
    provenance = result.provenance if result is not None else None
    return LungSection(
        file=recording.path.name,
        duration_s=recording.duration_s,
        sample_rate=recording.sample_rate,
        channels=recording.channels,
        note=opened.annotation_note,
        cycles=tuple(cycle_rows(lung)),
        model=provenance.label if provenance is not None else "",
        provenance=tuple(provenance_rows(provenance)) if provenance is not None else (),
        demo=provenance is not None and provenance.demo,
        snapshots=result.snapshots if result is not None else 0,
        validated=validated_line(provenance) if provenance is not None else "",
    )


def _skin_section(skin: SkinPanel) -> SkinSection | None:
    entries = [item.entry for item in skin.items()]  # most suspicious first, as in the gallery
    if not entries:
        return None
    saliency_shown = skin.saliency_box.isChecked()
    opacity = skin.opacity.value() / 100
    photos, models = [], {}
    for entry in entries:
        photos.append(_photo_row(entry, saliency_shown, opacity))
        result = entry.result
        if result is not None and result.provenance.label not in models:
            models[result.provenance.label] = _skin_model(result.provenance, entries)
    return SkinSection(tuple(photos), tuple(models.values()), saliency_shown)


def _photo_row(entry: LesionEntry, saliency_shown: bool, opacity: float) -> PhotoRow:
    photo, result = entry.photo, entry.result
    picture = _scaled(rgb_image(photo.rgb)) if photo is not None else None
    overlay = None
    if photo is not None and result is not None and result.saliency is not None and saliency_shown:
        overlay = _saliency_over(rgb_image(photo.rgb), result.saliency.relative(), opacity)
    if result is None:
        return PhotoRow(entry.path.name, picture, None, "", "", None, 0.5, "", "", False, entry.problem or entry.status)
    votes = result.votes_text()
    provenance = result.provenance
    return PhotoRow(
        file=entry.path.name,
        photo=picture,
        saliency=overlay,
        verdict=result.label,
        positive_class=result.positive_class,
        probability=entry.positive_probability,
        threshold=provenance.threshold if provenance.threshold is not None else 0.5,
        votes=votes,
        model=provenance.label,
        demo=provenance.demo,
        problem="",
        validated=validated_line(provenance),
    )


def _skin_model(provenance: Provenance, entries: Sequence[LesionEntry]) -> ModelSummary:
    """The model's provenance; its run time is the sum over the photos it classified."""
    runs = [entry.result.provenance for entry in entries if entry.result is not None]
    runs = [run for run in runs if run.label == provenance.label]
    seconds = sum(run.seconds for run in runs)
    rows = [
        (name, f"{provenance.device}, {seconds:.2f} s for {len(runs)} photo(s)" if name == "Ran on" else value)
        for name, value in provenance_rows(provenance)
    ]
    return ModelSummary(provenance.label, tuple(rows), provenance.demo)


def _scaled(image: QtGui.QImage) -> QtGui.QImage:
    return image.scaled(
        PHOTO_SIDE,
        PHOTO_SIDE,
        QtCore.Qt.AspectRatioMode.KeepAspectRatio,
        QtCore.Qt.TransformationMode.SmoothTransformation,
    )


def _saliency_over(photo: QtGui.QImage, relative: np.ndarray, opacity: float) -> QtGui.QImage:
    """The photo with its saliency map over it, coloured and faded as the skin panel draws it."""
    table = saliency_lookup_table()
    rgba = np.ascontiguousarray(table[np.clip(relative * 255, 0, 255).astype(np.uint8)])
    height, width = rgba.shape[:2]
    saliency = QtGui.QImage(rgba.data, width, height, width * 4, QtGui.QImage.Format.Format_RGBA8888).copy()
    picture = _scaled(photo).convertToFormat(QtGui.QImage.Format.Format_RGB32)
    painter = QtGui.QPainter(picture)
    painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform)
    painter.setOpacity(opacity)
    painter.drawImage(QtCore.QRectF(picture.rect()), saliency)
    painter.end()
    return picture


# --------------------------------------------------------------------------- the PDF


def report_html(report: CaseReport) -> tuple[str, dict[str, QtGui.QImage]]:
    """The report as HTML for ``QTextDocument``, and the images it refers to by name."""
    images: dict[str, QtGui.QImage] = {}
    created = report.created.strftime("%Y-%m-%d %H:%M")
    parts = [f"<h1>{html.escape(report.title)}</h1>"]
    if report.demo:
        parts.append(
            f"<table class='layout' width='100%' cellpadding='6' cellspacing='0'><tr><td bgcolor='{DEMO_COLOUR}'>"
            f"<span style='color:white; font-size:13pt; font-weight:bold'>⚠ {DEMO_WARNING}</span><br>"
            "<span style='color:white'>Results marked DEMO come from demonstration bundles trained on a few public "
            "samples; they show how MedView works and say nothing reliable about this patient.</span></td></tr></table>"
        )
    anonymised = " The patient identifiers are anonymised." if report.anonymised else ""
    parts.append(
        f"<p class='meta'>Generated {created} by MedView {html.escape(report.version)}: AI results to support, "
        f"not replace, a clinician's reading; {NOT_A_DIAGNOSIS}.{anonymised}</p>"
    )
    parts.append("<h2>Patient and study</h2>" + _rows_table(report.identifiers))
    if report.ct is not None:
        parts.append(_ct_html(report.ct, images))
    if report.lung is not None:
        parts.append(_lung_html(report.lung))
    if report.skin is not None:
        parts.append(_skin_html(report.skin, images))
    # every table is ruled (those the findings' summaries bring too) but the ones that only lay out the page
    style = (
        "<style>h1 { font-size: 16pt; margin-bottom: 4px; } h2 { font-size: 13pt; margin-top: 14px; "
        "margin-bottom: 4px; color: #1f3a5f; } h3 { font-size: 11pt; margin-top: 10px; margin-bottom: 3px; } "
        "p { margin-top: 2px; margin-bottom: 4px; } .meta { color: #444444; } .caption { font-size: 7.5pt; "
        "color: #444444; } .demo { color: " + DEMO_COLOUR + "; font-weight: bold; } th { background-color: "
        "#e4e8ee; } td, th { font-size: 8.5pt; padding-left: 3px; padding-right: 3px; } "
        "table { border-width: 1px; border-style: solid; border-color: " + RULE_COLOUR + "; "
        "border-collapse: collapse; } table.layout { border-width: 0px; }</style>"
    )
    return f"<html><head>{style}</head><body>{''.join(parts)}</body></html>", images


def _rows_table(rows: Iterable[tuple[str, str]]) -> str:
    body = "".join(
        f"<tr><td width='28%'><b>{html.escape(name)}</b></td><td>{html.escape(value)}</td></tr>" for name, value in rows
    )
    return f"<table cellspacing='0' cellpadding='3' width='100%'>{body}</table>"


def _demo_line(demo: bool) -> str:
    return f"<p class='demo'>⚠ {html.escape(DEMO_BANNER.upper())}</p>" if demo else ""


def _ct_html(section: SeriesSection, images: dict[str, QtGui.QImage]) -> str:
    parts = [f"<h2>CT series: {html.escape(section.description)}</h2>", _rows_table(section.details)]
    if not section.findings:
        parts.append("<p><i>No AI findings for this series.</i></p>")
        if section.key_image is not None:
            parts.append(_image_block("ct_on_screen", section.key_image, images))
    for number, finding in enumerate(section.findings, start=1):
        parts.append(f"<h3>{number}. {html.escape(finding.title)}</h3>{_demo_line(finding.demo)}")
        image = _image_cell(f"ct_finding_{number}", finding.key_image, images) if finding.key_image is not None else ""
        # the image beside the provenance, kept on one page; the summary (a page or more for COVID) flows below
        parts.append(
            f"{LAYOUT_TABLE} width='100%'><tr>{image}"
            f"<td valign='top'>{_rows_table(finding.provenance)}</td></tr></table>{finding.summary_html}"
        )
    return "".join(parts)


def _image_cell(name: str, key_image: KeyImage, images: dict[str, QtGui.QImage]) -> str:
    images[name] = key_image.image
    return (
        f"<td valign='top' width='280'><img src='{name}' width='270'><br>"
        f"<span class='caption'>{html.escape(key_image.caption)}</span></td>"
    )


def _image_block(name: str, key_image: KeyImage, images: dict[str, QtGui.QImage]) -> str:
    return f"{LAYOUT_TABLE}><tr>{_image_cell(name, key_image, images)}</tr></table>"


def _lung_html(section: LungSection) -> str:
    classified = [row for row in section.cycles if row.predicted]
    counts = {name: sum(row.predicted == name for row in classified) for name in ICBHI_CLASSES}
    spread = ", ".join(f"{count} {name}" for name, count in counts.items() if count)
    if section.model:
        outcome = (
            f"{len(classified)} of {len(section.cycles)} cycles classified by {html.escape(section.model)} "
            f"(ensemble of {section.snapshots} snapshots): {spread or 'none'}."
        )
    else:
        outcome = f"{len(section.cycles)} cycles, not classified."
    parts = [
        "<h2>Lung sound recording</h2>",
        _rows_table(
            (
                ("File", section.file),
                ("Recording", f"{section.duration_s:.1f} s, {section.sample_rate} Hz, {section.channels} channel(s)"),
                ("Cycles", section.note),
            )
        ),
        f"<p><b>{outcome}</b>" + (f"<br><i>{html.escape(section.validated)}</i>" if section.validated else "") + "</p>",
    ]
    if section.provenance:
        parts.append(_model_html(section.model, section.demo, section.provenance))
    columns = ("#", "start s", "end s", "annotated", "predicted", *(f"p({name})" for name in ICBHI_CLASSES))
    align = ["left" if column in ("annotated", "predicted") else "right" for column in columns]
    # the text columns keep apart from the right-aligned number before them
    pad = {"left": " style='padding-left:12px'", "right": ""}
    header = "".join(f"<th align='{side}'{pad[side]}>{text}</th>" for side, text in zip(align, columns, strict=True))
    body = []
    for number, row in enumerate(section.cycles):
        predicted = html.escape(row.predicted) if row.predicted else "<i>not classified</i>"
        cells = [str(row.number), f"{row.start_s:.3f}", f"{row.end_s:.3f}", html.escape(row.annotated), predicted]
        cells += [f"{row.probabilities[name]:.2f}" if row.probabilities else "" for name in ICBHI_CLASSES]
        shade = " bgcolor='#eef1f5'" if number % 2 else ""  # stripes lead the eye along a row of numbers
        body.append(
            f"<tr{shade}>"
            + "".join(f"<td align='{side}'{pad[side]}>{cell}</td>" for side, cell in zip(align, cells, strict=True))
            + "</tr>"
        )
    if body:
        # the title is a header row, so it never stays behind alone at the foot of a page and heads each page
        title = f"Cycles of {html.escape(section.file)}, as in the lung sound workspace's table export"
        parts.append(
            "<p></p><table width='100%' cellspacing='0' cellpadding='3'>"
            f"<thead><tr><td colspan='{len(ICBHI_CLASSES) + 5}'><b>{title}</b></td></tr>"
            f"<tr bgcolor='#d9dfe8'>{header}</tr></thead>"
            f"{''.join(body)}</table>"
        )
    return "".join(parts)


def _skin_html(section: SkinSection, images: dict[str, QtGui.QImage]) -> str:
    done = sum(photo.verdict != "" for photo in section.photos)
    parts = [
        "<h2>Skin lesion photos</h2>",
        f"<p>{len(section.photos)} photo(s), {done} classified. "
        + (
            "Beside each photo its saliency map: where the photo drives the CNN features the forest relies on "
            "most, not which way they pushed the vote.</p>"
            if section.saliency_shown
            else "Saliency maps were not shown in the skin workspace, so none are printed.</p>"
        ),
    ]
    parts.extend(_model_html(model.model, model.demo, model.rows) for model in section.models)
    rows = ["<h3>Photos, most suspicious first</h3>"]
    for number, photo in enumerate(section.photos, start=1):
        pictures = ""
        for kind, image in (("photo", photo.photo), ("saliency", photo.saliency)):
            if image is not None:
                name = f"skin_{number}_{kind}"
                images[name] = image
                pictures += f"<img src='{name}' width='{round(image.width() * PHOTO_SCALE)}'> "
        if photo.verdict:
            text = (
                f"<b>{html.escape(photo.verdict)}</b>, {html.escape(photo.positive_class)} probability "
                f"<b>{photo.probability:.0%}</b> (called {html.escape(photo.positive_class)} at ≥ "
                f"{photo.threshold:.0%})<br><i>{html.escape(photo.validated)}</i><br>{html.escape(photo.votes)}"
                f"<br>Model {html.escape(photo.model)}" + (" <span class='demo'>(DEMO)</span>" if photo.demo else "")
            )
            if section.saliency_shown and photo.saliency is None:
                text += "<br><i>Saliency map not computed yet.</i>"
        else:
            text = f"<i>{html.escape(photo.problem or 'not classified')}</i>"
        rows.append(  # a table each: one photo is kept on one page
            f"{LAYOUT_TABLE} width='100%'><tr><td valign='top' width='210'>{pictures}</td>"
            f"<td valign='top'><b>{html.escape(photo.file)}</b><br>{text}</td></tr></table>"
        )
    parts.append("".join(rows))
    return "".join(parts)


def _model_html(model: str, demo: bool, rows: Iterable[tuple[str, str]]) -> str:
    """A model's provenance under its own heading, so the three stay on one page together."""
    return f"<h3>Model {html.escape(model)}</h3>{_demo_line(demo)}{_rows_table(rows)}"


def write_pdf(report: CaseReport, path: Path) -> None:
    """Write ``report`` as an A4 PDF at ``path``; ``ExportError`` naming the path when it cannot be written.

    Painted with QtGui only (no widgets), so it may run on a worker.
    """
    data = render_pdf(report)
    try:
        path.write_bytes(data)
    except OSError as error:
        raise ExportError(f"cannot write the report: {error.strerror or error}", path=path) from error


def render_pdf(report: CaseReport) -> bytes:
    """The PDF's bytes: the HTML paginated on A4 with a footer on every page."""
    text, images = report_html(report)
    buffer = QtCore.QBuffer()
    buffer.open(QtCore.QIODevice.OpenModeFlag.WriteOnly)
    writer = QtGui.QPdfWriter(buffer)
    writer.setResolution(PDF_RESOLUTION)
    writer.setPageLayout(
        QtGui.QPageLayout(
            QtGui.QPageSize(QtGui.QPageSize.PageSizeId.A4),
            QtGui.QPageLayout.Orientation.Portrait,
            PAGE_MARGINS_MM,
            QtGui.QPageLayout.Unit.Millimeter,
        )
    )
    writer.setTitle(report.title)
    writer.setCreator(f"MedView {report.version}")

    document = QtGui.QTextDocument()
    document.documentLayout().setPaintDevice(writer)  # points and image sizes scale to the writer's resolution
    font = QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.GeneralFont)
    font.setPointSizeF(9)
    document.setDefaultFont(font)
    for name, image in images.items():
        document.addResource(QtGui.QTextDocument.ResourceType.ImageResource, QtCore.QUrl(name), image)
    document.setHtml(text)
    paint = writer.pageLayout().paintRectPixels(PDF_RESOLUTION)
    footer = FOOTER_MM / 25.4 * PDF_RESOLUTION
    body = QtCore.QSizeF(paint.width(), paint.height() - footer)
    document.setPageSize(body)
    keep_tables_on_one_page(document, body.height())
    pages = document.pageCount()

    context = QtGui.QAbstractTextDocumentLayout.PaintContext()
    context.palette = print_palette()  # not the application's: text without a colour of its own is printed black
    painter = QtGui.QPainter()
    if not painter.begin(writer):
        raise ExportError("the PDF writer could not start")
    try:
        for page in range(pages):
            if page:
                writer.newPage()
            painter.save()
            painter.translate(0, -page * body.height())
            context.clip = QtCore.QRectF(0, page * body.height(), body.width(), body.height())
            painter.setClipRect(context.clip)
            document.documentLayout().draw(painter, context)
            painter.restore()
            _draw_footer(painter, report, QtCore.QRectF(0, body.height(), body.width(), footer), page + 1, pages)
    finally:
        painter.end()
    buffer.close()
    return bytes(buffer.data())


def print_palette() -> QtGui.QPalette:
    """Black ink on white paper for the text a report's HTML leaves uncoloured.

    ``QTextDocument.drawContents`` would take the application's palette: under the dark screen theme that is
    light grey text, unreadable on paper.
    """
    return QtGui.QPalette(QtGui.QColor(INK), QtGui.QColor(PAPER))  # Text is the window text, Base the window


def keep_tables_on_one_page(document: QtGui.QTextDocument, page_height: float) -> None:
    """Move a table that would straddle two pages to the next page, with the heading above it.

    QTextDocument splits tables anywhere and has no ``page-break-inside: avoid``: a key image would
    land on one page and its provenance on the other.  Tables taller than ``KEEP_TOGETHER`` of a page
    (long cycle tables) still run over pages, with their header rows repeated.
    """
    layout = document.documentLayout()
    for frame in document.rootFrame().childFrames():
        if not isinstance(frame, QtGui.QTextTable):
            continue
        rect = layout.frameBoundingRect(frame)  # lays the document out up to here, breaks set so far included
        if rect.height() > KEEP_TOGETHER * page_height:
            continue
        if int(rect.top() // page_height) == int((rect.bottom() - 1) // page_height):
            continue
        heading = _heading_above(document, frame)
        if heading is not None:
            cursor = QtGui.QTextCursor(heading)
            block_format = heading.blockFormat()
            block_format.setPageBreakPolicy(QtGui.QTextFormat.PageBreakFlag.PageBreak_AlwaysBefore)
            cursor.setBlockFormat(block_format)
        else:
            table_format = frame.format()
            table_format.setPageBreakPolicy(QtGui.QTextFormat.PageBreakFlag.PageBreak_AlwaysBefore)
            frame.setFormat(table_format)


def _heading_above(document: QtGui.QTextDocument, frame: QtGui.QTextFrame) -> QtGui.QTextBlock | None:
    """The heading a table belongs to: one of the few short blocks right above it (a demo line between)."""
    block = document.findBlock(frame.firstPosition()).previous()
    for _ in range(3):
        if not block.isValid() or block.length() > 200:
            return None
        if block.blockFormat().headingLevel() > 0:
            return block
        block = block.previous()
    return None


def _draw_footer(painter: QtGui.QPainter, report: CaseReport, area: QtCore.QRectF, page: int, pages: int) -> None:
    """A rule, then "MedView <version> · Generated <time> — not a diagnosis by itself", the DEMO warning when a
    demo model contributed, and the page number."""
    painter.save()
    font = QtGui.QFontDatabase.systemFont(QtGui.QFontDatabase.SystemFont.GeneralFont)
    font.setPointSizeF(7)
    painter.setFont(font)
    line_height = painter.fontMetrics().height()
    top = area.top() + line_height * 0.6
    painter.setPen(QtGui.QPen(QtGui.QColor("#888888"), max(1.0, PDF_RESOLUTION / 300)))
    painter.drawLine(QtCore.QPointF(area.left(), top), QtCore.QPointF(area.right(), top))
    text_area = QtCore.QRectF(area.left(), top + line_height * 0.3, area.width(), line_height * 2.2)
    painter.setPen(QtGui.QColor("#333333"))
    created = report.created.strftime("%Y-%m-%d %H:%M")
    left = QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignTop
    right = QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignTop
    painter.drawText(text_area, left, f"MedView {report.version} · Generated {created} — {NOT_A_DIAGNOSIS}")
    painter.drawText(text_area, right, f"Page {page} of {pages}")
    if report.demo:
        painter.setPen(QtGui.QColor(DEMO_COLOUR))
        bold = QtGui.QFont(font)
        bold.setBold(True)
        painter.setFont(bold)
        painter.drawText(text_area.translated(0, line_height), left, DEMO_WARNING)
    painter.restore()
