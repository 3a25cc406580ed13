"""PHI audit (issue 17): every file the plugin writes, across all features,
is searched for the planted patient's name, ID and birth date.

A DICOM series is planted with PHI in its headers (patient name, ID, birth
date, accession number, institution, referring physician, address, a
private tag, a series description that repeats the name), in the folder
names and in the file names.  Then every feature that writes files runs on
it, through the command line (``napari_medcnn.cli.main``) or the core a
widget calls: ``info``, ``classify`` (JSON, CSV, DICOM SR), ``explain``
(NIfTI, PNG, DICOM Parametric Map + Secondary Capture), a DICOM SEG and a
NIfTI labels file (the napari writers' core), label sidecars (the label
store), ``train`` on those labels, ``deidentify`` (encrypted manifest and
key, report, dry run), ``manifest show``/``rekey``, ``cohort`` (with and
without ``--deidentify``) and a PACS round trip through ``FolderPacs``.
Each step's standard output and error (file-descriptor level, so the
cohort's worker processes too), log records (root logger at DEBUG) and
warnings are kept.  ``HOME``, the XDG folders and the temporary folder
point into the audit folder, so files written "elsewhere" are audited too.

Then every file written is read (raw bytes, gzip members, zip members,
Parquet values, PNG text chunks, images embedded in HTML, the DICOM
dataset dump) and searched, case-insensitively, in UTF-8/ASCII, UTF-16-LE
and UTF-16-BE, for each needle: the name as a DICOM PN (``^``), with spaces
or ``_``, each name part, the ID with ``-``/``_``/nothing, the birth date
as ``19411223``, ``1941-12-23`` and other common forms, and the other
identifiers.  Every file and folder name is checked as well.

Documented exceptions (each asserted in its own narrower way):

* the planted input files, and byte-identical copies of them (a PACS
  ``store``/``retrieve`` of the identified images): names only;
* DICOM results (SR, Parametric Map, Secondary Capture, SEG) of an
  identified source carry the source's patient and study identity by
  design (they must attach to the patient's record in the PACS): the PHI
  must be in those attributes (positive control) and nowhere else in the
  object, never in its file name; a de-identified source gives a result
  with no PHI at all;
* the plaintext manifest (``--plaintext-manifest``, explicitly unsafe) and
  the output of ``manifest show`` (the lawful re-identification): they
  must hold the PHI (positive controls).
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _helpers import make_checkpoint
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from napari_medcnn.cli import main

pytestmark = pytest.mark.slow

# -- the planted PHI ----------------------------------------------------------
NAME = "AUDITSON^PHILOMENA^Q"  # distinctive parts: a part alone is a leak too
PID = "PHI-AUDIT-9931"
BIRTH = "19411223"
ACCESSION = "ACC-AUDIT-5517"
INSTITUTION = "Auditmoor Memorial Infirmary"
PHYSICIAN = "HOUSEMAN^GREGORIO"
ADDRESS = "77 Auditlane Road, Springfield"
#: the folder and file names a PACS export or a user gives such a series
PATIENT_DIR = "AUDITSON_PHILOMENA_1941-12-23"
SERIES_DIR = PID
SECRET = "correct horse battery staple audit"

#: needle -> what it is; searched case-insensitively in every encoding
NEEDLES: dict[str, str] = {
    NAME: "patient name (PN)",
    "AUDITSON PHILOMENA Q": "patient name (spaces)",
    "AUDITSON_PHILOMENA": "patient name (underscores)",
    "PHILOMENA AUDITSON": "patient name (given family)",
    "AUDITSON": "patient family name",
    "PHILOMENA": "patient given name",
    PID: "patient ID",
    "PHI_AUDIT_9931": "patient ID (underscores)",
    "PHIAUDIT9931": "patient ID (no separators)",
    BIRTH: "birth date (DA)",
    "1941-12-23": "birth date (ISO)",
    "1941/12/23": "birth date (y/m/d)",
    "1941.12.23": "birth date (y.m.d)",
    "23.12.1941": "birth date (d.m.y)",
    "23/12/1941": "birth date (d/m/y)",
    "12/23/1941": "birth date (m/d/y)",
    ACCESSION: "accession number",
    "Auditmoor": "institution",
    "HOUSEMAN": "referring physician",
    "GREGORIO": "referring physician",
    "Auditlane": "patient address",
}
#: the core needles the issue names, for the positive controls
CORE = (NAME, PID, BIRTH)

#: attributes of a DICOM result that carry the source's patient and study
#: identity by design (Patient and General Study modules)
IDENTITY_OF_RESULT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)
RESULT_MANUFACTURER = "napari-medcnn"


# -- the scanner -------------------------------------------------------------
def _encodings(needle: str) -> list[tuple[str, bytes]]:
    low = needle.lower()
    return [
        ("utf-8", low.encode("utf-8")),
        ("utf-16-le", low.encode("utf-16-le")),
        ("utf-16-be", low.encode("utf-16-be")),
    ]


_PNG = b"\x89PNG\r\n\x1a\n"
_DATA_URI = re.compile(rb"data:[\w/+.-]+;base64,([A-Za-z0-9+/=\s]+)")


def _png_text(data: bytes) -> bytes:
    """The text chunks of a PNG (tEXt, zTXt and iTXt, decompressed)."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"tEXt":
            out.append(body)
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            with contextlib.suppress(zlib.error):
                out.append(key + b" " + zlib.decompress(rest[1:]))
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            flag, rest = rest[:1], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _tkey, _, text = rest.partition(b"\0")
            if flag == b"\x01":
                with contextlib.suppress(zlib.error):
                    text = zlib.decompress(text)
            out.append(key + b" " + text)
        elif kind == b"IEND":
            break
    return b"\n".join(out)


