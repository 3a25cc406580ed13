"""The self-contained ``report.html`` of a cohort run (pure core, no Qt).

One HTML file that opens offline in any browser, for a finished or a
partial run:

* a header: the model, the run's date, counts per status and per class,
  how many items fell outside the model's domain or were uncertain, and
  the throughput when the run's summary gives it;
* a gallery of the ``top_n`` items with the highest probability of the
  positive class, each with its thumbnail (the saliency overlay already
  composited when the item was explained) and a trust note when the
  saliency check warned;
* a sortable, filterable table of every row (plain JavaScript: click a
  header to sort, buttons for "<positive> >= 0.5", "outside domain",
  "high uncertainty" and "failed", a search box);
* the failures (``error`` and ``skipped`` rows) with their reasons;
* a "not for diagnostic use" note.

Nothing is fetched: the CSS and the script are inline, thumbnails are
embedded as ``data:`` URIs, and a Content-Security-Policy forbids any other
source.  Patient data never reaches the file unless ``include_phi``: every
row goes through :func:`~napari_medcnn.inference.records.scrub`, columns
whose names look like patient data (:func:`is_phi_column`) are dropped, and
every text is HTML-escaped, so a path or manifest value cannot add markup.

The table's initial order, sort and filter can be set in the URL's
fragment, e.g. ``report.html#sort=name&dir=asc&filter=outside&q=case``;
the script keeps the fragment in step with the page and marks the page
``data-ready="true"`` once it has run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from napari_medcnn import __version__
from napari_medcnn._atomic import atomic_write_text
from napari_medcnn.cohort.results import OWN_COLUMNS
from napari_medcnn.inference.records import json_safe, scrub

__all__ = [
    "HIGH_UNCERTAINTY",
    "REPORT_NAME",
    "is_phi_column",
    "positive_class",
    "positive_probability",
    "render_report",
    "safe_rows",
    "thumbnail_data_uri",
    "top_items",
    "write_report",
]

REPORT_NAME = "report.html"
#: uncertainty (0..1, normalised entropy) at or above which a row is flagged;
#: the Classify widget calls it "high" from the same value.
HIGH_UNCERTAINTY = 0.7
#: the positive-probability filter's threshold
POSITIVE_THRESHOLD = 0.5
#: longest side of an embedded thumbnail, in pixels (keeps the file small)
THUMBNAIL_PX = 320

#: column names that may hold patient data (matched after lower-casing and
#: dropping everything but letters and digits): names, IDs, birth dates,
#: record and accession numbers.
_PHI_COLUMN = re.compile(
    r"patient|birth|^dob$|dateofbirth|^mrn$|medicalrecord|^ssn$|socialsecurity"
    r"|accession|^(first|last|given|family|sur|full|maiden)names?$|^initials$"
)


# -- pure helpers ------------------------------------------------------------------
def is_phi_column(name: str) -> bool:
    """True when a column named ``name`` may hold patient data
    (``PatientID``, ``patient-name``, ``Birth Date``, ``DOB``, ``MRN``...)."""
    return bool(_PHI_COLUMN.search(re.sub(r"[^a-z0-9]", "", str(name).lower())))


def safe_rows(
    rows: Iterable[Mapping[str, Any]], *, include_phi: bool = False
) -> list[dict[str, Any]]:
    """Rows as plain JSON types, without patient data unless ``include_phi``:
    :func:`~napari_medcnn.inference.records.scrub` (any depth), then every
    top-level column for which :func:`is_phi_column` holds is dropped."""
    out = [json_safe(dict(r)) for r in rows]
    if include_phi:
        return out
    return [{k: v for k, v in scrub(r).items() if not is_phi_column(k)} for r in out]


def positive_class(classes: Sequence[str], positive: str | None = None) -> str | None:
    """The class whose probability ranks the gallery: ``positive`` when
    given (it must be one of ``classes``), else the second of two classes,
    else None (rank by the predicted class's probability)."""
    if positive is not None:
        if positive not in classes:
            raise ValueError(f"positive class {positive!r} is not one of {classes}")
        return positive
    return classes[-1] if len(classes) == 2 else None


def positive_probability(row: Mapping[str, Any], positive: str | None) -> float | None:
    """The row's probability (0..1) of ``positive`` (its ``p_<positive>``
    column; the ``probability`` column when ``positive`` is None or the
    column is missing and ``label`` is ``positive``), or None."""
    if positive is None:
        return _num(row.get("probability"))
    p = _num(row.get(f"p_{positive}"))
    if p is None and row.get("label") == positive:
        p = _num(row.get("probability"))
    return p


def top_items(
    rows: Iterable[Mapping[str, Any]],
    classes: Sequence[str],
    *,
    positive: str | None = None,
    n: int = 12,
) -> list[Mapping[str, Any]]:
    """The ``n`` ``ok`` rows with the highest :func:`positive_probability`,
    highest first (ties by name, then key); rows without one are left out."""
    pos = positive_class(classes, positive)
    scored = [
        (p, r)
        for r in rows
        if _status(r) == "ok" and (p := positive_probability(r, pos)) is not None
    ]
    scored.sort(
        key=lambda t: (-t[0], str(t[1].get("name") or ""), str(t[1].get("key")))
    )
    return [r for _p, r in scored[: max(int(n), 0)]]


def thumbnail_data_uri(
    out_dir: str | os.PathLike, rel: str | None, max_px: int = THUMBNAIL_PX
) -> str | None:
    """``out_dir/rel`` as a ``data:image/png;base64,...`` URI, its longest
    side at most ``max_px`` pixels; None when ``rel`` is empty, points
    outside ``out_dir``, or is missing or not a readable image."""
    if not rel:
        return None
    from PIL import Image

    root = Path(out_dir).resolve()
    path = (root / str(rel)).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            im.thumbnail((max_px, max_px))
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=True)
    except Exception:  # any decoder failure: shown as "no thumbnail"
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _num(value: Any) -> float | None:
    """A finite float from a number or numeric text, else None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


_TRUTH = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_STATUS_ORDER = {"ok": 0, "error": 1, "skipped": 2}
_DOMAIN_CHIP = {
    True: '<span class="chip ok">in domain</span>',
    False: '<span class="chip out">outside domain</span>',
}


def _in_domain(row: Mapping[str, Any]) -> bool | None:
    v = row.get("in_domain")
    if isinstance(v, str):  # a row read back from CSV
        v = _TRUTH.get(v.strip().lower())
    return None if v is None else bool(v)


def _status(row: Mapping[str, Any]) -> str:
    status = str(row.get("status") or "").strip().lower()
    return status or ("error" if row.get("error") else "ok")


def _desc(p: float | None) -> float:
    """Sort key: highest probability first, None (failures) last."""
    return math.inf if p is None else -p


def _text(value: Any) -> str:
    """Display text: '' for None, compact JSON for lists and dicts."""
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


def _pct(p: float) -> str:
    """A bar's CSS width for a fraction (clamped to 0..100 %)."""
    return f"{100 * min(max(p, 0.0), 1.0):.1f}%"


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _seconds(s: float | None) -> str:
    """'0.42 s', '3 min 12 s', '2 h 05 min'."""
    if s is None:
        return ""
    if s < 60:
        return f"{s:.2f} s" if s < 10 else f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _when(value: Any) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM (UTC)', or the text as given."""
    if not value:
        return ""
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if t.tzinfo is not None:
        return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return t.strftime("%Y-%m-%d %H:%M")


