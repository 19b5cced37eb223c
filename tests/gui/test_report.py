"""The case report: gathered from the real window after real runs of the shipped demo models, written as a PDF
whose text is read back (pypdf) the way a reader of the report would see it, and whose pages are rendered
(PDFium) to check from the pixels that it prints legibly under the app's dark screen theme."""

from __future__ import annotations

import re
import shutil
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pypdfium2 as pdfium
import pytest
from pypdf import PdfReader

from medview import __version__
from medview.errors import ExportError
from medview.ui.ct.findings.report import KEY_IMAGE_SIDE
from medview.ui.qt import QtGui, QtWidgets
from medview.ui.report.collect import collect_report
from medview.ui.report.document import DEMO_WARNING, PAGE_MARGINS_MM, write_pdf
from medview.ui.report.identifiers import ANONYMISED
from medview.ui.report.sections import (
    CaseReport,
    CycleRow,
    FindingSection,
    LungSection,
    ModelSummary,
    PhotoRow,
    SeriesSection,
    SkinSection,
)
from tests.gui.conftest import SAMPLE_SERIES, open_and_wait
from tests.gui.test_findings_panel import segment
from tests.gui.test_lung_panel import ICBHI, open_and_classify, open_recording
from tests.gui.test_skin_panel import ISIC, show_saliency, wait_settled

RECORDING = "104_1b1_Lr_sc_Litt3200.wav"  # the shortest real recording: 15 s, 5 annotated cycles
PHOTOS = ("ISIC_0000154.jpg", "ISIC_0000111.jpg")
DCMQI_SERIES = Path("dicom_ct") / "dcmqi_ct-3slice"  # 3 slices with a patient name, ID and accession number
RENDER_DPI = 200
#: the darkest pixel of every printed character is darker than this (0-255 luminance): black, the headings'
#: dark blue and the DEMO orange are; the dark screen theme's light grey text (224) is not
DARK = 100
#: a table rule is darker than this; the header shading and the row stripes are lighter
RULE = 200


@pytest.fixture
def engine(shipped_engine: Any) -> Any:
    for task in ("liver_segmentation", "lung_sound", "skin_lesion"):
        if not shipped_engine.cards(task):
            pytest.skip(f"no {task} bundle in resources/models")
    return shipped_engine


def pdf_pages(path: Path) -> list[str]:
    """Each page's text with ligatures expanded and whitespace runs made one space."""
    reader = PdfReader(path)
    return [" ".join(unicodedata.normalize("NFKC", page.extract_text()).split()) for page in reader.pages]


class RenderedPage:
    """One page of a PDF as printed: its luminance at ``RENDER_DPI`` and where each character lies on it."""

    def __init__(self, page: Any) -> None:
        scale = RENDER_DPI / 72
        self.luminance = page.render(scale=scale, grayscale=True).to_numpy()
        text = page.get_textpage()
        height = page.get_height()
        self.text = text.get_text_range()
        self.boxes = []  # (left, top, right, bottom) in pixels, one per character of self.text
        for index in range(text.count_chars()):
            left, bottom, right, top = text.get_charbox(index)
            pixels = (left * scale, (height - top) * scale, right * scale, (height - bottom) * scale)
            self.boxes.append((int(pixels[0]), int(pixels[1]), int(pixels[2]) + 2, int(pixels[3]) + 2))

    def darkest(self, index: int) -> int:
        """The darkest pixel of character ``index`` (255 for a character without ink, a space)."""
        left, top, right, bottom = self.boxes[index]
        ink = self.luminance[max(top, 0) : bottom, max(left, 0) : right]
        return int(ink.min()) if ink.size else 255

    def light_words(self) -> list[str]:
        """The words of the page with a character printed lighter than ``DARK``.

        Words in the top margin are left out: nothing is printed there, but Qt draws the line just above a
        page's clip too (``QTextLayout::draw``), so the last line of a paragraph that runs over to this page
        sits there in the PDF, clipped away, and has no ink.
        """
        top_margin = PAGE_MARGINS_MM.top() / 25.4 * RENDER_DPI
        light = {
            match.group()
            for match in re.finditer(r"\S+", self.text)
            if any(
                self.boxes[index][3] > top_margin and self.darkest(index) >= DARK
                for index in range(match.start(), match.end())
            )
        }
        return sorted(light)

    def box(self, words: str) -> tuple[int, int, int, int]:
        """Pixels (left, top, right, bottom) of the first occurrence of ``words`` on the page."""
        start = self.text.index(words)
        boxes = self.boxes[start : start + len(words)]
        return (
            min(box[0] for box in boxes),
            min(box[1] for box in boxes),
            max(box[2] for box in boxes),
            max(box[3] for box in boxes),
        )

    def ruled_between(self, first: str, second: str) -> bool:
        """A table rule runs between the cell with ``first`` and the one with ``second``: under it when
        ``second`` is in a row below, across the whole width of ``first``; beside it otherwise, along its height."""
        left, top, right, bottom = self.box(first)
        other_left, other_top, _, _ = self.box(second)
        if other_top >= bottom:
            gap = self.luminance[bottom:other_top, left:right]
            return bool((gap < RULE).all(axis=1).any())
        gap = self.luminance[top:bottom, right:other_left]
        return bool((gap < RULE).all(axis=0).any())


