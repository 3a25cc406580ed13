"""Fast inference: batched preprocessing, the fused model copy, the CPU
worker pipeline.  Every optimisation must give the plain path's results."""

from __future__ import annotations

import copy
import gc
import weakref

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import ndimage

from napari_medcnn._progress import drain
from napari_medcnn.inference import fast as inference_fast
from napari_medcnn.inference.fast import optimized_model
from napari_medcnn.inference.predict import classify
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import (
    LoadedModel,
    load_checkpoint,
    save_checkpoint,
)
from napari_medcnn.models.fuse import fuse_for_inference
from napari_medcnn.preprocessing.batch import (
    _open_cross,
    largest_object_bboxes,
    prepare_slices,
)
from napari_medcnn.preprocessing.record import (
    crop_pad,
    default_record,
    foreground_box,
    main_object,
    normalize,
    prepare,
    resize,
)

SPACING = (2.0, 0.8, 0.5)  # mm; anisotropic in-plane, so crops are not square


def _head_volume(n=12, h=48, w=40, seed=0):
    """Ellipses of varying size and position, plus awkward slices."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    vol = rng.normal(5, 2, (n, h, w)).astype(np.float32)
    for k in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
        ry, rx = rng.uniform(0.15, 0.45) * h, rng.uniform(0.15, 0.45) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        vol[k][inside] += rng.uniform(50, 200)
    vol[1] = 0.0  # constant
    vol[2] = (rng.random((h, w)) > 0.97) * 100.0  # specks: the opening removes all
    vol[3, 2:4, :] = 500.0  # a thin ruler beside the anatomy
    vol[4, :10, :10] += 300.0  # two objects of different size
    return vol


def _randomise_bn(model: nn.Module, seed=0) -> nn.Module:
    """Non-trivial eval statistics, so that folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def seed_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    kw = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "widths": (8, 16, 16)}
    with torch.no_grad():
        model = _randomise_bn(build_model("seed_cnn", **kw))
    card = ModelCard(
        arch="seed_cnn",
        arch_kwargs=kw,
        classes=["a", "b"],
        spatial_dims=2,
        in_channels=1,
        input_size=[32, 32],
        preprocessing=default_record((32, 32)),
    )
    return save_checkpoint(model, card, tmp_path_factory.mktemp("fast") / "seed")


# --- batched preprocessing ---------------------------------------------------


def test_open_cross_is_ndimage_binary_opening():
    rng = np.random.default_rng(0)
    for iterations in (1, 2, 3):
        for p in (0.5, 0.8, 0.95):
            mask = rng.random((3, 23, 17)) < p
            ref = np.stack(
                [ndimage.binary_opening(m, iterations=iterations) for m in mask]
            )
            assert np.array_equal(_open_cross(mask, iterations), ref)


def test_largest_object_bboxes_match_main_object_per_slice():
    mask = np.zeros((5, 20, 20), bool)
    mask[0, 2:8, 2:8] = mask[0, 10:16, 10:16] = True  # a tie: first in raster order
    mask[1, 1:4, 1:19] = mask[1, 8:18, 5:9] = True
    mask[3, 5, 5] = True  # removed by the opening: main_object keeps the mask
    mask[4, 3:12, 4:15] = True
    boxes = largest_object_bboxes(mask)
    for k, m in enumerate(mask):
        ys, xs = np.nonzero(main_object(m))
        want = (
            [-1] * 4
            if ys.size == 0
            else [ys.min(), ys.max() + 1, xs.min(), xs.max() + 1]
        )
        assert boxes[k].tolist() == want, k


