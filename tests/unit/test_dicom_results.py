"""AI results as DICOM objects (SR, SEG, parametric map, secondary capture, encapsulated PDF) from real runs.

The shipped bundles run on real series: the liver U-Net on the bundled
TotalSegmentator sample, the kidney model on the same series, and COVID-19 on
COVID-CT-MD P001 with Grad-CAM.  Every object must pass dciodvfy without an
error, read back with highdicom / pydicom, and say what the run said: the
same probabilities, slices, verdict, votes and algorithm (with its demo flag).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medview.engine.api import CovidResult, SegmentationResult, SliceClassificationResult
from medview.engine.service import Engine
from medview.errors import InputError
from medview.io import dicom_results as dr
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from medview.workflows.dicom_results import WrittenObjects, write_result_objects
from tests.conftest import RESOURCES

ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
P001_DIR = Path("covid_ct") / "COVID-CT-MD" / "COVID-19" / "P001"


def _dciodvfy(path: Path) -> list[str]:
    executable = shutil.which("dciodvfy")
    if executable is None:
        pytest.skip("dciodvfy is not installed (Debian: installer/bootstrap.sh test installs it)")
    result = subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=120, check=False)
    return (result.stdout + result.stderr).splitlines()


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine([RESOURCES / "models"], device_preference="cpu")


def _card(engine: Engine, task: str) -> Any:
    (card,) = engine.cards(task)  # type: ignore[arg-type]
    return card


@pytest.fixture(scope="module")
def sample_ct(sample_series_dir: Path) -> Volume:
    return load_dicom([sample_series_dir])


@pytest.fixture(scope="module")
def p001(shared_data: Path) -> Volume:
    return load_dicom([shared_data / P001_DIR])


@pytest.fixture(scope="module")
def liver(engine: Engine, sample_ct: Volume) -> SegmentationResult:
    return engine.segment_liver(_card(engine, "liver_segmentation"), sample_ct)


@pytest.fixture(scope="module")
def kidney(engine: Engine, sample_ct: Volume) -> SliceClassificationResult:
    """A whole-series run with Grad-CAM of three slices; the threshold is moved to the run's median
    probability so that half the slices are positive and get their own groups."""
    explained = (5, 10, 15)
    result = engine.classify_kidney_slices(
        _card(engine, "kidney_stone"), sample_ct, range(sample_ct.shape[0]), explain_slices=explained
    )
    threshold = float(np.median(result.probabilities))
    return dataclasses.replace(result, provenance=dataclasses.replace(result.provenance, threshold=threshold))


@pytest.fixture(scope="module")
def covid(engine: Engine, p001: Volume) -> CovidResult:
    lung = _card(engine, "lung_segmentation")
    return engine.classify_covid(_card(engine, "covid_ct"), p001, lung_card=lung, explain=True)


@pytest.fixture(scope="module")
def written(
    tmp_path_factory: pytest.TempPathFactory,
    sample_ct: Volume,
    p001: Volume,
    liver: SegmentationResult,
    kidney: SliceClassificationResult,
    covid: CovidResult,
) -> dict[str, WrittenObjects]:
    out = {}
    for name, volume, result in (("liver", sample_ct, liver), ("kidney", sample_ct, kidney), ("covid", p001, covid)):
        folder = tmp_path_factory.mktemp(name)
        out[name] = write_result_objects(folder, volume, result, roi="drawn rectangle", captures=True)
    return out


def _by_class(objects: WrittenObjects) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in objects.files:
        found.setdefault(str(pydicom.dcmread(path, stop_before_pixels=True).SOPClassUID), []).append(path)
    return found


def _groups(path: Path) -> list[Any]:
    """The report's measurement groups, image groups first, as highdicom reads them."""
    content = hd.sr.srread(path).content
    return [*content.get_image_measurement_groups(), *content.get_volumetric_roi_measurement_groups()]


# --------------------------------------------------------------------------- every object is valid DICOM