def rendered_pages(path: Path) -> list[RenderedPage]:
    """Each page of the PDF at ``path`` rendered by PDFium, as a PDF viewer or a printer driver would."""
    document = pdfium.PdfDocument(path)
    try:
        return [RenderedPage(page) for page in document]
    finally:
        document.close()


def page_with(pages: list[RenderedPage], words: str) -> RenderedPage:
    """The first page that holds ``words``."""
    return next(page for page in pages if words in page.text)


def orange_pixels(image: Any) -> int:
    """Pixels of a key image where the liver overlay's orange dominates the grey CT."""
    image = image.convertToFormat(image.Format.Format_RGB888)
    pixels = np.frombuffer(image.constBits(), np.uint8).reshape(image.height(), image.bytesPerLine())
    rgb = pixels[:, : image.width() * 3].reshape(image.height(), image.width(), 3).astype(int)
    return int(np.count_nonzero(rgb[..., 0] - rgb[..., 2] > 60))


def test_the_report_holds_the_liver_finding_the_lung_cycles_and_the_skin_verdicts(
    qtbot: Any, window: Any, engine: Any, shared_data: Path, tmp_path: Path
) -> None:
    window.set_engine(engine)
    open_and_wait(qtbot, window, SAMPLE_SERIES)
    finding = segment(qtbot, window)
    result = finding.result
    axial = window.ct.mpr.axial
    axial.set_index(2)  # the user reads another slice than the one the report shows
    shown = [(layer, layer.visible, layer.opacity) for layer in window.ct.layers.layers]
    lung_result = open_and_classify(qtbot, window, shared_data / ICBHI / RECORDING)
    window.open_paths([shared_data / ISIC / name for name in PHOTOS])
    wait_settled(qtbot, window, len(PHOTOS))

    report = collect_report(window)

    # the key image is the slice with the most liver, drawn off screen: the user's view is left as it was
    assert axial.index == 2
    assert [(layer, layer.visible, layer.opacity) for layer in window.ct.layers.layers] == shown
    key = int(np.argmax(result.mask.sum(axis=(1, 2))))
    section = report.ct.findings[0]
    assert section.key_image.caption.startswith(f"Axial slice {key + 1} of {window.ct.volume.shape[0]}")
    assert section.key_image.image.width() == KEY_IMAGE_SIDE
    assert orange_pixels(section.key_image.image) > 2000  # the liver mask is drawn over the CT
    assert report.demo

    path = tmp_path / "case.pdf"
    write_pdf(report, path)
    assert path.read_bytes().startswith(b"%PDF")
    pages = pdf_pages(path)
    assert len(pages) >= 1
    text = " ".join(pages)

    assert DEMO_WARNING in pages[0]
    assert f"Liver volume {result.volume_ml:,.1f} mL" in text
    first, last = result.slice_range
    assert f"slices {first + 1}-{last + 1} of {window.ct.volume.shape[0]}" in text
    provenance = finding.provenance
    assert f"{provenance.model_id} {provenance.model_version}" in text
    assert "Validation metrics" in text

    cycles = len(lung_result.scores)
    assert f"{cycles} of {cycles} cycles classified by {lung_result.provenance.label}" in text
    for cycle, scores in zip(window.lung.cycles, lung_result.scores, strict=True):
        assert f"{cycle.start_s:.3f} {cycle.end_s:.3f} {cycle.label} {scores.label}" in text
    assert RECORDING in text

    for entry in window.skin.entries:
        # the verdict is bold: the text extraction may put a space between it and the comma after it
        name, probability = re.escape(entry.path.name), f"{entry.positive_probability:.0%}"
        verdict = rf"{name} {entry.result.label} ?, malignant probability {probability}"
        assert re.search(verdict, text), verdict
    assert {entry.result.label for entry in window.skin.entries} <= {"benign", "malignant"}
    # the validated performance stands under each verdict, as in the app, not only in the model's table
    skin_validated = window.skin.entries[0].result.provenance.validated
    assert skin_validated
    assert text.count(" ".join(skin_validated.split()[:6])) >= len(window.skin.entries)
    assert lung_result.provenance.validated
    assert " ".join(lung_result.provenance.validated.split()[:4]) in text
    # maps are computed only when shown in the workspace: the report says none were, and prints them once they are
    assert "Saliency maps were not shown in the skin workspace" in text
    assert all(photo.saliency is None for photo in report.skin.photos)
    show_saliency(qtbot, window.skin)
    assert all(photo.saliency is not None for photo in collect_report(window).skin.photos)

    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in page
        assert f"MedView {__version__}" in page
        assert "not a diagnosis by itself" in page

    # printed, it reads under the app's dark screen theme: every word dark on white, the tables ruled
    rendered = rendered_pages(path)
    for number, page in enumerate(rendered, start=1):
        assert page.light_words() == [], f"page {number}"
    assert rendered[0].ruled_between("Patient name", "Patient ID")
    start, end = (f"{value:.3f}" for value in (window.lung.cycles[0].start_s, window.lung.cycles[0].end_s))
    assert page_with(rendered, start).ruled_between(start, end)