def views(data: bytes, where: str, depth: int = 0) -> list[tuple[str, bytes]]:
    """``(where, bytes)`` for the raw bytes and for everything packed in
    them: gzip and zip members, Parquet values, PNG text, HTML data URIs,
    the dump of a DICOM dataset."""
    out = [(where, data)]
    if depth > 3:
        return out
    if data[:2] == b"\x1f\x8b":
        with contextlib.suppress(OSError, EOFError, zlib.error):
            out += views(gzip.decompress(data), f"{where}[gunzip]", depth + 1)
    if data[:4] == b"PK\x03\x04":
        with (
            contextlib.suppress(zipfile.BadZipFile),
            zipfile.ZipFile(io.BytesIO(data)) as zf,
        ):
            for info in zf.infolist():
                out += [(f"{where}[zip name]", info.filename.encode())]
                out += views(zf.read(info), f"{where}[{info.filename}]", depth + 1)
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False)
        text += str(table.schema) + str(table.schema.metadata)
        out.append((f"{where}[parquet values]", text.encode("utf-8")))
    if data[:8] == _PNG:
        out.append((f"{where}[png text]", _png_text(data)))
    if b"base64," in data:
        for m in _DATA_URI.finditer(data):
            with contextlib.suppress(ValueError):
                inner = base64.b64decode(re.sub(rb"\s", b"", m.group(1)))
                out += views(inner, f"{where}[data uri]", depth + 1)
    if data[128:132] == b"DICM":
        with contextlib.suppress(Exception):
            ds = pydicom.dcmread(io.BytesIO(data))
            out.append((f"{where}[dicom dump]", str(ds).encode("utf-8", "replace")))
    return out


def find_needles(data: bytes, where: str, needles=NEEDLES) -> list[str]:
    """``"<where>: <needle> (<what>, <encoding>)"`` for each needle found."""
    hits = []
    for inner, blob in views(data, where):
        low = blob.lower()
        for needle, what in needles.items():
            for enc, pattern in _encodings(needle):
                if pattern in low:
                    hits.append(f"{inner}: {needle!r} ({what}, {enc})")
                    break
    return hits


def find_in_text(text: str, where: str, needles=NEEDLES) -> list[str]:
    return find_needles(text.encode("utf-8", "replace"), where, needles)