# -- rendering ---------------------------------------------------------------------
def render_report(
    rows: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    classes: Sequence[str],
    positive: str | None = None,
    top_n: int = 12,
    title: str = "Cohort report",
    model: Mapping[str, Any] | str | None = None,
    summary: Mapping[str, Any] | None = None,
    include_phi: bool = False,
) -> str:
    """The report's HTML text (see :func:`write_report`); reads only the
    thumbnails of the gallery's rows from ``out_dir``."""
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError("a report needs the model's classes")
    pos = positive_class(classes, positive)
    rows = safe_rows(rows, include_phi=include_phi)
    summary = safe_rows([summary or {}], include_phi=include_phi)[0]
    if isinstance(model, Mapping):
        model = safe_rows([model], include_phi=include_phi)[0]
    # failures sink to the end: they have no probability
    rows.sort(key=lambda r: _desc(positive_probability(r, pos)))
    top = top_items(rows, classes, positive=pos, n=top_n)
    extras = _extra_columns(rows)
    parts = [
        _head(title),
        _header(rows, classes, title, model, summary, include_phi),
        _gallery(top, out_dir, pos),
        _table(rows, classes, pos, extras),
        _failures(rows),
        _FOOTER.format(version=_e(__version__)),
        f"<script>\n{_asset('report.js')}</script>\n</body>\n</html>\n",
    ]
    return "\n".join(parts)