def test_anonymise_keeps_the_patient_out_of_the_text_and_the_key_image(
    qtbot: Any, window: Any, engine: Any, shared_data: Path, tmp_path: Path
) -> None:
    window.set_engine(engine)
    open_and_wait(qtbot, window, shared_data / DCMQI_SERIES)
    segment(qtbot, window)
    identifiers = ("JANCT000", "99000", "03086212")  # name, ID and accession number of the series

    named, anonymous = collect_report(window), collect_report(window, anonymise=True)
    write_pdf(named, tmp_path / "named.pdf")
    write_pdf(anonymous, tmp_path / "anonymous.pdf")
    named_text = " ".join(pdf_pages(tmp_path / "named.pdf"))
    anonymous_text = " ".join(pdf_pages(tmp_path / "anonymous.pdf"))

    for value in (*identifiers, "2003-04-17"):
        assert value in named_text
    for value in (*identifiers, "20030417", "2003-04-17"):
        assert value not in anonymous_text
    assert f"Patient name {ANONYMISED} Patient ID {ANONYMISED}" in anonymous_text
    assert "Study date 2003" in anonymous_text

    # the key image's corner no longer reads the name and full date; the anatomy below is the same
    named_image = named.ct.findings[0].key_image.image
    anonymous_image = anonymous.ct.findings[0].key_image.image
    assert named_image.copy(0, 0, 120, 24) != anonymous_image.copy(0, 0, 120, 24)
    assert named_image.copy(0, 100, KEY_IMAGE_SIDE, 400) == anonymous_image.copy(0, 100, KEY_IMAGE_SIDE, 400)


