"""Group k-fold estimate of the default model's recipe on all of Br35H.

    .venv/bin/python scripts/cv_default_recipe.py [--folds 5] [--epochs 30]

The shipped model is judged on one held-out test split of about 78
duplicate groups, so its accuracy moves by a few points with the split.
This script deals the same duplicate groups (``train_default_model``'s
rule) into ``--folds`` folds; each fold is held out once while the recipe
of ``scripts/train_default_model.py`` trains on the others (with its own
group-wise 85/15 train/validation split for the best epoch and the
temperature).  It prints each fold's held-out accuracy, AUC and ECE and
their mean and spread, as JSON.  Nothing is shipped.  About 8 minutes a
fold on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_default_model import (  # noqa: E402
    DEDUP_SIZE,
    _groups,
    _prepare,
    add_recipe_args,
    recipe,
    train,
)

from napari_medcnn.preprocessing.record import default_record  # noqa: E402
from napari_medcnn.training.data import br35h  # noqa: E402
from napari_medcnn.training.data.dedup import group_split  # noqa: E402
from napari_medcnn.training.data.splits import plan_split  # noqa: E402
from napari_medcnn.training.finetune import predict_logits  # noqa: E402
from napari_medcnn.training.metrics import fit_temperature, summarize  # noqa: E402


def run_fold(x, labels, groups, train_idx, test_idx, args) -> dict:
    """The recipe trained on ``train_idx`` (inner group split), scored on
    ``test_idx``."""
    inner_tr, inner_va = group_split(
        groups[train_idx], labels[train_idx], (0.85, 0.15), seed=args.seed
    )
    tr, va = train_idx[inner_tr], train_idx[inner_va]
    _, model, cfg = recipe(args)
    result = train(model, (x[tr], labels[tr]), (x[va], labels[va]), cfg, "fold ")
    temperature = fit_temperature(result.val_logits, result.val_labels)
    logits = predict_logits(result.model, x[test_idx], 128)
    s = summarize(logits, labels[test_idx], temperature)
    return {
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "n_test": int(len(test_idx)),
        "test_groups": int(len(np.unique(groups[test_idx]))),
        "accuracy": round(float(s["accuracy"]), 4),
        "auc": round(float(s["auc"]), 4),
        "ece": round(float(s["ece"]), 4),
        "temperature": round(float(temperature), 3),
        "best_epoch": int(result.best_epoch),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    add_recipe_args(ap)
    ap.add_argument("--cache", type=Path, help="prepared 128x128 images (.npz, x)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    items = br35h.list_br35h()
    root = br35h.br35h_root()
    paths = [root / name for name, _ in items]
    labels = np.array([lab for _, lab in items])
    if args.cache and args.cache.exists():
        x = np.load(args.cache)["x"]
    else:
        x = _prepare(paths, default_record((DEDUP_SIZE,) * 2))
    groups = _groups(paths, x, args)
    plan = plan_split(labels, groups, kfold=args.folds, seed=args.seed)
    folds = []
    for k, (train_idx, test_idx) in enumerate(plan.folds, 1):
        folds.append(run_fold(x, labels, groups, train_idx, test_idx, args))
        print(f"fold {k}/{len(plan.folds)}: {json.dumps(folds[-1])}", flush=True)
    acc = np.array([f["accuracy"] for f in folds])
    out = {
        "recipe": f"scripts/train_default_model.py ({args.arch}, 128x128, "
        f"{args.epochs} epochs)",
        "split": plan.method,
        "n_groups": int(len(np.unique(groups))),
        "folds": folds,
        "accuracy_mean": round(float(acc.mean()), 4),
        "accuracy_sd": round(float(acc.std(ddof=1)), 4) if len(acc) > 1 else 0.0,
        "accuracy_pooled": round(
            float(sum(f["accuracy"] * f["n_test"] for f in folds) / len(labels)), 4
        ),
        "auc_mean": round(float(np.mean([f["auc"] for f in folds])), 4),
        "ece_mean": round(float(np.mean([f["ece"] for f in folds])), 4),
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }
    if args.out:
        from napari_medcnn._atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
