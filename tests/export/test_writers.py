"""npe2 writers: a Labels layer as DICOM SEG or NIfTI, a saliency overlay as
a DICOM Parametric Map or NIfTI, through ``npe2.write`` as napari's "Save
layer" calls them (no viewer: the layer's own metadata names its scan)."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import npe2
import numpy as np
import pytest

from napari_medcnn.io import load
from napari_medcnn.saliency.export import saliency_record

PLUGIN = "napari-medcnn"


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    from napari_medcnn.io.synth import write_series

    root = tmp_path_factory.mktemp("writers")
    vol = np.random.default_rng(1).integers(0, 500, (4, 16, 12)).astype(np.float64)
    write_series(vol, root / "mr", spacing=(3.0, 1.0, 1.0), modality="MR")
    npe2.PluginManager.instance().discover()
    return load(root / "mr")[0]


def _write(path, data, meta, kind):
    return npe2.write(str(path), [(data, meta, kind)], plugin_name=PLUGIN)


def test_labels_as_seg_and_nifti(scan, tmp_path):
    labels = np.zeros(scan.data.shape, np.uint8)
    labels[1:3, 4:9, 3:7] = 1
    meta = {"name": "Labels", "metadata": scan.layer_metadata()}
    (out,) = _write(tmp_path / "labels.dcm", labels, meta, "labels")
    seg = hd.seg.segread(out)
    assert seg.SegmentationType == "BINARY" and seg.NumberOfFrames == 2
    (nii,) = _write(tmp_path / "labels.nii.gz", labels, meta, "labels")
    back = load(nii)[0]
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)
    assert np.asarray(nib.load(nii).dataobj).dtype == np.uint8


def test_overlay_as_parametric_map_and_refusals(scan, tmp_path):
    from types import SimpleNamespace

    sal = np.linspace(0, 1, scan.data.size, dtype=np.float32).reshape(scan.data.shape)
    result = SimpleNamespace(
        map=sal, method="gradcam", target=1, target_name="tumor", model_id="abc",
        slice_importance=None, slice_attention=None, metrics={}, params={},
        scope="slices", slice_index=None, warnings=[], elapsed_s=0.0,
    )  # fmt: skip
    record = saliency_record(result, model_name="tiny")
    meta = {
        "name": "gradcam",
        "metadata": {"saliency": record, **scan.layer_metadata()},
    }
    (out,) = _write(tmp_path / "map.dcm", sal, meta, "image")
    pm = hd.pm.ParametricMap.from_file(out)
    assert pm.NumberOfFrames == 4 and pm.ContentLabel == "MEDCNN_CAM"
    (nii,) = _write(tmp_path / "map.nii.gz", sal, meta, "image")
    np.testing.assert_allclose(load(nii)[0].data, sal, atol=1e-6)
    from napari_medcnn.widgets.writers import write_labels, write_overlay

    alone = {"name": "gradcam", "metadata": {"saliency": record, "source_layer": "x"}}
    with pytest.raises(ValueError, match="cannot tell which scan"):
        write_overlay(str(tmp_path / "x.dcm"), sal, alone)
    with pytest.raises(ValueError, match="not a saliency overlay"):
        write_overlay(str(tmp_path / "y.dcm"), sal, {"name": "MR", "metadata": {}})
    nifti_meta = {"name": "L", "metadata": load(nii)[0].layer_metadata()}
    with pytest.raises(ValueError, match="NIfTI file has no DICOM source"):
        write_labels(str(tmp_path / "z.dcm"), (sal > 0.5).astype(np.uint8), nifti_meta)
    assert not any((tmp_path / n).exists() for n in ("x.dcm", "y.dcm", "z.dcm"))
