"""De-identify one pydicom dataset in memory (the engine; no file I/O).

:func:`deidentify_dataset` applies Table E.1-1 (:mod:`.deid_table`) under
the chosen :class:`~.deid_options.DeidOptions` at every nesting level:

* X removes, Z empties (a sequence becomes empty), D puts a fixed dummy
  valid for the VR (Patient ID and Name get the keyed pseudonym), U and
  every UID of a D row get the keyed ``2.25.`` UID (:mod:`.deid_keys`), K
  keeps, C cleans: dates shift by the patient's offset, times of day stay,
  free text loses identifying words, dates and long numbers.  Sequences that
  are kept, cleaned, dummied or hold references (``X/Z/U*``) are walked and
  their items de-identified the same way.
* Private attributes are removed, except the safe list when the Retain Safe
  Private Option is on; group lengths are dropped (they would be wrong).
* The file meta information gets the new SOP Instance UID and loses the
  source application's AE title and private information.
* Patient Identity Removed is ``YES``; De-identification Method and its Code
  Sequence name the profile, edition and options; Longitudinal Temporal
  Information Modified says ``MODIFIED`` or ``REMOVED``.
* Pixel data is untouched, unless rectangles to blank are given.

Every change is recorded as a :class:`Change` (tag, action, where): the
dry-run report is built from these, never from values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from napari_medcnn.deid.keys import (
    ProjectKey,
    dummy_value,
    scrub_text,
    shift_da,
    shift_dt,
)
from napari_medcnn.deid.options import (
    METHOD_CODES,
    SAFE_PRIVATE,
    DeidOptions,
    method_codes,
)
from napari_medcnn.deid.pixels import blank_rectangles, burned_in_reasons
from napari_medcnn.deid.pixels import tag_text as _str
from napari_medcnn.deid.table import EDITION, lookup, resolve

__all__ = ["Change", "DatasetOutcome", "deidentify_dataset", "patient_identity"]

_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_FREE_TEXT_VRS = frozenset({"LT", "PN", "ST", "UC", "UT"})
#: File meta attributes that name the sending system or carry private data.
_META_REMOVE = (0x00020016, 0x00020017, 0x00020018, 0x00020026, 0x00020027,
                0x00020028, 0x00020100, 0x00020102)  # fmt: skip
_NAME_KEYWORDS = (
    "PatientName", "OtherPatientNames", "PatientBirthName",
    "PatientMotherBirthName", "ReferringPhysicianName", "PerformingPhysicianName",
    "OperatorsName", "NameOfPhysiciansReadingStudy", "RequestingPhysician",
    "PhysiciansOfRecord", "ScheduledPerformingPhysicianName",
)  # fmt: skip
_ID_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID",
    "AdmissionID", "MedicalRecordLocator", "PatientTelephoneNumbers",
)  # fmt: skip
_INSTITUTION_KEYWORDS = (
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
)  # fmt: skip


@dataclass(frozen=True)
class Change:
    """One attribute changed (or kept by an option): never its value.

    ``parents`` are the sequence tags above it (empty at the top level);
    ``note`` says more where the action alone does not (``private``,
    ``time of day kept``, ``not a date: emptied``...).
    """

    tag: int
    action: str
    parents: tuple[int, ...] = ()
    note: str = ""


@dataclass
class DatasetOutcome:
    """What :func:`deidentify_dataset` did to one dataset.

    ``original`` holds identifying values (patient ID and name, accession
    number, the study/series/instance UIDs): it exists for the optional
    mapping manifest only and must never be logged or shown.
    """

    changes: list[Change]
    pseudonym: str
    day_offset: int | None
    original: dict[str, str]
    new: dict[str, str]
    burned_in: list[str]
    rectangles_blanked: int = 0


@dataclass
class _Ctx:
    key: ProjectKey
    options: DeidOptions
    letters: frozenset[str]
    enhanced: bool
    pseudonym: str
    day_offset: int
    terms: list[str]
    changes: list[Change] = field(default_factory=list)


def patient_identity(ds: Dataset) -> str:
    """The string a patient's pseudonym and date shift derive from: Patient
    ID, else name and birth date, else the study UID."""
    pid = _str(ds, "PatientID")
    if pid:
        return f"id:{pid}"
    name, birth = _str(ds, "PatientName"), _str(ds, "PatientBirthDate")
    if name or birth:
        return f"name:{name}:{birth}"
    return f"study:{_str(ds, 'StudyInstanceUID')}"


def _identifying_terms(ds: Dataset, options: DeidOptions) -> list[str]:
    """Identifying strings of ``ds`` to scrub from cleaned text."""
    terms: set[str] = set()
    for kw in _NAME_KEYWORDS:
        full = _str(ds, kw)
        if len(full) >= 3:
            terms.update({full, full.replace("^", " ").strip()})
        for part in _str(ds, kw).replace("^", " ").replace("=", " ").split():
            if len(part.strip(".,")) >= 2:
                terms.add(part.strip(".,"))
    for kw in _ID_KEYWORDS:
        values = (v.strip() for v in _str(ds, kw).split("\\"))
        terms.update(v for v in values if len(v) >= 2)
    if not options.retain_institution_identity:
        for kw in (
            "InstitutionName",
            "InstitutionAddress",
            "InstitutionalDepartmentName",
        ):
            if len(v := _str(ds, kw)) >= 3:
                terms.add(v)
    birth = _str(ds, "PatientBirthDate")
    if len(birth) == 8 and birth.isdigit():
        y, m, d = birth[:4], birth[4:6], birth[6:]
        terms.update(
            {birth, f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}"}
        )
    return sorted(terms, key=len, reverse=True)


def _vr(ds: Dataset, tag: int) -> str:
    """The VR of an element without decoding it: as stored, else (implicit
    VR or UN) the dictionary's; ``US or SS``-style entries give the first."""
    vr = getattr(ds.get_item(tag), "VR", None)
    if vr and vr != "UN":
        return str(vr)
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return "UN"


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, MultiValue | list | tuple) else [value]


