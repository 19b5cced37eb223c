"""Paper 002 at inference: lung mask -> slice elimination -> 50-slice groups -> CNN + biLSTM -> patient vote.

The lung mask comes from a lung-segmentation bundle (the paper's U-Net) when one
is given, else from the classical method of ``medview.preprocess.chest`` (the
result says which).  Slice elimination, masking, grouping and the vote are the
shared functions of ``medview.preprocess.chest``, exactly what training uses.
Grad-CAM, when asked, is computed per slice at the CNN's last conv layer for
the class each group predicts, with gradients through the biLSTM, and mapped
back to the source slices (an interpolated slot of a resampled group is not a
real slice and gets no map; black padding neither).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from medview.engine.api import ClassScores, CovidResult, GroupScore, Heatmap
from medview.engine.manifest import ModelCard
from medview.engine.pipelines import segmentation
from medview.engine.pipelines.context import RunContext
from medview.errors import InputError, ModelError
from medview.explain import grad_cam
from medview.io.volume import Volume
from medview.preprocess.chest import (
    GROUP_SLICES,
    classical_lung_mask,
    group_slices,
    patient_vote,
    prepare_slices,
    select_slices,
    superior_at_high_z,
)
from medview.preprocess.image import resize_back


def network_input_shape(card: ModelCard) -> tuple[int, int, int, int]:
    """One input of ``card``'s network without the batch dimension: a group of slices, (group, 1, size, size)."""
    size = card.input.size[0] if card.input.size else 256
    return int(card.arch_args.get("group_slices", GROUP_SLICES)), 1, size, size


def prepare(context: RunContext) -> None:
    """Set up the forward passes a run will use (exports the ONNX graph on the first use of a bundle)."""
    context.forward_passes(0, sample_shape=network_input_shape(context.card))


def lung_mask(context: RunContext, volume: Volume, lung_run: RunContext | None) -> tuple[np.ndarray, str, bool]:
    """The lung mask the verdict is computed in, where it came from (for the provenance), and whether that was
    a demo model: the lung U-Net's of ``lung_run`` (a run of a lung_segmentation bundle) when given, else the
    classical method (``medview.preprocess.chest``), whose steps report progress and let a Cancel stop it.
    """
    if lung_run is not None:
        card = lung_run.card
        mask = segmentation.segment(lung_run, volume, structure="lung").mask
        return mask, f"lung U-Net {card.label}" + (" (demo model)" if card.is_demo else ""), card.is_demo

    def step() -> None:
        context.step(0, 1, "lung mask (classical method)")

    step()
    mask = classical_lung_mask(volume.voxels, spacing=volume.spacing, between_steps=step)
    return mask, "classical method (HU threshold, connected components, hole filling)", False


def classify(
    context: RunContext,
    volume: Volume,
    lung_mask: np.ndarray,
    lung_mask_source: str,
    *,
    explain: bool = False,
    demo_lung_mask: bool = False,
) -> CovidResult:
    """The patient verdict for ``volume`` given its lung mask (bool, the volume's shape).

    ``demo_lung_mask``: the mask came from a demo model, so the result is marked demo too.
    """
    card = context.card
    if lung_mask.shape != volume.shape:
        raise ModelError(f"lung mask of shape {lung_mask.shape} for a volume of shape {volume.shape}")
    input_shape = network_input_shape(card)
    group_size, _, size, _ = input_shape
    try:
        upward = superior_at_high_z(volume.direction)
    except ValueError as error:
        raise InputError(f"COVID analysis needs an axial chest CT series ({error})") from error
    selection = select_slices(lung_mask, superior_at_high_z=upward)
    if not selection.kept:
        raise InputError("no lung found in this series: the COVID model needs a chest CT that shows the lungs")
    window = card.input.hu_window or (-1000.0, 400.0)
    prepared = prepare_slices(volume.voxels, lung_mask, selection.kept, size=size, window=window)
    groups = group_slices(prepared, selection.kept, group_size=group_size)

    network = context.networks[0]
    forward = context.forward_passes(0, sample_shape=input_shape)
    steps = len(groups) * (2 if explain else 1)
    probabilities, heatmaps = [], {}
    for number, group in enumerate(groups):
        context.step(number, steps, f"classifying slice group {number + 1} of {len(groups)}")
        logits = forward(group.images[None, :, None])  # (1, 50, 1, size, size)
        probabilities.append(torch.from_numpy(logits[0]).double().softmax(dim=0).numpy())
    group_probabilities = np.stack(probabilities)
    if explain:
        for number, group in enumerate(groups):
            context.step(len(groups) + number, steps, f"Grad-CAM of group {number + 1} of {len(groups)}")
            target = int(np.argmax(group_probabilities[number]))
            inputs = context.tensor(group.images[None, :, None])
            maps = grad_cam(network, inputs, card.target_layer or "", target)  # one map per slot
            real = [(slot, s) for slot, s in enumerate(group.sources) if isinstance(s, int)]
            if real:
                grid = resize_back(maps[[slot for slot, _ in real]], volume.shape[1:])
                for (_, source), values in zip(real, grid, strict=True):
                    heatmaps[source] = Heatmap(
                        values, target_class=card.class_names[target], layer=card.target_layer or ""
                    )
    context.step(steps, steps, "patient vote")

    healthy = str(card.input.extra.get("healthy_class", "healthy"))
    switch = context.threshold("switch", 0.9)
    vote = patient_vote(group_probabilities, card.class_names, healthy=healthy, switch_threshold=switch)
    scores = [
        GroupScore(
            description=group.describe(),
            kind=group.kind,
            sources=group.sources,
            scores=ClassScores(dict(zip(card.class_names, row.tolist(), strict=True))),
        )
        for group, row in zip(groups, group_probabilities, strict=True)
    ]
    context.notes.append(f"lung mask: {lung_mask_source}")
    provenance = context.provenance(threshold=switch)
    return CovidResult(
        provenance=replace(provenance, demo=True) if demo_lung_mask else provenance,
        class_names=card.class_names,
        lung_mask=lung_mask,
        lung_mask_source=lung_mask_source,
        slice_reasons=selection.reasons,
        kept_slices=selection.kept,
        groups=tuple(scores),
        verdict=vote.label,
        votes=dict(vote.votes),
        switched=vote.switched,
        reason=vote.reason,
        heatmaps=heatmaps,
    )
