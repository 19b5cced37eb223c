"""Kidney CT slices labelled stone / normal, in the layouts they are published in.

- Folders per class: ``Normal/`` and ``Stone/`` (case-insensitive; other
  classes such as the Kaggle set's ``Cyst/`` and ``Tumor/`` are ignored),
  optionally under ``train/`` and ``test/``.  This is the Kaggle "CT KIDNEY
  DATASET: Normal-Cyst-Tumor and Stone" layout of ../shared/data/kidney_ct: 8-bit
  slices that were windowed before export, so a pixel / 255 is the windowed
  [0, 1] image the app computes from HU with the bundle's window.
- CT volumes with kidney masks: a ``cases.csv`` with the columns ``image`` (a
  DICOM series folder or a NIfTI/NRRD file), ``kidney_mask`` (a label image or
  DICOM SEG), ``label`` (stone or normal) and optionally ``stone_slices`` (the
  slice indices with a stone, e.g. ``41-44 57``; default all kidney slices of a
  stone case), ``kidney_labels`` (default 1) and ``patient``; paths relative to
  the dataset folder.  Every slice with kidney becomes one ROI image: HU through
  the bundle's window, everything outside the kidney mask set to 0, as the app
  does with a kidney ROI.
- Patients: a ``patients.csv`` (columns ``file``, ``patient``) in the root names
  them when available.  The Kaggle copies carry no patient ids, but their
  numbering runs through each scan: consecutive numbers are neighbouring slices
  of one patient, near-duplicates of each other.  :func:`consecutive_runs`
  splits the numbered sequence where consecutive images stop looking alike,
  and each run stands for one patient, so a split never puts neighbouring
  slices of one scan on both sides.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from medview.errors import InputError
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from medview.io.volume_files import read_label_map, read_volume
from medview.models.kidney import INPUT_SIZE
from medview.preprocess.image import resize_stack, window_to_unit
from training.common.datasets import ImageItem, LabelledImages, class_folder_items, require_classes

CLASS_NAMES = ("normal", "stone")
CASES_FILE = "cases.csv"
#: the window the app applies to HU before the network; the Kaggle exports were windowed before us with
#: an undocumented window, and a soft-tissue window (W 400, L 40) is the usual one for renal CT.
HU_WINDOW = (-160.0, 240.0)
#: consecutive images whose thumbnails correlate less than this start a new run (patient).  Measured on
#: ../shared/data/kidney_ct: neighbours within a scan correlate at 0.99+ (1st percentile 0.996), the
#: breaks between scans fall below 0.7.
RUN_BREAK_CORRELATION = 0.9
#: a run whose body is taller than wide (median bounding-box height / width above this) is not axial.
#: Measured on the 50 runs of ../shared/data/kidney_ct + kidney_ct_kaggle: axial runs 0.54-0.94,
#: coronal ones 1.22-2.00 (the Kaggle set mixes 13 coronal runs in among its axial ones).
NOT_AXIAL_ASPECT = 1.1
#: a unit-image pixel above this is body (soft tissue through the window), below it air
_BODY_LEVEL = 20 / 255
_THUMBNAIL = 64
_NUMBER = re.compile(r"(\d+)(?!.*\d)")


def read_grey(path: Path) -> np.ndarray:
    """An 8-bit grey slice as uint8 (y, x); ``InputError`` naming the file when it is not an image."""
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise InputError("not a readable image", path=path)
    return image


def slice_number(path: Path) -> int | None:
    """The last number in the file name (the Kaggle copies' slice numbering), if any."""
    found = _NUMBER.search(path.stem)
    return int(found.group(1)) if found else None


def consecutive_runs(paths: Sequence[Path], threshold: float = RUN_BREAK_CORRELATION) -> list[int]:
    """A run index per path: paths in numeric order, a new run where the number jumps or the image changes.

    The change is measured as the Pearson correlation of 64x64 thumbnails of
    consecutive images.
    """
    order = sorted(
        range(len(paths)), key=lambda i: (slice_number(paths[i]) is None, slice_number(paths[i]) or 0, paths[i].name)
    )
    runs = [0] * len(paths)
    run, previous, previous_number = 0, None, None
    for index in order:
        thumbnail = cv2.resize(read_grey(paths[index]), (_THUMBNAIL, _THUMBNAIL), interpolation=cv2.INTER_AREA)
        values = thumbnail.astype(np.float32).ravel()
        values = (values - values.mean()) / (values.std() + 1e-6)
        number = slice_number(paths[index])
        if previous is not None:
            jumped = number is None or previous_number is None or number != previous_number + 1
            if jumped or float(np.mean(values * previous)) < threshold:
                run += 1
        runs[index] = run
        previous, previous_number = values, number
    return runs


def _patients_table(root: Path) -> dict[str, str] | None:
    table = root / "patients.csv"
    if not table.is_file():
        return None
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "patient"} <= set(reader.fieldnames or []):
            raise InputError("expected the columns file and patient", path=table)
        return {row["file"].strip(): row["patient"].strip() for row in reader}


