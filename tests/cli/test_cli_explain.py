"""``napari-medcnn explain``: the map lies on the input as the reader loads
it, and the trust metrics come out as JSON.  Tiny untrained checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import make_checkpoint

from napari_medcnn._sample_data import MR_SLICE
from napari_medcnn.cli import main
from napari_medcnn.io import load


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


def _explain(capsys, *args):
    rc = main(["explain", *map(str, args)])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


def test_nifti_map_is_aligned_with_the_dicom_input(tmp_path, capsys, tiny):
    out = tmp_path / "mr_gradcam.nii.gz"
    rc, summary, _ = _explain(capsys, MR_SLICE, "--model", tiny, "--out", out)
    assert rc == 0
    for key in ("deletion_auc", "deletion_auc_random", "randomization_correlation"):
        assert isinstance(summary[key], float)
    assert summary["method"] == "gradcam" and summary["out"] == str(out)
    assert min(summary["map_resolution"]) >= 16  # the default resolves 16x16
    scan, back = load(MR_SLICE)[0], load(out)[0]
    assert back.data.shape == scan.data.shape == tuple(summary["shape"])
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)
    np.testing.assert_allclose(back.spacing, scan.spacing, atol=1e-6)
    side = json.loads((tmp_path / "mr_gradcam.json").read_text())
    assert side["metrics"]["deletion_auc"] == pytest.approx(
        summary["deletion_auc"], abs=1e-4
    )
    assert side["model_id"] == summary["model_id"] and side["source"] == scan.name


def test_volume_input_methods_and_formats(tmp_path, capsys, tiny):
    import nibabel as nib

    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    affine[:3, 3] = (-40, 12, 7)
    vol = np.random.default_rng(0).random((24, 20, 5)).astype(np.float32)
    src = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(src))
    scan = load(src)[0]
    npy = tmp_path / "ig.npy"
    rc, summary, _ = _explain(
        capsys, src, "--model", tiny, "--method", "ig", "--steps", 4,
        "--no-metrics", "--target", "tumor", "--out", npy,
    )  # fmt: skip
    assert rc == 0 and summary["method"] == "integrated_gradients"
    assert summary["target_name"] == "tumor" and summary["deletion_auc"] is None
    assert np.load(npy).shape == scan.data.shape  # every slice, reader order
    nii = tmp_path / "slice2.nii"
    rc, summary, _ = _explain(
        capsys, src, "--model", tiny, "--method", "gradcampp", "--slice", 2,
        "--target", "1", "--no-metrics", "--out", nii,
    )  # fmt: skip
    back = load(nii)[0]
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)
    assert not np.delete(back.data, 2, 0).any() and summary["target"] == 1
    png = tmp_path / "occ.png"
    rc, summary, _ = _explain(
        capsys, MR_SLICE, "--model", tiny, "--method", "occlusion",
        "--window-mm", 40, "--stride-mm", 40, "--no-metrics", "--out", png,
    )  # fmt: skip
    assert rc == 0 and png.stat().st_size > 1000


def test_bad_input_exits_with_a_reason(tmp_path, capsys, tiny):
    rc, _, err = _explain(
        capsys, MR_SLICE, "--model", tiny, "--target", "oedema", "--out",
        tmp_path / "m.npy",
    )  # fmt: skip
    assert rc == 2 and "valid classes" in err and "tumor" in err
    rc, _, err = _explain(capsys, MR_SLICE, "--model", tiny, "--out", "m.tif")
    assert rc == 2 and "unknown map format" in err
    rc, _, err = _explain(capsys, tmp_path / "none.dcm", "--model", tiny,
                          "--out", tmp_path / "m.npy")  # fmt: skip
    assert rc == 2 and "no such file" in err  # nothing done
    assert not list(tmp_path.glob("m.*"))
