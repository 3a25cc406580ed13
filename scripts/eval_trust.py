"""How far can a model's answers be trusted?  The figures of issue 12.

    .venv/bin/python scripts/eval_trust.py [--model CKPT] [--json OUT]

Every input goes through the user's path: ``napari_medcnn.io.load`` (as
napari and ``napari-medcnn classify`` read it), then
:func:`napari_medcnn.inference.predict.classify` with the scan's metadata as the
domain guard's context.  Prints one JSON object:

* ``table``: the pydicom / pydicom-data files of the issue (CT, ultrasound,
  colour test pattern, nuclear medicine, a 64x64 MR crop) and grey
  photographs (scikit-image's camera, moon and brick, saved as PNG): each
  file's label, P(label), ``in_domain`` and reasons.  All should be out.
* ``br35h_test``: the card's held-out test images: accuracy, the share the
  guard flags (<= 5 % wanted), accuracy on the in-domain ones, and how well
  the uncertainty ranks the errors (AUROC: errors should be the uncertain
  ones).
* ``heads``: healthy head volumes in MNI space (Colin27, shipped, and any
  ``--head`` NIfTI the model never saw, e.g. the ICBM 2009a T1 that
  nilearn's wheel carries as
  ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``),
  axial slices that show brain (brain area >= ``--min-brain-mm2`` on
  Colin27's brain mask ``ch2bet`` from Debian's ``mricron-data``, taken at
  the same MNI height): coverage (share kept in the domain, >= 60 %
  wanted) and the share of in-domain slices called tumour (<= 5 % wanted).
  (mricron-data's jhu189 and natbrainlab are label atlases, not heads.)
* ``calibration``: ECE before and after the card's temperature, from the
  card's test metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = Path("/usr/share/mricron/templates")
#: (file name in pydicom's test data, what it is)
TABLE = (
    ("CT_small.dcm", "CT slice"),
    ("US1_UNCR.dcm", "ultrasound"),
    ("SC_rgb.dcm", "colour test pattern"),
    ("JPEG2000.dcm", "nuclear medicine"),
    ("MR_small.dcm", "64x64 MR crop"),
)
PHOTOS = ("camera", "moon", "brick")


def _classify(scan, loaded, scope: str = "slice") -> Any:
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.predict import classify_scan

    return drain(classify_scan(scan, loaded, scope))


def _row(name: str, what: str, result) -> dict[str, Any]:
    d = result.domain or {}
    return {
        "file": name,
        "what": what,
        "label": result.label,
        "p": round(float(result.probabilities[result.index]), 4),
        "in_domain": bool(d.get("in_domain", True)),
        "reasons": list(d.get("reasons") or []),
        "uncertainty": None
        if result.uncertainty is None
        else round(float(result.uncertainty), 4),
    }


def table(loaded) -> list[dict[str, Any]]:
    """The issue's table and the grey photographs."""
    from pydicom.data import get_testdata_file
    from skimage import data as skdata
    from skimage.io import imsave

    from napari_medcnn.io import load

    rows = []
    for name, what in TABLE:
        path = get_testdata_file(name, download=False)
        if path is None:
            rows.append({"file": name, "what": what, "error": "not installed"})
            continue
        rows.append(_row(name, what, _classify(load(path)[0], loaded)))
    with tempfile.TemporaryDirectory() as tmp:
        for name in PHOTOS:
            img = getattr(skdata, name)()
            path = Path(tmp) / f"{name}.png"
            imsave(path, img, check_contrast=False)
            rows.append(
                _row(path.name, "grey photograph", _classify(load(path)[0], loaded))
            )
    return rows


def br35h_test(loaded) -> dict[str, Any]:
    """The card's held-out test images through the user's path."""
    from napari_medcnn.io import load
    from napari_medcnn.training.data import br35h
    from napari_medcnn.training.metrics import roc_auc

    card = loaded.card
    names = (card.provenance or {}).get("test_files") or []
    truth = dict(br35h.list_br35h())
    root = br35h.br35h_root()
    classes = list(card.classes)
    correct, flagged, unc = [], [], []
    for name in names:
        result = _classify(load(root / name)[0], loaded)
        correct.append(result.label == classes[truth[name]])
        flagged.append(not result.in_domain)
        unc.append(result.uncertainty)
    correct, flagged = np.array(correct), np.array(flagged)
    unc = np.array(unc, float)
    return {
        "n": len(names),
        "accuracy": round(float(correct.mean()), 4),
        "flagged": round(float(flagged.mean()), 4),
        "accuracy_in_domain": round(float(correct[~flagged].mean()), 4),
        "accuracy_flagged": None
        if not flagged.any()
        else round(float(correct[flagged].mean()), 4),
        "uncertainty_error_auroc": None
        if correct.all() or not correct.any()
        else round(roc_auc(unc, ~correct), 4),
        "mean_uncertainty_correct": round(float(unc[correct].mean()), 4),
        "mean_uncertainty_wrong": None
        if correct.all()
        else round(float(unc[~correct].mean()), 4),
    }


