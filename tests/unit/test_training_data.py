"""Training data: splits never share a patient, and each reader on the real public layouts."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from medview.errors import InputError
from training.common.splits import (
    Split,
    cross_validation_folds,
    holdout,
    holdout_per_class_of_patients,
    official_split,
    patient_folds_per_class,
    patient_split,
    random_patient_splits,
)
from training.covid.data import read_covid_dataset
from training.kidney.data import (
    CLASS_NAMES,
    NOT_AXIAL_ASPECT,
    body_aspect,
    consecutive_runs,
    kidney_set_from_images,
    read_kidney_dataset,
)
from training.liver.data import read_liver_dataset
from training.lung.data import OFFICIAL_SPLIT_FILE, read_icbhi_dataset
from training.skin.data import read_skin_dataset


def _groups(seed: int, items: int = 200) -> tuple[list[int], list[str]]:
    rng = np.random.default_rng(seed)
    patients = rng.integers(0, 23, items)
    labels = (patients % 3 == 0).astype(int)  # one label per patient, as in a per-patient diagnosis
    return labels.tolist(), [f"p{p}" for p in patients]


@pytest.mark.parametrize("seed", range(5))
def test_patient_split_never_puts_a_patient_on_two_sides(seed: int) -> None:
    labels, groups = _groups(seed)
    split = patient_split(labels, groups, test_fraction=0.2, validation_fraction=0.1, seed=seed)
    sides = [set(np.asarray(groups)[indices].tolist()) for indices in (split.train, split.validation, split.test)]
    assert not (sides[0] & sides[1])
    assert not (sides[0] & sides[2])
    assert not (sides[1] & sides[2])
    assert sorted(np.concatenate([split.train, split.validation, split.test]).tolist()) == list(range(len(labels)))
    assert len(split.test) > 0
    assert len(split.validation) > 0
    assert set(np.asarray(labels)[split.test].tolist()) == {0, 1}  # stratified: both classes held out


def test_folds_and_random_splits_are_patient_disjoint() -> None:
    labels, groups = _groups(7)
    group_array = np.asarray(groups)
    folds = cross_validation_folds(labels, groups, 6, seed=0)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(labels)))
    for train, test in [*folds, *random_patient_splits(groups, repeats=10, test_fraction=0.2, seed=0)]:
        assert not set(group_array[train].tolist()) & set(group_array[test].tolist())


def test_split_check_and_digest() -> None:
    groups = ["a", "a", "b", "c"]
    with pytest.raises(ValueError, match="patient 'a' is in both"):
        Split(np.array([0]), np.array([], dtype=int), np.array([1, 2]), "").check(groups)
    ids = ["x0", "x1", "x2", "x3"]
    first = Split(np.array([0, 1]), np.array([], dtype=int), np.array([2, 3]), "")
    again = Split(np.array([1, 0]), np.array([], dtype=int), np.array([3, 2]), "")
    other = Split(np.array([0, 1, 2]), np.array([], dtype=int), np.array([3]), "")
    assert first.digest(ids) == again.digest(ids) != other.digest(ids)


def test_holdout_needs_two_patients_and_falls_back_without_enough_for_stratification() -> None:
    with pytest.raises(ValueError, match="at least 2 patients"):
        holdout([0, 1, 0], ["a", "a", "a"], 0.2, seed=0)
    groups = np.asarray(["a", "a", "b", "b", "c"])
    kept, held = holdout([0, 0, 1, 1, 0], groups.tolist(), 0.2, seed=0)  # 3 patients < 1/0.2 folds
    assert len(held) > 0
    assert not set(groups[held]) & set(groups[kept])


# ------------------------------------------------------------------ skin


def test_skin_reader_isic_sidecars(shared_data: Path) -> None:
    dataset = read_skin_dataset(shared_data / "skin" / "isic_uda1_250px")
    # labels.csv is found first: it is the ISIC metadata table of the same 350 images
    assert dataset.counts() == {"images": 350, "patients": 350, "benign": 252, "malignant": 98}
    with (shared_data / "skin" / "isic_uda1_250px" / "labels.csv").open() as handle:
        truth = {row["file"]: row["benign_malignant"] for row in csv.DictReader(handle)}
    assert all(truth[item.path.name] == dataset.class_names[item.label] for item in dataset.items)


def test_skin_reader_layouts(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "skin" / "isic_uda1_250px"
    sidecars = tmp_path / "sidecars"
    sidecars.mkdir()
    for number in range(6):
        for suffix in (".jpg", ".json"):
            shutil.copy(source / f"ISIC_{number:07d}{suffix}", sidecars)
    assert read_skin_dataset(sidecars).layout == "ISIC JSON sidecars"

    kaggle = tmp_path / "kaggle"
    for side, names in (("train", range(0, 8)), ("test", range(8, 12))):
        for label in ("benign", "malignant"):
            (kaggle / side / label).mkdir(parents=True)
        for number in names:
            label = "malignant" if number % 2 else "benign"
            shutil.copy(source / f"ISIC_{number:07d}.jpg", kaggle / side / label)
    dataset = read_skin_dataset(kaggle)
    assert dataset.layout == "folders per class"
    split = official_split(dataset.sides, dataset.patients, "own folders")
    train, test = split.train, split.test
    assert (len(train), len(test)) == (8, 4)
    assert {dataset.items[i].path.parent.name for i in test} == {"benign", "malignant"}


def test_skin_reader_refuses_unknown_labels_and_missing_classes(tmp_path: Path, shared_data: Path) -> None:
    source = shared_data / "skin" / "isic_uda1_250px"
    shutil.copy(source / "ISIC_0000000.jpg", tmp_path)
    (tmp_path / "meta.csv").write_text("isic_id,benign_malignant\nISIC_0000000,maybe\n")
    with pytest.raises(InputError, match="row 2: benign_malignant is 'maybe'"):
        read_skin_dataset(tmp_path)
    (tmp_path / "meta.csv").write_text("isic_id,benign_malignant\nISIC_0000000,benign\n")
    with pytest.raises(InputError, match="no images of class malignant"):
        read_skin_dataset(tmp_path)


# ------------------------------------------------------------------ kidney


def test_kidney_reader_real_layout_and_runs(shared_data: Path) -> None:
    dataset = read_kidney_dataset(shared_data / "kidney_ct")
    counts = dataset.counts()
    assert (counts["images"], counts["normal"], counts["stone"]) == (1000, 500, 500)
    patient = {item.path.name: item.patient for item in dataset.items}
    # neighbouring slices of one scan share a patient; the two classes never do
    assert patient["Stone- (1).jpg"] == patient["Stone- (2).jpg"] == patient["Stone- (3).jpg"]
    assert patient["Normal- (1).jpg"] != patient["Stone- (1).jpg"]
    assert 10 < counts["patients"] < 200


def test_consecutive_runs_break_where_the_image_changes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    scans = [rng.integers(0, 255, (64, 64)).astype(np.float32) for _ in range(2)]
    paths = []
    for number in range(1, 9):
        base = scans[0] if number <= 5 else scans[1]
        image = np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)  # near-duplicates
        path = tmp_path / f"Stone- ({number}).png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    runs = consecutive_runs(list(reversed(paths)))  # the order of the listing does not matter
    assert list(reversed(runs)) == [0, 0, 0, 0, 0, 1, 1, 1]
    paths[6].rename(tmp_path / "Stone- (20).png")  # a gap in the numbering starts a run too
    paths[6] = tmp_path / "Stone- (20).png"
    assert consecutive_runs(paths) == [0, 0, 0, 0, 0, 1, 3, 2]  # numbers 1-5 | 6 | 20 (after 8) | 8


def test_kidney_reader_reads_both_kaggle_folders_as_one_numbering(shared_data: Path, tmp_path: Path) -> None:
    dataset = read_kidney_dataset(shared_data / "kidney_ct", shared_data / "kidney_ct_kaggle")
    counts = dataset.counts()
    assert (counts["images"], counts["normal"], counts["stone"]) == (1851, 1175, 676)
    assert len(set(dataset.ids)) == 1851
    assert "kidney_ct_kaggle/Stone/Stone-1003.jpg" in dataset.ids
    assert all(item.patient.startswith(CLASS_NAMES[item.label]) for item in dataset.items)
    # a scan whose slices 1-3 sit in one folder and 4-5 in the next is one patient, not two
    rng = np.random.default_rng(1)
    scan = rng.integers(0, 255, (64, 64)).astype(np.float32)
    for folder, numbers in (("first", (1, 2, 3)), ("second", (4, 5))):
        for label in ("Normal", "Stone"):
            (tmp_path / folder / label).mkdir(parents=True, exist_ok=True)
            for number in numbers:
                image = np.clip(scan + rng.normal(0, 3, scan.shape), 0, 255).astype(np.uint8)
                cv2.imwrite(str(tmp_path / folder / label / f"{label}-{number}.png"), image)
    joined = read_kidney_dataset(tmp_path / "first", tmp_path / "second")
    assert sorted(set(joined.patients)) == ["normal-run001", "stone-run001"]


def test_coronal_kidney_runs_are_told_from_axial_ones(shared_data: Path, tmp_path: Path) -> None:
    """The Kaggle set mixes coronal scans in among axial ones; the app classifies axial slices only."""
    for label, numbers in (("Normal", (1, 2, 3)), ("Stone", (64, 65, 66))):  # Stone 64-125: a coronal scan
        (tmp_path / label).mkdir()
        for number in numbers:
            shutil.copy(shared_data / "kidney_ct" / label / f"{label}- ({number}).jpg", tmp_path / label)
    dataset = kidney_set_from_images(read_kidney_dataset(tmp_path))
    aspects = {identifier: body_aspect(unit) for identifier, unit in zip(dataset.ids, dataset.unit, strict=True)}
    assert all(aspect < NOT_AXIAL_ASPECT for identifier, aspect in aspects.items() if "Normal" in identifier)
    assert all(aspect > NOT_AXIAL_ASPECT for identifier, aspect in aspects.items() if "Stone" in identifier)
    assert dataset.axial_patients() == {"normal-run001"}
    assert body_aspect(np.zeros((32, 32), np.float32)) == 0.0  # no body at all: not taken for a coronal scan


def test_kidney_reader_patients_table(shared_data: Path, tmp_path: Path) -> None:
    for label in ("Normal", "Stone"):
        (tmp_path / label).mkdir()
        for number in (1, 2):
            shutil.copy(shared_data / "kidney_ct" / label / f"{label}- ({number}).jpg", tmp_path / label)
    (tmp_path / "patients.csv").write_text(
        "file,patient\nNormal- (1).jpg,A\nNormal- (2).jpg,B\nStone- (1).jpg,A\nStone- (2).jpg,C\n"
    )
    dataset = read_kidney_dataset(tmp_path)
    assert sorted(dataset.patients) == ["A", "A", "B", "C"]
    (tmp_path / "patients.csv").write_text("file,patient\nNormal- (1).jpg,A\n")
    with pytest.raises(InputError, match="no patient given for 3 images"):
        read_kidney_dataset(tmp_path)


# ------------------------------------------------------------------ lung


def test_icbhi_reader_matches_the_cycle_table(shared_data: Path) -> None:
    folder = shared_data / "lung_sound" / "icbhi_sample"
    cycles = read_icbhi_dataset(folder)
    with (folder / "cycles.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(cycles) == len(rows) == 86
    labels = {(row["wav"], round(float(row["start_s"]), 3)): row["label4"] for row in rows}
    assert all(
        labels[(c.recording, round(c.start_s, 3))] == ("normal", "crackle", "wheeze", "both")[c.label] for c in cycles
    )
    assert {c.patient for c in cycles} == {"102", "104", "106"}
    first = cycles[0]
    assert first.samples.size == pytest.approx((first.end_s - first.start_s) * 22_050, abs=2)


def test_icbhi_official_split_file(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "lung_sound" / "icbhi_sample"
    for stem in ("102_1b1_Ar_sc_Meditron", "106_2b1_Pl_mc_LittC2SE"):
        for suffix in (".wav", ".txt"):
            shutil.copy(source / f"{stem}{suffix}", tmp_path)
    (tmp_path / OFFICIAL_SPLIT_FILE).write_text("102_1b1_Ar_sc_Meditron\ttrain\n106_2b1_Pl_mc_LittC2SE\ttest\n")
    sides = {c.recording: c.official_side for c in read_icbhi_dataset(tmp_path)}
    assert sides == {"102_1b1_Ar_sc_Meditron.wav": "train", "106_2b1_Pl_mc_LittC2SE.wav": "test"}
    (tmp_path / OFFICIAL_SPLIT_FILE).write_text("102_1b1_Ar_sc_Meditron\tvalidation\n")
    with pytest.raises(InputError, match=r"line 1: expected '<recording> train\|test'"):
        read_icbhi_dataset(tmp_path)


# ------------------------------------------------------------------ liver


def test_liver_reader_lits_layout(shared_data: Path, tmp_path: Path) -> None:
    import SimpleITK as sitk

    source = shared_data / "liver_ct" / "totalsegmentator"
    sitk.WriteImage(sitk.ReadImage(str(source / "example_ct_sm.nii.gz")), str(tmp_path / "volume-7.nii.gz"))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "example_seg.nii.gz")))
    lits = np.zeros_like(labels, dtype=np.uint8)
    lits[labels == 5] = 1
    lits[(labels == 5) & (np.arange(labels.shape[0])[:, None, None] == 15)] = 2  # a "tumour" slice inside the liver
    image = sitk.GetImageFromArray(lits)
    image.CopyInformation(sitk.ReadImage(str(source / "example_seg.nii.gz")))
    sitk.WriteImage(image, str(tmp_path / "segmentation-7.nii.gz"))
    [case] = read_liver_dataset(tmp_path)
    assert case.name == case.patient == "lits-7"
    assert case.liver.sum() == (labels == 5).sum()  # liver + tumour is the liver


def test_liver_reader_cases_table(shared_data: Path, tmp_path: Path) -> None:
    table = tmp_path / "cases.csv"
    table.write_text("image,mask\ndicom_ct/dcmqi_ct-3slice,liver_ct/dcmqi/liver_seg.nrrd\n")
    [case] = read_liver_dataset(shared_data, table)
    assert case.liver.sum() == 107_098  # the count the data README gives
    table.write_text("image,mask,liver_labels\ndicom_ct/dcmqi_ct-3slice,liver_ct/dcmqi/liver_spine_seg.nrrd,9\n")
    with pytest.raises(InputError, match=r"no voxel has a liver label \(\[9\]\)"):
        read_liver_dataset(shared_data, table)
    table.write_text("image,mask\nnowhere,liver_ct/dcmqi/liver_seg.nrrd\n")
    with pytest.raises(InputError, match=r"row 2: .*nowhere does not exist"):
        read_liver_dataset(shared_data, table)


# ------------------------------------------------------------------ covid


def test_covid_reader_index_and_class_folders(shared_data: Path, tmp_path: Path) -> None:
    patients = read_covid_dataset(shared_data / "covid_ct" / "COVID-CT-MD")
    # Index.csv lists COVID-19 and CAP patients only: normal001 comes from its folder
    assert {(p.name, p.label) for p in patients} == {("P001", 0), ("cap001", 1), ("normal001", 2)}
    (tmp_path / "Healthy" / "x1").mkdir(parents=True)
    (tmp_path / "COVID" / "y1").mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    assert {(p.name, p.label) for p in read_covid_dataset(tmp_path)} == {("x1", 2), ("y1", 0)}
    (tmp_path / "Index.csv").write_text("Label Index,Diagnosis,Relative Path,Folder/ID\n0,Flu,./COVID/,y1\n")
    with pytest.raises(InputError, match="row 2: unknown diagnosis 'Flu'"):
        read_covid_dataset(tmp_path)
    (tmp_path / "Index.csv").write_text("Label Index,Diagnosis,Relative Path,Folder/ID\n0,CAP,./COVID/,y1\n")
    with pytest.raises(InputError, match="gives y1 the diagnosis non_covid_pneumonia, its folder says covid_pneumonia"):
        read_covid_dataset(tmp_path)


def test_covid_reader_joins_the_datasets_of_a_folder_keeping_the_full_series_and_the_slice_labels(
    shared_data: Path, tmp_path: Path
) -> None:
    patients = {p.name: p for p in read_covid_dataset(shared_data / "covid_ct")}
    assert sorted(patients) == ["P001", "cap001", "normal001"]
    # the full series supersede the every-8th-slice copies of COVID-CT-MD/
    assert patients["cap001"].folder == shared_data / "covid_ct" / "COVID-CT-MD_full" / "CAP" / "cap001"
    assert patients["normal001"].folder.parent.parent.name == "COVID-CT-MD_full"
    # the radiologists' slice labels (slices.csv): 80 of P001's 148 slices and 30 of cap001's 168 infected
    infected = {name: (len(p.infection), sum(p.infection.values())) for name, p in patients.items()}
    assert infected == {"P001": (148, 80), "cap001": (168, 30), "normal001": (154, 0)}
    # a bad slice label names the table and the row
    (tmp_path / "one" / "CAP" / "c1").mkdir(parents=True)
    (tmp_path / "one" / "slices.csv").write_text(
        "patient,file,slice_infection_label_updated1\nc1,a.dcm,1\nc1,b.dcm,yes\n"
    )
    with pytest.raises(InputError, match="row 3: slice_infection_label_updated1 must be 0 or 1, got 'yes'"):
        read_covid_dataset(tmp_path)


def test_holdout_per_class_of_patients_balances_patients_not_items() -> None:
    # 3 big normal scans and 10 small stone runs: a fifth of each class's patients, whatever their sizes
    groups = [f"n{i}" for i in range(3) for _ in range(100)] + [f"s{i}" for i in range(10) for _ in range(3)]
    labels = [0] * 300 + [1] * 30
    for seed in range(4):
        kept, held = holdout_per_class_of_patients(labels, groups, 0.2, seed)
        held_patients = {groups[i] for i in held}
        assert sum(p.startswith("n") for p in held_patients) == 1  # round(0.6), at least one
        assert sum(p.startswith("s") for p in held_patients) == 2
        assert not held_patients & {groups[i] for i in kept}
        assert sorted([*kept, *held]) == list(range(330))
    assert holdout_per_class_of_patients(labels, groups, 0.2, 0)[1].tolist() != (
        holdout_per_class_of_patients(labels, groups, 0.2, 1)[1].tolist()
    )


def test_patient_folds_per_class_deal_each_class_patients_round_the_folds() -> None:
    # 9 normal scans of 25-140 slices and 21 stone runs of 1-140: what the kidney operating point is chosen on
    rng = np.random.default_rng(0)
    sizes = {f"n{i}": int(rng.integers(25, 140)) for i in range(9)} | {
        f"s{i}": int(rng.integers(1, 140)) for i in range(21)
    }
    groups = [patient for patient, size in sizes.items() for _ in range(size)]
    labels = [int(patient.startswith("s")) for patient in groups]
    for seed in range(4):
        folds = patient_folds_per_class(labels, groups, 3, seed)
        assert len(folds) == 3
        assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))  # every item held out once
        held_patients = [{groups[i] for i in fold} for fold in folds]
        for one, other in ((0, 1), (0, 2), (1, 2)):
            assert not held_patients[one] & held_patients[other]  # no patient in two folds
        for prefix, each in (("n", 3), ("s", 7)):
            assert [sum(p.startswith(prefix) for p in fold) for fold in held_patients] == [each] * 3
    assert (
        patient_folds_per_class(labels, groups, 3, 0)[0].tolist()
        != patient_folds_per_class(labels, groups, 3, 1)[0].tolist()
    )
    # fewer patients than folds: one fold per patient
    assert [len(fold) for fold in patient_folds_per_class([0, 0, 1], ["a", "a", "b"], 3, 0)] in ([2, 1], [1, 2])
    with pytest.raises(ValueError, match="at least 2 folds and 2 patients"):
        patient_folds_per_class([0, 1], ["a", "a"], 3, 0)


def test_holdout_holds_out_every_class_when_one_class_has_few_patients() -> None:
    # 4 patients of class 0 among 40: most of 10 stratified folds hold none of them
    groups = [f"p{i}" for i in range(40) for _ in range(5)]
    labels = [0 if i < 4 else 1 for i in range(40) for _ in range(5)]
    for seed in range(5):
        _, held = holdout(labels, groups, 0.1, seed)
        assert set(np.asarray(labels)[held].tolist()) == {0, 1}
