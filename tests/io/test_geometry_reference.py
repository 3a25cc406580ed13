"""Reader geometry against independent references: dcm2niix and SimpleITK.

A real head (the Colin27 T1 template from Debian's mricron-data, cropped and
downsampled) is written as DICOM series in four orientations (axial, coronal,
sagittal, oblique) and four variants (plain, shuffled file names, non-unit
rescale, one missing slice), with non-isotropic spacing and a non-zero
origin.  Each series is then read by ``napari_medcnn.io.load`` and compared

* with the ground truth the writer used (exact geometry and values),
* with dcm2niix's NIfTI (``/usr/bin/dcm2niix``),
* with SimpleITK's ``ImageSeriesReader``,
* and dcm2niix's NIfTI is read back with ``io.nifti.load_nifti`` and must lie
  on our DICOM scan (identical array and affine for the axial series),

in *world* space: the two index->LPS affines must be related by a signed axis
permutation (plus an integer shift), our array is permuted/flipped onto the
reference's index order and compared voxel by voxel, and the direction
cosines (<= 1e-4), spacings (<= 1e-4 mm) and origins (<= 1e-3 mm) must agree.

Expected behaviour for a missing slice: ``missing_slices`` in the quality
report, slice spacing from the positions (median), and the gap kept as a
blank slice (a constant, listed in ``metadata['blank_slices']``) so that
every real slice stays at its true position -- as dcm2niix's equal-spacing
``_Eq`` output does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from napari_medcnn.io.synth import write_series

CH2 = Path("/usr/share/mricron/templates/ch2.nii.gz")
DCM2NIIX = shutil.which("dcm2niix") or "/usr/bin/dcm2niix"

SPACING = (2.5, 0.9, 1.1)  # slice, row (y), column (x) in mm
ORIGIN = (-40.5, -60.25, 30.0)  # LPS mm of voxel (0, 0, 0)
SHAPE = (40, 72, 64)  # (z, y, x): all different, to catch swapped axes
MISSING = 20  # slice index left out in the "missing" variant
SLOPE, INTERCEPT = 0.5, -100.0
DIR_TOL, SPACING_TOL, ORIGIN_TOL = 1e-4, 1e-4, 1e-3
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rot(axis: int, deg: float) -> np.ndarray:
    t = np.radians(deg)
    c, s = np.cos(t), np.sin(t)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


_OBLIQUE = _rot(0, 20.0) @ _rot(1, 10.0)
ORIENTATIONS = {  # (row_dir, col_dir) = ImageOrientationPatient
    "axial": ((1, 0, 0), (0, 1, 0)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "oblique": (tuple(_OBLIQUE[:, 0]), tuple(_OBLIQUE[:, 1])),
}
VARIANTS = ("plain", "shuffled", "rescaled", "missing")
_FAST = {("axial", v) for v in VARIANTS} | {(o, "plain") for o in ORIENTATIONS}
CASES = [
    pytest.param(
        (o, v), marks=() if (o, v) in _FAST else pytest.mark.slow, id=f"{o}-{v}"
    )
    for o in ORIENTATIONS
    for v in VARIANTS
]

pytestmark = [
    pytest.mark.skipif(not CH2.exists(), reason=f"{CH2} absent (mricron-data)"),
]


# ------------------------------------------------------------- the series ---


@pytest.fixture(scope="module")
def source_volume() -> np.ndarray:
    """Colin27 T1 cropped to SHAPE at 2 mm, as integer 'HU-like' values."""
    import nibabel as nib

    raw = np.asarray(nib.load(str(CH2)).dataobj)[::2, ::2, ::2]  # (x, y, z) RAS
    vol = np.transpose(raw, (2, 1, 0))[::-1, ::-1, :]  # (z, y, x): S->I, P->A
    z0 = (vol.shape[0] - SHAPE[0]) // 2
    y0 = (vol.shape[1] - SHAPE[1]) // 2
    x0 = (vol.shape[2] - SHAPE[2]) // 2
    crop = vol[z0 : z0 + SHAPE[0], y0 : y0 + SHAPE[1], x0 : x0 + SHAPE[2]]
    # -100 .. 916: negative values, and exact under slope 0.5 / intercept -100
    return crop.astype(np.float64) * 4.0 - 100.0


def truth_affine(orientation: str) -> np.ndarray:
    """Index (z, y, x, 1) -> LPS mm map of what write_series wrote."""
    row, col = (np.asarray(v, float) for v in ORIENTATIONS[orientation])
    normal = np.cross(row, col)
    a = np.eye(4)
    a[:3, 0] = normal * SPACING[0]
    a[:3, 1] = col * SPACING[1]
    a[:3, 2] = row * SPACING[2]
    a[:3, 3] = ORIGIN
    return a


class Case:
    """One written series and its readings (computed lazily, cached)."""

    def __init__(self, orientation: str, variant: str, vol: np.ndarray, root: Path):
        self.orientation, self.variant = orientation, variant
        self.vol = vol
        self.root = root
        self.dicom_dir = root / "dicom"
        kwargs: dict = {}
        if variant == "shuffled":
            kwargs["file_order"] = list(
                np.random.default_rng(7).permutation(vol.shape[0])
            )
        if variant == "rescaled":
            kwargs.update(slope=SLOPE, intercept=INTERCEPT)
        if variant == "missing":
            kwargs["skip"] = [MISSING]
        write_series(
            vol,
            self.dicom_dir,
            spacing=SPACING,
            origin=ORIGIN,
            row_dir=ORIENTATIONS[orientation][0],
            col_dir=ORIENTATIONS[orientation][1],
            modality="CT",
            series_description=f"{orientation} {variant}",
            seed=f"{orientation}-{variant}",
            **kwargs,
        )
        self.present = [
            k for k in range(vol.shape[0]) if variant != "missing" or k != MISSING
        ]
        self._ours = None

    @property
    def ours(self):
        if self._ours is None:
            from napari_medcnn.io import load

            scans = load(self.dicom_dir)
            assert len(scans) == 1, [s.name for s in scans]
            self._ours = scans[0]
        return self._ours


_CACHE: dict[tuple[str, str], Case] = {}


@pytest.fixture
def case(request, source_volume, tmp_path_factory) -> Case:
    orientation, variant = request.param
    key = (orientation, variant)
    if key not in _CACHE:
        root = tmp_path_factory.mktemp(f"{orientation}-{variant}")
        _CACHE[key] = Case(orientation, variant, source_volume, root)
    return _CACHE[key]


def _cases_indirect():
    return pytest.mark.parametrize("case", CASES, indirect=True)


# -------------------------------------------------------- world compare ---


def _truth_slice_index(affine: np.ndarray, orientation: str, k: int) -> float:
    """Position of our slice ``k`` expressed as a (fractional) truth index."""
    inv = np.linalg.inv(truth_affine(orientation))
    return float((inv @ affine @ [k, 0, 0, 1])[0])


def world_compare(
    ours: np.ndarray,
    ours_aff: np.ndarray,
    ref: np.ndarray,
    ref_aff: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    ref_valid: np.ndarray | None = None,
    atol: float = 1e-3,
    same_extent: bool = True,
    shift_tol: float = 1e-3,
) -> dict:
    """Compare two 3D arrays with index->LPS affines in world space.

    Asserts that ``inv(ref_aff) @ ours_aff`` is a signed permutation plus an
    integer shift, then compares direction cosines, spacings, origins and
    the voxels of the overlap (restricted to ``valid`` our-slices and
    ``ref_valid`` ref-voxels when given).  Returns the permutation details.
    """
    m = np.linalg.inv(ref_aff) @ ours_aff  # our index -> ref index
    r, shift = m[:3, :3], m[:3, 3]
    p = np.rint(r)
    assert np.abs(r - p).max() < 1e-3, f"not a signed permutation:\n{np.round(r, 5)}"
    assert (np.abs(p).sum(axis=0) == 1).all() and (np.abs(p).sum(axis=1) == 1).all()
    assert np.abs(shift - np.rint(shift)).max() < shift_tol, f"shift {shift}"
    shift = np.rint(shift).astype(int)

    # directions, spacings, origin
    def unit(a):
        n = np.linalg.norm(a[:3, :3], axis=0)
        return a[:3, :3] / n, n

    ud, us = unit(ours_aff)
    rd, rs = unit(ref_aff)
    axes, signs = [], []
    for j in range(3):  # ref axis j <- our axis i
        i = int(np.flatnonzero(p[j])[0])
        axes.append(i)
        signs.append(int(p[j, i]))
        np.testing.assert_allclose(ud[:, i], signs[-1] * rd[:, j], atol=DIR_TOL)
        np.testing.assert_allclose(us[i], rs[j], atol=SPACING_TOL)
    ref_pos = ref_aff @ np.append(shift, 1.0)
    np.testing.assert_allclose(ours_aff[:3, 3], ref_pos[:3], atol=ORIGIN_TOL)

    # our array onto the ref's index order
    aligned = np.transpose(ours, axes)
    mask = None
    if valid is not None:
        mask = np.broadcast_to(valid.reshape(-1, 1, 1), ours.shape)
        mask = np.transpose(mask, axes)
    offset = []
    for j, (i, s) in enumerate(zip(axes, signs)):
        if s < 0:
            aligned = np.flip(aligned, axis=j)
            if mask is not None:
                mask = np.flip(mask, axis=j)
            offset.append(shift[j] - (ours.shape[i] - 1))
        else:
            offset.append(shift[j])
    if same_extent:
        assert aligned.shape == ref.shape, (aligned.shape, ref.shape)
        assert offset == [0, 0, 0], offset
    # overlap: aligned index a <-> ref index a + offset
    ours_sl, ref_sl = [], []
    for j in range(3):
        lo = max(0, -offset[j])
        hi = min(aligned.shape[j], ref.shape[j] - offset[j])
        assert hi > lo, "no overlap"
        ours_sl.append(slice(lo, hi))
        ref_sl.append(slice(lo + offset[j], hi + offset[j]))
    a = aligned[tuple(ours_sl)].astype(np.float64)
    b = np.asarray(ref, dtype=np.float64)[tuple(ref_sl)]
    keep = np.ones(a.shape, bool)
    if mask is not None:
        keep &= mask[tuple(ours_sl)]
    if ref_valid is not None:
        keep &= ref_valid[tuple(ref_sl)]
    assert keep.sum() > 0.5 * keep.size
    np.testing.assert_allclose(a[keep], b[keep], rtol=0, atol=atol)
    return {"axes": axes, "signs": signs, "offset": offset}


def _our_valid_slices(case: Case) -> np.ndarray | None:
    """Our slices that hold real data: all but a blank slice filling the gap."""
    if case.variant != "missing":
        return None
    scan = case.ours
    n = len(scan.data)
    if n == len(case.present):  # the reader did not fill the gap
        return np.ones(n, bool)
    ks = [_truth_slice_index(scan.affine, case.orientation, k) for k in range(n)]
    return np.array([abs(k - MISSING) > 0.5 for k in ks])


# ------------------------------------------------------------- ground truth ---


@_cases_indirect()
def test_against_ground_truth(case: Case):
    scan = case.ours
    assert scan.ndim_spatial == 3 and not scan.rgb
    truth = truth_affine(case.orientation)
    np.testing.assert_allclose(scan.spacing, SPACING, atol=SPACING_TOL)
    # directions and voxel-0 position: the same (z, y, x) layout as written
    np.testing.assert_allclose(scan.affine[:3, :3], truth[:3, :3], atol=DIR_TOL)
    np.testing.assert_allclose(scan.affine[:3, 3], ORIGIN, atol=ORIGIN_TOL)
    # napari translate = voxel 0 projected on each axis direction
    dirs = (truth[:3, :3] / np.linalg.norm(truth[:3, :3], axis=0)).T
    np.testing.assert_allclose(scan.origin, dirs @ np.asarray(ORIGIN), atol=ORIGIN_TOL)
    codes = scan.quality.codes()
    if case.variant == "missing":
        assert "missing_slices" in codes, scan.quality.to_dict()
        # every slice sits at its true position; the gap holds no real data
        assert scan.data.shape == case.vol.shape, "gap not kept as a slice"
        # io.series fills the gap with the first slice's minimum (a value
        # already in the data, so int16 stays int16) and lists it
        assert scan.metadata.get("blank_slices") == [MISSING], scan.metadata
        gap = np.asarray(scan.data[MISSING], dtype=np.float64)
        assert np.ptp(gap) == 0, "gap slice is not blank"
        assert gap.flat[0] == float(np.min(scan.data[0]))
        others = [k for k in range(len(scan.data)) if k != MISSING]
        np.testing.assert_allclose(scan.data[others], case.vol[others], atol=1e-3)
    else:
        assert not codes & {"missing_slices", "uneven_spacing", "split_series"}, codes
        np.testing.assert_allclose(scan.data, case.vol, rtol=0, atol=1e-3)


# ---------------------------------------------------------------- dcm2niix ---


def _dcm2niix(case: Case) -> list[Path]:
    if not Path(DCM2NIIX).exists():
        pytest.skip("dcm2niix not installed (apt install dcm2niix)")
    out = case.root / "dcm2niix"
    if not out.exists():
        out.mkdir()
        cmd = [DCM2NIIX, "-z", "n", "-b", "n", "-l", "n", "-x", "n"]
        cmd += ["-f", "%s", "-o", str(out), str(case.dicom_dir)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        (out / "log.txt").write_text(run.stdout + run.stderr)
        assert run.returncode == 0, run.stdout + run.stderr
    return sorted(out.glob("*.nii"))


@_cases_indirect()
def test_against_dcm2niix(case: Case):
    import nibabel as nib

    niis = _dcm2niix(case)
    scan = case.ours
    if case.variant == "missing":
        # dcm2niix (v1.0.20220720) writes the raw stack, whose slice spacing
        # comes from the first two slices so every slice past the gap is
        # misplaced, and an "_Eq" copy on an equal grid whose gap slice is
        # interpolated from its neighbours (and which keeps only N-1 slices,
        # dropping the last).  Compare with the _Eq copy, off the gap.
        eq = [p for p in niis if "_Eq" in p.name]
        assert eq, f"no _Eq output: {[p.name for p in niis]}"
        nii = eq[0]
    else:
        assert len(niis) == 1, [p.name for p in niis]
        nii = niis[0]
    img = nib.load(str(nii))
    ref = img.get_fdata(dtype=np.float64)
    ref_aff = LPS_FROM_RAS @ img.affine
    ref_valid = None
    if case.variant == "missing":
        # voxels of the reference that lie on the gap are interpolated
        to_truth = np.linalg.inv(truth_affine(case.orientation)) @ ref_aff
        idx = np.indices(ref.shape).reshape(3, -1)
        t = to_truth[0, :3] @ idx + to_truth[0, 3]
        ref_valid = (np.abs(t - MISSING) >= 0.5).reshape(ref.shape)
    world_compare(
        scan.data,
        scan.affine,
        ref,
        ref_aff,
        valid=_our_valid_slices(case),
        ref_valid=ref_valid,
        same_extent=case.variant != "missing",
        shift_tol=1e-2,  # dcm2niix stores its affine in float32
    )


# --------------------------------------------------------------- SimpleITK ---


def _sitk_read(case: Case) -> tuple[np.ndarray, np.ndarray, tuple]:
    """SimpleITK's array (k, j, i) and its index (k, j, i, 1) -> LPS affine."""
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(case.dicom_dir)))
    # ITK prints a warning for the missing-slice series; it is expected
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        img = reader.Execute()
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
    arr = sitk.GetArrayFromImage(img)
    d = np.asarray(img.GetDirection(), float).reshape(3, 3)
    sp = np.asarray(img.GetSpacing(), float)
    aff = np.eye(4)
    aff[:3, :3] = (d * sp)[:, ::-1]  # numpy axis 0 is ITK index k
    aff[:3, 3] = img.GetOrigin()
    return arr, aff, tuple(sp[::-1])