def brain_slices_mni(z_world: np.ndarray, min_mm2: float) -> np.ndarray:
    """Which MNI heights (mm) show brain: Colin27's brain mask (ch2bet) has
    at least ``min_mm2`` of brain in the axial slice nearest each."""
    import nibabel as nib

    bet = nib.load(TEMPLATES / "ch2bet.nii.gz")
    mask = np.asarray(bet.dataobj) > 0
    area = mask.sum(axis=(0, 1)) * float(np.prod(bet.header.get_zooms()[:2]))
    z0, dz = float(bet.affine[2, 3]), float(bet.affine[2, 2])
    k = np.clip(np.round((np.asarray(z_world) - z0) / dz).astype(int), 0, len(area) - 1)
    inside = (np.asarray(z_world) >= z0) & (np.asarray(z_world) <= z0 + dz * len(area))
    return (area[k] >= min_mm2) & inside


def head(path: Path, loaded, min_mm2: float) -> dict[str, Any]:
    """A healthy head: coverage and tumour calls on its brain slices."""
    from napari_medcnn.io import load

    scan = load(path)[0]
    result = _classify(scan, loaded, "slices")
    n = len(result.slice_probabilities)
    # MNI height (mm) of each slice: the reader's axis 0 runs inferior to
    # superior, from the lowest voxel plane of the original affine
    ras = np.asarray(scan.metadata["affine_ras_original"], float)
    corners = np.array(
        np.meshgrid(*[[0, s - 1] for s in scan.metadata["original_shape"][:3]])
    )
    low = (ras[:3, :3] @ corners.reshape(3, -1) + ras[:3, 3:])[2].min()
    brain = brain_slices_mni(low + scan.spacing[0] * np.arange(n), min_mm2)
    tumour = np.asarray(result.slice_probabilities)[:, 1] > 0.5
    keep = (
        np.asarray(result.slice_in_domain, bool)
        if result.slice_in_domain is not None
        else np.ones(n, bool)
    )
    kb = keep & brain
    return {
        "file": path.name,
        "slices": n,
        "brain_slices": int(brain.sum()),
        "coverage": round(float(kb.sum() / max(1, brain.sum())), 4),
        "tumour_in_domain": round(float((tumour & kb).sum() / max(1, kb.sum())), 4),
        "tumour_all_brain": round(
            float((tumour & brain).sum() / max(1, brain.sum())), 4
        ),
        "max_p_in_domain": round(
            float(np.asarray(result.slice_probabilities)[kb, 1].max(initial=0)), 4
        ),
        "volume_label": result.label,
        "volume_in_domain": result.in_domain,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint (default: the shipped model)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--min-brain-mm2", type=float, default=100.0)
    ap.add_argument("--head", nargs="*", default=(), help="other MNI-space heads")
    ap.add_argument(
        "--skip", nargs="*", default=(), choices=("table", "br35h", "heads")
    )
    args = ap.parse_args(argv)

    from napari_medcnn.models.checkpoint import resolve_model

    loaded = resolve_model(args.model)
    out: dict[str, Any] = {"model_id": loaded.card.model_id}
    if "table" not in args.skip:
        out["table"] = table(loaded)
        out["table_all_flagged"] = all(
            not r.get("in_domain", True) for r in out["table"]
        )
    if "br35h" not in args.skip:
        out["br35h_test"] = br35h_test(loaded)
    if "heads" not in args.skip:
        heads = [ROOT / "napari_medcnn" / "data" / "colin27_t1.nii.gz"]
        heads += [Path(p) for p in args.head]
        out["heads"] = [
            head(p, loaded, args.min_brain_mm2) for p in heads if p.exists()
        ]
    metrics = loaded.card.metrics or {}
    out["calibration"] = {
        "test_ece_before_temperature": metrics.get("test_ece_before_temperature"),
        "test_ece_after_temperature": (metrics.get("test") or {}).get("ece"),
        "temperature": loaded.card.temperature,
    }
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
