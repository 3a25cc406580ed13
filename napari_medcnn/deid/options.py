"""De-identification options (PS3.15 Annex E profile options) and their codes.

:class:`DeidOptions` says which options of the Basic Application Level
Confidentiality Profile apply; ``letters()`` gives the option columns of
Table E.1-1 (see :mod:`.deid_table`) in force.  :func:`method_codes` gives the
CID 7050 codes recorded in De-identification Method Code Sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["METHOD_CODES", "SAFE_PRIVATE", "DeidOptions", "method_codes"]

#: DICOM code (scheme DCM, CID 7050) -> meaning, for the method sequence.
METHOD_CODES: dict[str, str] = {
    "113100": "Basic Application Confidentiality Profile",
    "113101": "Clean Pixel Data Option",
    "113105": "Clean Descriptors Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
    "113109": "Retain Device Identity Option",
    "113110": "Retain UIDs Option",
    "113111": "Retain Safe Private Option",
    "113112": "Retain Institution Identity Option",
}

#: Private attributes kept by the Retain Safe Private Option: (private
#: creator, group, element byte within the creator's block) -> description.
#: Numeric acquisition parameters only (diffusion b-values and gradient
#: directions, Philips' real-world scaling), which researchers need and which
#: carry no identity.  Everything else private is removed.
SAFE_PRIVATE: dict[tuple[str, int, int], str] = {
    ("siemens mr header", 0x0019, 0x0C): "Siemens diffusion b-value (s/mm2)",
    ("siemens mr header", 0x0019, 0x0D): "Siemens diffusion directionality",
    ("siemens mr header", 0x0019, 0x0E): "Siemens diffusion gradient direction",
    ("siemens mr header", 0x0019, 0x27): "Siemens diffusion B-matrix",
    ("gems_parm_01", 0x0043, 0x39): "GE diffusion b-value (slop_int_6..9)",
    ("gems_acqu_01", 0x0019, 0xBB): "GE diffusion gradient x",
    ("gems_acqu_01", 0x0019, 0xBC): "GE diffusion gradient y",
    ("gems_acqu_01", 0x0019, 0xBD): "GE diffusion gradient z",
    ("philips mr imaging dd 001", 0x2001, 0x03): "Philips diffusion b-factor",
    ("philips mr imaging dd 001", 0x2001, 0x04): "Philips diffusion direction",
    ("philips mr imaging dd 001", 0x2005, 0x0D): "Philips scale intercept",
    ("philips mr imaging dd 001", 0x2005, 0x0E): "Philips scale slope",
}


@dataclass(frozen=True)
class DeidOptions:
    """Which profile options to apply (all off: the Basic Profile alone).

    Attributes:
        retain_dates_shifted: Retain Longitudinal Temporal Information with
            Modified Dates: dates (DA, DT) shift by a per-patient number of
            days; times of day are kept.
        retain_patient_characteristics: keep age, sex, size (m), weight (kg)
            and the like; clean free-text ones (allergies, patient state).
        retain_device_identity: keep serial numbers, station names, detector
            IDs; clean AE titles.
        retain_institution_identity: keep institution name and address.
        clean_descriptors: keep free-text descriptions (series and study
            description, protocol name, comments...) with identifying words,
            dates and long numbers redacted, instead of removing them.
        retain_uids: keep every UID (off: each is replaced by a keyed
            ``2.25.`` UID).
        retain_safe_private: keep the private attributes of
            :data:`SAFE_PRIVATE` (all other private attributes are removed).
        blank_rectangles: ``(x, y, width, height)`` in pixels (x = column),
            set to the image's darkest value in every frame (Clean Pixel Data).
    """

    retain_dates_shifted: bool = False
    retain_patient_characteristics: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    clean_descriptors: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = True
    blank_rectangles: tuple[tuple[int, int, int, int], ...] = field(default=())

    def letters(self) -> frozenset[str]:
        """The option letters of Table E.1-1 in force (see ``deid_table``)."""
        on = {
            "u": self.retain_uids,
            "vV": self.retain_device_identity,
            "i": self.retain_institution_identity,
            "pP": self.retain_patient_characteristics,
            "T": self.retain_dates_shifted,
            "D": self.clean_descriptors,
        }
        return frozenset(ch for letters, flag in on.items() if flag for ch in letters)

    def descriptions(self) -> list[str]:
        """Short names of the options in force (each at most 64 characters,
        the LO limit of De-identification Method)."""
        names = [
            (self.retain_dates_shifted, "Retain Longitudinal Modified Dates"),
            (self.retain_patient_characteristics, "Retain Patient Characteristics"),
            (self.retain_device_identity, "Retain Device Identity"),
            (self.retain_institution_identity, "Retain Institution Identity"),
            (self.clean_descriptors, "Clean Descriptors"),
            (self.retain_uids, "Retain UIDs"),
            (self.retain_safe_private, "Retain Safe Private"),
        ]
        return [name for flag, name in names if flag]


def method_codes(options: DeidOptions, pixels_cleaned: bool) -> list[str]:
    """DCM code values of the profile and the options applied to one file."""
    codes = ["113100"]
    for flag, code in (
        (pixels_cleaned, "113101"),
        (options.clean_descriptors, "113105"),
        (options.retain_dates_shifted, "113107"),
        (options.retain_patient_characteristics, "113108"),
        (options.retain_device_identity, "113109"),
        (options.retain_uids, "113110"),
        (options.retain_safe_private, "113111"),
        (options.retain_institution_identity, "113112"),
    ):
        if flag:
            codes.append(code)
    return codes
