"""``medview-train evaluate``: the shipped bundles on small real subsets, through the command, against the engine.

Each test copies a few real items of a task's public layout into ``tmp_path``,
runs the command as a hospital would (``training.cli.main``), and checks the
table's counts and numbers against what is computed here independently: the
engine called directly on one item, the rates recomputed from the per-item CSV
with scikit-learn / scipy.  No bundle's numbers are written into a test (the
kidney bundle is retrained from time to time).
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

from medview.engine.api import DEMO_BANNER, validated_summary
from medview.engine.manifest import load_manifest
from medview.engine.service import Engine
from medview.io.audio import ICBHI_CLASSES, read_icbhi_annotations, read_recording
from medview.io.photo import read_photo
from medview.io.volume import Volume
from training.cli import main
from training.common.datasets import LabelledImages
from training.common.operating_point import wilson_interval
from training.kidney.data import kidney_set_from_images, read_kidney_cases, read_kidney_dataset
from training.liver.data import list_liver_cases

MODELS = Path(__file__).resolve().parents[2] / "resources" / "models"


def _evaluate(capsys: pytest.CaptureFixture[str], bundle: Path, data: Path, tmp_path: Path) -> tuple[str, list[dict]]:
    """Run the command; return its stdout (the report) and the rows of its per-item CSV."""
    output, items = tmp_path / "report.txt", tmp_path / "items.csv"
    arguments = ["evaluate", str(bundle), "--data", str(data), "--device", "cpu", "--quiet"]
    code = main([*arguments, "--output", str(output), "--items", str(items)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert output.read_text(encoding="utf-8") == captured.out  # --output writes exactly what was printed
    with items.open(newline="", encoding="utf-8") as handle:
        return captured.out, list(csv.DictReader(handle))


def _cell(report: str, label: str) -> str:
    """The "this run" cell of the table row whose label starts with ``label``."""
    line = next(line for line in report.splitlines() if line.startswith(label))
    return re.split(r"\s{2,}", line)[1]


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def _wilson(successes: int, total: int, patients: int | None = None) -> str:
    """The Wilson interval of ``successes / total``; with ``patients``, of that rate counted as one per patient."""
    if patients is None:
        interval = binomtest(successes, total).proportion_ci(method="wilson")
        low, high = interval.low, interval.high
    else:
        low, high = wilson_interval(patients * successes / total, patients)
    return f"95% CI {100 * low:.1f}–{100 * high:.1f}%"


def _check_binary_table(
    report: str, rows: list[dict], positive: str, threshold: float, patients: list[str] | None = None
) -> None:
    """Sensitivity, specificity (with Wilson intervals, over ``patients`` when given: one per row), AUC and
    accuracy of the table, from the items' CSV."""
    truth = np.array([row["truth"] == positive for row in rows])
    chance = np.array([float(row[positive]) for row in rows])
    called = chance >= threshold
    assert [row["predicted"] == positive for row in rows] == called.tolist()
    hits, correct_rejections = int((truth & called).sum()), int((~truth & ~called).sum())
    sensitivity_line = next(line for line in report.splitlines() if line.startswith(f"Sensitivity ({positive})"))
    of = None if patients is None else np.asarray(patients)
    positive_patients = None if of is None else len(set(of[truth]))
    negative_patients = None if of is None else len(set(of[~truth]))
    assert _wilson(hits, int(truth.sum()), positive_patients) in sensitivity_line
    assert _cell(report, f"Sensitivity ({positive})") == _percent(hits / truth.sum())
    specificity_line = next(line for line in report.splitlines() if line.startswith(f"Specificity ({positive})"))
    assert _wilson(correct_rejections, int((~truth).sum()), negative_patients) in specificity_line
    assert _cell(report, f"Specificity ({positive})") == _percent(correct_rejections / (~truth).sum())
    assert _cell(report, "Accuracy") == _percent((truth == called).mean())
    assert _cell(report, f"AUC ({positive})") == f"{roc_auc_score(truth, chance):.3f}"


def _check_lines(report: str, bundle: Path, data: Path, threshold: float | None) -> None:
    card = load_manifest(bundle)
    title = report.splitlines()[0]
    assert str(data) in title
    assert (DEMO_BANNER in title) == card.is_demo
    recorded = validated_summary(card, threshold).removeprefix("Validated: ")
    assert f"recorded in the bundle: {recorded}" in report


def _copy_skin_photos(shared_data: Path, data: Path) -> dict[str, list[str]]:
    """The first three benign and three malignant photos of the ISIC sidecar set, with their JSON sidecars."""
    source = shared_data / "skin" / "isic_uda1_250px"
    picked: dict[str, list[str]] = {"benign": [], "malignant": []}
    for sidecar in sorted(source.glob("ISIC_*.json")):
        text = sidecar.read_text(encoding="utf-8")
        label = "malignant" if '"malignant"' in text else "benign" if '"benign"' in text else None
        if label is None or len(picked[label]) == 3:
            continue
        picked[label].append(sidecar.stem)
        for path in (sidecar, sidecar.with_suffix(".jpg")):
            shutil.copy(path, data)
        if all(len(names) == 3 for names in picked.values()):
            break
    return picked


