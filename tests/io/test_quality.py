"""Quality checks, and the pixel/geometry helpers they rely on."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medcnn.io import quality
from napari_medcnn.io.dicom.geometry import (
    gap_slots,
    orientation_label,
    same_orientation,
    split_duplicates,
)
from napari_medcnn.io.dicom.pixels import invert, rescale
from napari_medcnn.io.scan import QualityReport


def report_for(dists, **kw) -> QualityReport:
    rep = QualityReport()
    quality.check_positions(np.asarray(dists, float), rep, **kw)
    return rep


def test_regular_positions_are_clean():
    rep = report_for(np.arange(20) * 1.25 + 0.003 * np.sin(np.arange(20)))
    assert rep.issues == []


def test_missing_slices_counted():
    d = [0, 2, 4, 6, 12, 14, 16]  # 2 slices missing between 6 and 12
    rep = report_for(d)
    assert rep.codes() == {"missing_slices"}
    assert "about 2 slice(s) missing" in rep.summary()
    assert list(gap_slots(np.asarray(d, float))) == [0, 1, 2, 3, 6, 7, 8]


def test_uneven_spacing():
    rep = report_for([0, 1, 2, 3.5, 4.5, 5.5])
    assert rep.codes() == {"uneven_spacing"}
    assert gap_slots(np.array([0, 1, 2, 3.5, 4.5, 5.5])) is None


def test_duplicates():
    rep = report_for([0, 1, 1, 2, 3])
    assert "duplicate_positions" in rep.codes()
    assert gap_slots(np.array([0, 1, 1, 2, 3.0])) is None


def test_gantry_tilt():
    normal = np.array([0, 0, 1.0])
    steps = np.tile([0, 0.2, 1.0], (4, 1))  # ~11 degrees of shear
    rep = report_for([0, 1, 2, 3, 4], steps=steps, normal=normal)
    assert rep.codes() == {"gantry_tilt"}


def test_saturation_and_constant():
    rep = QualityReport()
    img = np.zeros((50, 50), np.uint16)
    img[:10] = 4095  # 20 % at the top of a 12-bit range
    img[10:] = np.arange(40 * 50).reshape(40, 50) % 4000
    quality.check_intensities(img, rep, bits_stored=12, signed=False)
    assert rep.codes() == {"saturated"}

    rep = QualityReport()
    quality.check_intensities(
        np.full((3, 8, 8), 7, np.int16), rep, bits_stored=16, signed=True
    )
    assert rep.codes() == {"constant"}

    rep = QualityReport()  # a normal CT: lots of air at the bottom is fine
    ct = np.zeros((4, 32, 32), np.uint16)
    ct[:, 8:24, 8:24] = 1100
    quality.check_intensities(ct, rep, bits_stored=12, signed=False)
    assert rep.issues == []

    rep = QualityReport()  # padding values are ignored
    quality.check_intensities(ct, rep, bits_stored=12, signed=False, padding=0)
    assert rep.issues == []


def test_notes_severity():
    rep = QualityReport()
    quality.note_split(rep, "orientation")
    quality.note_skipped_non_image(rep, ["Comprehensive SR Storage (1 file)"])
    assert rep.ok and rep.codes() == {"split_series", "skipped_non_image"}
    quality.note_spacing_fallback(rep, "none", "US")
    assert rep.ok  # ultrasound without spacing is normal
    quality.note_spacing_fallback(rep, "ImagerPixelSpacing", "CR")
    assert not rep.ok
    quality.note_unreadable(rep, ["a: bad", "b: bad"])
    assert "2 file(s) or series could not be read" in rep.summary()


@pytest.mark.parametrize(
    ("dtype", "values", "slope", "intercept", "out_dtype"),
    [
        (np.uint16, [0, 1000, 4095], 1, -1024, np.int16),  # typical CT
        (np.int16, [-2000, 0, 3000], 1, -1024, np.int16),
        (np.uint16, [40000, 45000, 50000], 1, -40000, np.int16),  # modular trick
        (np.uint16, [0, 60000], 1, -1024, np.float32),  # does not fit int16
        (np.int16, [-5, 5], 2, 10, np.int16),
        (np.int16, [-5, 5], 0.5, 0, np.float32),
        (np.uint8, [0, 255], 1, -100, np.int16),
    ],
)
def test_rescale_dtype_and_exactness(dtype, values, slope, intercept, out_dtype):
    raw = np.array(values, dtype=dtype).reshape(1, -1)
    expect = np.array(values, float) * slope + intercept
    out = rescale(raw.copy(), np.array([slope]), np.array([intercept]))
    assert out.dtype == out_dtype
    np.testing.assert_allclose(out.astype(float), expect.reshape(1, -1))


def test_rescale_identity_keeps_array():
    raw = np.arange(10, dtype=np.uint16)
    assert rescale(raw, np.array([1.0]), np.array([0.0])) is raw


def test_rescale_per_frame():
    raw = np.ones((3, 2, 2), np.int16)
    out = rescale(raw, np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, -1.0]))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0, 0], [1, 2, 2])


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.uint8])
def test_invert_over_data_range(dtype):
    data = np.array([[0, 10, 200]], dtype=dtype)
    out, total = invert(data.copy())
    assert total == 200
    np.testing.assert_array_equal(out, np.array([[200, 190, 0]], dtype=dtype))


def test_orientation_helpers():
    assert orientation_label(np.array([1, 0, 0, 0, 1, 0.0])) == "axial"
    assert orientation_label(np.array([1, 0, 0, 0, 0, -1.0])) == "coronal"
    assert orientation_label(np.array([0, 1, 0, 0, 0, -1.0])) == "sagittal"
    assert orientation_label(np.array([1, 0, 0, 0, 0.7071, 0.7071])) == "oblique"
    assert orientation_label(None) == "unknown"
    a = np.array([1, 0, 0, 0, 1, 0.0])
    assert same_orientation(a, a + 1e-6)
    assert not same_orientation(a, np.array([1, 0, 0, 0, 0.99, 0.14]))


def test_split_duplicates_needs_a_consistent_key():
    d = np.array([0, 0, 1, 1, 2, 2.0])
    groups, why = split_duplicates(
        d,
        [
            ("acquisition number", [1, 2, 3, 4, 5, 6]),  # one per slice: rejected
            ("echo number", [1, 2, 1, 2, 1, 2]),
        ],
    )
    assert why == "echo number" and groups == [[0, 2, 4], [1, 3, 5]]
    groups, why = split_duplicates(d, [("echo number", [1] * 6)])
    assert why is None and groups == [list(range(6))]
