"""Which CAM method should ``explain`` use by default?  Measured, not assumed.

For each variant (Grad-CAM on the last feature map, Grad-CAM on the
deepest stage of at least 16x16 cells, HiResCAM, LayerCAM fused over the
stages from that one to the last, by mean or by maximum, and LayerCAM over
every stage), on held-out images:

* **resolution**: the finest feature map the map is made of (cells);
* **deletion beats random** (Petsiuk et al. 2018): the fraction of images
  whose deletion AUC is below the mean of random orders, with the blurred
  substrate (the default) and with deletion to black (the input's
  minimum);
* **pointing** (synthetic blobs only): the fraction of blob images whose
  map maximum lies within ``--radius`` px of the blob centre.

Data: ``--blobs N`` held-out images of :func:`napari_medcnn.io.synth.
blob_images` (``--seed``; the model should have been trained on another
seed, e.g. through ``napari-medcnn train`` on ``write_blob_dataset``), or
``--br35h`` the model card's held-out Br35H tumour test images (as
``scripts/eval_saliency_br35h.py``).  Each map explains the predicted
class (the map a user sees).  Prints one JSON object per variant.

    .venv/bin/python scripts/compare_saliency_methods.py --model CKPT \\
        --blobs 40 [--steps 16 --n-random 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def variants(loaded: Any, input_shape: Sequence[int]) -> dict[str, tuple]:
    """name -> (method, params) for the model."""
    import torch

    from napari_medcnn.saliency import pick_stages, stage_layers

    x = torch.zeros(1, loaded.card.in_channels, *input_shape)
    stages = stage_layers(loaded.model, x)
    fine = pick_stages(stages)[0][0]
    out = {
        "gradcam (last)": ("gradcam", {}),
        f"gradcam ({fine})": ("gradcam", {"layer": fine}),
        "hirescam (last)": ("hirescam", {}),
        "layercam (auto, mean)": ("layercam", {}),
        "layercam (auto, max)": ("layercam", {"fuse": "max"}),
        "layercam (all stages, mean)": (
            "layercam",
            {"layers": [s[0] for s in stages]},
        ),
    }
    if fine == stages[-1][0]:
        out.pop(f"gradcam ({fine})")
    return out


def blob_items(n: int, seed: int, size: int) -> list[tuple[np.ndarray, Any]]:
    """(image, blob centre (row, col)) of ``n`` blob images."""
    from napari_medcnn.io.synth import blob_grey, blob_images

    images, labels, centres = blob_images(2 * n, size=size, seed=seed)
    return [(blob_grey(images[i]), centres[i]) for i in range(2 * n) if labels[i]]


def br35h_items(loaded: Any, limit: int | None) -> list[tuple[np.ndarray, Any]]:
    import importlib.util
    from pathlib import Path

    from napari_medcnn.io import load
    from napari_medcnn.training.data.br35h import br35h_root

    path = Path(__file__).with_name("eval_saliency_br35h.py")
    spec = importlib.util.spec_from_file_location("eval_saliency_br35h", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    files = module.tumour_test_files(loaded.card)
    if limit is not None and limit < len(files):
        pick = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in sorted(set(pick))]
    root = br35h_root()
    items = []
    for name in files:
        scan = load(root / name)[0]
        data = scan.data
        if scan.rgb:
            from napari_medcnn.preprocessing.record import to_gray

            data = to_gray(data)
        items.append((data, None))
    return items


def measure(
    loaded: Any,
    items: Sequence[tuple[np.ndarray, Any]],
    method: str,
    params: dict[str, Any],
    *,
    steps: int = 16,
    n_random: int = 2,
    radius: float = 10.0,
) -> dict[str, Any]:
    """One variant on every item: resolution, deletion fractions, pointing."""
    from napari_medcnn._progress import drain
    from napari_medcnn.saliency import explain

    beats: dict[str, list] = {"blurred": [], "black": []}
    aucs: dict[str, list] = {"blurred": [], "black": []}
    rand: list = []
    hits, res, t0 = [], None, time.perf_counter()
    for k, (image, centre) in enumerate(items):
        result = None
        for baseline in beats:
            names = ["deletion_insertion"]
            if baseline == "blurred":
                names.append("randomization")
            result = drain(
                explain(
                    [image], loaded, method, metrics=names,
                    metric_options={"steps": steps, "n_random": n_random,
                                    "baseline": baseline, "seed": k},
                    **params,
                )
            )  # fmt: skip
            m = result.metrics
            beats[baseline].append(m["deletion_auc"] < m["deletion_auc_random"])
            aucs[baseline].append((m["deletion_auc"], m["deletion_auc_random"]))
            if "randomization" in m:
                rand.append(m["randomization"])
        res = result.params.get("map_resolution")
        if centre is not None:
            peak = np.unravel_index(np.argmax(result.map), result.map.shape)
            hits.append(float(np.hypot(*(np.array(peak) - centre))) <= radius)
    out = {
        "method": method,
        "params": {k: v for k, v in params.items()},
        "map_resolution": res,
        "n": len(items),
        "deletion_beats_random_blurred": round(float(np.mean(beats["blurred"])), 3),
        "deletion_beats_random_black": round(float(np.mean(beats["black"])), 3),
        "deletion_auc_vs_random_blurred": np.round(
            np.mean(aucs["blurred"], 0), 3
        ).tolist(),
        "deletion_auc_vs_random_black": np.round(np.mean(aucs["black"], 0), 3).tolist(),
        "randomization_correlation_mean": round(
            float(np.mean([r["correlation"] for r in rand])), 3
        ),
        "randomization_status": {
            s: sum(r["status"] == s for r in rand)
            for s in ("passed", "failed", "inconclusive")
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if hits:
        out["pointing"] = round(float(np.mean(hits)), 3)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="checkpoint (default: the shipped model)")
    p.add_argument("--blobs", type=int, help="N held-out synthetic blob images")
    p.add_argument("--seed", type=int, default=1, help="blob images' seed")
    p.add_argument("--br35h", action="store_true", help="held-out Br35H tumours")
    p.add_argument("--limit", type=int, help="Br35H: N images, evenly spread")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--n-random", type=int, default=2)
    p.add_argument("--radius", type=float, default=10.0, help="pointing (px)")
    p.add_argument("--only", nargs="*", help="variant names to run")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args(argv)
    import torch

    from napari_medcnn.models.checkpoint import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = resolve_model(args.model)
    size = list(loaded.card.input_size)[-2:]
    if args.br35h:
        items = br35h_items(loaded, args.limit)
    else:
        items = blob_items(args.blobs or 40, args.seed, size[0])
    for name, (method, params) in variants(loaded, size).items():
        if args.only and name not in args.only:
            continue
        row = measure(
            loaded, items, method, params, steps=args.steps,
            n_random=args.n_random, radius=args.radius,
        )  # fmt: skip
        print(json.dumps({"variant": name, **row}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
