"""Combine trained checkpoints into one ensemble checkpoint.

    .venv/bin/python scripts/make_ensemble.py A.safetensors B.safetensors \\
        --out ensemble [--cache fov96.npz] [--tta auto|flip|none]

The members must share their classes, input (dims, channels, size, kind),
preprocessing record and, for ``train_default_model`` checkpoints, their
train/validation/test file lists (so the ensemble's held-out figures are
still held out).  The ensemble (:mod:`napari_medcnn.models.ensemble`)
averages the members' calibrated logits; then
``scripts/finalize_default_model.py`` is run on it: test-time augmentation
chosen on the validation files, temperature fitted, held-out metrics and
the domain guard refitted on the concatenated features.  Its card records
the members' model ids and cards' names as ``provenance.ensemble``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("members", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--cache", type=Path, help="prepared Br35H images (.npz)")
    ap.add_argument("--tta", choices=("auto", "flip", "none"), default="auto")
    ap.add_argument(
        "--name", help="the card's name (default: the first's + 'ensemble')"
    )
    args = ap.parse_args(argv)
    if len(args.members) < 2:
        ap.error("give at least two checkpoints")

    from napari_medcnn.models.card import ModelCard
    from napari_medcnn.models.checkpoint import load_checkpoint, save_checkpoint
    from napari_medcnn.models.ensemble import combine

    loaded = [load_checkpoint(p, "cpu") for p in args.members]
    cards = [x.card for x in loaded]
    first = cards[0]
    same = ("classes", "input_size", "input_kind", "in_channels", "spatial_dims")
    for path, card in zip(args.members[1:], cards[1:]):
        for key in (*same, "preprocessing"):
            if getattr(card, key) != getattr(first, key):
                sys.exit(f"{path}: {key} differs from {args.members[0]}")
        for key in ("train_files", "validation_files", "test_files"):
            if card.provenance.get(key) != first.provenance.get(key):
                sys.exit(f"{path}: provenance {key} differs: the split must match")
    probe = torch.randn(2, first.in_channels, *first.input_size)
    ensemble, arch_kwargs = combine(
        [x.model.eval() for x in loaded],
        [{"arch": c.arch, "arch_kwargs": c.arch_kwargs} for c in cards],
        [c.temperature for c in cards],
        probe,
    )
    card = ModelCard(
        arch="ensemble",
        arch_kwargs=arch_kwargs,
        classes=list(first.classes),
        spatial_dims=first.spatial_dims,
        in_channels=first.in_channels,
        channel_names=list(first.channel_names),
        input_size=list(first.input_size),
        input_kind=first.input_kind,
        preprocessing=first.preprocessing,
        temperature=1.0,
        domain=dict(first.domain),
        name=args.name or f"{first.name}: ensemble of {len(cards)}",
        description=first.description,
        provenance={
            **{k: v for k, v in first.provenance.items() if k != "history"},
            "ensemble": [
                {
                    "model_id": c.model_id,
                    "name": c.name,
                    "temperature": c.temperature,
                    "command": c.provenance.get("command"),
                    "test_accuracy": (c.metrics.get("test") or {}).get("accuracy"),
                }
                for c in cards
            ],  # fmt: skip
            "script": "scripts/make_ensemble.py",
            "command": " ".join(["scripts/make_ensemble.py", *(argv or sys.argv[1:])]),
            "note": "train/validation/test lists, split rule and healthy "
            "slices above are the first member's; every member was trained "
            "on the same lists (checked)",
        },
        metrics={},
    )
    raw = args.out.with_name(args.out.name + "_raw")
    save_checkpoint(ensemble, card, raw)
    import finalize_default_model

    rc = finalize_default_model.main(
        [str(raw.with_suffix(".safetensors")), "--out", str(args.out),
         "--tta", args.tta, "--refit-domain",
         *(["--cache", str(args.cache)] if args.cache else [])]
    )  # fmt: skip
    for suffix in (".safetensors", ".json"):
        raw.with_suffix(suffix).unlink(missing_ok=True)
    print(json.dumps({"members": [c.model_id for c in cards], "out": str(args.out)}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
