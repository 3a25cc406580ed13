"""Folder scanning and series loading on synthetic series (io.synth)."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from napari_medcnn.io import ScanReadError, load
from napari_medcnn.io.dicom.find import SeriesInfo, iter_scan_folder
from napari_medcnn.io.dicom.load import load_folder, load_series
from napari_medcnn.io.synth import write_series


def scan_folder(path, **kw) -> tuple[list[SeriesInfo], list[tuple]]:
    """Drain iter_scan_folder: (returned series, yielded progress events)."""
    gen = iter_scan_folder(path, **kw)
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return stop.value, events


def volume(shape=(8, 12, 10), seed=0, lo=-1000, hi=1500) -> np.ndarray:
    return np.random.default_rng(seed).integers(lo, hi, size=shape).astype(float)


def positions(paths) -> np.ndarray:
    return np.array(
        [
            [
                float(v)
                for v in pydicom.dcmread(
                    p, stop_before_pixels=True
                ).ImagePositionPatient
            ]
            for p in paths
        ]
    )


def test_shuffled_file_order_sorted_by_position(tmp_path):
    vol = volume()
    order = [3, 0, 7, 5, 1, 6, 2, 4]
    write_series(
        vol,
        tmp_path,
        spacing=(2.0, 0.5, 0.6),
        file_order=order,
        modality="CT",
        intercept=-1024,
        seed="shuffle",
    )
    (scan,) = load(tmp_path)
    np.testing.assert_array_equal(scan.data, vol)
    assert scan.data.dtype == np.int16  # integral rescale that fits: int16 HU
    assert scan.spacing == pytest.approx((2.0, 0.5, 0.6))
    assert scan.axis_labels == ("z", "y", "x") and scan.units == ("mm", "mm", "mm")
    assert scan.quality.ok, scan.quality.to_dict()


def test_non_unit_rescale_float32(tmp_path):
    vol = np.round(volume(seed=1) / 0.5) * 0.5  # representable with slope 0.5
    write_series(vol, tmp_path, slope=0.5, intercept=-100, modality="MR", seed="r")
    (scan,) = load(tmp_path)
    assert scan.data.dtype == np.float32
    np.testing.assert_allclose(scan.data, vol, atol=1e-3)


def test_missing_slice_flagged_and_kept_blank(tmp_path):
    vol = volume(shape=(10, 8, 8), seed=2)
    write_series(vol, tmp_path, spacing=(1.5, 1, 1), skip=[4], modality="CT", seed="m")
    (scan,) = load(tmp_path)
    assert "missing_slices" in scan.quality.codes()
    assert scan.spacing[0] == pytest.approx(1.5)
    assert scan.data.shape == vol.shape  # gap kept, so slices stay in place
    assert np.ptp(scan.data[4]) == 0
    keep = [k for k in range(10) if k != 4]
    np.testing.assert_array_equal(scan.data[keep], vol[keep])
    assert scan.metadata["blank_slices"] == [4]


def test_two_series_non_dicom_and_nested_sr(tmp_path):
    write_series(
        volume(seed=3),
        tmp_path / "a",
        modality="CT",
        series_number=2,
        series_description="CT one",
        seed="a",
    )
    write_series(
        volume((5, 6, 6), seed=4),
        tmp_path / "b",
        modality="MR",
        series_number=7,
        series_description="MR two",
        seed="b",
    )
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "b" / "junk.dcm").write_bytes(b"\x00garbage" * 20)
    nested = tmp_path / "deep" / "er"
    nested.mkdir(parents=True)
    shutil.copy(get_testdata_file("test-SR.dcm", download=False), nested / "sr.dcm")

    series, events = scan_folder(tmp_path)
    assert events[0] == ("scan", 0, 16) and events[-1] == ("scan", 16, 16)
    kinds = sorted((s.kind, s.modality, s.n_files) for s in series)
    assert kinds == [("image", "CT", 8), ("image", "MR", 5), ("non-image", "SR", 1)]
    sr = next(s for s in series if s.kind == "non-image")
    assert "SR" in sr.sop_class_name
    with pytest.raises(ScanReadError, match="no image"):
        load_series(sr)

    scans = load_folder(tmp_path)
    assert sorted(s.name for s in scans) == ["CT CT one", "MR MR two"]
    # folder-wide findings are the folder's, reported once (not per scan)
    (issue,) = scans.folder_quality.issues  # junk.dcm is not DICOM: ignored
    assert issue.code == "skipped_non_image" and "SR" in issue.message
    assert scans.folder_quality.ok  # information, not a warning
    for s in scans:
        assert not s.quality.codes() & {"skipped_non_image", "skipped_unreadable"}


def test_orientation_noise_does_not_split(tmp_path):
    vol = volume(seed=5)
    paths = write_series(vol, tmp_path, seed="noise")
    rng = np.random.default_rng(0)
    for p in paths:
        ds = pydicom.dcmread(p)
        iop = np.array([1, 0, 0, 0, 1, 0], float) + rng.normal(0, 1e-7, 6)
        ds.ImageOrientationPatient = [f"{v:.12f}" for v in iop]
        ds.save_as(p)
    series, _ = scan_folder(tmp_path)
    assert len(series) == 1 and series[0].split_reason is None
    assert series[0].orientation == "axial"


def test_mixed_sizes_split(tmp_path):
    big = write_series(volume((4, 12, 10), seed=6), tmp_path / "x", seed="same")
    small = write_series(
        volume((3, 8, 8), seed=7), tmp_path / "y", seed="other", origin=(0, 0, 50)
    )
    uid = pydicom.dcmread(big[0]).SeriesInstanceUID
    for p in small:  # same series UID, different size: must split
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = uid
        ds.save_as(p)
    series, _ = scan_folder(tmp_path)
    assert sorted(s.n_files for s in series) == [3, 4]
    assert all(s.split_reason == "image size" for s in series)
    scans = load(tmp_path)
    assert sorted(s.data.shape for s in scans) == [(3, 8, 8), (4, 12, 10)]
    assert all("split_series" in s.quality.codes() for s in scans)


def test_multi_echo_split_by_echo_number(tmp_path):
    a = write_series(volume((4, 6, 6), seed=8), tmp_path / "e1", seed="echo")
    b = write_series(volume((4, 6, 6), seed=9), tmp_path / "e2", seed="echo2")
    uid = pydicom.dcmread(a[0]).SeriesInstanceUID
    for echo, paths in ((1, a), (2, b)):
        for p in paths:
            ds = pydicom.dcmread(p)
            ds.SeriesInstanceUID = uid
            ds.EchoNumbers = echo
            ds.save_as(p)
    series, _ = scan_folder(tmp_path)
    assert [s.split_reason for s in series] == ["echo number"] * 2
    scans = load(tmp_path)
    assert {s.name for s in scans} == {"MR synthetic (echo 1)", "MR synthetic (echo 2)"}


def test_unexplained_duplicates_flagged(tmp_path):
    a = write_series(volume((3, 6, 6), seed=10), tmp_path / "a", seed="dup")
    b = write_series(volume((3, 6, 6), seed=11), tmp_path / "b", seed="dup2")
    uid = pydicom.dcmread(a[0]).SeriesInstanceUID
    for p in b:
        ds = pydicom.dcmread(p)
        ds.SeriesInstanceUID = uid
        ds.save_as(p)
    (scan,) = load(tmp_path)
    assert "duplicate_positions" in scan.quality.codes()
    assert scan.data.shape[0] == 6


def _rot(axis: int, deg: float) -> np.ndarray:
    t = np.radians(deg)
    r = np.eye(3)
    i, j = [k for k in range(3) if k != axis]
    r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
    return r


OBLIQUE = _rot(0, 25.0) @ _rot(2, 15.0)
ORIENTATIONS = {
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "oblique": (tuple(OBLIQUE[:, 0]), tuple(OBLIQUE[:, 1])),
}


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_affine_maps_index_to_written_positions(tmp_path, orientation):
    row, col = ORIENTATIONS[orientation]
    spacing, origin = (2.5, 0.8, 1.1), (-40.0, 12.5, 33.0)
    vol = volume((6, 9, 7), seed=12)
    paths = write_series(
        vol,
        tmp_path,
        spacing=spacing,
        origin=origin,
        row_dir=row,
        col_dir=col,
        file_order=[5, 2, 0, 4, 1, 3],
        seed=orientation,
    )
    (scan,) = load(tmp_path)
    series, _ = scan_folder(tmp_path)
    assert series[0].orientation == orientation
    np.testing.assert_array_equal(scan.data, vol)
    aff = scan.affine
    # every written file's IPP is the affine image of (k, 0, 0)
    order = [5, 2, 0, 4, 1, 3]
    ipps = positions(paths)
    for file_idx, k in enumerate(order):
        np.testing.assert_allclose(aff @ [k, 0, 0, 1], [*ipps[file_idx], 1], atol=1e-4)
    # in-plane: (0, i, j) = IPP + i * dy * col + j * dx * row
    p = aff @ [0, 3, 2, 1]
    expect = np.asarray(origin) + 3 * 0.8 * np.asarray(col) + 2 * 1.1 * np.asarray(row)
    np.testing.assert_allclose(p[:3], expect, atol=1e-4)
    assert scan.spacing == pytest.approx(spacing)
    dirs = (aff[:3, :3] / np.asarray(spacing)).T
    np.testing.assert_allclose(scan.origin, dirs @ np.asarray(origin), atol=1e-4)


def test_single_slice_series(tmp_path):
    write_series(
        volume((1, 6, 5), seed=13), tmp_path, spacing=(3, 0.5, 0.5), seed="one"
    )
    series, _ = scan_folder(tmp_path)
    assert series[0].n_files == 1
    scan = load_series(series[0])
    assert scan.data.shape == (6, 5) and scan.spacing == pytest.approx((0.5, 0.5))


def test_series_info_fields_and_display_row(two_series_folder):
    series, _ = scan_folder(two_series_folder.root)
    ct = next(s for s in series if s.modality == "CT")
    assert ct.kind == "image" and ct.n_files == 6 and (ct.rows, ct.cols) == (24, 20)
    assert ct.pixel_spacing == pytest.approx((0.8, 0.7))
    assert ct.slice_spacing == pytest.approx(2.5)
    assert ct.sop_class_name == "CT Image Storage" and ct.number_of_frames == 1
    assert len(ct.patient_key) == 12 and "Doe" not in ct.patient_key
    assert ct.patient_name == "Doe^Jane"
    row = ct.display_row()
    assert set(row) == {
        "patient",
        "study",
        "date",
        "modality",
        "description",
        "images",
        "dimensions",
        "spacing",
    }
    assert "Doe" not in str(row) and row["date"] == "2026-01-01"
    assert row["dimensions"] == "20 × 24 × 6" and row["images"] == "6"
    assert "Doe^Jane" in ct.display_row(mask_names=False)["patient"]
    # slices listed in position order
    assert [f.rsplit("/", 1)[-1] for f in ct.files][0] == "IM0000.dcm"


def test_masked_row_redacts_descriptions_that_name_the_patient(tmp_path):
    """With names masked, a study or series description that repeats the
    patient's name or ID shows [redacted]; unmasked, it is shown as is."""
    files = write_series(
        volume((3, 6, 5), seed=21), tmp_path, spacing=(2, 0.5, 0.5), seed="desc",
        patient_name="Roe^Richard", patient_id="PID-5151",
        series_description="T1 for Richard Roe",
    )  # fmt: skip
    for f in files:
        ds = pydicom.dcmread(f)
        ds.StudyDescription = "head PID-5151"
        ds.save_as(f)
    (info,), _ = scan_folder(tmp_path)
    row = info.display_row()
    assert row["description"] == "T1 for [redacted] [redacted]"
    assert row["study"] == "head [redacted]"
    for needle in ("Roe", "Richard", "PID-5151"):
        assert needle not in str(row)
    plain = info.display_row(mask_names=False)
    assert plain["description"] == "T1 for Richard Roe"
    assert plain["study"] == "head PID-5151"


