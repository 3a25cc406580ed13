"""Active learning: uncertain (near-boundary) examples come before confident
ones, by entropy and by MC-dropout mutual information."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from napari_medcnn._progress import drain
from napari_medcnn.training.labels.active import (
    Candidate,
    entropy,
    has_dropout,
    mutual_information,
    rank_candidates,
    rank_uncertainty,
)


def boundary_model(dropout: float = 0.0) -> nn.Module:
    """Logit difference = k * (mean intensity - 0.5): the decision boundary
    is at mean 0.5; hidden units (random positive gains) carry the signal
    through dropout."""
    torch.manual_seed(0)
    hidden = 32
    net = nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, 2),
    )
    gains = torch.rand(hidden // 2) + 0.5
    with torch.no_grad():
        w1 = torch.zeros(hidden, 64)
        w1[: hidden // 2] = gains[:, None] / 64  # relu(+(m - 0.5))
        w1[hidden // 2 :] = -gains[:, None] / 64  # relu(-(m - 0.5))
        net[1].weight.copy_(w1)
        net[1].bias.copy_(torch.cat([-0.5 * gains, 0.5 * gains]))
        w2 = torch.zeros(2, hidden)
        w2[1, : hidden // 2] = 2.0
        w2[1, hidden // 2 :] = -2.0
        net[4].weight.copy_(w2)
        net[4].bias.zero_()
    return net.eval()


def images(means):
    rng = np.random.default_rng(0)
    x = np.array(means, np.float32)[:, None, None, None] + rng.normal(
        0, 0.005, (len(means), 1, 8, 8)
    ).astype(np.float32)
    return x


# near the boundary (0.5) first, then the confident ones
NEAR = [0.47, 0.53, 0.45, 0.56]
FAR = [0.05, 0.95, 0.1, 0.9, 0.15, 0.85]


def test_entropy_ranks_near_boundary_first():
    order = np.random.default_rng(1).permutation(len(NEAR) + len(FAR))
    means = np.array(NEAR + FAR)[order]
    r = drain(rank_uncertainty(boundary_model(), images(means), method="auto"))
    assert r.method == "entropy"
    top = means[r.order[: len(NEAR)]]
    assert set(np.round(top, 2)) == set(NEAR)
    assert r.scores[r.order[0]] > r.scores[r.order[-1]]
    assert r.probs.shape == (len(means), 2)


def test_mc_dropout_mutual_information_ranks_near_boundary_first():
    model = boundary_model(dropout=0.5)
    assert has_dropout(model) and not has_dropout(boundary_model())
    means = np.array(NEAR + FAR)
    r = drain(rank_uncertainty(model, images(means), mc_samples=30))
    assert r.method == "mutual_information"
    assert set(r.order[: len(NEAR)]) == set(range(len(NEAR)))
    assert not model.training and not model[3].training  # dropout off again
    with pytest.raises(ValueError, match="needs a model with dropout"):
        drain(
            rank_uncertainty(
                boundary_model(), images(means), method="mutual_information"
            )
        )


def test_scores():
    assert np.allclose(entropy(np.array([[0.5, 0.5], [1.0, 0.0]])), [np.log(2), 0])
    agree = np.tile([[0.9, 0.1]], (5, 1, 1))
    disagree = np.array([[[0.99, 0.01]], [[0.01, 0.99]]] * 3)
    assert mutual_information(agree)[0] == pytest.approx(0, abs=1e-9)
    assert mutual_information(disagree)[0] > 0.5


def test_next_case_skips_labelled_slices(tmp_path):
    from napari_medcnn.models import build_model
    from napari_medcnn.models.card import ModelCard
    from napari_medcnn.models.checkpoint import save_checkpoint
    from napari_medcnn.training.labels.store import LabelStore

    kwargs = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2,
              "widths": [4, 4, 4], "pooled_size": 1, "dropout": 0.3}  # fmt: skip
    card = ModelCard(
        arch="seed_cnn",
        arch_kwargs=kwargs,
        classes=["a", "b"],
        spatial_dims=2,
        in_channels=1,
        input_size=[16, 16],
        preprocessing={"version": 1, "intensity": {"mode": "none"}, "size": [16, 16]},
    )
    path = save_checkpoint(build_model("seed_cnn", **kwargs), card, tmp_path / "m")
    vol = np.random.default_rng(0).random((6, 16, 16)).astype(np.float32)
    store = LabelStore.open(None, data=vol, n_slices=6, classes=["a", "b"])
    store.label_slices(0, 3, "a")
    scans = [
        {"images": [vol], "store": store},
        {"images": [vol[0]], "spacing": (1.0, 1.0)},  # an unlabelled 2D image
    ]
    r = drain(rank_candidates(scans, path, mc_samples=4))
    assert sorted(r.candidates, key=str) == sorted(
        [Candidate(0, 4), Candidate(0, 5), Candidate(1, None)], key=str
    )
    assert r.best(1)[0] in r.candidates and len(r.scores) == 3
    store.label_slices(4, 5, "b")
    store.label_image = None
    with pytest.raises(ValueError, match="nothing to rank"):
        drain(rank_candidates(scans[:1], path))