def _set(ds: Dataset, tag: int, vr: str, values: list[Any]) -> None:
    value: Any = values[0] if len(values) == 1 else values
    if not values:
        value = empty_value_for_VR(vr)
    ds[tag] = DataElement(tag, vr, value)


def _walk(
    ds: Dataset, ctx: _Ctx, parents: tuple[int, ...], dummy: bool = False
) -> None:
    """Apply the table to ``ds`` and, recursively, its sequences.  Inside a
    sequence whose action is D (Content Sequence...), free text that the
    table does not list (Text Value...) gets a dummy too."""
    _private(ds, ctx, parents)
    for tag in list(ds.keys()):
        if tag.is_private:
            continue
        if tag.element == 0:  # group length: stale once values change
            del ds[tag]
            continue
        row = lookup(tag)
        vr = _vr(ds, tag)
        if row is None:
            if vr == "SQ":
                _items(ds, tag, ctx, parents, dummy)
            elif dummy and vr in _FREE_TEXT_VRS:
                _set(ds, tag, vr, [dummy_value(vr)])
                ctx.changes.append(Change(tag, "D", parents, "free text"))
            continue
        action = resolve(row, ctx.letters, ctx.enhanced)
        try:
            _apply(ds, tag, vr, row.keyword, action, ctx, parents)
        except Exception:  # a value pydicom cannot decode: drop it
            if tag in ds:
                del ds[tag]
            ctx.changes.append(Change(tag, "X", parents, "unreadable value: removed"))


def _items(
    ds: Dataset, tag: int, ctx: _Ctx, parents: tuple[int, ...], dummy: bool = False
) -> None:
    for item in ds[tag].value or ():
        _walk(item, ctx, (*parents, int(tag)), dummy)


def _apply(
    ds: Dataset, tag: int, vr: str, keyword: str, action: str, ctx: _Ctx, parents
) -> None:
    note = ""
    if action == "X":
        del ds[tag]
    elif vr == "SQ":
        if action == "Z":
            ds[tag] = DataElement(tag, "SQ", [])
        else:  # D, U*, K, C: keep the items, de-identified
            _items(ds, tag, ctx, parents, dummy=action == "D")
    elif action == "Z":
        if keyword == "PatientName":
            _set(ds, tag, vr, [ctx.pseudonym])
            note = "pseudonym"
        else:
            _set(ds, tag, vr, [])
    elif action == "K":
        pass
    elif action == "U" or (action == "D" and vr == "UI"):
        values = _values(ds[tag].value)
        _set(ds, tag, vr, [ctx.key.uid(v) for v in values])
        action = "U"
    elif action == "D":
        if keyword == "PatientID":
            _set(ds, tag, vr, [ctx.pseudonym])
            note = "pseudonym"
        else:
            _set(ds, tag, vr, [dummy_value(vr)])
    else:  # C
        action, note = _clean(ds, tag, vr, ctx)
    ctx.changes.append(Change(int(tag), action, parents, note))


