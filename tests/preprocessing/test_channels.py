"""Several series as channels: geometry, alignment onto the first grid, and
which layer is which channel (``preprocessing.channels``).

The accuracy tests make a second "series" of one head by a known transform
(another voxel size, a shifted origin, a small rotation), align it back
onto the first grid and measure where bright blobs (inserted before the
transform, at known positions) and the whole volume (phase correlation)
end up: within half a voxel.  They run on a synthetic smooth head always,
and on the real Colin27 T1 (Debian ``mricron-data``) when it is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

import napari_medcnn.preprocessing.channels as channels
from napari_medcnn.preprocessing.channel_names import match_channels, sequence_key
from napari_medcnn.preprocessing.channels import (
    ChannelGeometry,
    align_channels,
    check_alignment,
    covered_fraction,
    format_spacing,
)

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
SIGMA_MM = 2.5  # blob size


# -- helpers ------------------------------------------------------------------------
def _affine(spacing, rotation, origin) -> np.ndarray:
    n = len(spacing)
    a = np.eye(n + 1)
    a[:n, :n] = np.asarray(rotation)[:n, :n] @ np.diag(spacing)
    a[:n, n] = origin
    return a


def _second_grid(
    first: ChannelGeometry, spacing, shape, shift_mm, angles_deg
) -> ChannelGeometry:
    """A grid of ``spacing`` / ``shape``, rotated by ``angles_deg`` (about
    the world axes) relative to ``first``, its centre ``shift_mm`` from
    ``first``'s centre."""
    n = first.ndim
    if n == 3:
        rot = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    else:
        t = np.radians(angles_deg[0])
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    lin = rot @ first.directions @ np.diag(spacing)
    centre = first.centre() + np.asarray(shift_mm, float)
    origin = centre - lin @ ((np.asarray(shape) - 1) / 2.0)
    a = np.eye(n + 1)
    a[:n, :n], a[:n, n] = lin, origin
    return ChannelGeometry(tuple(shape), a, first.frame)


def _resample_known(volume, geometry, target, order=3) -> np.ndarray:
    """The test's own "scanner": ``volume`` (on ``geometry``) sampled at
    ``target``'s voxel centres with scipy (cubic)."""
    m = np.linalg.inv(geometry.affine) @ target.affine
    n = geometry.ndim
    return ndimage.affine_transform(
        volume.astype(np.float64),
        m[:n, :n],
        offset=m[:n, n],
        output_shape=target.shape,
        order=order,
        mode="nearest",
    ).astype(np.float32)


def _world_grid(geometry: ChannelGeometry) -> np.ndarray:
    idx = np.stack(
        np.meshgrid(*[np.arange(s) for s in geometry.shape], indexing="ij"), -1
    )
    return geometry.index_to_world(idx)


def _blobs(world: np.ndarray, centres, amplitude) -> np.ndarray:
    out = np.zeros(world.shape[:-1])
    for c in centres:
        d2 = np.sum((world - np.asarray(c)) ** 2, axis=-1)
        out += amplitude * np.exp(-d2 / (2 * SIGMA_MM**2))
    return out


def _centroid(volume, approx_index, radius=5) -> np.ndarray:
    """Centroid (array index) of the bright blob near ``approx_index``: the
    voxels above half-way between the window's median and its peak."""
    lo = np.maximum(np.round(approx_index).astype(int) - radius, 0)
    hi = lo + 2 * radius + 1
    win = volume[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float64)
    base, peak = np.median(win), win.max()
    w = np.clip(win - (base + peak) / 2, 0, None)
    idx = np.meshgrid(*[np.arange(s) for s in win.shape], indexing="ij")
    return np.array([(w * i).sum() / w.sum() for i in idx]) + lo


def _landmark_errors(reference, aligned, geometry, centres) -> np.ndarray:
    """Distance (voxels of the first grid) between each blob's centroid in
    the aligned channel and in the first channel."""
    inv = np.linalg.inv(geometry.affine)
    n = geometry.ndim
    errors = []
    for c in centres:
        approx = inv[:n, :n] @ np.asarray(c) + inv[:n, n]
        errors.append(
            np.linalg.norm(_centroid(aligned, approx) - _centroid(reference, approx))
        )
    return np.array(errors)


def _phase_shift(reference, moving) -> np.ndarray:
    from skimage.registration import phase_cross_correlation

    shift, _error, _phase = phase_cross_correlation(
        reference.astype(np.float64), moving.astype(np.float64), upsample_factor=20
    )
    return np.asarray(shift)


