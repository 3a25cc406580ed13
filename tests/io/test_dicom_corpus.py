"""Every file shipped by pydicom and pydicom-data through ``io.load``.

Images must load with the right shape and photometric handling, and values
that agree with pydicom's own ``pixel_array`` + modality/VOI/palette LUTs;
CT must be in a plausible HU range.  Non-image objects and deliberately
broken files must raise :class:`ScanReadError` naming the file and a reason
(never another exception type).  Files are listed from the installed data
folders directly: nothing is ever downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from napari_medcnn._reader import napari_get_reader
from napari_medcnn.io import ScanReadError, load

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
DATA_STORE = Path(__import__("data_store").__file__).parent / "data"
CORPUS = sorted(
    [p for p in PYDICOM_FILES.glob("*.dcm")] + [p for p in DATA_STORE.glob("*.dcm")],
    key=lambda p: p.name,
)


NON_IMAGE = "holds no image"
#: file -> a fragment of the expected error reason
EXPECTED_ERRORS = {
    # non-image objects
    "ExplVR_BigEndNoMeta.dcm": NON_IMAGE,  # RT Ion Plan
    "ExplVR_LitEndNoMeta.dcm": NON_IMAGE,
    "reportsi.dcm": NON_IMAGE,
    "reportsi_with_empty_number_tags.dcm": NON_IMAGE,
    "rtplan.dcm": NON_IMAGE,
    "rtplan_truncated.dcm": NON_IMAGE,
    "rtstruct.dcm": NON_IMAGE,
    "test-SR.dcm": NON_IMAGE,
    "waveform_ecg.dcm": NON_IMAGE,
    # headers without an image
    "UN_sequence.dcm": "no pixel data",
    "empty_charset_LEI.dcm": "no pixel data",
    "priv_SQ.dcm": "no pixel data",
    "no_meta_group_length.dcm": "no pixel data",
    "meta_missing_tsyntax.dcm": "no Rows/Columns",
    "nested_priv_SQ.dcm": "no Rows/Columns",
    # deliberately broken
    "MR_truncated.dcm": "less than expected",
    "badVR.dcm": "invalid image attribute",
    "no_meta.dcm": "not a DICOM",  # a stray byte before the first element
    "emri_small_jpeg_2k_lossless_too_short.dcm": "empty or truncated",
    "JPEG2000-embedded-sequence-delimiter.dcm": "could not decode",
}
SLOW = {"color3d_jpeg_baseline.dcm"}  # 120 JPEG frames, decoded twice


def _params(want_errors: bool):
    out = []
    for p in CORPUS:
        if (p.name in EXPECTED_ERRORS) != want_errors:
            continue
        marks = [pytest.mark.slow] if p.name in SLOW else []
        out.append(pytest.param(p, id=f"{p.parent.name}/{p.name}", marks=marks))
    return out


def test_corpus_found():
    assert len(CORPUS) > 140, "pydicom / pydicom-data test files not installed?"


def _reference_dataset(path: Path) -> pydicom.Dataset:
    ds = pydicom.dcmread(path, force=True)
    if not ds.file_meta.get("TransferSyntaxUID"):  # OT-PAL-8-face.dcm: no meta
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    return ds


def _shared_rescale(ds) -> tuple[float, float] | None:
    groups = ds.get("SharedFunctionalGroupsSequence")
    if groups and "PixelValueTransformationSequence" in groups[0]:
        item = groups[0].PixelValueTransformationSequence[0]
        return float(item.RescaleSlope), float(item.RescaleIntercept)
    return None


def _expected(ds, scan) -> np.ndarray:
    """What the scan should hold, from pydicom's own functions."""
    arr = ds.pixel_array
    pi = ds.PhotometricInterpretation
    md = scan.metadata
    if pi == "PALETTE COLOR":
        exp = apply_color_lut(arr, ds)
        if exp.dtype != np.uint8 and exp.max() > 255:
            exp = exp >> 8
    elif int(ds.SamplesPerPixel) == 3:
        exp = arr  # pydicom returns RGB for YBR_FULL/_422 and J2K YBR_ICT/RCT
    else:
        exp = apply_modality_lut(arr, ds)
        if (rescale := _shared_rescale(ds)) is not None:
            exp = arr * rescale[0] + rescale[1]
        if "DoseGridScaling" in ds:
            exp = arr * float(ds.DoseGridScaling)
        if md.get("voi_lut_applied"):
            exp = apply_voi(exp, ds)
        if md.get("monochrome1_inverted"):
            exp = md["inversion_sum"] - exp.astype(np.float64)
    if "frame_order" in md:
        exp = exp[md["frame_order"]]
    return exp


