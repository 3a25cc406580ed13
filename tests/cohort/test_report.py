"""The cohort ``report.html``: content, privacy, escaping, offline use, and
(slow) how it renders and sorts in headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_medcnn.cohort.report import (
    REPORT_NAME,
    is_phi_column,
    positive_class,
    render_report,
    safe_rows,
    thumbnail_data_uri,
    top_items,
    write_report,
)

CLASSES = ("no_tumor", "tumor")
#: patient data smuggled into the rows: none may reach the report
PHI = ("Doe^Jane", "PID-98765", "19700101", "PID-11111", "Roe^Richard")
SCRIPT_PATH = "/data/<script>alert(1)</script>/scan.nii.gz"
BAD_SCANNER = '<img src=x onerror="alert(2)">'


class Page(HTMLParser):
    """Every start tag with its attributes, in order, and the text of the
    page outside ``<script>`` and ``<style>``."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._skip = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag]

    def table_rows(self) -> list[dict[str, str | None]]:
        """The results table's rows (their attributes), in document order,
        each with the name cell's sort value under ``"name"``."""
        rows: list[dict[str, str | None]] = []
        for tag, attrs in self.tags:
            if tag == "tr" and "data-status" in attrs:
                rows.append(dict(attrs))
            elif tag == "td" and attrs.get("class") == "namecell" and rows:
                rows[-1]["name"] = attrs.get("data-v")
        return rows