def _smooth_head(world: np.ndarray, centre, radii) -> np.ndarray:
    """A smooth ellipsoidal "head" (about 1 inside, 0 outside, a 2 mm soft
    edge) with a gentle inner gradient."""
    r = np.sqrt(np.sum(((world - centre) / np.asarray(radii)) ** 2, axis=-1))
    head = 1 / (1 + np.exp((r - 1) * min(radii) / 2.0))
    return head * (0.8 + 0.2 * np.cos((world[..., -1] - centre[-1]) / 9.0))


# -- accuracy: two series of one head at different spacing ----------------------------
def test_synthetic_head_realigned_within_half_a_voxel():
    first = ChannelGeometry.from_transform(
        (48, 64, 64), (1.0, 1.0, 1.0), (-24, -32, -32)
    )
    centre = first.centre()
    blobs = [
        centre + d for d in ([6, -10, 8], [-8, 9, -12], [2, 14, 15], [-5, -15, -6])
    ]

    def scan(geometry):  # the head as a scanner would sample it, exactly
        world = _world_grid(geometry)
        return (
            _smooth_head(world, centre, (20, 27, 27)) + _blobs(world, blobs, 4.0)
        ).astype(np.float32)

    # the second series: 1.5 x 1.2 x 2 mm (x, y, z), centre moved, rotated,
    # a field of view that holds all of the first one
    second = _second_grid(
        first, (2.0, 1.2, 1.5), (34, 72, 62), (3.3, -2.7, 4.1), (3, -2, 6)
    )
    assert covered_fraction(first, second) == 1.0
    v0, v1 = scan(first), scan(second)

    (a0, a1), messages = align_channels([v0, v1], [first, second], ["T1", "T2"])
    assert a0 is v0 and a1.shape == v0.shape and a1.dtype == np.float32
    (msg,) = messages
    assert msg.startswith(
        "T2: resampled from 1.5×1.2×2.0 mm onto T1's 1.0×1.0×1.0 mm grid"
    )
    assert "orientation" in msg and "mm apart" in msg and "outside" not in msg

    errors = _landmark_errors(v0, a1, first, blobs)
    assert errors.max() <= 0.5, errors
    assert np.abs(_phase_shift(v0, a1)).max() <= 0.5
    # and the intensities agree where the head is smooth
    inside = _smooth_head(_world_grid(first), centre, (16, 22, 22)) > 0.5
    assert np.median(np.abs(a1 - v0)[inside]) < 0.05


@pytest.mark.skipif(not COLIN.exists(), reason=f"{COLIN} absent (mricron-data)")
def test_colin27_second_series_realigned_within_half_a_voxel():
    from napari_medcnn.io import load

    scan = load(COLIN)[0]
    geometry = ChannelGeometry.from_scan(scan)
    assert geometry.frame == "lps" and geometry.shape == scan.data.shape
    # a block of the head (fast), its own affine moved to the block's corner
    lo = np.array([58, 70, 60])
    block = np.ascontiguousarray(scan.data[58:122, 70:150, 60:124], dtype=np.float32)
    a = np.array(geometry.affine)
    a[:3, 3] = geometry.index_to_world(lo)
    first = ChannelGeometry.from_affine(block.shape, a)
    hi = float(np.percentile(block, 99))
    centre = first.centre()
    blobs = [
        centre + d for d in ([8, -12, 10], [-10, 10, -14], [4, 16, 18], [-6, -18, -8])
    ]
    block = block + _blobs(_world_grid(first), blobs, 3 * hi).astype(np.float32)

    second = _second_grid(
        first, (2.0, 1.2, 1.5), (44, 84, 58), (-2.6, 3.8, 1.9), (-4, 2.5, 5)
    )
    assert covered_fraction(first, second) == 1.0
    t2 = _resample_known(block, first, second)  # the known transform, scipy

    (_, aligned), (msg,) = align_channels([block, t2], [first, second], ["T1", "T2"])
    assert "resampled from 1.5×1.2×2.0 mm onto T1's 1.0×1.0×1.0 mm grid" in msg
    errors = _landmark_errors(block, aligned, first, blobs)
    assert errors.max() <= 0.5, errors
    assert np.abs(_phase_shift(block, aligned)).max() <= 0.5


def test_2d_slices_at_different_pixel_sizes_realigned():
    first = ChannelGeometry.from_transform((120, 110), (0.8, 0.8), (10.0, -4.0))
    centre = first.centre()
    blobs = [centre + d for d in ([10, -12], [-14, 9], [16, 18])]

    def image(geometry):
        world = _world_grid(geometry)
        return (
            _smooth_head(world, centre, (40, 38)) + _blobs(world, blobs, 4.0)
        ).astype(np.float32)

    second = _second_grid(first, (0.5, 0.6), (200, 170), (2.2, -1.7), (4,))
    (a0, a1), (msg,) = align_channels(
        [image(first), image(second)], [first, second], ["FLAIR", "DWI"]
    )
    assert "DWI: resampled from 0.6×0.5 mm onto FLAIR's 0.8×0.8 mm grid" in msg
    assert _landmark_errors(a0, a1, first, blobs).max() <= 0.5


