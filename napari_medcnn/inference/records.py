"""Classification records and their export to JSON and CSV (pure core, no Qt).

A *record* is the JSON-safe dict that describes one classification: what
was classified (layer or series name, series UID, the channel layers in
order, the input path for the CLI), by which model (id, name) and the outcome
(label, probabilities, per-slice probabilities).  It never carries patient
data: metadata values are copied from an allow-list (:data:`SAFE_METADATA`),
and :func:`scrub` drops any patient key that slipped in anyway, so a record
is safe to store in ``layer.metadata``, to export and to print.

The widget and the ``napari-medcnn classify`` command both build records
with :func:`classification_record` and write them with :func:`write_json`
and :func:`write_csv`.  Writes are atomic: a temporary file in the target
folder, then :func:`os.replace`, so a crash never leaves half a file; an
existing file is refused unless ``overwrite=True``.

CSV layout: one row per record, with one ``p_<class>`` column per class (the
union of all records' classes, in first-seen order); per-slice probabilities
go in the ``slice_probabilities`` column as a JSON string (a list of
per-slice lists, in the order of ``classes``), so one file holds everything;
a sequence model's ``slice_importance`` (how much each slice drove the
decision, summing to 1) likewise, as a JSON list, with its method in
``slice_importance_method``.
The domain assessment and the uncertainty have their own columns
(``uncertainty`` 0..1, ``in_domain``, ``domain_score``, ``domain_reasons``;
``slice_in_domain`` as a JSON list).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_medcnn._atomic import atomic_write_text

RECORD_VERSION = 1

#: ``layer.metadata`` keys copied into a record (none identifies a patient).
SAFE_METADATA = ("series_uid", "modality")

#: Keys that may hold patient data; never present in a record (any depth).
PHI_KEYS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patient_birth_date",
        "patient_sex",
        "patient_age",
        "patientname",
        "patientid",
        "patientbirthdate",
        "other_patient_ids",
        "source_paths",
    }
)

#: CSV columns before the per-class probability columns.
CSV_HEAD = (
    "path",
    "name",
    "series_uid",
    "modality",
    "channel_layers",
    "model_id",
    "model_name",
    "scope",
    "slice_index",
    "n_slices",
    "label",
)
#: CSV columns after the per-class probability columns.
CSV_TAIL = (
    "uncertainty",
    "in_domain",
    "domain_score",
    "domain_reasons",
    "warnings",
    "error",
    "slice_probabilities",
    "slice_in_domain",
    "slice_importance",
    "slice_importance_method",
)


def classification_record(
    result: Any,
    *,
    name: str | None = None,
    channel_layers: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
    path: str | None = None,
    channel_names: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON-safe record of one classification, without patient data.

    Args:
        result: a :class:`~napari_medcnn.inference.predict.ClassificationResult`.
        name: the layer or series name (reader names carry no PHI).
        channel_layers: names of the layers fed as channels, in channel order.
        metadata: the (first) layer's metadata; only :data:`SAFE_METADATA`
            keys are read from it.
        path: the input path as the user gave it (CLI), or None.
        channel_names: the model card's expected channels, in order.

    Returns:
        A dict: ``record_version``, ``path``, ``name``, ``series_uid``,
        ``modality``, ``channel_layers``, ``model_channels``, the result's
        own fields (``label``, ``classes``, ``probabilities``, ``scope``,
        ``slice_index``, ``model_id``, ``model_name``, ``warnings``,
        ``slice_probabilities`` when per-slice values exist,
        ``slice_importance`` and ``slice_importance_method`` when the
        classification computed them...), plus
        ``probabilities_by_class``, ``n_slices`` and ``model_file`` (the
        checkpoint's file name, not its folder).
    """
    md = metadata or {}
    rec: dict[str, Any] = {
        "record_version": RECORD_VERSION,
        "path": path,
        "name": name,
    }
    for key in SAFE_METADATA:
        rec[key] = md.get(key)
    rec["channel_layers"] = [str(n) for n in channel_layers]
    rec["model_channels"] = [str(n) for n in channel_names]
    rec.update(result.to_dict())
    for key in ("probabilities", "slice_probabilities", "slice_importance"):
        if rec.get(key) is not None:  # float32 noise off: 6 decimals
            rec[key] = _rounded(json_safe(rec[key]))
    classes = list(rec.get("classes") or [])
    probs = list(rec.get("probabilities") or [])
    rec["probabilities_by_class"] = dict(zip(classes, probs))
    slices = rec.get("slice_probabilities")
    rec["n_slices"] = len(slices) if slices is not None else None
    model_path = getattr(result, "model_path", "") or ""
    rec["model_file"] = Path(model_path).name if model_path else None
    return scrub(json_safe(rec))


