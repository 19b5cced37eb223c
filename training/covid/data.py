"""Chest CT series labelled per patient, in the COVID-CT-MD layout.

Class folders (``COVID-19``/``COVID``, ``CAP``/``NCP``, ``Normal``/``Healthy``,
case-insensitive) hold one folder of DICOM slices per patient.  COVID-CT-MD's
``Index.csv`` (``Diagnosis``, ``Relative Path``, ``Folder/ID``) lists only its
COVID-19 and CAP patients, so the folders are what is read; where the index
names a patient, its diagnosis must agree with the patient's folder.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from medview.errors import InputError
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from medview.models.covid import CLASS_NAMES

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


def _index_labels(index: Path) -> dict[str, int]:
    labels = {}
    with index.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not {"Diagnosis", "Folder/ID"} <= set(reader.fieldnames or []):
            raise InputError("expected the columns Diagnosis and Folder/ID", path=index)
        for row_number, row in enumerate(reader, start=2):
            labels[row["Folder/ID"].strip()] = _label(row["Diagnosis"], f"row {row_number}", index)
    return labels


def read_covid_dataset(root: Path) -> list[CovidPatient]:
    """Every patient folder under ``root``'s class folders; ``InputError`` when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    index = root / INDEX_FILE
    listed = _index_labels(index) if index.is_file() else {}
    patients = []
    for class_folder in sorted(path for path in root.iterdir() if path.is_dir()):
        label = _CLASS_OF.get(class_folder.name.lower())
        if label is None:
            continue
        for folder in sorted(path for path in class_folder.iterdir() if path.is_dir()):
            if listed.get(folder.name, label) != label:
                raise InputError(
                    f"{INDEX_FILE} gives {folder.name} the diagnosis {CLASS_NAMES[listed[folder.name]]}, "
                    f"its folder says {CLASS_NAMES[label]}",
                    path=folder,
                )
            patients.append(CovidPatient(folder.name, label, folder))
    if not patients:
        raise InputError(
            "no patient series: expected COVID-19/, CAP/ and Normal/ folders of patient folders", path=root
        )
    log.info("%s: %d patients", root, len(patients))
    return patients
