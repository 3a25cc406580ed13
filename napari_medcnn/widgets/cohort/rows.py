"""The Cohort widget's view of result rows (pure: no Qt, no napari).

A cohort row (:func:`napari_medcnn.cohort.task.process_item`) is a flat,
JSON-safe dict without patient data: ``status``, ``name`` and ``path``
(redacted), ``label``, ``probability``, one ``p_<class>`` per class,
``in_domain``, ``uncertainty``, ``top_slice``, ``saliency_file``...  Here:

* :data:`COLUMNS` and :func:`cell_text` / :func:`sort_key`: what each table
  column shows, and how it sorts (numbers as numbers, blanks last);
* :data:`FILTERS` and :func:`accepts`: the table's filters ("<positive>
  >= 0.5", "outside domain", "errors", "all");
* :func:`row_record`: a row as a classification record, stored in the
  opened layer's ``metadata["classification"]`` as the Classify widget
  stores its own;
* :func:`row_summary`, :func:`progress_text`, :func:`format_eta`: texts
  for the detail pane and the status line (names and redacted paths only).

A row of an item not yet processed is ``None`` ("pending").
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from napari_medcnn.cohort.report import positive_class, positive_probability
from napari_medcnn.inference.records import RECORD_VERSION, scrub

#: column key -> header text, in display order (``positive`` is renamed
#: after the model's positive class, see :func:`header_text`)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("status", "Status"),
    ("name", "Name"),
    ("id", "ID"),
    ("label", "Label"),
    ("positive", "P(positive)"),
    ("domain", "Domain"),
    ("uncertainty", "Uncertainty"),
)
COLUMN_KEYS = tuple(k for k, _ in COLUMNS)
#: columns that sort as numbers
NUMERIC = frozenset({"positive", "uncertainty"})
#: the positive-probability filter's threshold (0..1), as the report's
THRESHOLD = 0.5
#: filter keys, in display order
FILTERS = ("all", "positive", "outside", "errors")
PENDING = "pending"


def positive_of(classes: Sequence[str]) -> str | None:
    """The positive class: the last of a two-class model, else None (then
    the table shows the predicted class's probability)."""
    return positive_class(list(classes)) if classes else None


def header_text(key: str, positive: str | None) -> str:
    """A column's header: ``P(tumor)`` for the positive class column."""
    if key == "positive":
        return f"P({positive})" if positive else "P(label)"
    return dict(COLUMNS)[key]


def filter_text(key: str, positive: str | None) -> str:
    """A filter button's text (without its count)."""
    if key == "positive":
        return f"{positive or 'label'} ≥ {THRESHOLD:g}"
    return {"all": "All", "outside": "Outside domain", "errors": "Errors"}[key]


def status_of(row: Mapping[str, Any] | None) -> str:
    """``ok``, ``error``, ``skipped`` or ``pending`` (no row yet)."""
    return PENDING if row is None else str(row.get("status") or "")


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def display_name(row: Mapping[str, Any] | None) -> str:
    """The row's name (the reader's layer name, redacted), else the last
    part of its redacted path; "" for a pending item."""
    if row is None:
        return ""
    name = str(row.get("name") or "")
    if name:
        return name
    path = str(row.get("path") or "").rstrip("/\\")
    return os.path.basename(path) or path


#: hex digits of the item key shown when the manifest gives no ``id``
KEY_DIGITS = 8


def display_id(row: Mapping[str, Any] | None, key: str) -> str:
    """The manifest's ``id`` when it gave one, else the start of the item
    key (:data:`KEY_DIGITS` hex digits; no patient data)."""
    return str((row or {}).get("id") or key[:KEY_DIGITS])


def in_domain(row: Mapping[str, Any] | None) -> bool | None:
    """The domain assessment: True (in), False (outside), None (none)."""
    if row is None:
        return None
    value = row.get("in_domain")
    if isinstance(value, str):  # read back from a CSV
        return {"true": True, "false": False}.get(value.lower())
    return None if value is None else bool(value)


def value_of(row: Mapping[str, Any] | None, key: str, positive: str | None) -> Any:
    """The raw value of column ``key`` (numbers as floats, None if none)."""
    if key == "status":
        return status_of(row)
    if row is None:
        return None
    if key == "name":
        return display_name(row)
    if key == "label":
        return str(row.get("label") or "")
    if key == "positive":
        return _num(positive_probability(row, positive))
    if key == "domain":
        d = in_domain(row)
        return None if d is None else ("in" if d else "out")
    if key == "uncertainty":
        return _num(row.get("uncertainty"))
    return row.get(key)


def cell_text(
    row: Mapping[str, Any] | None, key: str, item_key: str, positive: str | None
) -> str:
    """What the table shows in column ``key`` (probabilities 0..1 with
    three decimals, uncertainty 0..1 with two)."""
    if key == "id":
        return display_id(row, item_key)
    value = value_of(row, key, positive)
    if value is None:
        return ""
    if key == "positive":
        return f"{value:.3f}"
    if key == "uncertainty":
        return f"{value:.2f}"
    return str(value)


def sort_key(
    row: Mapping[str, Any] | None, key: str, item_key: str, positive: str | None
) -> tuple:
    """A key that sorts column ``key``: numbers by value, text without
    case; blanks after every value (ascending)."""
    if key == "id":
        return (0, display_id(row, item_key).lower())
    value = value_of(row, key, positive)
    if value is None or value == "":
        return (1, 0.0 if key in NUMERIC else "")
    if key in NUMERIC:
        return (0, float(value))
    return (0, str(value).lower())


def accepts(row: Mapping[str, Any] | None, which: str, positive: str | None) -> bool:
    """Whether filter ``which`` shows the row: ``all``; ``positive`` (an
    ``ok`` row whose positive probability is >= :data:`THRESHOLD`);
    ``outside`` (outside the model's domain); ``errors`` (``error``)."""
    if which == "all":
        return True
    if row is None:
        return False
    if which == "positive":
        p = value_of(row, "positive", positive)
        return status_of(row) == "ok" and p is not None and p >= THRESHOLD
    if which == "outside":
        return in_domain(row) is False
    if which == "errors":
        return status_of(row) == "error"
    raise ValueError(f"unknown filter {which!r}; use one of {', '.join(FILTERS)}")


def count(rows: Sequence[Mapping[str, Any] | None], positive: str | None) -> dict:
    """Filter key -> how many of ``rows`` it shows."""
    return {f: sum(accepts(r, f, positive) for r in rows) for f in FILTERS}


def classes_of(row: Mapping[str, Any], known: Sequence[str] = ()) -> list[str]:
    """The classes of a row: ``known`` (the model card's) when the row has
    their ``p_<class>`` columns, else its ``p_`` columns in order."""
    if known and all(f"p_{c}" in row for c in known):
        return list(known)
    return [k[2:] for k in row if k.startswith("p_")]


def row_record(row: Mapping[str, Any], classes: Sequence[str] = ()) -> dict:
    """The row as a classification record (the shape of
    :func:`napari_medcnn.inference.records.classification_record`, with
    ``source: "cohort"``, ``key`` and ``top_slice``), for the opened
    layer's ``metadata["classification"]``; no patient data."""
    names = classes_of(row, classes)
    probs = [_num(row.get(f"p_{c}")) for c in names]
    label = str(row.get("label") or "")
    index = names.index(label) if label in names else None
    reasons = [r for r in str(row.get("domain_reasons") or "").split("; ") if r]
    d = in_domain(row)
    domain = None
    if d is not None:
        domain = {
            "in_domain": d,
            "score": _num(row.get("domain_score")),
            "reasons": reasons,
        }
    warnings = [w for w in str(row.get("warnings") or "").split("; ") if w]
    rec: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "source": "cohort",
        "key": row.get("key"),
        "path": row.get("path"),
        "name": row.get("name"),
        "series_uid": row.get("series_uid") or None,
        "modality": row.get("modality") or None,
        "label": label,
        "index": index,
        "classes": names,
        "probabilities": probs,
        "probabilities_by_class": dict(zip(names, probs)),
        "scope": row.get("scope") or None,
        "n_slices": row.get("n_slices"),
        "top_slice": row.get("top_slice"),
        "model_id": row.get("model_id") or None,
        "model_name": row.get("model_name") or None,
        "domain": domain,
        "uncertainty": _num(row.get("uncertainty")),
        "warnings": warnings,
        "explain_method": row.get("explain_method") or None,
        "saliency_file": row.get("saliency_file") or None,
    }
    return scrub(rec)


