"""NIfTI and plain-image readers: shapes, spacing, orientation, round trips."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import (
    apply_orientation,
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from napari_medcnn.io import ScanReadError, load
from napari_medcnn.io.images import load_image
from napari_medcnn.io.nifti import load_nifti

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _check_world(scan, path, n=200, seed=0):
    """Every sampled voxel of ``scan`` holds the value the file has at the
    same world position (read independently with nibabel)."""
    img = nib.load(str(path))
    raw = np.asanyarray(img.dataobj)
    if raw.ndim > 3:
        raw = raw[(slice(None),) * 3 + (0,) * (raw.ndim - 3)]
    inv = np.linalg.inv(img.affine)
    rng = np.random.default_rng(seed)
    shape = scan.data.shape
    idx = np.stack([rng.integers(0, s, n) for s in shape], axis=1)
    world_lps = idx @ scan.affine[:3, :3].T + scan.affine[:3, 3]
    ijk = (world_lps @ LPS_TO_RAS) @ inv[:3, :3].T + inv[:3, 3]
    ijk_int = np.rint(ijk).astype(int)
    np.testing.assert_allclose(ijk, ijk_int, atol=1e-3)
    expected = raw[tuple(ijk_int.T)]
    np.testing.assert_allclose(scan.data[tuple(idx.T)], expected, rtol=1e-6)


def _assert_lps_axes(affine):
    """Array x runs towards L, y towards P, z towards S (dominant cosine)."""
    for col, lps_axis in ((2, 0), (1, 1), (0, 2)):
        d = affine[:3, col]
        assert int(np.argmax(np.abs(d))) == lps_axis
        assert d[lps_axis] > 0


@pytest.mark.parametrize(
    "fname, shape, spacing, codes",
    [
        ("anatomical.nii", (25, 41, 33), (2.0, 2.0, 2.0), set()),
        ("example4d.nii.gz", (24, 96, 128), (2.2, 2.0, 2.0), {"multi_volume"}),
        ("example_nifti2.nii.gz", (12, 20, 32), (2.2, 2.0, 2.0), {"multi_volume"}),
        ("functional.nii", (3, 21, 17), (8.0, 4.0, 4.0), {"multi_volume"}),
        ("standard.nii.gz", (7, 5, 4), (2.0, 3.0, 1.0), set()),
        ("reoriented_anat_moved.nii", (22, 26, 21), (4.0, 4.0, 4.0), set()),
        ("resampled_anat_moved.nii", (3, 21, 17), (8.0, 4.0, 4.0), {"non_finite"}),
    ],
)
def test_nibabel_test_files(fname, shape, spacing, codes):
    path = NIB_DATA / fname
    if not path.exists():
        pytest.skip(f"{path} not shipped with this nibabel")
    scan = load_nifti(path)
    assert scan.data.shape == shape
    assert scan.data.dtype == np.float32
    np.testing.assert_allclose(scan.spacing, spacing, atol=1e-5)
    assert scan.axis_labels == ("z", "y", "x")
    assert scan.units == ("mm", "mm", "mm")
    assert scan.quality.codes() == codes
    assert scan.metadata["format"] == "nifti"
    assert scan.name == fname.split(".")[0]
    _assert_lps_axes(scan.affine)
    _check_world(scan, path)
    lo, hi = scan.contrast_limits()
    assert hi > lo


def test_example4d_is_oblique_and_keeps_true_affine():
    path = NIB_DATA / "example4d.nii.gz"
    scan = load_nifti(path)
    img = nib.load(str(path))
    assert scan.metadata["oblique_deg"] == pytest.approx(9.3, abs=0.1)
    np.testing.assert_allclose(scan.metadata["affine_ras_original"], img.affine)
    assert scan.metadata["original_axcodes"] == "LAS"
    assert scan.metadata["n_volumes"] == 2
    assert (scan.metadata["qform_code"], scan.metadata["sform_code"]) == (1, 1)
    # the voxel at array index 0 is the file's voxel (0, ny-1, 0) (A flipped)
    corner = img.affine @ [0, img.shape[1] - 1, 0, 1]
    np.testing.assert_allclose(scan.affine[:3, 3], LPS_TO_RAS @ corner[:3], atol=1e-4)


def test_nifti2_header_version():
    assert load_nifti(NIB_DATA / "example_nifti2.nii.gz").metadata["nifti_version"] == 2
    assert load_nifti(NIB_DATA / "anatomical.nii").metadata["nifti_version"] == 1


def _volume(shape=(7, 9, 11), seed=1):
    rng = np.random.default_rng(seed)
    return rng.integers(-500, 1500, size=shape).astype(np.int16)


def _ras_canonical(data_xyz, zooms=(1.2, 0.8, 2.5), offset=(-10.0, 20.0, 5.0)):
    aff = np.diag([*zooms, 1.0])
    aff[:3, 3] = offset
    return aff


def _reoriented_copy(data, affine, axcodes):
    """The same image stored with voxel axes ``axcodes`` (flips/permutes)."""
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(axcodes))
    new = apply_orientation(data, transform)
    return new, affine @ inv_ornt_aff(transform, data.shape)


@pytest.mark.parametrize(
    "axcodes",
    [
        ("R", "A", "S"),
        ("L", "A", "S"),
        ("L", "P", "I"),
        ("A", "S", "R"),
        ("I", "L", "P"),
        ("P", "I", "L"),
    ],
)
def test_flipped_permuted_nifti_loads_identically(tmp_path, axcodes):
    data = _volume()
    aff = _ras_canonical(data)
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "canon.nii")
    moved, moved_aff = _reoriented_copy(data, aff, axcodes)
    assert nib.aff2axcodes(moved_aff) == axcodes
    nib.save(nib.Nifti1Image(moved, moved_aff), tmp_path / "moved.nii.gz")
    a = load_nifti(tmp_path / "canon.nii")
    b = load_nifti(tmp_path / "moved.nii.gz")
    assert a.metadata["original_axcodes"] == "RAS"
    assert b.metadata["original_axcodes"] == "".join(axcodes)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-5)
    np.testing.assert_allclose(a.spacing, (2.5, 0.8, 1.2), atol=1e-6)
    # RAS data (x, y, z) -> (z, y, x) with x and y flipped to run R->L, A->P
    expected = np.transpose(data[::-1, ::-1, :], (2, 1, 0))
    np.testing.assert_array_equal(a.data, expected)
    # voxel 0 sits at the right-anterior-inferior corner, in LPS mm
    corner_ras = aff @ [data.shape[0] - 1, data.shape[1] - 1, 0, 1]
    np.testing.assert_allclose(a.affine[:3, 3], LPS_TO_RAS @ corner_ras[:3], atol=1e-5)
    dirs = (a.affine[:3, :3] / np.linalg.norm(a.affine[:3, :3], axis=0)).T
    np.testing.assert_allclose(a.origin, dirs @ a.affine[:3, 3])
    _check_world(b, tmp_path / "moved.nii.gz")


def test_oblique_nifti_keeps_exact_affine(tmp_path):
    data = _volume((10, 12, 8))
    t = np.radians(20.0)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.9, 1.1, 2.5])
    aff[:3, 3] = (5.0, -7.0, 3.0)
    nib.save(nib.Nifti1Image(data, aff), tmp_path / "obl.nii")
    scan = load_nifti(tmp_path / "obl.nii")
    assert scan.data.shape == (8, 12, 10)
    np.testing.assert_allclose(scan.spacing, (2.5, 1.1, 0.9), atol=1e-5)
    assert scan.metadata["oblique_deg"] == pytest.approx(20.0, abs=1e-3)
    _assert_lps_axes(scan.affine)
    _check_world(scan, tmp_path / "obl.nii")


def test_scaling_applied_as_float32(tmp_path):
    data = _volume()
    img = nib.Nifti1Image(data, _ras_canonical(data))
    img.header.set_slope_inter(0.5, -100.0)
    nib.save(img, tmp_path / "scaled.nii")
    scan = load_nifti(tmp_path / "scaled.nii")
    assert scan.data.dtype == np.float32
    expected = np.transpose(data[::-1, ::-1, :], (2, 1, 0)) * 0.5 - 100.0
    np.testing.assert_allclose(scan.data, expected, rtol=0, atol=1e-4)


def test_4d_takes_first_volume(tmp_path):
    data = np.stack([_volume(seed=s) for s in range(3)], axis=-1)
    nib.save(nib.Nifti1Image(data, _ras_canonical(data)), tmp_path / "t.nii.gz")
    scan = load_nifti(tmp_path / "t.nii.gz")
    expected = np.transpose(data[::-1, ::-1, :, 0], (2, 1, 0))
    np.testing.assert_array_equal(scan.data, expected)
    assert "multi_volume" in scan.quality.codes()
    assert scan.metadata["n_volumes"] == 3


@pytest.mark.parametrize("shape", [(11, 9), (11, 9, 1)])
def test_2d_nifti(tmp_path, shape):
    data = _volume(shape)
    if len(shape) == 2:
        # 2D files often carry a zero third column in the sform
        img = nib.Nifti1Image(data, None)
        img.header.set_qform(None, code=0)
        img.header.set_sform(np.diag([0.5, 0.7, 0.0, 1.0]), code=2)
    else:
        img = nib.Nifti1Image(data, np.diag([0.5, 0.7, 1.0, 1.0]))
    nib.save(img, tmp_path / "slice.nii")
    scan = load_nifti(tmp_path / "slice.nii")
    assert scan.data.shape == (9, 11)
    assert scan.ndim_spatial == 2
    assert scan.axis_labels == ("y", "x")
    np.testing.assert_allclose(scan.spacing, (0.7, 0.5), atol=1e-6)
    plane = data.reshape(11, 9)
    np.testing.assert_array_equal(scan.data, plane[::-1, ::-1].T)
    np.testing.assert_allclose(scan.to_layer_data()[1]["scale"], (0.7, 0.5), atol=1e-6)
    assert np.linalg.det(scan.affine[:3, :3]) != 0


def test_2d_coronal_nifti_moves_the_flat_axis_to_z(tmp_path):
    data = _volume((11, 1, 9))  # R-L by A-P (1) by I-S: a coronal slice
    nib.save(nib.Nifti1Image(data, np.diag([0.5, 3.0, 0.7, 1.0])), tmp_path / "c.nii")
    scan = load_nifti(tmp_path / "c.nii")
    assert scan.data.shape == (9, 11)  # rows Superior -> Inferior, cols R -> L
    np.testing.assert_array_equal(scan.data, data[::-1, 0, ::-1].T)
    np.testing.assert_allclose(scan.spacing, (0.7, 0.5), atol=1e-6)
    np.testing.assert_allclose(scan.affine[:3, 0], (0, 3.0, 0), atol=1e-6)
    # row 0 is the most superior voxel: LPS z of (row 0) > z of (last row)
    top = scan.affine @ np.array([0, 0, 0, 1.0])
    bottom = scan.affine @ np.array([0, 8, 0, 1.0])
    assert top[2] - bottom[2] == pytest.approx(8 * 0.7)
    # the affine still maps each pixel to where the file puts it
    ras = np.diag([0.5, 3.0, 0.7, 1.0])
    for r, c in ((0, 0), (3, 7), (8, 10)):
        lps = scan.affine @ np.array([0, r, c, 1.0])
        i = np.rint(np.linalg.inv(ras) @ (np.diag([-1, -1, 1, 1.0]) @ lps)).astype(int)
        assert scan.data[r, c] == data[i[0], i[1], i[2]]


def test_2d_sagittal_nifti_is_upright(tmp_path):
    data = _volume((1, 8, 6))  # one sagittal slice: A-P by I-S
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 0.9, 1.1, 1.0])), tmp_path / "s.nii")
    scan = load_nifti(tmp_path / "s.nii")
    assert scan.data.shape == (6, 8)  # rows Superior -> Inferior, cols A -> P
    np.testing.assert_array_equal(scan.data, data[0, ::-1, ::-1].T)
    assert scan.affine[2, 1] < 0  # going down a row goes inferior


@pytest.mark.parametrize("shape", [(5, 6, 4), (5, 6)])
def test_rgb24_nifti(tmp_path, shape):
    rgb_dtype = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
    vox = np.zeros(shape, rgb_dtype)
    vox["R"] = np.arange(np.prod(shape)).reshape(shape) % 251
    vox["G"], vox["B"] = 7, 200
    nib.save(nib.Nifti1Image(vox, np.diag([1.0, 2.0, 3.0, 1.0])), tmp_path / "c.nii")
    scan = load_nifti(tmp_path / "c.nii")
    assert scan.rgb and scan.data.dtype == np.uint8
    red = vox["R"].reshape(5, 6, -1)[::-1, ::-1, :].transpose(2, 1, 0)
    if len(shape) == 2:
        red = red[0]
    np.testing.assert_array_equal(scan.data[..., 0], red)
    assert (scan.data[..., 2] == 200).all()
    assert scan.contrast_limits() is None
    assert scan.ndim_spatial == len(shape)


def test_micron_units_become_mm(tmp_path):
    data = _volume()
    img = nib.Nifti1Image(data, np.diag([100.0, 200.0, 300.0, 1.0]))
    img.header.set_xyzt_units("micron")
    nib.save(img, tmp_path / "um.nii")
    scan = load_nifti(tmp_path / "um.nii")
    np.testing.assert_allclose(scan.spacing, (0.3, 0.2, 0.1))


def test_no_orientation_is_reported(tmp_path):
    data = _volume()
    img = nib.Nifti1Image(data, None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    nib.save(img, tmp_path / "bare.nii")
    scan = load_nifti(tmp_path / "bare.nii")
    assert "no_orientation" in scan.quality.codes()
    assert scan.data.shape == (11, 9, 7)


def test_load_dispatches_nifti():
    scans = load(NIB_DATA / "anatomical.nii")
    assert len(scans) == 1 and scans[0].metadata["format"] == "nifti"


def test_corrupt_nifti_raises(tmp_path):
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"not a nifti header at all" * 3)
    with pytest.raises(ScanReadError, match="garbage.nii"):
        load_nifti(garbage)
    good = NIB_DATA / "anatomical.nii"
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes())[:2000])
    with pytest.raises(ScanReadError, match="truncated.nii.gz"):
        load_nifti(truncated)
    with pytest.raises(ScanReadError, match="no such file"):
        load_nifti(tmp_path / "absent.nii")


def test_cifti_is_refused():
    path = NIB_DATA / "row_major.dconn.nii"
    if not path.exists():
        pytest.skip("no CIFTI test file")
    with pytest.raises(ScanReadError, match="not a NIfTI volume"):
        load_nifti(path)


# ---------------------------------------------------------------- images ---


def _gradient(shape, dtype=np.uint8):
    yy, xx = np.indices(shape[:2])
    img = (yy * 7 + xx * 3) % (256 if dtype == np.uint8 else 4000)
    return img.astype(dtype)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp"])
def test_gray_roundtrip_lossless(tmp_path, suffix):
    from PIL import Image

    arr = _gradient((33, 47))
    path = tmp_path / f"gray{suffix}"
    Image.fromarray(arr).save(path)
    scan = load_image(path)
    np.testing.assert_array_equal(scan.data, arr)
    assert not scan.rgb
    assert scan.spacing == (1.0, 1.0)
    assert scan.origin == (0.0, 0.0)
    assert scan.units == ("pixel", "pixel")
    assert scan.axis_labels == ("y", "x")
    assert scan.name == "gray"
    kwargs = scan.to_layer_data()[1]
    assert kwargs["scale"] == (1.0, 1.0)
    assert kwargs["contrast_limits"][1] > kwargs["contrast_limits"][0]


def test_uint16_png(tmp_path):
    import skimage.io

    arr = _gradient((20, 30), np.uint16)
    skimage.io.imsave(tmp_path / "deep.png", arr, check_contrast=False)
    scan = load_image(tmp_path / "deep.png")
    assert scan.data.dtype == np.uint16
    np.testing.assert_array_equal(scan.data, arr)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_rgb_png_drops_alpha(tmp_path, mode):
    from PIL import Image

    g = _gradient((21, 17))
    rgb = np.stack([g, 255 - g, np.full_like(g, 200)], axis=-1)
    arr = rgb if mode == "RGB" else np.dstack([rgb, np.full((21, 17), 9, np.uint8)])
    Image.fromarray(arr, mode).save(tmp_path / "c.png")
    scan = load_image(tmp_path / "c.png")
    assert scan.rgb
    assert scan.data.shape == (21, 17, 3)
    np.testing.assert_array_equal(scan.data, rgb)
    assert scan.contrast_limits() is None
    assert scan.axis_labels == ("y", "x")


def test_gray_alpha_png(tmp_path):
    from PIL import Image

    gray = _gradient((12, 14))
    la = np.dstack([gray, np.full_like(gray, 255)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    scan = load_image(tmp_path / "la.png")
    assert not scan.rgb
    np.testing.assert_array_equal(scan.data, gray)


def test_jpeg_roundtrip_lossy(tmp_path):
    from PIL import Image

    arr = _gradient((40, 48))
    smooth = (np.add.outer(np.arange(40), np.arange(48)) * 2).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "g.jpg", quality=95)
    scan = load_image(tmp_path / "g.jpg")
    assert scan.data.shape == arr.shape and not scan.rgb
    assert np.abs(scan.data.astype(int) - smooth).max() <= 4
    Image.fromarray(np.dstack([smooth] * 3)).save(tmp_path / "c.jpeg", quality=95)
    scan = load_image(tmp_path / "c.jpeg")
    assert scan.rgb and scan.data.shape == (40, 48, 3)


def test_multipage_tiff_is_a_volume(tmp_path):
    import tifffile

    vol = np.stack([_gradient((16, 24), np.uint16) + k for k in range(5)])
    tifffile.imwrite(tmp_path / "stack.tif", vol)
    scan = load_image(tmp_path / "stack.tif")
    np.testing.assert_array_equal(scan.data, vol)
    assert scan.axis_labels == ("z", "y", "x")
    assert scan.spacing == (1.0, 1.0, 1.0)
    assert scan.units == ("pixel",) * 3
    np.testing.assert_array_equal(scan.affine @ [2, 3, 4, 1], [4, 3, 2, 1])


def test_three_page_tiff_vs_rgb_tiff(tmp_path):
    import tifffile

    pages = np.stack([_gradient((10, 3))] * 3)  # (3, 10, 3): pages, not RGB
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")
    scan = load_image(tmp_path / "pages.tif")
    assert not scan.rgb and scan.data.shape == (3, 10, 3)
    rgb = np.dstack([_gradient((10, 12))] * 3)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    scan = load_image(tmp_path / "rgb.tif")
    assert scan.rgb and scan.data.shape == (10, 12, 3)
    stack = np.stack([rgb, rgb])
    tifffile.imwrite(tmp_path / "rgbstack.tif", stack, photometric="rgb")
    scan = load_image(tmp_path / "rgbstack.tif")
    assert scan.rgb and scan.data.shape == (2, 10, 12, 3)
    assert scan.ndim_spatial == 3


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp"])
def test_corrupt_image_raises(tmp_path, suffix):
    from PIL import Image

    good = tmp_path / f"good{suffix}"
    Image.fromarray(_gradient((64, 64))).save(good)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[:40])
    with pytest.raises(ScanReadError, match=f"bad{suffix}") as err:
        load_image(bad)
    assert err.value.reason
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ScanReadError, match=f"junk{suffix}"):
        load_image(junk)


def test_empty_and_missing_image(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ScanReadError, match="empty.png"):
        load_image(empty)
    with pytest.raises(ScanReadError, match="no such file"):
        load_image(tmp_path / "absent.png")


def test_load_dispatches_image(tmp_path):
    from PIL import Image

    Image.fromarray(_gradient((8, 9))).save(tmp_path / "d.png")
    scans = load(tmp_path / "d.png")
    assert len(scans) == 1 and scans[0].metadata["format"] == "image"