def write_report(
    rows: Iterable[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    *,
    classes: Sequence[str],
    positive: str | None = None,
    top_n: int = 12,
    title: str = "Cohort report",
    model: Mapping[str, Any] | str | None = None,
    summary: Mapping[str, Any] | None = None,
    include_phi: bool = False,
) -> Path:
    """Write ``out_dir/report.html`` for a finished or partial cohort run.

    Args:
        rows: one JSON-safe dict per item (the cohort's result rows: ``key``,
            ``path``, ``name``, ``status``, ``error``, ``label``,
            ``probability``, ``p_<class>``, ``in_domain``, ``domain_score``,
            ``domain_reasons``, ``uncertainty`` (0..1), ``scope``,
            ``n_slices``, ``explain_method``, ``saliency_file``,
            ``saliency_warnings``, ``thumbnail``, ``model_id``,
            ``model_name``, ``t_total_s`` (s), ``finished_at`` (ISO);
            any may be missing, other columns are shown as manifest columns).
        out_dir: the run's output folder (created if missing); a row's
            ``thumbnail`` is a PNG path relative to it, embedded in the
            report (a missing or unreadable one shows "no thumbnail").
        classes: the model's classes, in order (one ``p_<class>`` column
            each).
        positive: the class whose probability ranks the gallery and drives
            the "<positive> >= 0.5" filter; default: the second of two
            classes, else the predicted class's probability.
        top_n: how many items the gallery shows.
        title: the report's title.
        model: the model card (``name``, ``id``) or its name; default: the
            most common ``model_name`` / ``model_id`` of the rows.
        summary: the run's summary; read: ``items_per_s`` (or
            ``throughput``), ``elapsed_s`` (or ``wall_s``), ``executor``,
            ``workers``, ``started_at``, ``finished_at`` (ISO), and for a
            partial run ``total`` (items in the run), ``complete`` (False)
            or ``cancelled`` (True); other keys are ignored.
        include_phi: keep patient-data columns (the user opted in); the
            report then says so in red.

    Returns:
        The path of ``report.html``, written atomically (a temporary file,
        then :func:`os.replace`; an earlier report is replaced).
    """
    out = Path(out_dir)
    text = render_report(
        rows,
        out,
        classes=classes,
        positive=positive,
        top_n=top_n,
        title=title,
        model=model,
        summary=summary,
        include_phi=include_phi,
    )
    out.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out / REPORT_NAME, text, overwrite=True)


def _extra_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Columns the report does not lay out itself, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            if k not in OWN_COLUMNS and not k.startswith("p_") and k not in seen:
                seen[k] = None
    return list(seen)


