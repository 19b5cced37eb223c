"""The case report as a PDF: HTML in a ``QTextDocument``, printed through ``QPdfWriter``.

A4, a footer with the MedView version, the time and page numbers; black on
white with ruled tables whatever the screen's theme (the dark one's light text
would vanish on paper).  It paints with QtGui only, so it may run on a worker.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from pathlib import Path

from medview.engine.api import DEMO_BANNER
from medview.errors import ExportError
from medview.io.audio import ICBHI_CLASSES
from medview.ui.qt import QtCore, QtGui
from medview.ui.report.sections import CaseReport, KeyImage, LungSection, SeriesSection, SkinSection

DEMO_WARNING = "Contains results of DEMO models: not for diagnosis"
NOT_A_DIAGNOSIS = "not a diagnosis by itself"
PHOTO_SCALE = 0.62  # of a lesion photo's pixels, in the HTML's 96 dpi ones: about 25 mm on paper
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
    return bytes(buffer.data().data())


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
