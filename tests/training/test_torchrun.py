"""``napari-medcnn train`` under ``torchrun``: two CPU processes (gloo).

The slow test runs the real command line twice on the same tiny task
(bright disk or not, 32x32 PNGs): once plainly and once under ``torchrun
--standalone --nproc_per_node=2``, then checks that both ranks ended with
bit-identical weights (each rank dumps its own through
``NAPARI_MEDCNN_DUMP_REPLICAS``), that exactly one checkpoint and card
were written (by rank 0), that the card records the world size, and that
the two models score the same on held-out images within a tolerance.
The fast tests cover reading torchrun's environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from napari_medcnn.cli import main
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import load_checkpoint, read_card, save_checkpoint
from napari_medcnn.training import distributed

KW = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2,
      "widths": [8, 16, 16], "pooled_size": 2, "dropout": 0.2}  # fmt: skip
RECORD = {
    "version": 1,
    "color": "luminance",
    "intensity": {"mode": "percentile", "low": 1.0, "high": 99.0},
    "foreground_crop": None,
    "size": [32, 32],
}
TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: held-out accuracy (64 images) of the 2-process model may differ from the
#: single-process one by at most this much (6 images): the runs differ in
#: the global batch (2 x 4 against 4), hence steps per epoch, and in
#: floating-point summation order
ACCURACY_TOLERANCE = 0.1
REPO = Path(__file__).parents[2]


def _write_set(folder: Path, n: int, rng) -> Path:
    """``n`` PNGs, every other one with a bright disk; a ``path,label,patient``
    CSV where each patient holds two images of one class."""
    folder.mkdir()
    yy, xx = np.mgrid[:32, :32]
    rows = ["path,label,patient"]
    for i in range(n):
        img = rng.normal(80, 20, (32, 32))
        label = "disk" if i % 2 else "empty"
        if i % 2:
            cy, cx = rng.integers(10, 22, 2)
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < 36] += 100
        name = f"im{i:03d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name)
        rows.append(f"{folder.name}/{name},{label},P{i % 2}-{i // 4}")
    csv = folder.with_suffix(".csv")
    csv.write_text("\n".join(rows) + "\n")
    return csv


@pytest.fixture
def task(tmp_path):
    """A tiny untrained parent, 320 training and 64 held-out images."""
    torch.manual_seed(0)
    card = ModelCard(
        arch="seed_cnn",
        arch_kwargs=KW,
        classes=["empty", "disk"],
        spatial_dims=2,
        in_channels=1,
        input_size=[32, 32],
        preprocessing=RECORD,
        name="tiny parent",
    )
    parent = save_checkpoint(build_model("seed_cnn", **KW), card, tmp_path / "parent")
    rng = np.random.default_rng(0)
    train = _write_set(tmp_path / "train", 320, rng)
    test = _write_set(tmp_path / "test", 64, rng)
    return parent, train, test


def _argv(parent: Path, labels: Path, out: Path) -> list[str]:
    return ["train", "--labels", str(labels), "--model", str(parent),
            "--out", str(out), "--epochs", "2", "--batch-size", "4",
            "--lr", "1e-3", "--kfold", "0", "--val-fraction", "0.25",
            "--no-augment", "--seed", "0", "--device", "cpu"]  # fmt: skip


def _held_out_accuracy(checkpoint: Path, labels: Path) -> float:
    from napari_medcnn._progress import drain
    from napari_medcnn.training.data.dataset import load_labeled
    from napari_medcnn.training.finetune import predict_logits

    loaded = load_checkpoint(checkpoint, "cpu")
    data = drain(load_labeled([str(labels)], loaded.card.preprocessing))
    assert data.classes == loaded.card.classes
    pred = predict_logits(loaded.model, data.x).argmax(1)
    return float(np.mean(pred == data.y))


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path, task, monkeypatch, capsys):
    parent, train, test = task
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)

    single = tmp_path / "single" / "model"
    assert main(_argv(parent, train, single)) == 0, capsys.readouterr().err
    capsys.readouterr()

    out, dump = tmp_path / "ddp", tmp_path / "replicas"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(
        {
            distributed.DUMP_REPLICAS_ENV: str(dump),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(
                [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
            ),
        }
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", "-m", "napari_medcnn.cli",
           *_argv(parent, train, out / "model")]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    # exactly one checkpoint and card, and one report: rank 1 is quiet
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]
    assert proc.stderr.count("epoch 2/2") == 1
    assert proc.stderr.count("wrote ") == 1
    summary = json.loads(proc.stdout)
    assert summary["checkpoint"] == str(out / "model.safetensors")

    # both ranks hold the same weights and buffers (BatchNorm statistics
    # included), and rank 0's are the ones written
    from safetensors.torch import load_file

    assert sorted(p.name for p in dump.iterdir()) == [
        "rank0.safetensors",
        "rank1.safetensors",
    ]
    rank0 = load_file(dump / "rank0.safetensors")
    rank1 = load_file(dump / "rank1.safetensors")
    written = load_file(out / "model.safetensors")
    assert rank0.keys() == rank1.keys() == written.keys()
    assert any("running_mean" in k for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
        assert torch.equal(rank0[key], written[key]), key

    card = read_card(out / "model.safetensors")
    assert card.provenance["distributed"] == {
        "world_size": 2,
        "backend": "gloo",
        "global_batch_size": 8,
        "replicas_identical": True,
    }
    assert card.provenance["train_config"]["batch_size"] == 4
    single_card = read_card(single.with_suffix(".safetensors"))
    assert single_card.provenance["distributed"] == {"world_size": 1, "backend": None}
    # the same group split (validation is never sharded for training)
    assert card.provenance["split"] == single_card.provenance["split"]
    assert card.metrics["validation"]["n"] == single_card.metrics["validation"]["n"]

    acc_ddp = _held_out_accuracy(out / "model.safetensors", test)
    acc_single = _held_out_accuracy(single.with_suffix(".safetensors"), test)
    assert acc_single >= 0.9, acc_single  # the task is learnable in 2 epochs
    assert abs(acc_ddp - acc_single) <= ACCURACY_TOLERANCE, (acc_ddp, acc_single)


def test_environment_without_torchrun_is_one_process():
    assert distributed.from_environment({}) == distributed.DistContext()
    assert not distributed.from_environment({"WORLD_SIZE": "1", "RANK": "0"}).enabled
    ctx = distributed.from_environment(
        {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}
    )
    assert (ctx.world_size, ctx.rank, ctx.local_rank) == (4, 3, 1)
    assert ctx.enabled and not ctx.is_main
    with pytest.raises(ValueError, match="RANK"):
        distributed.from_environment({"WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="outside"):
        distributed.from_environment({"WORLD_SIZE": "2", "RANK": "2"})


def test_process_group_is_a_no_op_for_one_process():
    with distributed.process_group("cpu", env={}) as run:
        assert run == distributed.DistContext(device="cpu")
        assert not torch.distributed.is_initialized()
    # helpers are identities in a single process
    assert distributed.sum_across(1.5, 2) == (1.5, 2.0)
    assert distributed.any_rank(False) is False
    assert list(distributed.shard(3)) == [0, 1, 2]
    rows = np.arange(6.0).reshape(3, 2)
    assert distributed.gather_rows(rows, 3) is rows
    assert distributed.is_main()


def test_torchrun_refuses_devices_without_a_backend():
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    group = distributed.process_group("mps", env=env)
    with pytest.raises(ValueError, match="cpu \\(gloo\\) or cuda \\(NCCL\\)"):
        group.__enter__()
    assert not torch.distributed.is_initialized()