def _head(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src '
        "'none'; img-src data:; style-src 'unsafe-inline'; script-src "
        '\'unsafe-inline\'">\n<meta name="referrer" content="no-referrer">\n'
        '<meta name="robots" content="noindex">\n<meta name="viewport" '
        'content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>\n{_asset('report.css')}</style>\n</head>\n<body>"
    )


def _header(rows, classes, title, model, summary, include_phi) -> str:
    if isinstance(model, Mapping):
        name, mid = model.get("name"), model.get("id") or model.get("model_id")
    else:
        name, mid = model, None
    name = name or _most_common(rows, "model_name")
    mid = mid or _most_common(rows, "model_id")
    last = max(
        (str(r["finished_at"]) for r in rows if r.get("finished_at")), default=""
    )
    now = datetime.now(UTC).isoformat(timespec="seconds")
    status = Counter(_status(r) for r in rows)
    labels = Counter(
        str(r["label"]) for r in rows if _status(r) == "ok" and r.get("label")
    )
    ok = status.get("ok", 0)
    outside = sum(_in_domain(r) is False for r in rows if _status(r) == "ok")
    uncertain = sum(
        (_num(r.get("uncertainty")) or 0) >= HIGH_UNCERTAINTY
        for r in rows
        if _status(r) == "ok"
    )
    sub = [f"Model <b>{_e(name or 'unknown')}</b>"]
    if mid:
        sub.append(f"<code>{_e(mid)}</code>")
    if summary.get("finished_at"):
        sub.append(f"run finished {_e(_when(summary['finished_at']))}")
    elif last:
        sub.append(f"last item {_e(_when(last))}")
    sub.append(f"report {_e(_when(now))}")
    phi = (
        '<div class="phi">This report includes patient data (the run opted in '
        "with include_phi): handle it as protected health information.</div>"
        if include_phi
        else ""
    )
    total = _num(summary.get("total"))
    partial = ""
    if total is not None and total > len(rows):
        partial = f"partial run: {len(rows)} of {total:.0f} items"
    elif summary.get("complete") is False:
        partial = f"partial run: {len(rows)} items so far"
    if summary.get("cancelled"):
        partial = f"cancelled; {partial}" if partial else "cancelled"
    if partial:
        partial = f'<span class="chip warn">{_e(partial)}</span>'
    status_lines = "".join(
        f'<li><span class="dot {_e(s)}"></span>{_e(s)}<b>{n}</b></li>'
        for s, n in sorted(status.items(), key=lambda t: _STATUS_ORDER.get(t[0], 3))
    )
    class_order = classes + sorted(c for c in labels if c not in classes)
    class_lines = "".join(
        f'<li><span class="cname">{_e(c)}</span><span class="bar">'
        f'<span style="width:{_pct(labels.get(c, 0) / max(ok, 1))}">'
        f"</span></span><b>{labels.get(c, 0)}</b></li>"
        for c in class_order
    )
    speed = _num(summary.get("items_per_s", summary.get("throughput")))
    elapsed = _num(summary.get("elapsed_s", summary.get("wall_s")))
    run_lines = []
    if speed is not None:
        run_lines.append(f"<li>throughput<b>{speed:.2f} items/s</b></li>")
    if elapsed is not None:
        run_lines.append(f"<li>elapsed<b>{_e(_seconds(elapsed))}</b></li>")
    if summary.get("executor"):
        workers = summary.get("workers")
        w = f" × {_e(workers)}" if workers not in (None, "") else ""
        run_lines.append(f"<li>executor<b>{_e(summary['executor'])}{w}</b></li>")
    if summary.get("started_at"):
        run_lines.append(f"<li>started<b>{_e(_when(summary['started_at']))}</b></li>")
    times = [t for r in rows if (t := _num(r.get("t_total_s"))) is not None]
    if times:
        mean = sum(times) / len(times)
        run_lines.append(f"<li>per item (mean)<b>{_e(_seconds(mean))}</b></li>")
    run_card = (
        f'<div class="stat"><h3>Run</h3><ul>{"".join(run_lines)}</ul></div>'
        if run_lines
        else ""
    )
    return f"""<header class="top"><div class="wrap">
<div class="brand">napari-medcnn · cohort report</div>
<h1>{_e(title)}</h1>
<div class="sub">{" · ".join(sub)} {partial}</div>
</div></header>
<div class="wrap">
<div class="notice"><b>Research use only: not for diagnostic use.</b> The
probabilities come from a machine-learning model; items outside its domain
or with high uncertainty are flagged, and no result replaces a
radiologist's reading.</div>
{phi}
<section class="stats">
<div class="stat big"><h3>Items</h3><div class="num">{len(rows)}</div>
<ul>{status_lines}</ul></div>
<div class="stat"><h3>Predicted class <small>(ok items)</small></h3>
<ul class="classes">{class_lines}</ul></div>
<div class="stat"><h3>Trust</h3><ul>
<li><span class="dot out"></span>outside domain<b>{outside}</b></li>
<li><span class="dot unc"></span>uncertainty ≥ {HIGH_UNCERTAINTY:g}<b>{uncertain}</b>
</li></ul></div>
{run_card}
</section>"""


