"""Model zoo: shapes for 2D/3D/multi-channel/sequence input, and learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medcnn.models import available_models, build_model

torch.set_num_threads(2)


@pytest.mark.parametrize(
    ("name", "kwargs", "shape", "n_out"),
    [
        (
            "seed_cnn",
            {"spatial_dims": 2, "in_channels": 1, "num_classes": 2},
            (3, 1, 48, 40),
            2,
        ),
        (
            "seed_cnn",
            {"spatial_dims": 2, "in_channels": 3, "num_classes": 4},
            (3, 3, 32, 32),
            4,
        ),
        (
            "seed_cnn",
            {"spatial_dims": 3, "in_channels": 2, "num_classes": 3},
            (2, 2, 16, 24, 24),
            3,
        ),
        (
            "resnet",
            {"spatial_dims": 2, "in_channels": 1, "num_classes": 2},
            (2, 1, 64, 64),
            2,
        ),
        (
            "resnet",
            {"spatial_dims": 3, "in_channels": 2, "num_classes": 5},
            (2, 2, 16, 32, 32),
            5,
        ),
        (
            "densenet",
            {"spatial_dims": 2, "in_channels": 2, "num_classes": 3},
            (2, 2, 64, 64),
            3,
        ),
        (
            "densenet",
            {"spatial_dims": 3, "in_channels": 1, "num_classes": 2},
            (2, 1, 16, 32, 32),
            2,
        ),
        ("cnn_rnn", {"in_channels": 2, "num_classes": 3}, (2, 2, 7, 32, 32), 3),
        ("slice_pool", {"in_channels": 1, "num_classes": 2}, (2, 1, 5, 32, 32), 2),
    ],
)
def test_output_shapes_and_a_few_training_steps(name, kwargs, shape, n_out):
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    x = torch.randn(*shape)
    y = torch.arange(shape[0]) % n_out
    assert model(x).shape == (shape[0], n_out)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def loss_now():
        torch.manual_seed(1)  # same dropout masks for the before/after losses
        return torch.nn.functional.cross_entropy(model(x), y)

    with torch.no_grad():
        first = loss_now().item()
    for _ in range(10):
        opt.zero_grad()
        loss_now().backward()
        opt.step()
    with torch.no_grad():
        final = loss_now().item()
    # a few steps on a fixed batch must reduce the loss (the model learns)
    assert final < first


def test_registry_lists_models_and_rejects_unknown():
    assert {"seed_cnn", "resnet", "densenet", "cnn_rnn", "slice_pool"} <= set(
        available_models()
    )
    with pytest.raises(KeyError, match="available"):
        build_model("nope")
    with pytest.raises(ValueError, match="volumes"):
        build_model("cnn_rnn", spatial_dims=2)


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("pooling", ["attention", "last"])
def test_cnn_rnn_variable_slice_counts(rnn, pooling):
    torch.manual_seed(0)
    model = build_model("cnn_rnn", rnn=rnn, pooling=pooling, num_classes=3).eval()
    lengths = torch.tensor([9, 4, 6])
    x = torch.randn(3, 1, 9, 32, 32)
    out = model.forward_with_slices(x, lengths)
    assert out.logits.shape == (3, 3)
    assert out.slice_logits.shape == (3, 9, 3)
    if pooling == "attention":
        assert torch.allclose(out.attention.sum(1), torch.ones(3))
        assert torch.all(out.attention[1, 4:] == 0)
    # padding must not change the result of a shorter volume
    with torch.no_grad():
        alone = model(x[1:2, :, :4], torch.tensor([4]))
        padded = model(x[1:2], torch.tensor([4]))
    assert torch.allclose(alone, padded, atol=1e-5)


def test_cnn_rnn_encoder_starts_from_2d_model():
    torch.manual_seed(0)
    m2d = build_model("seed_cnn", spatial_dims=2, in_channels=1, num_classes=2)
    seq = build_model("cnn_rnn", num_classes=2)
    copied = seq.load_encoder_from(m2d)
    assert "features.0.weight" in copied
    assert torch.equal(seq.encoder.net.features[0].weight, m2d.features[0].weight)


def _moving_blob_volumes(n: int, rng: np.random.Generator, s: int = 8, size: int = 16):
    """Class 1: a blob moves down through the slices; class 0: up.

    Both classes visit the same set of rows, so a bag of slices holds the
    same content for either class: only the order tells them apart.
    """
    x = np.zeros((n, 1, s, size, size), np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        start = rng.integers(0, size - s - 1)
        col = rng.integers(2, size - 4)
        rows = start + np.arange(s)
        if y[i] == 0:
            rows = rows[::-1]
        for k, r in enumerate(rows):
            x[i, 0, k, r : r + 2, col : col + 3] = 1.0
        x[i] += rng.normal(0, 0.05, x[i].shape).astype(np.float32)
    return x, y


def _train(model, x, y, epochs, lr=3e-3, bs=32, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(yt))
        for i in range(0, len(yt), bs):
            idx = perm[i : i + bs]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@pytest.mark.slow
def test_cnn_rnn_learns_slice_order_where_bag_of_slices_cannot():
    rng = np.random.default_rng(0)
    xtr, ytr = _moving_blob_volumes(320, rng)
    xte, yte = _moving_blob_volumes(200, rng)
    enc = {"widths": (8, 16, 16), "pooled_size": 2, "dropout": 0.0}
    torch.manual_seed(0)
    rnn = build_model("cnn_rnn", num_classes=2, encoder_kwargs=enc, hidden_size=32)
    torch.manual_seed(0)
    bag = build_model("slice_pool", num_classes=2, encoder_kwargs=enc, pooling="max")
    acc_rnn = _accuracy(_train(rnn, xtr, ytr, epochs=12), xte, yte)
    acc_bag = _accuracy(_train(bag, xtr, ytr, epochs=12), xte, yte)
    assert acc_rnn >= 0.9, acc_rnn
    assert 0.35 <= acc_bag <= 0.65, acc_bag
