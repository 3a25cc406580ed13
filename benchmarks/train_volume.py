"""Benchmark: CNN+RNN training throughput and peak memory on volumes.

Run from the repository root::

    .venv/bin/python benchmarks/train_volume.py [--n 40] [--shape 180 128 128]
        [--slices 32] [--epochs 2] [--threads 2]

Data: ``--n`` semi-synthetic head volumes (``--shape`` voxels, half with a
lesion) made from the Colin27 head by :mod:`napari_medcnn.io.lesions` and
written as NIfTI files with a ``labels.csv``, as a user would have them.

Both methods train the same CNN+RNN (slice encoder from the shipped 2D
model, frozen for the first epoch; the volume record of
``napari-medcnn train --arch cnn_rnn --slices N``; default augmentation;
AdamW, lr 1e-3) for ``--epochs`` epochs, each in a fresh process with
``torch.set_num_threads(--threads)``:

* ``naive``: one volume at a time: every step reads the NIfTI file,
  prepares it (:func:`~napari_medcnn.preprocessing.volume.prepare_volume`),
  augments it and takes an optimiser step on a batch of one, eager;
* ``ours``: :func:`~napari_medcnn.training.data.dataset.load_labeled`
  prepares each volume once into the on-disk cache
  (:mod:`napari_medcnn.training.data.volumes`) and
  :func:`~napari_medcnn.training.trainer.fit` streams batches of
  ``--batch`` volumes from it (the preparation is included in the time).

Printed: volumes per second (``n * epochs`` / wall time, preparation
included), the ratio ours/naive (target >= 2x on 2 cores) and each
method's peak resident-memory growth (VmHWM, target <= 4 GB at 40
volumes of 180 x 128 x 128).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _memory import reset_peak, status_bytes  # noqa: E402


def _record(slices: int):
    from napari_medcnn.models.checkpoint import default_model_path, resolve_model
    from napari_medcnn.training.transfer import volume_record_for

    parent = resolve_model(default_model_path(), "cpu")
    return parent, volume_record_for("cnn_rnn", parent.card, slices)


def _model(parent, record):
    from napari_medcnn.training.transfer import start_volume_model

    model, _card, _note = start_volume_model(
        ["normal", "lesion"], "cnn_rnn", record, encoder_from=parent
    )
    return model


def naive(csv: str, args, q) -> None:
    import numpy as np
    import torch

    from napari_medcnn.io import load
    from napari_medcnn.preprocessing.volume import prepare_volume
    from napari_medcnn.training.data.augment import build_augmentation
    from napari_medcnn.training.labels.csv import read_label_csv
    from napari_medcnn.training.trainer import backbone

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    parent, record = _record(args.slices)
    rows = read_label_csv(Path(csv))
    classes = ["normal", "lesion"]
    reset_peak()
    base = status_bytes("VmRSS")
    t0 = time.perf_counter()
    model = _model(parent, record)
    aug = build_augmentation(None, 3, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for epoch in range(args.epochs):
        frozen = epoch < 1  # the encoder learns from the second epoch on
        for p in backbone(model).parameters():
            p.requires_grad_(not frozen)
        model.train()
        if frozen:
            backbone(model).eval()
        for i in rng.permutation(len(rows)):
            scan = load(rows[i].path)[0]
            x = prepare_volume([scan.data], record, scan.spacing)
            x = torch.as_tensor(aug(torch.from_numpy(x)), dtype=torch.float32)
            y = torch.tensor([classes.index(rows[i].label)])
            opt.zero_grad()
            loss = loss_fn(model(x[None]), y)
            loss.backward()
            opt.step()
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "peak_bytes": status_bytes("VmHWM") - base,
        }
    )


def ours(csv: str, args, q) -> None:
    import torch

    from napari_medcnn._progress import drain
    from napari_medcnn.training.data.dataset import load_labeled
    from napari_medcnn.training.data.volumes import VolumeCache
    from napari_medcnn.training.trainer import TrainConfig, fit

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    parent, record = _record(args.slices)
    reset_peak()
    base = status_bytes("VmRSS")
    t0 = time.perf_counter()
    cache = VolumeCache(Path(args.cache))
    data = drain(load_labeled([csv], record, input_kind="sequence", cache=cache))
    t_prep = time.perf_counter() - t0
    model = _model(parent, record)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch,
        lr=1e-3,
        patience=0,
        freeze_backbone_epochs=1,
        schedule="constant",
    )
    # validation on a quarter of the volumes, as a real run has
    va = list(range(0, len(data), 4))
    gen = fit(model, (data.x, data.y), (data.x[va], data.y[va]), cfg)
    drain(gen)
    q.put(
        {
            "seconds": time.perf_counter() - t0,
            "prepare_seconds": t_prep,
            "peak_bytes": status_bytes("VmHWM") - base,
        }
    )


def _run(target, csv, args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(csv, args, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--shape", type=int, nargs=3, default=[180, 128, 128])
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", type=Path, help="reuse volumes made here")
    args = ap.parse_args()

    from napari_medcnn.io.lesions import make_cohort

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.data or Path(tmp) / "volumes"
        csv = folder / "labels.csv"
        if not csv.exists():
            t = time.perf_counter()
            make_cohort("colin27", folder, args.n, seed=0, shape=args.shape)
            print(
                f"made {args.n} volumes {args.shape} in {time.perf_counter() - t:.0f}s"
            )
        args.cache = str(Path(tmp) / "cache")
        res = {"naive": _run(naive, str(csv), args), "ours": _run(ours, str(csv), args)}
    vols = args.n * args.epochs
    for name, r in res.items():
        r["volumes_per_s"] = vols / r["seconds"]
        print(
            f"{name:6s} {r['seconds']:7.1f}s  {r['volumes_per_s']:.3f} volumes/s  "
            f"peak +{r['peak_bytes'] / 2**30:.2f} GiB"
            + (
                f"  (prepare {r['prepare_seconds']:.1f}s)"
                if "prepare_seconds" in r
                else ""
            )
        )
    ratio = res["ours"]["volumes_per_s"] / res["naive"]["volumes_per_s"]
    print(f"throughput ours/naive: {ratio:.2f}x (target >= 2x)")
    print(
        f"peak memory ours: {res['ours']['peak_bytes'] / 2**30:.2f} GiB "
        f"(bound 4 GiB at 40 volumes)"
    )
    print(json.dumps({"ratio": ratio, **res, "args": vars(args)}, default=str))


if __name__ == "__main__":
    main()
