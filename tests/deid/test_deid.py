"""De-identification core: Table E.1-1 as transcribed, option resolution, keyed
replacements, date shifting, text cleaning, and the engine on datasets with
known PHI (nested sequences, private blocks, file meta, identity flags)."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date

import pytest
from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from napari_medcnn.deid.dataset import deidentify_dataset
from napari_medcnn.deid.keys import (
    MAX_SHIFT_DAYS,
    MIN_SHIFT_DAYS,
    KeyFileError,
    ProjectKey,
    scrub_text,
    shift_da,
    shift_dt,
)
from napari_medcnn.deid.options import DeidOptions, method_codes
from napari_medcnn.deid.table import TABLE, lookup, resolve

KEY = ProjectKey(b"napari-medcnn test key, 32 bytes")

#: Rows typed from PS3.15 2024b Table E.1-1 by hand (tag, Basic Profile
#: action, option letters): an independent check of the packed table.
STANDARD_ROWS = [
    (0x00100010, "Z", ""),  # Patient's Name
    (0x00100020, "Z/D", ""),  # Patient ID
    (0x00100030, "Z", ""),  # Patient's Birth Date
    (0x00100040, "Z", "p"),  # Patient's Sex
    (0x00101010, "X", "p"),  # Patient's Age
    (0x00101020, "X", "p"),  # Patient's Size
    (0x00101030, "X", "p"),  # Patient's Weight
    (0x00101040, "X", ""),  # Patient's Address
    (0x00080050, "Z", ""),  # Accession Number
    (0x00080020, "Z", "T"),  # Study Date
    (0x00080030, "Z", "T"),  # Study Time
    (0x00080021, "X/D", "T"),  # Series Date
    (0x0008002A, "X/Z/D", "T"),  # Acquisition DateTime
    (0x00080080, "X/Z/D", "i"),  # Institution Name
    (0x00080081, "X", "i"),  # Institution Address
    (0x00080090, "Z", ""),  # Referring Physician's Name
    (0x00081030, "X", "D"),  # Study Description
    (0x0008103E, "X", "D"),  # Series Description
    (0x00181030, "X/D", "D"),  # Protocol Name
    (0x00181000, "X/Z/D", "v"),  # Device Serial Number
    (0x00081010, "X/Z/D", "v"),  # Station Name
    (0x00080055, "X", "V"),  # Station AE Title
    (0x0020000D, "U", "u"),  # Study Instance UID
    (0x0020000E, "U", "u"),  # Series Instance UID
    (0x00080018, "U", "u"),  # SOP Instance UID
    (0x00200052, "U", "u"),  # Frame of Reference UID
    (0x00020003, "U", "u"),  # Media Storage SOP Instance UID
    (0x00081140, "X/Z/U*", "u"),  # Referenced Image Sequence
    (0x00082112, "X/Z/U*", "u"),  # Source Image Sequence
    (0x0040A730, "D", "S"),  # Content Sequence
    (0x001021B0, "X", "D"),  # Additional Patient History
    (0x00102110, "X", "PD"),  # Allergies
    (0x00204000, "X", "D"),  # Image Comments
    (0x00180010, "Z/D", "D"),  # Contrast/Bolus Agent
    (0x00880200, "X", ""),  # Icon Image Sequence
    (0x00181203, "Z", "vT"),  # Calibration DateTime
    (0x00200010, "Z", ""),  # Study ID
    (0xFFFAFFFA, "X", ""),  # Digital Signatures Sequence
]


# -- the table ---------------------------------------------------------------
def test_table_matches_standard_edition_counts():
    # 621 rows in 2024b: 617 single tags, three repeating-group rows (curve
    # data, overlay data and comments) and "private attributes"
    assert len(TABLE) == 617
    assert Counter(r.action for r in TABLE.values()) == {
        "X": 380, "D": 92, "U": 54, "Z": 42, "X/D": 22, "X/Z": 11,
        "X/Z/D": 8, "Z/D": 6, "X/Z/U*": 2,
    }  # fmt: skip
    letters = Counter(ch for r in TABLE.values() for ch in r.options)
    # Modified Dates 165, Clean Descriptors 125, Retain UIDs 59, ...
    assert letters["T"] == 165 and letters["D"] == 125 and letters["u"] == 59
    assert letters["v"] + letters["V"] == 57 and letters["p"] + letters["P"] == 13


def test_every_row_is_a_known_tag_with_its_keyword():
    for tag, row in TABLE.items():
        assert tag_for_keyword(row.keyword) == tag
        assert dictionary_description(tag)  # pydicom knows it (PS3.6)
        assert row.action in {"X", "Z", "D", "U", "X/Z", "X/D", "X/Z/D", "Z/D",
                              "X/Z/U*"}  # fmt: skip
        assert set(row.options) <= set("uvViipPTDSG")


@pytest.mark.parametrize(("tag", "action", "options"), STANDARD_ROWS)
def test_rows_typed_from_the_standard(tag, action, options):
    row = lookup(tag)
    assert row is not None, hex(tag)
    assert (row.action, set(row.options)) == (action, set(options))


def test_repeating_groups_and_unlisted_tags():
    assert lookup(0x60023000).action == "X"  # overlay data, any 60xx group
    assert lookup(0x60004000).action == "X"
    assert lookup(0x50001000).action == "X"  # curve data
    assert lookup(0x60000010) is None  # overlay rows: not in the table
    assert lookup(0x00280010) is None  # Rows: kept
    assert lookup(0x00080060) is None  # Modality: kept


def test_resolve_options_and_combined_codes():
    none = DeidOptions().letters()

    def act(kw, opts=none, enhanced=False):
        return resolve(TABLE[tag_for_keyword(kw)], opts, enhanced)

    assert act("PatientName") == "Z"
    assert act("PatientID") == "D"  # pseudonym, not empty
    assert act("PatientAge") == "X"
    assert act("AcquisitionDate") == "Z"  # X/Z
    assert act("SeriesDate") == "X"  # X/D
    assert act("InstitutionName") == "Z"  # X/Z/D
    assert act("ContentDate") == "Z"  # Z/D
    assert act("ContentDate", enhanced=True) == "D"  # Type 1 in enhanced IODs
    assert act("ReferencedImageSequence") == "U*"
    chars = DeidOptions(retain_patient_characteristics=True).letters()
    assert act("PatientAge", chars) == "K" and act("PatientSex", chars) == "K"
    assert act("Allergies", chars) == "C"
    desc = DeidOptions(clean_descriptors=True).letters()
    assert act("SeriesDescription", desc) == "C"
    dev = DeidOptions(retain_device_identity=True)
    assert act("DeviceSerialNumber", dev.letters()) == "K"
    # device identity keeps it, shifted dates clean it: the shift wins
    both = DeidOptions(retain_device_identity=True, retain_dates_shifted=True)
    assert act("CalibrationDateTime", both.letters()) == "C"
    assert act("CalibrationDateTime", dev.letters()) == "K"
    assert act("StudyInstanceUID", DeidOptions(retain_uids=True).letters()) == "K"


def test_method_codes():
    assert method_codes(DeidOptions(retain_safe_private=False), False) == ["113100"]
    opts = DeidOptions(retain_dates_shifted=True, retain_patient_characteristics=True,
                       retain_device_identity=True, clean_descriptors=True,
                       retain_uids=True)  # fmt: skip
    assert method_codes(opts, True) == [
        "113100", "113101", "113105", "113107", "113108", "113109", "113110",
        "113111",
    ]  # fmt: skip


# -- keys ----------------------------------------------------------------------
def test_uid_remap_is_keyed_valid_and_stable():
    a = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    new = KEY.uid(a)
    assert new.startswith("2.25.") and len(new) <= 64
    u = uuid.UUID(int=int(new[5:]))
    assert u.version == 8 and u.variant == uuid.RFC_4122
    assert KEY.uid(a) == new == ProjectKey(b"napari-medcnn test key, 32 bytes").uid(a)
    assert ProjectKey(b"another key of enough length....").uid(a) != new
    assert KEY.uid(a + "1") != new
    assert KEY.uid("") == ""
    assert KEY.uid(a + "\x00") == new  # padding is not part of the UID


def test_pseudonym_and_day_offset():
    p = KEY.pseudonym("id:PID-1")
    assert p.startswith("ANON-") and len(p) == 17 and p == KEY.pseudonym("id:PID-1")
    assert p != KEY.pseudonym("id:PID-2")
    offsets = {KEY.day_offset(f"id:{i}") for i in range(200)}
    assert all(-MAX_SHIFT_DAYS <= d <= -MIN_SHIFT_DAYS for d in offsets)
    assert len(offsets) > 150  # spread, not a constant


def test_key_file_created_private_and_reused(tmp_path):
    path = tmp_path / "keys" / "project.key"
    k1 = ProjectKey.from_file(path, create=True)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_text().strip()) == 64
    k2 = ProjectKey.from_file(path)
    assert k1.uid("1.2.3") == k2.uid("1.2.3") and k1.fingerprint == k2.fingerprint
    with pytest.raises(KeyFileError, match="not found"):
        ProjectKey.from_file(tmp_path / "missing.key")
    short = tmp_path / "short.key"
    short.write_text("abcd\n")
    with pytest.raises(KeyFileError, match="16 bytes"):
        ProjectKey.from_file(short)
    raw = tmp_path / "raw.key"
    raw.write_bytes(b"not hex but long enough secret!!")
    assert ProjectKey.from_file(raw).uid("1.2") == ProjectKey(raw.read_bytes()).uid(
        "1.2"
    )


# -- values ---------------------------------------------------------------------
def test_shift_dates():
    assert shift_da("20200301", -1) == "20200229"  # leap year
    assert shift_da("2020.03.01", -366) == "20190301"
    assert shift_da("202003", -40) == "202001"  # precision kept
    assert shift_da("2020", -400) == "2018"
    assert shift_da("notadate", 5) is None
    assert shift_da("20201345", 5) is None
    assert shift_dt("20200301123045.123456+0100", -1) == "20200229123045.123456+0100"
    assert shift_dt("20200301", 1) == "20200302"
    assert shift_dt("2020xx", 1) is None
    d0, d1 = date(2019, 1, 15), date(2021, 6, 30)
    a, b = shift_da("20190115", -1000), shift_da("20210630", -1000)
    da = date(int(a[:4]), int(a[4:6]), int(a[6:]))
    db = date(int(b[:4]), int(b[4:6]), int(b[6:]))
    assert (db - da) == (d1 - d0)


def test_scrub_text():
    terms = ["Doe", "Jane", "PID-0042", "ACC123"]
    out = scrub_text(
        "MRI brain Doe, JANE pid-0042 acc123 on 2021-03-04 tel 5551234567", terms
    )
    for phi in ("Doe", "JANE", "0042", "acc123", "2021", "5551234567"):
        assert phi.lower() not in out.lower()
    assert out.startswith("MRI brain")
    assert scrub_text("T1 MPRAGE sag", terms) == "T1 MPRAGE sag"
    assert scrub_text("Janet Doerr", terms) == "Janet Doerr"  # whole words only
    assert scrub_text("-0500", []) == "-0500"


# -- the engine --------------------------------------------------------------------
PHI = ("Doe^Jane", "PID-0042", "ACC123", "19600214", "General Hospital", "Dr^Who")


def phi_dataset() -> Dataset:
    """A CT header with PHI at the top level, in nested sequences, in
    private blocks and in the file meta."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7"
    ds.file_meta.SourceApplicationEntityTitle = "GENHOSP_CT1"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4", "1.2.3.4.5"
    ds.FrameOfReferenceUID = "1.2.3.4.9"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PHI[0], PHI[1], PHI[3]
    ds.PatientSex, ds.PatientAge, ds.PatientWeight = "F", "061Y", "70"
    ds.AccessionNumber, ds.InstitutionName = PHI[2], PHI[4]
    ds.ReferringPhysicianName = PHI[5]
    ds.StudyDate, ds.StudyTime = "20210304", "101500"
    ds.AcquisitionDateTime = "20210304101700.5"
    ds.Modality, ds.DeviceSerialNumber = "CT", "SN-998877"
    ds.StudyDescription = "CT head Doe PID-0042"
    ds.SeriesDescription = "axial 5mm"
    ds.Rows, ds.Columns = 4, 4
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.6.1"
    ds.ReferencedImageSequence = Sequence([ref])
    req = Dataset()
    req.AccessionNumber = PHI[2]
    req.RequestedProcedureID = "RP-77"
    req.RequestedProcedureDescription = "CT head for Doe"
    ds.RequestAttributesSequence = Sequence([req])  # X: goes whole
    inst = Dataset()
    inst.ReferencedSOPInstanceUID = "1.2.3.4.5.6.2"
    series = Dataset()  # not in the table: kept, its items de-identified
    series.SeriesInstanceUID = "1.2.3.4.5"
    series.ReferencedInstanceSequence = Sequence([inst])
    series.AccessionNumber = PHI[2]
    ds.ReferencedSeriesSequence = Sequence([series])
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "seen by Dr Who for Doe^Jane"
    item.PersonName = PHI[5]
    ds.ContentSequence = Sequence([item])  # D: items kept, free text dummied
    other = Dataset()
    other.PatientID = "OLD-PID-9"
    ds.OtherPatientIDsSequence = Sequence([other])
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "IS", "1000")  # b-value: safe-listed
    block.add_new(0x99, "LO", "Doe^Jane")  # private with PHI
    ds.private_block(0x0029, "ACME PHI", create=True).add_new(0x10, "LO", "PID-0042")
    return ds