def error_record(path: str | None, message: str, name: str | None = None) -> dict:
    """A record for an input that could not be classified."""
    return {
        "record_version": RECORD_VERSION,
        "path": path,
        "name": name,
        "error": str(message),
    }


def _rounded(value: Any, digits: int = 6) -> Any:
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return round(value, digits) if isinstance(value, float) else value


def scrub(value: Any) -> Any:
    """A copy of ``value`` without :data:`PHI_KEYS` keys, at any depth."""
    if isinstance(value, Mapping):
        return {
            k: scrub(v)
            for k, v in value.items()
            if str(k).lower().replace(" ", "_") not in PHI_KEYS
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON types: numpy scalars and arrays become Python
    numbers and lists, tuples lists, and NaN / infinity ``None``."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    return str(value)


# -- writing --------------------------------------------------------------------
def to_json(records: Iterable[Mapping[str, Any]]) -> str:
    """Records as a JSON list (indented, strict: no NaN)."""
    safe = [scrub(json_safe(dict(r))) for r in records]
    return json.dumps(safe, indent=2, allow_nan=False) + "\n"


def write_json(
    records: Iterable[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write records to ``path`` as a JSON list, atomically.

    An existing file is refused (``OverwriteError``) unless ``overwrite``.
    """
    return atomic_write_text(path, to_json(records), overwrite=overwrite)


def csv_columns(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The CSV header for ``records``: :data:`CSV_HEAD`, one ``p_<class>``
    column per class (first-seen order), then :data:`CSV_TAIL`."""
    classes: list[str] = []
    for rec in records:
        for c in rec.get("classes") or []:
            if c not in classes:
                classes.append(c)
    return [*CSV_HEAD, *(f"p_{c}" for c in classes), *CSV_TAIL]


def csv_row(record: Mapping[str, Any]) -> dict[str, str]:
    """One record as a CSV row (column name -> text)."""
    rec = scrub(json_safe(dict(record)))
    row: dict[str, str] = {}
    for key in CSV_HEAD:
        value = rec.get(key)
        if key == "channel_layers":
            value = "; ".join(value or [])
        row[key] = "" if value is None else str(value)
    for c, p in zip(rec.get("classes") or [], rec.get("probabilities") or []):
        row[f"p_{c}"] = "" if p is None else f"{p:.6g}"
    u = rec.get("uncertainty")
    row["uncertainty"] = "" if u is None else f"{u:.4g}"
    domain = rec.get("domain") or {}
    row["in_domain"] = "" if not domain else str(bool(domain.get("in_domain")))
    score = domain.get("score")
    row["domain_score"] = "" if score is None else f"{score:.4g}"
    row["domain_reasons"] = "; ".join(domain.get("reasons") or [])
    row["warnings"] = "; ".join(rec.get("warnings") or [])
    row["error"] = str(rec.get("error") or "")
    for key in ("slice_probabilities", "slice_in_domain", "slice_importance"):
        value = rec.get(key)
        row[key] = "" if value is None else json.dumps(value, separators=(",", ":"))
    row["slice_importance_method"] = str(rec.get("slice_importance_method") or "")
    return row


def to_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """Records as CSV text: a header and one row per record."""
    records = list(records)
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=csv_columns(records), restval="", lineterminator="\n"
    )
    writer.writeheader()
    for rec in records:
        writer.writerow(csv_row(rec))
    return buf.getvalue()


def write_csv(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write records to ``path`` as CSV (see module docstring), atomically.

    An existing file is refused (``OverwriteError``) unless ``overwrite``.
    """
    return atomic_write_text(path, to_csv(records), overwrite=overwrite)


def write_records(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write records as CSV when ``path`` ends in ``.csv``, else as JSON
    (an existing file is refused unless ``overwrite``)."""
    if str(path).lower().endswith(".csv"):
        return write_csv(records, path, overwrite=overwrite)
    return write_json(records, path, overwrite=overwrite)
