"""One stacking path: a series and a multi-frame file of the same volume go
through ``stack.stack_scan`` and give the same scan."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import napari_medcnn.io.dicom.load as dicom_load
from napari_medcnn.io import load
from napari_medcnn.io.dicom.headers import FrameInfo, SliceHeader
from napari_medcnn.io.synth import write_series

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _item(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def enhanced_from_series(paths, out) -> str:
    """The slices of a single-frame series as one enhanced multi-frame file
    (frames in file order, geometry and rescale in functional groups)."""
    slices = [pydicom.dcmread(p) for p in paths]
    first = slices[0]
    ds = Dataset()
    for kw in (
        "PatientName", "PatientID", "StudyInstanceUID", "SeriesInstanceUID",
        "FrameOfReferenceUID", "StudyDate", "Modality", "SeriesDescription",
        "SeriesNumber", "Rows", "Columns", "SamplesPerPixel",
        "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
        "PixelRepresentation", "WindowCenter", "WindowWidth",
    ):  # fmt: skip
        setattr(ds, kw, first.data_element(kw).value)
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, generate_uid()
    ds.NumberOfFrames = len(slices)
    ds.SharedFunctionalGroupsSequence = [
        _item(
            PlaneOrientationSequence=[
                _item(ImageOrientationPatient=first.ImageOrientationPatient)
            ],
            PixelMeasuresSequence=[
                _item(
                    PixelSpacing=first.PixelSpacing,
                    SliceThickness=first.SliceThickness,
                )
            ],
            PixelValueTransformationSequence=[
                _item(
                    RescaleSlope=first.RescaleSlope,
                    RescaleIntercept=first.RescaleIntercept,
                    RescaleType="HU",
                )
            ],
        )
    ]
    ds.PerFrameFunctionalGroupsSequence = [
        _item(
            PlanePositionSequence=[_item(ImagePositionPatient=s.ImagePositionPatient)]
        )
        for s in slices
    ]
    ds.PixelData = b"".join(s.PixelData for s in slices)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(out, enforce_file_format=True)
    return str(out)


@pytest.fixture
def stack_calls(monkeypatch):
    """The :class:`Stack` of every ``stack_scan`` call the loaders make."""
    calls = []
    real = dicom_load.stack_scan

    def spy(stack, **kw):
        calls.append(stack)
        return real(stack, **kw)

    monkeypatch.setattr(dicom_load, "stack_scan", spy)
    return calls


@pytest.mark.parametrize("gap", [False, True])
def test_series_and_multiframe_file_agree(tmp_path, stack_calls, gap):
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    vol = np.random.default_rng(3).integers(-1000, 2000, (7, 9, 6)).astype(float)
    paths = write_series(
        vol,
        tmp_path / "series",
        spacing=(2.5, 0.8, 0.6),
        origin=(-30.0, 12.0, 40.0),
        row_dir=(c, s, 0.0),
        col_dir=(0.0, 0.0, -1.0),  # oblique coronal
        modality="CT",
        intercept=-1024,
        window=(40, 400),
        file_order=[4, 1, 6, 0, 3, 5, 2],  # files (and frames) out of order
        skip=[3] if gap else [],
        seed=f"stack-{gap}",
    )
    (from_series,) = load(tmp_path / "series")
    assert [type(p) for p in stack_calls[0].planes] == [SliceHeader] * len(paths)
    (from_file,) = load(enhanced_from_series(paths, tmp_path / "enhanced.dcm"))
    assert [type(p) for p in stack_calls[1].planes] == [FrameInfo] * len(paths)
    assert len(stack_calls) == 2

    for scan in (from_series, from_file):
        assert scan.data.dtype == np.int16 and scan.data.shape == vol.shape
        assert scan.axis_labels == ("z", "y", "x") and scan.window == (40.0, 400.0)
        present = [k for k in range(len(vol)) if not (gap and k == 3)]
        np.testing.assert_array_equal(scan.data[present], vol[present])
    np.testing.assert_array_equal(from_series.data, from_file.data)
    np.testing.assert_allclose(from_series.affine, from_file.affine, atol=1e-9)
    assert from_series.spacing == pytest.approx(from_file.spacing)
    assert from_series.spacing == pytest.approx((2.5, 0.8, 0.6))
    assert from_series.origin == pytest.approx(from_file.origin)
    assert from_series.quality.to_dict() == from_file.quality.to_dict()
    assert from_series.quality.codes() == ({"missing_slices"} if gap else set())
    for key in ("layout", "orientation", "slice_spacing_mm", "blank_slices"):
        assert from_series.metadata.get(key) == from_file.metadata.get(key), key
    assert from_file.metadata.get("blank_slices") == ([3] if gap else None)
    # the file keeps which frame each slice came from
    order = from_file.metadata["frame_order"]
    frame_slice = [k for k in [4, 1, 6, 0, 3, 5, 2] if not (gap and k == 3)]
    assert [frame_slice[i] for i in order] == sorted(frame_slice)
