"""Patient-level splits: no patient ever has data on both sides of a split.

Every splitter takes one group id per item (the patient, or the best stand-in
the dataset has) and returns index arrays.  scikit-learn's group splitters do
the work; this module picks the right one for the papers' protocols, checks the
result and records it (the saved split and its digest travel with the run and
into the bundle's manifest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold


@dataclass(frozen=True)
class Split:
    """Indices of the items on each side; ``validation`` may be empty."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    description: str

    def sides(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def check(self, groups: Sequence[str]) -> None:
        """Raise ``ValueError`` if an item or a patient sits on two sides."""
        group_array = np.asarray(groups)
        seen: dict[str, str] = {}
        for side, indices in self.sides().items():
            for group in set(group_array[indices].tolist()):
                if group in seen and seen[group] != side:
                    raise ValueError(f"patient {group!r} is in both {seen[group]} and {side}")
                seen[group] = side

    def digest(self, item_ids: Sequence[str]) -> str:
        """A short SHA-256 of which item went where, for the manifest (same split, same digest)."""
        ids = np.asarray(item_ids)
        text = json.dumps({side: sorted(ids[indices].tolist()) for side, indices in self.sides().items()})
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def provenance(self, item_ids: Sequence[str]) -> str:
        """The manifest's ``split`` line: how it was drawn and its digest."""
        return f"{self.description}; digest {self.digest(item_ids)}"

    def save(self, path: Path, item_ids: Sequence[str], groups: Sequence[str], labels: Sequence[str]) -> None:
        """Write every item's side, patient and label as JSON, so a run's split can be audited and reused."""
        ids, group_array, label_array = np.asarray(item_ids), np.asarray(groups), np.asarray(labels)
        record = {
            "description": self.description,
            "digest": self.digest(item_ids),
            **{
                side: [
                    {"item": str(ids[i]), "patient": str(group_array[i]), "label": str(label_array[i])} for i in indices
                ]
                for side, indices in self.sides().items()
            },
        }
        path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def official_split(sides: Sequence[str | None], groups: Sequence[str], description: str) -> Split | None:
    """The split a dataset fixes itself ("train"/"test" per item), when every item has one; else None."""
    if not sides or any(side is None for side in sides):
        return None
    train = np.asarray([i for i, side in enumerate(sides) if side == "train"], dtype=int)
    test = np.asarray([i for i, side in enumerate(sides) if side == "test"], dtype=int)
    split = Split(train, np.zeros(0, dtype=int), test, description)
    split.check(groups)
    return split


def first_fold_with_every_class(folds: Sequence[tuple[np.ndarray, np.ndarray]], labels: Sequence[int]) -> int:
    """Index of the first (kept, held) fold whose held side has every class (0 when none has).

    With few patients of a class, stratified group folds cannot all hold one of them.
    """
    label_array = np.asarray(labels)
    classes = set(label_array.tolist())
    return next((i for i, (_, held) in enumerate(folds) if set(label_array[held].tolist()) == classes), 0)


def _group_count(groups: Sequence[str]) -> int:
    count = len(set(groups))
    if count < 2:
        raise ValueError(f"a patient-level split needs at least 2 patients, the data has {count}")
    return count


def holdout(labels: Sequence[int], groups: Sequence[str], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) with about ``fraction`` of the patients held out, stratified by label when possible.

    Stratification (StratifiedGroupKFold; the first fold that holds every
    class) needs at least 1/fraction patients and items of each class; with
    fewer, a plain group shuffle holds out at least one patient.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction: expected 0 < fraction < 1, got {fraction}")
    folds = max(2, round(1 / fraction))
    indices = np.arange(len(labels))
    smallest_class = min(np.unique(np.asarray(labels), return_counts=True)[1])
    if _group_count(groups) >= folds and smallest_class >= folds:
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        pairs = list(splitter.split(indices, labels, groups))
        kept, held = pairs[first_fold_with_every_class(pairs, labels)]
    else:
        shuffle = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        kept, held = next(shuffle.split(indices, labels, groups))
    return np.sort(kept), np.sort(held)


def holdout_per_class_of_patients(
    labels: Sequence[int], groups: Sequence[str], fraction: float, seed: int, *, minimum: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out): ``fraction`` of each class's patients held out (at least ``minimum`` each while one is
    left to keep), drawn with ``seed``.

    A patient's class is the most common label of its items.  Unlike
    :func:`holdout`, whose folds balance the items, this balances patients: where
    patients differ a lot in size (runs of 1 to 150 slices), item-balanced folds
    can hold out 3 patients, and a test set of one stone scan says little.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction: expected 0 < fraction < 1, got {fraction}")
    label_array, group_array = np.asarray(labels), np.asarray(groups)
    patients = sorted(set(group_array.tolist()))
    if len(patients) < 2:
        raise ValueError(f"a patient-level split needs at least 2 patients, the data has {len(patients)}")
    patient_class = {patient: int(np.bincount(label_array[group_array == patient]).argmax()) for patient in patients}
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted(set(patient_class.values())):
        members = [patient for patient in patients if patient_class[patient] == label]
        count = min(len(members) - 1, max(minimum, round(fraction * len(members)))) if len(members) > 1 else 0
        held.update(rng.permutation(members)[:count].tolist())
    mask = np.isin(group_array, sorted(held))
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def patient_folds_per_class(labels: Sequence[int], groups: Sequence[str], folds: int, seed: int) -> list[np.ndarray]:
    """The held-out indices of ``folds`` patient-level folds that balance each class's patients (not its items).

    Each class's patients, shuffled with ``seed``, are dealt round the folds in
    turn, carrying on from where the previous class stopped, so the folds differ
    by at most one patient of a class and one patient in all.  Stratified group
    folds balance items instead, and with runs of 1 to 150 slices a fold can end
    up with no patient of a class.  Fewer patients than ``folds`` give one fold
    per patient.
    """
    label_array, group_array = np.asarray(labels), np.asarray(groups)
    patients = sorted(set(group_array.tolist()))
    if len(patients) < 2 or folds < 2:
        raise ValueError(f"patient-level folds need at least 2 folds and 2 patients, got {folds} and {len(patients)}")
    patient_class = {patient: int(np.bincount(label_array[group_array == patient]).argmax()) for patient in patients}
    count = min(folds, len(patients))
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for label in sorted(set(patient_class.values())):
        members = [patient for patient in patients if patient_class[patient] == label]
        for patient in rng.permutation(members).tolist():
            fold_of[patient] = len(fold_of) % count
    assigned = np.asarray([fold_of[group] for group in group_array.tolist()])
    return [np.flatnonzero(assigned == fold) for fold in range(count)]