# -- planting ----------------------------------------------------------------
def plant_series(folder: Path, n: int = 12) -> list[Path]:
    """A CT series of the audit patient, PHI everywhere a header has room,
    files named after the patient ID."""
    from napari_medcnn.io.synth import write_series

    rng = np.random.default_rng(1941)
    vol = rng.integers(-1000, 1000, size=(n, 16, 16)).astype(float)
    vol[n // 2 :, 4:12, 4:12] += 600.0
    paths = write_series(
        vol, folder, spacing=(2.0, 0.8, 0.8), origin=(-5.0, 3.0, 40.0),
        modality="CT", patient_name=NAME, patient_id=PID, seed="phi-audit",
        series_description=f"CT for {NAME} born {BIRTH}",
    )  # fmt: skip
    first = pydicom.dcmread(paths[0]).SOPInstanceUID
    out = []
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = BIRTH, "F", "079Y"
        ds.StudyDate, ds.StudyTime = "20210304", "093000"
        ds.AccessionNumber, ds.InstitutionName = ACCESSION, INSTITUTION
        ds.ReferringPhysicianName, ds.PatientAddress = PHYSICIAN, ADDRESS
        ds.OtherPatientIDs = PID.replace("-", "_")
        ds.ImageComments = f"{NAME} {PID} DOB 1941-12-23"
        ds.StudyDescription = "CT head"
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = first
        ds.ReferencedImageSequence = Sequence([ref])
        ds.private_block(0x0029, "ACME 1.0", create=True).add_new(0x01, "LO", NAME)
        target = p.with_name(f"{PID}_{i:04d}.dcm")
        ds.save_as(target, enforce_file_format=True)
        p.unlink()
        out.append(target)
    return out


# -- running the features ----------------------------------------------------
@dataclass
class Step:
    name: str
    argv: list[str] = field(default_factory=list)
    rc: int | None = None
    out: str = ""
    err: str = ""
    logs: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    #: the re-identification: its output is expected to hold PHI
    reidentifies: bool = False
    seconds: float = 0.0


class _ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string: keep what we have
            text = f"{record.msg} {record.args}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" | {record.exc_info[1]}"
        self.records.append(f"{record.name}: {text}")


@contextlib.contextmanager
def _captured_fds():
    """Standard output and error at the file-descriptor level (this
    process and its children), as a dict filled on exit."""
    got: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile() for fd in (1, 2)}  # noqa: SIM115
    for fd, fh in files.items():
        os.dup2(fh.fileno(), fd)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield got
    finally:
        for fd in (1, 2):
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
        for fd, fh in files.items():
            fh.seek(0)
            text = fh.read().decode("utf-8", "replace")
            fh.close()
            got["out" if fd == 1 else "err"] = text
        got["out"] = out.getvalue() + got["out"]
        got["err"] = err.getvalue() + got["err"]


def _snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    snap = {}
    for p in root.rglob("*"):
        if p.is_file():
            st = p.stat()
            snap[p] = (st.st_mtime_ns, st.st_size)
    return snap


