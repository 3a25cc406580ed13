"""Volume models end to end: the volume record, the prepared-volume cache,
3D augmentation, the trainer's volume options and ``train --arch``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from _helpers import noisy_head

from napari_medcnn.preprocessing.volume import (
    prepare_volume,
    to_scan_grid,
    volume_record,
)


def _head(shape=(30, 40, 36), seed=0) -> np.ndarray:
    """A noisy ellipsoid 'head' inside empty slices (3 above, 3 below)."""
    return noisy_head(shape, seed, empty=3)


def test_volume_record_crops_depth_and_resamples():
    vol = _head()
    rec = volume_record(12, (24, 24))
    x, geo = prepare_volume([vol], rec, (2.0, 1.0, 1.0), with_geometry=True)
    assert x.shape == (1, 12, 24, 24) and x.dtype == np.float32
    # the empty slices (0-2, 27-29) are outside the prepared range
    assert geo.positions[0] > 2 and geo.positions[-1] < 27
    assert x.min() >= 0 and x.max() <= 1  # percentiles per volume
    # every prepared slice shows head
    assert (x[0].reshape(12, -1).max(axis=1) > 0.5).all()


def test_volume_record_spacing_mode_pads_outside():
    vol = _head((10, 32, 32))
    rec = volume_record(8, (16, 16), spacing_mm=4.0, crop_depth=False)
    x, geo = prepare_volume([vol], rec, (2.0, 1.0, 1.0), with_geometry=True)
    # 8 slices every 2 source slices around the centre 4.5 -> -2.5 .. 11.5
    assert np.allclose(np.diff(geo.positions), 2.0)
    assert geo.positions[0] < 0 and geo.positions[-1] > 9
    assert x[0, 0].max() == x[0, 0].min()  # a padded slice


def test_slice_axis_and_back_to_scan_grid():
    vol = _head((20, 30, 40))
    vol[8:11, 12:16, 20:26] += 400  # a bright box
    for axis in ("axial", "coronal", "sagittal"):
        rec = volume_record(10, (20, 20), slice_axis=axis, crop_depth=False)
        x, geo = prepare_volume([vol], rec, (1.5, 1.0, 1.0), with_geometry=True)
        back = to_scan_grid(x[0], geo)
        assert back.shape == vol.shape
        peak = np.unravel_index(np.argmax(back), back.shape)
        assert 7 <= peak[0] <= 11 and 11 <= peak[1] <= 16 and 19 <= peak[2] <= 26


def test_to_scan_slices_maps_back_along_the_slice_axis():
    from napari_medcnn.preprocessing.volume import to_scan_slices

    vol = _head((30, 40, 36))
    rec = volume_record(12, (24, 24))
    _x, geo = prepare_volume([vol], rec, (2.0, 1.0, 1.0), with_geometry=True)
    values = np.arange(12, dtype=float)
    back = to_scan_slices(values, geo, outside=-1.0)
    assert back.shape == (30,)
    assert (back[:2] == -1).all() and (back[-2:] == -1).all()
    inside = back[back >= 0]
    assert (np.diff(inside) >= 0).all() and inside.max() == 11
    probs = to_scan_slices(np.stack([values, 11 - values], 1), geo)
    assert probs.shape == (30, 2) and probs[0, 0] == 0 and probs[-1, 0] == 11


def test_one_slice_volume_is_refused():
    with pytest.raises(ValueError, match="at least 2 slices"):
        prepare_volume([np.zeros((1, 8, 8), np.float32)], volume_record(4, (8, 8)))
    with pytest.raises(ValueError, match="3D volume"):
        prepare_volume([np.zeros((8, 8), np.float32)], volume_record(4, (8, 8)))


def test_volume_cache_and_lazy_stack(tmp_path):
    from napari_medcnn.training.data.volumes import VolumeCache, VolumeStack

    cache = VolumeCache(tmp_path / "cache")
    key = cache.key(["a", 1, 2], {"size": [2, 3, 3]})
    assert cache.get(key) is None
    x = cache.put(key, np.arange(18, dtype=np.float32).reshape(1, 2, 3, 3))
    assert isinstance(x, np.memmap)
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"
    assert cache.key(["a", 1, 3], {"size": [2, 3, 3]}) != key
    stack = VolumeStack([x, np.zeros((1, 2, 3, 3), np.float32)])
    assert stack.shape == (2, 1, 2, 3, 3) and stack.ndim == 5
    sub = stack[np.array([1, 0])]
    assert isinstance(sub, VolumeStack) and sub[1][0, 1, 2, 2] == 17
    assert stack[0:2].shape == (2, 1, 2, 3, 3)


def test_slice_dropout_keeps_shape_and_ends():
    import torch

    from napari_medcnn.training.data.augment import SliceDropout

    x = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1, 1).expand(1, 10, 2, 2)
    drop = SliceDropout(0.5, prob=1.0).set_random_state(3)
    out = drop(x)
    assert out.shape == x.shape
    assert out[0, 0, 0, 0] == 0 and out[0, -1, 0, 0] == 9
    assert not torch.equal(out, x)  # some slices were dropped and re-spaced
    assert (torch.diff(out[0, :, 0, 0]) >= 0).all()  # order kept


def test_fit_with_lazy_volumes_and_accumulation():
    from napari_medcnn.models import build_model
    from napari_medcnn.training.data.volumes import VolumeStack
    from napari_medcnn.training.trainer import TrainConfig, fit

    rng = np.random.default_rng(0)
    vols, ys = [], []
    for i in range(12):
        v = rng.normal(0, 0.1, (1, 6, 16, 16)).astype(np.float32)
        if i % 2:
            v[0, 2:4, 5:10, 5:10] += 2.0
        vols.append(v)
        ys.append(i % 2)
    x, y = VolumeStack(vols), np.array(ys)
    model = build_model(
        "cnn_rnn", in_channels=1, num_classes=2,
        encoder_kwargs={"widths": [8, 16], "batchnorm": False}, hidden_size=8,
    )  # fmt: skip
    cfg = TrainConfig(
        epochs=2, batch_size=1, accumulate=4, augment=None, patience=0, lr=3e-3,
        freeze_backbone_epochs=1,
    )  # fmt: skip
    gen = fit(model, (x, y), (x, y), cfg)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    batches = [e for e in events if e.kind == "batch"]
    assert len(batches) == 24 and result.best_epoch >= 1
    # after training nothing stays frozen
    assert all(p.requires_grad for p in result.model.parameters())


def _write_volumes(folder, n=16, seed=0):
    """n small NIfTI heads, half with a bright lesion; labels.csv."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    rows = ["path,label"]
    for i in range(n):
        vol = _head((14, 24, 24), seed=i)
        label = "lesion" if i % 2 else "normal"
        if label == "lesion":
            z0 = int(rng.integers(4, 8))
            y0, x0 = (int(v) for v in rng.integers(7, 13, 2))
            vol[z0 : z0 + 2, y0 : y0 + 4, x0 : x0 + 4] += 150
        # (x, y, z) on disk: the reader gives back vol's (z, y, x) order
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), affine), folder / f"v{i}.nii")
        rows.append(f"v{i}.nii,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


@pytest.mark.parametrize("arch", ["cnn_rnn", "resnet3d"])
def test_cli_trains_a_volume_model_and_classify_reads_it(
    tmp_path, monkeypatch, capsys, arch
):
    from napari_medcnn.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    labels = _write_volumes(tmp_path / "vols")
    out = tmp_path / "model.safetensors"
    args = ["train", "--labels", str(labels), "--arch", arch, "--out", str(out)]
    args += ["--slices", "8", "--epochs", "3", "--kfold", "0", "--size", "32", "32"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] >= 1
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["input_kind"] == ("sequence" if arch == "cnn_rnn" else "volume")
    assert card["input_size"] == [8, 32, 32]
    assert card["preprocessing"]["volume"]["slice_axis"] == "axial"
    assert card["provenance"]["label_counts"] == {"normal": 8, "lesion": 8}
    if arch == "cnn_rnn":  # the encoder came from the shipped 2D model
        assert card["provenance"]["encoder_from"]["model_id"]
        assert card["provenance"]["start"]["start"] == "encoder"
    # the prepared volumes are cached: a second load reads them back
    cached = list((tmp_path / "xdg" / "napari-medcnn" / "volumes").glob("*.npy"))
    assert len(cached) == 16
    js = tmp_path / "c.json"
    rc = main(
        ["classify", str(tmp_path / "vols" / "v1.nii"), "--model", str(out),
         "--scope", "volume", "--json", str(js)]
    )  # fmt: skip
    assert rc == 0
    rec = json.loads(js.read_text())
    rec = rec[0] if isinstance(rec, list) else rec
    assert rec["label"] in ("lesion", "normal")
    if arch == "cnn_rnn":  # one value per slice of the scan (14), not of x (8)
        assert len(rec["slice_probabilities"]) == 14
        imp = np.asarray(rec["slice_importance"])
        assert imp.shape == (14,) and abs(imp.sum() - 1) < 1e-4
        assert rec["slice_importance_method"] == "occlusion"
        # the cropped empty slices (3 above, 3 below) carry no importance
        assert imp[:2].sum() == 0 and imp[-2:].sum() == 0


def test_cli_volume_bad_input(tmp_path, monkeypatch, capsys):
    from napari_medcnn.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    labels = _write_volumes(tmp_path / "vols", n=6)
    base = ["train", "--arch", "cnn_rnn", "--slices", "4", "--epochs", "1"]
    # a 2D image among volume labels
    flat = tmp_path / "vols" / "flat.nii"
    nib.save(nib.Nifti1Image(np.ones((24, 24), np.float32), np.eye(4)), flat)
    mixed = tmp_path / "vols" / "mixed.csv"
    mixed.write_text(labels.read_text() + f"{flat},normal\n")
    out = tmp_path / "m.safetensors"
    assert main([*base, "--labels", str(mixed), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "flat.nii" in err and "2D" in err
    # a one-slice volume
    thin = tmp_path / "vols" / "thin.nii"
    nib.save(nib.Nifti1Image(np.ones((24, 24, 1), np.float32), np.eye(4)), thin)
    bad = tmp_path / "vols" / "thin.csv"
    bad.write_text(labels.read_text() + f"{thin},normal\n")
    assert main([*base, "--labels", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "thin.nii" in err
    # only one class labelled
    one = tmp_path / "vols" / "one.csv"
    one.write_text(
        "path,label\n" + "".join(f"v{i}.nii,normal\n" for i in range(0, 6, 2))
    )
    assert main([*base, "--labels", str(one), "--out", str(out)]) == 2
    assert "class" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("arch", ["cnn_rnn", "slice_pool"])
def test_sequence_models_start_from_the_2d_model(arch):
    import torch

    from napari_medcnn.models.checkpoint import default_model_path, resolve_model
    from napari_medcnn.training.transfer import start_volume_model

    parent = resolve_model(default_model_path(), "cpu")
    rec = volume_record(6, (32, 32), base=parent.card.preprocessing)
    model, card, note = start_volume_model(
        ["normal", "lesion"], arch, rec, encoder_from=parent
    )
    assert note["start"] == "encoder" and card.parent == parent.card.model_id
    assert card.arch_kwargs["slice_features"] == "avgmax"
    # the encoder's convolutions are the 2D model's
    first = next(m for m in parent.model.modules() if isinstance(m, torch.nn.Conv2d))
    mine = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert torch.equal(first.weight, mine.weight)
    # mean and maximum of the last feature map: twice its channels
    assert model.encoder.feature_dim == 2 * 128
    x = torch.zeros(1, 1, 6, 32, 32)
    x[0, 0, 3, 10:13, 10:13] = 5.0  # a small focal spot on one slice
    model.eval()
    with torch.no_grad():
        feats = model.encoder(x)[0]
    assert feats.shape == (6, 256)
    # the maximum half tells slice 3 from the rest more than the mean half
    diff = (feats[3] - feats[0]).abs()
    assert diff[128:].sum() > diff[:128].sum()


def test_series_whose_slices_differ_in_size_is_named(tmp_path, monkeypatch, capsys):
    import pydicom

    from napari_medcnn.cli import main
    from napari_medcnn.io.synth import write_series

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    labels = _write_volumes(tmp_path / "vols", n=6)
    files = write_series(_head((8, 24, 24)), tmp_path / "vols" / "mixed_series")
    for f in files[4:]:  # half the slices are 20 x 20
        ds = pydicom.dcmread(f)
        arr = ds.pixel_array[:20, :20].copy()
        ds.Rows, ds.Columns = arr.shape
        ds.PixelData = arr.tobytes()
        ds.save_as(f)
    csv = tmp_path / "vols" / "series.csv"
    csv.write_text(labels.read_text() + "mixed_series,lesion\n")
    out = tmp_path / "m.safetensors"
    args = ["train", "--arch", "cnn_rnn", "--slices", "4", "--epochs", "1"]
    assert main([*args, "--labels", str(csv), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mixed_series" in err and "differ in size" in err
    assert not out.exists()
