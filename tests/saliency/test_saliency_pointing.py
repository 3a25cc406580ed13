"""Pointing game on a model fine-tuned through the CLI (issue 12, part 4).

A user labels 240 synthetic 96 x 96 images (textured noise, half with one
faint Gaussian blob, sigma 4 px: :func:`napari_medcnn.io.synth.
write_blob_dataset`) in a ``path,label`` CSV and runs ``napari-medcnn train
--labels labels.csv``.  On held-out blob images of another seed, the
default explanation's maximum must lie within 10 px of the blob centre in
at least 90 % of them, and the map must resolve at least 16 x 16 cells.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medcnn._progress import drain
from napari_medcnn.cli import main
from napari_medcnn.inference.predict import classify
from napari_medcnn.io.synth import blob_grey, blob_images, write_blob_dataset
from napari_medcnn.models.checkpoint import default_model_path, resolve_model
from napari_medcnn.saliency import DEFAULT_METHOD, explain

pytestmark = pytest.mark.skipif(
    not default_model_path().exists(), reason="no default model (the parent)"
)


@pytest.fixture(scope="module")
def blob_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("blobs")
    csv, labels, _ = write_blob_dataset(tmp / "data", 240, seed=0)
    assert labels.sum() == 120
    out = tmp / "blob.safetensors"
    summary = tmp / "summary.json"
    rc = main(
        ["train", "--labels", str(csv), "--out", str(out), "--epochs", "12",
         "--json", str(summary)]
    )  # fmt: skip
    assert rc == 0 and out.exists()
    return resolve_model(out), json.loads(summary.read_text())


def test_the_fine_tuned_model_finds_the_blobs(blob_model):
    loaded, summary = blob_model
    assert loaded.card.classes == ["noise", "blob"]
    images, labels, _ = blob_images(40, seed=1)
    results = [drain(classify([blob_grey(im)], loaded)) for im in images]
    # the parent's brain-MR domain is not inherited: no image is refused
    assert loaded.card.domain == {} and all(r.in_domain for r in results)
    probs = [r.probabilities[1] for r in results]
    acc = np.mean((np.array(probs) > 0.5) == labels.astype(bool))
    assert acc >= 0.9, (acc, summary.get("metrics"))


def test_default_explanation_points_at_the_blob(blob_model):
    loaded, _ = blob_model
    images, labels, centres = blob_images(60, seed=1)
    hits, resolution = [], None
    for im, y, c in zip(images, labels, centres):
        if not y:
            continue
        res = drain(explain([blob_grey(im)], loaded, target="blob"))
        assert res.method == DEFAULT_METHOD
        resolution = res.params["map_resolution"]
        peak = np.unravel_index(np.argmax(res.map), res.map.shape)
        hits.append(np.hypot(*(np.array(peak) - c)) <= 10.0)
    assert min(resolution) >= 16
    assert len(hits) == 30
    assert np.mean(hits) >= 0.9, np.mean(hits)
