"""Skin-lesion datasets in the layouts they are published in.

- An ISIC metadata table: a CSV with an image column (``isic_id``, ``image``,
  ``image_name`` or ``file``) and ``benign_malignant``; ``patient_id`` when the
  export has it (the ISIC Archive's does), so that a patient's lesions stay on
  one side of the split.
- ISIC JSON sidecars: ``ISIC_nnnnnnn.json`` next to each image with
  ``meta.clinical.benign_malignant`` (the older archive API, as in ../shared/data/skin).
- Folders per class: ``benign/`` and ``malignant/``, optionally under ``train/``
  and ``test/`` (the Kaggle "Skin Cancer: Malignant vs. Benign" layout that
  paper 003 used, whose own split is then kept).

A table's images may sit beside it or in an ``images/`` folder next to it (as
in ../shared/data/skin/isic2017_256px).  A folder with none of these layouts
whose subfolders have one (../shared/data/skin holds two ISIC sets) is read as
several sources, each keeping its own layout: ``read_skin_sources``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from medview.errors import InputError
from training.common.datasets import ImageItem, LabelledImages, class_folder_items, images_in, require_classes

CLASS_NAMES = ("benign", "malignant")
_IMAGE_COLUMNS = ("isic_id", "image_id", "image", "image_name", "file", "filename")
_IMAGE_FOLDERS = ("", "images")  # where a table's images may be, relative to the table


@dataclass(frozen=True)
class SkinSources:
    """The images of one or more skin datasets read together; ``sources[i]`` names item ``i``'s dataset."""

    dataset: LabelledImages
    sources: tuple[str, ...]

    def names(self) -> list[str]:
        """The sources in the order they were read."""
        return list(dict.fromkeys(self.sources))


def read_skin_dataset(root: Path) -> LabelledImages:
    """All labelled lesion images under ``root``; ``InputError`` when no known layout is found."""
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    found = _one_layout(root)
    if found is not None:
        items, layout = found
        require_classes(items, CLASS_NAMES, root)
        return LabelledImages(tuple(items), CLASS_NAMES, layout, root)
    raise _no_dataset(root)


def read_skin_sources(root: Path) -> SkinSources:
    """``root`` as one dataset when it has a known layout, else every subfolder that has one, as sources.

    Image ids are relative to ``root`` (``isic2017_256px/images/ISIC_0000550.jpg``),
    so they stay unique across sources; ``InputError`` when neither finds images.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder", path=root)
    found = _one_layout(root)
    if found is not None:
        require_classes(found[0], CLASS_NAMES, root)
        return SkinSources(LabelledImages(tuple(found[0]), CLASS_NAMES, found[1], root), (root.name,) * len(found[0]))
    items: list[ImageItem] = []
    sources: list[str] = []
    layouts = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        part = _one_layout(folder)
        if part is None:
            continue
        items.extend(part[0])
        sources.extend([folder.name] * len(part[0]))
        layouts.append(f"{folder.name}: {part[1]}")
    if not items:
        raise _no_dataset(root)
    require_classes(items, CLASS_NAMES, root)
    return SkinSources(LabelledImages(tuple(items), CLASS_NAMES, "; ".join(layouts), root), tuple(sources))


def _one_layout(root: Path) -> tuple[list[ImageItem], str] | None:
    for reader in (_from_table, _from_sidecars, _from_folders):
        found = reader(root)
        if found is not None:
            return found
    return None


def _no_dataset(root: Path) -> InputError:
    return InputError(
        "no skin-lesion dataset found: expected an ISIC metadata CSV (image id + benign_malignant), "
        "ISIC JSON sidecars, or benign/ and malignant/ folders",
        path=root,
    )


def _label(value: str, where: str, root: Path) -> int:
    text = value.strip().lower()
    if text not in CLASS_NAMES:
        raise InputError(f"{where}: benign_malignant is {value!r}, expected benign or malignant", path=root)
    return CLASS_NAMES.index(text)


def _from_table(root: Path) -> tuple[list[ImageItem], str] | None:
    for table in sorted(root.glob("*.csv")):
        with table.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [name.strip().lower() for name in reader.fieldnames or []]
            image_column = next((name for name in _IMAGE_COLUMNS if name in columns), None)
            if image_column is None or "benign_malignant" not in columns:
                continue
            items = []
            for row_number, raw in enumerate(reader, start=2):
                row = {key.strip().lower(): (value or "") for key, value in raw.items() if key}
                if not row["benign_malignant"].strip():
                    continue  # ISIC leaves it empty for lesions that are neither (e.g. indeterminate)
                name = row[image_column].strip()
                path = _image_file(root, name)
                if path is None:
                    raise InputError(f"row {row_number}: image {name!r} is not in {root}", path=table)
                label = _label(row["benign_malignant"], f"row {row_number}", table)
                items.append(ImageItem(path, label, row.get("patient_id", "").strip() or path.stem))
            return items, f"ISIC metadata table {table.name}"
    return None


def _image_file(root: Path, name: str) -> Path | None:
    for folder in (root / sub if sub else root for sub in _IMAGE_FOLDERS):
        if (folder / name).is_file():
            return folder / name
        for suffix in (".jpg", ".jpeg", ".png"):
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    return None


def _from_sidecars(root: Path) -> tuple[list[ImageItem], str] | None:
    items = []
    for path in images_in(root):
        sidecar = path.with_suffix(".json")
        if not sidecar.is_file():
            continue
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
            clinical = record.get("meta", {}).get("clinical", {})
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError) as error:
            raise InputError(f"not an ISIC metadata JSON ({error})", path=sidecar) from error
        value = clinical.get("benign_malignant")
        if not value:
            continue
        patient = str(clinical.get("patient_id") or path.stem)
        items.append(ImageItem(path, _label(str(value), "benign_malignant", sidecar), patient))
    return (items, "ISIC JSON sidecars") if items else None


def _from_folders(root: Path) -> tuple[list[ImageItem], str] | None:
    items = class_folder_items(root, {name: index for index, name in enumerate(CLASS_NAMES)})
    return (items, "folders per class") if items else None
