"""The shipped model on what users load (issue 12): inputs it never learned
are outside its domain, held-out Br35H images mostly are not, and a
healthy head is not called tumour on the slices the guard keeps.

Every input goes through the user's path: ``napari-medcnn classify`` (CLI)
or ``io.load`` + ``classify`` with the scan's metadata as context.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from napari_medcnn._progress import drain
from napari_medcnn.cli import main
from napari_medcnn.inference.predict import classify_scan
from napari_medcnn.io import load
from napari_medcnn.models.checkpoint import default_model_path, resolve_model

pytestmark = pytest.mark.skipif(
    not default_model_path().exists(), reason="no default model"
)
ROOT = Path(__file__).resolve().parents[2]
BET = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
OUTSIDE = ("CT_small.dcm", "US1_UNCR.dcm", "SC_rgb.dcm", "JPEG2000.dcm", "MR_small.dcm")


@pytest.fixture(scope="module")
def loaded():
    return resolve_model(None)


def _classify(path, loaded):
    return drain(classify_scan(load(path)[0], loaded))


def test_the_card_records_a_fitted_domain(loaded):
    domain = loaded.card.domain
    assert domain["modalities"] == ["MR"] and domain["color"] == "grey"
    assert domain["orientation"]["plane"] == "axial"
    assert domain["features"]["validation_flagged"] <= 0.05
    assert (
        loaded.extras["domain.reference"].shape[0] == domain["features"]["n_reference"]
    )


def test_cli_says_outside_the_domain_for_other_images(tmp_path, capsys):
    from skimage import data as skdata
    from skimage.io import imsave

    paths = [get_testdata_file(name, download=False) for name in OUTSIDE]
    assert all(paths), "pydicom test files missing"
    for name in ("camera", "moon", "brick"):
        png = tmp_path / f"{name}.png"
        imsave(png, getattr(skdata, name)(), check_contrast=False)
        paths.append(str(png))
    out_json = tmp_path / "out.json"
    assert main(["classify", *paths, "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    records = json.loads(out_json.read_text())
    assert len(records) == len(paths)
    for rec in records:
        assert rec["domain"]["in_domain"] is False, rec["path"]
        assert rec["domain"]["reasons"], rec["path"]
        assert rec["uncertainty"] is not None
    lines = [ln for ln in printed.splitlines() if "outside the model's domain:" in ln]
    assert len(lines) == len(paths)
    assert "modality CT, model trained on MR" in printed
    assert "colour image" in printed


def test_held_out_br35h_images_are_rarely_flagged(loaded):
    from napari_medcnn.training.data import br35h

    names = loaded.card.provenance["test_files"]
    root = br35h.br35h_root()
    flagged = [not _classify(root / n, loaded).in_domain for n in names]
    assert len(names) >= 300
    assert np.mean(flagged) <= 0.05


@pytest.mark.skipif(not BET.exists(), reason="mricron-data not installed")
def test_colin27_brain_slices_are_not_called_tumour(loaded):
    import nibabel as nib

    result = _classify(ROOT / "napari_medcnn" / "data" / "colin27_t1.nii.gz", loaded)
    # the shipped head and ch2bet share Colin27's grid; the reader's axis 0
    # runs inferior to superior, as nibabel's third axis does here
    bet = np.asarray(nib.load(BET).dataobj) > 0
    brain = bet.sum(axis=(0, 1)) >= 100  # >= 1 cm2 of brain in the slice
    keep = np.asarray(result.slice_in_domain, bool)
    tumour = np.asarray(result.slice_probabilities)[:, 1] > 0.5
    assert len(keep) == len(brain) == 181
    kb = keep & brain
    assert kb.sum() >= 0.6 * brain.sum()
    assert (tumour & kb).sum() <= 0.05 * kb.sum()
    assert result.label == "no_tumor"
