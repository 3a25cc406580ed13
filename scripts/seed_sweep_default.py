"""Seeds, widths and ensembles of the default recipe on the shipped split.

    .venv/bin/python scripts/seed_sweep_default.py \\
        [--runs resnet:1-7,resnet18:0-3,resnet_wide:0-2] [--parallel 14] \\
        [--device cuda] [--cache x128.npz] [--out sweep/]
    .venv/bin/python scripts/seed_sweep_default.py --report-only --out sweep/

Asks whether the shipped model's held-out accuracy is limited by its seed
or its size: each run trains ``scripts/train_default_model.py``'s recipe
(architecture from its ``ARCHS``, the given seed for initialisation,
augmentation and batch order) on the shipped card's own train and
validation file lists, and is scored on its test files, so every run sees
the same duplicate-group split.  Runs go to ``--parallel`` worker
processes (one CPU thread each; the GPU when ``--device cuda``); each
writes ``RUN.json`` (validation and test logits, plain and left-right
flipped, and the history) and ``RUN.safetensors`` into ``--out``.

The report prints, with a temperature fitted on validation logits, each
run's validation and test accuracy, AUC and ECE, with and without flip
averaging; the logit-mean ensemble of each architecture and of all runs;
and how many test images every run, or most runs, get wrong.  Nothing is shipped.  About
10 minutes a run on one CPU core (30 epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_default_model import (  # noqa: E402
    ARCHS,
    _prepare,
    add_recipe_args,
    recipe,
    train,
)

from napari_medcnn.models.checkpoint import default_model_path  # noqa: E402
from napari_medcnn.preprocessing.record import default_record  # noqa: E402
from napari_medcnn.training.data import br35h  # noqa: E402
from napari_medcnn.training.finetune import predict_logits  # noqa: E402
from napari_medcnn.training.metrics import fit_temperature, summarize  # noqa: E402

SPLITS = ("train", "validation", "test")


def parse_runs(text: str) -> list[tuple[str, int]]:
    """``"resnet:1-3,resnet18:0"`` -> [(resnet, 1), (resnet, 2), ...]."""
    runs = []
    for part in text.split(","):
        arch, _, seeds = part.partition(":")
        if arch not in ARCHS:
            raise SystemExit(f"unknown architecture {arch!r}: one of {sorted(ARCHS)}")
        lo, _, hi = seeds.partition("-")
        runs += [(arch, s) for s in range(int(lo), int(hi or lo) + 1)]
    return runs


def shipped_split() -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Br35H names, labels and the shipped card's train/validation/test indices."""
    items = br35h.list_br35h()
    names = [n for n, _ in items]
    where = {n: i for i, n in enumerate(names)}
    card = json.loads(default_model_path().with_suffix(".json").read_text())
    prov = card["provenance"]
    idx = {s: np.array([where[n] for n in prov[f"{s}_files"]]) for s in SPLITS}
    return names, np.array([lab for _, lab in items]), idx


def worker(out: Path, arch: str, seed: int, args) -> None:
    """Train one run and write its logits and weights into ``out``."""
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    args.arch, args.seed = arch, seed
    _, model, cfg = recipe(args)
    cfg.device = args.device
    x = np.load(out / "x.npy", mmap_mode="r")
    y = np.load(out / "labels.npy")
    idx = {s: np.load(out / f"{s}.npy") for s in SPLITS}
    tr, va = idx["train"], idx["validation"]
    t0 = time.perf_counter()
    res = train(model, (x[tr], y[tr]), (x[va], y[va]), cfg, f"{arch}:{seed} ")
    net = res.model.eval()
    record = {"arch": arch, "seed": seed, "best_epoch": res.best_epoch,
              "train_s": time.perf_counter() - t0, "history": res.history}  # fmt: skip
    for split in ("validation", "test"):
        xs = x[idx[split]]
        record[split] = predict_logits(net, xs, 256).tolist()
        record[f"{split}_flip"] = predict_logits(net, xs[..., ::-1], 256).tolist()
    name = f"{arch}_s{seed}"
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(out / f"{name}.safetensors"))
    (out / f"{name}.json").write_text(json.dumps(record))


def report(out: Path) -> None:
    """Print each run's and each ensemble's scores (see the module doc)."""
    y = np.load(out / "labels.npy")
    yv, yt = (y[np.load(out / f"{s}.npy")] for s in ("validation", "test"))
    runs = {f.stem: json.loads(f.read_text()) for f in sorted(out.glob("*_s*.json"))}
    if not runs:
        raise SystemExit(f"no finished runs in {out}")

    def score(keys, flip):
        def mean(split):
            parts = [np.array(runs[k][split]) for k in keys]
            if flip:
                parts += [np.array(runs[k][f"{split}_flip"]) for k in keys]
            return np.mean(parts, 0)

        v, t = mean("validation"), mean("test")
        temp = fit_temperature(v, yv)
        return summarize(v, yv, temp), summarize(t, yt, temp)

    def line(label, keys):
        cells = []
        for flip in (False, True):
            v, t = score(keys, flip)
            cells.append(f"val {v['accuracy']:.4f}  test {t['accuracy']:.4f} "
                         f"AUC {t['auc']:.4f} ECE {t['ece']:.3f}")  # fmt: skip
        print(f"{label:24s} {cells[0]}  | flip-averaged: {cells[1]}")

    for k in runs:
        line(f"{k} (epoch {runs[k]['best_epoch']})", [k])
    for arch in sorted({r["arch"] for r in runs.values()}):
        keys = [k for k, r in runs.items() if r["arch"] == arch]
        line(f"ensemble {arch} x{len(keys)}", keys)
    line(f"ensemble all x{len(runs)}", list(runs))
    wrong = np.sum([np.argmax(r["test"], 1) != yt for r in runs.values()], 0)
    most, every = int(np.sum(wrong > len(runs) / 2)), int(np.sum(wrong == len(runs)))
    print(f"test images wrong in every run: {every}; in most runs: {most} of "
          f"{len(yt)} (majority vote accuracy {1 - most / len(yt):.4f})")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_args(ap)
    ap.add_argument("--runs", default="resnet:1-7,resnet18:0-3,resnet_wide:0-2")
    ap.add_argument("--parallel", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default=None, help="cpu, cuda...; default: best")
    ap.add_argument("--cache", type=Path, help="prepared 128 x 128 images (.npz)")
    ap.add_argument("--out", type=Path, default=Path("seed_sweep"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--worker", nargs=2, metavar=("ARCH", "SEED"), help=argparse.SUPPRESS
    )
    args = ap.parse_args(argv)
    out = args.out
    if args.worker:
        worker(out, args.worker[0], int(args.worker[1]), args)
        return 0
    if not args.report_only:
        out.mkdir(parents=True, exist_ok=True)
        names, labels, idx = shipped_split()
        if args.cache and args.cache.exists():
            x = np.load(args.cache)["x"]
        else:
            root = br35h.br35h_root()
            x = _prepare([root / n for n in names], default_record((128, 128)))
        np.save(out / "x.npy", x)
        np.save(out / "labels.npy", labels)
        for s in SPLITS:
            np.save(out / f"{s}.npy", idx[s])
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        passed = list(argv if argv is not None else sys.argv[1:])
        todo, live = parse_runs(args.runs), []
        while todo or live:
            while todo and len(live) < args.parallel:
                arch, seed = todo.pop(0)
                cmd = [sys.executable, __file__, *passed, "--worker", arch, str(seed)]
                live.append(subprocess.Popen(cmd, env=env))
            time.sleep(1)
            live = [p for p in live if p.poll() is None]
    report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
