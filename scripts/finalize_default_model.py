"""Choose the default model's test-time augmentation on validation, refit
its temperature, and record the held-out figures with it.

    .venv/bin/python scripts/finalize_default_model.py CKPT --out OUT \\
        [--cache PREPARED.npz] [--tta auto|flip|none]

``auto`` (default) keeps the mirror average (``card.tta = ["flip"]``:
``classify`` averages the logits of each slice and of its left-right
mirror) when it is at least as accurate as one pass on the card's
*validation* files, and leaves the test files out of the choice.  The
temperature is then refitted on validation logits of the chosen recipe,
and test accuracy, AUC, ECE (before and after scaling) and the confusion
matrix are recomputed with it.  The single-pass figures stay in the card
under ``metrics.single_pass``.  Weights, the domain and the guard's
reference features are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def uncertainty_summary(logits: np.ndarray, y: np.ndarray, temperature: float):
    """What ``classify`` reports as uncertainty (normalised entropy of the
    calibrated probabilities) on held-out images: its mean on right and
    wrong answers and how well it ranks the errors (AUROC)."""
    from napari_medcnn.models.calibration import softmax
    from napari_medcnn.training.metrics import roc_auc
    from napari_medcnn.trust.uncertainty import predictive_uncertainty

    p = softmax(logits, temperature)
    u = predictive_uncertainty(p)
    wrong = p.argmax(1) != y
    some = wrong.any() and not wrong.all()
    return {
        "measure": "normalised entropy of the calibrated probabilities",
        "mean_correct": round(float(u[~wrong].mean()), 4),
        "mean_wrong": round(float(u[wrong].mean()), 4) if wrong.any() else None,
        "error_auroc": round(roc_auc(u, wrong), 4) if some else None,
    }


def refit_domain(net, card, split) -> tuple[dict, np.ndarray]:
    """The card's domain refitted as ``train_default_model`` fits it: the
    training files plus the healthy re-slicings its provenance records
    (same count and seed), against the validation files."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_default_model import ROOT, fit_card_domain

    from napari_medcnn.io import load
    from napari_medcnn.training.data.healthy import healthy_slices

    x_train, _ = split("train")
    prov = card.provenance
    healthy = prov.get("healthy_head_slices") or {}
    n_healthy = int(healthy.get("n", 0))
    if n_healthy:
        # cards before "copies" was recorded say it in the source text
        said = healthy["source"].split(" axial")[0].split()[-1]
        copies = int(healthy.get("copies") or said)
        head = load(ROOT / "napari_medcnn" / "data" / "colin27_t1.nii.gz")[0]
        extra = healthy_slices(
            head.data,
            head.spacing,
            card.preprocessing,
            copies=copies,
            seed=int(prov.get("seed", 0)),
        )
        assert len(extra) == n_healthy, (len(extra), n_healthy)
        x_train = np.concatenate([x_train, extra])
    x_val, _ = split("validation")
    domain, reference = fit_card_domain(net, x_train, x_val)
    print(
        f"domain refitted: kNN threshold {domain['features']['threshold']:.4f}, "
        f"{domain['features']['validation_flagged']:.3f} of validation flagged",
        file=sys.stderr,
    )
    return domain, reference


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, help="prepared Br35H images (.npz)")
    ap.add_argument("--tta", choices=("auto", "flip", "none"), default="auto")
    ap.add_argument("--name", help="the card's new name")
    ap.add_argument("--description", help="the card's new description")
    ap.add_argument(
        "--refit-domain",
        action="store_true",
        help="refit the card's domain and the guard's reference features "
        "(training files plus the card's healthy Colin27 re-slicings, "
        "validation files) with the current trust.domain.fit_domain",
    )
    args = ap.parse_args(argv)

    from napari_medcnn.io import load
    from napari_medcnn.models.checkpoint import load_checkpoint, save_checkpoint
    from napari_medcnn.models.features import FlipAveraged
    from napari_medcnn.preprocessing.record import prepare, to_gray
    from napari_medcnn.training.data import br35h
    from napari_medcnn.training.finetune import predict_logits
    from napari_medcnn.training.metrics import fit_temperature, summarize

    loaded = load_checkpoint(args.checkpoint, "cpu")
    card, net = loaded.card, loaded.model.eval()
    items = br35h.list_br35h()
    where = {n: i for i, (n, _) in enumerate(items)}
    x_all = np.load(args.cache)["x"] if args.cache and args.cache.exists() else None

    def split(key: str) -> tuple[np.ndarray, np.ndarray]:
        names = card.provenance[f"{key}_files"]
        y = np.array([items[where[n]][1] for n in names])
        if x_all is not None:
            return x_all[[where[n] for n in names]], y
        root = br35h.br35h_root()
        scans = (load(root / n)[0] for n in names)
        x = np.stack(
            [prepare([to_gray(s.data)], card.preprocessing, s.spacing) for s in scans]
        )
        return x, y

    def logits(x: np.ndarray, flip: bool) -> np.ndarray:
        # the very wrapper ``classify`` applies for ``tta: ["flip"]``
        model = FlipAveraged(net, card.num_classes) if flip else net
        return predict_logits(model, x, 128)

    xv, yv = split("validation")
    xt, yt = split("test")
    val = {f: logits(xv, f) for f in (False, True)}
    acc = {f: float((val[f].argmax(1) == yv).mean()) for f in val}
    flip = {"auto": acc[True] >= acc[False], "flip": True, "none": False}[args.tta]
    temperature = fit_temperature(val[flip], yv)
    test_logits = logits(xt, flip)
    test = summarize(test_logits, yt, temperature)
    test_raw = summarize(test_logits, yt, 1.0)
    single = summarize(logits(xt, False), yt, fit_temperature(val[False], yv))
    card.tta = ["flip"] if flip else []
    card.name = args.name or card.name
    card.description = args.description or card.description
    card.temperature = temperature
    # this step changes what classify returns: record it beside the command
    # that made the weights
    card.provenance = {
        **card.provenance,
        "finalize_command": " ".join(
            ["scripts/finalize_default_model.py", *(argv or sys.argv[1:])]
        ),
    }
    keys = ("n", "accuracy", "auc", "ece", "confusion_matrix", "per_class")
    card.metrics = {
        **card.metrics,
        "test": {k: test[k] for k in keys},
        "test_ece_before_temperature": test_raw["ece"],
        "validation": {
            **summarize(val[flip], yv, temperature),
            "accuracy_single_pass": round(acc[False], 4),
            "accuracy_mirror_average": round(acc[True], 4),
        },
        "single_pass": {k: single[k] for k in ("accuracy", "auc", "ece")},
        "test_uncertainty": uncertainty_summary(test_logits, yt, temperature),
    }
    card.metrics["validation"] = {
        k: v
        for k, v in card.metrics["validation"].items()
        if k in ("n", "accuracy", "auc", "ece") or k.startswith("accuracy_")
    }
    extras = {k: v for k, v in (loaded.extras or {}).items()}
    if args.refit_domain:
        card.domain, reference = refit_domain(net, card, split)
        extras["domain.reference"] = torch.from_numpy(reference)
    path = save_checkpoint(net, card, args.out, extras=extras)
    print(
        json.dumps(
            {
                "tta": card.tta,
                "validation_accuracy": {"single": acc[False], "mirror": acc[True]},
                "temperature": temperature,
                "test": {k: test[k] for k in ("accuracy", "auc", "ece")},
                "test_ece_before_temperature": test_raw["ece"],
                "test_single_pass": {k: single[k] for k in ("accuracy", "auc")},
                "written": str(path),
            },
            default=float,
        )
    )
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sys.exit(main())