def _most_common(rows: Sequence[Mapping[str, Any]], key: str) -> str | None:
    values = Counter(str(r[key]) for r in rows if r.get(key))
    return values.most_common(1)[0][0] if values else None


def _gallery(top, out_dir, pos) -> str:
    what = f"P({_e(pos)})" if pos else "the predicted class's probability"
    head = (
        f'<section id="gallery"><h2>Top {len(top)} by {what}</h2>'
        '<p class="hint">The items to look at first: each with its most telling '
        "slice, and the saliency overlay where the item was explained.</p>"
    )
    if not top:
        return head + '<p class="empty">No classified item yet.</p></section>'
    cards = []
    for rank, r in enumerate(top, 1):
        p = positive_probability(r, pos) or 0.0
        uri = thumbnail_data_uri(out_dir, r.get("thumbnail"))
        alt = f"thumbnail of {_text(r.get('name') or r.get('path'))}"
        img = (
            f'<img src="{uri}" alt="{_e(alt)}">'
            if uri
            else '<div class="nothumb">no thumbnail</div>'
        )
        dom = _in_domain(r)
        u = _num(r.get("uncertainty"))
        chips = []
        if dom is not None:
            chips.append(_DOMAIN_CHIP[dom])
        if u is not None:
            cls = "unc" if u >= HIGH_UNCERTAINTY else "plain"
            chips.append(f'<span class="chip {cls}">uncertainty {u:.2f}</span>')
        if r.get("explain_method"):
            chips.append(f'<span class="chip plain">{_e(r["explain_method"])}</span>')
        notes = []
        if dom is False:
            reason = _e(r.get("domain_reasons")) or "outside the model's domain"
            notes.append(f'<p class="note out">Outside domain: {reason}</p>')
        if r.get("saliency_warnings"):
            notes.append(
                '<p class="note trust">Saliency trust check: '
                f"{_e(r['saliency_warnings'])}</p>"
            )
        flag = " out" if dom is False else ""
        cards.append(
            f'<figure class="card{flag}" data-key="{_e(r.get("key"))}">'
            f'<div class="thumb">{img}<span class="rank">#{rank}</span></div>'
            f'<figcaption><div class="cname" title="{_e(r.get("path"))}">'
            f"{_e(r.get('name') or r.get('path') or r.get('key'))}</div>"
            f'<div class="prob"><span class="pbar"><span style="width:{_pct(p)}">'
            f"</span></span><b>{p:.3f}</b></div>"
            f'<div class="label">label <b>{_e(r.get("label"))}</b>'
            f"{' · id ' + _e(r['id']) if r.get('id') else ''}</div>"
            f'<div class="chips">{"".join(chips)}</div>{"".join(notes)}'
            "</figcaption></figure>"
        )
    return head + f'<div class="gallery">{"".join(cards)}</div></section>'


