"""Lesion masks supervise a volume model: the CSV ``mask`` column, masks
prepared and augmented with their volume, the evidence map and its loss,
and ``train --arch cnn_rnn`` on a CSV with masks."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from _helpers import noisy_head

from napari_medcnn.preprocessing.volume import prepare_volume, volume_record
from napari_medcnn.training.labels.csv import read_label_csv
from napari_medcnn.training.labels.errors import LabelsError


def test_csv_mask_column_by_header_name(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text(
        "label,mask,path,site\n"
        "lesion,m/a.nii.gz,a.nii.gz,x\n"
        "normal,,b.nii.gz,y\n"
        f"lesion,{tmp_path / 'abs.nii'},c.nii.gz,z\n"
    )
    rows = read_label_csv(csv)
    assert [r.path.name for r in rows] == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    assert rows[0].mask == tmp_path / "m" / "a.nii.gz"  # relative to the CSV
    assert rows[1].mask is None and rows[1].group is None
    assert rows[2].mask == tmp_path / "abs.nii"
    # the positional form is unchanged: path,label,group
    plain = tmp_path / "p.csv"
    plain.write_text("a.nii.gz,lesion,patient-1\n")
    (row,) = read_label_csv(plain)
    assert row.label == "lesion" and row.group.startswith("group:")
    assert row.mask is None
    bad = tmp_path / "bad.csv"
    bad.write_text("path,mask\na.nii.gz,m.nii\n")
    with pytest.raises(LabelsError, match="bad.csv:1.*'label'"):
        read_label_csv(bad)


def test_mask_follows_the_volume_preparation():
    vol = noisy_head((30, 40, 36), 0, empty=2)
    mask = np.zeros(vol.shape, np.uint8)
    mask[14:17, 12:18, 20:26] = 7  # any non-zero value is "inside"
    vol[mask > 0] += 80
    rec = volume_record(10, (24, 24))
    x, t = prepare_volume([vol], rec, (2.0, 1.0, 1.0), targets=[mask])
    assert x.shape == (1, 10, 24, 24) and t.shape == (1, 10, 24, 24)
    assert t.dtype == np.float32 and t.min() >= 0 and t.max() <= 1
    assert t.max() > 0.5
    # the prepared mask sits on the prepared lesion: its weighted centre is
    # within a voxel of the bright blob's
    blob = np.clip(x[0] - np.median(x[0][x[0] > 0.2]), 0, None)
    blob = blob * (blob > 0.5 * blob.max())
    grid = np.indices(t[0].shape).reshape(3, -1)
    c_mask = (grid * t[0].ravel()).sum(1) / t[0].sum()
    c_blob = (grid * blob.ravel()).sum(1) / blob.sum()
    assert np.abs(c_mask - c_blob).max() <= 1.0
    # the image alone is prepared exactly as without a mask
    assert np.array_equal(prepare_volume([vol], rec, (2.0, 1.0, 1.0)), x)
    with pytest.raises(ValueError, match="mask shape"):
        prepare_volume([vol], rec, (2.0, 1.0, 1.0), targets=[mask[:-1]])


def test_augmentation_moves_the_mask_with_the_image():
    from napari_medcnn.training.data.augment import (
        augment_with_mask,
        build_augmentation,
    )

    cfg = {"flip": True, "rotate": True, "affine": True, "intensity": True,
           "noise": True, "slice_dropout": True, "gamma": True}  # fmt: skip
    aug = build_augmentation(cfg, spatial_dims=3, seed=3)
    x = np.zeros((1, 12, 32, 32), np.float32)
    m = np.zeros((12, 32, 32), np.float32)
    m[4:8, 6:14, 18:26] = 1
    x[0] += 0.2 + 0.6 * m
    moved = 0
    for _ in range(12):
        xa, ma = augment_with_mask(aug, x, m)
        assert xa.shape == x.shape and ma.shape == m.shape
        assert float(ma.min()) >= -1e-6 and float(ma.max()) <= 1 + 1e-6
        inside = ma > 0.5
        assert inside.any()
        # the mask's voxels are the image's bright ones, wherever they went
        assert float(xa[0][inside].mean()) > float(xa[0][~inside].mean()) + 0.3
        moved += not np.array_equal(inside.numpy(), m > 0.5)
    assert moved > 0  # the spatial transforms did move it


def test_evidence_loss_ignores_unknown_masks():
    from napari_medcnn.models.evidence import evidence_loss

    ev = torch.zeros(2, 3, 8, 8, requires_grad=True)
    unknown = torch.full((2, 3, 16, 16), float("nan"))
    assert float(evidence_loss(ev, unknown)) == 0.0
    masks = unknown.clone()
    masks[0] = 0.0
    masks[0, 1, 4:8, 4:8] = 1.0
    loss = evidence_loss(ev, masks)
    loss.backward()
    assert ev.grad[1].abs().sum() == 0  # the unknown volume does not count
    g = ev.grad[0, 1]
    assert g[2:4, 2:4].max() < 0 < g[6:, 6:].min()  # up in the lesion, down outside


def test_dense_targets_know_which_volumes_are_clean():
    from napari_medcnn.training.data.dataset import LabeledSet

    m = np.ones((2, 3, 3), np.float16)
    data = LabeledSet(
        np.zeros((4, 1, 2, 3, 3), np.float32),
        np.array([0, 0, 1, 1]),
        ["lesion", "normal"],
        np.array(list("abcd"), dtype=object),
        ["a", "b", "c", "d"],
        masks=[m, None, None, None],
    )
    assert data.mask_classes() == ["lesion"]
    t = data.dense_targets()
    assert t[0] is m and np.isnan(t[1]) and t[2] == 0.0 and t[3] == 0.0
    sub = data.subset(np.array([1, 0]))
    assert sub.masks[1] is m and sub.masks[0] is None
    assert (
        LabeledSet(
            data.x, data.y, data.classes, data.groups, data.items
        ).dense_targets()
        is None
    )


def _write(folder, n, seed, lesion_value=150.0):
    """n small heads, half with a lesion; labels.csv with a mask column."""
    rng = np.random.default_rng(seed)
    (folder / "masks").mkdir(parents=True)
    rows = ["path,label,mask"]
    truth = {}
    for i in range(n):
        vol = noisy_head((16, 32, 32), seed * 100 + i, empty=2)
        label = "lesion" if i % 2 else "normal"
        mask = np.zeros(vol.shape, np.uint8)
        if label == "lesion":
            z0 = int(rng.integers(5, 9))
            y0, x0 = (int(v) for v in rng.integers(10, 18, 2))
            mask[z0 : z0 + 3, y0 : y0 + 4, x0 : x0 + 4] = 1
            vol[mask > 0] += lesion_value
            truth[f"v{i}.nii"] = (z0, z0 + 2)
        affine = np.diag([1.0, 1.0, 2.0, 1.0])
        nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), affine), folder / f"v{i}.nii")
        if label == "lesion":
            nib.save(
                nib.Nifti1Image(mask.transpose(2, 1, 0), affine),
                folder / "masks" / f"v{i}.nii",
            )
            rows.append(f"v{i}.nii,{label},masks/v{i}.nii")
        else:
            rows.append(f"v{i}.nii,{label},")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv", truth


def test_cli_learns_an_evidence_map_from_masks(tmp_path, monkeypatch, capsys):
    from napari_medcnn.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    labels, _ = _write(tmp_path / "train", 16, seed=1)
    out = tmp_path / "m.safetensors"
    args = ["train", "--labels", str(labels), "--arch", "cnn_rnn", "--out", str(out)]
    args += ["--slices", "16", "--size", "32", "32", "--epochs", "12", "--kfold", "0"]
    assert main([*args, "--no-augment", "--patience", "0", "--batch-size", "1"]) == 0
    err = capsys.readouterr().err
    assert "8 lesion masks for lesion" in err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["arch_kwargs"]["encoder"] == "lesion_fcn"
    assert card["arch_kwargs"]["slice_features"] == "evidence"
    assert card["provenance"]["lesion_masks"]["volumes"] == 8
    assert card["provenance"]["lesion_masks"]["classes"] == ["lesion"]
    # the evidence map learnt where the lesions are: on held-out volumes its
    # strongest pixel lies in the lesion
    from napari_medcnn.io import load
    from napari_medcnn.models.checkpoint import load_checkpoint
    from napari_medcnn.preprocessing.volume import prepare_volume

    test_labels, truth = _write(tmp_path / "test", 6, seed=2)
    loaded = load_checkpoint(out)
    net = loaded.model.eval()
    hits, strongest = 0, {"lesion": [], "normal": []}
    for row in read_label_csv(test_labels):
        scan = load(row.path)[0]
        m = load(row.mask)[0].data if row.mask else np.zeros(scan.data.shape)
        x, t = prepare_volume(
            [scan.data], loaded.card.preprocessing, scan.spacing, targets=[m]
        )
        with torch.no_grad():
            net(torch.from_numpy(x)[None])
        ev = net.encoder.last_evidence[0].numpy()
        strongest[row.label].append(float(ev.max()))
        peak = np.unravel_index(ev.argmax(), ev.shape)
        hits += row.mask is not None and t[0][peak] > 0
    assert hits == 3
    # and it is stronger in every lesion volume than anywhere in a normal one
    assert min(strongest["lesion"]) > max(strongest["normal"])
    # as a user sees it: classify --scope volume names the lesion volumes,
    # and slice importance peaks on the lesion's slices
    assert card["provenance"]["lesion_masks"]["slice_stage"]["best_epoch"] >= 1
    recs_path = tmp_path / "recs.json"
    files = sorted((tmp_path / "test").glob("v*.nii"))
    cmd = ["classify", *map(str, files), "--model", str(out), "--scope", "volume"]
    assert main([*cmd, "--json", str(recs_path)]) in (0, 1)
    recs = json.loads(recs_path.read_text())
    labels = {f"v{i}.nii": "lesion" if i % 2 else "normal" for i in range(6)}
    right = sum(r["label"] == labels[Path(r["path"]).name] for r in recs)
    assert right >= 5, [(r["path"], r["probabilities"]) for r in recs]
    for r in recs:
        name = Path(r["path"]).name
        if name in truth:
            z0, z1 = truth[name]
            assert z0 <= int(np.argmax(r["slice_importance"])) <= z1
    # --no-masks trains the usual encoder from the 2D model instead
    out2 = tmp_path / "m2.safetensors"
    args2 = [*args[:6], str(out2), *args[7:]]
    assert main([*args2, "--epochs", "1", "--no-masks"]) == 0
    card2 = json.loads(out2.with_suffix(".json").read_text())
    assert card2["arch_kwargs"]["slice_features"] == "avgmax"
    assert "lesion_masks" not in card2["provenance"]


def test_cli_mask_bad_input(tmp_path, monkeypatch, capsys):
    from napari_medcnn.cli import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    labels, _ = _write(tmp_path / "v", 6, seed=3)
    base = ["train", "--arch", "cnn_rnn", "--slices", "4", "--epochs", "1"]
    base += ["--size", "16", "16", "--out", str(tmp_path / "m.safetensors")]
    # a mask on another grid
    small = tmp_path / "v" / "masks" / "small.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), small)
    text = labels.read_text().replace("masks/v1.nii", "masks/small.nii")
    (tmp_path / "v" / "grid.csv").write_text(text)
    assert main([*base, "--labels", str(tmp_path / "v" / "grid.csv")]) == 2
    err = capsys.readouterr().err
    assert "small.nii" in err and "voxel grid" in err
    # a missing mask file
    text = labels.read_text().replace("masks/v1.nii", "masks/gone.nii")
    (tmp_path / "v" / "gone.csv").write_text(text)
    assert main([*base, "--labels", str(tmp_path / "v" / "gone.csv")]) == 2
    assert "gone.nii" in capsys.readouterr().err
    # an augmentation that does not exist
    assert main([*base, "--labels", str(labels), "--augment", "flip,bogus"]) == 2
    assert "--augment: unknown bogus" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
    # a chosen set is exactly what the card records
    ok = [*base, "--labels", str(labels), "--augment", "flip,noise"]
    short = ["--slice-epochs", "1", "--min-per-class", "2", "--kfold", "0"]
    assert main([*ok, *short]) == 0
    card = json.loads((tmp_path / "m.json").read_text())
    on = {k for k, v in card["provenance"]["augmentation"].items() if v}
    assert on == {"flip", "noise"}
    assert card["provenance"]["lesion_masks"]["slice_stage"]["epochs"] == 1


def test_mask_file_beside_the_sidecar(tmp_path):
    """A mask painted in napari is kept beside the label sidecar (packed
    bits, atomic) and read back on the scan's grid only."""
    from napari_medcnn.training.labels.masks import load_mask, mask_path, save_mask

    path = mask_path(tmp_path / "scan.nii.gz.medcnn-labels.json")
    assert path.name == "scan.nii.gz.medcnn-labels.json.mask.npz"
    assert load_mask(path, (4, 5, 6)) is None  # none drawn
    m = np.zeros((4, 5, 6), np.uint16)
    m[1:3, 2, 3:5] = 2  # any non-zero label is the finding
    assert save_mask(path, m) == path
    back = load_mask(path, (4, 5, 6))
    assert back.dtype == np.uint8 and np.array_equal(back, (m > 0).astype(np.uint8))
    with pytest.raises(LabelsError, match=r"scan.nii.gz.medcnn-labels.json.mask.npz"):
        load_mask(path, (4, 5, 7))  # the scan changed
    assert save_mask(path, np.zeros_like(m)) is None and not path.exists()
    path.write_bytes(b"not a mask")
    with pytest.raises(LabelsError, match="unreadable lesion mask"):
        load_mask(path, (4, 5, 6))