@pytest.mark.parametrize(
    "record",
    [
        default_record((24, 24)),
        {"intensity": {"mode": "window", "center": 60, "width": 120}, "size": [20, 16]},
        {"intensity": {"mode": "none"}, "foreground_crop": None, "size": [16, 16]},
    ],
)
def test_prepare_slices_equals_per_slice_prepare(record):
    vol = _head_volume()
    ref = np.stack([prepare([s, 2 * s + 1], record, SPACING[1:]) for s in vol])
    got = prepare_slices([vol, 2 * vol + 1], record, SPACING[1:])
    assert got.shape == ref.shape == (len(vol), 2, *record["size"])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_prepare_slices_rgb_and_non_finite_slices():
    vol = _head_volume(n=5)
    vol[0, 3, 3] = np.nan
    rgb = np.repeat(vol[..., None], 3, axis=-1)
    rec = default_record((24, 24))
    ref = np.stack([prepare([s], rec, SPACING[1:]) for s in rgb])
    got = prepare_slices([rgb], rec, SPACING[1:], rgb=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def _prepare_reference(channels, record, spacing):
    """prepare() of a stack as first written: float64 per-slice stack."""
    normed = [
        np.stack([normalize(s, record["intensity"]) for s in c]) for c in channels
    ]
    x = np.stack(normed)
    crop = record["foreground_crop"]
    mask = (x[0] > crop["threshold"]).any(axis=0)
    x = crop_pad(x, foreground_box(main_object(mask), spacing, crop["margin"]))
    return resize(x, record["size"][-2:])


def test_prepare_volume_unchanged_by_chunked_normalisation():
    vol = _head_volume(n=40)
    rec = default_record((24, 24))
    ref = _prepare_reference([vol, vol * 0.5], rec, SPACING[1:])
    got = prepare([vol, vol * 0.5], rec, SPACING[1:])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("axis", [None, (1, 2)])
def test_zscore_of_finite_images_matches_the_general_path(axis):
    """Finite input takes the short path; a NaN elsewhere in the batch sends
    the same slices through the general one: the values must be identical,
    constant slices included (0 everywhere)."""
    from napari_medcnn.preprocessing.record import normalize_slices

    rng = np.random.default_rng(3)
    intensity = {"mode": "zscore", "clip": [-5.0, 8.0]}
    a = np.stack([rng.gamma(2.0, 300.0, (40, 36)), np.full((40, 36), 7.0)])
    a = a.astype(np.float32)
    with_nan = np.concatenate([a, a[:1]])
    with_nan[2, 0, 0] = np.nan
    if axis is None:
        short = normalize(a[0], intensity)
        x = a[0].astype(np.float64)
        ref = np.clip((x - x.mean()) / x.std(), -5.0, 8.0)
        assert short.dtype == np.float32
        np.testing.assert_allclose(short, ref, rtol=0, atol=1e-5)
        assert np.all(normalize(a[1], intensity) == 0)
        assert normalize(with_nan[2], intensity)[0, 0] == 0
    else:
        short = normalize_slices(a, intensity)
        general = normalize_slices(with_nan, intensity)
        np.testing.assert_array_equal(short, general[:2])
        assert np.all(short[1] == 0) and short.dtype == np.float32


def test_cpu_batch_holds_about_the_same_pixels():
    assert inference_fast.cpu_batch((128, 128)) == 4
    assert inference_fast.cpu_batch((96, 96)) == 8
    assert inference_fast.cpu_batch([1, 512, 512]) == 1
    assert inference_fast.cpu_batch((8, 8)) == 32


# --- the fused inference copy ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("seed_cnn", {"spatial_dims": 2, "widths": (8, 16, 16)}, (3, 1, 32, 32)),
        ("seed_cnn", {"spatial_dims": 3, "widths": (4, 8, 8)}, (2, 1, 16, 16, 16)),
        (
            "resnet",
            {"spatial_dims": 2, "block_inplanes": (8, 8, 16, 16)},
            (2, 1, 32, 32),
        ),
        (
            "densenet",
            {"spatial_dims": 2, "init_features": 8, "growth_rate": 4},
            (2, 1, 32, 32),
        ),
    ],
)
def test_fused_copy_gives_the_same_outputs(name, kwargs, shape):
    torch.manual_seed(0)
    with torch.no_grad():
        model = _randomise_bn(build_model(name, in_channels=1, num_classes=3, **kwargs))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fuse_for_inference(model, channels_last=len(shape) == 4)
    x = torch.rand(shape)
    with torch.inference_mode():
        ref, got = model(x), fused(x)
    assert (got - ref).abs().max() < 1e-4
    assert type(fused) is type(model)
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in fused.modules())
    assert n_bn < sum(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
    )
    after = model.state_dict()  # the original is untouched
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_fused_seed_cnn_folds_every_norm_and_pools_before_relu():
    with torch.no_grad():
        model = _randomise_bn(build_model("seed_cnn", widths=(4, 8, 8)))
    fused = fuse_for_inference(model)
    kinds = [type(m).__name__ for m in fused.features if not isinstance(m, nn.Identity)]
    assert kinds == ["Conv2d", "MaxPool2d", "ReLU"] * 3
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(fused.embed(x), model.embed(x), atol=1e-5)
        # one-channel input still yields channels-last activations on CPU
        cl = fuse_for_inference(model, channels_last=True)
        first = cl.features[0](x)
        assert first.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(cl(x), model(x), atol=1e-5)


