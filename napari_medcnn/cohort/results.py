"""The tables of a cohort run: ``results.csv``, ``results.parquet`` and
``summary.json``, all derived from the journal's rows and written atomically
(they are rewritten whole at the end of every run or resume).

Columns, in order: the item's identity (``key``, ``path``, ``series_uid``,
``id``, ``name``, ``kind``), ``status`` and ``error``, the result (``label``,
``probability``, one ``p_<class>`` per class, domain, ``uncertainty``,
``scope``, ``n_slices``, ``top_slice``, ``warnings``, ``slice_importance``
as JSON), the explanation (``explain_method``, ``saliency_file``,
``saliency_warnings``, ``saliency_trusted`` and the deletion/insertion
AUCs against their random-order references), ``thumbnail``, the model (``model_id``,
``model_name``), timings in seconds, ``finished_at``, ``worker`` and its
peak memory in MiB, then the manifest's extra columns.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from napari_medcnn._atomic import atomic_write

__all__ = ["columns", "summary", "write_results"]

HEAD = ("key", "path", "series_uid", "id", "name", "kind", "status", "error")
RESULT = ("label", "probability")
TAIL = (
    "in_domain",
    "domain_score",
    "domain_reasons",
    "uncertainty",
    "scope",
    "n_slices",
    "top_slice",
    "modality",
    "warnings",
    "slice_importance",
    "explain_method",
    "saliency_file",
    "saliency_warnings",
    "saliency_trusted",
    "saliency_deletion_auc",
    "saliency_deletion_auc_random",
    "saliency_insertion_auc",
    "saliency_insertion_auc_random",
    "thumbnail",
    "model_id",
    "model_name",
    "t_load_s",
    "t_classify_s",
    "t_explain_s",
    "t_total_s",
    "finished_at",
    "worker",
    "worker_peak_rss_mb",
)
#: every column a cohort row has of its own (besides ``p_<class>``); any
#: other column came from the manifest
OWN_COLUMNS = frozenset((*HEAD, *RESULT, *TAIL))
FLOATS = {
    "probability",
    "domain_score",
    "uncertainty",
    "t_load_s",
    "t_classify_s",
    "t_explain_s",
    "t_total_s",
    "worker_peak_rss_mb",
    "saliency_deletion_auc",
    "saliency_deletion_auc_random",
    "saliency_insertion_auc",
    "saliency_insertion_auc_random",
}
INTS = {"n_slices", "top_slice"}
BOOLS = {"in_domain", "saliency_trusted"}


def columns(rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> list[str]:
    """The column order for ``rows`` (see module doc)."""
    known = [*HEAD, *RESULT, *(f"p_{c}" for c in classes), *TAIL]
    seen = set(known)
    extra: list[str] = []
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                extra.append(k)
    return known + extra


def _kind(col: str) -> str:
    if col in FLOATS or col.startswith("p_"):
        return "float"
    if col in INTS:
        return "int"
    if col in BOOLS:
        return "bool"
    return "str"


def _cell(value: Any, kind: str) -> Any:
    """A value of the column's type (None when missing or unparseable)."""
    if value is None or value == "":
        return None if kind != "str" else ""
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() == "true"
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def to_csv(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    """The rows as CSV text (floats as given, missing as empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        out = []
        for c in cols:
            v = _cell(row.get(c), _kind(c))
            out.append("" if v is None else v)
        writer.writerow(out)
    return buf.getvalue()


def to_parquet(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> bytes:
    """The rows as Parquet bytes with typed columns (float64, int64, bool,
    string)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_()}
    arrays = []
    fields = []
    for c in cols:
        kind = _kind(c)
        values = [_cell(r.get(c), kind) for r in rows]
        typ = types.get(kind, pa.string())
        arrays.append(pa.array(values, type=typ))
        fields.append(pa.field(c, typ))
    table = pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def summary(
    rows: Sequence[Mapping[str, Any]], *, run: Mapping[str, Any]
) -> dict[str, Any]:
    """Counts per status and class, out-of-domain and uncertain counts, plus
    ``run`` (executor, workers, timings, throughput in items/s...)."""
    status = Counter(str(r.get("status")) for r in rows)
    labels = Counter(str(r.get("label")) for r in rows if r.get("status") == "ok")
    outside = sum(1 for r in rows if r.get("in_domain") is False)
    return {
        "n_items": len(rows),
        "status": dict(sorted(status.items())),
        "labels": dict(sorted(labels.items())),
        "outside_domain": outside,
        **dict(run),
    }


def write_results(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    classes: Sequence[str],
    summary: Mapping[str, Any],
) -> dict[str, Path]:
    """Write ``results.csv``, ``results.parquet`` and ``summary.json`` (the
    given :func:`summary`) into ``out_dir``, atomically, replacing the
    previous run's; their paths by name (``csv``, ``parquet``, ``summary``)."""
    out = Path(out_dir)
    cols = columns(rows, classes)
    text = json.dumps(summary, indent=2, sort_keys=False)
    return {
        "csv": atomic_write(out / "results.csv", to_csv(rows, cols).encode()),
        "parquet": atomic_write(out / "results.parquet", to_parquet(rows, cols)),
        "summary": atomic_write(out / "summary.json", (text + "\n").encode()),
    }
