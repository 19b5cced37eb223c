"""The clinical tasks MedView has a pipeline for, and the architectures allowed to serve each.

Torch-free and Qt-free, so that every layer can name a task without a bare
string: the engine checks manifests against it, ``medview.models`` registers
its constructors under exactly these architecture ids (a test checks both
ways), and the UI asks the engine for a task's bundles.  ``ClinicalTask`` is a
``StrEnum``: each member equals the string a manifest stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum


class ClinicalTask(StrEnum):
    """A clinical task, as named in a bundle manifest's ``task``."""

    LIVER_SEGMENTATION = "liver_segmentation"
    KIDNEY_STONE = "kidney_stone"
    LUNG_SEGMENTATION = "lung_segmentation"
    COVID_CT = "covid_ct"
    SKIN_LESION = "skin_lesion"
    LUNG_SOUND = "lung_sound"


#: allow-listed architecture ids and the task each serves
ARCHITECTURES: Mapping[str, ClinicalTask] = {
    "liver_eas_unet": ClinicalTask.LIVER_SEGMENTATION,  # paper 001
    "kidney_hybrid": ClinicalTask.KIDNEY_STONE,  # paper 000, frozen backbone + custom CNN
    "kidney_transfer": ClinicalTask.KIDNEY_STONE,  # paper 000's transfer-learning baseline
    "lung_unet": ClinicalTask.LUNG_SEGMENTATION,  # paper 002, stage 0
    "covid_slice_cnn": ClinicalTask.COVID_CT,  # paper 002, stage 1 (slice classifier)
    "covid_cnn_bilstm": ClinicalTask.COVID_CT,  # paper 002, stage 2 (frozen CNN + biLSTM over 50 slices)
    "skin_cnn_features": ClinicalTask.SKIN_LESION,  # paper 003, ImageNet CNN features (the forest is a skops file)
    "lung_sound_cnn": ClinicalTask.LUNG_SOUND,  # paper 004
}