def test_no_phi_unless_asked(two_series_folder):
    scans = load(two_series_folder.root, include_phi=False)
    for s in scans:
        md = s.layer_metadata()
        assert "patient_name" not in md and "patient_id" not in md
        assert (
            "Doe" not in repr(md) and "Roe" not in repr(md) and "PID-" not in repr(md)
        )
    scans = load(two_series_folder.root, include_phi=True)
    names = {s.metadata["patient_name"] for s in scans}
    assert names == {"Doe^Jane", "Roe^Richard"}


def test_load_series_without_cached_headers(two_series_folder):
    series, _ = scan_folder(two_series_folder.root)
    ct = next(s for s in series if s.modality == "CT")
    ct.headers = []  # as if the widget built the SeriesInfo itself
    scan = load_series(ct, workers=1)
    np.testing.assert_array_equal(scan.data, two_series_folder.ct_volume)
    assert scan.window == (40.0, 400.0)


def test_empty_folder_and_only_non_image(tmp_path):
    with pytest.raises(ScanReadError, match="no files"):
        load_folder(tmp_path)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ScanReadError, match="no DICOM files"):
        load_folder(tmp_path)
    shutil.copy(get_testdata_file("rtplan.dcm", download=False), tmp_path / "p.dcm")
    with pytest.raises(ScanReadError) as err:
        load(tmp_path)
    assert str(tmp_path) in str(err.value) and "RT Plan" in str(err.value)


