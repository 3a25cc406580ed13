"""Saliency core: hooks, modes, grad contexts, targets, geometry, shapes,
normalisation, occlusion's mm, IG's memory bound, trust metrics.

Untrained tiny models: these tests check mechanics; what the maps mean is
checked on trained models in ``test_saliency_ground_truth.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from napari_medcnn._progress import drain
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import LoadedModel
from napari_medcnn.preprocessing.geometry import prepare_with_geometry, to_image_grid
from napari_medcnn.preprocessing.record import crop_pad, normalize, prepare, resize
from napari_medcnn.saliency import (
    METHODS,
    ClassTarget,
    available_methods,
    count_windows,
    deletion_insertion,
    estimate_ig_memory,
    estimate_occlusion,
    explain,
    ig_batch_for_memory,
    mm_to_voxels,
    normalize_map,
    randomization_check,
)
from napari_medcnn.saliency.base import find_target_layer

torch.set_num_threads(2)
PLAIN = {"intensity": {"mode": "none"}, "foreground_crop": None}
CROP = {
    "intensity": {"mode": "percentile", "low": 1.0, "high": 99.9},
    "foreground_crop": {"threshold": 0.1, "margin": 0.05},
}
ALL = ["gradcam", "gradcam++", "integrated_gradients", "occlusion", "smoothgrad"]
FAST = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 2},
    "occlusion": {"window_mm": 8.0, "stride_mm": 8.0},
}


def _loaded(model, kind="slice", size=(24, 24), channels=1, record=None, dims=2):
    card = ModelCard(
        arch=getattr(model, "arch_name", "custom"),
        arch_kwargs={},
        classes=["a", "b"],
        spatial_dims=dims,
        in_channels=channels,
        input_size=list(size),
        preprocessing={**(record or PLAIN), "size": list(size)},
        input_kind=kind,
        model_id="test",
    )
    return LoadedModel(model.eval(), card, torch.device("cpu"), "")


def _seed(dims=2, channels=1, **kw):
    torch.manual_seed(0)
    kw = {"widths": (4, 8, 8), **kw}
    return build_model(
        "seed_cnn", spatial_dims=dims, in_channels=channels, num_classes=2, **kw
    )


@pytest.fixture(scope="module")
def net2d():
    return _loaded(_seed())


@pytest.fixture(scope="module")
def rnn():
    torch.manual_seed(0)
    model = build_model(
        "cnn_rnn",
        in_channels=1,
        num_classes=2,
        encoder_kwargs={"widths": (4, 8, 8)},
        hidden_size=8,
    )
    return _loaded(model, "sequence", (16, 16), dims=3)


def _img(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _hooks(model):
    return sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
        for m in model.modules()
    )


# --- hooks, modes, gradient contexts ------------------------------------------


@pytest.mark.parametrize("method", ALL)
def test_no_hook_left_mode_restored_no_param_grads(net2d, method):
    model = net2d.model
    model.train()
    model.features[1].eval()  # a frozen BatchNorm: mixed modes come back as is
    before = {n: m.training for n, m in model.named_modules()}
    try:
        drain(explain([_img((30, 40))], net2d, method, **FAST.get(method, {})))
        after = {n: m.training for n, m in model.named_modules()}
    finally:
        model.eval()
    assert after == before
    assert _hooks(model) == 0
    assert all(p.grad is None for p in model.parameters())


def test_hooks_released_after_an_error_and_errors_not_swallowed(net2d):
    def boom(logits):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        drain(explain([_img((30, 40))], net2d, "gradcam", target=boom))
    assert _hooks(net2d.model) == 0
    # pytorch-grad-cam swallows IndexError; here it reaches the caller
    with pytest.raises(IndexError):
        drain(explain([_img((30, 40))], net2d, "gradcam", target=lambda lg: lg[:, 7]))
    assert _hooks(net2d.model) == 0 and not net2d.model.training


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_works_under_no_grad_and_inference_mode(net2d, context):
    with context():
        x = torch.from_numpy(_img((30, 40)))  # an inference tensor, even
        res = drain(explain([x.numpy()], net2d, "gradcam"))
        res_ig = drain(explain([_img((30, 40))], net2d, "integrated_gradients"))
        assert not torch.is_grad_enabled()
    assert res.map.max() == pytest.approx(1.0) and res_ig.map.max() > 0


def test_inplace_relu_model_works_and_flags_come_back():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    loaded = _loaded(model)
    for method in ("gradcam", "gradcam++", "integrated_gradients", "smoothgrad"):
        res = drain(explain([_img((24, 24))], loaded, method, **FAST.get(method, {})))
        assert np.isfinite(res.map).all() and res.map.max() > 0
    assert model[1].inplace and model[3].inplace
    assert _hooks(model) == 0


# --- targets and methods --------------------------------------------------


def test_bad_target_names_the_valid_classes(net2d):
    for bad in (5, -1, "tumour"):
        with pytest.raises(ValueError, match=r"valid classes: 0 \('a'\), 1 \('b'\)"):
            drain(explain([_img((30, 40))], net2d, "gradcam", target=bad))
    res = drain(explain([_img((30, 40))], net2d, "gradcam", target="b"))
    assert (res.target, res.target_name) == (1, "b")


def test_model_without_convolution_offers_gradient_methods():
    model = nn.Sequential(nn.Flatten(), nn.Linear(24 * 24, 2))
    loaded = _loaded(model)
    names = available_methods(model)
    assert "gradcam" not in names and "integrated_gradients" in names
    for method in ("gradcam", "gradcam++"):
        with pytest.raises(ValueError, match="only gradient methods") as err:
            drain(explain([_img((24, 24))], loaded, method))
        assert "integrated_gradients" in str(err.value)
    res = drain(explain([_img((24, 24))], loaded, "integrated_gradients"))
    assert res.map.shape == (24, 24)


def test_auto_layer_reads_rectified_maps_and_explicit_layer_works(net2d, rnn):
    x = torch.zeros(1, 1, 24, 24)
    assert find_target_layer(net2d.model, x)[0] == "features.10"  # conv8-BN-ReLU
    x3 = torch.zeros(1, 1, 5, 16, 16)
    assert find_target_layer(rnn.model, x3)[0] == "encoder.net.features.10"
    res = drain(explain([_img((30, 40))], net2d, "gradcam", layer="features.4"))
    assert res.params["layer"] == "features.4" and res.map.max() > 0
    with pytest.raises(ValueError, match="no layer 'nope'"):
        drain(explain([_img((30, 40))], net2d, "gradcam", layer="nope"))


@pytest.mark.parametrize("dims", [2, 3])
def test_auto_layer_is_the_backbone_output_of_resnet_and_densenet(dims):
    """The last residual stage (after the sum and ReLU), not a block's
    pre-residual BatchNorm; DenseNet's rectified final feature map."""
    x = torch.zeros(1, 1, *([64] * dims))  # layer4: 2 voxels a side
    for name, expected in (("resnet", "layer4"), ("densenet", "class_layers.relu")):
        torch.manual_seed(0)
        model = build_model(name, spatial_dims=dims, in_channels=1, num_classes=2)
        assert find_target_layer(model, x)[0] == expected
        assert _hooks(model) == 0
    resnet18 = build_model(
        "resnet", spatial_dims=2, in_channels=1, num_classes=2, layers=(2, 2, 2, 2)
    )
    assert find_target_layer(resnet18, torch.zeros(1, 1, 64, 64))[0] == "layer4"
    # at 32 px layer4 is 1x1: the last stage that still has extent
    assert find_target_layer(resnet18, torch.zeros(1, 1, 32, 32))[0] == "layer3"


