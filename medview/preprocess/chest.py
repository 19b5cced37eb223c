"""Chest CT preparation of paper 002 (COVID-19 CNN + biLSTM): lung mask, slice elimination, 50-slice groups, vote.

The order the pipeline and training run them in, on a ``(z, y, x)`` HU volume:

1. a lung mask: the ``lung_unet`` bundle's, or ``classical_lung_mask`` (the
   pseudo-labels the U-Net is trained on, and the app's fallback without a bundle);
2. ``select_slices``: drop the slices without lung and those whose lung area is
   small relative to the patient's largest (section 2.2.2);
3. ``prepare_slices``: the kept slices scaled to 256 x 256, put in a lung window
   and multiplied by the lung mask (section 2.2);
4. ``group_slices``: 50-slice groups, padded or resampled as section 2.2.3 says;
5. the ``covid_cnn_bilstm`` model gives class probabilities per group, and
   ``patient_vote`` turns them into the patient's label (section 2.4).

Slice order: groups run in array ``z`` order.  MedView's loaders re-orient every
volume so that ``z`` grows towards the head (``medview.io.volume``), so a group
runs from the lung base towards the apex; training and inference use the same
loaders and therefore the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medview.preprocess.image import resize_stack, window_to_unit

#: section 2.2: "CT images were scaled to 256 x 256 pixels"
SLICE_SIZE = 256
#: section 2.2.3: "We set the group size to be 50 CT slices"
GROUP_SLICES = 50
#: section 2.2.2: "Threshold values of 0.4 for the up-side of the lung and 0.9 for the down-side"
UPPER_THRESHOLD = 0.4
LOWER_THRESHOLD = 0.9
#: section 2.4: a healthy vote switches to a pneumonia class predicted with a probability above this
SWITCH_THRESHOLD = 0.9
#: the paper names no window (it converted slices to PNG with adaptive histogram equalisation); a lung window
LUNG_WINDOW = (-1000.0, 400.0)
#: HU below which a voxel counts as air (lung parenchyma is about -900 to -700, soft tissue above -100)
AIR_HU = -400.0


# --------------------------------------------------------------------------- classical lung mask

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]  # 4-connectivity within a slice, none across slices


def classical_lung_mask(
    volume_hu: np.ndarray,
    *,
    air_hu: float = AIR_HU,
    working_size: int = SLICE_SIZE,
    second_lung_fraction: float = 0.2,
    spacing: Sequence[float] | None = None,
    min_lung_ml: float = 50.0,
    max_hole_mm2: float = 1000.0,
    between_steps: Callable[[], None] | None = None,
) -> np.ndarray:
    """Lung mask of a ``(z, y, x)`` HU chest CT by thresholding and connected components, bool, same shape.

    ``between_steps`` is called between the steps below (up to ~0.3 s apart on a
    148-slice series): a run that is cancelled raises there, instead of after the
    whole mask (~1 s).

    The method, each step on whole volumes with ``scipy.ndimage``:

    1. In-plane downsampling to about ``working_size`` pixels (one pixel of each
       2 x 2 block of a 512 x 512 slice): the U-Net works at 256 x 256
       anyway, and it makes the mask 4 times cheaper.
    2. Air: voxels below ``air_hu`` (-400 HU), which includes any padding outside
       the scanner's field of view (-2048, -3024).
    3. Body: the air components of each slice that touch the slice's border are
       the air around the patient; the remaining air is inside the body (lungs,
       airways, gas in the bowel, holes in the table).
    4. Lungs: 3-D connected components (6-connectivity) of the air inside the
       body; the largest is kept, and the second largest too when it has at least
       ``second_lung_fraction`` of the largest's volume (the two lungs are usually
       one component, joined by the trachea and main bronchi; a second lung
       component is much larger than the stomach or colon gas that is the next
       candidate).  With ``spacing`` (z, y, x mm) a component must also hold
       ``min_lung_ml``, so a series without lungs gives an empty mask.
    5. A closing with a 3 x 3 cross in each slice, then hole filling in each
       slice: the vessels, bronchial walls, nodules and ground-glass or
       consolidated regions enclosed by aerated lung join the mask.  Holes larger
       than ``max_hole_mm2`` (10 cm², a disc of 36 mm) stay open: at the lung base
       the domes of the liver, spleen and stomach are cut as discs surrounded by
       lung, 15 to 40 cm² on the sample series, while the enclosed vessels and
       opacities measured up to 7 cm².
    6. Nearest-neighbour upsampling back to the input grid.

    ``spacing`` (z, y, x in mm, as ``Volume.spacing``) is optional; without it
    the minimum lung volume is not checked and hole areas assume 0.75 mm pixels
    (a 512-pixel slice of a 38 cm chest field of view).

    Known limits, as for any threshold method: the trachea and main bronchi are
    part of the mask; a consolidation lying against the chest wall, not enclosed
    by aerated lung in its slice, is left out; a lung cut by the field of view
    touches the border and is taken for outside air.
    """
    # scipy loads here, not with the engine: ~0.4 s that the other tasks' first result would wait for
    from scipy import ndimage

    volume_hu = np.asarray(volume_hu)
    if volume_hu.ndim != 3:
        raise ValueError(f"volume_hu: expected a (z, y, x) array, got shape {volume_hu.shape}")
    if not 0.0 < second_lung_fraction <= 1.0:
        raise ValueError(f"second_lung_fraction: expected a number in (0, 1], got {second_lung_fraction}")
    depth, height, width = volume_hu.shape
    step = max(1, min(height, width) // max(1, working_size))
    small = volume_hu[:, step // 2 :: step, step // 2 :: step]

    check = between_steps or (lambda: None)
    air = small < air_hu
    labels, count = ndimage.label(air, structure=_IN_PLANE)
    check()
    border = np.concatenate([labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]], axis=None)
    outside = np.zeros(count + 1, dtype=bool)
    outside[border] = True
    outside[0] = True
    inside_air = ~outside[labels]

    check()
    labels, count = ndimage.label(inside_air)
    lungs = np.zeros(small.shape, dtype=bool)
    if count:
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        sizes[0] = 0
        order = np.argsort(sizes)[::-1]
        keep = [order[0]]
        if count > 1 and sizes[order[1]] >= second_lung_fraction * sizes[order[0]]:
            keep.append(order[1])
        if spacing is not None:
            voxel_ml = float(np.prod(spacing)) * step * step / 1000.0
            keep = [label for label in keep if sizes[label] * voxel_ml >= min_lung_ml]
        lungs = np.isin(labels, keep)

    check()
    lungs = ndimage.binary_closing(lungs, structure=_IN_PLANE)
    check()
    # holes are filled per slice; the padding keeps the first and last slices off the array border
    filled = ndimage.binary_fill_holes(np.pad(lungs, ((1, 1), (0, 0), (0, 0))), structure=_IN_PLANE)[1:-1]
    check()
    holes, count = ndimage.label(filled & ~lungs, structure=_IN_PLANE)
    if count:
        pixel_mm2 = (float(spacing[1]) * float(spacing[2]) if spacing is not None else 0.75**2) * step * step
        small_hole = np.bincount(holes.ravel(), minlength=count + 1) * pixel_mm2 <= max_hole_mm2
        small_hole[0] = False
        lungs |= small_hole[holes]

    if step == 1:
        return lungs
    rows = np.minimum(np.arange(height) // step, lungs.shape[1] - 1)
    columns = np.minimum(np.arange(width) // step, lungs.shape[2] - 1)
    # take, not fancy indexing: lungs[:, rows][:, :, columns] came out with z as the fastest axis, and every
    # axial slice of that mask (the COVID-19 pipeline's, the views' outline of it) read 10x slower
    full = lungs.take(rows, axis=1).take(columns, axis=2)
    assert full.shape == (depth, height, width)
    return full


# --------------------------------------------------------------------------- slice elimination


def superior_at_high_z(direction: Sequence[float]) -> bool:
    """Whether slice index ``z`` grows towards the head, from a ``Volume.direction`` (ITK convention, LPS).

    The third column of the matrix is the ``z`` axis in patient coordinates; its
    S component says which way it runs.  MedView's loaders re-orient axial series
    so that this is always True; a volume from elsewhere may differ.
    """
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    superior = matrix[2, 2]
    if abs(superior) < 0.5:
        raise ValueError(f"direction: expected axial slices (z axis mostly head-feet), got z axis {matrix[:, 2]}")
    return bool(superior > 0)


@dataclass(frozen=True, eq=False)
class SliceSelection:
    """Which slices of a volume the COVID classifier sees, and why each other one was dropped."""

    kept: tuple[int, ...]  # slice indices in increasing z
    reasons: tuple[str, ...]  # one per slice of the volume, e.g. "no lung", "kept: ..."
    area_ratio: np.ndarray  # lung area of each slice / the largest lung area (0 where there is no lung)
    largest: int | None  # index of the slice with the largest lung area; None without lung


def select_slices(
    lung: np.ndarray,
    *,
    superior_at_high_z: bool = True,
    upper_threshold: float = UPPER_THRESHOLD,
    lower_threshold: float = LOWER_THRESHOLD,
) -> SliceSelection:
    """Section 2.2.2's segmentation-based elimination, on a lung mask ``(z, y, x)`` or lung areas ``(z,)``.

    "The areas containing no lung information were eliminated. CT slices having
    small lung regions were also eliminated [...] The original CT slices were
    masked by the ratio obtained by the maximum CT lung area. Threshold values of
    0.4 for the up-side of the lung and 0.9 for the down-side of the lung were used."

    So each slice's lung area is divided by the patient's largest slice lung area;
    a slice without lung is dropped, and so is a slice whose ratio is below 0.4 if
    it lies above (towards the head, the apex side) the slice with the largest
    area, or below 0.9 if it lies below it (towards the feet, the base, where the
    diaphragm dome and the liver take the place of lung).  A ratio equal to the
    threshold is kept.  The rule is applied to every slice on its own, as the paper
    states it; the lung area profile rises and falls monotonically on either side
    of its maximum in practice, so this drops the two ends of the lung.

    ``superior_at_high_z``: whether a higher ``z`` index is nearer the head (True
    for every volume MedView's loaders return; see ``superior_at_high_z()`` for a
    direction matrix).  Areas may be in pixels or mm², only their ratios count.
    """
    lung = np.asarray(lung)
    if lung.ndim == 3:
        areas = np.count_nonzero(lung, axis=(1, 2)).astype(float)
    elif lung.ndim == 1:
        areas = lung.astype(float)
    else:
        raise ValueError(f"lung: expected a (z, y, x) mask or (z,) areas, got shape {lung.shape}")
    if areas.size and (not np.isfinite(areas).all() or (areas < 0).any()):
        raise ValueError("lung: expected finite, non-negative areas, got negative or non-finite values")
    for name, value in (("upper_threshold", upper_threshold), ("lower_threshold", lower_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: expected a ratio in [0, 1], got {value}")
    if not areas.size or areas.max() <= 0:
        return SliceSelection((), ("no lung",) * areas.size, np.zeros(areas.size), None)

    largest = int(np.argmax(areas))
    ratio = areas / areas[largest]
    kept, reasons = [], []
    for index, (area, value) in enumerate(zip(areas, ratio, strict=True)):
        if area <= 0:
            reasons.append("no lung")
            continue
        if index == largest:
            reasons.append("kept: largest lung area")
            kept.append(index)
            continue
        upper = (index > largest) == superior_at_high_z
        end, threshold = ("upper end", upper_threshold) if upper else ("lower end", lower_threshold)
        if value < threshold:  # rounded down, so that 0.897 does not read "0.90 of max < 0.9"
            reasons.append(f"lung area {np.floor(value * 100 + 1e-9) / 100:.2f} of max < {threshold:g} ({end})")
        else:
            reasons.append(f"kept: lung area {value:.2f} of max >= {threshold:g} ({end})")
            kept.append(index)
    return SliceSelection(tuple(kept), tuple(reasons), ratio, largest)


# --------------------------------------------------------------------------- slice preparation


def prepare_slices(
    volume_hu: np.ndarray,
    lung_mask: np.ndarray,
    indices: Sequence[int] | None = None,
    *,
    size: int = SLICE_SIZE,
    window: tuple[float, float] = LUNG_WINDOW,
) -> np.ndarray:
    """The network input of the chosen slices: ``(n, size, size)`` float32 in [0, 1], zero outside the lung.

    Each slice is scaled to ``size`` x ``size`` (section 2.2; a non-square slice
    is stretched, as "scaled to 256 x 256" implies), its HU values clipped to the
    lung window ``window`` (-1000 to 400 HU) and mapped linearly to [0, 1], and
    multiplied by the lung mask scaled the same way (kept where at least half of
    the pixel is lung), so everything outside the lungs is black, like the
    padding slices of ``group_slices``.

    The paper gives no window: it exported its slices to PNG "with adaptive
    histogram equalization".  A fixed HU window is used instead so that one HU
    value gives one input value on every scanner and in every slice; [-1000, 400]
    spans aerated lung, ground-glass opacity and consolidation.
    """
    volume_hu = np.asarray(volume_hu)
    lung_mask = np.asarray(lung_mask)
    if volume_hu.ndim != 3 or lung_mask.shape[0] != volume_hu.shape[0] or lung_mask.ndim != 3:
        raise ValueError(
            f"volume_hu, lung_mask: expected (z, y, x) arrays with the same z, got {volume_hu.shape}, {lung_mask.shape}"
        )
    picks = np.arange(volume_hu.shape[0]) if indices is None else np.asarray(indices, dtype=int).reshape(-1)
    if not picks.size:
        return np.zeros((0, size, size), dtype=np.float32)
    images = resize_stack(window_to_unit(volume_hu[picks], window), (size, size))
    masks = resize_stack(lung_mask[picks].astype(np.float32), (size, size)) >= 0.5
    return np.where(masks, images, np.float32(0.0)).astype(np.float32)


# --------------------------------------------------------------------------- grouping


GroupKind = Literal["full", "padded", "resampled"]


@dataclass(frozen=True, eq=False)
class SliceGroup:
    """One network input: ``images`` (group_size, ...) and where each slot came from.

    ``sources[k]`` is the source slice index of slot ``k``: an int for a slice
    taken as it is, a float for a slice interpolated between two source slices
    (its position between their indices), None for a black padding slice.
    """

    images: np.ndarray
    sources: tuple[int | float | None, ...]
    kind: GroupKind

    def describe(self) -> str:
        """One line for the viewer, e.g. "slices 112-139 + 22 black"."""
        real = [s for s in self.sources if s is not None]
        first, last = _format_index(real[0]), _format_index(real[-1])
        if self.kind == "padded":
            return f"slices {first}-{last} + {len(self.sources) - len(real)} black"
        if self.kind == "resampled":
            return f"slices {first}-{last} resampled to {len(self.sources)}"
        return f"slices {first}-{last}"


def _format_index(value: float) -> str:
    return f"{value:g}" if isinstance(value, int) else f"{value:.1f}"


def group_slices(
    slices: np.ndarray,
    source_indices: Sequence[int] | None = None,
    *,
    group_size: int = GROUP_SLICES,
    pad_value: float = 0.0,
) -> list[SliceGroup]:
    """Section 2.2.3's grouping of a patient's kept slices ``(n, ...)`` into groups of ``group_size``.

    "in case the number of slices for a patient was not divisible by 50: when
    there were more than 25 slices remaining, the last group of slices was
    augmented with padding of black images, and when there were fewer than 25
    slices remaining, then the number of slices in the last two groups were
    downsampled to 50 using interpolation."

    - ``n`` a multiple of 50: ``n / 50`` groups as they are.
    - remainder ``r`` > 25: the last group holds the ``r`` slices followed by
      ``50 - r`` black slices (``pad_value``, 0 = black after ``prepare_slices``).
    - remainder ``r`` < 25: the last full group and the remainder, ``50 + r``
      slices, are linearly interpolated along z to 50 evenly spaced positions
      (the first and the last slice are kept exactly).
    - remainder exactly 25 (the paper says neither): padded, since half a group
      of real slices is enough for a group of its own and padding keeps every
      slice as it is, the paper's aim ("without imposing any restrictions on input
      size not to have any information loss").
    - fewer than 50 slices in all (the paper's patients have 13 to 261 slices, so
      it met this case, but names no rule; there is no previous group to merge
      with): one group, the slices followed by black padding, whatever their
      number, for the same reason: no slice is invented or lost.

    ``source_indices`` gives each slice's index in the volume (default 0..n-1), so
    ``SliceGroup.sources`` maps the slots back to the volume's slices.
    """
    slices = np.asarray(slices)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size: expected an integer >= 2, got {group_size!r}")
    if slices.ndim < 1 or slices.shape[0] == 0:
        raise ValueError(f"slices: expected at least one slice, got shape {slices.shape} (every slice eliminated?)")
    count = slices.shape[0]
    sources = np.arange(count) if source_indices is None else np.asarray(source_indices)
    if sources.shape != (count,):
        raise ValueError(f"source_indices: expected {count} indices, got {sources.shape[0] if sources.ndim else 0}")
    if not np.issubdtype(slices.dtype, np.floating):
        slices = slices.astype(np.float32)
    index_list = [int(i) for i in sources]

    full, remainder = divmod(count, group_size)
    groups = [
        SliceGroup(
            slices[g * group_size : (g + 1) * group_size],
            tuple(index_list[g * group_size : (g + 1) * group_size]),
            "full",
        )
        for g in range(full)
    ]
    if remainder == 0:
        return groups
    if full == 0 or 2 * remainder >= group_size:
        tail = slices[full * group_size :]
        padding = np.full((group_size - remainder, *slices.shape[1:]), pad_value, dtype=slices.dtype)
        padded_sources = (*index_list[full * group_size :], *([None] * (group_size - remainder)))
        groups.append(SliceGroup(np.concatenate([tail, padding]), padded_sources, "padded"))
        return groups

    start = (full - 1) * group_size
    merged, merged_sources = slices[start:], sources[start:].astype(float)
    positions = np.linspace(0.0, merged.shape[0] - 1, group_size)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, merged.shape[0] - 1)
    fraction = (positions - low).reshape(-1, *([1] * (slices.ndim - 1))).astype(slices.dtype)
    images = (1 - fraction) * merged[low] + fraction * merged[high]
    slot_sources: list[int | float | None] = []
    for position, lo, hi in zip(positions, low, high, strict=True):
        weight = position - lo
        if weight < 1e-9:
            slot_sources.append(int(merged_sources[lo]))
        else:
            slot_sources.append(float((1 - weight) * merged_sources[lo] + weight * merged_sources[hi]))
    groups[-1] = SliceGroup(images.astype(slices.dtype, copy=False), tuple(slot_sources), "resampled")
    return groups


# --------------------------------------------------------------------------- patient vote


@dataclass(frozen=True)
class PatientVote:
    """The patient-level decision of section 2.4 and the reason the viewer shows."""

    label: str
    votes: Mapping[str, int]  # groups whose most probable class is each class (every class listed)
    majority: str  # the majority vote, before the healthy -> pneumonia switch
    switched: bool  # True when a confident pneumonia group overruled a healthy majority
    group_labels: tuple[str, ...]
    reason: str


def patient_vote(
    group_probabilities: np.ndarray,
    class_names: Sequence[str],
    healthy: str = "healthy",
    switch_threshold: float = SWITCH_THRESHOLD,
) -> PatientVote:
    """Label-based majority voting over a patient's groups, section 2.4.

    "First, the label with the highest classification probability for each group
    was selected. Next, the label having the majority vote was assigned to the
    label of the patient. When the output was healthy, and the group was
    classified as NCP or CP, the probability of non-healthy class was checked
    further. When the probability was greater than the predefined threshold
    (0.9), the label changed in favor of the non-healthy class."

    ``group_probabilities`` is (groups, classes), softmax rows.  The switch needs a
    probability strictly above ``switch_threshold``; when several groups qualify,
    the one with the highest probability names the class.  A tie in the majority
    vote (the paper says nothing) goes to the tied class with the highest mean
    probability over all the patient's groups, and, should those be equal too, to
    the class listed first in ``class_names``; the switch rule then applies to
    the winner as to any healthy majority.
    """
    probabilities = np.asarray(group_probabilities, dtype=float)
    names = tuple(class_names)
    if probabilities.ndim != 2 or probabilities.shape[0] == 0 or probabilities.shape[1] != len(names):
        raise ValueError(
            f"group_probabilities: expected (groups >= 1, {len(names)} classes), got shape {probabilities.shape}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"class_names: expected distinct names, got {names}")
    if healthy not in names:
        raise ValueError(f"healthy: expected one of {names}, got {healthy!r}")
    if (
        not np.isfinite(probabilities).all()
        or (probabilities < 0).any()
        or not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    ):
        raise ValueError("group_probabilities: expected probabilities (rows in [0, 1] summing to 1), got other values")
    if not 0.0 < switch_threshold < 1.0:
        raise ValueError(f"switch_threshold: expected a probability in (0, 1), got {switch_threshold}")

    groups = probabilities.shape[0]
    winners = probabilities.argmax(axis=1)
    counts = np.bincount(winners, minlength=len(names))
    votes = {name: int(count) for name, count in zip(names, counts, strict=True)}
    group_labels = tuple(names[i] for i in winners)
    tied = np.flatnonzero(counts == counts.max())
    if tied.size == 1:
        majority = int(tied[0])
        reason = f"majority vote: {names[majority]} in {counts[majority]} of {groups} groups"
    else:
        means = probabilities.mean(axis=0)
        majority = int(tied[np.argmax(means[tied])])  # argmax takes the first of equal means
        listing = ", ".join(f"{names[i]} (mean probability {means[i]:.2f})" for i in tied)
        reason = (
            f"tie: {counts[majority]} of {groups} groups each for {listing}; "
            f"{names[majority]} has the highest mean probability"
        )

    label, switched = names[majority], False
    if names[majority] == healthy:
        healthy_index = names.index(healthy)
        best_group, best_class, best_p = -1, -1, -1.0
        for group, (winner, row) in enumerate(zip(winners, probabilities, strict=True)):
            if winner != healthy_index and row[winner] > switch_threshold and row[winner] > best_p:
                best_group, best_class, best_p = group, int(winner), float(row[winner])
        if best_group >= 0:
            label, switched = names[best_class], True
            reason += (
                f"; group {best_group + 1} predicts {names[best_class]} with probability "
                f"{best_p:.3f} > {switch_threshold:g}, so the label switches to {names[best_class]}"
            )
        else:
            reason += f"; no group predicts a pneumonia class with probability > {switch_threshold:g}"
    return PatientVote(label, votes, names[majority], switched, group_labels, reason)