def test_corrupt_slice_reported(tmp_path):
    paths = write_series(volume((4, 8, 8), seed=14), tmp_path / "s", seed="trunc")
    with open(paths[2], "r+b") as fh:
        fh.truncate(fh.seek(0, 2) - 20)
    with pytest.raises(ScanReadError, match="truncated") as err:
        load(tmp_path)
    assert "IM0002.dcm" in str(err.value)


def test_progress_and_early_stop(tmp_path):
    write_series(volume((40, 4, 4), seed=15), tmp_path, seed="prog")
    gen = iter_scan_folder(tmp_path, workers=2)
    first = [next(gen) for _ in range(3)]
    gen.close()  # a cancelled scan must not hang
    assert first[0] == ("scan", 0, 40) and all(e[0] == "scan" for e in first)
    with pytest.raises(ScanReadError, match="not a folder"):
        scan_folder(tmp_path / "IM0000.dcm")


def test_folder_with_multiframe_file_and_2d_images(tmp_path):
    shutil.copy(
        get_testdata_file("emri_small.dcm", download=False), tmp_path / "mf.dcm"
    )
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name, download=False), tmp_path / name)
    series, _ = scan_folder(tmp_path)
    mf = next(s for s in series if s.number_of_frames > 1)
    assert mf.number_of_frames == 10 and mf.display_row()["images"] == "1 (10 frames)"
    scans = load(tmp_path)
    shapes = sorted(s.data.shape for s in scans)
    assert shapes == [(10, 64, 64), (64, 64), (128, 128)]