def test_default_model_gradcam_hooks_its_last_stage():
    from napari_medcnn.models.checkpoint import default_model_path, resolve_model

    if not default_model_path().exists():
        pytest.skip("no default model")
    loaded = resolve_model()
    size = loaded.card.input_size
    name, _ = find_target_layer(loaded.model, torch.zeros(1, 1, *size))
    assert name == ("layer4" if loaded.card.arch == "resnet" else name)
    assert not name.endswith(("bn2", "conv2"))


def test_log_prob_target_gradient_survives_certainty():
    logits = torch.tensor([[60.0, 0.0, -1.0]], requires_grad=True)
    score = ClassTarget(0, score="log_prob")(logits)
    (g,) = torch.autograd.grad(score.sum(), logits)
    assert g[0, 0] > 0 and g[0, 1] < 0  # plain log_softmax gives g[0, 0] == 0
    assert g.sum().abs() < 1e-6 * g.abs().max()


# --- shapes on the image grid -----------------------------------------------


@pytest.mark.parametrize("method", ALL)
def test_map_shapes_2d_multichannel_rgb_3d(method):
    p = FAST.get(method, {})
    two = _loaded(_seed(channels=2), channels=2)
    res = drain(explain([_img((30, 40)), _img((30, 40), 1)], two, method, **p))
    assert res.map.shape == (30, 40) and res.map.dtype == np.float32
    gray = _loaded(_seed(), record={**PLAIN, "color": "luminance"})
    res = drain(explain([_img((30, 40, 3))], gray, method, rgb=True, **p))
    assert res.map.shape == (30, 40)
    vol = _loaded(_seed(3), "volume", (12, 16, 16), dims=3)
    res = drain(explain([_img((9, 20, 18))], vol, method, spacing=(3, 1, 1), **p))
    assert res.map.shape == (9, 20, 18) and res.scope == "volume"