@dataclass
class Audit:
    root: Path
    src: Path  # the series folder, named after the patient
    planted: dict[Path, bytes]
    steps: list[Step]
    work: Path
    private: Path
    plain_manifest: Path
    manifest: Path
    key: Path
    deid: Path
    results_identified: list[Path]  # DICOM results of the PHI series
    results_deid: list[Path]  # DICOM results of the de-identified copy
    pacs_identified: Path
    pacs_deid: Path
    found_rows: list[dict[str, str]]

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    def step_of(self, path: Path) -> str:
        names = [s.name for s in self.steps if path in s.files]
        return "/".join(names) or "?"


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> Audit:  # noqa: PLR0915 - one scenario
    root = tmp_path_factory.mktemp("phi_audit")
    src = root / "incoming" / PATIENT_DIR / SERIES_DIR
    plant_series(src)
    planted = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    work = root / "work"
    private = root / "private"
    for d in (work, private):
        d.mkdir()
    secret = private / "passphrase"
    secret.write_text(SECRET + "\n")
    new_secret = private / "new-passphrase"
    new_secret.write_text(SECRET + " rekeyed\n")
    parent = make_checkpoint(work / "models" / "parent")

    # everything written "elsewhere" (user folders, temporary files) lands
    # in the audit folder too
    home = root / "home"
    env = {
        "HOME": home,
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "TMPDIR": root / "tmp",
    }
    for d in env.values():
        d.mkdir(parents=True, exist_ok=True)
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, str(v))
    mp.setattr(tempfile, "tempdir", str(env["TMPDIR"]))
    mp.delenv("NAPARI_MEDCNN_INCLUDE_PHI", raising=False)
    mp.delenv("NAPARI_MEDCNN_PASSPHRASE", raising=False)

    steps: list[Step] = []
    handler = _ListHandler()
    rootlog = logging.getLogger()
    old_level = rootlog.level
    rootlog.addHandler(handler)
    rootlog.setLevel(logging.DEBUG)

    def record(name: str, fn, *, reidentifies: bool = False, argv=()) -> Step:
        step = Step(name, [str(a) for a in argv], reidentifies=reidentifies)
        before = _snapshot(root)
        handler.records = []
        time.sleep(0.01)  # distinct mtimes
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with _captured_fds() as got:
                step.rc = fn()
        step.seconds = time.perf_counter() - t0
        step.out, step.err = got["out"], got["err"]
        step.logs = list(handler.records)
        step.warned = [f"{w.category.__name__}: {w.message}" for w in caught]
        after = _snapshot(root)
        step.files = sorted(p for p, sig in after.items() if before.get(p) != sig)
        steps.append(step)
        return step

    def cli(name: str, *args, reidentifies: bool = False, expect: int = 0) -> Step:
        argv = [str(a) for a in args]
        step = record(name, lambda: main(argv), reidentifies=reidentifies, argv=argv)
        assert step.rc == expect, f"{name}: exit {step.rc}\n{step.out}\n{step.err}"
        return step

    results_identified: list[Path] = []
    results_deid: list[Path] = []
    found_rows: list[dict[str, str]] = []
    try:
        # -- the identified series ---------------------------------------------
        cli("info", "info", src)
        cli("classify", "classify", src, "--model", parent, "--json",
            work / "classify.json", "--csv", work / "classify.csv",
            "--sr", work / "sr")  # fmt: skip
        results_identified += sorted((work / "sr").glob("*.dcm"))
        cli("explain nifti", "explain", src, "--model", parent, "--method",
            "gradcam", "--out", work / "map.nii.gz")  # fmt: skip
        cli("explain png", "explain", src, "--model", parent, "--method",
            "gradcam", "--slice", "8", "--out", work / "slice.png")  # fmt: skip
        cli("explain dicom", "explain", src, "--model", parent, "--method",
            "gradcam", "--out", work / "pmap.dcm", "--overlay-sc",
            work / "overlay.dcm")  # fmt: skip
        results_identified += [work / "pmap.dcm", work / "overlay.dcm"]

        def seg_and_labels_nifti():
            from napari_medcnn.export.seg import write_segmentation
            from napari_medcnn.io import load
            from napari_medcnn.widgets.writers import write_labels

            (scan,) = load(src)
            labels = np.zeros(scan.data.shape, np.uint8)
            labels[6:, 4:12, 4:12] = 1
            written = [write_segmentation(labels, scan, work / "seg")]
            meta = {"metadata": scan.layer_metadata(), "name": scan.name}
            written += write_labels(str(work / "labels.nii.gz"), labels, meta)
            results_identified.append(Path(written[0]))
            return 0

        record("segmentation + labels writer", seg_and_labels_nifti)

        def label_slices():
            from napari_medcnn.io import load
            from napari_medcnn.training.labels.store import LabelStore

            (scan,) = load(src)
            store = LabelStore.open(
                src, scan.metadata, scan.data, n_slices=scan.data.shape[0],
                classes=["no_tumor", "tumor"],
            )  # fmt: skip
            store.label_slices(0, 5, "no_tumor")
            store.label_slices(6, 11, "tumor")  # a second save: a .bak too
            return 0

        record("label sidecars", label_slices)
        from napari_medcnn.training.labels.keys import LABELS_DIR

        sidecars = sorted((src / LABELS_DIR).glob("*.json"))
        assert sidecars, "the label store wrote no sidecar"
        cli("train", "train", "--labels", *sidecars, "--model", parent, "--out",
            work / "tuned.safetensors", "--epochs", "2", "--kfold", "0",
            "--min-per-class", "3", "--json", work / "train.json")  # fmt: skip
        cli("classify tuned", "classify", src, "--model", work / "tuned.safetensors",
            "--scope", "slice", "--json", work / "classify_tuned.json")  # fmt: skip

        # -- de-identification ------------------------------------------------
        manifest, key = private / "manifest.json", private / "project.key"
        deid = work / "deid"
        cli("deidentify dry run", "deidentify", src, "--dry-run")
        cli("deidentify", "deidentify", src, "--out", deid, "--key", key,
            "--manifest", manifest, "--passphrase-file", secret, "--report",
            work / "deid_report.json", "--keep-dates-shifted")  # fmt: skip
        plain = root / "plaintext" / "manifest.csv"
        plain.parent.mkdir()
        cli("deidentify plaintext manifest", "deidentify", src, "--out",
            work / "deid_plain", "--key", root / "plaintext" / "plain.key",
            "--manifest", plain, "--plaintext-manifest")  # fmt: skip
        cli("manifest show", "manifest", "show", manifest, "--passphrase-file",
            secret, reidentifies=True)  # fmt: skip
        cli("manifest rekey", "manifest", "rekey", manifest, "--passphrase-file",
            secret, "--new-passphrase-file", new_secret)  # fmt: skip
        # work on the de-identified copy: its results must hold no PHI at all
        cli("info deid", "info", deid)
        cli("classify deid", "classify", deid, "--model", parent, "--json",
            work / "deid_classify.json", "--sr", work / "deid_sr")  # fmt: skip
        results_deid += sorted((work / "deid_sr").glob("*.dcm"))
        cli("explain deid", "explain", deid, "--model", parent, "--method",
            "gradcam", "--out", work / "deid_map.dcm", "--overlay-sc",
            work / "deid_overlay.dcm")  # fmt: skip
        results_deid += [work / "deid_map.dcm", work / "deid_overlay.dcm"]

        # -- cohort -----------------------------------------------------------
        cohort_in = root / "incoming"
        cli("cohort", "cohort", cohort_in, "--out", work / "cohort", "--model",
            parent, "--explain", "gradcam", "--no-trust-metrics", "--workers",
            "1")  # fmt: skip
        cli("cohort deidentify", "cohort", cohort_in, "--out",
            work / "cohort_deid", "--model", parent, "--explain", "gradcam",
            "--no-trust-metrics", "--workers", "1", "--deidentify",
            "--key-file", private / "cohort.key")  # fmt: skip

        # -- PACS round trip (a folder as the PACS) ---------------------------
        pacs_identified, pacs_deid = work / "pacs", work / "pacs_deid"

        def pacs_round_trip():
            from napari_medcnn.pacs import retrieve, send
            from napari_medcnn.pacs.folder import FolderPacs
            from napari_medcnn.pacs.store import deidentify_for_sending

            pacs = FolderPacs(pacs_identified, name="audit-pacs")
            stored = send(pacs, [src])
            assert len(stored.stored) == len(planted) and not stored.failed
            (study,) = pacs.find_studies(patient_id=PID)
            found_rows.append(study.display_row())
            found_rows.append({"repr": repr(study)})
            (series,) = pacs.find_series(study.study_uid)
            scans = retrieve(pacs, study.study_uid, series.series_uid,
                             dest=work / "retrieved")  # fmt: skip
            assert len(scans) == 1
            # a result of the retrieved series goes back to the PACS
            sent = send(pacs, results_identified[:1])
            assert len(sent.stored) == 1
            # the de-identified way: de-identify, confirm, send
            files = deidentify_for_sending(
                [src], work / "pacs_send_deid", key_file=private / "cohort.key"
            )
            other = FolderPacs(pacs_deid, name="research-pacs")
            result = send(other, files, confirm_deidentified=True)
            assert len(result.stored) == len(planted)
            return 0

        record("pacs round trip", pacs_round_trip)
    finally:
        rootlog.removeHandler(handler)
        rootlog.setLevel(old_level)
        mp.undo()
    return Audit(
        root=root, src=src, planted=planted, steps=steps, work=work,
        private=private, plain_manifest=plain, manifest=manifest, key=key,
        deid=deid, results_identified=results_identified,
        results_deid=results_deid, pacs_identified=pacs_identified,
        pacs_deid=pacs_deid, found_rows=found_rows,
    )  # fmt: skip