def read_kidney_dataset(root: Path, *more: Path) -> LabelledImages:
    """All stone / normal slices under ``root`` (and the ``more`` folders) with their patients.

    Folders given together are one numbering: the Kaggle set's later indices
    (``kidney_ct_kaggle/``) continue the first 500 (``kidney_ct/``), so a run of
    neighbouring slices may cross from one folder into the next and is found
    over the class's slices of every folder at once.  Image ids are relative to
    ``root``'s parent when several folders are read, so they stay unique.
    ``InputError`` when a folder holds no slices.
    """
    roots = [Path(folder) for folder in (root, *more)]
    items: list[ImageItem] = []
    for folder in roots:
        if not folder.is_dir():
            raise InputError("not a folder", path=folder)
        found = class_folder_items(folder, {name: index for index, name in enumerate(CLASS_NAMES)})
        if not found:
            raise InputError("no kidney dataset found: expected Normal/ and Stone/ folders of slices", path=folder)
        items.extend(found)
    base = roots[0] if len(roots) == 1 else roots[0].parent
    require_classes(items, CLASS_NAMES, base)
    named = _patients_table(roots[0]) if len(roots) == 1 else None
    if named is not None:
        missing = [item.path.name for item in items if item.path.name not in named]
        if missing:
            raise InputError(
                f"no patient given for {len(missing)} images, e.g. {missing[0]}", path=roots[0] / "patients.csv"
            )
        patients = [named[item.path.name] for item in items]
        layout = "folders per class, patients from patients.csv"
    else:
        patients = [""] * len(items)
        for label, name in enumerate(CLASS_NAMES):
            indices = [index for index, item in enumerate(items) if item.label == label]
            runs = consecutive_runs([items[i].path for i in indices])
            for index, run in zip(indices, runs, strict=True):
                patients[index] = f"{name}-run{run + 1:03d}"
        layout = "folders per class, patients = runs of consecutive similar slices"
        if len(roots) > 1:
            layout += f" across {', '.join(folder.name for folder in roots)}"
    labelled = tuple(
        ImageItem(item.path, item.label, patient, item.official_side)
        for item, patient in zip(items, patients, strict=True)
    )
    return LabelledImages(labelled, CLASS_NAMES, layout, base)


def body_aspect(unit: np.ndarray) -> float:
    """Height / width of the bounding box of the largest body region of one unit image (y, x).

    An axial abdominal slice shows a body wider than deep (about 0.7); a
    coronal or sagittal one shows a body taller than wide (1.2 to 2).
    """
    body = (unit > _BODY_LEVEL).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(body)
    if count < 2:
        return 0.0
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return float(stats[largest, cv2.CC_STAT_HEIGHT] / stats[largest, cv2.CC_STAT_WIDTH])


@dataclass(frozen=True, eq=False)
class KidneySet:
    """Training slices ready for the network's resize: unit images in [0, 1] at 224x224 with labels and patients."""

    unit: np.ndarray  # (n, 224, 224) float32, the ROI applied
    labels: np.ndarray  # (n,) int64 index into CLASS_NAMES
    patients: tuple[str, ...]
    ids: tuple[str, ...]
    positions: np.ndarray  # (n,) slice number or z index within its patient (for 1-in-N thinning)
    layout: str

    def counts(self) -> dict[str, int]:
        per_class = {name: int((self.labels == index).sum()) for index, name in enumerate(CLASS_NAMES)}
        return {"images": len(self.labels), "patients": len(set(self.patients)), **per_class}

    def axial_patients(self) -> set[str]:
        """The patients (runs) whose slices are axial: median :func:`body_aspect` up to ``NOT_AXIAL_ASPECT``.

        The app classifies axial slices only, so the slices it is measured on must be axial too.
        """
        aspects = np.asarray([body_aspect(unit) for unit in self.unit])
        patients = np.asarray(self.patients)
        return {
            patient
            for patient in set(self.patients)
            if float(np.median(aspects[patients == patient])) <= NOT_AXIAL_ASPECT
        }

    def subset(self, indices: Sequence[int], layout: str) -> KidneySet:
        picks = np.asarray(indices, dtype=int)
        return KidneySet(
            self.unit[picks],
            self.labels[picks],
            tuple(self.patients[i] for i in picks),
            tuple(self.ids[i] for i in picks),
            self.positions[picks],
            layout,
        )