@pytest.mark.parametrize("name", ["liver", "kidney", "covid"])
def test_every_object_passes_dciodvfy_without_error(written: dict[str, WrittenObjects], name: str) -> None:
    by_class = _by_class(written[name])
    expected = {COMPREHENSIVE_3D_SR, PARAMETRIC_MAP, SECONDARY_CAPTURE} | ({SEGMENTATION} if name == "liver" else set())
    assert set(by_class) == expected
    for paths in by_class.values():
        lines = _dciodvfy(paths[0])
        errors = [line for line in lines if line.startswith("Error")]
        assert not errors, f"{paths[0].name}:\n" + "\n".join(lines)
    # the only unrecognised coding scheme is MedView's own, and it is declared in the report
    report = pydicom.dcmread(by_class[COMPREHENSIVE_3D_SR][0])
    assert [item.CodingSchemeDesignator for item in report.CodingSchemeIdentificationSequence][-1] == "99MEDVIEW"


def test_the_objects_belong_to_the_source_study_and_patient(written: dict[str, WrittenObjects], p001: Volume) -> None:
    source = pydicom.dcmread(p001.slice_files[0], stop_before_pixels=True)
    series = set()
    for path in written["covid"].files:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        assert dataset.StudyInstanceUID == source.StudyInstanceUID
        assert dataset.PatientID == source.PatientID
        assert dataset.SeriesInstanceUID != source.SeriesInstanceUID
        assert "DEMO not for diagnosis" in dataset.SeriesDescription
        series.add(dataset.SeriesInstanceUID)
    assert len(series) == 3  # report, map, and one series for all the captures


def test_the_demo_warning_survives_a_long_model_id_in_every_series_description(
    written: dict[str, WrittenObjects], kidney: SliceClassificationResult
) -> None:
    """Series Description holds 64 characters; the kidney model's id is 32: the warning comes before it."""
    assert len(kidney.provenance.model_id) > 30
    for path in written["kidney"].files:
        description = pydicom.dcmread(path, stop_before_pixels=True).SeriesDescription
        assert "DEMO not for diagnosis" in description, description


# --------------------------------------------------------------------------- what the reports say


def _texts(item: Any, code_value: str) -> list[str]:
    """Every TEXT value under ``item`` (at any depth) whose concept has ``code_value``."""
    found = []
    for child in item.get("ContentSequence", []):
        if child.ValueType == "TEXT" and child.ConceptNameCodeSequence[0].CodeValue == code_value:
            found.append(str(child.TextValue))
        found += _texts(child, code_value)
    return found


def _algorithm(group: Any) -> tuple[str, str, list[str]]:
    """Algorithm name, version and parameters (DCM 111001, 111003, 111002) of a measurement group."""
    holder = {"ContentSequence": list(group)}
    (name,), (version,) = set(_texts(holder, "111001")), set(_texts(holder, "111003"))
    return name, version, sorted(set(_texts(holder, "111002")))


def test_kidney_report_holds_each_positive_slice_with_its_probability_and_image(
    written: dict[str, WrittenObjects], kidney: SliceClassificationResult, sample_ct: Volume
) -> None:
    (path,) = _by_class(written["kidney"])[COMPREHENSIVE_3D_SR]
    groups = _groups(path)
    positive = kidney.positive_slices()
    assert 0 < len(positive) < len(kidney.slice_indices)
    run, *slices = groups
    assert str(run.tracking_identifier) == f"kidney stone, {len(kidney.slice_indices)} slices run"
    assert run.finding_type.value == "95570007"
    values = {m.name.meaning: m.value for m in run.get_measurements()}
    assert values["Slices at or above the threshold"] == len(positive)
    assert values["Threshold Value"] == pytest.approx(kidney.provenance.threshold)
    assert values["Case Sensitivity"] == pytest.approx(kidney.provenance.metrics["sensitivity"])
    (presence,) = run.get_qualitative_evaluations()
    assert presence.value.meaning == "Present"
    name, version, parameters = _algorithm(run)
    assert (name, version) == (kidney.provenance.model_id, kidney.provenance.model_version)
    assert "DEMO MODEL: not for diagnosis" in parameters
    assert "ROI: drawn rectangle" in parameters
    probabilities = dict(zip(kidney.slice_indices, kidney.probabilities.tolist(), strict=True))
    assert [str(group.tracking_identifier) for group in slices] == [f"kidney stone, slice {z + 1}" for z in positive]
    for z, group in zip(positive, slices, strict=True):
        (measurement,) = group.get_measurements()
        assert measurement.name.value == "122157"  # DCM Probability
        assert measurement.value == pytest.approx(probabilities[z], abs=1e-4)
        (image,) = group.source_images
        assert image.referenced_sop_instance_uid == sample_ct.slice_uids[z]