# -- classification of what was written --------------------------------------
def _is_dicom_result(data: bytes) -> bool:
    if data[128:132] != b"DICM":
        return False
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return str(ds.get("Manufacturer", "")) == RESULT_MANUFACTURER


def _identified_result(audit: Audit, p: Path, data: bytes) -> bool:
    """A DICOM result of the identified series, or a copy of one (the SR
    sent to the PACS): the documented exception."""
    return p in audit.results_identified or any(
        data == r.read_bytes() for r in audit.results_identified
    )


def _written(audit: Audit) -> list[Path]:
    return sorted(
        p for p in audit.root.rglob("*") if p.is_file() and p not in audit.planted
    )


def _planted_copy(audit: Audit, data: bytes) -> bool:
    return any(data == blob for blob in audit.planted.values())


def _rel(audit: Audit, p: Path) -> str:
    return str(p.relative_to(audit.root))


# -- positive controls -------------------------------------------------------
def test_scanner_finds_needles_in_every_container(tmp_path):
    """The grep itself: a needle written into a gz, a zip, a Parquet table,
    a compressed PNG text chunk, a data URI and UTF-16 is found."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    blob = f"note about {NAME}, born 1941-12-23".encode()
    (tmp_path / "a.gz").write_bytes(gzip.compress(blob))
    with zipfile.ZipFile(tmp_path / "a.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner.txt", f"id {PID}")
    pq.write_table(pa.table({"who": [PID.lower()]}), tmp_path / "a.parquet",
                   compression="zstd")  # fmt: skip
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt("Comment", f"patient {NAME}", zip=True)
    Image.new("L", (4, 4)).save(tmp_path / "a.png", pnginfo=info)
    png64 = base64.b64encode((tmp_path / "a.png").read_bytes()).decode()
    (tmp_path / "a.html").write_text(f'<img src="data:image/png;base64,{png64}">')
    (tmp_path / "a.txt").write_bytes(f"{BIRTH}".encode("utf-16-le"))
    (tmp_path / "b.txt").write_text("auditson philomena")
    expect = {
        "a.gz": "1941-12-23", "a.zip": PID, "a.parquet": PID, "a.png": NAME,
        "a.html": NAME, "a.txt": BIRTH, "b.txt": "AUDITSON",
    }  # fmt: skip
    for name, needle in expect.items():
        data = (tmp_path / name).read_bytes()
        hits = find_needles(data, name)
        assert any(repr(needle) in h for h in hits), (name, hits)
        # and not by accident: the packed forms hide it from a plain grep
        if name in ("a.gz", "a.zip", "a.parquet", "a.png", "a.html"):
            assert needle.encode() not in data, name
    assert find_needles(b"an ordinary patient record, study 2021", "x") == []


def test_needles_are_in_the_planted_input(audit):
    """Positive control: the planted files hold every core needle (in the
    header and the private tag), and their names hold the ID and name."""
    for p, data in audit.planted.items():
        hits = "\n".join(find_needles(data, p.name))
        for needle in (*CORE, ACCESSION, "Auditmoor", "HOUSEMAN", "Auditlane"):
            assert repr(needle) in hits, f"{p.name}: {needle} not planted"
        ds = pydicom.dcmread(io.BytesIO(data))
        assert str(ds.PatientName) == NAME and ds.PatientBirthDate == BIRTH
    names = "\n".join(
        h for p in audit.planted for h in find_in_text(_rel(audit, p), "name")
    )
    for needle in (PID, "AUDITSON_PHILOMENA", "1941-12-23"):
        assert repr(needle) in names


def test_plaintext_manifest_and_manifest_show_hold_the_phi(audit):
    """Positive controls: the unsafe plaintext manifest, and the lawful
    re-identification (``manifest show``) print the patient's identity."""
    hits = "\n".join(find_needles(audit.plain_manifest.read_bytes(), "manifest"))
    for needle in (NAME, PID):
        assert repr(needle) in hits
    shown = audit.step("manifest show")
    hits = "\n".join(find_in_text(shown.out, "manifest show"))
    for needle in (NAME, PID):
        assert repr(needle) in hits