def _table(rows, classes, pos, extras) -> str:
    # (key in the URL fragment, header text, sort type)
    cols: list[tuple[str, str, str]] = [
        ("status", "status", "text"),
        ("name", "name / path", "text"),
        ("id", "id", "text"),
        ("label", "label", "text"),
        ("probability", "P(label)", "num"),
        *((f"p_{c}", f"P({c})", "num") for c in classes),
        ("domain", "domain", "text"),
        ("domain_score", "novelty", "num"),
        ("uncertainty", "uncertainty", "num"),
        ("scope", "scope", "text"),
        ("explain", "explained", "text"),
        ("t_total_s", "time (s)", "num"),
        *((f"x:{x}", x, "text") for x in extras),
    ]
    sorted_on = f"p_{pos}" if pos else "probability"
    desc = ' aria-sort="descending"'
    heads = "".join(
        f'<th data-key="{_e(k)}" data-type="{t}"{desc if k == sorted_on else ""}>'
        f'<button type="button">{_e(h)}</button></th>'
        for k, h, t in cols
    )
    body = "\n".join(_table_row(r, classes, pos, extras) for r in rows)
    buttons = [("all", "All")]
    if pos:
        buttons.append(("positive", f"{pos} ≥ {POSITIVE_THRESHOLD:g}"))
    buttons += [
        ("outside", "Outside domain"),
        ("uncertain", "High uncertainty"),
        ("failed", "Errors & skipped"),
    ]
    btns = "".join(
        f'<button type="button" data-filter="{k}"'
        f' aria-pressed="{"true" if k == "all" else "false"}">{_e(t)}</button>'
        for k, t in buttons
    )
    return f"""<section id="table"><h2>All items</h2>
<div class="toolbar"><div class="filters" role="group" aria-label="filter">{btns}</div>
<input type="search" id="q" placeholder="Search name, path, id, label…"
 aria-label="search"><span id="count">{len(rows)} of {len(rows)} items</span></div>
<div class="scroll"><table id="results" data-threshold="{POSITIVE_THRESHOLD}"
 data-sorted="{_e(sorted_on)}"><thead><tr>{heads}</tr></thead>
<tbody>
{body}
</tbody></table></div></section>"""


def _cell(text: str, value: Any = None, cls: str = "", title: str = "") -> str:
    attrs = f' data-v="{_e(value)}"' if value is not None else ""
    attrs += f' class="{cls}"' if cls else ""
    attrs += f' title="{_e(title)}"' if title else ""
    return f"<td{attrs}>{text}</td>"


def _pcell(p: float | None, strong: bool = False) -> str:
    """A probability cell: the value and a small bar (width = p)."""
    if p is None:
        return _cell("", "")
    bar = f'<span class="mini"><span style="width:{_pct(p)}"></span></span>'
    return _cell(f"{p:.3f}{bar}", repr(p), "p strong" if strong else "p")