def test_covid_report_holds_the_verdict_votes_rule_and_every_group(
    written: dict[str, WrittenObjects], covid: CovidResult, p001: Volume
) -> None:
    (path,) = _by_class(written["covid"])[COMPREHENSIVE_3D_SR]
    patient, *groups = _groups(path)
    evaluations = {e.name.meaning: e.value.meaning for e in patient.get_qualitative_evaluations()}
    verdict = {"covid_pneumonia": "COVID-19", "non_covid_pneumonia": "Pneumonia", "healthy": "Normal"}[covid.verdict]
    assert (patient.finding_type.meaning, patient.finding_type.scheme_designator) == (verdict, "SCT")
    assert evaluations["Healthy majority overruled by a group above 0.9"] == ("Yes" if covid.switched else "No")
    votes = {m.name.meaning: m.value for m in patient.get_measurements()}
    assert votes == {f"Groups voting {name.replace('_', ' ')}": covid.votes.get(name, 0) for name in covid.class_names}
    assert len(patient.source_images) == len(covid.kept_slices)
    assert len(groups) == len(covid.groups)
    for group, score in zip(groups, covid.groups, strict=True):
        assert str(group.tracking_identifier) == f"COVID-19 group: {score.description}"
        measured = {m.name.meaning: m.value for m in group.get_measurements()}
        for name, probability in score.scores.probabilities.items():
            assert measured[f"Probability of {name.replace('_', ' ')}"] == pytest.approx(probability, abs=1e-4)
        assert measured["Black padding slots in the group"] == sum(s is None for s in score.sources)
        referenced = {image.referenced_sop_instance_uid for image in group.source_images}
        real = {int(s) for s in score.sources if s is not None}
        assert referenced == {p001.slice_uids[z] for z in real}


def test_liver_report_measures_the_seg_segment(written: dict[str, WrittenObjects], liver: SegmentationResult) -> None:
    by_class = _by_class(written["liver"])
    (seg_path,) = by_class[SEGMENTATION]
    (group,) = _groups(by_class[COMPREHENSIVE_3D_SR][0])
    seg = pydicom.dcmread(seg_path, stop_before_pixels=True)
    assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    measured = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
    assert measured["Volume"] == (pytest.approx(liver.volume_ml, abs=0.05), "ml")
    first, last = liver.slice_range or (0, 0)
    assert measured["First slice holding the finding (1-based)"][0] == first + 1
    assert measured["Last slice holding the finding (1-based)"][0] == last + 1


# --------------------------------------------------------------------------- maps and captures


def _map_values(path: Path) -> dict[str, np.ndarray]:
    """The map's real-world values by referenced CT instance, with pydicom alone."""
    dataset = pydicom.dcmread(path)
    (mapping,) = dataset.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence
    pixels = dataset.pixel_array.astype(np.float64)
    values = pixels * float(mapping.RealWorldValueSlope) + float(mapping.RealWorldValueIntercept)
    frames = {}
    for index, group in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        (source,) = group.DerivationImageSequence[0].SourceImageSequence
        frames[str(source.ReferencedSOPInstanceUID)] = values[index]
    return frames


def test_liver_probability_map_holds_the_probabilities_on_their_slices(
    written: dict[str, WrittenObjects], liver: SegmentationResult, sample_ct: Volume
) -> None:
    (path,) = _by_class(written["liver"])[PARAMETRIC_MAP]
    frames = _map_values(path)
    assert frames
    for z, uid in enumerate(sample_ct.slice_uids):
        expected = np.asarray(liver.probability[z], dtype=np.float64)
        if uid in frames:
            np.testing.assert_allclose(frames[uid], expected, atol=1 / 65535 + 1e-3)  # float16 probabilities
        else:
            assert expected.max() <= 0.01


