"""The inference service: finds bundles, loads their networks once per device, runs a task's pipeline.

``medview.app`` builds one ``Engine`` after the window is shown (this module
imports torch) and hands it to the UI's workers, which call it off the GUI
thread.  A bundle's files are checksum-verified when its networks are first
loaded on a device (then cached), every run reports progress and honours
cancel, and on CUDA out-of-memory runs once more on the CPU with a note in the
result.  On the CPU the segmentation U-Nets' forward passes run on ONNX Runtime
(``onnx_runtime``: graphs exported on first use, cached under the user's cache
folder), with eager torch as the fallback.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from torch import nn

from medview.config import cache_dir
from medview.engine import device as devices
from medview.engine.api import (
    CancelCheck,
    CovidResult,
    Heatmap,
    LungSoundResult,
    PhotoResult,
    ProgressCallback,
    SegmentationResult,
    SliceClassificationResult,
    SlicePaintCallback,
)
from medview.engine.bundles import BundleScan, find_bundles
from medview.engine.manifest import ModelCard
from medview.engine.onnx_runtime import OnnxSessions
from medview.engine.pipelines import covid, kidney, lung_sound, segmentation, skin
from medview.engine.pipelines.context import RunContext
from medview.engine.weights import load_networks
from medview.errors import ModelError
from medview.io.audio import Recording
from medview.io.volume import Volume
from medview.tasks import ClinicalTask

if TYPE_CHECKING:
    from sklearn.ensemble import RandomForestClassifier

log = logging.getLogger(__name__)
R = TypeVar("R")


class Engine:
    """Bundles from ``model_folders`` (built-in first, then the user's), run on the preferred device.

    ``onnx_runtime``: forward-only passes of the segmentation networks on the
    CPU through ONNX Runtime, graphs cached in ``onnx_cache`` (default: the
    user's cache folder, ``onnx``); False keeps every pass on torch.
    ``compute_threads``: CPU threads of torch and ONNX Runtime (0: the measured
    default, ``device.default_compute_threads``; None: leave torch's as they
    are, as the benchmarks and tests that set them do).
    """

    def __init__(
        self,
        model_folders: Sequence[Path | str],
        device_preference: str = "auto",
        *,
        onnx_runtime: bool = True,
        onnx_cache: Path | str | None = None,
        compute_threads: int | None = None,
    ) -> None:
        if compute_threads is not None:
            devices.set_compute_threads(compute_threads)
        self.model_folders = [Path(folder) for folder in model_folders]
        self.device = devices.choose_device(device_preference)
        self.onnx = OnnxSessions(Path(onnx_cache) if onnx_cache else cache_dir() / "onnx") if onnx_runtime else None
        self._scan = BundleScan()
        self._networks: dict[tuple[str, tuple[str, ...], str], list[nn.Module]] = {}
        self._forests: dict[tuple[str, tuple[str, ...]], RandomForestClassifier] = {}
        self._lock = threading.Lock()
        self.refresh()

    # ------------------------------------------------------------------ bundles

    def refresh(self) -> BundleScan:
        """Look for bundles again (after the user imported one); returns what was found and what was refused."""
        self._scan = find_bundles(self.model_folders)
        for problem in self._scan.problems:
            log.warning("model bundle refused: %s", problem)
        # networks of bundles that were removed or replaced (other files, other checksums) are let go
        current = {card.identity for card in self._scan.cards}
        with self._lock:
            for cache in (self._networks, self._forests):
                for key in [k for k in cache if (k[0], k[1]) not in current]:
                    del cache[key]  # type: ignore[arg-type]  # both caches are keyed by (id, checksums, ...)
        if self.onnx is not None:
            self.onnx.retain(self._scan.cards)
        return self._scan

    def cards(self, task: ClinicalTask | None = None) -> list[ModelCard]:
        """Installed bundles, optionally only those of ``task``."""
        return [card for card in self._scan.cards if task is None or card.task == task]

    def problems(self) -> list[ModelError]:
        """Bundle folders that were refused, with why."""
        return list(self._scan.problems)

    def device_name(self) -> str:
        return devices.describe(self.device)

    def networks(self, card: ModelCard, device: torch.device | None = None) -> list[nn.Module]:
        """The bundle's networks on ``device``, loaded (and checksum-verified) once per device."""
        device = device or self.device
        key = (*card.identity, str(device))
        with self._lock:
            if key not in self._networks:
                self._networks[key] = load_networks(card, device)
            return self._networks[key]

    def forest(self, card: ModelCard, n_features: int) -> RandomForestClassifier:
        """The bundle's random forest (skin), loaded and checked once."""
        # scikit-learn and skops load with the first forest, not with the engine: ~2 s that no other task needs
        from medview.engine.forest import load_forest

        key = card.identity
        with self._lock:
            if key not in self._forests:
                self._forests[key] = load_forest(card, n_features)
            return self._forests[key]

    def _skin_forest(self, card: ModelCard) -> RandomForestClassifier:
        return self.forest(card, int(card.input.extra.get("n_features", 1000)))

    def prepare(self, card: ModelCard) -> None:
        """Do now what the first run of ``card`` would do before its first input: load its networks (checksums
        verified) and forest, and set up its forward passes (ONNX Runtime sessions, graphs exported if new).

        For a worker to call once an input for the model is open. Loading imports the libraries the model
        needs (torchvision, timm, scikit-learn, onnx), and an import holds the GIL while an extension module
        sets itself up (ml_dtypes for 0.65 s): done in a first run, that stalled the window 130-870 ms while
        the model ran (bench.responsiveness). Everything is cached, so a second call costs nothing.
        """

        def pipeline(context: RunContext) -> None:
            if card.task in (ClinicalTask.LIVER_SEGMENTATION, ClinicalTask.LUNG_SEGMENTATION):
                segmentation.prepare(context)
            elif card.task == ClinicalTask.COVID_CT:
                covid.prepare(context)
            elif card.task == ClinicalTask.KIDNEY_STONE:
                kidney.prepare(context)
            elif card.task == ClinicalTask.SKIN_LESION:
                self._skin_forest(card)

        self._run(card, pipeline, None, None)

    # ------------------------------------------------------------------ tasks

    def segment_liver(
        self,
        card: ModelCard,
        volume: Volume,
        *,
        on_slices: SlicePaintCallback | None = None,
        mask_out: np.ndarray | None = None,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> SegmentationResult:
        """The liver of ``volume`` by a liver_segmentation bundle; ``mask_out`` (bool, the volume's shape) receives
        the mask batch by batch and becomes the result's mask, so a caller can show it as it fills, without a copy."""
        self._expect(card, ClinicalTask.LIVER_SEGMENTATION)
        return self._run(
            card,
            lambda context: segmentation.segment(
                context, volume, structure="liver", on_slices=on_slices, mask_out=mask_out
            ),
            progress,
            cancelled,
        )

    def classify_lung_sound(
        self,
        card: ModelCard,
        recording: Recording,
        cycles: Sequence[tuple[float, float]],
        *,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> LungSoundResult:
        """Class probabilities of each breathing cycle of ``recording`` by a lung_sound bundle."""
        self._expect(card, ClinicalTask.LUNG_SOUND)
        return self._run(
            card, lambda context: lung_sound.classify_cycles(context, recording, cycles), progress, cancelled
        )

    def classify_kidney_slices(
        self,
        card: ModelCard,
        volume: Volume,
        slice_indices: Sequence[int],
        *,
        roi: np.ndarray | None = None,
        roi_source: str = "whole slice",
        explain_slices: Sequence[int] = (),
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> SliceClassificationResult:
        """Stone probability per slice (in ``roi`` when given), Grad-CAM of ``explain_slices``."""
        self._expect(card, ClinicalTask.KIDNEY_STONE)
        return self._run(
            card,
            lambda context: kidney.classify_slices(
                context, volume, slice_indices, roi=roi, roi_source=roi_source, explain_slices=explain_slices
            ),
            progress,
            cancelled,
        )

    def classify_skin(
        self,
        card: ModelCard,
        rgb: np.ndarray,
        *,
        explain: bool = True,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> PhotoResult:
        """Benign / malignant of an RGB photo (h, w, 3) by a skin_lesion bundle (CNN features + forest)."""
        self._expect(card, ClinicalTask.SKIN_LESION)
        forest = self._skin_forest(card)
        return self._run(
            card, lambda context: skin.classify_photo(context, forest, rgb, explain=explain), progress, cancelled
        )

    def explain_skin(
        self,
        card: ModelCard,
        rgb: np.ndarray,
        *,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> Heatmap:
        """The saliency map of a photo already classified with ``explain=False``."""
        self._expect(card, ClinicalTask.SKIN_LESION)
        forest = self._skin_forest(card)
        return self._run(card, lambda context: skin.photo_saliency(context, forest, rgb), progress, cancelled)

    def classify_covid(
        self,
        card: ModelCard,
        volume: Volume,
        *,
        lung_card: ModelCard | None = None,
        explain: bool = False,
        progress: ProgressCallback | None = None,
        cancelled: CancelCheck | None = None,
    ) -> CovidResult:
        """Paper 002's patient verdict for a chest CT; the lung mask from ``lung_card`` or the classical method."""
        self._expect(card, ClinicalTask.COVID_CT)
        if lung_card is not None:
            self._expect(lung_card, ClinicalTask.LUNG_SEGMENTATION)

        def pipeline(context: RunContext) -> CovidResult:
            lung_run = None
            if lung_card is not None:
                lung_run = replace(context, card=lung_card, networks=self.networks(lung_card, context.device))
            lung, source, demo_mask = covid.lung_mask(context, volume, lung_run)
            return covid.classify(context, volume, lung, source, explain=explain, demo_lung_mask=demo_mask)

        return self._run(card, pipeline, progress, cancelled)

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _expect(card: ModelCard, task: ClinicalTask) -> None:
        if card.task != task:
            raise ModelError(f"bundle {card.label} is a {card.task!r} model, expected a {str(task)!r} model")

    def _run(
        self,
        card: ModelCard,
        pipeline: Callable[[RunContext], R],
        progress: ProgressCallback | None,
        cancelled: CancelCheck | None,
    ) -> R:
        def work(device: torch.device, note: str) -> R:
            context = RunContext(
                card=card,
                networks=self.networks(card, device),
                device=device,
                device_name=devices.describe(device),
                progress=progress,
                cancelled=cancelled,
                notes=[note] if note else [],
                onnx=self.onnx,
            )
            return pipeline(context)

        return devices.run_on(self.device, work)
