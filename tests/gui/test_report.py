"""The case report: gathered from the real window after real runs of the shipped demo models, written as a PDF
whose text is read back (pypdf) the way a reader of the report would see it."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pypdf import PdfReader

from medview import __version__
from medview.errors import ExportError
from medview.ui.report import (
    ANONYMISED,
    DEMO_WARNING,
    KEY_IMAGE_SIDE,
    CaseReport,
    CycleRow,
    LungSection,
    collect_report,
    write_pdf,
)
from tests.gui.conftest import SAMPLE_SERIES, open_and_wait
from tests.gui.test_findings_panel import segment
from tests.gui.test_lung_panel import ICBHI, open_and_classify
from tests.gui.test_skin_panel import ISIC, wait_settled

RECORDING = "104_1b1_Lr_sc_Litt3200.wav"  # the shortest real recording: 15 s, 5 annotated cycles
PHOTOS = ("ISIC_0000154.jpg", "ISIC_0000111.jpg")
DCMQI_SERIES = Path("dicom_ct") / "dcmqi_ct-3slice"  # 3 slices with a patient name, ID and accession number


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
    axial = window.mpr.axial
    axial.set_index(2)  # the user reads another slice than the one the report shows
    shown = [(layer, layer.visible, layer.opacity) for layer in window.layers.layers]
    lung_result = open_and_classify(qtbot, window, shared_data / ICBHI / RECORDING)
    window.open_paths([shared_data / ISIC / name for name in PHOTOS])
    wait_settled(qtbot, window, len(PHOTOS))

    report = collect_report(window)

    # the key image is the slice with the most liver, drawn off screen: the user's view is left as it was
    assert axial.index == 2
    assert [(layer, layer.visible, layer.opacity) for layer in window.layers.layers] == shown
    key = int(np.argmax(result.mask.sum(axis=(1, 2))))
    section = report.ct.findings[0]
    assert section.key_image.caption.startswith(f"Axial slice {key + 1} of {window.volume.shape[0]}")
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
    assert f"slices {first + 1}-{last + 1} of {window.volume.shape[0]}" in text
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

    for number, page in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in page
        assert f"MedView {__version__}" in page
        assert "not a diagnosis by itself" in page


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


def test_a_finding_whose_overlays_are_hidden_is_drawn_with_its_mask_and_says_so(
    qtbot: Any, window: Any, engine: Any, shared_data: Path
) -> None:
    window.set_engine(engine)
    open_and_wait(qtbot, window, shared_data / DCMQI_SERIES)
    finding = segment(qtbot, window)
    window.findings.show_mask.click()
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
