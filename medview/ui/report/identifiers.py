"""The patient and study lines of the case report, and what anonymising takes out of them and of the key images."""

from __future__ import annotations

import re
from dataclasses import replace

from medview.io.volume import Volume

ANONYMISED = "ANONYMISED"
#: what an anonymised report prints for a recording's or a photo's file name, which may name the patient
FILE_NAME_WITHHELD = "file name withheld (anonymised)"


def patient_rows(volume: Volume | None, anonymise: bool) -> tuple[tuple[str, str], ...]:
    """Patient and study rows of the open series."""
    if volume is None:
        return (("Patient", "not recorded: no CT series is open"),)
    info = volume.info
    rows = []
    for keyword, name in (
        ("PatientName", "Patient name"),
        ("PatientID", "Patient ID"),
        ("PatientBirthDate", "Birth date"),
        ("AccessionNumber", "Accession number"),
        ("StudyDate", "Study date"),
        ("StudyDescription", "Study"),
        ("SeriesDescription", "Series"),
    ):
        value = str(info.get(keyword, "") or "")
        if anonymise and keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
            value = ANONYMISED
        elif keyword.endswith("Date"):
            value = date_text(value, year_only=anonymise)
        rows.append((name, value or "—"))
    return tuple(rows)


def date_text(value: str, *, year_only: bool) -> str:
    """A DICOM date (YYYYMMDD) as 2022-12-08, or its year alone (nothing when it has none)."""
    if year_only:
        return value[:4] if re.match(r"\d{4}", value) else ""
    return f"{value[:4]}-{value[4:6]}-{value[6:]}" if re.fullmatch(r"\d{8}", value) else value


def anonymised_volume(volume: Volume, anonymise: bool) -> Volume:
    """The volume the key images are drawn from: without the name and with the year alone when anonymised."""
    if not anonymise:
        return volume
    info = dict(volume.info)
    info["PatientName"] = ""
    info["PatientID"] = ""
    info["StudyDate"] = date_text(str(info.get("StudyDate", "")), year_only=True)
    return replace(volume, info=info)  # the voxels are shared, not copied
