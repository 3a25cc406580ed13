"""Group k-fold estimate of the default model's recipe on all of Br35H.

    .venv/bin/python scripts/cv_default_recipe.py --arch cnn4 --epochs 20 \\
        --lr 3e-3 --ema-decay 0.99 --epochs 24 --tta flip --cache fov96.npz

The shipped model is judged on one held-out test split of about 78
duplicate groups, so its accuracy moves by a few points with the split.
This script deals the same duplicate groups (``train_default_model``'s
rule) into ``--folds`` folds; each fold is held out once while the recipe
of ``scripts/train_default_model.py`` trains on the others: the same
record (``--record``, ``--size``), augmentation, optimiser and schedule,
the healthy Colin27 slices added to the training set (``--healthy``), its
own group-wise 85/15 train/validation split for the best epoch, the
test-time augmentation (``--tta flip``: logits averaged with the mirror
image, as the card's ``tta``) and the temperature fitted on the
validation logits.  It prints each fold's held-out accuracy, AUC and ECE
and their mean and spread, as JSON.  Nothing is shipped.  About 20
minutes a fold on 2 CPU cores (cnn4, 96 px, 20 epochs).
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
    ROOT,
    ZOO_NAME,
    _groups,
    _prepare,
    add_recipe_args,
    fit_card_domain,
    recipe,
    train,
)

from napari_medcnn.io import load  # noqa: E402
from napari_medcnn.models.features import FlipAveraged  # noqa: E402
from napari_medcnn.preprocessing.record import default_record, fov_record  # noqa: E402
from napari_medcnn.training.data import br35h  # noqa: E402
from napari_medcnn.training.data.dedup import group_split  # noqa: E402
from napari_medcnn.training.data.healthy import healthy_slices  # noqa: E402
from napari_medcnn.training.data.splits import plan_split  # noqa: E402
from napari_medcnn.training.finetune import predict_logits  # noqa: E402
from napari_medcnn.training.metrics import fit_temperature, summarize  # noqa: E402


def logits_of(model, x: np.ndarray, tta: str, n_classes: int = 2) -> np.ndarray:
    """Logits (N, K); with ``tta == "flip"`` the mean over the image and its
    left-right mirror (as :class:`napari_medcnn.models.features.FlipAveraged`)."""
    if tta == "flip":
        model = FlipAveraged(model, n_classes)
    return predict_logits(model, x, 128)


def save_fold(model, arch_kwargs, args, record, names, split, temperature, x_tr, x_va):
    """Write a fold's model as a checkpoint with a card (its split, the
    temperature, the flip average and a refitted domain guard), so that
    ``scripts/eval_trust.py --model`` and ``scripts/eval_saliency_br35h.py
    --model`` can judge it like the shipped model (on the fold's test
    files)."""
    import torch

    from napari_medcnn.models.card import ModelCard
    from napari_medcnn.models.checkpoint import save_checkpoint

    domain, reference = fit_card_domain(model, x_tr, x_va)
    tr, va, te, k = split
    card = ModelCard(
        arch=ZOO_NAME[args.arch],
        arch_kwargs=arch_kwargs,
        classes=list(br35h.CLASSES),
        spatial_dims=2,
        in_channels=1,
        channel_names=["MR"],
        input_size=[args.size, args.size],
        input_kind="slice",
        preprocessing=record,
        temperature=temperature,
        domain=domain,
        tta=["flip"] if args.tta == "flip" else [],
        name=f"cv fold {k} ({args.arch})",
        description="A cross-validation fold's model: not for use.",
        provenance={
            "script": "scripts/cv_default_recipe.py",
            "fold": k,
            "train_files": [names[i] for i in tr],
            "validation_files": [names[i] for i in va],
            "test_files": [names[i] for i in te],
        },
    )
    args.save_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        model,
        card,
        args.save_dir / f"fold{k}",
        extras={"domain.reference": torch.from_numpy(reference)},
    )


def run_fold(x, labels, groups, train_idx, test_idx, extra, args, save=None) -> dict:
    """The recipe trained on ``train_idx`` (inner group split) plus the
    healthy slices ``extra``, scored on ``test_idx``; ``save`` (record,
    names, fold number) also writes the model (``--save-dir``)."""
    inner_tr, inner_va = group_split(
        groups[train_idx], labels[train_idx], (0.85, 0.15), seed=args.seed
    )
    tr, va = train_idx[inner_tr], train_idx[inner_va]
    x_tr, y_tr = x[tr], labels[tr]
    if len(extra):
        x_tr = np.concatenate([x_tr, extra])
        y_tr = np.concatenate([y_tr, np.zeros(len(extra), y_tr.dtype)])
    arch_kwargs, model, cfg = recipe(args)
    result = train(model, (x_tr, y_tr), (x[va], labels[va]), cfg, "fold ")
    model = result.model.eval()
    temperature = fit_temperature(logits_of(model, x[va], args.tta), labels[va])
    if save is not None:
        record, names, k = save
        save_fold(
            model,
            arch_kwargs,
            args,
            record,
            names,
            (tr, va, test_idx, k),
            temperature,
            x_tr,
            x[va],
        )
    logits = logits_of(model, x[test_idx], args.tta)
    s = summarize(logits, labels[test_idx], temperature)
    other = "none" if args.tta == "flip" else "flip"
    t_other = fit_temperature(logits_of(model, x[va], other), labels[va])
    s_other = summarize(logits_of(model, x[test_idx], other), labels[test_idx], t_other)
    return {
        "n_train": int(len(tr)),
        "n_healthy": int(len(extra)),
        "n_val": int(len(va)),
        "n_test": int(len(test_idx)),
        "test_groups": int(len(np.unique(groups[test_idx]))),
        "accuracy": round(float(s["accuracy"]), 4),
        "auc": round(float(s["auc"]), 4),
        "ece": round(float(s["ece"]), 4),
        "ece_before_temperature": round(
            float(summarize(logits, labels[test_idx], 1.0)["ece"]), 4
        ),
        "temperature": round(float(temperature), 3),
        "best_epoch": int(result.best_epoch),
        f"accuracy_tta_{other}": round(float(s_other["accuracy"]), 4),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    add_recipe_args(ap)
    ap.add_argument("--size", type=int, default=0, help="input side (px)")
    ap.add_argument("--tta", choices=("none", "flip"), default="flip")
    ap.add_argument(
        "--healthy", type=int, default=6, help="Colin27 re-slicings (0: none)"
    )
    ap.add_argument("--cache", type=Path, help="prepared images (.npz, x)")
    ap.add_argument("--only-fold", type=int, help="run just this fold (1-based)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument(
        "--save-dir",
        type=Path,
        help="also write each fold's model here (foldK.safetensors + card)",
    )
    args = ap.parse_args(argv)
    args.size = args.size or (96 if args.record == "fov" else 128)
    t0 = time.perf_counter()
    items = br35h.list_br35h()
    root = br35h.br35h_root()
    paths = [root / name for name, _ in items]
    labels = np.array([lab for _, lab in items])
    size = (args.size, args.size)
    record = fov_record(size) if args.record == "fov" else default_record(size)
    if args.cache and args.cache.exists():
        x = np.load(args.cache)["x"]
    else:
        x = _prepare(paths, record)
    x_dedup = (
        x
        if args.record == "crop" and args.size == DEDUP_SIZE
        else _prepare(paths, default_record((DEDUP_SIZE,) * 2))
    )
    groups = _groups(paths, x_dedup, args)
    del x_dedup
    extra = np.zeros((0, *x.shape[1:]), x.dtype)
    if args.healthy:
        head = load(ROOT / "napari_medcnn" / "data" / "colin27_t1.nii.gz")[0]
        extra = healthy_slices(
            head.data, head.spacing, record, copies=args.healthy, seed=args.seed
        )
    plan = plan_split(labels, groups, kfold=args.folds, seed=args.seed)
    folds = []
    for k, (train_idx, test_idx) in enumerate(plan.folds, 1):
        if args.only_fold and k != args.only_fold:
            continue
        save = (record, [name for name, _ in items], k) if args.save_dir else None
        folds.append(
            run_fold(x, labels, groups, train_idx, test_idx, extra, args, save)
        )
        print(f"fold {k}/{len(plan.folds)}: {json.dumps(folds[-1])}", flush=True)
    acc = np.array([f["accuracy"] for f in folds])
    n_test = sum(f["n_test"] for f in folds)
    out = {
        "recipe": f"scripts/train_default_model.py ({args.arch}, {args.record} "
        f"{args.size}x{args.size}, {args.epochs} epochs, lr {args.lr}, EMA "
        f"{args.ema_decay}, healthy x{args.healthy}, dropout blur "
        f"{args.dropout_blur}, tta {args.tta})",
        "split": plan.method,
        "n_groups": int(len(np.unique(groups))),
        "folds": folds,
        "accuracy_mean": round(float(acc.mean()), 4),
        "accuracy_sd": round(float(acc.std(ddof=1)), 4) if len(acc) > 1 else 0.0,
        "accuracy_pooled": round(
            float(sum(f["accuracy"] * f["n_test"] for f in folds) / n_test), 4
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
