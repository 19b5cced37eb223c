"""CT volumes with liver masks, in the layouts they are published in.

- LiTS: ``volume-N.nii`` + ``segmentation-N.nii`` (or ``.nii.gz``), labels 0
  background, 1 liver, 2 tumour.  The liver is labels 1 and 2 together: a
  tumour lies inside the liver and belongs to its volume.
- Any other pairs: a ``cases.csv`` with the columns ``image`` (a NIfTI/NRRD
  file or a folder of one DICOM series), ``mask`` (a NIfTI/NRRD label image or a
  DICOM SEG) and optionally ``liver_labels`` (the label values that are liver,
  separated by spaces; default 1; TotalSegmentator's is 5) and ``patient``
  (default: the image's name) and ``side`` (train or test: a split fixed by the
  dataset, used when every row has one).  Paths are relative to the dataset folder
  (``training/liver/demo_cases.csv`` lists the public samples this way).

Masks are put onto the CT's voxel grid by the app's own reader
(``read_label_map``), through patient coordinates, so a mask stored with other
axis order, flips or extent lines up with its CT.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medview.errors import InputError
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from medview.io.volume_files import read_label_map, read_volume

CASES_FILE = "cases.csv"
_LITS_VOLUME = re.compile(r"^volume-(\d+)\.nii(\.gz)?$")


@dataclass(frozen=True, eq=False)
class LiverCase:
    """One CT volume (HU) and its liver mask on the same grid."""

    name: str
    patient: str
    volume: Volume
    liver: np.ndarray  # bool, the volume's (z, y, x)
    official_side: str | None = None  # "train" / "test" when the dataset fixes the split


@dataclass(frozen=True)
class LiverCaseFiles:
    """Where one case's CT and mask are, before anything is read (a listing costs no memory)."""

    name: str
    patient: str
    image: Path  # a NIfTI/NRRD file or a folder of one DICOM series
    mask: Path  # a label image or a DICOM SEG
    liver_labels: frozenset[int]
    official_side: str | None = None

    def load(self) -> LiverCase:
        """The CT read as the app reads it (DICOM folder: largest series; file: ``read_volume``), mask on its grid."""
        volume = load_dicom([self.image]) if self.image.is_dir() else read_volume(self.image)
        labels = read_label_map(self.mask, volume).labels
        wanted = sorted(self.liver_labels)
        liver = np.isin(labels, wanted)
        if not liver.any():
            raise InputError(f"no voxel has a liver label ({wanted}) on the CT's grid", path=self.mask)
        return LiverCase(self.name, self.patient, volume, liver, self.official_side)


def _lits_cases(root: Path) -> list[LiverCaseFiles]:
    cases = []
    for path in sorted(root.iterdir()):
        found = _LITS_VOLUME.match(path.name)
        if not found:
            continue
        number = found.group(1)
        masks = [root / f"segmentation-{number}.nii{suffix}" for suffix in ("", ".gz")]
        mask = next((candidate for candidate in masks if candidate.is_file()), None)
        if mask is None:
            raise InputError(f"no segmentation-{number}.nii beside it", path=path)
        cases.append(LiverCaseFiles(f"lits-{number}", f"lits-{number}", path, mask, frozenset({1, 2})))
    return cases


def _table_cases(table: Path, base: Path) -> list[LiverCaseFiles]:
    cases = []
    with table.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"image", "mask"} <= set(reader.fieldnames or []):
            raise InputError("expected the columns image and mask (and optionally liver_labels, patient)", path=table)
        for row_number, row in enumerate(reader, start=2):
            image, mask = base / row["image"].strip(), base / row["mask"].strip()
            for path in (image, mask):
                if not path.exists():
                    raise InputError(f"row {row_number}: {path} does not exist", path=table)
            try:
                labels = frozenset(int(value) for value in (row.get("liver_labels") or "1").split())
            except ValueError as error:
                raise InputError(f"row {row_number}: liver_labels must be whole numbers", path=table) from error
            name = image.name.removesuffix(".gz").removesuffix(".nii")
            patient = (row.get("patient") or "").strip() or name
            side = (row.get("side") or "").strip().lower() or None
            if side not in (None, "train", "test"):
                raise InputError(f"row {row_number}: side must be train or test, got {row['side']!r}", path=table)
            cases.append(LiverCaseFiles(f"{name} ({mask.name})", patient, image, mask, labels, side))
    return cases


def list_liver_cases(root: Path, cases_table: Path | None = None) -> list[LiverCaseFiles]:
    """Every CT + liver mask pair under ``root`` (rows of ``cases_table`` or ``root/cases.csv``, else LiTS
    files), listed without reading them."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    table = cases_table or (root / CASES_FILE if (root / CASES_FILE).is_file() else None)
    cases = _table_cases(table, root) if table is not None else _lits_cases(root)
    if not cases:
        raise InputError(
            f"no liver cases found: expected LiTS volume-N.nii + segmentation-N.nii, or {CASES_FILE}", path=root
        )
    return cases


def read_liver_dataset(root: Path, cases_table: Path | None = None) -> list[LiverCase]:
    """Every CT + liver mask pair under ``root``: rows of ``cases_table`` (or ``root/cases.csv``), else LiTS files."""
    return [case.load() for case in list_liver_cases(root, cases_table)]