def patient_split(
    labels: Sequence[int],
    groups: Sequence[str],
    *,
    test_fraction: float,
    validation_fraction: float,
    seed: int,
    description: str = "",
    min_validation_patients: int = 2,
) -> Split:
    """Train / validation / test by patient: the test patients first, then validation patients from the rest.

    No validation set when fewer than ``min_validation_patients`` patients remain for it to come from.
    """
    rest, test = holdout(labels, groups, test_fraction, seed)
    label_array, group_array = np.asarray(labels), np.asarray(groups)
    if validation_fraction > 0 and len(set(group_array[rest].tolist())) >= max(2, min_validation_patients):
        train_part, validation_part = holdout(label_array[rest], group_array[rest], validation_fraction, seed + 1)
        train, validation = rest[train_part], rest[validation_part]
    else:
        train, validation = rest, np.zeros(0, dtype=int)
    split = Split(
        train,
        validation,
        test,
        description
        or f"by patient, seed {seed}: test {test_fraction:.0%} of patients, "
        + (f"validation {validation_fraction:.0%} of the rest" if len(validation) else "no validation set"),
    )
    split.check(groups)
    return split


def cross_validation_folds(
    labels: Sequence[int], groups: Sequence[str], folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` stratified patient-level folds as (train, test) index pairs (paper 000's 6-fold scheme uses 6)."""
    if _group_count(groups) < folds:
        raise ValueError(f"{folds} patient-level folds need at least {folds} patients, the data has {len(set(groups))}")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    indices = np.arange(len(labels))
    return [(np.sort(train), np.sort(test)) for train, test in splitter.split(indices, labels, groups)]


def random_patient_splits(
    groups: Sequence[str], *, repeats: int, test_fraction: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``repeats`` random (train, test) splits by patient (paper 004: ten random 80/20 splits)."""
    _group_count(groups)
    shuffle = GroupShuffleSplit(n_splits=repeats, test_size=test_fraction, random_state=seed)
    indices = np.arange(len(groups))
    return [(np.sort(train), np.sort(test)) for train, test in shuffle.split(indices, groups=groups)]
