"""Single DICOM files: pixel pipeline, multi-frame geometry, metadata, errors."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from napari_medcnn._reader import napari_get_reader
from napari_medcnn.io import ScanReadError, load
from napari_medcnn.io.dicom.load import load_file

DATA_STORE = Path(__import__("data_store").__file__).parent / "data"


def data_file(name: str) -> str:
    """A file shipped by pydicom or pydicom-data, never downloaded."""
    local = DATA_STORE / name
    if local.exists():
        return str(local)
    return get_testdata_file(name, download=False)


def one(name: str, **kw):
    scans = load(data_file(name), **kw)
    assert len(scans) == 1
    return scans[0]


def test_ct_slice_hu_geometry_and_metadata(ct_small_path):
    scan = one("CT_small.dcm")
    ds = pydicom.dcmread(ct_small_path)
    assert scan.data.dtype == np.int16 and scan.data.shape == (128, 128)
    np.testing.assert_array_equal(scan.data, apply_modality_lut(ds.pixel_array, ds))
    assert scan.axis_labels == ("y", "x") and scan.units == ("mm", "mm")
    assert scan.spacing == pytest.approx([float(v) for v in ds.PixelSpacing])
    np.testing.assert_allclose(
        scan.affine[:3, 3], [float(v) for v in ds.ImagePositionPatient]
    )
    md = scan.layer_metadata()
    assert md["modality"] == "CT" and md["series_uid"] == ds.SeriesInstanceUID
    assert md["transfer_syntax"].startswith("Explicit VR Little Endian")
    assert "patient_name" not in md and str(ds.PatientName) not in repr(md)
    assert scan.name == "CT series 1"
    md = one("CT_small.dcm", include_phi=True).metadata
    assert md["patient_name"] == str(ds.PatientName) and md["phi_included"]


def test_monochrome1_inverted_with_window_and_spacing_fallback():
    path = data_file("RG1_UNCR.dcm")
    ds = pydicom.dcmread(path)
    scan = one("RG1_UNCR.dcm")
    raw = ds.pixel_array.astype(np.int64)
    total = raw.min() + raw.max()
    np.testing.assert_array_equal(scan.data, total - raw)
    assert scan.metadata["monochrome1_inverted"] is True
    assert scan.metadata["inversion_sum"] == total
    assert scan.window == (total - float(ds.WindowCenter), float(ds.WindowWidth))
    # PixelSpacing is 0.000 in this file and there is no ImagerPixelSpacing
    assert "pixel_spacing_fallback" in scan.quality.codes()
    assert scan.units == ("pixel", "pixel") and scan.spacing == (1.0, 1.0)


def test_palette_color_to_rgb_uint8():
    path = data_file("OBXXXX1A.dcm")
    ds = pydicom.dcmread(path)
    scan = one("OBXXXX1A.dcm")
    assert scan.rgb and scan.data.dtype == np.uint8 and scan.data.shape == (600, 800, 3)
    expect = apply_color_lut(ds.pixel_array, ds)
    if expect.dtype != np.uint8:
        expect = (expect >> 8).astype(np.uint8)
    np.testing.assert_array_equal(scan.data, expect)
    assert scan.contrast_limits() is None


@pytest.mark.parametrize(
    "name",
    [
        "SC_ybr_full_422_uncompressed.dcm",
        "SC_rgb_dcmtk_+eb+cy+np.dcm",  # JPEG, YBR_FULL_422
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG, YBR_FULL
        "SC_rgb_dcmtk_+eb+cr.dcm",  # JPEG, RGB
    ],
)
def test_ybr_and_jpeg_colour_match_rgb_reference(name):
    ref = one("SC_rgb.dcm").data.astype(int)
    scan = one(name)
    assert scan.rgb and scan.data.dtype == np.uint8 and scan.data.shape == ref.shape
    # lossy/subsampled copies of the same colour bars: close to the RGB original
    assert np.abs(scan.data.astype(int) - ref).mean() < 6


def test_voi_lut_applied_and_modality_lut():
    ds = pydicom.dcmread(data_file("vlut_04.dcm"))
    scan = one("vlut_04.dcm")
    assert scan.metadata["voi_lut_applied"] is True and scan.window is None
    np.testing.assert_array_equal(scan.data, apply_voi(ds.pixel_array, ds))
    ds = pydicom.dcmread(data_file("mlut_18.dcm"))
    scan = one("mlut_18.dcm")
    assert scan.metadata["modality_lut_applied"] is True
    np.testing.assert_array_equal(scan.data, apply_modality_lut(ds.pixel_array, ds))


def test_enhanced_ct_functional_groups():
    path = data_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    scan = one("eCT_Supplemental.dcm")
    assert scan.data.shape == (2, 512, 512) and scan.axis_labels == ("z", "y", "x")
    # rescale comes from the functional groups (intercept -1024): HU
    assert scan.data.dtype == np.int16 and scan.data.min() == -1024
    assert scan.window == (49.0, 102.0)  # FrameVOILUTSequence
    ipps = [
        np.array([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient])
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    order = scan.metadata["frame_order"]
    for k, i in enumerate(order):
        np.testing.assert_allclose(scan.affine @ [k, 0, 0, 1], [*ipps[i], 1], atol=1e-4)
    assert scan.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    np.testing.assert_array_equal(scan.data, ds.pixel_array[order].astype(int) - 1024)


def test_multiframe_without_geometry_is_a_frame_stack():
    scan = one("emri_small.dcm")  # enhanced MR stripped of functional groups
    assert scan.axis_labels == ("frame", "y", "x") and scan.units[0] == "pixel"
    scan = one("examples_ybr_color.dcm")  # US cine, JPEG YBR_FULL_422
    assert scan.rgb and scan.data.shape == (30, 240, 320, 3)
    assert scan.axis_labels[0] == "frame"
    scan = one("SC_rgb_2frame.dcm")
    assert scan.data.shape == (2, 100, 100, 3) and scan.axis_labels[0] == "frame"


def test_rt_dose_grid_and_scaling():
    ds = pydicom.dcmread(data_file("rtdose.dcm"))
    scan = one("rtdose.dcm")
    assert scan.data.shape == (15, 10, 10) and scan.spacing[0] == pytest.approx(5.0)
    expect = ds.pixel_array * float(ds.DoseGridScaling)
    np.testing.assert_allclose(scan.data, expect, rtol=1e-6)
    assert scan.metadata["dose_units"] == ds.DoseUnits


def test_segmentation_file_loads_as_volume():
    scan = one("liver.dcm")
    assert scan.data.shape == (3, 512, 512) and set(np.unique(scan.data)) <= {0, 1}
    assert scan.axis_labels == ("z", "y", "x")


def _write(path: Path, ds: Dataset) -> str:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def _image(values: np.ndarray, **attrs) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(values.dtype.kind == "i")
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = values.tobytes()
    return ds


@pytest.mark.parametrize(
    ("stored", "slope", "intercept", "dtype"),
    [
        (np.array([[0, 4095]], np.uint16), "1", "-1024", np.int16),
        (np.array([[0, 65535]], np.uint16), "1", "0", np.uint16),  # identity
        (np.array([[0, 65535]], np.uint16), "1", "-1024", np.float32),  # no fit
        (np.array([[-100, 100]], np.int16), "0.25", "0", np.float32),
    ],
)
def test_output_dtype_choice(tmp_path, stored, slope, intercept, dtype):
    ds = _image(stored, RescaleSlope=slope, RescaleIntercept=intercept)
    (scan,) = load_file(_write(tmp_path / "x.dcm", ds))
    assert scan.data.dtype == dtype
    expect = stored.astype(float) * float(slope) + float(intercept)
    np.testing.assert_allclose(scan.data, expect)


def test_bits_stored_below_allocated_masks_high_bits(tmp_path):
    stored = np.array([[0x1000 | 5, 7]], np.uint16)  # garbage above bit 12
    ds = _image(stored, BitsStored=12, HighBit=11)
    (scan,) = load_file(_write(tmp_path / "x.dcm", ds))
    np.testing.assert_array_equal(scan.data, [[5, 7]])


def test_missing_decoder_names_syntax_and_package(monkeypatch):
    from pydicom.pixels import get_decoder

    decoder = get_decoder(JPEG2000Lossless)
    monkeypatch.setattr(decoder, "_available", {})
    path = data_file("MR_small_jp2klossless.dcm")
    assert napari_get_reader(path) is not None  # cheap probe: header is fine
    with pytest.raises(ScanReadError) as err:
        load(path)
    msg = str(err.value)
    assert "MR_small_jp2klossless.dcm" in msg
    assert "JPEG 2000 Image Compression (Lossless Only)" in msg
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in msg


def test_12bit_jpeg_decodes_without_gpl_code():
    """12-bit JPEG Extended decodes through imagecodecs (BSD); the values are
    pydicom's reference values for this file."""
    for name in ("JPGExtended.dcm", "JPEG-lossy.dcm"):
        scan = load(data_file(name))[0]
        assert scan.data.shape == (1024, 256)
        assert scan.data[420, 140] == 244 and scan.data[230, 120] == 95