# -- the audit ---------------------------------------------------------------
def test_every_feature_wrote_files(audit):
    """Not vacuous: each step that writes wrote something, and the kinds of
    file the issue names are all there."""
    silent = {"info", "info deid", "deidentify dry run", "manifest show"}
    for step in audit.steps:
        if step.name in silent:
            assert not step.files, f"{step.name} wrote {step.files}"
        else:
            assert step.files, f"{step.name} wrote nothing"
    suffixes = {"".join(p.suffixes[-2:]) for p in _written(audit)}
    suffixes |= {p.suffix for p in _written(audit)}
    for want in (".json", ".csv", ".nii.gz", ".png", ".dcm", ".safetensors",
                 ".parquet", ".html", ".jsonl", ".key", ".bak"):  # fmt: skip
        assert want in suffixes, f"no {want} file written"
    assert audit.results_identified and audit.results_deid
    assert (audit.work / "cohort" / "journal.jsonl").is_file()


def test_no_written_file_holds_phi(audit):
    """Every file written (outside the documented exceptions) is free of
    every needle, in every container and encoding."""
    leaks = []
    checked = 0
    for p in _written(audit):
        if p == audit.plain_manifest:
            continue  # the unsafe plaintext manifest: a positive control
        data = p.read_bytes()
        if _planted_copy(audit, data) or _identified_result(audit, p, data):
            continue  # the documented exceptions, checked by the tests below
        checked += 1
        hits = find_needles(data, _rel(audit, p))
        leaks += [f"[{audit.step_of(p)}] {h}" for h in hits]
    assert checked >= 40
    assert leaks == [], "PHI in written files:\n" + "\n".join(leaks)