def test_sidecar_labels_bring_their_painted_masks(tmp_path, monkeypatch):
    """``train --labels folder/`` of napari-labelled volumes: the volume
    label's painted mask comes with it (as a CSV mask column would)."""
    from napari_medcnn._progress import drain
    from napari_medcnn.training.data.dataset import load_labeled
    from napari_medcnn.training.labels.masks import mask_path, save_mask
    from napari_medcnn.training.labels.store import LabelStore

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    for i in range(4):
        vol = noisy_head((10, 24, 24), i, empty=1)
        f = tmp_path / f"v{i}.nii"
        nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), affine), f)
        store = LabelStore.open(f, n_slices=10, classes=["normal", "lesion"])
        store.label_volume("lesion" if i % 2 else "normal")
        if i % 2:
            m = np.zeros(vol.shape, np.uint8)
            m[4:6, 10:14, 10:14] = 1
            save_mask(mask_path(store.path), m)
    record = volume_record(8, (16, 16), modality="MR")
    data = drain(load_labeled([tmp_path], record, input_kind="sequence"))
    assert len(data) == 4 and data.mask_classes() == ["lesion"]
    have = [m is not None for m in data.masks]
    assert have == [data.classes[y] == "lesion" for y in data.y]
    # a mask from another grid is refused, naming its file
    bad = mask_path(tmp_path / "v1.nii.medcnn-labels.json")
    save_mask(bad, np.ones((3, 3, 3)))
    with pytest.raises(LabelsError, match="v1.nii.medcnn-labels.json.mask.npz"):
        drain(load_labeled([tmp_path], record, input_kind="sequence"))


