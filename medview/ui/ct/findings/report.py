"""The CT workspace's part of the case report: the open series, each AI finding with a key image.

A key image is the axial slice that shows the finding best, drawn by a
``SliceView`` of its own, off screen, with the finding's overlays as the user
set them: the user's views, slice and overlays are never touched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np

from medview.engine.api import CovidResult, Provenance, SegmentationResult, SliceClassificationResult
from medview.io.volume import Volume
from medview.ui.ct.findings.base import Finding
from medview.ui.ct.layers import HeatmapLayer, Layer, LayerStack
from medview.ui.ct.mpr_view import BANNER_TOP
from medview.ui.ct.slice_view import SliceView
from medview.ui.provenance import DemoBannerLabel, provenance_rows
from medview.ui.qt import QtCore
from medview.ui.report.identifiers import anonymised_volume
from medview.ui.report.sections import FindingSection, KeyImage, SeriesSection

KEY_IMAGE_SIDE = 520  # px of the off-screen view a key image is grabbed from


def series_section(
    volume: Volume,
    findings_of_series: Sequence[Finding],
    layers: LayerStack,
    current: int,
    display_window: tuple[float, float],
    *,
    anonymise: bool,
) -> SeriesSection:
    """The series ``volume`` with its findings, each with its key image; without findings, the slice on screen
    (``current``) with the overlays shown, in ``display_window`` (centre, width) as on screen."""
    shown = anonymised_volume(volume, anonymise)
    current = int(np.clip(current, 0, volume.shape[0] - 1))
    findings = []
    for finding in findings_of_series:
        index, reason = key_slice(finding, current)
        image = render_key_image(shown, index, display_window, finding.layers, reason)
        provenance = finding.provenance
        findings.append(
            FindingSection(
                kind=finding.kind,
                title=finding.title,
                summary_html=finding.summary_html,  # the every-slice tables are in more_html: not printed
                provenance=tuple(provenance_rows(provenance)),
                model=provenance.label,
                demo=_is_demo(provenance, finding.layers),
                key_image=image,
            )
        )
    on_screen = None
    if not findings:
        visible = [layer for layer in layers.layers if layer.visible]
        on_screen = render_key_image(shown, current, display_window, visible, "the slice on screen")
    z, y, x = volume.shape
    spacing = " x ".join(f"{value:.2f}" for value in volume.spacing)
    details = (
        ("Modality", volume.modality or "—"),
        ("Size", f"{z} slices of {x} x {y} pixels"),
        ("Voxel spacing", f"{spacing} mm (z, y, x)"),
    )
    return SeriesSection(volume.description or "CT series", details, tuple(findings), on_screen)


def _is_demo(provenance: Provenance, layers: Iterable[Layer]) -> bool:
    # a COVID finding is a demo one when its lung U-Net was, which only its layers record
    return provenance.demo or any(layer.demo for layer in layers)


def key_slice(finding: Finding, current: int) -> tuple[int, str]:
    """The axial slice that shows ``finding`` best, and why: its largest mask, most probable or most
    explained slice; the slice on screen when the result names none."""
    result = finding.result
    if isinstance(result, SegmentationResult) and result.mask.any():
        index = int(np.argmax(result.mask.sum(axis=(1, 2))))
        return index, f"largest {result.label_name or finding.kind} cross-section"
    if isinstance(result, SliceClassificationResult) and len(result.slice_indices):
        probabilities = dict(zip(result.slice_indices, (float(p) for p in result.probabilities), strict=True))
        explained = set(getattr(finding, "heatmaps", {}) or result.heatmaps)
        positives = result.positive_slices()
        candidates = [i for i in positives if i in explained] or positives or sorted(explained)
        if candidates:
            index = max(candidates, key=probabilities.__getitem__)
            return index, f"{result.positive_class} probability {probabilities[index]:.2f}"
    if isinstance(result, CovidResult) and result.kept_slices:
        kept = list(result.kept_slices)
        layer = finding.heatmap_layer
        if layer is not None and result.heatmaps:
            mapped = [i for i in kept if i in result.heatmaps]
            if mapped:
                index = max(mapped, key=lambda i: float(np.sum(layer.values[i], dtype=np.float32)))
                return index, "widest Grad-CAM inside the lungs"
        index = max(kept, key=lambda i: int(result.lung_mask[i].sum()))
        return index, "largest lung area"
    return current, "the slice on screen"


def render_key_image(
    volume: Volume, index: int, window: tuple[float, float], layers: Sequence[Layer], reason: str
) -> KeyImage:
    """Axial slice ``index`` drawn by a ``SliceView`` of its own, off screen, with ``layers`` over it as they
    are set on screen (a finding whose overlays are all hidden is drawn with them shown, and says so)."""
    drawn = [layer for layer in layers if layer.visible]
    forced = not drawn and bool(layers)
    if forced:
        drawn = [replace(layer, visible=True) for layer in layers if not isinstance(layer, HeatmapLayer)] or [
            replace(layers[0], visible=True)
        ]
    stack = LayerStack()
    view = SliceView("axial", stack)
    view.setAttribute(QtCore.Qt.WidgetAttribute.WA_DontShowOnScreen)
    view.resize(KEY_IMAGE_SIDE, KEY_IMAGE_SIDE)
    view.show()
    try:
        view.set_volume(volume, window)
        view.set_index(index)
        stack.add(*drawn)
        if any(layer.demo for layer in drawn):
            banner = DemoBannerLabel(view)
            banner.adjustSize()
            banner.move((view.width() - banner.width()) // 2, BANNER_TOP)
            banner.show()
        view.reset_view()
        image = view.grab().toImage()
    finally:
        view.close()
        view.deleteLater()
    overlays = ", ".join(layer.name for layer in drawn) or "none"
    hidden = " (hidden on screen, drawn here)" if forced else ""
    center, width = window
    caption = (
        f"Axial slice {index + 1} of {volume.shape[0]} ({reason}); window W {width:.0f} L {center:.0f}; "
        f"overlays: {overlays}{hidden}"
    )
    return KeyImage(image, caption)