def test_anonymise_leaves_out_the_recordings_and_photos_file_names(
    qtbot: Any, window: Any, engine: Any, shared_data: Path, tmp_path: Path
) -> None:
    """A file name may name the patient (ICBHI's start with the patient's number; a hospital's may hold a name)."""
    window.set_engine(engine)
    open_recording(qtbot, window, shared_data / ICBHI / RECORDING)
    photo = tmp_path / "Jane_Doe_1961_left_arm.jpg"
    shutil.copy(shared_data / ISIC / PHOTOS[0], photo)
    unreadable = tmp_path / "Jane_Doe_1961_back.jpg"
    unreadable.write_bytes(b"not a photo")
    window.open_paths([photo, unreadable])
    wait_settled(qtbot, window, 2)

    named, anonymous = collect_report(window), collect_report(window, anonymise=True)
    write_pdf(named, tmp_path / "named.pdf")
    write_pdf(anonymous, tmp_path / "anonymous.pdf")
    named_text = " ".join(pdf_pages(tmp_path / "named.pdf"))
    anonymous_text = " ".join(pdf_pages(tmp_path / "anonymous.pdf"))
    for name in (RECORDING, RECORDING.replace(".wav", ".txt"), "Jane_Doe"):
        assert name in named_text
        assert name not in anonymous_text
    assert anonymous.lung.file == "file name withheld (anonymised)"
    assert {row.file for row in anonymous.skin.photos} == {
        f"photo {number} (file name withheld (anonymised))" for number in (1, 2)
    }
    assert any("the file" in row.problem for row in anonymous.skin.photos)  # why it was not read, still said


def test_a_finding_whose_overlays_are_hidden_is_drawn_with_its_mask_and_says_so(
    qtbot: Any, window: Any, engine: Any, shared_data: Path
) -> None:
    window.set_engine(engine)
    open_and_wait(qtbot, window, shared_data / DCMQI_SERIES)
    finding = segment(qtbot, window)
    window.ct.findings.show_mask.click()
    assert not finding.mask_layer.visible

    key_image = collect_report(window).ct.findings[0].key_image
    assert "(hidden on screen, drawn here)" in key_image.caption
    assert orange_pixels(key_image.image) > 2000
    assert not finding.mask_layer.visible  # still hidden for the user


def test_a_long_cycle_table_runs_over_pages_with_its_header_and_a_footer_on_each(tmp_path: Path) -> None:
    probabilities = {"normal": 0.7, "crackle": 0.2, "wheeze": 0.05, "both": 0.05}
    rows = tuple(CycleRow(n, 2.0 * n, 2.0 * n + 1.5, "crackle", "normal", probabilities) for n in range(1, 91))
    lung = LungSection("long.wav", 180.0, 4000, 1, "90 cycles from long.txt.", rows, "", (), False, 0)
    report = CaseReport("MedView case report", datetime(2025, 1, 2, 3, 4), "9.9", False, (), lung=lung)
    write_pdf(report, tmp_path / "long.pdf")
    pages = pdf_pages(tmp_path / "long.pdf")

    assert len(pages) >= 2
    for number, page in enumerate(pages, start=1):
        assert "Cycles of long.wav" in page  # the table's title row heads every page it runs over
        assert f"Page {number} of {len(pages)}" in page
        assert "MedView 9.9 · Generated 2025-01-02 03:04 — not a diagnosis by itself" in page
    text = " ".join(pages)
    assert "90 180.000 181.500 crackle normal 0.70 0.20 0.05 0.05" in text
    assert DEMO_WARNING not in text  # no demo model contributed