# -- what is refused, and what is left alone ---------------------------------------
def test_equal_geometry_is_a_no_op():
    g = ChannelGeometry.from_transform((6, 20, 30), (3.0, 0.9, 0.9), (1, 2, 3))
    near = ChannelGeometry(g.shape, g.affine + 1e-5, g.frame)  # float noise
    arrays = [np.zeros(g.shape), np.ones(g.shape, np.int16), np.full(g.shape, 2.0)]
    out, messages = align_channels(arrays, [g, near, g])
    assert messages == [] and all(o is a for o, a in zip(out, arrays))
    assert check_alignment([g, near]) == ([], [])


def test_fields_of_view_that_do_not_overlap_are_refused():
    g0 = ChannelGeometry.from_transform((10, 32, 32), (2.0, 1.0, 1.0))
    far = ChannelGeometry.from_transform((10, 32, 32), (2.0, 1.0, 1.0), (0, 0, 500))
    arrays = [np.zeros(g0.shape)] * 2
    with pytest.raises(ValueError, match="'T2' does not overlap 'T1' at all"):
        align_channels(arrays, [g0, far], ["T1", "T2"])
    # 3 of 32 columns: under the 10 % asked for
    edge = ChannelGeometry.from_transform((10, 32, 32), (2.0, 1.0, 1.0), (0, 0, 29))
    assert covered_fraction(g0, edge) == pytest.approx(3 / 32)
    with pytest.raises(ValueError, match=r"'FLAIR' covers only 9 % of 'T1''s"):
        align_channels(arrays, [g0, edge], ["T1", "FLAIR"])
    # 4 of 32 columns: enough, and the rest is filled with the minimum
    edge = ChannelGeometry.from_transform((10, 32, 32), (2.0, 1.0, 1.0), (0, 0, 28))
    values = np.arange(10 * 32 * 32, dtype=np.float32).reshape(10, 32, 32) + 5
    (_, out), (msg,) = align_channels(
        [np.zeros(g0.shape), values], [g0, edge], ["T1", "FLAIR"]
    )
    assert "88 % of T1's grid lies outside FLAIR's field of view" in msg
    assert np.array_equal(out[..., 28:], values[..., :4])  # whole-voxel shift
    assert np.all(out[..., :28] == 5)


def test_2d_and_3d_mixed_are_refused():
    g2 = ChannelGeometry.from_transform((32, 32), (1.0, 1.0))
    g3 = ChannelGeometry.from_transform((4, 32, 32), (1.0, 1.0, 1.0))
    with pytest.raises(
        ValueError, match="cannot mix 2D and 3D.*'T1' is 3D.*'slice' is 2D"
    ):
        align_channels(
            [np.zeros(g3.shape), np.zeros(g2.shape)], [g3, g2], ["T1", "slice"]
        )


def test_frames_and_shapes_must_fit():
    g = ChannelGeometry.from_transform((4, 8, 8), (1.0, 1.0, 1.0))
    lps = ChannelGeometry.from_affine((4, 8, 8), np.eye(4))
    with pytest.raises(ValueError, match="different frames"):
        check_alignment([g, lps])
    with pytest.raises(ValueError, match="does not match its geometry"):
        align_channels([np.zeros((4, 8, 8)), np.zeros((4, 8, 9))], [g, g])
    with pytest.raises(ValueError, match="2D or 3D"):
        ChannelGeometry((2, 2, 2, 2), np.eye(5))


def test_slabs_give_the_same_result_as_one_piece(monkeypatch):
    rng = np.random.default_rng(3)
    g0 = ChannelGeometry.from_transform((20, 24, 28), (1.0, 1.0, 1.0))
    g1 = _second_grid(g0, (1.7, 1.1, 0.9), (13, 20, 30), (1.5, -0.5, 2.0), (5, 0, -3))
    data = ndimage.gaussian_filter(rng.random(g1.shape), 1.5).astype(np.float32)
    (_, whole), _ = align_channels([np.zeros(g0.shape), data], [g0, g1])
    monkeypatch.setattr(channels, "CHUNK_VOXELS", 24 * 28 * 3 + 5)  # 3-slice slabs
    (_, slabs), _ = align_channels([np.zeros(g0.shape), data], [g0, g1])
    assert np.array_equal(whole, slabs)