@pytest.mark.parametrize("path", _params(want_errors=False))
def test_image_file_loads(path: Path):
    assert napari_get_reader(str(path)) is not None
    scans = load(path)
    assert len(scans) == 1, [s.name for s in scans]
    scan = scans[0]
    ds = _reference_dataset(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.SamplesPerPixel)
    color = samples == 3 or ds.PhotometricInterpretation == "PALETTE COLOR"
    shape = (int(ds.Rows), int(ds.Columns)) + ((3,) if color else ())
    if frames > 1:
        shape = (frames, *shape)
    assert scan.data.shape == shape
    assert scan.rgb == color
    assert len(scan.axis_labels) == scan.ndim_spatial == len(scan.spacing)
    assert len(scan.units) == len(scan.origin) == scan.ndim_spatial
    if color:
        assert scan.data.dtype in (np.uint8, np.uint16, np.uint32)
        if int(ds.BitsAllocated) == 8:
            assert scan.data.dtype == np.uint8
    if ds.PhotometricInterpretation == "MONOCHROME1":
        assert scan.metadata["monochrome1_inverted"] is True
    exp = _expected(ds, scan)
    if scan.data.dtype.kind in "iu" and exp.dtype.kind in "iu":
        np.testing.assert_array_equal(scan.data, exp)
    else:
        np.testing.assert_allclose(scan.data, exp, rtol=1e-6, atol=1e-4)
    if scan.modality == "CT":
        # nothing in a body is below air (-1000 HU): lower values are padding
        # outside the reconstruction circle (-2000, -3024...)
        body = scan.data[scan.data > -1500]
        assert body.size > 0.4 * scan.data.size
        lo, hi = np.percentile(body, [1, 99])
        assert lo >= -1300 and hi <= 4095, (lo, hi)  # lossy J2K rings to -1212
    md = scan.layer_metadata()
    assert "patient_name" not in md and "patient_id" not in md
    name = str(ds.get("PatientName", "") or "")
    if len(name) > 3:
        assert name not in scan.name and name not in repr(md)


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "693_J2KR.dcm"])
def test_head_ct_air_is_minus_1000(name):
    (scan,) = load(DATA_STORE / name)
    assert scan.data.dtype == np.int16
    air = np.abs(scan.data.astype(int) + 1000) < 100
    assert air.mean() > 0.2


@pytest.mark.parametrize("path", _params(want_errors=True))
def test_non_image_or_broken_file_raises_clear_error(path: Path):
    with pytest.raises(ScanReadError) as err:
        load(path)
    msg = str(err.value)
    assert path.name in msg
    assert EXPECTED_ERRORS[path.name] in msg, msg


def test_empty_folder(tmp_path):
    with pytest.raises(ScanReadError) as err:
        load(tmp_path)
    assert str(tmp_path) in str(err.value) and "no files" in str(err.value)


def test_unreadable_paths(tmp_path):
    good = DATA_STORE / "MR2_UNCR.dcm"
    # a dangling link and a path under a file: the probe says no, load says why
    link = tmp_path / "gone.dcm"
    link.symlink_to(tmp_path / "missing.dcm")
    bad_parent = tmp_path / "plain.txt"
    bad_parent.write_text("x")
    for path in (link, bad_parent / "child.dcm"):
        assert napari_get_reader(str(path)) is None
        with pytest.raises(ScanReadError, match="no such file"):
            load(path)
    # no read permission (root ignores it: then there is nothing to test)
    locked = tmp_path / "locked.dcm"
    locked.write_bytes(good.read_bytes())
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: file permissions do not block reads")
        assert napari_get_reader(str(locked)) is None
        with pytest.raises(ScanReadError, match="locked.dcm"):
            load(locked)
    finally:
        locked.chmod(0o644)
