"""Synthetic lesions in healthy heads (napari_medcnn.io.lesions, issue 14).

Most tests use a small synthetic ellipsoid "head" with anisotropic voxels,
so they run without any data; the Colin27 tests use the real head when it
is there (the shipped copy or Debian's mricron-data) and skip otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from napari_medcnn._atomic import OverwriteError
from napari_medcnn.io import ScanReadError, load
from napari_medcnn.io.lesions import (
    SourceError,
    Variation,
    find_colin27,
    foreground_mask,
    insert_lesion,
    load_source,
    make_cohort,
    make_volume,
    output_grid,
    prepare_source,
    resample,
)
from napari_medcnn.training.labels.csv import read_label_csv

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_lesion_volumes.py"
SPACING = (2.0, 1.0, 1.2)  # mm, (z, y, x): anisotropic on purpose
COLIN27 = find_colin27()
needs_colin27 = pytest.mark.skipif(
    COLIN27 is None,
    reason="Colin27 not found: neither napari_medcnn/data/colin27_t1.nii.gz nor "
    "Debian's /usr/share/mricron/templates/ch2.nii.gz (apt-get install "
    "mricron-data)",
)


def synthetic_head(
    shape=(30, 64, 56), spacing=SPACING, semi_mm=(26.0, 29.0, 30.0)
) -> np.ndarray:
    """An ellipsoid 'head' in mm: a 4 mm scalp (60), brain (100) with a
    darker 'ventricle' (40) in the middle, background 0."""
    axes = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    r = np.sqrt((z / semi_mm[0]) ** 2 + (y / semi_mm[1]) ** 2 + (x / semi_mm[2]) ** 2)
    head = np.zeros(shape, np.float32)
    head[r <= 1.0] = 60.0
    head[r <= 1.0 - 4.0 / min(semi_mm)] = 100.0
    head[np.sqrt((z / 6) ** 2 + (y / 10) ** 2 + (x / 4) ** 2) <= 1.0] = 40.0
    return head


@pytest.fixture(scope="module")
def head() -> np.ndarray:
    return synthetic_head()


def principal_diameters(mask: np.ndarray, spacing) -> np.ndarray:
    """Full axis lengths (mm) of the solid ellipsoid with the mask's second
    moments (variance a**2 / 5 along a semi-axis a), largest first."""
    pts = np.argwhere(mask) * np.asarray(spacing)
    cov = np.cov(pts.T) - np.diag(np.asarray(spacing) ** 2 / 12.0)
    return 2.0 * np.sqrt(5.0 * np.clip(np.linalg.eigvalsh(cov)[::-1], 0, None))


def slice_range(mask: np.ndarray, axis: int = 0) -> list[int]:
    other = tuple(k for k in range(3) if k != axis)
    on = np.flatnonzero(mask.any(axis=other))
    return [int(on[0]), int(on[-1])]


# ------------------------------------------------------------ insert_lesion


@pytest.mark.parametrize("rotate", [True, False])
def test_lesion_lies_inside_the_head_with_its_size_in_mm(head, rotate):
    fg = foreground_mask(head)
    for seed in range(8):
        out, mask, info = insert_lesion(
            head, SPACING, np.random.default_rng(seed), rotate=rotate
        )
        assert out.dtype == np.float32 and out.shape == head.shape
        assert mask.dtype == bool and mask.any()
        assert not (mask & ~fg).any()
        # the centre keeps the margin from the edge of the head
        depth = ndimage.distance_transform_edt(fg, sampling=SPACING)
        c = tuple(info["centre_voxel"])
        assert mask[c]
        assert depth[c] > max(info["axes_mm"]) / 2 + info["margin_mm"]
        assert info["centre_mm"] == pytest.approx(np.multiply(c, SPACING).tolist())
        d = np.asarray(info["axes_mm"])
        assert ((d >= 4.0) & (d <= 15.0)).all()
        if rotate:  # second moments of the mask, in mm
            meas = principal_diameters(mask, SPACING)
            assert meas == pytest.approx(np.sort(d)[::-1], abs=2.0)
        else:  # extent along each array axis: within one voxel of the axis
            for k in range(3):
                lo, hi = slice_range(mask, k)
                extent = (hi - lo + 1) * SPACING[k]
                assert d[k] - SPACING[k] < extent <= d[k] + SPACING[k] + 1e-9
        assert info["n_voxels"] == int(mask.sum())


def test_requested_diameters_are_respected(head):
    _, mask, info = insert_lesion(
        head, SPACING, np.random.default_rng(1), diameter_mm=(10.0, 10.0)
    )
    assert info["axes_mm"] == pytest.approx([10.0] * 3)
    assert principal_diameters(mask, SPACING) == pytest.approx([10.0] * 3, abs=1.2)
    assert info["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 5.0**3, rel=0.15)


def test_edge_is_smooth_and_between_tissue_and_lesion(head):
    flat = np.where(foreground_mask(head), 100.0, 0.0).astype(np.float32)
    for seed in range(4):
        out, mask, info = insert_lesion(
            flat, SPACING, np.random.default_rng(seed), contrast=(0.5, 0.5)
        )
        target, local = info["intensity"], info["local_intensity"]
        assert local == 100.0 and target == pytest.approx(100.0 + 0.5 * 100.0)
        # the blend weight of every voxel on either side of the surface
        weight = (out - flat) / (target - flat)
        inner = mask & ~ndimage.binary_erosion(mask)
        outer = ndimage.binary_dilation(mask) & ~mask
        assert ((weight[inner] > 0.5) & (weight[inner] < 1.0)).all()
        assert ((weight[outer] > 0.0) & (weight[outer] < 0.5)).all()
        assert weight[tuple(info["centre_voxel"])] > 0.9
        # the lesion adds no step as large as its contrast between neighbours
        added = out - flat
        jumps = [np.abs(np.diff(added, axis=k)).max() for k in range(3)]
        assert max(jumps) < 0.8 * (target - local)


def test_contrast_is_relative_to_the_intensity_scale(head):
    out1, m1, i1 = insert_lesion(head, SPACING, np.random.default_rng(5))
    ct_like = head * 10.0 - 1000.0  # other units, negative background
    out2, m2, i2 = insert_lesion(ct_like, SPACING, np.random.default_rng(5))
    np.testing.assert_array_equal(m1, m2)
    np.testing.assert_allclose(out2, out1 * 10.0 - 1000.0, atol=0.05)
    assert i2["contrast"] == pytest.approx(i1["contrast"]) and i1["contrast"] > 0


def test_dark_lesion_and_enhancing_rim(head):
    flat = np.where(foreground_mask(head), 100.0, 0.0).astype(np.float32)
    out, mask, info = insert_lesion(
        flat,
        SPACING,
        np.random.default_rng(2),
        polarity="dark",
        rim=True,
        diameter_mm=(14.0, 15.0),
    )
    assert info["polarity"] == "dark" and info["contrast"] < 0 and info["rim"]
    assert out[tuple(info["centre_voxel"])] < 100.0 - 20.0
    inner = mask & ~ndimage.binary_erosion(mask)
    assert out[inner].mean() > 100.0  # the shell enhances above the tissue
    _, _, no_rim = insert_lesion(flat, SPACING, np.random.default_rng(2), rim=0.0)
    assert not no_rim["rim"] and no_rim["rim_mm"] == 0.0


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_range_matches_the_mask(head, axis):
    _, mask, info = insert_lesion(
        head, SPACING, np.random.default_rng(7), slice_axis=axis
    )
    assert info["slice_axis"] == axis
    assert info["slice_range"] == slice_range(mask, axis)


def test_same_seed_same_lesion_other_seed_other_lesion(head):
    a = insert_lesion(head, SPACING, np.random.default_rng(3))
    b = insert_lesion(head, SPACING, np.random.default_rng(3))
    c = insert_lesion(head, SPACING, np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    assert not np.array_equal(a[1], c[1])


def test_no_room_for_the_lesion_is_a_clear_error():
    tiny = synthetic_head(shape=(8, 12, 12), spacing=(1.0, 1.0, 1.0), semi_mm=(4, 5, 5))
    with pytest.raises(ValueError, match="no room for a lesion"):
        insert_lesion(tiny, (1.0, 1.0, 1.0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="3D volume"):
        insert_lesion(tiny[0], (1.0, 1.0), np.random.default_rng(0))
    with pytest.raises(ValueError, match="polarity"):
        insert_lesion(tiny, (1.0,) * 3, np.random.default_rng(0), polarity="grey")


# ----------------------------------------------------- grid and variation


def test_grid_resampling_updates_the_spacing(head):
    src = load_source((head, SPACING))
    same = output_grid(src, crop=False)
    assert same.shape == head.shape and same.spacing_mm == pytest.approx(SPACING)
    np.testing.assert_allclose(resample(src, same), head, atol=1e-4)

    grid = output_grid(src, shape=(12, 20, 16))
    assert grid.shape == (12, 20, 16)
    box_mm = np.multiply(grid.shape, grid.spacing_mm)
    head_mm = 2 * np.array([26.0, 29.0, 30.0])
    assert (box_mm > head_mm).all() and (box_mm < head_mm + 2 * 10.0 + 4.0).all()
    # the affine's columns are the new voxel sizes
    assert np.linalg.norm(grid.affine[:3, :3], axis=0) == pytest.approx(grid.spacing_mm)
    half = output_grid(src, zoom=0.5, crop=False)
    assert half.shape == (15, 32, 28)
    assert half.spacing_mm == pytest.approx(np.multiply(SPACING, 2.0))


def test_volumes_from_one_head_differ_but_repeat_with_their_seed(head):
    prep = prepare_source((head, SPACING), shape=(16, 24, 24))
    a, _, ia = make_volume(prep, lesion=False, seed=[0, 0])
    b, _, ib = make_volume(prep, lesion=False, seed=[0, 1])
    a2, _, _ = make_volume(prep, lesion=False, seed=[0, 0])
    np.testing.assert_array_equal(a, a2)
    assert ia["rotation_deg"] != ib["rotation_deg"]
    assert np.abs(a - b).mean() > 1.0
    # the lesion changes the lesion's neighbourhood only: same motion and
    # intensity draws with or without it
    c, mask, ic = make_volume(prep, lesion=True, seed=[0, 0])
    assert ic["rotation_deg"] == ia["rotation_deg"] and ic["scale"] == ia["scale"]
    far = ndimage.distance_transform_edt(~mask, sampling=prep.grid.spacing_mm) > 15
    np.testing.assert_allclose(c[far], a[far], atol=1e-2)
    assert np.abs(c - a)[mask].mean() > 10.0
    # no variation at all: the grid's plain resampling
    still, _, _ = make_volume(
        prep,
        lesion=False,
        seed=0,
        variation=Variation(0.0, 0.0, 0.0, (1.0, 1.0), 0.0),
    )
    np.testing.assert_allclose(still, resample(prep.source, prep.grid), atol=1e-4)


# -------------------------------------------------------------- make_cohort


@pytest.fixture(scope="module")
def ras_head_file(tmp_path_factory) -> Path:
    """The synthetic head as a NIfTI in RAS voxel order with an offset, so
    the reader has to flip it to its (z, y, x) LPS layout."""
    head = synthetic_head()
    data = head.transpose(2, 1, 0)[::-1, ::-1]  # voxel (x, y, z): L->R, P->A
    affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
    affine[:3, 3] = (-30.0, -40.0, -20.0)
    path = tmp_path_factory.mktemp("src") / "head.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), path)
    return path


def test_cohort_files_load_with_the_plugins_readers(ras_head_file, tmp_path):
    events = []
    out = tmp_path / "cohort"
    s = make_cohort(
        ras_head_file,
        out,
        5,
        lesion_fraction=0.3,
        seed=3,
        shape=(16, 24, 24),
        write_masks=True,
        progress=events.append,
    )
    assert (s["n"], s["n_lesion"], s["n_normal"]) == (5, 2, 3)  # round(1.5)
    assert events[-1] == ("make_cohort", 5, 5) and len(events) == 5
    rows = read_label_csv(out / "labels.csv")
    assert [r.path for r in rows] == [out / f"vol_{i:03d}.nii.gz" for i in range(5)]
    assert sorted(r.label for r in rows) == ["lesion"] * 2 + ["normal"] * 3
    assert len({r.group for r in rows}) == 5
    meta = json.loads((out / "lesions.json").read_text())
    assert "tests and benchmarks only" in meta["purpose"]
    prep = prepare_source(ras_head_file, shape=(16, 24, 24))
    for i, row in enumerate(rows):
        scan = load(row.path)[0]
        assert scan.data.shape == (16, 24, 24)
        assert scan.spacing == pytest.approx(s["spacing_mm"], abs=1e-4)
        rec = meta["volumes"][row.path.name]
        assert rec["label"] == row.label
        # the reader's array is the generator's array: same orientation
        vol, mask, _ = make_volume(prep, lesion=row.label == "lesion", seed=[3, i])
        np.testing.assert_allclose(scan.data, vol, atol=1e-4)
        if row.label == "normal":
            assert rec["slice_range"] is None
            continue
        read_mask = load(out / rec["mask"])[0].data > 0.5
        np.testing.assert_array_equal(read_mask, mask)
        assert rec["slice_range"] == slice_range(read_mask, 0)
        assert read_mask[tuple(rec["centre_voxel"])]
        lps = scan.affine @ np.append(rec["centre_voxel"], 1.0)
        assert rec["centre_lps_mm"] == pytest.approx(lps[:3].tolist(), abs=1e-3)


def test_cohort_repeats_with_its_seed_and_keeps_existing_files(head, tmp_path):
    kw = dict(shape=(12, 16, 16), seed=1, lesion_fraction=0.5)
    make_cohort((head, SPACING), tmp_path / "a", 2, **kw)
    make_cohort((head, SPACING), tmp_path / "b", 2, **kw)
    for name in ("vol_000.nii.gz", "vol_001.nii.gz", "labels.csv", "lesions.json"):
        assert (tmp_path / "a" / name).read_bytes() == (
            tmp_path / "b" / name
        ).read_bytes()
    with pytest.raises(OverwriteError, match="vol_000.nii.gz"):
        make_cohort((head, SPACING), tmp_path / "a", 2, **kw)
    make_cohort((head, SPACING), tmp_path / "a", 2, overwrite=True, **kw)
    with pytest.raises(ValueError, match="unknown lesion options"):
        make_cohort((head, SPACING), tmp_path / "c", 2, lesion={"size": 3})
    with pytest.raises(ValueError, match="lesion_fraction"):
        make_cohort((head, SPACING), tmp_path / "c", 2, lesion_fraction=1.5)
    assert not (tmp_path / "c").exists()


def test_bad_sources_name_the_file(tmp_path):
    missing = tmp_path / "nothing.nii.gz"
    with pytest.raises(ScanReadError, match="nothing.nii.gz"):
        load_source(missing)
    flat = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), flat)
    with pytest.raises(SourceError, match=r"slice\.nii\.gz.*2D image"):
        load_source(flat)
    thin = tmp_path / "thin.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 2), np.float32), np.eye(4)), thin)
    with pytest.raises(SourceError, match=r"thin\.nii\.gz.*fewer than 3"):
        load_source(thin)
    png = tmp_path / "photo.png"
    png.write_bytes(b"not really")
    with pytest.raises(SourceError, match="not a NIfTI"):
        load_source(png)
    with pytest.raises(SourceError, match="constant"):
        load_source((np.zeros((5, 5, 5)), (1.0, 1.0, 1.0)))


# ------------------------------------------------------------------ script


def _script():
    spec = importlib.util.spec_from_file_location("make_lesion_volumes", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_lesion_volumes", mod)
    spec.loader.exec_module(sys.modules["make_lesion_volumes"])
    return sys.modules["make_lesion_volumes"]


def test_script_writes_a_cohort_and_refuses_bad_input(ras_head_file, tmp_path, capsys):
    main = _script().main
    out = tmp_path / "out"
    rc = main([str(ras_head_file), "--out", str(out), "--n", "3", "--shape",
               "12", "16", "16", "--seed", "2"])  # fmt: skip
    printed = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(printed) == 1
    assert printed[0].startswith("wrote 3 volumes (2 lesion, 1 normal)")
    assert len(read_label_csv(out / "labels.csv")) == 3

    flat = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), flat)
    thin = tmp_path / "thin.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 2), np.float32), np.eye(4)), thin)
    for bad, why in [
        (tmp_path / "missing.nii.gz", "no such file"),
        (flat, "2D image"),
        (thin, "fewer than 3"),
        (tmp_path / "missing_folder", "no such file"),
    ]:
        rc = main([str(bad), "--out", str(tmp_path / "x"), "--n", "2"])
        err = capsys.readouterr().err
        assert rc == 2 and str(bad) in err and why in err, err
    # existing files are kept unless --overwrite
    rc = main([str(ras_head_file), "--out", str(out), "--n", "3", "--shape",
               "12", "16", "16"])  # fmt: skip
    assert rc == 2 and "already exists" in capsys.readouterr().err


def test_script_takes_a_dicom_series_the_reader_loads(tmp_path, capsys):
    from napari_medcnn.io.synth import write_series

    write_series(synthetic_head(), tmp_path / "dicom", spacing=SPACING)
    out = tmp_path / "out"
    rc = _script().main([str(tmp_path / "dicom"), "--out", str(out), "--n", "2",
                         "--shape", "12", "16", "16"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((out / "lesions.json").read_text())
    assert meta["n_lesion"] == 1 and meta["shape"] == [12, 16, 16]
    assert str(tmp_path) not in json.dumps(meta)  # no folder paths in the record


# ----------------------------------------------------------------- Colin27


@needs_colin27
def test_colin27_cohort(tmp_path):
    s = make_cohort("colin27", tmp_path, 2, shape=(24, 32, 32), write_masks=True)
    assert s["shape"] == [24, 32, 32] and s["n_lesion"] == 1
    meta = json.loads((tmp_path / "lesions.json").read_text())
    (name,) = [k for k, v in meta["volumes"].items() if v["label"] == "lesion"]
    rec = meta["volumes"][name]
    scan = load(tmp_path / name)[0]
    mask = load(tmp_path / rec["mask"])[0].data > 0.5
    assert rec["slice_range"] == slice_range(mask, 0)
    assert not (mask & ~foreground_mask(scan.data)).any()
    d = np.asarray(rec["axes_mm"])
    assert ((d >= 4.0) & (d <= 15.0)).all()


@needs_colin27
def test_colin27_full_resolution_lesion_is_in_the_brain():
    src = load_source("colin27")
    assert src.data.shape == (181, 217, 181) and src.spacing_mm == (1.0, 1.0, 1.0)
    vol = src.data[60:140]  # a slab through the brain, cheaper
    out, mask, info = insert_lesion(vol, src.spacing_mm, np.random.default_rng(0))
    assert not (mask & ~foreground_mask(vol)).any()
    assert principal_diameters(mask, src.spacing_mm) == pytest.approx(
        sorted(info["axes_mm"], reverse=True), abs=1.5
    )
    assert out[tuple(info["centre_voxel"])] > info["local_intensity"]
