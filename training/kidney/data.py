"""Kidney CT slices labelled stone / normal, in the layouts they are published in.

- Folders per class: ``Normal/`` and ``Stone/`` (case-insensitive; other
  classes such as the Kaggle set's ``Cyst/`` and ``Tumor/`` are ignored),
  optionally under ``train/`` and ``test/``.  This is the Kaggle "CT KIDNEY
  DATASET: Normal-Cyst-Tumor and Stone" layout of ../shared/data/kidney_ct: 8-bit
  slices that were windowed before export, so a pixel / 255 is the windowed
  [0, 1] image the app computes from HU with the bundle's window.
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
from pathlib import Path

import cv2
import numpy as np

from medview.errors import InputError
from training.common.datasets import ImageItem, LabelledImages, class_folder_items, relative_id, require_classes

CLASS_NAMES = ("normal", "stone")
#: consecutive images whose thumbnails correlate less than this start a new run (patient).  Measured on
#: ../shared/data/kidney_ct: neighbours within a scan correlate at 0.99+ (1st percentile 0.996), the
#: breaks between scans fall below 0.7.
RUN_BREAK_CORRELATION = 0.9
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


def read_kidney_dataset(root: Path) -> LabelledImages:
    """All stone / normal slices under ``root`` with their patients; ``InputError`` when none are found."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    items = class_folder_items(root, {name: index for index, name in enumerate(CLASS_NAMES)})
    if not items:
        raise InputError("no kidney dataset found: expected Normal/ and Stone/ folders of slices", path=root)
    require_classes(items, CLASS_NAMES, root)
    named = _patients_table(root)
    if named is not None:
        missing = [item.path.name for item in items if item.path.name not in named]
        if missing:
            raise InputError(
                f"no patient given for {len(missing)} images, e.g. {missing[0]}", path=root / "patients.csv"
            )
        patients = [named[item.path.name] for item in items]
        layout = "folders per class, patients from patients.csv"
    else:
        patients = [""] * len(items)
        by_folder: dict[Path, list[int]] = {}
        for index, item in enumerate(items):
            by_folder.setdefault(item.path.parent, []).append(index)
        for folder, indices in by_folder.items():
            runs = consecutive_runs([items[i].path for i in indices])
            for index, run in zip(indices, runs, strict=True):
                patients[index] = f"{relative_id(folder, root)}-run{run + 1:03d}"
        layout = "folders per class, patients = runs of consecutive similar slices"
    labelled = tuple(
        ImageItem(item.path, item.label, patient, item.official_side)
        for item, patient in zip(items, patients, strict=True)
    )
    return LabelledImages(labelled, CLASS_NAMES, layout, root)