def png(path: Path, size=(64, 48), seed=0) -> str:
    """A small real PNG (a gradient and noise) at ``path``; its name."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    a = np.linspace(0, 255, w)[None, :].repeat(h, 0)
    a = np.clip(a + rng.normal(0, 20, (h, w)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([a, a[::-1], 255 - a], -1)).save(path)
    return path.name


def ok_row(key: str, p_tumor: float, **kw) -> dict:
    p = [1 - p_tumor, p_tumor]
    k = int(np.argmax(p))
    row = {
        "key": key * 16,
        "path": f"/data/cohort/{key}.dcm",
        "series_uid": f"1.2.3.{ord(key)}",
        "id": f"ID-{key.upper()}",
        "name": f"case_{key}",
        "kind": "dicom",
        "status": "ok",
        "error": "",
        "label": CLASSES[k],
        "probability": p[k],
        "p_no_tumor": p[0],
        "p_tumor": p[1],
        "in_domain": True,
        "domain_score": 0.2,
        "domain_reasons": "",
        "uncertainty": 0.3,
        "scope": "slice",
        "n_slices": 1,
        "explain_method": "",
        "saliency_file": "",
        "saliency_warnings": "",
        "thumbnail": f"thumbnails/{key}.png",
        "model_id": "c19557ea6683b221",
        "model_name": "Test tumour model",
        "t_total_s": 0.5,
        "finished_at": "2025-11-14T09:12:00+00:00",
        "site": "A",
        "scanner": "Siemens",
    }
    row.update(kw)
    return row


def failed_row(key: str, status: str, reason: str, **kw) -> dict:
    row = {
        "key": key * 16,
        "path": f"/data/cohort/{key}",
        "name": f"case_{key}",
        "kind": "dicom",
        "status": status,
        "error": reason,
        "thumbnail": "",
        "site": "B",
    }
    row.update(kw)
    return row


@pytest.fixture
def cohort(tmp_path):
    """(out_dir, rows): ten items (6 ok, one of them outside the domain, one
    with a saliency warning; 2 errors; 1 skipped; 1 ok with p = 0) with
    real thumbnails, except one missing, one unreadable and one outside the
    output folder; PHI smuggled into three places; markup in a path and a
    manifest value."""
    out = tmp_path / "run"
    for i, key in enumerate("abcf"):
        png(out / "thumbnails" / f"{key}.png", seed=i)
    (out / "thumbnails" / "e.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    png(tmp_path / "escape.png")  # exists, but outside the output folder
    rows = [
        ok_row(
            "a",
            0.95,
            explain_method="gradcam",
            saliency_file="saliency/a.nii.gz",
            patient_name="Doe^Jane",
            PatientID="PID-98765",
            meta={"patient_id": "PID-11111", "note": "kept"},
            **{"Patient Birth Date": "19700101", "patient-name": "Roe^Richard"},
        ),
        ok_row("b", 0.80, saliency_warnings="deletion check failed (0.91 -> 0.88)"),
        ok_row(
            "c",
            0.62,
            in_domain=False,
            domain_score=0.61,
            domain_reasons="novelty 0.610 > limit 0.400",
            uncertainty=0.96,
        ),
        ok_row("d", 0.30, thumbnail="thumbnails/missing.png"),
        ok_row("e", 0.10),
        ok_row("f", 0.05, path=SCRIPT_PATH, name="<b>bold</b>", scanner=BAD_SCANNER),
        ok_row("g", 0.0, thumbnail="../escape.png"),
        failed_row("h", "error", "h/IM0004.dcm: truncated pixel data"),
        failed_row("i", "error", "i.nii.gz: not a gzip file", kind="nifti"),
        failed_row("j", "skipped", "j: no image in this folder", kind="folder"),
    ]
    return out, rows


@pytest.fixture
def report(cohort):
    out, rows = cohort
    summary = {"items_per_s": 3.5, "elapsed_s": 200.0, "executor": "local",
               "workers": 2, "total": 12}  # fmt: skip
    path = write_report(rows, out, classes=CLASSES, top_n=5, summary=summary)
    return path, path.read_text(encoding="utf-8")


def test_written_atomically_parseable_one_script(report, cohort):
    path, text = report
    out, _rows = cohort
    assert path == out / REPORT_NAME and path.is_file()
    assert not list(out.glob(f".{REPORT_NAME}.*"))  # no temporary file left
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    assert len(page.all("script")) == 1  # ours; the injected one is text
    assert len(page.all("table")) == 2  # results and failures
    assert "not for diagnostic use" in " ".join(page.text)


def test_markup_in_values_is_escaped(report):
    _path, text = report
    page = Page(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>alert(1)" not in text
    assert "<b>bold</b>" not in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert not [a for a in page.all("img") if "onerror" in a]
    # the path comes back intact as text
    assert SCRIPT_PATH in "".join(page.text)
    assert BAD_SCANNER in "".join(page.text)


def test_no_patient_data(report, cohort):
    _path, text = report
    for value in PHI:
        assert value not in text
    for column in ("PatientID", "Patient Birth Date", "patient_name"):
        assert column not in text
    assert "kept" in text  # the rest of a scrubbed nested column stays
    out, rows = cohort
    # the opt-in keeps them and says so
    path = write_report(rows, out, classes=CLASSES, include_phi=True)
    text = path.read_text(encoding="utf-8")
    assert "PID-98765" in text and "includes patient data" in text


def test_offline_no_external_reference(report):
    _path, text = report
    page = Page(text)
    assert "http://" not in text and "https://" not in text
    srcs = [a["src"] for t, a in page.tags if "src" in a]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not [a for t, a in page.tags if "href" in a]
    csp = [a for a in page.all("meta") if a.get("http-equiv")]
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_gallery_top_n_in_order_with_thumbnails(report):
    _path, text = report
    page = Page(text)
    cards = [a["data-key"] for a in page.all("figure")]
    assert cards == [k * 16 for k in "abcde"]  # p_tumor high to low, ok only
    # a, b, c have real thumbnails; d is missing and e unreadable
    assert len(page.all("img")) == 3
    assert text.count('class="nothumb">no thumbnail<') == 2
    for a in page.all("img"):
        data = base64.b64decode(a["src"].split(",", 1)[1])
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.size == (64, 48)
    gallery = text[text.index('id="gallery"') : text.index('id="table"')]
    assert "Top 5 by P(tumor)" in gallery
    assert "deletion check failed" in gallery  # b's trust note
    assert "outside domain" in gallery and "novelty 0.610" in gallery  # c


def test_table_holds_every_row_flagged_and_filterable(report):
    _path, text = report
    page = Page(text)
    rows = page.table_rows()
    assert len(rows) == 10
    # ok rows by P(tumor), highest first (p = 0 still before the failures)
    names = [r["name"] for r in rows[:7]]
    assert names == [*(f"case_{k}" for k in "abcde"), "<b>bold</b>", "case_g"]
    assert {r["data-status"] for r in rows[7:]} == {"error", "skipped"}
    c = rows[2]
    assert set(c["class"].split()) == {"out", "unc"} and c["data-domain"] == "out"
    assert float(c["data-pos"]) == pytest.approx(0.62)
    heads = [a["data-key"] for a in page.all("th") if a.get("data-key")]
    assert heads[:7] == ["status", "name", "id", "label", "probability", "p_no_tumor",
                         "p_tumor"]  # fmt: skip
    assert {"x:site", "x:scanner", "x:meta"} <= set(heads)
    assert not [h for h in heads if "atient" in h]
    filters = [a["data-filter"] for a in page.all("button") if a.get("data-filter")]
    assert filters == ["all", "positive", "outside", "uncertain", "failed"]
    assert "tumor ≥ 0.5" in text


def test_header_counts_and_run(report):
    _path, text = report
    header = " ".join(Page(text[: text.index('id="gallery"')]).text)
    header = re.sub(r"\s+", " ", header)
    assert "Test tumour model" in header and "c19557ea6683b221" in header
    flat = header.replace(" ", "")
    assert "ok7" in flat and "error2" in flat and "skipped1" in flat
    assert "3.50 items/s" in header and "3 min 20 s" in header
    assert "local × 2" in header
    assert "partial run: 10 of 12 items" in header
    # predicted classes among the ok rows: 3 tumor, 4 no_tumor
    head = text[: text.index('id="gallery"')]
    counts = dict(re.findall(r'class="cname">(\w+)</span>.*?<b>(\d+)</b>', head))
    assert counts == {"no_tumor": "4", "tumor": "3"}


def test_failures_with_reasons(report):
    _path, text = report
    section = text[text.index('id="failures"') :]
    assert "Failures (3)" in section
    body = " ".join(Page(section).text)
    for reason in ("h/IM0004.dcm: truncated pixel data", "i.nii.gz: not a gzip file",
                   "j: no image in this folder"):  # fmt: skip
        assert reason in body
    # errors first, then skipped
    assert body.index("truncated") < body.index("not a gzip") < body.index("no image")


def test_cancelled_partial_run(cohort):
    out, rows = cohort
    summary = {"complete": False, "cancelled": True, "items_per_s": None,
               "finished_at": "2025-11-14T10:00:00+00:00"}  # fmt: skip
    path = write_report(rows, out, classes=CLASSES, summary=summary)
    text = path.read_text(encoding="utf-8")
    assert "cancelled; partial run: 10 items so far" in text
    assert "run finished 2025-11-14 10:00 UTC" in text
    assert "items/s" not in text


def test_empty_run_and_rewrite(tmp_path):
    path = write_report([], tmp_path / "new", classes=CLASSES)
    text = path.read_text(encoding="utf-8")
    assert "No classified item yet" in text and "every item was classified" in text
    path2 = write_report(
        [ok_row("a", 0.9, thumbnail="")], tmp_path / "new", classes=CLASSES
    )
    assert path2 == path and "case_a" in path.read_text(encoding="utf-8")


def test_rows_read_back_from_csv(tmp_path):
    """Text values (as a CSV gives them) rank and flag like numbers."""
    rows = [
        {"key": "1" * 16, "name": "x", "status": "ok", "label": "tumor",
         "p_tumor": "0.7", "probability": "0.7", "in_domain": "False",
         "uncertainty": "0.88", "thumbnail": ""},
        {"key": "2" * 16, "name": "y", "status": "ok", "label": "tumor",
         "p_tumor": "0.9", "probability": "0.9", "in_domain": "True",
         "uncertainty": "", "thumbnail": ""},
        {"key": "3" * 16, "name": "z", "status": "", "error": "bad file"},
    ]  # fmt: skip
    assert [r["name"] for r in top_items(rows, CLASSES)] == ["y", "x"]
    page = Page(render_report(rows, tmp_path, classes=CLASSES))
    table = page.table_rows()
    assert [r["name"] for r in table] == ["y", "x", "z"]
    assert set(table[1]["class"].split()) == {"out", "unc"}
    assert table[2]["data-status"] == "error"


def test_positive_class_and_multiclass_ranking():
    assert positive_class(CLASSES) == "tumor"
    assert positive_class(CLASSES, "no_tumor") == "no_tumor"
    assert positive_class(("a", "b", "c")) is None
    with pytest.raises(ValueError, match="not one of"):
        positive_class(CLASSES, "glioma")
    rows = [
        {"key": "k1", "status": "ok", "label": "b", "probability": 0.5},
        {"key": "k2", "status": "ok", "label": "c", "probability": 0.9},
        {"key": "k3", "status": "error", "probability": 1.0},
    ]
    # three classes: ranked by the predicted class's probability
    assert [r["key"] for r in top_items(rows, ("a", "b", "c"))] == ["k2", "k1"]
    assert top_items(rows, ("a", "b", "c"), n=0) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="classes"):
        write_report([], tmp_path, classes=())
    with pytest.raises(ValueError, match="not one of"):
        write_report([], tmp_path, classes=CLASSES, positive="glioma")
    assert not (tmp_path / REPORT_NAME).exists()


@pytest.mark.parametrize(
    "name",
    ["PatientID", "patient_name", "Patient Birth Date", "patient-id", "DOB",
     "date_of_birth", "MRN", "AccessionNumber", "PatientsName", "first_name"],
)  # fmt: skip
def test_phi_columns(name):
    assert is_phi_column(name)


@pytest.mark.parametrize(
    "name", ["id", "name", "site", "scanner", "series_uid", "age_group"]
)
def test_ordinary_columns(name):
    assert not is_phi_column(name)


def test_safe_rows_scrubs_at_any_depth():
    rows = [
        {"a": 1, "PatientName": "X", "m": {"patient_id": "Y", "k": [np.float32(1)]}}
    ]
    assert safe_rows(rows) == [{"a": 1, "m": {"k": [1.0]}}]
    assert safe_rows(rows, include_phi=True)[0]["PatientName"] == "X"


def test_thumbnail_data_uri(tmp_path):
    png(tmp_path / "big.png", size=(1000, 600))
    uri = thumbnail_data_uri(tmp_path, "big.png")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
        assert im.size == (320, 192)  # longest side THUMBNAIL_PX
    (tmp_path / "junk.png").write_text("not an image")
    png(tmp_path.parent / "outside.png")
    for rel in ("", None, "missing.png", "junk.png", "../outside.png", "."):
        assert thumbnail_data_uri(tmp_path, rel) is None


# -- in a real browser ----------------------------------------------------------
def chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium not installed (Debian: apt-get install chromium)")
    return subprocess.run(
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--hide-scrollbars", *args],
        capture_output=True, text=True, timeout=timeout, check=True,
    )  # fmt: skip


@pytest.mark.slow
def test_renders_in_headless_chromium(report, tmp_path):
    path, _text = report
    shot = tmp_path / "shot.png"
    chromium(
        f"--user-data-dir={tmp_path / 'profile1'}",
        f"--screenshot={shot}",
        "--window-size=1400,1000",
        path.resolve().as_uri(),
    )
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1400, 1000)
        a = np.asarray(im.convert("RGB"), dtype=np.float32)
    assert a.std() > 20  # not a blank page
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 200  # text, thumbnails
    # the dark header band is drawn (CSS applied)
    assert a[:40].mean() < 80

    # the script ran: sort by name (ascending) and show only the failures,
    # both asked for in the URL's fragment
    dom = chromium(
        f"--user-data-dir={tmp_path / 'profile2'}",
        "--dump-dom",
        path.resolve().as_uri() + "#sort=name&dir=asc&filter=failed",
    ).stdout
    page = Page(dom)
    html_tag = page.all("html")[0]
    assert html_tag.get("data-ready") == "true"
    rows = page.table_rows()
    names = [r["name"] for r in rows]
    assert names == sorted(names, key=str.lower)
    shown = [r for r in rows if "hidden" not in r]
    assert {r["data-status"] for r in shown} == {"error", "skipped"}
    assert len(shown) == 3
    table = [a for a in page.all("table") if a.get("id") == "results"][0]
    assert table["data-sorted"] == "name:asc"
    assert "3 of 10 items" in " ".join(page.text)


def test_only_manifest_columns_are_shown_as_extra_columns(tmp_path):
    """A row's own columns (timings, worker, trust AUCs...) are not manifest
    columns: only the manifest's own ones get extra table columns."""
    from napari_medcnn.cohort.report import write_report

    row = {
        "key": "0123456789abcdef", "path": "a.nii.gz", "status": "ok",
        "label": "tumor", "probability": 0.9, "p_no_tumor": 0.1, "p_tumor": 0.9,
        "worker": "host:1", "worker_peak_rss_mb": 300.0, "t_load_s": 0.1,
        "top_slice": 3, "saliency_trusted": True, "saliency_deletion_auc": 0.2,
        "site": "north-campus",
    }  # fmt: skip
    text = write_report([row], tmp_path, classes=["no_tumor", "tumor"]).read_text()
    assert ">site<" in text
    for own in ("worker_peak_rss_mb", "t_load_s", "saliency_deletion_auc"):
        assert f">{own}<" not in text