def test_fused_cnn_rnn_slices_and_volume_logits(tmp_path):
    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 2, "encoder_kwargs": {"widths": (4, 8, 8)}}
    with torch.no_grad():
        model = _randomise_bn(build_model("cnn_rnn", **kw))
    fused = fuse_for_inference(model, channels_last=True)
    x = torch.rand(1, 1, 5, 32, 32)
    with torch.inference_mode():
        a, b = model.forward_with_slices(x), fused.forward_with_slices(x)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.allclose(a.slice_logits, b.slice_logits, atol=1e-5)


def test_optimized_model_is_cached_refreshed_and_safe(seed_ckpt, monkeypatch):
    loaded = load_checkpoint(seed_ckpt, "cpu")
    fast = optimized_model(loaded)
    assert fast is not loaded.model and optimized_model(loaded) is fast
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(fast(x), loaded.model(x), atol=1e-4)
    # weights changed in place (fine-tuning): the copy is rebuilt
    conv = loaded.model.features[0]
    saved = conv.weight.detach().clone()
    try:
        with torch.no_grad():
            conv.weight.mul_(1.5)
        fresh = optimized_model(loaded)
        assert fresh is not fast
        with torch.inference_mode():
            assert torch.allclose(fresh(x), loaded.model(x), atol=1e-4)
        # training mode: the plain model, never a stale copy
        loaded.model.train()
        assert optimized_model(loaded) is loaded.model
    finally:
        loaded.model.eval()
        with torch.no_grad():
            conv.weight.copy_(saved)
    # hooks (saliency) on the model: the plain model, so the hooks see all
    hook = loaded.model.features[0].register_forward_hook(lambda *a: None)
    try:
        assert optimized_model(loaded) is loaded.model
    finally:
        hook.remove()
    # a copy that does not reproduce the outputs is refused
    monkeypatch.setattr(inference_fast, "_FAST", type(inference_fast._FAST)())
    broken = build_model("seed_cnn", widths=(8, 16, 16)).eval()
    monkeypatch.setattr(
        "napari_medcnn.models.fuse.fuse_for_inference", lambda m, **kw: broken
    )
    assert optimized_model(loaded) is loaded.model
    assert optimized_model(loaded) is loaded.model  # from the cache


def test_fused_copy_goes_with_its_model(seed_ckpt):
    loaded = load_checkpoint(seed_ckpt, "cpu")
    other = LoadedModel(
        copy.deepcopy(loaded.model), loaded.card, loaded.device, loaded.path
    )
    fast = weakref.ref(optimized_model(other))
    assert fast() is not None
    del other
    gc.collect()
    assert fast() is None


