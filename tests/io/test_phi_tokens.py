"""Redaction tokens: a birth date is redacted however a folder or file name
writes it (issue 17's PHI audit found ``Name_1941-12-23/`` kept the date in
the redacted path of classify and cohort records)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from napari_medcnn.io.metadata import REDACTED, phi_tokens, redact


def _ds(**values) -> Dataset:
    ds = Dataset()
    for k, v in values.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.parametrize(
    "written",
    ["19411223", "1941-12-23", "1941.12.23", "1941/12/23", "1941_12_23",
     "23.12.1941", "23-12-1941", "23/12/1941", "12/23/1941"],
)  # fmt: skip
def test_birth_date_is_redacted_in_every_written_form(written):
    tokens = phi_tokens(_ds(PatientName="DOE^JANE", PatientBirthDate="19411223"))
    path = f"/data/DOE_JANE_{written}/ct"
    assert redact(path, tokens) == f"/data/{REDACTED}_{REDACTED}_{REDACTED}/ct"


def test_date_forms_only_for_the_birth_date():
    """An 8-digit ID is redacted as written, not as a 'date'; other dates
    of a birth date are not redacted."""
    tokens = phi_tokens(_ds(PatientID="20210304", PatientBirthDate="19411223"))
    assert "20210304" in tokens and "2021-03-04" not in tokens
    assert redact("study 1941-12-24", tokens) == "study 1941-12-24"
    assert redact("dob 1941-12-23", tokens) == f"dob {REDACTED}"
    assert phi_tokens(_ds(PatientBirthDate="")) == frozenset()
