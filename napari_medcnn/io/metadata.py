"""Non-identifying DICOM tags for ``layer.metadata``, and layer names.

Patient name, ID and birth date are added only with ``include_phi=True``
(see :mod:`napari_medcnn.config`).  Dates, institution and operator names
and the like are never copied.  UIDs are kept: they are not patient data and
later features key labels by series UID.  The patient ID is kept only as a
one-way hash (``patient_id_hash``, :func:`patient_hash`), so that training
can keep every study of one patient on the same side of a split.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pydicom.valuerep import PersonName

#: keyword in the dataset -> key in the metadata dict (plain values).
SAFE_TAGS: dict[str, str] = {
    "Modality": "modality",
    "SeriesDescription": "series_description",
    "SeriesNumber": "series_number",
    "StudyDescription": "study_description",
    "StudyInstanceUID": "study_uid",
    "SeriesInstanceUID": "series_uid",
    "FrameOfReferenceUID": "frame_of_reference_uid",
    "SOPClassUID": "sop_class_uid",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "manufacturer_model",
    "BodyPartExamined": "body_part",
    "RescaleType": "rescale_type",
    "PhotometricInterpretation": "photometric_interpretation",
    "NumberOfFrames": "number_of_frames",
    "Rows": "rows",
    "Columns": "columns",
    "BitsStored": "bits_stored",
    "SliceThickness": "slice_thickness_mm",
    "PixelSpacing": "pixel_spacing_mm",
    "ImageOrientationPatient": "image_orientation_patient",
    "WindowCenter": "window_center",
    "WindowWidth": "window_width",
    "ImageType": "image_type",
    "DoseUnits": "dose_units",
    "PatientPosition": "patient_position",
}
PHI_TAGS: dict[str, str] = {
    "PatientName": "patient_name",
    "PatientID": "patient_id",
    "PatientBirthDate": "patient_birth_date",
}


#: Salt and rounds of :func:`patient_hash` (changing them changes every
#: stored group key, so existing label sidecars would split differently).
PATIENT_HASH_SALT = b"napari-medcnn patient group v1"
PATIENT_HASH_ROUNDS = 10_000


def patient_hash(patient_id: str | None) -> str | None:
    """A one-way key for a PatientID: 16 hex digits of PBKDF2-HMAC-SHA256
    (fixed salt, :data:`PATIENT_HASH_ROUNDS` rounds, about 3 ms), or None
    for a missing or blank ID.

    The same ID gives the same key in every session and on every machine
    (surrounding spaces ignored), so label sidecars written anywhere group
    alike.  The rounds make a dictionary of IDs slow to build, but a short
    numeric ID space can still be searched: the key is pseudonymous, not
    anonymous, and is never shown to the user.
    """
    text = str(patient_id or "").strip()
    if not text:
        return None
    raw = hashlib.pbkdf2_hmac(
        "sha256", text.encode("utf-8"), PATIENT_HASH_SALT, PATIENT_HASH_ROUNDS
    )
    return raw.hex()[:16]


def _plain(value: Any) -> Any:
    """A DICOM value as JSON-friendly Python (float/int/str or lists)."""
    if value is None or isinstance(value, bytes | bytearray | Sequence):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str | PersonName):
        return str(value)
    if isinstance(value, MultiValue | list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        value = _plain(ds.get(keyword))
    except Exception:  # a malformed value must not stop loading
        return None
    return None if value in (None, "", []) else value


def dataset_metadata(
    ds: Dataset, *, include_phi: bool = False, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The metadata dict for a layer built from ``ds`` (and ``extra``).

    Args:
        ds: the (first) dataset of the scan; header-only is enough.
        include_phi: add patient name, ID and birth date.
        extra: values from the pixel pipeline/geometry, merged last.

    Returns:
        A JSON-friendly dict: ``modality``, ``series_uid``, ...,
        ``transfer_syntax``, ``sop_class_name``, and ``patient_id_hash``
        (:func:`patient_hash` of PatientID, never the ID itself) when the
        file has a patient ID.
    """
    md: dict[str, Any] = {}
    tokens = phi_tokens(ds)
    for kw, key in SAFE_TAGS.items():
        value = _get(ds, kw)
        if isinstance(value, str):  # a description may repeat the name
            value = redact(value, tokens)
        if value is not None:
            md[key] = value
    ts = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if ts:
        md["transfer_syntax"] = f"{UID(str(ts)).name} ({ts})"
    if "sop_class_uid" in md:
        md["sop_class_name"] = UID(md["sop_class_uid"]).name
    if key := patient_hash(_get(ds, "PatientID")):
        md["patient_id_hash"] = key
    if include_phi:
        for kw, key in PHI_TAGS.items():
            value = _get(ds, kw)
            md[key] = "" if value is None else str(value)
    md["phi_included"] = bool(include_phi)
    if extra:
        md.update(extra)
    return md