def test_covid_grad_cam_map_is_inside_the_lungs_and_scaled_to_the_run(
    written: dict[str, WrittenObjects], covid: CovidResult, p001: Volume
) -> None:
    (path,) = _by_class(written["covid"])[PARAMETRIC_MAP]
    frames = _map_values(path)
    assert {p001.slice_uids.index(uid) for uid in frames} == set(covid.heatmaps)
    peak = max(float((h.values * covid.lung_mask[z]).max()) for z, h in covid.heatmaps.items())
    assert max(float(v.max()) for v in frames.values()) == pytest.approx(1.0, abs=1e-4)
    for uid, values in frames.items():
        z = p001.slice_uids.index(uid)
        assert not values[~covid.lung_mask[z]].any()
        expected = covid.heatmaps[z].values * covid.lung_mask[z] / peak
        np.testing.assert_allclose(values, expected, atol=2 / 65535)
    meaning = pydicom.dcmread(path, stop_before_pixels=True).SharedFunctionalGroupsSequence[0]
    explanation = meaning.RealWorldValueMappingSequence[0].LUTExplanation
    assert explanation.startswith("Grad-CAM of ")
    assert "1 = the run's maximum" in explanation


def test_captures_burn_in_the_warning_and_draw_the_positive_slices(
    written: dict[str, WrittenObjects], kidney: SliceClassificationResult, sample_ct: Volume
) -> None:
    captures = _by_class(written["kidney"])[SECONDARY_CAPTURE]
    assert len(captures) == len(kidney.positive_slices())
    dataset = pydicom.dcmread(captures[0])
    assert dataset.BurnedInAnnotation == "YES"
    assert dataset.ImageComments.startswith("AI result, demo model: not for diagnosis. Kidney stone probability")
    assert dataset.pixel_array.shape == (*sample_ct.shape[1:], 3)
    # the text box (yellow on black) is in the top-left corner, the CT below it is grey
    corner = dataset.pixel_array[:20, :200].reshape(-1, 3)
    assert ((corner[:, 0] > 200) & (corner[:, 1] > 200) & (corner[:, 2] < 60)).any()
    centre = dataset.pixel_array[200:300, 200:300].astype(int)
    assert (np.abs(centre[..., 0] - centre[..., 2]) < 3).mean() > 0.5  # mostly untinted grey


# --------------------------------------------------------------------------- PDF and refusals


def test_the_case_report_pdf_is_wrapped_in_the_study(tmp_path: Path, p001: Volume) -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    path = dr.write_encapsulated_pdf(tmp_path / "report.dcm", pdf, p001, title="MedView case report – P001")
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == ENCAPSULATED_PDF
    assert dataset.EncapsulatedDocument[: len(pdf)] == pdf
    assert dataset.EncapsulatedDocumentLength == len(pdf)
    assert dataset.DocumentTitle == "MedView case report – P001"
    assert dataset.StudyInstanceUID == pydicom.dcmread(p001.slice_files[0], stop_before_pixels=True).StudyInstanceUID
    assert not [line for line in _dciodvfy(path) if line.startswith("Error")]
    with pytest.raises(ValueError, match="PDF"):
        dr.write_encapsulated_pdf(tmp_path / "not.dcm", b"<html>", p001, title="x")


def test_a_volume_without_a_dicom_series_is_refused_with_a_message(
    tmp_path: Path, liver: SegmentationResult, sample_ct: Volume
) -> None:
    from_file = dataclasses.replace(sample_ct, slice_files=(), slice_uids=())
    with pytest.raises(InputError, match="needs the DICOM series"):
        write_result_objects(tmp_path, from_file, liver)
    assert not list(tmp_path.iterdir())  # nothing half-written


# --------------------------------------------------------------------------- reading them back


