"""How the Classify widget shows a result: summary text and plots.

:class:`ResultView` fills the summary label, the probability bars and the
per-slice curve (with the slice importance of sequence models) from a
classification record (no patient data);
:func:`in_domain` and :func:`uncertainty_text` read its trust fields.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from napari_medcnn.widgets._common.plots import PlotColors
from napari_medcnn.widgets.classify.plots import ProbabilityBars, SliceCurve

SCOPE_TEXT = {
    "slice": "current slice",
    "slices": "every slice (mean)",
    "volume": "whole volume",
}


def in_domain(record: dict[str, Any]) -> bool:
    """False when the record's domain assessment says "outside"."""
    domain = record.get("domain") or {}
    return bool(domain.get("in_domain", True))


def uncertainty_text(record: dict[str, Any]) -> str:
    """ "uncertainty 0.12 (low) · novelty 0.31 / 0.40", or "" without both."""
    parts = []
    u = record.get("uncertainty")
    if u is not None and not in_domain(record):
        parts.append(f"uncertainty {u:.2f} (meaningless outside the domain)")
    elif u is not None:
        word = "low" if u < 0.3 else "moderate" if u < 0.7 else "high"
        parts.append(f"uncertainty {u:.2f} ({word}; 0 certain, 1 coin flip)")
    domain = record.get("domain") or {}
    if domain.get("score") is not None and domain.get("threshold") is not None:
        parts.append(f"novelty {domain['score']:.3f} (limit {domain['threshold']:.3f})")
    slices = record.get("slice_in_domain")
    if slices:
        parts.append(f"{sum(map(bool, slices))} of {len(slices)} slices in domain")
    return " · ".join(parts)


class ResultView:
    """Shows a classification record in a label and two canvases."""

    def __init__(
        self, summary: Any, bars: ProbabilityBars, curve: SliceCurve, colors: PlotColors
    ):
        self.summary = summary
        self.bars = bars
        self.curve = curve
        self.colors = colors
        self._record: dict[str, Any] | None = None

    def show(self, record: dict[str, Any], current: int | None = None) -> None:
        """Display ``record``; ``current`` is the slice napari shows now."""
        self._record = record
        self.summary.setText(self.summary_html(record))
        self.bars.show_result(
            record["classes"],
            record["probabilities"],
            record["index"],
            out_of_domain=not in_domain(record),
        )
        slices = record.get("slice_probabilities")
        if slices is not None and len(slices) > 0:
            self.curve.show_curve(
                np.asarray(slices, dtype=float),
                record["classes"],
                record["index"],
                record.get("slice_in_domain"),
                record.get("slice_importance"),
                record.get("slice_importance_method"),
            )
            self.curve.set_current(current)
            self.curve.setVisible(True)
        else:
            self.curve.setVisible(False)

    def set_colors(self, colors: PlotColors) -> None:
        """Follow a napari theme change."""
        self.colors = colors
        self.bars.set_colors(colors)
        self.curve.set_colors(colors)
        if self._record is not None:
            self.summary.setText(self.summary_html(self._record))

    def summary_html(self, rec: dict[str, Any]) -> str:
        """Predicted class and probability, then what was classified and how."""
        esc = html.escape
        p = rec["probabilities"][rec["index"]]
        what = SCOPE_TEXT.get(rec.get("scope"), rec.get("scope") or "")
        if rec.get("slice_index") is not None:
            what = f"slice {rec['slice_index']}"
        if rec.get("n_slices"):
            what += f", {rec['n_slices']} slices"
        pct = "n/a" if p is None else f"{100 * p:.1f} %"
        big = f"font-size:15pt; font-weight:600; color:{self.colors.accent}"
        model = esc(str(rec.get("model_name") or ""))
        took = f"{float(rec.get('elapsed_s') or 0):.2f} s"
        lines = []
        domain = rec.get("domain") or {}
        if not in_domain(rec):
            reasons = "; ".join(domain.get("reasons") or []) or "unlike training"
            lines.append(
                f'<div style="background:{self.colors.marker}; color:#000; '
                f"padding:4px; font-weight:600\">OUTSIDE THE MODEL'S DOMAIN: "
                f"do not trust this label<br>"
                f'<span style="font-weight:400">{esc(reasons)}</span></div>'
            )
            big = f"font-size:15pt; font-weight:600; color:{self.colors.muted}"
        lines += [
            f'<span style="{big}">{esc(str(rec["label"]))}</span>&nbsp;&nbsp;'
            f'<span style="font-size:12pt">{pct}</span>',
            f"{esc(str(rec.get('name') or ''))}: {esc(what)}",
        ]
        trust = uncertainty_text(rec)
        if trust:
            lines.append(esc(trust))
        lines.append(f"model {model} · {took} on {esc(str(rec.get('device')))}")
        # the banner already says why the input is outside the domain
        warnings = [
            w
            for w in rec.get("warnings") or []
            if in_domain(rec) or not w.startswith("outside the model's domain")
        ]
        if warnings:
            lines.append(
                f'<span style="color:{self.colors.marker}">'
                f"{esc('; '.join(warnings))}</span>"
            )
        return "<br>".join(lines)
