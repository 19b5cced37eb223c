"""What every AI result shows beside it: which model produced it and how, and the demo banner.

The same fields for every task (``medview.engine.api.Provenance``), so a
radiologist, pulmonologist or dermatologist reads a result's origin the same way
everywhere: model id and version, the training-data line of its manifest, its
validation metrics, the threshold, the device and the time it took.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from medview.engine.api import DEMO_BANNER, Provenance
from medview.engine.manifest import ModelCard
from medview.ui.qt import QtCore, QtWidgets

DEMO_STYLE = "background: rgba(150, 60, 0, 215); color: white; font-weight: bold; padding: 3px 10px;"
#: a warning in a result's details: white on dark orange reads on the dark screen and on printed paper alike
WARNING_STYLE = "background-color: #8a3c00; color: white; font-weight: bold;"
#: what a model chooser and a task's run button say until the AI engine has loaded (torch loads after the window)
ENGINE_LOADING = "Loading the AI engine…"


def provenance_rows(provenance: Provenance) -> list[tuple[str, str]]:
    """(field, value) pairs describing how a result was produced."""
    metrics = ", ".join(f"{name} {value:.3g}" for name, value in provenance.metrics.items()) or "none recorded"
    rows = [
        ("Model", f"{provenance.label} ({provenance.arch})"),
        ("Trained on", provenance.training_data),
        ("Validation metrics", metrics),
        ("Threshold", "default 0.5" if provenance.threshold is None else f"{provenance.threshold:g}"),
        ("Ran on", f"{provenance.device}, {provenance.seconds:.2f} s"),
    ]
    rows.extend(("Note", note) for note in provenance.notes)
    return rows


def provenance_html(provenance: Provenance) -> str:
    """The provenance as a small HTML table, with the demo warning first when the model is a demo."""
    return demo_warning_html(provenance) + provenance_table_html(provenance)


def demo_warning_html(provenance: Provenance) -> str:
    """ "Demo model: not for diagnosis." as a paragraph when the model is a demo, else nothing."""
    return f"<p style='color:#ffb347'><b>{html.escape(DEMO_BANNER.capitalize())}.</b></p>" if provenance.demo else ""


def provenance_table_html(provenance: Provenance) -> str:
    """The provenance as a small HTML table (model, training data, metrics, threshold, device, notes)."""
    body = "".join(
        f"<tr><td><b>{html.escape(name)}</b></td><td>{html.escape(value)}</td></tr>"
        for name, value in provenance_rows(provenance)
    )
    return f"<table cellspacing='2'>{body}</table>"


def validated_line(provenance: Provenance) -> str:
    """The model's validated performance in one line (``Provenance.validated``), or that none is recorded."""
    return provenance.validated or "Validated performance: not recorded"


def verdict_html(verdict: str, provenance: Provenance, warnings: Sequence[str] = ()) -> str:
    """A result's verdict with what it rests on beside it: the model's validated performance on the line
    under it, then the warnings (the series may not suit the model).

    Put first in a result's details, before any table, so a reader never sees
    the verdict without them (a report prints the same HTML).  The verdict
    comes first so that a long warning cannot push it out of a short panel.
    """
    warned = "".join(
        f"<p style='{WARNING_STYLE}'>&nbsp;⚠ {html.escape(warning)}&nbsp;</p>" for warning in warnings if warning
    )
    return f"<p><b>{html.escape(verdict)}</b><br><i>{html.escape(validated_line(provenance))}</i></p>{warned}"


class DemoBannerLabel(QtWidgets.QLabel):
    """ "Demo model: not for diagnosis", drawn on the image itself while a demo model's result is shown."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(f"⚠ {DEMO_BANNER.upper()}", parent)
        self.setObjectName("demo_banner")
        self.setStyleSheet(DEMO_STYLE)
        self.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.hide()


class ModelChooserBox(QtWidgets.QComboBox):
    """The installed bundles of one task to choose from, non-demo first; the choice survives a refresh."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumContentsLength(24)
        self.setPlaceholderText(ENGINE_LOADING)  # shown while the list is empty: until the engine lists bundles

    def set_cards(self, cards: Sequence[ModelCard]) -> None:
        """List ``cards``; keep the chosen bundle when it is still installed."""
        chosen = self.selected_card()
        ordered = sorted(cards, key=lambda card: card.is_demo)
        self.setPlaceholderText("None installed")
        self.clear()
        for card in ordered:
            self.addItem(f"{card.label}{' (demo)' if card.is_demo else ''}", card)
        labels = [card.label for card in ordered]
        if chosen is not None and chosen.label in labels:
            self.setCurrentIndex(labels.index(chosen.label))
        elif ordered:
            self.setCurrentIndex(0)  # with a placeholder text set, a combo box selects nothing by itself

    def selected_card(self) -> ModelCard | None:
        """The chosen bundle, if any is installed."""
        card = self.currentData()
        return card if isinstance(card, ModelCard) else None