def test_cli_resnet3d_with_masks_is_its_evidence_variant(tmp_path, monkeypatch, capsys):
    """``train --arch resnet3d`` with a mask column: the 3D ResNet's evidence
    variant at full resolution, the patch stage recorded in the card, and
    ``explain --method gradcam`` maps the voxels the evidence head reads
    (how well it learns: ``test_slice_stage.py``)."""
    from napari_medcnn.cli import main
    from napari_medcnn.io import load

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    labels, _ = _write(tmp_path / "train", 8, seed=4)
    out = tmp_path / "r.safetensors"
    args = ["train", "--labels", str(labels), "--arch", "resnet3d", "--out", str(out)]
    args += ["--slices", "16", "--size", "32", "32", "--epochs", "2", "--kfold", "0"]
    args += ["--slice-epochs", "1", "--min-per-class", "2", "--batch-size", "1"]
    assert main(args) == 0
    assert "the 3D ResNet learns a per-voxel evidence map" in capsys.readouterr().err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["arch"] == "resnet" and card["arch_kwargs"]["evidence"] is True
    assert card["input_kind"] == "volume" and card["input_size"][-2:] == [32, 32]
    stage = card["provenance"]["lesion_masks"]["slice_stage"]
    assert stage["epochs"] == 1 and stage["lesion_slices"] > 0
    vol = tmp_path / "train" / "v1.nii"
    cam = tmp_path / "cam.nii.gz"
    cmd = ["explain", str(vol), "--model", str(out), "--method", "gradcam"]
    assert main([*cmd, "--out", str(cam), "--no-metrics"]) == 0
    assert load(cam)[0].data.shape == load(vol)[0].data.shape
    # --no-masks: the plain MONAI ResNet
    out2 = tmp_path / "r2.safetensors"
    args2 = [*args[:6], str(out2), *args[7:]]
    assert main([*args2, "--no-masks", "--batch-size", "2"]) == 0
    card2 = json.loads(out2.with_suffix(".json").read_text())
    assert "evidence" not in card2["arch_kwargs"]
