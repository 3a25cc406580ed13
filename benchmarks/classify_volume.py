"""Benchmark: classify every slice of a 300 x 256 x 256 volume.

Run from the repository root::

    .venv/bin/python benchmarks/classify_volume.py [--repeat 3] [--no-rnn]

Volume: the Colin27 T1 template (``/usr/share/mricron/templates/ch2.nii.gz``,
read with :func:`napari_medcnn.io.load`), resampled to 300 slices and
256 rows (isotropic in-plane) and zero-padded to 256 columns; a synthetic
head phantom when the template is absent.  Model: the default model
(:func:`napari_medcnn.models.checkpoint.default_model_path`) when its weights exist,
otherwise (or with ``--untrained``) an untrained seed CNN with the default
card's settings (``seed_cnn``, BatchNorm, dropout 0.3, 1 x 128 x 128,
``default_record((128, 128))``) saved to a temporary checkpoint.

In the same run, interleaved round by round (best of ``--repeat``):

* ``naive``: what a user writes: ``model = load_checkpoint(path).model``,
  then under ``torch.no_grad()`` ``model(torch.from_numpy(prepare([s],
  record, spacing)[None]))`` for each slice ``s``, default torch threads
  (the target is ours >= 3x faster than this); it follows the card's
  test-time augmentation (``tta: ["flip"]``: the logits of each slice and
  its mirror image averaged), as ``classify`` does;
* ``naive, 1 intra-op thread``: the same loop with ``torch.set_num_threads
  (1)``, printed as a reference: on a loaded machine two OpenMP threads at
  batch 1 wait on each other, and this shows what is left without that;
* ``ours``: ``drain(classify([vol], path, scope="slices", spacing=...))``,
  after one warm-up call (which loads the model and builds its inference
  copy, as the first classification in a session does; that one-off cost
  is printed separately);
* ``no guard``: the same ``classify`` call on a copy of the checkpoint whose
  card has no ``domain`` (no domain guard), when the model has one:
  ``ours / no guard`` is what the guard costs;
* ``plain``: a copy with neither the domain nor the test-time augmentation
  (one pass a slice): ``ours / plain`` is what the guard and the
  uncertainty cost together (target <= 2x): with ``tta: ["flip"]`` the
  uncertainty comes from the mirror average, a second pass; without, it is
  the entropy of the one pass's probabilities and costs nothing;
* ``model only``: the inference copy (fused; traced and frozen on CPU) on
  the already prepared slices, batched and threaded as ``classify`` does,
  to separate network from preprocessing.

Besides the ratio of best times, ``naive / ours`` is also printed within
each round (the two timed back to back): its median and range say how much
of a run-to-run difference is the machine's drift rather than the code.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one
forward pass of the plain model at its card's input size (convolutions and
matrix products, a multiply-add counted as 2; BatchNorm, ReLU and pooling
are not counted).  GFLOP/s = slices x GFLOP per slice / wall time.

Peak memory: each method runs once more in its own fresh subprocess, with
the volume and model loaded and an 8-slice warm-up done (imports, inference
copy).  Freed heap then goes back to the system (``malloc_trim``), so that
pages the warm-up left resident do not hide the run's working set; the
resident-set high-water mark (``VmHWM``) is reset to the current RSS (``echo
5 > /proc/self/clear_refs``) and read after the run.  The figure is HWM
minus RSS before the run: the memory the run added at its peak (numpy, torch
and oneDNN buffers alike), not counting the 75 MiB input volume or the
model.

``--device cuda`` (or ``mps``) runs naive, ours and the model-only pass on
that device instead (the naive loop moves each slice there and back; the
model-only pass runs batches of ``GPU_BATCH`` and waits for the device);
peak memory is then the device's allocator peak during ``ours``
(``torch.cuda.max_memory_allocated``), not a process RSS.

Unless ``--no-rnn``, it also times a CNN+RNN (untrained ``cnn_rnn``
with the same seed CNN encoder) in ``volume`` scope against its plain
``forward_with_slices`` on the same volume.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _memory import reset_peak, status_bytes

from napari_medcnn._progress import drain
from napari_medcnn.inference.fast import GPU_BATCH, cpu_batch, optimized_model
from napari_medcnn.inference.predict import classify
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import (
    default_model_path,
    load_checkpoint,
    save_checkpoint,
)
from napari_medcnn.preprocessing.batch import prepare_slices
from napari_medcnn.preprocessing.record import default_record, prepare

COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
SEED_KW = {
    "spatial_dims": 2,
    "in_channels": 1,
    "num_classes": 2,
    "batchnorm": True,
    "dropout": 0.3,
}


def make_volume(slices: int, size: int) -> tuple[np.ndarray, tuple, str]:
    """(S, size, size) float32 volume, its spacing in mm and a description."""
    import torch.nn.functional as F

    if COLIN.exists():
        from napari_medcnn.io import load

        scan = load(COLIN)[0]
        d, h, w = scan.data.shape
        rows = size
        cols = min(size, round(w * (rows / h) * scan.spacing[2] / scan.spacing[1]))
        t = torch.from_numpy(np.ascontiguousarray(scan.data, np.float32))
        t = F.interpolate(t[None, None], size=(slices, rows, cols), mode="trilinear")[
            0, 0
        ]
        left = (size - cols) // 2
        vol = F.pad(t, (left, size - cols - left)).numpy()
        spacing = (
            scan.spacing[0] * d / slices,
            scan.spacing[1] * h / rows,
            scan.spacing[2] * w / cols,
        )
        what = f"Colin27 T1 ({COLIN.name}) resampled"
    else:
        z, y, x = np.mgrid[-1 : 1 : slices * 1j, -1 : 1 : size * 1j, -1 : 1 : size * 1j]
        r = np.sqrt((x / 0.75) ** 2 + (y / 0.9) ** 2 + (z / 0.95) ** 2)
        rng = np.random.default_rng(0)
        vol = np.where(r < 1, 600 - 300 * (r > 0.9), 0) + rng.normal(0, 20, r.shape)
        vol = vol.astype(np.float32)
        spacing = (0.6, 0.85, 0.85)
        what = "synthetic head phantom (Colin27 template absent)"
    return np.ascontiguousarray(vol, np.float32), spacing, what


def plain_copy(loaded, tmp: Path, keep_tta: bool = False) -> Path | None:
    """A copy of the checkpoint without its card's ``domain`` (no guard, no
    feature output) and, unless ``keep_tta``, without its test-time
    augmentation; None when the card has no domain."""
    import dataclasses

    if not loaded.card.domain:
        return None
    tta = list(loaded.card.tta) if keep_tta else []
    card = dataclasses.replace(loaded.card, domain={}, tta=tta)
    name = "guardless" if keep_tta else "plain"
    return save_checkpoint(loaded.model, card, tmp / name)


def make_models(tmp: Path, untrained: bool = False) -> tuple[Path, Path, str]:
    """The slice model (default weights or untrained) and an untrained CNN+RNN."""
    record = default_record((128, 128))
    torch.manual_seed(0)
    default = default_model_path()
    if default.exists() and not untrained:
        from napari_medcnn.models.checkpoint import read_card

        arch = read_card(default).arch
        slice_path, what = default, f"default weights ({default.name}, {arch})"
    else:
        card = ModelCard(
            arch="seed_cnn",
            arch_kwargs=dict(SEED_KW),
            classes=["no_tumor", "tumor"],
            spatial_dims=2,
            in_channels=1,
            input_size=[128, 128],
            preprocessing=record,
            name="untrained seed_cnn (benchmark)",
        )
        model = build_model("seed_cnn", **SEED_KW).eval()
        slice_path = save_checkpoint(model, card, tmp / "seed")
        what = "untrained seed_cnn, default card settings (no default weights)"
    enc = {k: v for k, v in SEED_KW.items() if k not in ("spatial_dims", "in_channels")}
    rnn_kw = {"in_channels": 1, "num_classes": 2, "encoder_kwargs": enc}
    rnn_card = ModelCard(
        arch="cnn_rnn",
        arch_kwargs=rnn_kw,
        classes=["no_tumor", "tumor"],
        spatial_dims=3,
        in_channels=1,
        input_size=[128, 128],
        input_kind="sequence",
        preprocessing=record,
        name="untrained cnn_rnn (benchmark)",
    )
    rnn_path = save_checkpoint(
        build_model("cnn_rnn", **rnn_kw).eval(), rnn_card, tmp / "rnn"
    )
    return Path(slice_path), rnn_path, what


# --- the methods: each returns per-slice probabilities or logits -----------


DEVICE = "cpu"  # set by --device


def naive_slices(vol, path, spacing):
    loaded = load_checkpoint(path, DEVICE)
    model, record = loaded.model, loaded.card.preprocessing
    temperature = loaded.card.temperature  # classify reports calibrated ones
    out = []
    with torch.no_grad():
        for s in vol:
            x = torch.from_numpy(prepare([s], record, spacing[1:])[None])
            logits = model(x.to(DEVICE))
            if "flip" in loaded.card.tta:
                logits = (logits + model(torch.flip(x, dims=[-1]).to(DEVICE))) / 2
            p = torch.softmax(logits / temperature, 1)
            out.append(p[0].cpu().numpy())
    return np.stack(out)


def naive_slices_1thread(vol, path, spacing):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return naive_slices(vol, path, spacing)
    finally:
        torch.set_num_threads(threads)


def ours_slices(vol, path, spacing):
    res = drain(classify([vol], path, scope="slices", spacing=spacing, device=DEVICE))
    return res.slice_probabilities


def naive_rnn(vol, path, spacing):
    loaded = load_checkpoint(path, DEVICE)
    x = prepare([vol], loaded.card.preprocessing, spacing[1:])[None]
    with torch.no_grad():
        out = loaded.model.forward_with_slices(torch.from_numpy(x).to(DEVICE))
    p = torch.softmax(out.slice_logits[0] / loaded.card.temperature, 1)
    return p.cpu().numpy()


def ours_rnn(vol, path, spacing):
    res = drain(classify([vol], path, scope="volume", spacing=spacing, device=DEVICE))
    return res.slice_probabilities


METHODS = {
    "naive": naive_slices,
    "ours": ours_slices,
    "rnn_naive": naive_rnn,
    "rnn_ours": ours_rnn,
}


def model_only(fast, prepared: np.ndarray) -> None:
    """The inference copy on prepared (S, 1, H, W) slices, batched and threaded
    as ``classify`` does on CPU (on a GPU: batches of ``GPU_BATCH``)."""
    from concurrent.futures import ThreadPoolExecutor

    if DEVICE != "cpu":
        with torch.inference_mode():
            for a in range(0, len(prepared), GPU_BATCH):
                fast(torch.from_numpy(prepared[a : a + GPU_BATCH]).to(DEVICE)).cpu()
        return

    step = cpu_batch(prepared.shape[-2:])
    spans = [prepared[a : a + step] for a in range(0, len(prepared), step)]

    def task(x):
        torch.set_num_threads(1)
        with torch.inference_mode():
            return fast(torch.from_numpy(x)).numpy()

    threads = torch.get_num_threads()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(task, spans))
    torch.set_num_threads(threads)


def flops(model, shape, method=None) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        x = torch.rand(shape, device=next(model.parameters()).device)
        (getattr(model, method) if method else model)(x)
    return counter.get_total_flops()


def memory_child(args) -> None:
    """Fresh process: one run of one method; print the RSS peak delta."""
    vol = np.load(args.volume)
    spacing = tuple(json.loads(args.spacing))
    path = args.model
    fn = METHODS[args.child]
    load_checkpoint(path, "cpu")  # the model is loaded before measuring
    fn(vol[:8], path, spacing)  # imports and one-off set-up (inference copy)
    # hand the warm-up's freed heap back to the system, so that the run's
    # own working set is counted, not hidden in pages already resident
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    exact = reset_peak()
    before = status_bytes("VmRSS")
    fn(vol, path, spacing)
    print(json.dumps({"peak": status_bytes("VmHWM") - before, "exact": exact}))


def measure_memory(child: str, vol_file: Path, spacing, model: Path) -> str:
    cmd = [sys.executable, __file__, "--child", child, "--volume", str(vol_file)]
    cmd += ["--spacing", json.dumps(list(spacing)), "--model", str(model)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    note = "" if got["exact"] else " (clear_refs unavailable: over-estimate)"
    return f"{got['peak'] / 2**20:.0f} MiB{note}"


ROUNDS: dict[str, list[float]] = {}


def best_of(fns: dict, repeat: int, args=()) -> tuple[dict, dict]:
    """Run the callables round-robin; best wall time and last result of each.

    Every round's time is also kept in :data:`ROUNDS` (seconds, by name), so
    that a ratio can be taken within each round too: on a shared machine
    whose speed drifts, two methods timed back to back see the same
    conditions, while their best times may come from different moments.
    """
    best = {k: float("inf") for k in fns}
    results = {}
    ROUNDS.clear()
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            results[k] = fn(*args)
            took = time.perf_counter() - t0
            ROUNDS.setdefault(k, []).append(took)
            best[k] = min(best[k], took)
    return best, results


def paired(a: str, b: str) -> str:
    """``a / b`` within each round of the last :func:`best_of`: median and
    range, e.g. ``3.02x (2.71-3.30x over 5 rounds)``."""
    r = np.array(ROUNDS[a]) / np.array(ROUNDS[b])
    return f"{np.median(r):.2f}x ({r.min():.2f}-{r.max():.2f}x over {len(r)} rounds)"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--slices", type=int, default=300)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-rnn", dest="rnn", action="store_false")
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or mps")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="use the untrained seed_cnn even when the default weights exist",
    )
    p.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    p.add_argument("--volume", help=argparse.SUPPRESS)
    p.add_argument("--spacing", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global DEVICE
    DEVICE = args.device
    if args.child:
        return memory_child(args)

    with tempfile.TemporaryDirectory(prefix="medcnn-bench-") as tmp:
        bench(args, Path(tmp))


def bench(args, tmp: Path) -> None:
    """The timed comparisons (``tmp``: checkpoints and the saved volume)."""
    vol, spacing, vol_what = make_volume(args.slices, args.size)
    slice_path, rnn_path, model_what = make_models(tmp, args.untrained)
    n = len(vol)
    print(
        f"volume: {vol_what} to {' x '.join(map(str, vol.shape))}, spacing "
        f"{tuple(round(s, 3) for s in spacing)} mm"
    )
    print(f"model: {model_what}")
    print(
        f"torch {torch.__version__}, device {DEVICE}, intra-op threads "
        f"{torch.get_num_threads()}, cores {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )

    loaded = load_checkpoint(slice_path, DEVICE)
    shape = (1, loaded.card.in_channels, *loaded.card.input_size)
    gflop = flops(loaded.model, shape) / 1e9
    print(
        f"FLOPs: {gflop:.3f} GFLOP per slice at {' x '.join(map(str, shape))} "
        "(FlopCounterMode: conv + linear, multiply-add = 2)"
    )

    # warm-up: imports, model load, inference copy (timed: the first call's cost)
    naive_slices(vol[:4], slice_path, spacing)
    t0 = time.perf_counter()
    fast = optimized_model(loaded)
    print(
        f"one-off: inference copy ({'fused, frozen' if DEVICE == 'cpu' else 'fused'})"
        f" built and checked in "
        f"{time.perf_counter() - t0:.2f} s (cached with the model)"
    )
    ours_slices(vol[:8], slice_path, spacing)
    guardless_path = plain_copy(loaded, tmp, keep_tta=True)
    plain_path = plain_copy(loaded, tmp)
    if plain_path is not None:
        ours_slices(vol[:8], plain_path, spacing)
        ours_slices(vol[:8], guardless_path, spacing)
    prepared = prepare_slices([vol], loaded.card.preprocessing, spacing[1:])

    best, res = best_of(
        {
            "naive": lambda: naive_slices(vol, slice_path, spacing),
            "naive1": lambda: naive_slices_1thread(vol, slice_path, spacing),
            "ours": lambda: ours_slices(vol, slice_path, spacing),
            "model": lambda: model_only(fast, prepared),
            **(
                {
                    "plain": lambda: ours_slices(vol, plain_path, spacing),
                    "guardless": lambda: ours_slices(vol, guardless_path, spacing),
                }
                if plain_path is not None
                else {}
            ),
        },
        args.repeat,
    )
    diff = float(np.abs(res["naive"] - res["ours"]).max())
    ratio = best["naive"] / best["ours"]
    mirrored = "flip" in loaded.card.tta
    labels = {
        "naive": "naive loop (default threads)",
        "naive1": "naive loop, 1 intra-op thread (reference)",
        "ours": 'classify(scope="slices")',
        "model": "model only (inference copy, prepared)",
        "guardless": "classify, no domain guard",
        "plain": "classify, no guard, one pass"
        + (" (no mirror average)" if mirrored else ""),
    }
    for k, label in labels.items():
        if k not in best:
            continue
        print(
            f"{label:42s} {best[k]:7.2f} s  {1e3 * best[k] / n:6.1f} ms/slice  "
            f"{n * gflop / best[k]:6.1f} GFLOP/s"
        )
    verdict = "met" if ratio >= 3 else "NOT met"
    ratio1 = best["naive1"] / best["ours"]
    print(
        f"ratio naive / ours: {ratio:.2f}x (target >= 3x: {verdict}); "
        f"best of {args.repeat}, interleaved"
    )
    print(f"ratio naive / ours within each round: {paired('naive', 'ours')}")
    print(
        f"ratio naive (1 thread) / ours: {ratio1:.2f}x (same code, naive given "
        "one intra-op thread: what is left without the thread effect)"
    )
    print(f"agreement: max |p_ours - p_naive| over slices and classes = {diff:.1e}")
    if "plain" in best:
        guard = best["ours"] / best["guardless"]
        cost = best["ours"] / best["plain"]
        print(
            f"ratio ours / no guard: {guard:.2f}x: the domain guard (features, "
            "content, kNN)"
        )
        print(
            f"ratio ours / plain: {cost:.2f}x: the domain guard and the "
            "uncertainty ("
            + ("its mirror average" if mirrored else "entropy of the same pass")
            + ") together, against one pass without either (target <= 2x: "
            f"{'met' if cost <= 2 else 'NOT met'})"
        )
    else:
        print("ratio ours / plain: n/a (the model's card records no domain)")

    if args.rnn:
        rloaded = load_checkpoint(rnn_path, "cpu")  # FLOPs counted on CPU
        per = (
            flops(rloaded.model, (1, 1, 8, 128, 128), "forward_with_slices")
            - flops(rloaded.model, (1, 1, 4, 128, 128), "forward_with_slices")
        ) / 4
        naive_rnn(vol[:8], rnn_path, spacing)
        ours_rnn(vol[:8], rnn_path, spacing)
        rbest, rres = best_of(
            {
                "naive": lambda: naive_rnn(vol, rnn_path, spacing),
                "ours": lambda: ours_rnn(vol, rnn_path, spacing),
            },
            args.repeat,
        )
        rdiff = float(np.abs(rres["naive"] - rres["ours"]).max())
        for k in ("naive", "ours"):
            print(
                f"cnn_rnn volume scope, {k:5s} {rbest[k]:7.2f} s  "
                f"{1e3 * rbest[k] / n:6.1f} ms/slice  "
                f"{n * per / 1e9 / rbest[k]:6.1f} GFLOP/s"
            )
        print(
            f"cnn_rnn ratio naive / ours: {rbest['naive'] / rbest['ours']:.2f}x; "
            f"{per / 1e9:.3f} GFLOP per slice; agreement {rdiff:.1e}"
        )

    if args.memory and DEVICE != "cpu":
        if torch.device(DEVICE).type != "cuda":
            print(f"peak memory: not measured on {DEVICE}")
            return
        torch.cuda.reset_peak_memory_stats()
        ours_slices(vol, slice_path, spacing)
        peak = torch.cuda.max_memory_allocated() / 2**20
        print(f"peak {DEVICE} memory allocated during ours: {peak:.0f} MiB")
    elif args.memory:
        vol_file = tmp / "volume.npy"
        np.save(vol_file, vol)
        print("peak RSS above the loaded volume and model (fresh process each):")
        jobs = [("naive", slice_path), ("ours", slice_path)]
        if args.rnn:
            jobs += [("rnn_naive", rnn_path), ("rnn_ours", rnn_path)]
        for child, path in jobs:
            print(f"  {child:10s} {measure_memory(child, vol_file, spacing, path)}")


if __name__ == "__main__":
    main()