@pytest.mark.parametrize("name", ["kidney", "covid"])
def test_results_beside_the_series_are_read_back_with_their_map(
    tmp_path: Path,
    name: str,
    sample_series_dir: Path,
    shared_data: Path,
    kidney: SliceClassificationResult,
    covid: CovidResult,
) -> None:
    """A study folder as the received-studies store keeps it (a folder per series): the CT, and the results."""
    from medview.workflows.dicom_results import reopen_results

    source, result = (sample_series_dir, kidney) if name == "kidney" else (shared_data / P001_DIR, covid)
    (tmp_path / "ct").symlink_to(source, target_is_directory=True)
    volume = load_dicom([tmp_path / "ct"])
    (tmp_path / "results").mkdir()
    write_result_objects(tmp_path / "results", volume, result, roi="drawn rectangle")
    (reopened,), problems = reopen_results(volume)
    assert problems == []
    assert reopened.kind == {"kidney": "kidney stone", "covid": "COVID-19"}[name]
    algorithm = reopened.report.algorithm
    assert algorithm is not None
    assert (algorithm.name, algorithm.version, algorithm.demo) == (
        result.provenance.model_id,
        result.provenance.model_version,
        True,
    )
    assert algorithm.parameters["validated"] == result.provenance.validated
    assert reopened.mask is None
    assert reopened.map is not None
    assert set(reopened.map.values) == set(result.heatmaps)
    if name == "covid":
        assert len(reopened.report.groups) == 1 + len(covid.groups)
        assert reopened.report.groups[0].slices == tuple(covid.kept_slices)
    else:
        assert len(reopened.report.groups) == 1 + len(kidney.positive_slices())
        assert [g.slices for g in reopened.report.groups[1:]] == [(z,) for z in kidney.positive_slices()]


def test_nothing_is_found_beside_a_series_without_results(sample_ct: Volume) -> None:
    from medview.workflows.dicom_results import reopen_results

    assert reopen_results(sample_ct) == ([], [])


def test_readme_documents_every_private_code() -> None:
    """README's table of MedView's private coding scheme lists every code the writers use."""
    readme = (RESOURCES.parent / "README.md").read_text(encoding="utf-8")
    assert dr.PRIVATE_SCHEME[0] in readme
    missing = [code for code, _scheme, _meaning in dr.PRIVATE_CODES if f"`{code}`" not in readme]
    assert not missing, f"not in README: {missing}"


def test_a_run_over_a_series_with_a_missing_slice_still_writes_its_report(
    tmp_path: Path, sample_ct: Volume, kidney: SliceClassificationResult
) -> None:
    """A whole-series run covers every slice, also one missing from the series (shown as air): the report
    references the images that exist."""
    gap = dataclasses.replace(sample_ct, missing_slices=frozenset({3}))
    written = write_result_objects(tmp_path, gap, kidney)
    (report,) = [path for path in written.files if path.name.endswith("_sr.dcm")]
    run, *_slices = _groups(report)
    referenced = {image.referenced_sop_instance_uid for image in run.source_images}
    assert referenced == {uid for z, uid in enumerate(sample_ct.slice_uids) if z != 3}


def test_a_second_export_into_the_same_folder_keeps_the_first(
    tmp_path: Path, sample_ct: Volume, liver: SegmentationResult
) -> None:
    first = write_result_objects(tmp_path, sample_ct, liver).files
    second = write_result_objects(tmp_path, sample_ct, liver).files
    assert not set(first) & set(second)
    assert all(path.is_file() for path in (*first, *second))
    assert {path.name for path in second} == {path.name.replace("1.0.0_", "1.0.0_2_") for path in first}


def test_a_damaged_report_beside_the_series_is_named_and_the_others_still_come_back(
    tmp_path: Path, sample_series_dir: Path, liver: SegmentationResult, kidney: SliceClassificationResult
) -> None:
    from medview.workflows.dicom_results import reopen_results

    (tmp_path / "ct").symlink_to(sample_series_dir, target_is_directory=True)
    volume = load_dicom([tmp_path / "ct"])
    (tmp_path / "results").mkdir()
    write_result_objects(tmp_path / "results", volume, liver)
    (kidney_report,) = [p for p in write_result_objects(tmp_path, volume, kidney).files if p.name.endswith("_sr.dcm")]
    damaged = tmp_path / "results" / "damaged_sr.dcm"
    damaged.write_bytes(kidney_report.read_bytes()[: kidney_report.stat().st_size * 2 // 3])
    (tmp_path / "results" / "photo.dcm").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))  # not DICOM: passed over
    reopened, problems = reopen_results(volume)
    assert [result.kind for result in reopened] == ["liver"]
    (problem,) = problems
    assert problem.startswith(f"{damaged}: not a readable measurement report (")
    assert "\n" not in problem  # one line, not highdicom's dump of the dataset