#: attributes whose values identify the patient; a free-text field that
#: repeats one of them (a description "CT for Doe^Jane", a folder named
#: after the patient) is redacted with :func:`redact`.
IDENTITY_TAGS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "MedicalRecordLocator",
)
REDACTED = "[redacted]"


def phi_tokens(ds: Dataset) -> frozenset[str]:
    """The identifying strings of ``ds``: each :data:`IDENTITY_TAGS` value
    whole, the parts of names (split at ``^``, spaces, commas), and a date
    (the birth date) also as it is written with separators.

    Parts shorter than 3 characters are left out (they would redact ordinary
    words); the tokens are never stored or exported, only used to redact.
    """
    out: set[str] = set()
    for kw in IDENTITY_TAGS:
        try:
            value = ds.get(kw)
        except Exception:
            continue
        values = value if isinstance(value, MultiValue | list | tuple) else [value]
        for v in values:
            text = str(v or "").strip()
            if not text:
                continue
            parts = {text, text.replace("^", " ").strip()}
            parts.update(re.split(r"[\^\s,=]+", text))
            if kw == "PatientBirthDate":
                parts.update(_date_forms(text))
            out.update(p for p in parts if len(p) >= 3)
    return frozenset(out)


_DA = re.compile(r"(\d{4})(\d{2})(\d{2})")


def _date_forms(text: str) -> set[str]:
    """The ways people write a DICOM date (DA, ``YYYYMMDD``) in a folder or
    file name: ``1941-12-23``, ``1941.12.23``, ``1941/12/23``,
    ``1941_12_23``, ``23.12.1941``, ``23-12-1941``, ``23/12/1941``,
    ``12/23/1941``; none for anything else."""
    m = _DA.fullmatch(text)
    if not m:
        return set()
    y, mo, d = m.groups()
    forms = {f"{y}{sep}{mo}{sep}{d}" for sep in "-./_"}
    forms |= {f"{d}{sep}{mo}{sep}{y}" for sep in "-./_"}
    forms.add(f"{mo}/{d}/{y}")
    return forms


def identity_tokens(
    patient_name: str = "", patient_id: str = "", birth_date: str = ""
) -> frozenset[str]:
    """:func:`phi_tokens` of a patient known by name, ID and birth date
    (DA, ``YYYYMMDD``) only, as a header summary keeps them."""
    ds = Dataset()
    for kw, value in (("PatientName", patient_name), ("PatientID", patient_id),
                      ("PatientBirthDate", birth_date)):  # fmt: skip
        if value:
            setattr(ds, kw, str(value))
    return phi_tokens(ds)


def redact(text: str, tokens: frozenset[str] | set[str]) -> str:
    """``text`` with every token of ``tokens`` replaced by :data:`REDACTED`
    (case-insensitive, longest token first)."""
    if not text or not tokens:
        return text
    for tok in sorted(tokens, key=len, reverse=True):
        text = re.sub(re.escape(tok), REDACTED, text, flags=re.IGNORECASE)
    return text


def layer_name(ds: Dataset, suffix: str = "") -> str:
    """Modality + series description, else ``"<modality> series N"``.

    Never uses patient data: a description that repeats the patient's name,
    ID or another identity value (:func:`phi_tokens`) is redacted.
    ``suffix`` distinguishes parts of a split series (e.g. ``"echo 2"``).
    """
    modality = str(_get(ds, "Modality") or "DICOM")
    desc = redact(str(_get(ds, "SeriesDescription") or ""), phi_tokens(ds))
    number = _get(ds, "SeriesNumber")
    if desc:
        name = f"{modality} {str(desc).strip()}"
    elif number is not None:
        name = f"{modality} series {number}"
    else:
        name = f"{modality} image"
    return f"{name} ({suffix})" if suffix else name