@_cases_indirect()
def test_against_simpleitk(case: Case):
    ref, ref_aff, ref_spacing = _sitk_read(case)
    scan = case.ours
    if case.variant == "missing":
        # ITK spreads the N-1 present slices evenly between the first and
        # the last position ((last - first) / (N - 2)), so its slices past
        # the first are misplaced.  Check what is right in it: in-plane
        # geometry, voxel-0 position, and the present slices in order.
        assert ref.shape[0] == len(case.present)
        span = SPACING[0] * (SHAPE[0] - 1)
        assert ref_spacing[0] == pytest.approx(span / (len(case.present) - 1))
        np.testing.assert_allclose(ref_aff[:3, 1:], scan.affine[:3, 1:], atol=1e-4)
        valid = _our_valid_slices(case)
        np.testing.assert_allclose(scan.data[valid], ref, rtol=0, atol=1e-3)
        return
    world_compare(scan.data, scan.affine, ref, ref_aff)


# ------------------------------------------- our NIfTI reader, same scans ---


@_cases_indirect()
def test_nifti_reader_matches_dicom_reader(case: Case):
    """dcm2niix's NIfTI read by ``load_nifti`` lies on our DICOM scan; an
    axial series gives the very same (z, y, x) array and affine."""
    from napari_medcnn.io.nifti import load_nifti

    if case.variant == "missing":
        pytest.skip("dcm2niix's NIfTI of a gapped series is not a true volume")
    (nii,) = _dcm2niix(case)
    nifti = load_nifti(nii)
    scan = case.ours
    world_compare(nifti.data, nifti.affine, scan.data, scan.affine, shift_tol=1e-2)
    if case.orientation == "axial":
        np.testing.assert_allclose(nifti.data, scan.data, rtol=0, atol=1e-3)
        np.testing.assert_allclose(nifti.affine, scan.affine, atol=1e-4)
        np.testing.assert_allclose(nifti.spacing, scan.spacing, atol=1e-5)
        np.testing.assert_allclose(nifti.origin, scan.origin, atol=1e-3)