def test_an_unwritable_path_gives_an_export_error_naming_it(tmp_path: Path) -> None:
    report = CaseReport("MedView case report", datetime(2025, 1, 2), "9.9", False, (("Patient", "x"),))
    for path in (tmp_path / "no such folder" / "case.pdf", tmp_path):
        with pytest.raises(ExportError, match="cannot write the report") as caught:
            write_pdf(report, path)
        assert str(path) in str(caught.value)
    assert not (tmp_path / "no such folder").exists()


def test_nothing_open_is_nothing_to_report(window: Any) -> None:
    with pytest.raises(ExportError, match="nothing to report"):
        collect_report(window)


def test_the_report_prints_black_on_white_with_ruled_tables_under_the_dark_screen_theme(tmp_path: Path) -> None:
    # the app's dark theme is on (the app_theme fixture): its text colour is a light grey
    text_colour = QtWidgets.QApplication.palette().color(QtGui.QPalette.ColorRole.Text)
    assert text_colour.lightness() > 200
    provenance = (("Model", "lungs 1.0 (unet)"), ("Trained on", "12 public cases"), ("Validation metrics", "dice 0.9"))
    groups = (  # as the COVID finding's summary writes its groups table: no rules of its own
        "<p><b>Groups</b>: class probabilities of each group</p><table cellspacing='2' cellpadding='1'>"
        "<tr><th>#</th><th align='left'>slices, kind</th><th align='right'>covid</th></tr>"
        "<tr><td align='right'>1</td><td>11-60</td><td align='right'>0.912</td></tr>"
        "<tr><td align='right'>2</td><td>61-87</td><td align='right'>0.087</td></tr></table>"
    )
    finding = FindingSection("covid", "COVID-19 classification", groups, provenance, "covid 1.0", True, None)
    ct = SeriesSection("Chest CT", (("Modality", "CT"), ("Size", "87 slices of 512 x 512 pixels")), (finding,), None)
    probabilities = {"normal": 0.7, "crackle": 0.2, "wheeze": 0.05, "both": 0.05}
    cycles = tuple(CycleRow(n, 2.0 * n, 2.0 * n + 1.5, "crackle", "normal", probabilities) for n in range(1, 5))
    lung = LungSection("rec.wav", 15.0, 4000, 1, "4 cycles from rec.txt.", cycles, "lung 1.0", provenance, True, 5)
    photos = (
        PhotoRow(
            "ISIC_1.jpg",
            None,
            None,
            "malignant",
            "malignant",
            0.8,
            0.5,
            "8 of 10 trees vote malignant",
            "skin 1.0",
            True,
            "",
        ),
        PhotoRow("ISIC_2.jpg", None, None, "", "", None, 0.5, "", "", False, "cannot read the photo"),
    )
    skin = SkinSection(photos, (ModelSummary("skin 1.0", provenance, True),))
    identifiers = (("Patient name", "DOE^JANE"), ("Patient ID", "123456"))
    report = CaseReport("MedView case report", datetime(2025, 1, 2, 3, 4), "9.9", False, identifiers, ct, lung, skin)
    write_pdf(report, tmp_path / "case.pdf")
    pages = rendered_pages(tmp_path / "case.pdf")

    # every word on every page is printed dark: fields, findings, tables, verdicts, headings and footers
    for number, page in enumerate(pages, start=1):
        assert page.light_words() == [], f"page {number}"
    words = " ".join(page.text for page in pages)
    for expected in ("DOE^JANE", "0.912", "9.500", "malignant probability 80%", "cannot read the photo"):
        assert expected in words

    # the tables are ruled between their rows and columns; the skin photos' layout table is not
    for first, second in (
        ("Patient name", "Patient ID"),
        ("Patient name", "DOE^JANE"),
        ("Modality", "Size"),
        ("11-60", "61-87"),
        ("11-60", "0.912"),
        ("2.000", "4.000"),
        ("2.000", "3.500"),
        ("Trained on", "Validation metrics"),
    ):
        page = page_with(pages, first)
        assert page.ruled_between(first, second), (first, second)
    page = page_with(pages, "ISIC_1.jpg")
    assert not page.ruled_between("ISIC_1.jpg", "malignant,")