def test_compressed_series_uses_pydicom_decoders(tmp_path):
    from pydicom.uid import RLELossless

    vol = volume((5, 16, 12), seed=16)
    paths = write_series(
        vol,
        tmp_path,
        modality="CT",
        intercept=-1024,
        file_order=[2, 0, 4, 1, 3],
        seed="rle",
    )
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.compress(RLELossless)
        ds.save_as(p)
    (scan,) = load(tmp_path)
    assert scan.metadata["transfer_syntax"].startswith("RLE Lossless")
    assert scan.data.dtype == np.int16
    np.testing.assert_array_equal(scan.data, vol)


def test_monochrome1_series_inverted_as_a_whole(tmp_path):
    vol = volume((4, 6, 6), seed=17, lo=0, hi=1000)
    paths = write_series(vol, tmp_path, modality="CR", window=(500, 1000), seed="m1")
    for p in paths:
        ds = pydicom.dcmread(p)
        ds.PhotometricInterpretation = "MONOCHROME1"
        ds.save_as(p)
    (scan,) = load(tmp_path)
    total = vol.min() + vol.max()
    np.testing.assert_array_equal(scan.data, total - vol)
    assert scan.metadata["monochrome1_inverted"] is True
    assert scan.window == (total - 500, 1000)


def test_rgb_series_without_positions_is_a_frame_stack(tmp_path):
    rgb = np.random.default_rng(18).integers(0, 255, (3, 5, 4, 3), dtype=np.uint8)
    paths = write_series(np.zeros((3, 5, 4)), tmp_path, seed="rgb")
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        for kw in (
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "RescaleSlope",
            "RescaleIntercept",
        ):
            delattr(ds, kw)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
        ds.InstanceNumber = 3 - k  # frames follow InstanceNumber without positions
        ds.PixelData = rgb[k].tobytes()
        ds.save_as(p)
    (scan,) = load(tmp_path)
    assert scan.rgb and scan.axis_labels == ("frame", "y", "x")
    np.testing.assert_array_equal(scan.data, rgb[::-1])


def test_folder_scan_keeps_pydicom_parse_warnings_off_the_terminal(caplog):
    """SC_rgb_jpeg.dcm declares explicit VR but is implicit: pydicom copes
    and logs a warning, which a scan must not print for every such file,
    while the same logger still works for other threads."""
    import logging
    import threading

    from napari_medcnn.io.dicom.headers import read_header
    from napari_medcnn.io.dicom.quiet import quiet_parse

    path = get_testdata_file("SC_rgb_jpeg.dcm", download=False)
    caplog.set_level(logging.WARNING, logger="pydicom")
    header = read_header(path)
    assert header is not None and header.is_image
    assert not [r for r in caplog.records if r.name == "pydicom"]
    with quiet_parse():  # another thread's records still get through
        t = threading.Thread(target=logging.getLogger("pydicom").warning, args=("x",))
        t.start()
        t.join()
    assert [r.getMessage() for r in caplog.records] == ["x"]
