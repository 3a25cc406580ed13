"""The slice stage: a volume model's evidence encoder learns from single
lesion-mask slices before the volume stage (``training/slice_stage.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medcnn.training import slice_stage
from napari_medcnn.training.control import TrainControl
from napari_medcnn.training.slice_stage import slice_bank, train_slices
from napari_medcnn.training.trainer import TrainConfig


def _volumes(n: int, seed: int, shape=(8, 24, 24)):
    """(N, 1, S, H, W) noisy volumes in [0, 1]; odd ones hold a bright 4x4
    square over 2 slices, with its mask (the dense targets of a data set)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.4, 0.05, (n, 1, *shape)).astype(np.float32)
    dense, where = [], []
    for i in range(n):
        if i % 2 == 0:
            dense.append(0.0)
            where.append(None)
            continue
        z = int(rng.integers(1, shape[0] - 2))
        y, xx = (int(v) for v in rng.integers(3, shape[1] - 7, 2))
        m = np.zeros(shape, np.float32)
        m[z : z + 2, y : y + 4, xx : xx + 4] = 1.0
        x[i, 0][m > 0] += 0.35
        dense.append(m)
        where.append((z, y, xx))
    return np.clip(x, 0, 1), dense, where


def _run(gen):
    """(events, returned value) of a training generator run to its end."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def test_bank_takes_lesion_slices_and_a_pool_of_free_ones():
    x, dense, _ = _volumes(4, 0, shape=(30, 16, 16))
    dense[3] = np.nan  # a lesion volume without a drawn mask
    z = int(np.argmax(dense[1].max((1, 2))))  # the mask's first slice
    dense[1][z + 1] *= 0.3  # a trace of lesion (an edge slice after resampling)
    bank = slice_bank(x, dense, [0, 1, 2, 3], seed=0)
    assert set(bank.volume) == {0, 1, 2}  # the unknown volume takes no part
    assert bank.n_lesion == 2  # the two slices volume 1's mask touches
    assert bank.core.sum() == 1  # one of them only holds a trace
    pool = slice_stage.NEGATIVE_POOL_PER_VOLUME
    assert [int((~bank.lesion & (bank.volume == v)).sum()) for v in (0, 1, 2)] == [
        pool
    ] * 3
    assert float(bank.masks[~torch.from_numpy(bank.lesion)].abs().sum()) == 0.0
    # slices are the volume's own
    k = int(np.flatnonzero(bank.lesion)[0])
    assert any(np.array_equal(bank.x[k].numpy(), x[1][:, z]) for z in range(30))


def test_slice_stage_learns_where_lesions_are(monkeypatch):
    from napari_medcnn.models.registry import build_model

    monkeypatch.setattr(slice_stage, "MIN_SLICES_PER_EPOCH", 96)
    x, dense, _ = _volumes(24, 1)
    torch.manual_seed(0)
    model = build_model(
        "cnn_rnn",
        spatial_dims=3,
        encoder="lesion_fcn",
        encoder_kwargs={"widths": (8, 8, 8), "dilations": (1, 2, 1)},
        slice_features="evidence",
    )
    cfg = TrainConfig(slice_epochs=6, seed=0, device="cpu")
    events, note = _run(train_slices(model, x, dense, range(18), range(18, 24), cfg))
    kinds = {ev.kind for ev in events}
    rows = [ev.metrics for ev in events if ev.kind == "slice_epoch"]
    assert kinds == {"slice_batch", "slice_epoch"}
    assert len(rows) == 6 and rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert note["lesion_slices"] == 18 and 1 <= note["best_epoch"] <= 6
    assert note["val_slice_auc"] > 0.9
    # held-out volumes: the strongest evidence lies on the lesion
    hx, _, where = _volumes(6, 2)
    with torch.no_grad():
        for v, w in zip(hx, where):
            if w is None:
                continue
            ev = model.encoder.eval().evidence_map(
                torch.from_numpy(v).permute(1, 0, 2, 3)
            )
            z, y, xx = np.unravel_index(int(ev.argmax()), ev[:, 0].shape)
            assert w[0] <= z <= w[0] + 1 and w[1] - 1 <= y <= w[1] + 4
            assert w[2] - 1 <= xx <= w[2] + 4


def test_slice_stage_stops_on_cancel_and_without_lesions():
    from napari_medcnn.models.registry import build_model

    x, dense, _ = _volumes(6, 3)
    model = build_model(
        "slice_pool",
        spatial_dims=3,
        encoder="lesion_fcn",
        encoder_kwargs={"widths": (4, 4), "dilations": (1, 1)},
        slice_features="evidence",
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ctl = TrainControl()
    ctl.cancel()
    cfg = TrainConfig(slice_epochs=3, seed=0, device="cpu")
    gen = train_slices(model, x, dense, range(6), range(6), cfg, ctl)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value["cancelled"] and stop.value.value["best_epoch"] == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # no validation slices (the validation lesion volume has no mask): the
    # training loss picks the epoch
    unknown = [*dense[:5], np.nan]
    _events, note = _run(train_slices(model, x, unknown, range(5), [5], cfg))
    assert note["best_epoch"] >= 1 and note["val_loss"] is None
    # nothing to learn from: only clean volumes
    gen = train_slices(model, x, [0.0] * 6, range(6), range(6), cfg)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert "no lesion slice" in stop.value.value["skipped"]


@pytest.mark.parametrize("arch", ["cnn_rnn", "slice_pool"])
def test_frozen_encoder_head_trains_on_features_computed_once(arch):
    """After the slice stage the encoder stays frozen: each volume is
    encoded once and only the sequence head trains (the encoder's weights
    do not move), and the result is the whole network."""
    from napari_medcnn.models.registry import build_model
    from napari_medcnn.training.frozen_encoder import can_fit_head, fit_head

    x, dense, _ = _volumes(16, 4)
    y = np.array([i % 2 for i in range(16)])
    torch.manual_seed(0)
    model = build_model(
        arch,
        spatial_dims=3,
        encoder="lesion_fcn",
        encoder_kwargs={"widths": (8, 8, 8), "dilations": (1, 2, 1)},
        slice_features="evidence",
        **({"hidden_size": 8} if arch == "cnn_rnn" else {}),
    )
    cfg = TrainConfig(
        slice_epochs=10, epochs=30, freeze_backbone_epochs=30, batch_size=4,
        lr=1e-2, patience=0, seed=0, device="cpu",
    )  # fmt: skip
    assert can_fit_head(model, cfg)
    assert not can_fit_head(model, TrainConfig(epochs=15, freeze_backbone_epochs=2))
    slice_stage.MIN_SLICES_PER_EPOCH, old = 128, slice_stage.MIN_SLICES_PER_EPOCH
    try:
        for _ in train_slices(model, x, dense, range(12), range(12, 16), cfg):
            pass
    finally:
        slice_stage.MIN_SLICES_PER_EPOCH = old
    enc = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    events, res = _run(fit_head(model, x, y, range(12), range(12, 16), cfg))
    kinds = [ev.kind for ev in events]
    assert kinds.count("features") == 16 and kinds.count("epoch") == 30
    assert res.model is model and not model.training
    assert all(torch.equal(enc[k], v) for k, v in model.encoder.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    # the head learnt: held-out volumes are told apart by the whole network
    hx, _, _ = _volumes(8, 5)
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(hx)), 1)[:, 1].numpy()
    assert p[1::2].min() > p[0::2].max(), p.round(2)
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    if arch == "cnn_rnn":  # max-pooled slice logits move slower in 90 steps
        assert p[1::2].min() > 0.5 > p[0::2].max(), p.round(2)
    # cancelled while encoding: nothing trains
    ctl = TrainControl()
    ctl.cancel()
    gen = fit_head(model, x, y, range(12), range(12, 16), cfg, ctl)
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value.cancelled and stop.value.value.best_epoch == 0


def test_3d_patch_bank_holds_the_lesion():
    """A 3D evidence model's bank: one patch per chosen slice, the lesion
    patches holding their lesion (moved by at most a quarter patch), the
    lesion-free pool the volume's own voxels."""
    x, dense, where = _volumes(4, 6, shape=(20, 32, 32))
    bank = slice_bank(x, dense, [0, 1, 2, 3], seed=0, patch=(8, 16, 16))
    assert tuple(bank.x.shape[1:]) == (1, 8, 16, 16) == tuple(bank.masks.shape[1:])
    assert bank.n_lesion == 4  # two slices of each of the two lesions
    lesion = torch.from_numpy(bank.lesion)
    assert bool((bank.masks[lesion].flatten(1).amax(1) == 1.0).all())
    # image and mask are cut from the same place: the lesion is bright
    inside = bank.x[lesion][bank.masks[lesion] > 0].mean()
    assert float(inside) > float(bank.x[lesion][bank.masks[lesion] == 0].mean()) + 0.2
    pool = slice_stage.NEGATIVE_POOL_PER_VOLUME
    assert int((~bank.lesion).sum()) == 4 * pool  # a pool from each volume
    # a patch larger than the volume is the whole extent on that axis
    big = slice_bank(x, dense, [1], seed=0, patch=(64, 16, 64))
    assert tuple(big.x.shape[2:]) == (20, 16, 32)


