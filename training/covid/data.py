"""Chest CT series labelled per patient, in the COVID-CT-MD layout.

- COVID-CT-MD: ``Index.csv`` (``Diagnosis``, ``Relative Path``, ``Folder/ID``)
  beside ``COVID-19/``, ``CAP/`` and ``Normal/``, one folder of DICOM slices per
  patient.  Rows whose folder is absent are skipped (a subset of the dataset is
  a valid dataset) and counted in the log.
- Without ``Index.csv``: class folders (``COVID-19``/``COVID``, ``CAP``/``NCP``,
  ``Normal``/``Healthy``, case-insensitive) with one sub-folder per patient.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from medview.errors import InputError
from medview.io.dicom import load_dicom
from medview.io.volume import Volume

log = logging.getLogger("training.covid")

INDEX_FILE = "Index.csv"
_CLASS_OF = {
    "covid-19": 0,
    "covid": 0,
    "cp": 0,
    "cap": 1,
    "ncp": 1,
    "non-covid pneumonia": 1,
    "normal": 2,
    "healthy": 2,
}


@dataclass(frozen=True)
class CovidPatient:
    name: str
    label: int  # index into CLASS_NAMES
    folder: Path

    def load(self) -> Volume:
        """The patient's CT series (the largest series in the folder)."""
        return load_dicom([self.folder])


def _label(text: str, where: str, path: Path) -> int:
    label = _CLASS_OF.get(text.strip().lower())
    if label is None:
        raise InputError(f"{where}: unknown diagnosis {text!r} (expected COVID-19, CAP or Normal)", path=path)
    return label


def read_covid_dataset(root: Path) -> list[CovidPatient]:
    """Every patient with a series folder under ``root``; ``InputError`` when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    index = root / INDEX_FILE
    patients = []
    if index.is_file():
        skipped = 0
        with index.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"Diagnosis", "Relative Path", "Folder/ID"} <= set(reader.fieldnames or []):
                raise InputError("expected the columns Diagnosis, Relative Path and Folder/ID", path=index)
            for row_number, row in enumerate(reader, start=2):
                folder = root / row["Relative Path"].strip() / row["Folder/ID"].strip()
                if not folder.is_dir():
                    skipped += 1
                    continue
                patients.append(
                    CovidPatient(row["Folder/ID"].strip(), _label(row["Diagnosis"], f"row {row_number}", index), folder)
                )
        log.info("%s: %d patients present, %d listed but absent", index, len(patients), skipped)
    else:
        for class_folder in sorted(path for path in root.iterdir() if path.is_dir()):
            label = _CLASS_OF.get(class_folder.name.lower())
            if label is None:
                continue
            patients.extend(
                CovidPatient(folder.name, label, folder) for folder in sorted(class_folder.iterdir()) if folder.is_dir()
            )
    if not patients:
        raise InputError(f"no patient series: expected {INDEX_FILE} or COVID-19/, CAP/, Normal/ folders", path=root)
    return patients