@pytest.mark.parametrize("method", ALL)
def test_cnn_rnn_map_per_slice_and_slice_importance(rnn, method):
    res = drain(explain([_img((6, 20, 18))], rnn, method, **FAST.get(method, {})))
    assert res.map.shape == (6, 20, 18)
    assert res.slice_importance.shape == (6,)
    assert np.isfinite(res.slice_importance).all()
    assert res.slice_attention.sum() == pytest.approx(1.0, abs=1e-5)


def test_slice_model_on_a_volume(net2d):
    vol = _img((5, 30, 40))
    res = drain(explain([vol], net2d, "gradcam", slice_index=2))
    assert res.map.shape == (5, 30, 40) and res.slice_index == 2
    assert res.map[2].max() == 1.0 and not np.delete(res.map, 2, 0).any()
    events = []
    gen = explain([vol], net2d, "gradcam", scope="slices", batch_size=2)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        res = stop.value
    assert events[-1] == ("explain", 5, 5) and len(events) == 4
    assert res.map.shape == (5, 30, 40) and all(res.map[k].max() > 0 for k in range(5))


def test_volume_and_slice_normalisation(net2d):
    vol = _img((4, 30, 40))
    vol[1] *= 0.05  # a faint slice: weak gradient x input
    vol_res = drain(explain([vol], net2d, "gradient_x_input", scope="slices"))
    per_slice = drain(
        explain([vol], net2d, "gradient_x_input", scope="slices", normalize="slice")
    )
    maxima = vol_res.map.reshape(4, -1).max(1)
    assert maxima.max() == 1.0 and maxima[1] < 0.5  # one scale keeps it faint
    assert np.allclose(per_slice.map.reshape(4, -1).max(1), 1.0)
    assert np.shape(vol_res.params["scale"]) == ()
    assert np.shape(per_slice.params["scale"]) == (4,)
    # the robust scale: 99.5th percentile of |map|, clipped to [0, 1]
    m = np.zeros((2, 20, 20), np.float32)
    m[0, 0, 0], m[0, 1:, :] = 100.0, 1.0
    out, scale = normalize_map(m)
    assert scale == pytest.approx(1.0) and out[0, 0, 0] == 1.0
    # slices left uncomputed (slice scope on a volume) do not dilute it
    sparse = np.zeros((2, 20, 20), np.float32)
    sparse[0, :2, :2] = 10.0
    assert normalize_map(sparse)[1] == pytest.approx(0.05)
    out, scale = normalize_map(sparse, computed=np.array([True, False]))
    assert scale == pytest.approx(10.0) and out.max() == 1.0