def kidney_set_from_images(dataset: LabelledImages) -> KidneySet:
    """8-bit exports, already windowed: pixel / 255 is the unit image."""
    size = (INPUT_SIZE, INPUT_SIZE)
    unit = np.stack(
        [resize_stack(read_grey(item.path)[None].astype(np.float32) / 255.0, size)[0] for item in dataset.items]
    )
    positions = np.asarray([slice_number(item.path) or 0 for item in dataset.items])
    labels = np.asarray(dataset.labels, dtype=np.int64)
    return KidneySet(unit, labels, tuple(dataset.patients), tuple(dataset.ids), positions, dataset.layout)


@dataclass(frozen=True, eq=False)
class KidneyCase:
    """A CT volume (HU) with its kidney mask and which slices show a stone."""

    name: str
    patient: str
    volume: Volume
    kidney: np.ndarray  # bool (z, y, x)
    stone_slices: frozenset[int]


def _slice_ranges(text: str, where: str, table: Path) -> set[int]:
    picks: set[int] = set()
    for part in text.replace(",", " ").split():
        first, _, last = part.partition("-")
        try:
            picks.update(range(int(first), int(last or first) + 1))
        except ValueError as error:
            raise InputError(f"{where}: stone_slices must be slice numbers or ranges like 41-44", path=table) from error
    return picks


def read_kidney_cases(root: Path, table: Path) -> list[KidneyCase]:
    """The rows of a kidney ``cases.csv`` (see the module docstring), masks put on the CT's grid."""
    cases = []
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"image", "kidney_mask", "label"} <= set(reader.fieldnames or []):
            raise InputError("expected the columns image, kidney_mask and label", path=table)
        for row_number, row in enumerate(reader, start=2):
            where = f"row {row_number}"
            image, mask = root / row["image"].strip(), root / row["kidney_mask"].strip()
            for path in (image, mask):
                if not path.exists():
                    raise InputError(f"{where}: {path} does not exist", path=table)
            label = row["label"].strip().lower()
            if label not in CLASS_NAMES:
                raise InputError(f"{where}: label {row['label']!r}, expected stone or normal", path=table)
            volume = load_dicom([image]) if image.is_dir() else read_volume(image)
            try:
                kidney_labels = [int(value) for value in (row.get("kidney_labels") or "1").split()]
            except ValueError as error:
                raise InputError(f"{where}: kidney_labels must be whole numbers", path=table) from error
            kidney = np.isin(read_label_map(mask, volume).labels, kidney_labels)
            with_kidney = {int(z) for z in np.flatnonzero(kidney.any(axis=(1, 2)))}
            if not with_kidney:
                raise InputError(f"{where}: no voxel has a kidney label {kidney_labels}", path=mask)
            stones = _slice_ranges(row.get("stone_slices") or "", where, table) if label == "stone" else set()
            if label == "stone" and not stones:
                stones = with_kidney
            name = f"{image.name} ({mask.name})"
            patient = (row.get("patient") or "").strip() or image.name
            cases.append(KidneyCase(name, patient, volume, kidney, frozenset(stones)))
    if not cases:
        raise InputError("no rows", path=table)
    return cases


def kidney_set_from_cases(cases: Sequence[KidneyCase], layout: str) -> KidneySet:
    """Every slice with kidney of every case as an ROI image, labelled stone on the case's stone slices."""
    units, labels, patients, ids, positions = [], [], [], [], []
    for case in cases:
        slices = np.flatnonzero(case.kidney.any(axis=(1, 2)))
        unit = window_to_unit(case.volume.voxels[slices], HU_WINDOW) * case.kidney[slices]
        units.append(resize_stack(unit, (INPUT_SIZE, INPUT_SIZE)))
        for z in slices:
            labels.append(CLASS_NAMES.index("stone") if int(z) in case.stone_slices else CLASS_NAMES.index("normal"))
            patients.append(case.patient)
            ids.append(f"{case.name}#z{int(z)}")
            positions.append(int(z))
    return KidneySet(
        np.concatenate(units),
        np.asarray(labels, dtype=np.int64),
        tuple(patients),
        tuple(ids),
        np.asarray(positions),
        layout,
    )


def load_kidney_data(root: Path, cases_table: Path | None = None, more: Sequence[Path] = ()) -> KidneySet:
    """The training slices under ``root``: the cases of ``cases_table`` (or ``root/cases.csv``), else class folders.

    ``more``: further class folders of the same numbering, read with ``root`` (:func:`read_kidney_dataset`).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    table = cases_table or (root / CASES_FILE if (root / CASES_FILE).is_file() else None)
    if table is not None:
        dataset = kidney_set_from_cases(read_kidney_cases(root, table), f"CT volumes with kidney masks ({table.name})")
        missing = [name for index, name in enumerate(CLASS_NAMES) if not (dataset.labels == index).any()]
        if missing:
            raise InputError(f"no slice of class {', '.join(missing)} in the cases", path=table)
        return dataset
    return kidney_set_from_images(read_kidney_dataset(root, *more))
