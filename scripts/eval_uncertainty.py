"""Which uncertainty should the default model report?  Measured, not assumed.

    .venv/bin/python scripts/eval_uncertainty.py [--model CKPT] [--cache NPZ]

On the card's held-out Br35H test images (prepared with the card's
record), for each candidate:

* ``entropy``: normalised entropy of the calibrated probabilities, one
  forward pass (what ``classify`` reports);
* ``tta_flip``: entropy of the mean of the image and its mirror (2 passes);
* ``tta_flip_shift``: image, mirror and 4 shifts of 4 px (6 passes);
* ``mc_dropout_head``: 16 dropout samples of the classification head on one
  pass's features (the head's own dropout rate), entropy of the mean plus
  the samples' variance;

prints the cost in forward passes, the accuracy of the averaged
prediction, ECE, and how well each ranks the errors (AUROC of uncertainty
for "wrong"; 0.5 is chance), and the accuracy after abstaining on the 5 %
most uncertain images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def _auroc(score: np.ndarray, wrong: np.ndarray) -> float | None:
    """AUROC of ``score`` for the errors (None without both kinds)."""
    from napari_medcnn.training.metrics import roc_auc

    return None if wrong.all() or not wrong.any() else round(roc_auc(score, wrong), 4)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped model)")
    ap.add_argument("--cache", type=Path, help="prepared Br35H images (.npz)")
    ap.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="the card's held-out test files (default) or validation files",
    )
    args = ap.parse_args(argv)

    from napari_medcnn.io import load
    from napari_medcnn.models.checkpoint import resolve_model
    from napari_medcnn.models.features import last_linear, penultimate
    from napari_medcnn.preprocessing.record import prepare, to_gray
    from napari_medcnn.training.data import br35h
    from napari_medcnn.training.metrics import expected_calibration_error
    from napari_medcnn.trust.uncertainty import predictive_uncertainty as entropy

    loaded = resolve_model(args.model)
    card, net = loaded.card, loaded.model.eval()
    items = br35h.list_br35h()
    where = {n: i for i, (n, _) in enumerate(items)}
    names = card.provenance[f"{args.split}_files"]
    y = np.array([items[where[n]][1] for n in names])
    if args.cache and args.cache.exists():
        x = np.load(args.cache)["x"][[where[n] for n in names]]
    else:
        root = br35h.br35h_root()
        x = np.stack(
            [
                prepare([to_gray(s.data)], card.preprocessing, s.spacing)
                for s in (load(root / n)[0] for n in names)
            ]
        )
    t = float(card.temperature)
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))

    def probs(batch: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(net(batch) / t, 1).numpy()

    base = probs(xt)
    flip = probs(torch.flip(xt, dims=[-1]))
    shifts = [
        probs(torch.roll(xt, shifts=s, dims=d))
        for s, d in ((4, -1), (-4, -1), (4, -2), (-4, -2))
    ]
    fc = last_linear(net)
    drop = next((m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)), 0.2)
    with torch.inference_mode():
        _, feats = penultimate(net, xt)
        gen = torch.Generator().manual_seed(0)
        samples = []
        for _ in range(16):
            mask = (torch.rand(feats.shape, generator=gen) > drop).float()
            samples.append(torch.softmax(fc(feats * mask / (1 - drop)) / t, 1))
        mc = torch.stack(samples).numpy()
    candidates = {
        "entropy": (base, entropy(base), 1),
        "tta_flip": ((base + flip) / 2, entropy((base + flip) / 2), 2),
        "tta_flip_shift": (
            np.mean([base, flip, *shifts], 0),
            entropy(np.mean([base, flip, *shifts], 0)),
            6,
        ),
        "mc_dropout_head": (
            mc.mean(0),
            entropy(mc.mean(0)) + mc[:, :, 1].var(0),
            1,
        ),
    }
    for name, (p, u, passes) in candidates.items():
        wrong = p.argmax(1) != y
        keep = u <= np.quantile(u, 0.95)
        print(
            json.dumps(
                {
                    "candidate": name,
                    "forward_passes": passes,
                    "accuracy": round(float((~wrong).mean()), 4),
                    "ece": round(expected_calibration_error(p, y), 4),
                    "error_auroc": _auroc(u, wrong),
                    "accuracy_keeping_95pct": round(float((~wrong[keep]).mean()), 4),
                    "n_wrong": int(wrong.sum()),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