def row_summary(row: Mapping[str, Any] | None, positive: str | None) -> str:
    """Plain text about one row for the detail pane: the label and its
    probability, the domain and uncertainty, or the error's reason."""
    if row is None:
        return "Not processed yet."
    status = status_of(row)
    name = display_name(row)
    if status != "ok":
        return f"{name}: {status}. {row.get('error') or ''}".strip()
    p = _num(row.get("probability"))
    lines = [f"{name}: {row.get('label')}" + ("" if p is None else f" ({p:.3f})")]
    pos = value_of(row, "positive", positive)
    if positive and pos is not None:
        lines.append(f"P({positive}) = {pos:.3f}")
    d = in_domain(row)
    if d is False:
        why = row.get("domain_reasons") or "unlike the training data"
        lines.append(f"OUTSIDE the model's domain: do not trust the label ({why})")
    elif d:
        lines.append("inside the model's domain")
    u = _num(row.get("uncertainty"))
    if u is not None:
        lines.append(f"uncertainty {u:.2f} (0 certain, 1 coin flip)")
    if row.get("top_slice") is not None:
        lines.append(f"most telling slice: {row['top_slice']}")
    if row.get("saliency_file"):
        method = row.get("explain_method") or "map"
        trusted = row.get("saliency_trusted")
        if trusted is True:
            method += " (beats a random order: trusted)"
        elif trusted is False:
            method += " (no better than a random order: do not rely on it)"
        lines.append(f"saliency: {method}")
    if row.get("warnings"):
        lines.append(f"warnings: {row['warnings']}")
    lines.append(str(row.get("path") or ""))
    lines.append(f"key {row.get('key')}")
    return "\n".join(line for line in lines if line)


def format_eta(seconds: float | None) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a number of seconds; "" when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return ""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_text(done: int, total: int, eta_s: float | None, errors: int) -> str:
    """``Running: 3 / 6 done · ETA 0:04 · 1 error``."""
    text = f"Running: {done} / {total} done"
    eta = format_eta(eta_s)
    if eta and done < total:
        text += f" · ETA {eta}"
    if errors:
        text += f" · {errors} error{'s' if errors != 1 else ''}"
    return text