# --- geometry: back to the image grid -----------------------------------------


def _head(shape=(60, 80), center=(34, 30), radius=18):
    yy, xx = np.ogrid[: shape[0], : shape[1]]
    im = np.zeros(shape, np.float32)
    im[(yy - center[0]) ** 2 + (xx - center[1]) ** 2 < radius**2] = 0.5
    im[center[0] - 2 : center[0] + 3, center[1] + 6 : center[1] + 11] = 1.0
    return im


def test_prepare_with_geometry_matches_prepare_and_inverts_crop_resize():
    im = _head()
    record = {**CROP, "size": [32, 32]}
    x, geom = prepare_with_geometry([im], record, (0.7, 0.7))
    assert np.array_equal(x, prepare([im], record, (0.7, 0.7)))
    y0, y1, x0, x1 = geom.box
    # the box is the one prepare cropped: rebuilding its output from it
    normed = normalize(im, record["intensity"])[None]
    rebuilt = resize(crop_pad(normed, (slice(y0, y1), slice(x0, x1))), (32, 32))
    np.testing.assert_allclose(rebuilt, x, atol=1e-5)
    assert geom.image_shape == (60, 80) and geom.input_shape == (32, 32)
    assert y0 <= 16 and y1 >= 52 and x0 <= 12 and x1 >= 48  # holds the head
    back = to_image_grid(x[0], geom)
    assert back.shape == im.shape
    peak = np.unravel_index(np.argmax(back), back.shape)
    assert 32 <= peak[0] <= 36 and 36 <= peak[1] <= 40  # the bright patch
    assert back[:, 70:].max() == 0  # outside the crop
    assert geom.input_spacing((0.7, 0.7))[0] == pytest.approx(0.7 * (y1 - y0) / 32)
    # a head cut by the top edge: the box leaves the image (zero padding)
    top = _head(center=(8, 40))
    x, geom = prepare_with_geometry([top], record, (0.7, 0.7))
    back = to_image_grid(x[0], geom)
    assert geom.box[0] < 0 and back.shape == top.shape
    peak = np.unravel_index(np.argmax(back), back.shape)
    assert 6 <= peak[0] <= 10 and 46 <= peak[1] <= 50


def test_geometry_for_3d_volumes_resizes_depth_too():
    vol = np.stack([_head()] * 10)
    record = {**CROP, "size": [20, 24, 24]}
    x, geom = prepare_with_geometry([vol], record, (0.7, 0.7))
    assert geom.input_shape == (20, 24, 24) and geom.crop_shape[0] == 10
    assert geom.input_spacing((3.0, 0.7, 0.7))[0] == pytest.approx(1.5)
    assert to_image_grid(x[0], geom).shape == vol.shape
    seq, gseq = prepare_with_geometry([vol], {**record, "size": [24, 24]})
    assert gseq.input_shape == (10, 24, 24)  # slices kept
    assert to_image_grid(seq[0], gseq).shape == vol.shape


# --- occlusion ----------------------------------------------------------------


def test_occlusion_mm_to_voxels_through_spacing_and_resize():
    assert mm_to_voxels(10, (0.5, 2.0), (64, 64)) == (20, 5)
    assert mm_to_voxels((6, 1), (1.5, 1.0), (8, 8)) == (4, 1)
    assert mm_to_voxels(100, (1.0, 1.0), (8, 8)) == (8, 8)
    with pytest.raises(ValueError):
        mm_to_voxels(-1, (1, 1), (8, 8))
    # 40 px of 0.5 mm resized to 20 px: 1 mm per input pixel
    loaded = _loaded(_seed(), size=(20, 20))
    im = _img((40, 40))
    res = drain(
        explain([im], loaded, "occlusion", spacing=(0.5, 0.5), window_mm=6, stride_mm=3)
    )
    assert res.params["window"] == (6, 6) and res.params["stride"] == (3, 3)
    # 3D: 9 slices of 3 mm resized to 18 -> 1.5 mm; in-plane 20 px of 1 mm -> 16
    vol = _loaded(_seed(3), "volume", (18, 16, 16), dims=3)
    est = estimate_occlusion(
        [_img((9, 20, 20))], vol, window_mm=6, stride_mm=3, spacing=(3, 1, 1)
    )
    assert est.window == (4, 5, 5) and est.stride == (2, 2, 2)


