"""Inference: scopes, batching, calibration, multi-channel, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medcnn._progress import drain
from napari_medcnn.inference.predict import ClassificationResult, classify
from napari_medcnn.models import build_model
from napari_medcnn.models.card import CardError, ModelCard
from napari_medcnn.models.checkpoint import save_checkpoint
from napari_medcnn.preprocessing.record import prepare

RECORD = {"intensity": {"mode": "none"}, "foreground_crop": None, "size": [24, 24]}


def _blobs(n, rng, size=24, channels=1):
    """Class 1 images carry a bright square; class 0 are noise only."""
    x = rng.normal(0.2, 0.05, (n, channels, size, size)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in np.flatnonzero(y):
        r, c = rng.integers(2, size - 8, 2)
        x[i, :, r : r + 6, c : c + 6] = 1.0
    return x, y


def _train(model, x, y, steps=120):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 16, i * 16 + 16) % len(yt)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    kw = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "widths": (8, 16, 16)}
    model = _train(build_model("seed_cnn", **kw), *_blobs(256, rng))
    card = ModelCard(
        arch="seed_cnn",
        arch_kwargs=kw,
        classes=["empty", "blob"],
        spatial_dims=2,
        in_channels=1,
        input_size=[24, 24],
        preprocessing=RECORD,
        temperature=1.5,
        name="blobs",
    )
    return save_checkpoint(model, card, tmp_path_factory.mktemp("m") / "blobs")


def _image(blob: bool, rng, size=24):
    im = rng.normal(0.2, 0.05, (size, size)).astype(np.float32)
    if blob:
        im[8:14, 9:15] = 1.0
    return im


def test_slice_scope_classifies_and_is_calibrated(tiny_model):
    rng = np.random.default_rng(1)
    gen = classify([_image(True, rng)], tiny_model, device="cpu")
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    assert events[-1] == ("classify", 1, 1)
    assert isinstance(res, ClassificationResult)
    assert res.label == "blob" and res.probabilities[1] > 0.9
    assert abs(sum(res.probabilities) - 1) < 1e-5
    empty = drain(classify([_image(False, rng)], tiny_model, device="cpu"))
    assert empty.label == "empty"
    d = res.to_dict()
    assert d["model_name"] == "blobs" and len(d["model_id"]) == 16


def test_slices_scope_gives_per_slice_curve(tiny_model):
    rng = np.random.default_rng(2)
    flags = [False] * 5 + [True] * 4 + [False] * 3
    vol = np.stack([_image(f, rng) for f in flags])
    res = drain(classify([vol], tiny_model, scope="slices", batch_size=5, device="cpu"))
    assert res.slice_probabilities.shape == (12, 2)
    pred = res.slice_probabilities.argmax(1).astype(bool)
    assert (pred == np.array(flags)).mean() >= 0.9
    one = drain(classify([vol], tiny_model, scope="slice", slice_index=6, device="cpu"))
    assert one.label == "blob" and one.slice_index == 6
    # batched per-slice results equal one-at-a-time results
    assert np.allclose(one.probabilities, res.slice_probabilities[6], atol=1e-5)


def test_mismatched_input_is_refused_before_compute(tiny_model):
    rng = np.random.default_rng(3)
    im = _image(True, rng)
    with pytest.raises(CardError, match="takes 1 channel"):
        drain(classify([im, im], tiny_model, device="cpu"))
    with pytest.raises(ValueError, match="same shape"):
        drain(classify([im, im[:10]], tiny_model, device="cpu"))
    with pytest.raises(ValueError, match="slice_index"):
        drain(classify([np.stack([im, im])], tiny_model, device="cpu"))
    with pytest.raises(ValueError, match="outside"):
        drain(classify([np.stack([im, im])], tiny_model, slice_index=5, device="cpu"))


def test_constant_image_warns_instead_of_crashing(tiny_model):
    res = drain(classify([np.zeros((24, 24), np.float32)], tiny_model, device="cpu"))
    assert res.warnings and "constant" in res.warnings[0]


def test_multichannel_volume_model_with_slice_curve(tmp_path):
    torch.manual_seed(0)
    kw = {
        "in_channels": 2,
        "num_classes": 3,
        "encoder_kwargs": {"widths": (4, 8, 8), "pooled_size": 2},
        "hidden_size": 8,
    }
    model = build_model("cnn_rnn", **kw).eval()
    card = ModelCard(
        arch="cnn_rnn",
        arch_kwargs=kw,
        classes=["a", "b", "c"],
        spatial_dims=3,
        in_channels=2,
        channel_names=["T1", "T2"],
        input_size=[16, 16],
        input_kind="sequence",
        preprocessing={
            "intensity": {"mode": "percentile", "low": 1, "high": 99},
            "size": [16, 16],
        },
    )
    path = save_checkpoint(model, card, tmp_path / "seq")
    rng = np.random.default_rng(0)
    t1, t2 = rng.random((7, 30, 20)), rng.random((7, 30, 20))
    res = drain(
        classify([t1, t2], path, scope="volume", spacing=(3, 1, 1.5), device="cpu")
    )
    assert len(res.probabilities) == 3
    assert res.slice_probabilities.shape == (7, 3)
    with pytest.raises(CardError, match="whole volumes"):
        drain(classify([t1[0], t2[0]], path, scope="volume", device="cpu"))


def test_prepare_is_the_same_for_rgb_and_gray_and_crops_square_in_mm():
    rec = {
        "color": "luminance",
        "intensity": {"mode": "percentile", "low": 0, "high": 100},
        "foreground_crop": {"threshold": 0.5, "margin": 0.0},
        "size": [20, 20],
    }
    im = np.zeros((40, 80), np.float32)
    im[10:30, 20:40] = 1.0  # 20 rows x 20 cols, but columns are 0.5 mm
    rgb = np.repeat(im[..., None], 3, axis=-1) * 255
    a = prepare([im], rec, spacing=(1.0, 0.5))
    b = prepare([rgb], rec, spacing=(1.0, 0.5))
    assert a.shape == (1, 20, 20)
    assert np.allclose(a, b, atol=1e-5)
    # the square-in-mm box is 20 mm: 20 rows, 40 columns; the object fills
    # the full height and half the width
    col_profile = a[0].mean(0)
    assert col_profile[:4].max() < 0.2 and col_profile[8:12].min() > 0.8


def test_volume_scope_refuses_slice_models(tiny_model):
    vol = np.zeros((4, 24, 24), np.float32)
    with pytest.raises(CardError, match="2D slices"):
        drain(classify([vol], tiny_model, scope="volume", device="cpu"))