def _all_text(ds: Dataset) -> str:
    parts = [repr(e.value) for e in ds.iterall()]
    parts += [repr(e.value) for e in ds.file_meta]
    return "\n".join(parts)


def test_engine_removes_phi_everywhere():
    ds = phi_dataset()
    out = deidentify_dataset(ds, KEY, DeidOptions())
    text = _all_text(ds)
    for phi in (*PHI, "Jane", "GENHOSP", "OLD-PID-9", "RP-77", "SN-998877", "061Y"):
        assert phi not in text, phi
    assert ds.PatientIdentityRemoved == "YES"
    assert (
        ds.PatientID == ds.PatientName == out.pseudonym == KEY.pseudonym("id:PID-0042")
    )
    assert (
        ds.SOPInstanceUID
        == ds.file_meta.MediaStorageSOPInstanceUID
        == KEY.uid("1.2.3.4.5.6.7")
    )
    assert ds.StudyInstanceUID == KEY.uid("1.2.3.4")
    assert ds.FrameOfReferenceUID == KEY.uid("1.2.3.4.9")
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == KEY.uid(
        "1.2.3.4.5.6.1"
    )
    assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == CTImageStorage
    # nested attributes get the table's actions too
    assert "RequestAttributesSequence" not in ds
    series = ds.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == ds.SeriesInstanceUID == KEY.uid("1.2.3.4.5")
    assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == KEY.uid(
        "1.2.3.4.5.6.2"
    )
    assert series.AccessionNumber == ""
    item = ds.ContentSequence[0]
    assert item.ValueType == "TEXT" and item.TextValue == "ANONYMIZED"
    assert item.PersonName == "ANONYMIZED"
    assert "OtherPatientIDsSequence" not in ds
    assert "StudyDescription" not in ds and "SeriesDescription" not in ds
    assert ds.StudyDate == "" and ds.InstitutionName == "" and ds.PatientSex == ""
    assert "PatientAge" not in ds and "PatientWeight" not in ds
    assert ds.Modality == "CT" and ds.Rows == 4  # not in the table: kept
    # private: only the safe-listed b-value (and its creator) survive
    private = [e for e in ds if e.tag.is_private]
    assert [(e.tag, str(e.value)) for e in private] == [
        (0x00190010, "SIEMENS MR HEADER"), (0x0019100C, "1000"),
    ]  # fmt: skip
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    codes = [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113111"]
    assert all(
        i.CodingSchemeDesignator == "DCM" for i in ds.DeidentificationMethodCodeSequence
    )
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert all(len(m) <= 64 for m in ds.DeidentificationMethod)
    assert out.original["PatientID"] == "PID-0042"  # for the manifest only
    assert out.new["SOPInstanceUID"] == ds.SOPInstanceUID
    # the change log names tags and actions, never values
    changes = {(c.parents, c.tag, c.action) for c in out.changes}
    assert ((), 0x00100010, "Z") in changes
    assert ((0x00081115,), 0x00080050, "Z") in changes
    assert ((0x00081115, 0x0008114A), 0x00081155, "U") in changes
    assert ((0x0040A730,), 0x0040A160, "D") in changes
    assert ((0x00081140,), 0x00081155, "U") in changes
    assert ((), 0x00291010, "X") in changes
    assert PHI[0] not in repr(out.changes)


def test_engine_options_keep_what_they_say():
    ds = phi_dataset()
    opts = DeidOptions(retain_dates_shifted=True, retain_patient_characteristics=True,
                       retain_device_identity=True, clean_descriptors=True,
                       retain_safe_private=False)  # fmt: skip
    out = deidentify_dataset(ds, KEY, opts)
    offset = KEY.day_offset("id:PID-0042")
    assert out.day_offset == offset
    assert ds.StudyDate == shift_da("20210304", offset)
    assert ds.AcquisitionDateTime == shift_dt("20210304101700.5", offset)
    assert ds.StudyTime == "101500"  # time of day kept
    assert (ds.PatientSex, ds.PatientAge, str(ds.PatientWeight)) == ("F", "061Y", "70")
    assert ds.DeviceSerialNumber == "SN-998877"
    assert ds.StudyDescription == "CT head"  # cleaned, not removed
    assert ds.SeriesDescription == "axial 5mm"
    assert ds.PatientBirthDate == ""  # no option keeps it
    assert not [e for e in ds if e.tag.is_private]
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert (
        ds.RequestAttributesSequence[0].RequestedProcedureDescription == "CT head for"
    )


def test_engine_retain_uids():
    ds = phi_dataset()
    deidentify_dataset(ds, KEY, DeidOptions(retain_uids=True))
    assert (
        ds.SOPInstanceUID == "1.2.3.4.5.6.7" == ds.file_meta.MediaStorageSOPInstanceUID
    )
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.5.6.1"
    assert "113110" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]


def test_unparseable_dates_are_emptied_not_kept():
    ds = phi_dataset()
    ds.StudyDate = "2021-03-04"  # not a DA value
    ds.SeriesDate = "bogus"
    out = deidentify_dataset(ds, KEY, DeidOptions(retain_dates_shifted=True))
    assert ds.StudyDate == "" and ds.SeriesDate == ""
    notes = {c.tag: c.note for c in out.changes}
    assert notes[0x00080020] == "not a date: emptied"


def test_patient_without_id_gets_pseudonym_from_name_and_birth_date():
    a, b = phi_dataset(), phi_dataset()
    for ds in (a, b):
        del ds.PatientID
    b.PatientBirthDate = "19700101"
    pa = deidentify_dataset(a, KEY, DeidOptions()).pseudonym
    pb = deidentify_dataset(b, KEY, DeidOptions()).pseudonym
    assert pa != pb and pa.startswith("ANON-")