def test_occlusion_estimate_counts_the_passes_it_makes(net2d):
    calls = []
    handle = net2d.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        im = _img((24, 24))
        est = estimate_occlusion([im], net2d, window_mm=4, stride_mm=2)
        assert est.windows == count_windows((24, 24), (4, 4), (2, 2)) == 121
        calls.clear()
        gen = explain(
            [im], net2d, "occlusion", window_mm=4, stride_mm=2, warn_seconds=0
        )
        first = next(gen)
        res = drain(gen)
    finally:
        handle.remove()
    assert first[0] == "warning" and "forward passes" in first[1]
    # one probability pass, one timing pass, then the job itself
    assert len(calls) - 2 == est.forward_passes == 1 + -(-121 // 16)
    assert res.params["estimated_passes"] == est.forward_passes


# --- integrated gradients ---------------------------------------------------


def test_ig_internal_batch_bounds_the_forward_batch(net2d):
    sizes = []
    handle = net2d.model.register_forward_pre_hook(
        lambda m, a: sizes.append(a[0].shape[0])
    )
    try:
        small = drain(
            explain([_img((24, 24))], net2d, "integrated_gradients", n_steps=10,
                    internal_batch_size=3)
        )  # fmt: skip
        assert max(sizes) == 3 and small.params["used_internal_batch_size"] == 3
        sizes.clear()
        big = drain(
            explain([_img((24, 24))], net2d, "integrated_gradients", n_steps=10)
        )
    finally:
        handle.remove()
    assert max(sizes) == 10  # default: all steps at once when memory allows
    np.testing.assert_allclose(small.map, big.map, atol=1e-4)
    per = estimate_ig_memory(net2d.model, (1, 24, 24), 1)
    assert estimate_ig_memory(net2d.model, (1, 24, 24), 8) == 8 * per
    limit = 5.5 * per / 2**20
    assert ig_batch_for_memory(net2d.model, (1, 24, 24), limit, 32) == 5


@pytest.mark.parametrize("baseline", ["black", "blurred", "mean"])
def test_ig_baselines(net2d, baseline):
    res = drain(explain([_img((24, 24))], net2d, "integrated_gradients",
                      baseline=baseline, n_steps=4))  # fmt: skip
    assert res.map.max() > 0 and res.params["baseline"] == baseline
    with pytest.raises(ValueError, match="baseline must be"):
        drain(explain([_img((24, 24))], net2d, "integrated_gradients", baseline="x"))


# --- trust metrics ------------------------------------------------------------


class _RegionModel(nn.Module):
    """Class 1's logit is 20 x the mean of the top-left quarter."""

    def forward(self, x):
        score = 20 * x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score - 5], 1)


def test_deletion_insertion_reward_a_faithful_map():
    x = np.full((1, 16, 16), 0.6, np.float32)
    x[0, -1, -1] = 0.0  # the input's darkest value: what "black" deletes to
    good = np.zeros((16, 16))
    good[:8, :8] = 1 + np.random.default_rng(0).random((8, 8))
    out = deletion_insertion(
        _RegionModel(), x, good, ClassTarget(1), steps=16, baseline="black"
    )
    assert len(out["deletion_curve"]) == 17
    assert out["deletion_auc"] < out["deletion_auc_random"] - 0.2
    assert out["insertion_auc"] > out["insertion_auc_random"] + 0.2
    bad = deletion_insertion(
        _RegionModel(), x, -good, ClassTarget(1), steps=16, baseline="black"
    )
    assert bad["deletion_auc"] > out["deletion_auc_random"]


