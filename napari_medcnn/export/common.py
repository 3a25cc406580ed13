"""What every DICOM result object shares (pure core, no Qt): the refusal
error, the algorithm's identity (IHE AI Results: name, version, a device
UID that changes when the model is retrained), the private coding scheme of
the class concepts, the series description, and the atomic file write.

The class concepts live in the private coding scheme :data:`SCHEME`
(``99NMEDCNN``): a class's code value is its name (characters outside
``A-Z a-z 0-9 _ - .`` replaced by ``_``; names longer than 16 characters
become ``C`` + 15 hex digits of their SHA-256), its meaning the class
name.  A card may record its own codes instead, in
``provenance["dicom_codes"]``: ``{class name: [value, designator,
meaning]}`` (e.g. SNOMED CT codes), which :func:`class_code` then uses.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_medcnn import __version__

__all__ = [
    "MANUFACTURER",
    "SCHEME",
    "Algorithm",
    "ExportError",
    "class_code",
    "coding_scheme_items",
    "contributing_equipment",
    "device_uid",
    "series_description",
    "write_dataset",
]

#: the Manufacturer of every object napari-medcnn writes
MANUFACTURER = "napari-medcnn"
#: the private coding scheme of the class concepts (and of the few concepts
#: DICOM has no code for: uncertainty, domain score)
SCHEME = "99NMEDCNN"
SCHEME_NAME = "napari-medcnn model classes"
#: the namespace of the device UUIDs (``uuid5(URL, "napari-medcnn")``)
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/napari-medcnn")
_CODE_VALUE = re.compile(r"[^A-Za-z0-9_.\-]")


class ExportError(ValueError):
    """A DICOM result cannot be written for this input; the message names
    the file (or layer) and says why (e.g. a NIfTI file has no DICOM source
    to attach results to)."""


@dataclass(frozen=True)
class Algorithm:
    """The model that made a result, as DICOM names it.

    Attributes:
        name: the model's display name (card ``name``, else its arch).
        model_id: the card's ``model_id`` (sha256 of the weights, 16 hex):
            the algorithm version, and the seed of :attr:`device_uid`.
        classes: class names in output order.
        codes: the card's recorded class codes (see module docstring), or
            empty.
    """

    name: str
    model_id: str
    classes: tuple[str, ...] = ()
    codes: Mapping[str, Any] | None = None

    @classmethod
    def from_card(cls, card: Any) -> Algorithm:
        """From a :class:`~napari_medcnn.models.card.ModelCard`."""
        codes = (getattr(card, "provenance", None) or {}).get("dicom_codes")
        return cls(
            name=str(card.name or card.arch),
            model_id=str(card.model_id or "unknown"),
            classes=tuple(card.classes),
            codes=dict(codes) if isinstance(codes, Mapping) else None,
        )

    @classmethod
    def from_result(cls, result: Any, card: Any = None) -> Algorithm:
        """From a classification or saliency result (``model_id``,
        ``model_name``, ``classes``), the card's recorded codes added."""
        if card is not None:
            return cls.from_card(card)
        return cls(
            name=str(getattr(result, "model_name", "") or "napari-medcnn model"),
            model_id=str(getattr(result, "model_id", "") or "unknown"),
            classes=tuple(getattr(result, "classes", ()) or ()),
        )

    @property
    def version(self) -> str:
        """The algorithm version: the model id."""
        return self.model_id

    @property
    def device_uid(self) -> str:
        """The device observer UID (see :func:`device_uid`)."""
        return device_uid(self.model_id)

    def code(self, class_name: str) -> Any:
        """The coded concept of ``class_name`` (:func:`class_code`)."""
        return class_code(class_name, self.codes)

    def sr_algorithm(self) -> Any:
        """highdicom's SR ``AlgorithmIdentification`` (TID 4019)."""
        import highdicom as hd

        return hd.sr.AlgorithmIdentification(name=self.name[:64], version=self.version)

    def algorithm_sequence(self) -> Any:
        """highdicom's ``AlgorithmIdentificationSequence`` (SEG segments),
        family Artificial Intelligence (DCM 123110)."""
        import highdicom as hd
        from pydicom.sr.codedict import codes

        return hd.AlgorithmIdentificationSequence(
            name=self.name[:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=self.version,
            source=MANUFACTURER,
        )


def device_uid(model_id: str) -> str:
    """A UID for the model as a device (IHE AI Results' device observer):
    ``2.25.<integer>`` of the name-based UUID (version 5) of the model id,
    so the same weights give the same UID and retrained weights (a new id)
    a new one."""
    return f"2.25.{uuid.uuid5(_UUID_NAMESPACE, str(model_id)).int}"


def class_code(class_name: str, recorded: Mapping[str, Any] | None = None) -> Any:
    """The coded concept of a class (highdicom ``CodedConcept``).

    Args:
        class_name: the class as the card names it.
        recorded: the card's ``provenance["dicom_codes"]``, or None.

    Returns:
        The recorded code when there is one, else a code in :data:`SCHEME`
        whose value is derived from the name (module docstring).
    """
    from highdicom.sr import CodedConcept

    got = (recorded or {}).get(class_name)
    if got:
        value, designator, meaning = (list(got) + [class_name])[:3]
        return CodedConcept(str(value), str(designator), str(meaning)[:64])
    value = _CODE_VALUE.sub("_", class_name) or "_"
    if len(value) > 16:
        value = "C" + hashlib.sha256(class_name.encode()).hexdigest()[:15]
    return CodedConcept(value, SCHEME, class_name[:64] or value)


def private_code(value: str, meaning: str) -> Any:
    """A concept of :data:`SCHEME` (for what DICOM has no code for)."""
    from highdicom.sr import CodedConcept

    return CodedConcept(value, SCHEME, meaning)


def coding_scheme_items() -> list[Any]:
    """The Coding Scheme Identification item that declares :data:`SCHEME`."""
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return [
        CodingSchemeIdentificationItem(
            designator=SCHEME,
            name=SCHEME_NAME,
            responsible_organization=MANUFACTURER,
        )
    ]


def series_description(task: str) -> str:
    """``"napari-medcnn <task> — not for diagnostic use"`` (UTF-8; the
    objects declare SpecificCharacterSet ISO_IR 192)."""
    return f"napari-medcnn {task} — not for diagnostic use"


def contributing_equipment(algorithm: Algorithm) -> list[Any]:
    """Contributing Equipment: napari-medcnn as Processing Equipment
    (DCM 109102) running the model (model name, software versions
    napari-medcnn's and the model id, serial number the device UID)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return [
        hd.ContributingEquipment(
            manufacturer=MANUFACTURER,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=algorithm.name[:64],
            software_versions=[__version__, algorithm.version],
            device_serial_number=algorithm.device_uid,
            contribution_description=f"{algorithm.name} ({algorithm.version})"[:64],
        )
    ]


def common_kwargs(algorithm: Algorithm, task: str) -> dict[str, Any]:
    """Keyword arguments every highdicom constructor here takes: the
    series description, the character set, the private coding scheme and
    the contributing equipment."""
    return {
        "series_description": series_description(task),
        "specific_character_set": "ISO_IR 192",
        "coding_schemes": coding_scheme_items(),
        "contributing_equipment": contributing_equipment(algorithm),
    }


def copy_laterality(obj: Any, source: Any) -> None:
    """General Series Laterality (type 2C) of an image object: the
    source's value, else empty (unknown), as dciodvfy asks for it."""
    value = source.get("Laterality", None)
    if "Laterality" not in obj:
        obj.Laterality = value if value in ("L", "R") else None


def safe_file_stem(ds: Any, kind: str) -> str:
    """A file name stem for a result about ``ds``'s series, with no patient
    data: ``<kind>_<modality>_s<series number>_<8 hex of the series UID>``."""
    modality = re.sub(r"[^A-Za-z0-9]", "", str(ds.get("Modality", "") or "")) or "OT"
    number = ds.get("SeriesNumber", None)
    num = f"s{int(number)}_" if number not in (None, "") else ""
    uid = hashlib.sha256(str(ds.get("SeriesInstanceUID", "")).encode()).hexdigest()
    return f"{kind}_{modality}_{num}{uid[:8]}"


def write_result(
    ds: Any,
    out: str | os.PathLike,
    source: Any,
    kind: str,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a result object to ``out``: a ``.dcm`` file, or a folder where
    the file is named :func:`safe_file_stem` of ``source`` (the first source
    dataset) and ``kind`` (``SR``, ``PM``, ``SEG``) plus ``.dcm``; see
    :func:`write_dataset`.  Returns the path written."""
    path = Path(out)
    if not path.name.lower().endswith(".dcm"):
        path = path / (safe_file_stem(source, kind) + ".dcm")
    return write_dataset(ds, path, overwrite=overwrite)


def write_dataset(ds: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a DICOM dataset (a highdicom object) to ``path`` atomically.

    The file is encoded in memory and renamed into place (see
    :mod:`napari_medcnn._atomic`), so a failure leaves no half-written
    file; an existing file is refused (``OverwriteError``) unless
    ``overwrite``.  The folder is created.  Returns the path.
    """
    from napari_medcnn._atomic import atomic_write, check_overwrite

    path = Path(path)
    check_overwrite(path, overwrite=overwrite)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, buf.getvalue(), overwrite=overwrite)