def test_3d_evidence_resnet_learns_where_lesions_are_and_gradcam_shows_it():
    """The 3D ResNet's evidence variant: the patch stage teaches its voxel
    map from masks, the head then learns on frozen summaries; held-out
    volumes are told apart, and Grad-CAM (its automatic layer, as
    ``explain`` uses it) peaks inside the lesion."""
    from napari_medcnn.models.registry import build_model
    from napari_medcnn.saliency.cam import GradCAM
    from napari_medcnn.saliency.targets import ClassTarget
    from napari_medcnn.training.frozen_encoder import can_fit_head, fit_head

    x, dense, _ = _volumes(16, 7, shape=(12, 24, 24))
    y = np.array([i % 2 for i in range(16)])
    torch.manual_seed(0)
    model = build_model(
        "resnet", spatial_dims=3, evidence=True, block_inplanes=(8, 8, 16, 16)
    )
    model.encoder.patch = (8, 16, 16)  # small volumes: small patches
    cfg = TrainConfig(
        slice_epochs=6, epochs=30, freeze_backbone_epochs=30, batch_size=4,
        lr=1e-2, patience=0, seed=0, device="cpu",
    )  # fmt: skip
    assert can_fit_head(model, cfg)
    slice_stage.MIN_SLICES_PER_EPOCH, old = 96, slice_stage.MIN_SLICES_PER_EPOCH
    try:
        events, note = _run(
            train_slices(model, x, dense, range(12), range(12, 16), cfg)
        )
    finally:
        slice_stage.MIN_SLICES_PER_EPOCH = old
    assert note["best_epoch"] >= 1 and note["val_slice_auc"] > 0.9, note
    _, res = _run(fit_head(model, x, y, range(12), range(12, 16), cfg))
    assert res.model is model and not model.training
    hx, _, hwhere = _volumes(8, 8, shape=(12, 24, 24))
    with torch.no_grad():
        p = torch.softmax(model(torch.from_numpy(hx)), 1)[:, 1].numpy()
    assert p[1::2].min() > p[0::2].max(), p.round(2)
    hits = 0
    for i in range(1, 8, 2):
        cam = GradCAM(model).attribute(hx[i : i + 1], ClassTarget(1))[0].numpy()
        peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
        z, yy, xx = hwhere[i]
        inside = z <= peak[0] < z + 2 and yy <= peak[1] < yy + 4
        hits += inside and xx <= peak[2] < xx + 4
    assert hits >= 3, hits