def test_no_file_or_folder_name_holds_phi(audit):
    """No file or folder written (results, PACS copies, sidecars, caches)
    is named after the patient; the planted folders are the user's."""
    planted_dirs = {audit.src, *audit.src.parents}
    leaks = []
    for p in sorted(audit.root.rglob("*")):
        if p in audit.planted or p in planted_dirs:
            continue
        name = p.name
        leaks += [f"[{audit.step_of(p)}] {_rel(audit, p)}: {h}"
                  for h in find_in_text(name, "name")]  # fmt: skip
    assert leaks == [], "PHI in file or folder names:\n" + "\n".join(leaks)


def _shown(step: Step, audit: Audit) -> str:
    """What a step showed, with the paths the user typed (which may name
    the patient) masked: echoing an argument back is not a leak."""
    text = "\n".join([step.out, step.err, *step.logs, *step.warned])
    for arg in sorted(step.argv, key=len, reverse=True):
        if os.sep in arg:
            text = text.replace(arg, "<argument>")
    return text


def test_printed_output_logs_and_warnings_hold_no_phi(audit):
    leaks = []
    for step in audit.steps:
        if step.reidentifies:
            continue  # manifest show: the positive control above
        hits = find_in_text(_shown(step, audit), "output/logs")
        leaks += [f"[{step.name}] {h}" for h in hits]
    assert leaks == [], "PHI printed or logged:\n" + "\n".join(leaks)
    # not vacuous: the redacted path and name were printed, logs were kept
    assert "[redacted]" in audit.step("classify").out
    assert sum(len(s.logs) for s in audit.steps) > 50


def test_encrypted_manifest_and_key_hold_no_phi(audit):
    """The manifest links the pseudonyms back to the patient: encrypted, its
    bytes hold no PHI (before and after ``manifest rekey``)."""
    data = audit.manifest.read_bytes()
    assert data and find_needles(data, "manifest") == []
    assert b"AUDITSON" not in data and b'"PatientName"' not in data
    assert find_needles(audit.key.read_bytes(), "key") == []
    rekey = audit.step("manifest rekey")
    assert audit.manifest in rekey.files


def test_label_sidecars_hold_no_phi(audit):
    """Label sidecars (and their .bak copies) hold no PHI by design: no
    names, IDs, dates or file names; the study only as a hash."""
    from napari_medcnn.training.labels.keys import LABELS_DIR

    sidecars = sorted((audit.src / LABELS_DIR).iterdir())
    assert any(p.suffix == ".json" for p in sidecars)
    assert any(p.name.endswith(".bak") for p in sidecars)
    for p in sidecars:
        data = p.read_bytes()
        assert find_needles(data, p.name) == []
        text = data.decode()
        assert "20210304" not in text  # the study date
        for name in audit.planted:
            assert name.name not in text
        if p.suffix == ".json":  # not vacuous: the labels are there
            d = json.loads(text)
            assert d["slices"] == [[0, 5, "no_tumor"], [6, 11, "tumor"]]
            assert d["group"].startswith("patient:")  # a hash, not the ID


def test_cohort_journal_holds_no_phi(audit):
    """The cohort journal holds no PHI by design (with and without
    ``--deidentify``), though its items came from a patient-named folder."""
    for out in ("cohort", "cohort_deid"):
        journal = audit.work / out / "journal.jsonl"
        rows = [json.loads(line)["row"] for line in journal.read_text().splitlines()]
        assert [r["status"] for r in rows] == ["ok"], f"{out}: {rows}"
        # the item's folder names the patient: the path is there, redacted
        assert "[redacted]" in rows[0]["path"]
        assert find_needles(journal.read_bytes(), _rel(audit, journal)) == []


def test_cohort_outputs_hold_no_phi(audit):
    for out in ("cohort", "cohort_deid"):
        folder = audit.work / out
        names = {p.name for p in folder.iterdir()}
        assert {"results.csv", "results.parquet", "summary.json",
                "report.html", "journal.jsonl"} <= names, names  # fmt: skip
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert any(p.suffix == ".png" for p in files), f"{out}: no thumbnails"
        leaks = []
        for p in files:
            leaks += find_needles(p.read_bytes(), _rel(audit, p))
        assert leaks == [], "\n".join(leaks)
    deid_copies = list((audit.work / "cohort_deid" / "deid").rglob("*.dcm"))
    assert len(deid_copies) == len(audit.planted)


