"""Benchmark: each saliency method's time as a multiple of one forward pass.

Run from the repository root::

    .venv/bin/python benchmarks/saliency.py [--threads 1] [--repeat 3]

Two inputs, each timed against its own forward pass in the same run:

* a 128x128 slice (the Colin27 T1 sample slice through the card's
  preprocessing) on the seed CNN 2D of the default card (BatchNorm,
  dropout 0.3): ``napari_medcnn/weights/br35h_seed_cnn.safetensors`` when
  it exists, else untrained; and on the shipped default model
  (``models.checkpoint.default_model_path()``) when that is another network;
* a 64^3 volume on a seed CNN 3D (untrained, default widths).

What is timed: ``Explainer.attribute`` on the prepared model input (the
method's own cost, the layer already found), median of ``--repeat`` runs
after one warm-up; the forward pass is timed the same way, under
``torch.no_grad``.  ``explain()`` end to end (preprocessing, probability
pass, mapping back to the image grid, normalisation) is shown for Grad-CAM.

Targets: Grad-CAM <= 3x a forward pass; Integrated Gradients with 32
steps within the memory bound that ``internal_batch_size`` sets: each
setting runs in a fresh subprocess (no allocator cache from an earlier
run), whose resident-set growth is measured (VmHWM reset through
``/proc/self/clear_refs`` right before the run, as in ``load_series.py``)
and compared with ``estimate_ig_memory``; occlusion's time follows its
forward-pass count for 2-3 window/stride settings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _memory import reset_peak, status_bytes

from napari_medcnn._progress import drain
from napari_medcnn.io import load
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import (
    LoadedModel,
    default_model_path,
    load_checkpoint,
)
from napari_medcnn.preprocessing.record import default_record, prepare
from napari_medcnn.saliency import METHODS, ClassTarget, explain
from napari_medcnn.saliency.gradients import estimate_ig_memory
from napari_medcnn.saliency.occlusion import count_windows, occlusion_cost

DATA = Path(__file__).resolve().parents[1] / "napari_medcnn" / "data"
MB = 2**20


def _peak_of(fn) -> tuple[float, int | None]:
    """(seconds, peak RSS growth in bytes or None) of one call of ``fn``."""
    before = status_bytes("VmRSS") if reset_peak() else None
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    peak = None if before is None else status_bytes("VmHWM") - before
    return dt, peak


def _median_time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


SEED_CNN = DATA.parent / "weights" / "br35h_seed_cnn.safetensors"


def seed_cnn_2d() -> LoadedModel:
    if SEED_CNN.exists():
        return load_checkpoint(SEED_CNN, "cpu")
    kw = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2}
    kw.update(batchnorm=True, dropout=0.3)
    card = ModelCard(
        arch="seed_cnn",
        arch_kwargs=kw,
        classes=["no tumour", "tumour"],
        spatial_dims=2,
        in_channels=1,
        input_size=[128, 128],
        preprocessing=default_record((128, 128)),
        name="untrained, default card",
    )
    torch.manual_seed(0)
    return LoadedModel(
        build_model("seed_cnn", **kw).eval(), card, torch.device("cpu"), ""
    )


def volume_3d(size: int = 64) -> LoadedModel:
    kw = {"spatial_dims": 3, "in_channels": 1, "num_classes": 2}
    kw.update(batchnorm=True, dropout=0.3)
    record = {**default_record((size, size)), "size": [size] * 3}
    card = ModelCard(
        arch="seed_cnn",
        arch_kwargs=kw,
        classes=["a", "b"],
        spatial_dims=3,
        in_channels=1,
        input_size=[size] * 3,
        preprocessing=record,
        input_kind="volume",
        name="seed_cnn 3D, untrained",
    )
    torch.manual_seed(0)
    return LoadedModel(
        build_model("seed_cnn", **kw).eval(), card, torch.device("cpu"), ""
    )


def _ig_child(label_key: str, ibs: int) -> tuple[float, int | None]:
    """Run one IG job in a fresh process; (seconds, peak RSS growth)."""
    cmd = [sys.executable, __file__, "--ig-child", label_key, str(ibs)]
    cmd += ["--threads", str(torch.get_num_threads())]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    return info["seconds"], info["peak"]


def ig_child(label_key: str, ibs: int) -> None:
    loaded, image, spacing = CASES[label_key]()
    x = torch.from_numpy(
        prepare([image], loaded.card.preprocessing, spacing[-2:])[None]
    )
    # one single-example gradient first: kernels and the autograd engine's
    # one-off buffers are then in place, what remains scales with the batch
    METHODS["gradient"](loaded.model).attribute(x, ClassTarget(1))
    e = METHODS["integrated_gradients"](loaded.model, n_steps=32,
                                        internal_batch_size=ibs)  # fmt: skip
    dt, peak = _peak_of(lambda: e.attribute(x, ClassTarget(1)))
    print(json.dumps({"seconds": dt, "peak": peak}))


def _slice_case(model_fn):
    def case():
        scan = load(DATA / "colin27_t1_axial.dcm")[0]
        return model_fn(), np.asarray(scan.data, np.float32), scan.spacing

    return case


def _volume_case():
    vol = load(DATA / "colin27_t1.nii.gz")[0]
    return volume_3d(), np.asarray(vol.data, np.float32)[40:140], vol.spacing


def _shipped() -> LoadedModel:
    return load_checkpoint(default_model_path(), "cpu")


CASES = {
    "seed2d": _slice_case(seed_cnn_2d),
    "shipped2d": _slice_case(_shipped),
    "seed3d": _volume_case,
}


def bench(label_key, repeat, occlusion_settings) -> None:
    loaded, image, spacing = CASES[label_key]()
    label = {"seed2d": "2D slice", "shipped2d": "2D slice", "seed3d": "3D volume"}
    label = label[label_key]
    net, card = loaded.model, loaded.card
    x = torch.from_numpy(prepare([image], card.preprocessing, spacing[-2:])[None])
    print(f"\n== {label}: model {card.name or card.arch}, input {tuple(x.shape)}")

    def forward():
        with torch.no_grad():
            net(x)

    t_fwd = _median_time(forward, repeat)
    print(f"forward pass: {t_fwd * 1e3:.1f} ms")
    target = ClassTarget(1)
    rows = [
        ("gradcam", {}),
        ("gradcam++", {}),
        ("gradient", {}),
        ("smoothgrad", {"n_samples": 16, "samples_batch": 8}),
        ("integrated_gradients", {"n_steps": 32, "internal_batch_size": 8}),
    ]
    for name, params in rows:
        e = METHODS[name](net, **params)
        t = _median_time(lambda e=e: e.attribute(x, target), repeat)
        note = ""
        if name == "gradcam":
            note = "  target <= 3x: " + ("PASS" if t / t_fwd <= 3 else "FAIL")
        print(
            f"{name:22s} {t * 1e3:9.1f} ms  {t / t_fwd:6.1f}x forward  {params}{note}"
        )
    t_explain = _median_time(
        lambda: drain(explain([image], loaded, "gradcam", spacing=spacing)), repeat
    )
    print(
        f"explain(gradcam) end to end {t_explain * 1e3:.1f} ms "
        f"({t_explain / t_fwd:.1f}x forward)"
    )

    print("-- integrated gradients, 32 steps: memory vs internal_batch_size")
    for ibs in (1, 4, 8, 32) if x.dim() == 4 else (1, 2, 4):
        dt, peak = _ig_child(label_key, ibs)
        est = estimate_ig_memory(net, x.shape[1:], ibs)
        measured = "n/a" if peak is None else f"{peak / MB:7.1f} MiB"
        print(
            f"internal_batch_size {ibs:3d}: {dt / t_fwd:6.1f}x forward (1 run), "
            f"peak RSS growth {measured}, bound (estimate) {est / MB:7.1f} MiB"
        )

    print("-- occlusion: passes and time vs window/stride (model-input voxels)")
    base = None
    for window, stride in occlusion_settings:
        nd = x.dim() - 2
        w, s = (window,) * nd, (stride,) * nd
        est = occlusion_cost(net, x, w, s, perturbations_per_eval=16)
        e = METHODS["occlusion"](net, window=w, stride=s, perturbations_per_eval=16)
        t0 = time.perf_counter()
        e.attribute(x, target)
        dt = time.perf_counter() - t0
        windows = count_windows(x.shape[2:], w, s)
        base = base or (dt / windows)
        print(
            f"window {window:2d} stride {stride:2d}: {windows:6d} windows, "
            f"{est.forward_passes:4d} passes of 16, {dt:7.2f} s = "
            f"{dt / t_fwd:7.1f}x forward; per window {dt / windows / base:4.2f} "
            f"(first = 1); estimate {est.seconds:6.2f} s"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-3d", action="store_true")
    ap.add_argument("--ig-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.ig_child:
        ig_child(args.ig_child[0], int(args.ig_child[1]))
        return 0
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    bench("seed2d", args.repeat, [(16, 8), (8, 4)])
    shipped = default_model_path()
    if shipped.exists() and shipped.resolve() != SEED_CNN.resolve():
        bench("shipped2d", args.repeat, [(16, 8)])
    if not args.skip_3d:
        bench("seed3d", 1, [(32, 16), (16, 8)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