def test_12bit_jpeg_without_decoder_names_packages(monkeypatch):
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGExtended12Bit

    decoder = get_decoder(JPEGExtended12Bit)
    monkeypatch.setattr(
        decoder,
        "_available",
        {k: v for k, v in decoder._available.items() if k != "imagecodecs"},
    )
    with pytest.raises(ScanReadError) as err:
        load(data_file("JPGExtended.dcm"))
    assert "JPGExtended.dcm" in str(err.value)
    assert "imagecodecs" in str(err.value) and "[gpl]" in str(err.value)


def test_no_pixel_data_and_garbage(tmp_path):
    ds = _image(np.zeros((2, 2), np.uint16))
    del ds.PixelData
    path = _write(tmp_path / "nopix.dcm", ds)
    with pytest.raises(ScanReadError, match="nopix.dcm.*no pixel data"):
        load(path)
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\x13\x37" + os.urandom(2000))
    assert napari_get_reader(str(garbage)) is None
    with pytest.raises(ScanReadError, match="garbage.dcm"):
        load(garbage)
    # garbage that starts like a raw (preamble-less) DICOM file passes the
    # cheap probe, and then fails to read with a clear error
    raw_like = tmp_path / "rawlike.dcm"
    raw_like.write_bytes(b"\x08\x00\x05\x00" + b"\xff" * 500)
    reader = napari_get_reader(str(raw_like))
    assert reader is not None
    with pytest.raises(ScanReadError, match="rawlike.dcm"):
        reader(str(raw_like))
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert napari_get_reader(str(empty)) is None
    with pytest.raises(ScanReadError, match="empty.dcm"):
        load(empty)
    with pytest.raises(ScanReadError, match="empty.dcm"):
        load_file(empty)  # called directly, past io.load's format probe
    with pytest.raises(ScanReadError, match="is a folder"):
        load_file(tmp_path)


