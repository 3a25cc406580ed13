"""``napari-medcnn train``: sidecars and CSVs in, checkpoint and JSON out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_medcnn.cli import main
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import read_card, save_checkpoint
from napari_medcnn.training.labels.store import LabelStore

KW = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2,
      "widths": [8, 16, 16], "pooled_size": 2, "dropout": 0.2}  # fmt: skip


@pytest.fixture
def parent(tmp_path):
    card = ModelCard(
        arch="seed_cnn",
        arch_kwargs=KW,
        classes=["empty", "disk"],
        spatial_dims=2,
        in_channels=1,
        input_size=[32, 32],
        preprocessing={
            "version": 1,
            "color": "luminance",
            "intensity": {"mode": "percentile", "low": 1.0, "high": 99.0},
            "foreground_crop": None,
            "size": [32, 32],
        },
        name="tiny parent",
    )
    return save_checkpoint(build_model("seed_cnn", **KW), card, tmp_path / "parent")


@pytest.fixture
def pngs(tmp_path):
    """16 PNGs, half with a bright disk; a CSV for 8, sidecars for the rest."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :40] - 20
    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = ["path,label,patient"]
    for i in range(16):
        img = rng.normal(80, 20, (40, 40))
        label = "disk" if i % 2 else "empty"
        if i % 2:
            img[yy**2 + xx**2 < 64] += 120
        p = folder / f"im{i:02d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(p)
        if i < 8:
            rows.append(f"imgs/{p.name},{label},P{i // 2}")
        else:
            LabelStore.open(p, classes=["empty", "disk"]).label_image(label)
    csv = tmp_path / "labels.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv, folder


def test_train_from_csv_and_sidecars(tmp_path, parent, pngs, capsys):
    csv, folder = pngs
    out = tmp_path / "tuned"
    rc = main(["train", "--labels", str(csv), str(folder), "--model", str(parent),
               "--out", str(out), "--epochs", "2", "--batch-size", "4",
               "--kfold", "0", "--no-augment", "--min-per-class", "3",
               "--json", str(tmp_path / "s.json")])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    summary = json.loads(cap.out)
    assert summary["label_counts"] == {"empty": 8, "disk": 8}
    assert summary["parent"] == read_card(parent).model_id
    assert summary["advice"]["verdict"] in (
        "still improving",
        "plateaued",
        "overfitting",
    )
    assert np.array(summary["confusion_matrix"]).sum() == summary["split"]["n_val"][0]
    assert "epoch 2/2" in cap.err and "16 labelled examples" in cap.err
    card = read_card(out.with_suffix(".safetensors"))
    assert card.provenance["tool"] == "napari-medcnn train (CLI)"
    assert card.provenance["split"]["method"] == "group_holdout"
    assert json.loads((tmp_path / "s.json").read_text()) == summary


def test_train_scratch_kfold(tmp_path, parent, pngs, capsys):
    csv, _ = pngs
    rc = main(["train", "--labels", str(csv), "--model", str(parent), "--scratch",
               "--out", str(tmp_path / "s"), "--epochs", "1", "--batch-size", "4",
               "--no-augment", "--min-per-class", "3"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert json.loads(cap.out)["parent"] is None
    assert "fold 1/" in cap.err and "all labels" in cap.err


def test_train_bad_input(tmp_path, parent, pngs, capsys):
    csv, _ = pngs
    one = tmp_path / "one.csv"
    one.write_text(
        "\n".join(csv.read_text().splitlines()[:2]).replace("imgs/", "imgs/")
    )
    one.write_text(f"{csv.parent}/imgs/im00.png,empty\n")
    rc = main(["train", "--labels", str(one), "--model", str(parent),
               "--out", str(tmp_path / "x")])  # fmt: skip
    assert rc == 2 and "at least 2 classes" in capsys.readouterr().err
    rc = main(["train", "--labels", str(csv), "--model", str(tmp_path / "nope"),
               "--out", str(tmp_path / "x")])  # fmt: skip
    assert rc == 2 and "error:" in capsys.readouterr().err
    rc = main(["train", "--labels", str(tmp_path / "missing.csv"), "--model",
               str(parent), "--out", str(tmp_path / "x")])  # fmt: skip
    assert rc == 2 and "no such label file" in capsys.readouterr().err
