"""Saliency export: NIfTI aligned with the scan (read back through the
plugin's reader and checked voxel-to-world with nibabel), PNG composited
on the windowed scan, ``.npy``, JSON sidecar without PHI, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medcnn._sample_data import MR_SLICE, MR_VOLUME
from napari_medcnn.io import load
from napari_medcnn.saliency import SaliencyResult
from napari_medcnn.saliency.export import (
    colormap_rgba,
    map_format,
    nifti_affine,
    overlay_rgb,
    sidecar_path,
    threshold_value,
    write_map,
    write_nifti,
)


def _result(shape, **kw):
    m = np.random.default_rng(0).random(shape).astype(np.float32)
    base = dict(map=m, method="gradcam", target=1, target_name="tumor",
                model_id="abc123", metrics={"deletion_auc": 0.4,
                "deletion_auc_random": 0.7}, params={"layer": "layer4"})  # fmt: skip
    base.update(kw)
    return SaliencyResult(**base)


def _oblique_nifti(path):
    import nibabel as nib

    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([-0.9, 1.2, 2.5])  # x runs R -> L: not RAS
    a[:3, 3] = [10, -20, 30]
    data = np.random.default_rng(1).random((7, 9, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, a), str(path))
    return path


@pytest.mark.parametrize("source", ["slice", "volume", "oblique"])
def test_nifti_overlays_the_scan_it_came_from(tmp_path, source):
    import nibabel as nib

    path = {"slice": MR_SLICE, "volume": MR_VOLUME}.get(source)
    path = path or _oblique_nifti(tmp_path / "obl.nii.gz")
    scan = load(path)[0]
    result = _result(scan.data.shape)
    out, side = write_map(
        tmp_path / "map.nii.gz", result, affine=scan.affine, spacing=scan.spacing
    )
    back = load(out)[0]  # the reader gives the scan's geometry back
    assert back.data.shape == scan.data.shape
    np.testing.assert_allclose(back.data, result.map)
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)
    np.testing.assert_allclose(back.origin, scan.origin, atol=1e-5)
    # and any NIfTI viewer: voxel (x, y, z) of the file sits where the
    # scan's voxel (z, y, x) does, in RAS mm
    img = nib.load(str(out))
    z, y, x = (np.array(scan.data.shape[-3:]) - 1) if scan.data.ndim == 3 else (
        0, *(np.array(scan.data.shape) - 1))  # fmt: skip
    lps = scan.affine @ [z, y, x, 1]
    ras = img.affine @ [x, y, z, 1]
    np.testing.assert_allclose(ras[:3], lps[:3] * [-1, -1, 1], atol=1e-4)
    rec = json.loads(side.read_text())
    assert rec["method"] == "gradcam" and rec["model_id"] == "abc123"
    np.testing.assert_allclose(rec["affine_lps"], scan.affine)


def test_nifti_without_affine_uses_spacing(tmp_path):
    m = np.zeros((4, 5, 6), np.float32)
    m[1, 2, 3] = 1
    back = load(write_nifti(tmp_path / "m.nii", m, spacing=(3.0, 0.8, 0.7)))[0]
    np.testing.assert_allclose(back.data, m)
    np.testing.assert_allclose(back.spacing, (3.0, 0.8, 0.7), rtol=1e-6)
    np.testing.assert_allclose(nifti_affine(np.eye(4))[:3, 3], 0)


def test_png_composites_the_map_on_the_windowed_scan(tmp_path):
    from PIL import Image

    img = np.linspace(0, 1000, 40 * 50, dtype=np.float32).reshape(40, 50)
    m = np.zeros((40, 50), np.float32)
    m[10:20, 10:30] = 1.0
    rgb = overlay_rgb(img, m, window=(500, 1000), opacity=1.0)
    assert rgb.shape == (40, 50, 3) and rgb.dtype == np.uint8
    assert np.all(rgb[0, 0] == 0)  # windowed black, no overlay
    assert np.all(rgb[15, 20] == np.round(colormap_rgba()[-1, :3] * 255))
    assert rgb[30, 40, 0] == rgb[30, 40, 1] == rgb[30, 40, 2]  # gray scan
    # a threshold hides the weak part of a map
    ramp = np.tile(np.linspace(0, 1, 50, dtype=np.float32), (40, 1))
    cut = threshold_value(ramp, 50)
    assert 0.45 < cut < 0.55
    hidden = overlay_rgb(np.zeros((40, 50)), ramp, threshold=cut, opacity=1)
    assert not hidden[:, :20].any() and hidden[:, 40:].any()
    # a volume needs a slice; RGB scans are composited as they are
    vol = _result((3, 40, 50), slice_index=2)
    out, _ = write_map(tmp_path / "v.png", vol, image=np.stack([img] * 3))
    assert Image.open(out).size == (50, 40)
    out, side = write_map(
        tmp_path / "rgb.png", _result((40, 50)),
        image=np.zeros((40, 50, 3), np.uint8), rgb=True,
        overlay={"threshold_percentile": 90, "colormap": "turbo"},
    )  # fmt: skip
    rec = json.loads(side.read_text())
    assert rec["overlay"]["threshold_percentile"] == 90
    with pytest.raises(ValueError, match="needs the scan"):
        write_map(tmp_path / "x.png", _result((40, 50)))


def test_npy_sidecar_no_phi_and_atomic(tmp_path):
    result = _result(
        (6, 8),
        params={"layer": "features.10", "patient_name": "Doe^Jane"},
        metrics={"deletion_auc": 0.2, "source_paths": ["/data/Doe/x.dcm"]},
    )
    out, side = write_map(tmp_path / "m.npy", result, source_name="MR T1")
    np.testing.assert_array_equal(np.load(out), result.map)
    text = side.read_text()
    rec = json.loads(text)
    assert rec["source"] == "MR T1" and rec["params"]["layer"] == "features.10"
    assert rec["target_name"] == "tumor" and rec["metrics"]["deletion_auc"] == 0.2
    assert "Doe" not in text and "/data/" not in text
    # an existing map or sidecar is refused unless asked (nothing written)
    side.write_text("a user's own m.json")
    (tmp_path / "m.npy").unlink()
    with pytest.raises(FileExistsError, match=r"m\.json already exists"):
        write_map(tmp_path / "m.npy", result)
    assert not (tmp_path / "m.npy").exists()
    assert side.read_text() == "a user's own m.json"
    write_map(tmp_path / "m.npy", result, overwrite=True)
    write_map(tmp_path / "m.npy", result, overwrite=True)  # no temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.npy"]
    assert sidecar_path("a/b.nii.gz").name == "b.json"
    assert map_format("x.NII.GZ") == "nifti"
    with pytest.raises(ValueError, match="unknown map format"):
        map_format("x.tif")