def test_skin_bundle_on_isic_photos(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "photos"
    data.mkdir()
    picked = _copy_skin_photos(shared_data, data)
    bundle = MODELS / "skin-demo"
    card = load_manifest(bundle)
    threshold = card.thresholds["malignant"]

    report, rows = _evaluate(capsys, bundle, data, tmp_path)

    assert "6 photos (3 malignant) of 6 patient(s)" in report.splitlines()[0]
    assert f"threshold {threshold:g} (malignant)" in report.splitlines()[0]
    assert sorted(row["item"] for row in rows) == sorted(f"{name}.jpg" for names in picked.values() for name in names)
    _check_binary_table(report, rows, "malignant", threshold)
    _check_lines(report, bundle, data, threshold)
    # one photo through the engine directly: the probability the command used
    photo = picked["malignant"][0]
    result = Engine([MODELS], "cpu").classify_skin(card, read_photo(data / f"{photo}.jpg").rgb, explain=False)
    row = next(row for row in rows if row["item"] == f"{photo}.jpg")
    assert row["truth"] == "malignant"
    assert float(row["malignant"]) == pytest.approx(result.scores.probabilities["malignant"], rel=1e-5)


def test_kidney_bundle_on_kaggle_slices(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "kidney"
    for label in ("Normal", "Stone"):
        (data / label).mkdir(parents=True)
        for number in (1, 150, 300):  # far apart: three scans of each class
            shutil.copy(shared_data / "kidney_ct" / label / f"{label}- ({number}).jpg", data / label)
    bundle = MODELS / "kidney-demo"
    card = load_manifest(bundle)
    threshold = card.thresholds["stone"]

    report, rows = _evaluate(capsys, bundle, data, tmp_path)

    assert "6 slices (3 stone) of 6 scan(s)" in report.splitlines()[0]
    assert len(rows) == 6
    _check_binary_table(report, rows, "stone", threshold)
    _check_lines(report, bundle, data, threshold)
    # one slice through the engine directly, as CT in HU whose window (the bundle's) gives back the slice
    dataset = read_kidney_dataset(data)
    index = next(i for i, item in enumerate(dataset.items) if item.path.name == "Stone- (150).jpg")
    one = LabelledImages(dataset.items[index : index + 1], dataset.class_names, dataset.layout, dataset.root)
    low, high = card.input.hu_window
    volume = Volume(voxels=kidney_set_from_images(one).unit * (high - low) + low, spacing=(1.0, 1.0, 1.0))
    expected = Engine([MODELS], "cpu").classify_kidney_slices(card, volume, [0]).probabilities[0]
    row = next(row for row in rows if row["item"].endswith("Stone- (150).jpg"))
    assert float(row["stone"]) == pytest.approx(float(expected), rel=1e-5)


def test_kidney_bundle_on_ct_volumes_with_kidney_masks(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The cases.csv layout: every slice with kidney, the kidney mask as the ROI, as the viewer's kidney ROI."""
    data = tmp_path / "cases"
    data.mkdir()
    segmentations = shared_data / "liver_ct" / "totalsegmentator"
    (data / "cases.csv").write_text(
        "image,kidney_mask,label,stone_slices,kidney_labels,patient\n"
        f"{segmentations / 'example_ct_sm.nii.gz'},{segmentations / 'example_seg.nii.gz'},stone,5-8,2 3,ts\n",
        encoding="utf-8",
    )
    bundle = MODELS / "kidney-demo"
    card = load_manifest(bundle)
    case = read_kidney_cases(data, data / "cases.csv")[0]
    kidney_slices = np.flatnonzero(case.kidney.any(axis=(1, 2)))

    report, rows = _evaluate(capsys, bundle, data, tmp_path)

    assert f"{kidney_slices.size} slices (4 stone) of 1 scan(s)" in report.splitlines()[0]
    assert [row["item"].rsplit("#z", 1)[1] for row in rows] == [str(z) for z in kidney_slices]
    assert [row["truth"] for row in rows].count("stone") == 4
    # one scan: each interval counts it once, however many of its slices there are
    _check_binary_table(report, rows, "stone", card.thresholds["stone"], ["ts"] * len(rows))
    z = int(kidney_slices[6])
    expected = Engine([MODELS], "cpu").classify_kidney_slices(card, case.volume, [z], roi=case.kidney)
    assert float(next(row for row in rows if row["item"].endswith(f"#z{z}"))["stone"]) == pytest.approx(
        float(expected.probabilities[0]), rel=1e-5
    )


def test_lung_sound_bundle_on_icbhi_recordings(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "icbhi"
    data.mkdir()
    stems = ("102_1b1_Ar_sc_Meditron", "106_2b1_Pl_mc_LittC2SE")
    for stem in stems:
        for suffix in (".wav", ".txt"):
            shutil.copy(shared_data / "lung_sound" / "icbhi_sample" / f"{stem}{suffix}", data)
    labels = [cycle.label for stem in stems for cycle in read_icbhi_annotations(data / f"{stem}.txt")]
    abnormal = sum(label != "normal" for label in labels)
    bundle = MODELS / "lung-sound-demo"

    report, rows = _evaluate(capsys, bundle, data, tmp_path)

    assert f"{len(labels)} cycles ({abnormal} abnormal) of 2 recording(s) of 2 patient(s)" in report.splitlines()[0]
    assert [row["truth"] for row in rows] == labels
    # the ICBHI scores from the per-cycle classes: exact class for abnormal cycles, normal for normal ones
    normal = [row["predicted"] == "normal" for row in rows if row["truth"] == "normal"]
    exact = [row["predicted"] == row["truth"] for row in rows if row["truth"] != "normal"]
    specificity, sensitivity = np.mean(normal), np.mean(exact)
    assert _cell(report, "Sp (4-class)") == _percent(specificity)
    assert _cell(report, "Se (4-class)") == _percent(sensitivity)
    assert _cell(report, "ICBHI score (4-class)") == _percent((specificity + sensitivity) / 2)
    assert _wilson(sum(exact), len(exact)) in next(line for line in report.splitlines() if line.startswith("Se (4"))
    _check_lines(report, bundle, data, None)
    # one recording through the engine directly
    card = load_manifest(bundle)
    recording = read_recording(data / f"{stems[1]}.wav")
    cycles = read_icbhi_annotations(data / f"{stems[1]}.txt", duration_s=recording.duration_s)
    result = Engine([MODELS], "cpu").classify_lung_sound(card, recording, [(c.start_s, c.end_s) for c in cycles])
    mine = [row for row in rows if row["item"].startswith(stems[1])]
    measured = np.array([[float(row[name]) for name in ICBHI_CLASSES] for row in mine])
    expected = np.array([[score.probabilities[name] for name in ICBHI_CLASSES] for score in result.scores])
    np.testing.assert_allclose(measured, expected, rtol=1e-5, atol=1e-7)
    assert [row["predicted"] for row in mine] == [score.label for score in result.scores]


def test_liver_bundle_on_a_dicom_case(shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The liver bundle goes through liver-compare's code: the mean Dice beside the paper's, the per-case table."""
    data = tmp_path / "liver"
    data.mkdir()
    (data / "cases.csv").write_text(
        "image,mask,liver_labels,patient\n"
        f"{shared_data / 'dicom_ct' / 'dcmqi_ct-3slice'},{shared_data / 'liver_ct' / 'dcmqi' / 'liver.dcm'},1,dcmqi\n",
        encoding="utf-8",
    )
    bundle = MODELS / "liver-demo"
    card = load_manifest(bundle)

    report, _rows = _evaluate(capsys, bundle, data, tmp_path)

    assert "mean over 1 case(s)" in report.splitlines()[0]
    case = list_liver_cases(data)[0].load()
    mask = Engine([MODELS], "cpu").segment_liver(card, case.volume).mask
    dice = 2 * np.logical_and(mask, case.liver).sum() / (mask.sum() + case.liver.sum())
    assert _cell(report, "DSC") == _percent(dice)
    assert f"| {dice:.4f} |" in report  # the per-case table of liver-compare
    _check_lines(report, bundle, data, card.thresholds["liver"])


def test_a_folder_without_the_task_layout_is_named_in_one_line(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _copy_skin_photos(shared_data, photos)
    assert main(["evaluate", str(MODELS / "kidney-demo"), "--data", str(photos), "--device", "cpu", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    message = captured.err.strip().splitlines()[-1]
    assert message.startswith(f"medview-train evaluate: {photos}: no kidney dataset found")
    assert "Traceback" not in captured.err

    missing = tmp_path / "nowhere"
    assert main(["evaluate", str(MODELS / "kidney-demo"), "--data", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"medview-train evaluate: {missing}: not a folder"


def test_a_bundle_that_fails_verification_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "liver-demo"
    shutil.copytree(MODELS / "liver-demo", bundle)
    weights = next(bundle.glob("*.safetensors"))
    content = bytearray(weights.read_bytes())
    content[-1] ^= 0xFF
    weights.write_bytes(bytes(content))
    assert main(["evaluate", str(bundle), "--data", str(tmp_path), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().startswith(f"medview-train evaluate: {weights}: ")
    assert "checksum mismatch" in captured.err
    assert len(captured.err.strip().splitlines()) == 1

    assert main(["evaluate", str(tmp_path / "photos"), "--data", str(tmp_path), "--quiet"]) == 1
    assert "no manifest.json: not a model bundle" in capsys.readouterr().err