def _table_row(r, classes, pos, extras) -> str:
    status = _status(r)
    dom = _in_domain(r)
    u = _num(r.get("uncertainty"))
    flags = []
    if status != "ok":
        flags.append("fail")
    if dom is False:
        flags.append("out")
    if u is not None and u >= HIGH_UNCERTAINTY:
        flags.append("unc")
    pp = positive_probability(r, pos) if status == "ok" else None
    name = r.get("name") or Path(str(r.get("path") or "")).name or r.get("key")
    kind = f'<span class="kind">{_e(r["kind"])}</span>' if r.get("kind") else ""
    err = f'<div class="err">{_e(r["error"])}</div>' if r.get("error") else ""
    uid = f"series {_text(r.get('series_uid'))} · " if r.get("series_uid") else ""
    cells = [
        _cell(f'<span class="chip {_e(status)}">{_e(status)}</span>', status),
        _cell(
            f'<div class="nm">{_e(name)}{kind}</div>'
            f'<div class="path">{_e(r.get("path"))}</div>{err}',
            _text(name),
            "namecell",
            f"{uid}key {_text(r.get('key'))}",
        ),
        _cell(_e(r.get("id")), _text(r.get("id"))),
        _cell(_e(r.get("label")), _text(r.get("label"))),
        _pcell(_num(r.get("probability"))),
        *(_pcell(_num(r.get(f"p_{c}")), c == pos) for c in classes),
    ]
    word = {True: "in", False: "out", None: ""}[dom]
    reasons = _e(r.get("domain_reasons"))
    domain = '<span class="chip out">out</span>' if dom is False else word
    if reasons:
        domain += f'<div class="why">{reasons}</div>'
    cells.append(_cell(domain, word))
    score = _num(r.get("domain_score"))
    cells.append(_cell("" if score is None else f"{score:.3f}", _p(score)))
    unc = "" if u is None else f"{u:.2f}"
    cells.append(
        _cell(unc, "" if u is None else repr(u), "unc" if "unc" in flags else "")
    )
    n = _num(r.get("n_slices"))
    scope = _text(r.get("scope"))
    if n is not None and n > 1:  # one slice says nothing
        scope += f" ({n:.0f} slices)"
    cells.append(_cell(_e(scope), scope, "nowrap"))
    method = _text(r.get("explain_method"))
    warn = _text(r.get("saliency_warnings"))
    mark = ' <span class="warn" title="saliency trust check">⚠</span>' if warn else ""
    tip = " · ".join(x for x in (_text(r.get("saliency_file")), warn) if x)
    cells.append(_cell(_e(method) + mark, method, "nowrap", tip))
    t = _num(r.get("t_total_s"))
    cells.append(_cell("" if t is None else f"{t:.2f}", "" if t is None else repr(t)))
    cells += [_cell(_e(r.get(x)), _text(r.get(x))) for x in extras]
    return (
        f'<tr class="{" ".join(flags)}" data-status="{_e(status)}" '
        f'data-domain="{word}" data-pos="{"" if pp is None else repr(pp)}">'
        + "".join(cells)
        + "</tr>"
    )


def _failures(rows) -> str:
    failed = [r for r in rows if _status(r) != "ok"]
    failed.sort(key=lambda r: (_status(r) != "error", str(r.get("path") or "")))
    if not failed:
        return (
            '<section id="failures"><h2>Failures</h2><p class="empty">None: every '
            "item was classified.</p></section>"
        )
    items = "".join(
        f'<tr><td><span class="chip {_e(_status(r))}">{_e(_status(r))}</span></td>'
        f'<td class="nowrap">{_e(r.get("name"))}</td>'
        f'<td class="path">{_e(r.get("path"))}</td>'
        f"<td>{_e(r.get('kind'))}</td>"
        f'<td class="reason">{_e(r.get("error") or "no reason given")}</td></tr>'
        for r in failed
    )
    return (
        f'<section id="failures"><h2>Failures ({len(failed)})</h2>'
        '<p class="hint">Items that were not classified, with the reason; the '
        "rest of the run went on.</p>"
        '<div class="scroll short"><table class="plain"><thead><tr><th>status</th>'
        "<th>name</th><th>path</th><th>kind</th><th>reason</th></tr></thead>"
        f"<tbody>{items}</tbody></table></div></section>"
    )


_FOOTER = """<footer>Made by napari-medcnn {version}. Research use only: not for
diagnostic use. The file is self-contained (no network access) and holds no
patient data unless the run opted in.</footer>
</div>"""


def _asset(name: str) -> str:
    """The text of ``assets/<name>`` (package data: the page's style sheet
    and script, inlined so the report stays one self-contained file)."""
    folder = resources.files("napari_medcnn.cohort") / "assets"
    return (folder / name).read_text(encoding="utf-8")