def test_rgb_axis_is_resampled_per_component():
    g0 = ChannelGeometry.from_transform((16, 16), (1.0, 1.0))
    g1 = ChannelGeometry.from_transform((16, 16), (1.0, 1.0), (2.0, 0.0))
    rgb = np.stack([np.full((16, 16), v, np.uint8) for v in (10, 20, 30)], -1)
    (_, out), _ = align_channels([np.zeros((16, 16, 3)), rgb], [g0, g1])
    assert out.shape == (16, 16, 3)
    assert np.array_equal(out[5, 5], [10, 20, 30])


def test_geometry_from_scan_and_layer_metadata_agree():
    from napari_medcnn.io.scan import Scan

    affine = _affine(
        (3.0, 0.9, 0.8),
        Rotation.from_euler("z", 20, degrees=True).as_matrix(),
        (5, -7, 9),
    )
    scan = Scan(np.zeros((5, 6, 7)), (3.0, 0.9, 0.8), (1, 2, 3), affine, "MR T2")
    from_scan = ChannelGeometry.from_scan(scan)
    from_md = ChannelGeometry.from_metadata((5, 6, 7), scan.layer_metadata())
    assert from_scan.frame == "lps" and from_scan.same_as(from_md)
    assert from_scan.spacing == pytest.approx((3.0, 0.9, 0.8))
    assert ChannelGeometry.from_metadata((6, 7), scan.layer_metadata()) is None
    flat = Scan(np.zeros((6, 7)), (0.9, 0.8), (2, 3), affine, "MR slice")
    assert ChannelGeometry.from_scan(flat).frame == "napari"
    assert format_spacing((3.0, 0.9375, 0.9375)) == "0.94×0.94×3.0"


# -- which layer is which channel ---------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("T1w", "t1"),
        ("t1_mprage_sag_p2", "t1"),
        ("MR brain T1 (Colin27)", "t1"),
        ("AX T1 post gad", "t1c"),
        ("T1+C", "t1c"),
        ("T2w", "t2"),
        ("t2_tse_tra", "t2"),
        ("t2_flair_tra", "flair"),
        ("AX T2 FLAIR", "flair"),
        ("FLAIR", "flair"),
        ("dwi_b1000", "dwi"),
        ("ep2d_diff_3scan_trace", "dwi"),
        ("ep2d_diff_ADC", "adc"),
        ("PD", "pd"),
        ("proton density", "pd"),
        ("CT head", "ct"),
        ("MR", None),
        ("rectum", None),  # no "ct" inside words
        ("T1 T2 combo", None),  # names two: no guess
        (None, None),
    ],
)
def test_sequence_keys(text, key):
    assert sequence_key(text) == key


def test_good_names_give_the_card_order():
    layers = [
        {"name": "MR t2_flair_tra", "modality": "MR"},
        {"name": "image 2", "series_description": "t1_mprage_sag"},
        {"name": "T2w"},
    ]
    assert match_channels(["T1", "T2", "FLAIR"], layers) == ((1, 2, 0), [])
    # already in order: the identity, nothing to say
    ordered = [layers[1], layers[2], layers[0]]
    assert match_channels(["T1", "T2", "FLAIR"], ordered) == ((0, 1, 2), [])
    # CT from the DICOM modality
    ct = [{"name": "series 3", "modality": "CT"}, {"name": "T1"}]
    assert match_channels(["T1", "CT"], ct) == ((1, 0), [])


def test_mismatched_or_ambiguous_names_warn():
    order, warnings = match_channels(
        ["T1", "T2", "FLAIR"], [{"name": "T1"}, {"name": "T2w"}, {"name": "dwi_b1000"}]
    )
    assert order is None
    assert (
        "the model expects T1, T2, FLAIR; layer 'dwi_b1000' matches none "
        "(it looks like DWI)" in warnings
    )
    assert any("no ticked layer looks like FLAIR" in w for w in warnings)

    order, warnings = match_channels(
        ["T1", "T2"], [{"name": "T1w"}, {"name": "mprage"}]
    )
    assert order is None
    assert any("layers 'T1w', 'mprage' all look like T1" in w for w in warnings)

    # a generic channel ("MR"): no order, but a T1 in the T2 slot is said
    order, warnings = match_channels(["MR", "T2"], [{"name": "T2"}, {"name": "T1"}])
    assert order is None
    assert warnings == [
        "the model expects MR, T2; channel 2 (T2) is layer 'T1', which looks like T1"
    ]


def test_nothing_said_when_the_card_names_no_sequence():
    assert match_channels(["MR"], [{"name": "FLAIR"}]) == (None, [])
    assert match_channels([], [{"name": "FLAIR"}]) == (None, [])
    assert match_channels(["T1", "T2"], [{"name": "T1"}]) == (None, [])  # count
    assert match_channels(["image"], [{"name": "Image"}]) == (None, [])
