"""Volume models on semi-synthetic lesion volumes, through the CLI.

    .venv/bin/python scripts/volume_models_experiment.py --out /tmp/volexp \\
        [--n-train 40] [--n-test 20] [--shape 90 109 91] [--slices 32] \\
        [--epochs 20] [--archs cnn_rnn slice_pool resnet3d] [--masks]

Made with :mod:`napari_medcnn.io.lesions`: ``--n-train`` and ``--n-test``
volumes of the Colin27 head (``--shape`` voxels), half of each with one
synthetic lesion, the two sets from different seeds (other motion,
intensity and lesions).  For each architecture, as a user would:

1. ``napari-medcnn train --labels train/labels.csv --arch A --out M``
   (a CNN+RNN's slice encoder starts from the shipped 2D model);
2. ``napari-medcnn classify test/*.nii.gz --model M --scope volume --json``;
3. held-out accuracy, and for sequence models whether the argmax of the
   record's ``slice_importance`` (one value per slice of the scan) falls
   inside the lesion's slice range (``lesions.json``);
4. for 3D CNNs, ``napari-medcnn explain VOL --model M --method gradcam
   --out map.nii.gz`` on every held-out lesion volume: whether the map's
   maximum lies inside the lesion mask (widened by ``--tolerance-mm``).

Prints one JSON summary (and writes ``summary.json`` in ``--out``); the
README's table comes from it.  The data are synthetic: no model trained
here is meant for clinical use.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess:
    """``napari-medcnn ARGS`` in a fresh process (as a user runs it)."""
    cmd = [sys.executable, "-m", "napari_medcnn.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)


def make_data(
    out: Path, n_train: int, n_test: int, shape, seed: int = 0, lesion=None
) -> dict:
    from napari_medcnn.io.lesions import make_cohort

    sets = {}
    for name, n, s in (("train", n_train, seed + 1), ("test", n_test, seed + 2)):
        folder = out / name
        if not (folder / "labels.csv").exists():
            make_cohort(
                "colin27", folder, n, seed=s, shape=shape, write_masks=True,
                lesion=lesion,
            )  # fmt: skip
        sets[name] = folder
    return sets


def with_mask_column(labels: Path) -> Path:
    """``labels_mask.csv`` beside ``labels``: its rows plus a ``mask``
    column naming ``masks/<file>`` where the generator wrote one."""
    import csv

    out = labels.with_name("labels_mask.csv")
    with labels.open(newline="") as f:
        rows = list(csv.DictReader(f))
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0].keys(), "mask"])
        w.writeheader()
        for r in rows:
            m = labels.parent / "masks" / Path(r["path"]).name
            w.writerow({**r, "mask": f"masks/{m.name}" if m.is_file() else ""})
    return out


def lesion_table(folder: Path) -> dict[str, dict]:
    """File name -> its lesions.json entry (label, slice_range...)."""
    data = json.loads((folder / "lesions.json").read_text())
    items = data.get("volumes", data) if isinstance(data, dict) else data
    if isinstance(items, dict):
        return {Path(k).name: v for k, v in items.items()}
    return {Path(v["path"]).name: v for v in items}


def train(
    arch: str, labels: Path, model: Path, epochs: int, slices: int, extra=()
) -> dict:
    t = time.perf_counter()
    args = ["train", "--labels", str(labels), "--arch", arch, "--out", str(model)]
    args += ["--epochs", str(epochs), "--slices", str(slices), "--kfold", "0"]
    args += ["--overwrite", *extra]
    res = cli(*args)
    if res.returncode != 0:
        raise RuntimeError(f"train {arch} failed:\n{res.stderr[-3000:]}")
    summary = json.loads(res.stdout)
    summary["train_seconds"] = time.perf_counter() - t
    return summary


def classify(model: Path, files: list[Path], out: Path) -> list[dict]:
    res = cli(
        "classify", *map(str, files), "--model", str(model), "--scope", "volume",
        "--json", str(out), "--overwrite",
    )  # fmt: skip
    if res.returncode not in (0, 1):
        raise RuntimeError(f"classify failed:\n{res.stderr[-3000:]}")
    recs = json.loads(out.read_text())
    return recs if isinstance(recs, list) else [recs]


def cam_hit(model: Path, vol: Path, mask: Path, out: Path, tol_mm: float) -> bool:
    """Whether the 3D Grad-CAM maximum lies in the (widened) lesion mask."""
    import nibabel as nib
    from scipy import ndimage

    from napari_medcnn.io import load

    res = cli(
        "explain", str(vol), "--model", str(model), "--method", "gradcam",
        "--out", str(out), "--overwrite", "--no-metrics",
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"explain failed on {vol.name}:\n{res.stderr[-2000:]}")
    cam = load(out)[0].data
    m = load(mask)[0]
    lesion = np.asarray(m.data) > 0
    if tol_mm > 0:
        sp = np.asarray(m.spacing, float)
        dist = ndimage.distance_transform_edt(~lesion, sampling=sp)
        lesion = dist <= tol_mm
    del nib
    peak = np.unravel_index(np.nanargmax(cam), cam.shape)
    return bool(lesion[peak])


def evaluate(arch: str, model: Path, test: Path, work: Path, tol_mm: float) -> dict:
    table = lesion_table(test)
    files = sorted(test.glob("vol_*.nii.gz"))
    recs = classify(model, files, work / f"classify_{arch}.json")
    by_name = {Path(r["path"]).name: r for r in recs}
    correct, hits, n_lesion = 0, 0, 0
    for f in files:
        truth = table[f.name]
        rec = by_name[f.name]
        correct += rec.get("label") == truth["label"]
        imp = rec.get("slice_importance")
        if truth["label"] == "lesion" and imp is not None:
            n_lesion += 1
            a, b = truth["slice_range"]
            hits += a <= int(np.nanargmax(imp)) <= b
    out = {"accuracy": correct / len(files), "n_test": len(files)}
    if n_lesion:
        out["slice_importance_in_lesion"] = hits / n_lesion
    return out


def evaluate_cam(model: Path, test: Path, work: Path, tol_mm: float) -> dict:
    table = lesion_table(test)
    lesion_files = [
        f
        for f in sorted(test.glob("vol_*.nii.gz"))
        if table[f.name]["label"] == "lesion"
    ]
    hits = [
        cam_hit(
            model,
            f,
            test / "masks" / f.name,
            work / f"cam_{f.name}",
            tol_mm,
        )
        for f in lesion_files
    ]
    return {"gradcam_in_lesion": float(np.mean(hits)), "n_lesion": len(hits)}


def run(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lesion = {"diameter_mm": tuple(args.diameter), "contrast": tuple(args.contrast)}
    if args.rim:
        lesion["rim"] = args.rim
    sets = make_data(out, args.n_train, args.n_test, args.shape, args.seed, lesion)
    labels = sets["train"] / "labels.csv"
    if args.masks:  # the training lesions' masks teach an evidence map
        labels = with_mask_column(labels)
    results = {}
    for arch in args.archs:
        model = out / "models" / f"{arch}.safetensors"
        extra = ["--size", *map(str, args.size)] if args.size else []
        if arch in ("cnn_rnn", "slice_pool") and args.freeze_epochs:
            extra += ["--freeze-epochs", str(args.freeze_epochs)]
        if args.no_augment:
            extra += ["--no-augment"]
        extra += [
            "--batch-size",
            str(args.batch_size),
            "--patience",
            str(args.patience),
        ]
        summ = train(arch, labels, model, args.epochs, args.slices, extra)
        row = {
            "train_seconds": round(summ["train_seconds"], 1),
            "epochs_run": summ.get("epochs_run"),
            "validation": {k: summ.get(k) for k in ("accuracy", "auc")},
        }
        row.update(evaluate(arch, model, sets["test"], out, args.tolerance_mm))
        if arch in ("resnet3d", "densenet3d"):
            row.update(evaluate_cam(model, sets["test"], out, args.tolerance_mm))
        results[arch] = row
        print(json.dumps({arch: row}), flush=True)
    summary = {"args": {k: v for k, v in vars(args).items()}, "results": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument("--shape", type=int, nargs=3, default=[90, 109, 91])
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--size", type=int, nargs=2, help="in-plane pixels")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--freeze-epochs", type=int, default=0)
    ap.add_argument("--no-augment", action="store_true")
    ap.add_argument(
        "--masks",
        action="store_true",
        help="train with the lesion masks (cnn_rnn, slice_pool, resnet3d)",
    )
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--diameter", type=float, nargs=2, default=[4.0, 15.0], metavar="MM"
    )
    ap.add_argument("--contrast", type=float, nargs=2, default=[0.3, 0.6])
    ap.add_argument("--rim", type=float, default=0.0, help="probability")
    ap.add_argument("--tolerance-mm", type=float, default=0.0)
    ap.add_argument("--archs", nargs="+", default=["cnn_rnn", "slice_pool", "resnet3d"])
    return ap


if __name__ == "__main__":
    print(json.dumps(run(parser().parse_args()), indent=2, default=str))
