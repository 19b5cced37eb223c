"""Labelled-image listings shared by the image tasks (skin photos, kidney slices).

A dataset reader returns a :class:`LabelledImages`: one item per image with its
class index, the patient it belongs to (the split unit) and, when the dataset
ships an official split (``train/`` and ``test/`` folders), which side it is on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from medview.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class ImageItem:
    path: Path
    label: int
    patient: str
    official_side: str | None = None  # "train" / "test" when the dataset's own split says so


@dataclass(frozen=True)
class LabelledImages:
    """The images of a dataset with labels and patients; ``layout`` says how they were found."""

    items: tuple[ImageItem, ...]
    class_names: tuple[str, ...]
    layout: str
    root: Path

    @property
    def labels(self) -> list[int]:
        return [item.label for item in self.items]

    @property
    def sides(self) -> list[str | None]:
        """Each image's side in the dataset's own split (None when it has none)."""
        return [item.official_side for item in self.items]

    @property
    def patients(self) -> list[str]:
        return [item.patient for item in self.items]

    @property
    def ids(self) -> list[str]:
        """Each image's path relative to the dataset folder (unique, unlike file names across class folders)."""
        return [relative_id(item.path, self.root) for item in self.items]

    def counts(self) -> dict[str, int]:
        """Images per class and the number of patients, for the manifest."""
        counts = {name: sum(item.label == index for item in self.items) for index, name in enumerate(self.class_names)}
        return {"images": len(self.items), "patients": len(set(self.patients)), **counts}


def relative_id(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, with forward slashes on every system."""
    return path.relative_to(root).as_posix()


def images_in(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, in a stable order."""
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)


def class_folder_items(
    root: Path, folder_to_class: Mapping[str, int], *, patient_of: Mapping[Path, str] | None = None
) -> list[ImageItem]:
    """Images in ``root/<class folder>/``, or ``root/{train,test}/<class folder>/`` (the split kept).

    Folder names match case-insensitively.  Without ``patient_of`` every image
    is its own patient, named by its path (``train/benign/1.jpg`` and
    ``test/benign/1.jpg`` are two patients).
    """
    sides = [side for side in ("train", "test") if (root / side).is_dir()]
    bases = [(root / side, side) for side in sides] if sides else [(root, None)]
    items = []
    for base, side in bases:
        for folder in sorted(path for path in base.iterdir() if path.is_dir()):
            label = folder_to_class.get(folder.name.lower())
            if label is None:
                continue
            for path in images_in(folder):
                own = relative_id(path, root)
                patient = patient_of.get(path, own) if patient_of is not None else own
                items.append(ImageItem(path, label, patient, side))
    return items


def require_classes(items: Sequence[ImageItem], class_names: Sequence[str], root: Path) -> None:
    """Every class must have images, or training cannot learn it: say which is missing and where."""
    missing = [name for index, name in enumerate(class_names) if not any(item.label == index for item in items)]
    if missing:
        raise InputError(
            f"no images of class {', '.join(missing)} found (expected {', '.join(class_names)})", path=root
        )


class EpochAugmented(Dataset):
    """A dataset whose augmentation of item ``i`` in epoch ``e`` is drawn from ``(seed, e, i)``.

    The same seed gives the same augmentations on a re-run and after ``--resume``,
    whatever the order the loader asks for the items in.
    """

    seed: int = 0
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])