# --- the pipeline --------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 1, 5])
def test_classify_slices_equals_the_naive_loop(seed_ckpt, batch_size):
    vol = _head_volume(n=11)
    loaded = load_checkpoint(seed_ckpt, "cpu")
    rec = loaded.card.preprocessing
    with torch.no_grad():
        logits = torch.cat(
            [
                loaded.model(torch.from_numpy(prepare([s], rec, SPACING[1:])[None]))
                for s in vol
            ]
        )
    ref = torch.softmax(logits, 1).numpy()
    threads = torch.get_num_threads()
    gen = classify(
        [vol], seed_ckpt, scope="slices", spacing=SPACING, batch_size=batch_size
    )
    events = []
    while True:
        try:
            events.append(next(gen))
            assert not torch.is_inference_mode_enabled()  # nothing leaks to us
        except StopIteration as stop:
            res = stop.value
            break
    assert torch.get_num_threads() == threads
    done = [e[1] for e in events]
    assert done == sorted(done) and done[-1] == len(vol)
    np.testing.assert_allclose(res.slice_probabilities, ref, rtol=0, atol=1e-5)
    assert np.allclose(res.probabilities, ref.mean(0), atol=1e-5)


def test_prefetch_path_used_on_gpus_gives_the_same_result(seed_ckpt, monkeypatch):
    vol = _head_volume(n=9)
    cpu = drain(classify([vol], seed_ckpt, scope="slices", spacing=SPACING))
    # 0 workers: the GPU path (this thread runs the model in batches gathered
    # from pieces that the worker threads prepare)
    monkeypatch.setattr(inference_fast, "_cpu_workers", lambda dev: 0)
    res = drain(classify([vol], seed_ckpt, scope="slices", spacing=SPACING))
    np.testing.assert_allclose(
        res.slice_probabilities, cpu.slice_probabilities, rtol=0, atol=1e-6
    )
    # device batches of >= 5 slices gathered from pieces of 4: 8, then 1
    calls = []
    forward = inference_fast.forward_numpy
    monkeypatch.setattr(
        inference_fast,
        "forward_numpy",
        lambda net, x, dev: calls.append(len(x)) or forward(net, x, dev),
    )
    gen = classify([vol], seed_ckpt, scope="slices", spacing=SPACING, batch_size=5)
    done = []
    while True:
        try:
            done.append(next(gen)[1])
        except StopIteration as stop:
            res = stop.value
            break
    assert calls == [8, 1] and done == [8, 9]
    np.testing.assert_allclose(
        res.slice_probabilities, cpu.slice_probabilities, rtol=0, atol=1e-6
    )


def test_classify_slices_can_be_closed_early(seed_ckpt):
    vol = _head_volume(n=30)
    threads = torch.get_num_threads()
    gen = classify([vol], seed_ckpt, scope="slices", spacing=SPACING, batch_size=2)
    next(gen)
    next(gen)
    gen.close()  # what a cancelled napari worker does
    assert torch.get_num_threads() == threads
    res = drain(classify([vol], seed_ckpt, scope="slices", batch_size=2))
    assert res.slice_probabilities.shape == (30, 2)


def test_cpu_slice_model_runs_frozen_and_falls_back_to_eager(seed_ckpt, monkeypatch):
    """On CPU a 2D slice model's copy is traced and frozen (TorchScript:
    pre-packed oneDNN weights, fused conv + ReLU); it must match the plain
    model at any batch size, and without TorchScript the eager copy runs."""
    loaded = load_checkpoint(seed_ckpt, "cpu")
    fast = optimized_model(loaded)
    assert isinstance(fast, torch.jit.ScriptModule)
    with torch.inference_mode():
        for n in (1, 3, 9):
            x = torch.rand(n, 1, 32, 32)
            assert torch.allclose(fast(x), loaded.model(x), atol=1e-4)
    monkeypatch.setattr(inference_fast, "_FAST", type(inference_fast._FAST)())

    def unavailable(*args, **kwargs):
        raise RuntimeError("TorchScript removed")

    monkeypatch.setattr(torch.jit, "freeze", unavailable)
    eager = optimized_model(loaded)
    assert eager is not loaded.model and not isinstance(eager, torch.jit.ScriptModule)
    res = drain(classify([_head_volume(n=5)], loaded, scope="slices"))
    assert res.slice_probabilities.shape == (5, 2)
