"""The DICOM tags of one slice, as the tag browser lists them."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from medview.io.dicom.model import DicomSource
from medview.io.dicom.scan import read_header

# --------------------------------------------------------------------------- tags


@dataclass(frozen=True)
class TagRow:
    """One line of the tag browser."""

    depth: int
    tag: str
    name: str
    vr: str
    value: str
    keyword: str = ""  # "PatientID": what DICOM-literate users type into the search


def tag_rows(source: DicomSource, max_value_length: int = 200) -> list[TagRow]:
    """Every element of a file's header as rows, sequences flattened with a depth."""
    dataset = read_header(source)
    rows: list[TagRow] = []

    def visit(data: Dataset, depth: int) -> None:
        for key in list(data.keys()):
            tag = f"({key.group:04X},{key.element:04X})"
            try:
                element = data[key]  # pydicom converts the raw value here: a damaged one raises
            except Exception as error:  # noqa: BLE001 - a malformed element must not hide the rest
                rows.append(TagRow(depth, tag, "(unreadable element)", "", f"<unreadable: {error}>"[:max_value_length]))
                continue
            if element.VR == "SQ":
                rows.append(TagRow(depth, tag, element.name, "SQ", f"{len(element.value)} item(s)", element.keyword))
                for item in element.value:
                    visit(item, depth + 1)
                continue
            try:
                value = element.repval if element.VR in ("OB", "OW", "UN", "OF", "OD") else str(element.value)
            except Exception as error:  # noqa: BLE001 - a malformed value must not hide the rest
                value = f"<unreadable: {error}>"
            if len(value) > max_value_length:
                value = value[:max_value_length] + "…"
            rows.append(TagRow(depth, tag, element.name, str(element.VR), value, element.keyword))

    meta = getattr(dataset, "file_meta", None)
    if meta is not None:
        visit(meta, 0)
    visit(dataset, 0)
    return rows
