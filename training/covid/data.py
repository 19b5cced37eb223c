"""Chest CT series labelled per patient, in the COVID-CT-MD layout, with slice-level infection labels.

Class folders (``COVID-19``/``COVID``, ``CAP``/``NCP``, ``Normal``/``Healthy``,
case-insensitive) hold one folder of DICOM slices per patient.  COVID-CT-MD's
``Index.csv`` (``Diagnosis``, ``Relative Path``, ``Folder/ID``) lists only its
COVID-19 and CAP patients, so the folders are what is read; where the index
names a patient, its diagnosis must agree with the patient's folder.

A folder of such datasets (``../shared/data/covid_ct``: ``COVID-CT-MD/`` with
every 8th slice of two patients, ``COVID-CT-MD_full/`` with their full series)
is read as one: a patient found twice keeps the series with more files.
Slice-level infection labels come from any ``slices*.csv`` in it (columns
``patient``, ``file`` and ``slice_infection_label_updated1``, the radiologists'
labels of COVID-CT-MD); a patient without rows there has none.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from medview.errors import InputError
from medview.io.dicom import load_dicom
from medview.io.volume import Volume
from medview.models.covid import CLASS_NAMES

log = logging.getLogger("training.covid")

INDEX_FILE = "Index.csv"
SLICE_LABEL = "slice_infection_label_updated1"  # COVID-CT-MD's radiologists' slice labels, revision 1
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
    #: infection label of each labelled DICOM file (by file name); empty when the patient has none
    infection: Mapping[str, bool] = field(default_factory=dict)

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
    """Every patient under ``root`` (one dataset, or a folder of datasets); ``InputError`` when there is none."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    patients = _read_one(root)
    if not patients:
        found: dict[str, CovidPatient] = {}
        for dataset in sorted(path for path in root.iterdir() if path.is_dir()):
            for patient in _read_one(dataset):
                known = found.get(patient.name)
                if known is not None and known.label != patient.label:
                    raise InputError(
                        f"{patient.name} is {CLASS_NAMES[known.label]} in {known.folder} but "
                        f"{CLASS_NAMES[patient.label]} here",
                        path=patient.folder,
                    )
                if known is None or _file_count(patient.folder) > _file_count(known.folder):
                    found[patient.name] = patient
        patients = [found[name] for name in sorted(found)]
    if not patients:
        raise InputError(
            "no patient series: expected COVID-19/, CAP/ and Normal/ folders of patient folders", path=root
        )
    labels = _slice_labels(root)
    patients = [replace(patient, infection=labels.get(patient.name, {})) for patient in patients]
    log.info(
        "%s: %d patients, %d with slice-level infection labels",
        root,
        len(patients),
        sum(bool(patient.infection) for patient in patients),
    )
    return patients


def _read_one(root: Path) -> list[CovidPatient]:
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
    return patients


def _file_count(folder: Path) -> int:
    return sum(1 for path in folder.iterdir() if path.is_file())


def _slice_labels(root: Path) -> dict[str, dict[str, bool]]:
    """Infection label per patient and DICOM file name, from every ``slices*.csv`` under ``root``."""
    labels: dict[str, dict[str, bool]] = {}
    for table in sorted(root.rglob("slices*.csv")):
        with table.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not {"patient", "file", SLICE_LABEL} <= set(reader.fieldnames or []):
                raise InputError(f"expected the columns patient, file and {SLICE_LABEL}", path=table)
            for row_number, row in enumerate(reader, start=2):
                value = row[SLICE_LABEL].strip()
                if not value:  # an unlabelled slice (COVID-CT-MD labels no slice of its normal patients)
                    continue
                if value not in ("0", "1"):
                    raise InputError(f"row {row_number}: {SLICE_LABEL} must be 0 or 1, got {value!r}", path=table)
                labels.setdefault(row["patient"].strip(), {})[row["file"].strip()] = value == "1"
    return labels
