"""De-identification of files and folders: series and multi-frame UID
consistency, re-loading with the same voxels and geometry, shifted dates
that keep intervals, bad input (non-DICOM, read-only or full output, a full
disk mid-way), inputs never modified, dry run, manifest, pixel blanking, and
the ``deidentify`` subcommand."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _helpers import KEY, PHI, grep_phi, phi_series
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from napari_medcnn.deid import write as deid_write
from napari_medcnn.deid.run import (
    DeidError,
    DeidOptions,
    ProjectKey,
    deidentify,
    iter_deidentify,
)
from napari_medcnn.io import load


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def series(tmp_path):
    root = tmp_path / "in"
    paths = phi_series(root / "DOE_JANE" / "ct")
    return root, paths


# -- series, references, geometry ------------------------------------------------
def test_series_uids_consistent_and_reload_identical(series, tmp_path):
    root, paths = series
    before = hashes(root)
    steps = []
    gen = iter_deidentify([root], tmp_path / "out", key=KEY)
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            result = stop.value
            break
    assert steps[0] == ("deidentify", 0, 5) and steps[-1] == ("deidentify", 5, 5)
    assert hashes(root) == before  # inputs never modified
    assert len(result.outputs) == 5 and not result.failed and not result.skipped
    orig = [pydicom.dcmread(p) for p in paths]
    sources = [pydicom.dcmread(s) for s in result.sources]
    new = {
        str(o.SOPInstanceUID): pydicom.dcmread(n)
        for o, n in zip(sources, result.outputs)
    }
    for o in orig:
        d = new[str(o.SOPInstanceUID)]
        assert d.SOPInstanceUID == KEY.uid(o.SOPInstanceUID)
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
        assert d.SeriesInstanceUID == KEY.uid(o.SeriesInstanceUID)
        assert d.StudyInstanceUID == KEY.uid(o.StudyInstanceUID)
        assert d.FrameOfReferenceUID == KEY.uid(o.FrameOfReferenceUID)
        # the reference to the first slice points at its new UID
        first_new = KEY.uid(orig[0].SOPInstanceUID)
        assert d.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first_new
        assert d.PixelData == o.PixelData  # pixels untouched
    assert len({str(d.SOPInstanceUID) for d in new.values()}) == 5
    assert len({d.SeriesInstanceUID for d in new.values()}) == 1
    # one series folder; names from new values only
    assert len(result.series_dirs) == 1
    assert grep_phi(tmp_path / "out") == []
    (a,) = load(root / "DOE_JANE" / "ct")
    (b,) = load(result.series_dirs[0])
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine)
    assert a.spacing == b.spacing and a.origin == b.origin


def test_same_key_same_bytes_other_key_other_uids(series, tmp_path):
    root, _ = series
    r1 = deidentify([root], tmp_path / "o1", key=KEY)
    r2 = deidentify([root], tmp_path / "o2", key=KEY)
    assert [p.relative_to(tmp_path / "o1") for p in r1.outputs] == [
        p.relative_to(tmp_path / "o2") for p in r2.outputs
    ]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(r1.outputs, r2.outputs))
    r3 = deidentify([root], tmp_path / "o3", key=ProjectKey(b"x" * 32))
    u1 = pydicom.dcmread(r1.outputs[0]).SeriesInstanceUID
    assert pydicom.dcmread(r3.outputs[0]).SeriesInstanceUID != u1


def test_multiframe_and_series_references_stay_consistent(tmp_path, series):
    """An enhanced CT (2 frames) whose frames reference slices of a series:
    exported together, the references point at the new slice UIDs, and the
    multi-frame re-loads with the same voxels and geometry."""
    root, paths = series
    mf = pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm", download=False))
    slice_uids = [str(pydicom.dcmread(p).SOPInstanceUID) for p in paths]
    for k, frame in enumerate(mf.PerFrameFunctionalGroupsSequence):
        src = Dataset()
        src.ReferencedSOPClassUID = pydicom.uid.CTImageStorage
        src.ReferencedSOPInstanceUID = slice_uids[k]
        der = Dataset()
        der.SourceImageSequence = Sequence([src])
        frame.DerivationImageSequence = Sequence([der])
    mf_dir = root / "mf"
    mf_dir.mkdir()
    mf.save_as(mf_dir / "enhanced.dcm")
    dim_uid = str(mf.DimensionOrganizationSequence[0].DimensionOrganizationUID)
    result = deidentify([root], tmp_path / "out", key=KEY)
    assert not result.failed
    mf_out = result.outputs[result.sources.index((mf_dir / "enhanced.dcm").resolve())]
    out_mf = pydicom.dcmread(mf_out)
    new_slices = {str(pydicom.dcmread(p).SOPInstanceUID) for p in result.outputs} - {
        str(out_mf.SOPInstanceUID)
    }
    refs = [
        str(
            f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        )
        for f in out_mf.PerFrameFunctionalGroupsSequence
    ]
    assert refs == [KEY.uid(u) for u in slice_uids[:2]] and set(refs) <= new_slices
    assert out_mf.DimensionOrganizationSequence[0].DimensionOrganizationUID == KEY.uid(
        dim_uid
    )
    assert {str(i.DimensionOrganizationUID) for i in out_mf.DimensionIndexSequence} == {
        KEY.uid(dim_uid)
    }
    assert out_mf.FrameOfReferenceUID == KEY.uid(mf.FrameOfReferenceUID)
    (a,) = load(mf_dir / "enhanced.dcm")
    (b,) = load(mf_out)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine)


# -- dates ---------------------------------------------------------------------
def _da(v: str) -> date:
    return date(int(v[:4]), int(v[4:6]), int(v[6:8]))


def test_shifted_dates_keep_intervals_between_studies(tmp_path):
    root = tmp_path / "in"
    phi_series(root / "s1", study_date="20190115", seed="a", accession="A1")
    phi_series(root / "s2", study_date="20210630", seed="b", accession="A2")
    phi_series(root / "s3", study_date="20210701", seed="c", accession="A3",
               patient=("Roe^Richard", "PID-0099"))  # fmt: skip
    opts = DeidOptions(retain_dates_shifted=True)
    result = deidentify([root], tmp_path / "out", key=KEY, options=opts)
    by_study: dict[str, tuple[str, str, str, str]] = {}
    for src, out in zip(result.sources, result.outputs):
        o, d = pydicom.dcmread(src), pydicom.dcmread(out)
        assert d.StudyTime == o.StudyTime  # times of day kept
        assert d.AcquisitionDateTime[8:] == o.AcquisitionDateTime[8:]
        assert _da(d.AcquisitionDateTime) == _da(d.StudyDate)
        assert d.LongitudinalTemporalInformationModified == "MODIFIED"
        by_study[str(o.StudyDate)] = (d.StudyDate, str(d.PatientID), o.PatientID, "")
    (n1, p1, _, _), (n2, p2, _, _), (n3, p3, _, _) = (
        by_study["20190115"],
        by_study["20210630"],
        by_study["20210701"],
    )
    assert p1 == p2 != p3  # one pseudonym per patient
    assert _da(n2) - _da(n1) == date(2021, 6, 30) - date(2019, 1, 15)
    shift = (_da(n1) - date(2019, 1, 15)).days
    assert shift == KEY.day_offset("id:PID-0042") and -3652 <= shift <= -365
    assert (_da(n3) - date(2021, 7, 1)).days == KEY.day_offset("id:PID-0099")
    # without the option, no date survives
    plain = deidentify([root], tmp_path / "plain", key=KEY)
    for out in plain.outputs:
        d = pydicom.dcmread(out)
        assert d.StudyDate == "" and d.AcquisitionDateTime == ""
        assert d.LongitudinalTemporalInformationModified == "REMOVED"


# -- bad input ---------------------------------------------------------------------
def test_non_dicom_files_are_skipped_and_reported(series, tmp_path):
    root, _ = series
    (root / "notes.txt").write_text("Doe^Jane: call back")
    (root / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (root / "fake.dcm").write_bytes(b"hello")
    result = deidentify([root, tmp_path / "missing"], tmp_path / "out", key=KEY)
    reasons = {Path(p).name: r for p, r in result.skipped}
    assert reasons == {"notes.txt": "not a DICOM file", "scan.png": "not a DICOM file",
                       "fake.dcm": "not a DICOM file",
                       "missing": "no such file or folder"}  # fmt: skip
    assert len(result.outputs) == 5
    summary = result.report.summary_text()
    assert "3 file(s) skipped: not a DICOM file" in summary
    assert "Doe" not in summary and "notes.txt" not in summary


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_read_only_output_fails_before_any_write(series, tmp_path, monkeypatch):
    root, _ = series
    out = tmp_path / "ro"

    def refuse(folder):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(deid_write, "_open_probe", refuse)
    with pytest.raises(DeidError, match="cannot write to the output folder.*Read-only"):
        deidentify([root], out, key=KEY)
    assert _files(out) == []


def test_real_permission_denied(series, tmp_path):
    root, _ = series
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions do not block writes")
        with pytest.raises(DeidError, match="Permission denied"):
            deidentify([root], locked / "out", key=KEY)
    finally:
        locked.chmod(0o755)


def test_full_output_folder_fails_before_any_write(series, tmp_path, monkeypatch):
    root, _ = series
    real = deid_write.shutil.disk_usage

    def tiny(path):
        return real(path)._replace(free=4096)

    monkeypatch.setattr(deid_write.shutil, "disk_usage", tiny)
    with pytest.raises(DeidError, match=r"is full: 0\.0 MB free, about \d+\.\d MB"):
        deidentify([root], tmp_path / "out", key=KEY)
    assert _files(tmp_path / "out") == []


def test_disk_full_midway_leaves_only_complete_files(series, tmp_path, monkeypatch):
    root, _ = series
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(
        DeidError, match=r"after \d complete file\(s\).*No space"
    ) as err:
        deidentify([root], tmp_path / "out", key=KEY)
    n = int(str(err.value).split("after ")[1].split()[0])
    written = _files(tmp_path / "out")  # temporary files included, if any
    assert 2 <= n <= 4 and len(written) == n  # the failed file left nothing
    assert all(p.suffix == ".dcm" for p in written)
    for p in written:
        assert pydicom.dcmread(p).PatientIdentityRemoved == "YES"


@pytest.mark.parametrize("where", ["inside_input", "contains_input", "manifest_inside"])
def test_overlapping_paths_are_refused(series, tmp_path, where):
    root, _ = series
    out = {"inside_input": root / "out", "contains_input": tmp_path}.get(
        where, tmp_path / "out"
    )
    manifest = out / "map.json" if where == "manifest_inside" else None
    with pytest.raises(DeidError, match="overlaps|apart"):
        deidentify([root], out, key=KEY, manifest=manifest)
    assert not (root / "out").exists()


def test_output_path_that_is_a_file(series, tmp_path):
    root, _ = series
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DeidError, match="is a file"):
        deidentify([root], tmp_path / "afile", key=KEY)


# -- dry run, report, manifest ----------------------------------------------------
def test_dry_run_writes_nothing_and_matches_the_export(series, tmp_path):
    root, _ = series
    dry = deidentify([root], tmp_path / "out", key=KEY, dry_run=True,
                     manifest=tmp_path / "m.json")  # fmt: skip
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()
    assert dry.outputs == [] and dry.dry_run
    real = deidentify([root], tmp_path / "out", key=KEY)
    assert dry.report.rows() == real.report.rows()
    text = dry.report.summary_text() + json.dumps(dry.report.to_dict())
    for phi in (*PHI, "Doe", "Jane", str(root)):
        assert phi not in text
    rows = {(r.tag, r.action) for r in dry.report.rows()}
    assert {("(0010,0010)", "Z"), ("(0010,0020)", "D"), ("(0008,0050)", "Z"),
            ("(0020,000D)", "U"), ("(0010,1040)", "X"), ("(0029,1001)", "X"),
            ("(0008,1155)", "U")} <= rows  # fmt: skip
    nested = next(r for r in dry.report.rows() if r.tag == "(0008,1155)")
    assert nested.where == "(0008,1140)" and nested.files == 5
    assert "private attributes (10 removed)" in dry.report.summary_text()


def test_manifest_only_where_asked(series, tmp_path):
    root, paths = series
    mpath = tmp_path / "private" / "map.json"
    result = deidentify([root], tmp_path / "out", key=KEY, manifest=mpath)
    assert result.manifest == mpath and mpath.stat().st_mode & 0o777 == 0o600
    data = json.loads(mpath.read_text())
    (pat,) = data["patients"]
    assert pat["patient_id"] == "PID-0042" and pat["patient_name"] == "Doe^Jane"
    assert pat["pseudonym"] == KEY.pseudonym("id:PID-0042")
    assert data["key_fingerprint"] == KEY.fingerprint
    uid = str(pydicom.dcmread(paths[0]).SOPInstanceUID)
    assert {"kind": "SOPInstanceUID", "original": uid, "new": KEY.uid(uid)} in data[
        "uids"
    ]
    assert data["accession_numbers"][0]["original"] == "ACC-77812"
    assert len(data["files"]) == 5
    assert grep_phi(tmp_path / "out") == []  # the export stays clean
    csv_path = tmp_path / "private" / "map.csv"
    deidentify([root], tmp_path / "out2", key=KEY, manifest=csv_path)
    lines = csv_path.read_text().splitlines()
    assert (
        lines[0] == "kind,original,new"
        and "PatientID,PID-0042," + pat["pseudonym"] in lines
    )
