"""Texts of the Saliency widget: a map's summary and its trust checks (no Qt).

:func:`result_html` describes one map (method, target, probability, trust
metrics with their verdicts, warnings); :func:`trust_alerts` collects the
failed trust checks of a run for the warning above the metrics.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from napari_medcnn.widgets.saliency.jobs import METHOD_LABELS


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else (" ✓" if ok else " ✗")


def metrics_lines(record: dict[str, Any]) -> list[str]:
    """Plain-text lines of a saliency record's trust metrics."""
    m = record.get("metrics") or {}
    lines = []
    if m.get("deletion_auc") is not None:
        d, dr = m["deletion_auc"], m["deletion_auc_random"]
        lines.append(
            f"deletion AUC {d:.3f} vs random {dr:.3f}{_verdict(d < dr)}"
            " (lower is better)"
        )
        i, ir = m["insertion_auc"], m["insertion_auc_random"]
        lines.append(
            f"insertion AUC {i:.3f} vs random {ir:.3f}{_verdict(i > ir)}"
            " (higher is better)"
        )
    rand = m.get("randomization") or {}
    if rand.get("correlation") is not None:
        status = rand.get("status")
        if status == "inconclusive":
            lines.append(
                "randomisation check ? inconclusive (a constant map: no rank "
                "order to compare)"
            )
        else:
            lines.append(
                f"randomisation rank corr. {rand['correlation']:.2f}"
                f"{_verdict(rand.get('passed'))} (low: the map reads the "
                "trained weights)"
            )
    return lines


def trust_alerts(records: Sequence[dict[str, Any]]) -> list[str]:
    """The ``TRUST CHECK ...`` warnings of saliency records, each prefixed
    with its method's label when there are several records."""
    out = []
    for record in records:
        label = METHOD_LABELS.get(record.get("method"), record.get("method"))
        for w in record.get("warnings") or []:
            if str(w).startswith("TRUST CHECK"):
                out.append(f"{label}: {w}" if len(records) > 1 else str(w))
    return out


def result_html(record: dict[str, Any], warn_color: str) -> str:
    """One map's summary: method, target, probability, metrics, warnings."""
    esc = html.escape
    label = METHOD_LABELS.get(record.get("method"), record.get("method"))
    p = (record.get("params") or {}).get("probability")
    prob = "" if p is None else f" (p = {p:.2f})"
    where = record.get("scope") or ""
    if record.get("slice_index") is not None:
        where = f"slice {record['slice_index']}"
    head = (
        f"<b>{esc(str(label))}</b> → {esc(str(record.get('target_name')))}"
        f"{prob}, {esc(where)}"
    )
    lines = [head] + [esc(s) for s in metrics_lines(record)]
    if not record.get("metrics"):
        lines.append("trust metrics not computed")
    for w in record.get("warnings") or []:
        lines.append(f'<span style="color:{warn_color}">{esc(w)}</span>')
    return "<br>".join(lines)