def test_dicom_results_carry_phi_only_in_the_patient_and_study_modules(audit):
    """The documented exception: a DICOM result of an identified series
    carries the patient's identity (so the PACS files it with the patient),
    in the Patient and General Study modules only; nothing else in it (no
    institution, address, description, private tag) and never its name."""
    results = list(audit.results_identified)
    # every other DICOM result written is a copy of one of them (the SR
    # sent to the PACS) or a result of the de-identified copy
    for p in _written(audit):
        data = p.read_bytes()
        if _is_dicom_result(data) and p not in results + audit.results_deid:
            assert _identified_result(audit, p, data), f"unexpected result {p}"
            results.append(p)
    assert len(results) > len(audit.results_identified)  # the PACS copy
    kinds = set()
    problems = []
    for p in results:
        where = _rel(audit, p)
        ds = pydicom.dcmread(p)
        kinds.add(ds.SOPClassUID.name)
        # positive control: attached to the patient's record, by design
        for kw, value in (("PatientName", NAME), ("PatientID", PID),
                          ("PatientBirthDate", BIRTH),
                          ("AccessionNumber", ACCESSION)):  # fmt: skip
            if str(ds.get(kw, "")) != value:
                problems.append(f"{where}: {kw} is not the source's")
        for kw in IDENTITY_OF_RESULT:
            if kw in ds:
                delattr(ds, kw)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        problems += [f"outside the patient/study modules: {h}"
                     for h in find_needles(buf.getvalue(), where)]  # fmt: skip
        problems += find_in_text(p.name, f"{where} (file name)")
    assert kinds == {
        "Comprehensive 3D SR Storage", "Parametric Map Storage",
        "Secondary Capture Image Storage", "Segmentation Storage",
    }, kinds  # fmt: skip
    assert problems == [], "\n".join(problems)


def test_dicom_results_of_a_deidentified_source_hold_no_phi(audit):
    assert len(audit.results_deid) >= 3
    leaks = []
    for p in audit.results_deid:
        ds = pydicom.dcmread(p)
        assert str(ds.PatientName) != NAME and ds.PatientID != PID
        leaks += find_needles(p.read_bytes(), _rel(audit, p))
    assert leaks == [], "\n".join(leaks)


def test_pacs_round_trip(audit):
    """FolderPacs: identified images are stored and retrieved as they are
    (byte-identical copies, under UID names); a study found is shown with
    the name masked; a de-identified send holds no PHI at all."""
    stored = [p for p in audit.pacs_identified.rglob("*.dcm")]
    copies = [p for p in stored if _planted_copy(audit, p.read_bytes())]
    assert len(copies) == len(audit.planted)
    retrieved = list((audit.work / "retrieved").rglob("*.dcm"))
    assert len(retrieved) == len(audit.planted)
    assert all(_planted_copy(audit, p.read_bytes()) for p in retrieved)
    rows = json.dumps(audit.found_rows)
    assert find_in_text(rows, "find_studies display") == []
    sent = list(audit.pacs_deid.rglob("*.dcm"))
    assert len(sent) == len(audit.planted)
    leaks = []
    for p in sent:
        leaks += find_needles(p.read_bytes(), _rel(audit, p))
    assert leaks == [], "\n".join(leaks)


def test_pacs_find_rows_mask_a_description_that_names_the_patient(tmp_path):
    from napari_medcnn.pacs.folder import FolderPacs

    files = plant_series(tmp_path / "src", n=2)
    for p in files:
        ds = pydicom.dcmread(p)
        ds.StudyDescription = f"CT head {NAME}"
        ds.save_as(p, enforce_file_format=True)
    pacs = FolderPacs(tmp_path / "pacs")
    assert len(pacs.store(files).stored) == 2
    (study,) = pacs.find_studies(patient_id=PID)
    (series,) = pacs.find_series(study.study_uid)
    assert NAME.split("^")[0].lower() in study.description.lower()  # planted
    shown = json.dumps([study.display_row(), series.display_row(True, study.tokens)])
    assert find_in_text(shown, "pacs find rows") == []