def test_randomization_check_and_explain_metrics(net2d):
    before = {k: v.clone() for k, v in net2d.model.state_dict().items()}
    x = prepare([_img((24, 24))], net2d.card.preprocessing)
    check = randomization_check(
        net2d.model, x, lambda m: METHODS["gradcam"](m), ClassTarget(1), max_stages=3
    )
    assert len(check["stages"]) == 3 and check["mode"] == "cascading"
    assert check["stages"][-1][0] == "features.0"  # the last stage: all layers
    assert -1 <= check["correlation"] <= 1 and check["passed"] == (
        check["correlation"] < check["threshold"]
    )
    after = net2d.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # a copy changed
    res = drain(
        explain([_img((24, 24))], net2d, "gradcam", metrics=True,
                metric_options={"steps": 8, "n_random": 1})
    )  # fmt: skip
    for key in ("deletion_auc", "deletion_auc_random", "insertion_auc"):
        assert 0 <= res.metrics[key] <= 1
    assert "correlation" in res.metrics["randomization"]


def test_every_zoo_model_explains():
    for name in ("resnet", "densenet"):
        torch.manual_seed(0)
        model = build_model(name, spatial_dims=2, in_channels=1, num_classes=2)
        res = drain(explain([_img((40, 40))], _loaded(model, size=(32, 32)), "gradcam"))
        assert res.map.shape == (40, 40) and res.map.max() > 0
        assert _hooks(model) == 0


def test_explain_slice_importance_is_the_one_classify_records(rnn):
    """The Saliency panel's per-slice curve is the Classify panel's:
    occlusion (where affordable), >= 0 and summing to 1, and equal to
    ``classify_slice_importance`` on the same prepared volume."""
    from napari_medcnn.saliency.inputs import make_plan
    from napari_medcnn.saliency.slices import classify_slice_importance

    img = _img((6, 20, 18))
    res = drain(explain([img], rnn, "gradcam"))
    assert res.params["slice_importance_method"] == "occlusion"
    imp = res.slice_importance
    assert (imp >= 0).all() and imp.sum() == pytest.approx(1.0, abs=1e-5)
    plan = make_plan([img], rnn, None, None, None, False, None)
    ref = drain(classify_slice_importance(rnn.model, plan.items[0].x, res.target))
    np.testing.assert_allclose(imp, ref.importance, atol=1e-5)


def test_volume_model_slice_importance_is_one_per_scan_slice(tmp_path):
    """A CNN+RNN with a volume record (6 prepared coronal slices) on a scan
    with 14 coronal slices: explain's slice importance and attention have
    one value per coronal slice of the scan (as classify records them),
    summing to 1."""
    from napari_medcnn.models.card import ModelCard
    from napari_medcnn.models.checkpoint import save_checkpoint
    from napari_medcnn.preprocessing.volume import volume_record

    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 2, "hidden_size": 8,
          "encoder_kwargs": {"widths": (4, 8, 8), "pooled_size": 2}}  # fmt: skip
    record = volume_record(6, (16, 16), slice_axis="coronal", crop_depth=False)
    card = ModelCard(arch="cnn_rnn", arch_kwargs=kw, classes=["normal", "lesion"],
                     spatial_dims=3, in_channels=1, input_size=[16, 16],
                     input_kind="sequence", preprocessing=record)  # fmt: skip
    ckpt = save_checkpoint(build_model("cnn_rnn", **kw).eval(), card, tmp_path / "c")
    res = drain(explain([_img((10, 14, 12))], str(ckpt), "gradcam"))
    assert res.scope == "volume" and res.map.shape == (10, 14, 12)
    assert res.slice_importance.shape == (14,)
    assert res.slice_importance.sum() == pytest.approx(1.0, abs=1e-5)
    assert res.slice_attention.shape == (14,)
    assert res.slice_attention.sum() == pytest.approx(1.0, abs=1e-5)