def test_imager_pixel_spacing_fallback(tmp_path):
    ds = _image(
        np.zeros((4, 4), np.uint16),
        PixelSpacing=[0, 0],
        ImagerPixelSpacing=[0.15, 0.2],
        Modality="CR",
    )
    (scan,) = load_file(_write(tmp_path / "cr.dcm", ds))
    assert scan.spacing == pytest.approx((0.15, 0.2)) and scan.units == ("mm", "mm")
    issue = next(i for i in scan.quality.issues if i.code == "pixel_spacing_fallback")
    assert issue.severity == "warning" and "ImagerPixelSpacing" in issue.message


def _us_region(fmt=1, units=(3, 3), dx=0.02, dy=0.025) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat = fmt
    r.RegionDataType = 1
    r.PhysicalUnitsXDirection, r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx, dy
    return r


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        ([_us_region()], (0.25, 0.2)),  # cm -> mm, (row, column)
        ([_us_region(), _us_region(fmt=3, units=(4, 7))], (0.25, 0.2)),  # + Doppler
        ([_us_region(), _us_region(dx=0.03)], None),  # disagree: no single size
        ([_us_region(units=(0, 0))], None),  # no physical units
    ],
)
def test_ultrasound_region_spacing(tmp_path, regions, expected):
    ds = _image(
        np.zeros((4, 5), np.uint16),
        Modality="US",
        SOPClassUID="1.2.840.10008.5.1.4.1.1.6.1",
        SequenceOfUltrasoundRegions=regions,
    )
    (scan,) = load_file(_write(tmp_path / "us.dcm", ds))
    issue = next(i for i in scan.quality.issues if i.code == "pixel_spacing_fallback")
    assert issue.severity == "info"  # normal for ultrasound
    if expected is None:
        assert scan.spacing == (1.0, 1.0) and scan.units == ("pixel", "pixel")
    else:
        assert scan.spacing == pytest.approx(expected)
        assert scan.units == ("mm", "mm") and "ultrasound region" in issue.message


def test_enhanced_frames_with_a_gap_keep_positions(tmp_path):
    """Multi-frame file, frames shuffled and one position missing."""
    z = [0.0, 6.0, 2.0, 4.0, 10.0]  # 8.0 missing
    frames = np.stack([np.full((3, 3), k * 10, np.uint16) for k in range(5)])
    ds = _image(frames[0])
    ds.NumberOfFrames = 5
    ds.PixelData = frames.tobytes()
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.5, 0.5]
    ds.SharedFunctionalGroupsSequence = [shared]
    per = []
    for zk in z:
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [0, 0, zk]
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = per
    (scan,) = load_file(_write(tmp_path / "mf.dcm", ds))
    assert scan.data.shape == (6, 3, 3) and scan.spacing[0] == pytest.approx(2.0)
    assert scan.metadata["frame_order"] == [0, 2, 3, 1, 4]
    assert scan.metadata["blank_slices"] == [4]
    np.testing.assert_array_equal(scan.data[[0, 1, 2, 3, 5], 0, 0], [0, 20, 30, 10, 40])
    assert "missing_slices" in scan.quality.codes()
    np.testing.assert_allclose(scan.affine @ [5, 0, 0, 1], [0, 0, 10, 1])