def _clean(ds: Dataset, tag: int, vr: str, ctx: _Ctx) -> tuple[str, str]:
    """Action C on a non-sequence attribute; returns (action, note)."""
    values = [str(v) for v in _values(ds[tag].value)]
    if vr in ("DA", "DT"):
        shift = shift_da if vr == "DA" else shift_dt
        new = [shift(v, ctx.day_offset) if v.strip() else "" for v in values]
        if any(v is None for v in new):
            _set(ds, tag, vr, [])
            return "Z", "not a date: emptied"
        _set(ds, tag, vr, new)
        return "C", "date shifted"
    if vr == "TM":
        return "C", "time of day kept"
    if vr in _TEXT_VRS:
        cleaned = [scrub_text(v, ctx.terms) for v in values]
        _set(ds, tag, vr, [c for c in cleaned if c])
        return "C", "text cleaned"
    _set(ds, tag, vr, [])  # nothing to clean it with: keep no value
    return "Z", "cannot clean: emptied"


def _creator(ds: Dataset, group: int, block: int) -> str:
    try:
        value = ds[Tag(group, block)].value
    except (KeyError, Exception):
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value or "").strip().lower()


def _private(ds: Dataset, ctx: _Ctx, parents: tuple[int, ...]) -> None:
    private = [t for t in list(ds.keys()) if t.is_private]
    if not private:
        return
    keep: set[int] = set()
    if ctx.options.retain_safe_private:
        for t in private:
            block = t.element >> 8
            if block < 0x10:
                continue
            creator = _creator(ds, t.group, block)
            if (creator, t.group, t.element & 0xFF) in SAFE_PRIVATE:
                keep.update({int(t), int(Tag(t.group, block))})
    for t in private:
        if int(t) in keep:
            if t.element >= 0x1000:
                ctx.changes.append(Change(int(t), "K", parents, "safe private"))
            continue
        del ds[t]
        ctx.changes.append(Change(int(t), "X", parents, "private"))


def _file_meta(ds: Dataset, ctx: _Ctx) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for tag in _META_REMOVE:
        if tag in meta:
            del meta[tag]
            ctx.changes.append(Change(tag, "X", (), "file meta"))
    uid = meta.get("MediaStorageSOPInstanceUID")
    if uid and not ctx.options.retain_uids:
        meta.MediaStorageSOPInstanceUID = ctx.key.uid(str(uid))
        ctx.changes.append(Change(0x00020003, "U", (), "file meta"))


def _mark(ds: Dataset, options: DeidOptions, blanked: int) -> None:
    from napari_medcnn import __version__

    ds.PatientIdentityRemoved = "YES"
    method = [f"PS3.15 E.1 Basic Profile {EDITION}, napari-medcnn {__version__}"]
    method += options.descriptions()
    if blanked:
        method.append(f"Clean Pixel Data: {blanked} rectangle(s) blanked")
    ds.DeidentificationMethod = [m[:64] for m in method]
    items = []
    for code in method_codes(options, blanked > 0):
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = METHOD_CODES[code]
        items.append(item)
    ds.DeidentificationMethodCodeSequence = items
    modified = "MODIFIED" if options.retain_dates_shifted else "REMOVED"
    ds.LongitudinalTemporalInformationModified = modified


def deidentify_dataset(
    ds: Dataset, key: ProjectKey, options: DeidOptions, *, blank: bool = True
) -> DatasetOutcome:
    """De-identify ``ds`` in place; returns what was changed.

    Args:
        ds: a full dataset (with file meta when read from a file).
        key: the project key (UIDs, pseudonym, date shift).
        options: the profile options; ``options.blank_rectangles`` are
            applied when ``blank`` (a dry run passes False).

    Raises:
        ValueError: rectangles to blank but pixels that cannot be decoded.
    """
    identity = patient_identity(ds)
    original = {
        kw: _str(ds, kw)
        for kw in (
            "PatientID",
            "PatientName",
            "AccessionNumber",
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
        )  # fmt: skip
    }
    burned = burned_in_reasons(ds)
    cleans = {"D", "P", "V"} & options.letters()
    ctx = _Ctx(
        key=key,
        options=options,
        letters=options.letters(),
        enhanced="SharedFunctionalGroupsSequence" in ds,
        pseudonym=key.pseudonym(identity),
        day_offset=key.day_offset(identity),
        terms=_identifying_terms(ds, options) if cleans else [],
    )
    blanked = 0
    if blank and options.blank_rectangles:
        blanked = blank_rectangles(ds, options.blank_rectangles)
        if blanked:
            ctx.changes.append(Change(0x7FE00010, "C", (), f"{blanked} rectangle(s)"))
    _walk(ds, ctx, ())
    _file_meta(ds, ctx)
    _mark(ds, options, blanked)
    new = {
        kw: _str(ds, kw)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    }
    return DatasetOutcome(
        changes=ctx.changes,
        pseudonym=ctx.pseudonym,
        day_offset=ctx.day_offset if options.retain_dates_shifted else None,
        original=original,
        new=new,
        burned_in=burned,
        rectangles_blanked=blanked,
    )
