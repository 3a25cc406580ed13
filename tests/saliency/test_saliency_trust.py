"""Saliency the user can trust (issue 12, part 4): the default method
resolves at least 16x16 cells on any zoo model, maps are zero outside
the field of view the model saw, "black" deletion means the input's
darkest value, a constant map makes the randomisation check
inconclusive, and every failed check is a plain warning in the result,
the CLI output and the JSON sidecar.

Tiny untrained models: mechanics.  What the default map means on a
trained model: ``test_saliency_pointing.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from _helpers import make_checkpoint

import napari_medcnn.saliency.metrics as metrics_mod
from napari_medcnn._progress import drain
from napari_medcnn.cli import main
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import LoadedModel
from napari_medcnn.preprocessing.geometry import Geometry, prepare_with_geometry
from napari_medcnn.saliency import (
    DEFAULT_METHOD,
    ClassTarget,
    deletion_insertion,
    explain,
    find_target_layer,
    near_constant,
    pick_stages,
    randomization_check,
    stage_layers,
    trust_warnings,
)
from napari_medcnn.saliency.base import METHODS, Explainer
from napari_medcnn.saliency.cam import fuse_maps
from napari_medcnn.saliency.inputs import input_fov_mask
from napari_medcnn.saliency.metrics import trust_metrics

torch.set_num_threads(2)


def _loaded(model, size, record=None):
    record = record or {"intensity": {"mode": "none"}, "foreground_crop": None}
    record = {**record, "size": list(size)}
    card = ModelCard(
        arch="test",
        arch_kwargs={},
        classes=["a", "b"],
        spatial_dims=2,
        in_channels=1,
        input_size=list(size),
        preprocessing=record,
        model_id="test",
    )
    return LoadedModel(model.eval(), card, torch.device("cpu"), "")


def _hooks(model):
    return sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks)
        for m in model.modules()
    )


ZOO = [
    # (name, kwargs, input side): the last feature map is 4x4, 3x3, 6x6...
    ("resnet", {}, 128),
    ("resnet", {"block_inplanes": (8, 16, 32, 64)}, 96),
    ("densenet", {"init_features": 8, "growth_rate": 4}, 96),
    ("seed_cnn", {"widths": (4, 8, 8, 8, 8), "pooled_size": 1}, 96),
    ("seed_cnn", {"widths": (4, 8, 8)}, 48),
]


@pytest.mark.parametrize(("name", "kwargs", "side"), ZOO)
def test_default_method_resolves_16_cells_on_every_zoo_model(name, kwargs, side):
    torch.manual_seed(0)
    model = build_model(name, spatial_dims=2, in_channels=1, num_classes=2, **kwargs)
    x = torch.zeros(1, 1, side, side)
    stages = stage_layers(model, x)
    assert stages[-1][0] == find_target_layer(model, x)[0]
    assert min(stages[-1][2]) < 16 or side == 48  # Grad-CAM alone: coarse
    image = np.random.default_rng(0).random((side + 10, side)).astype(np.float32)
    res = drain(explain([image], _loaded(model, (side, side)), target=1))
    assert DEFAULT_METHOD == "gradcam" and res.method == "gradcam"
    assert min(res.params["map_resolution"]) >= 16
    chosen = pick_stages(stages)
    # Grad-CAM on the deepest stage at least 16 cells a side
    assert res.params["layer"] == chosen[0][0]
    assert res.map.shape == image.shape and np.isfinite(res.map).all()
    assert _hooks(model) == 0
    # LayerCAM fuses that stage with the deeper ones (the class evidence)
    res = drain(explain([image], _loaded(model, (side, side)), "layercam", target=1))
    assert res.params["layers"] == [s[0] for s in chosen]
    assert chosen[-1][0] == stages[-1][0]
    assert min(res.params["map_resolution"]) >= 16


def test_stage_choice_on_a_resnet_at_128_px():
    model = build_model("resnet", spatial_dims=2, in_channels=1, num_classes=2)
    stages = stage_layers(model, torch.zeros(1, 1, 128, 128))
    assert [(n, s) for n, _, s in stages] == [
        ("act", (64, 64)),
        ("layer1", (32, 32)),
        ("layer2", (16, 16)),
        ("layer3", (8, 8)),
        ("layer4", (4, 4)),
    ]
    assert [s[0] for s in pick_stages(stages)] == ["layer2", "layer3", "layer4"]
    # no stage is 16 cells a side: from the finest one
    assert [s[0] for s in pick_stages(stages, 100)] == [s[0] for s in stages]


def test_fusion_scales_each_layer_and_keeps_the_deep_strength():
    fine = torch.zeros(2, 4, 4)
    fine[:, 0, 0] = torch.tensor([2.0, 8.0])
    deep = torch.zeros(2, 4, 4)
    deep[:, 3, 3] = torch.tensor([0.5, 0.0])  # example 1: no class evidence
    fused = fuse_maps([fine, deep])
    assert fused[0, 0, 0] == pytest.approx(0.25) and fused[0, 3, 3] == 0.25
    assert not fused[1].any()  # dark without evidence, whatever the detail
    assert torch.equal(fuse_maps([deep]), deep)
    assert fuse_maps([fine, deep], "max")[0, 0, 0] == pytest.approx(0.5)


def test_layercam_and_hirescam_take_layers_and_hirescam_defaults_to_last():
    torch.manual_seed(0)
    model = build_model(
        "seed_cnn", spatial_dims=2, in_channels=1, num_classes=2, widths=(4, 8, 8)
    )
    loaded = _loaded(model, (48, 48))
    image = np.random.default_rng(1).random((48, 48)).astype(np.float32)
    res = drain(explain([image], loaded, "hirescam", target=1))
    assert res.params["layers"] == ["features.10"]
    assert res.params["map_resolution"] == [12, 12]
    res = drain(explain([image], loaded, "layercam", target=1, layers="features.2"))
    assert res.params["layers"] == ["features.2"]
    assert res.params["map_resolution"] == [48, 48]
    res = drain(explain([image], loaded, "gradcam", target=1, layer="last"))
    assert res.params["map_resolution"] == [12, 12]
    assert res.params["layer"] == "features.10"
    res = drain(explain([image], loaded, "gradcam", target=1))
    assert res.params["map_resolution"] == [24, 24]  # the deepest >= 16
    with pytest.raises(ValueError, match="no layer 'nope'"):
        drain(explain([image], loaded, "layercam", layers="features.2, nope"))


# --- field of view --------------------------------------------------------


CROP = {
    "intensity": {"mode": "none"},
    "foreground_crop": {"threshold": 0.1, "margin": 0.05},
}


def test_fov_mask_is_false_exactly_where_the_input_is_pure_padding():
    # a wide object filling a 40 x 60 image: the square crop (66 px a side)
    # extends past it on all four sides, and prepare pads with zeros there
    image = np.random.default_rng(0).uniform(0.5, 1.0, (40, 60)).astype(np.float32)
    x, geom = prepare_with_geometry([image], {**CROP, "size": [32, 32]})
    assert geom.box[0] < 0 and geom.box[1] > 40 and geom.box[2] < 0
    mask = input_fov_mask(geom)
    assert mask.shape == (32, 32) and (~mask).sum() > 32  # top and bottom rows
    assert not x[0][~mask].any()  # masked: nothing of the image there
    assert (x[0][mask] > 0).all()  # kept: some image there
    whole = Geometry((5, 40, 60), (0, 40, 0, 60), (5, 32, 32))
    assert input_fov_mask(whole).all() and input_fov_mask(whole).shape == (5, 32, 32)


@pytest.fixture
def ones_method(monkeypatch):
    """A method whose raw map is 1 everywhere on the model input."""

    class Ones(Explainer):
        name = "ones"
        default_sign = "positive"

        def _attribute(self, x, target):
            return torch.ones(x.shape[0], *x.shape[2:])

    monkeypatch.setitem(METHODS, "ones", Ones)
    return "ones"


def test_maps_are_zero_outside_the_field_of_view(ones_method, monkeypatch):
    torch.manual_seed(0)
    model = build_model(
        "seed_cnn", spatial_dims=2, in_channels=1, num_classes=2, widths=(4, 8, 8)
    )
    loaded = _loaded(model, (32, 32), CROP)
    # an object at the top edge of a dark frame: the crop box leaves the
    # image at the top (padding) and leaves dark image outside the box
    image = np.zeros((80, 60), np.float32)
    image[0:30, 15:45] = np.random.default_rng(0).uniform(0.5, 1.0, (30, 30))
    seen = {}

    def spy(net, x, saliency, *args, **kwargs):
        seen["x"], seen["map"] = x, saliency
        return {"warnings": [], "trust_checks": {}}

    monkeypatch.setattr(metrics_mod, "trust_metrics", spy)
    res = drain(explain([image], loaded, ones_method, target=1, metrics=True))
    _, geom = prepare_with_geometry([image], {**CROP, "size": [32, 32]})
    y0, y1, x0, x1 = geom.box
    assert y0 < 0 < x0 and y1 < 80  # padding above, image outside the box
    outside = np.ones(image.shape, bool)
    outside[max(0, y0) : y1, max(0, x0) : x1] = False
    assert not res.map[outside].any() and res.map[~outside].min() > 0
    # on the model input (what the deletion test orders): no heat in padding
    pad = ~input_fov_mask(geom)
    assert pad.any() and not seen["map"][pad].any()
    assert (seen["map"][~pad] == 1).all()


# --- deletion substrate ---------------------------------------------------


class _Recorder(nn.Module):
    """Scores the mean of the top-left quarter; keeps the inputs it saw."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        score = x[:, :, :8, :8].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], 1)


def test_black_deletion_means_the_darkest_value_of_the_input():
    rng = np.random.default_rng(0)
    raw = rng.normal(0.0, 1.0, (1, 16, 16)).astype(np.float32)
    x = (raw - raw.mean()) / raw.std()  # z-scored: 0 is mid-grey
    model = _Recorder()
    sal = rng.random((16, 16))
    out = deletion_insertion(
        model, x, sal, ClassTarget(1), steps=4, n_random=1, baseline="black"
    )
    everything_deleted = torch.cat(model.seen)[4]  # first curve, last step
    assert torch.allclose(everything_deleted, torch.tensor(x.min()))
    assert out["deletion_curve"][-1] == pytest.approx(out["insertion_curve"][0])
    # the default substrate stays the blurred image
    model.seen.clear()
    deletion_insertion(model, x, sal, ClassTarget(1), steps=4, n_random=1)
    assert float(torch.cat(model.seen)[4].std()) > 0


# --- randomisation check ----------------------------------------------------


class _Fixed(Explainer):
    """Returns ``maps[model is the trained one]``."""

    def __init__(self, model, trained, maps):
        super().__init__(model)
        self.out = maps[model is trained]

    def _attribute(self, x, target):
        return torch.as_tensor(self.out, dtype=torch.float32)[None]


@pytest.mark.parametrize("which", ["trained", "randomized", "both", "near"])
def test_constant_maps_make_the_randomisation_check_inconclusive(which):
    torch.manual_seed(0)
    model = build_model(
        "seed_cnn", spatial_dims=2, in_channels=1, num_classes=2, widths=(4, 8, 8)
    )
    x = np.random.default_rng(0).random((1, 24, 24)).astype(np.float32)
    varied = np.random.default_rng(1).random((24, 24))
    flat = np.zeros((24, 24))
    if which == "near":  # a rectified CAM that is 0 but for one location
        flat[3, 4] = 0.7
    trained = flat if which in ("trained", "both") else varied
    randomized = flat if which in ("randomized", "both", "near") else varied
    check = randomization_check(
        model, x, lambda m: _Fixed(m, model, {True: trained, False: randomized}),
        ClassTarget(1), mode="full",
    )  # fmt: skip
    assert check["status"] == "inconclusive" and check["passed"] is False
    assert "inconclusive" in check["warning"]
    assert check["constant"]["randomized" if which != "trained" else "trained"]
    # a varied map on both sides is judged, not excused
    other = np.random.default_rng(2).random((24, 24))
    check = randomization_check(
        model, x, lambda m: _Fixed(m, model, {True: varied, False: other}),
        ClassTarget(1), mode="full",
    )  # fmt: skip
    assert check["status"] == "passed" and check["passed"] is True
    check = randomization_check(
        model, x, lambda m: _Fixed(m, model, {True: varied, False: 2 * varied}),
        ClassTarget(1), mode="full",
    )  # fmt: skip
    assert check["status"] == "failed" and check["passed"] is False


def test_near_constant():
    assert near_constant(np.zeros((8, 8))) and near_constant(np.full(9, 3.0))
    assert near_constant(1 + 1e-6 * np.random.default_rng(0).random(100))
    assert not near_constant(np.random.default_rng(0).random((8, 8)))


# --- failed checks are flagged --------------------------------------------


def test_every_failed_check_is_a_plain_warning():
    assert trust_warnings({}) == []
    good = {
        "deletion_auc": 0.2,
        "deletion_auc_random": 0.5,
        "insertion_auc": 0.8,
        "insertion_auc_random": 0.5,
        "randomization": {"status": "passed", "warning": None},
    }
    assert trust_warnings(good) == []
    bad = {
        "deletion_auc": 0.982,
        "deletion_auc_random": 0.980,
        "insertion_auc": 0.46,
        "insertion_auc_random": 0.886,
        "randomization": {"status": "inconclusive", "warning": "constant map"},
    }
    out = trust_warnings(bad)
    assert len(out) == 3
    assert out[0].startswith("TRUST CHECK FAILED") and "0.982 >= random 0.980" in out[0]
    assert out[1].startswith("TRUST CHECK FAILED") and "0.460 <= random 0.886" in out[1]
    assert out[2] == "TRUST CHECK INCONCLUSIVE: constant map"
    tie = {**good, "deletion_auc": 0.5, "insertion_auc": 0.5}
    assert len(trust_warnings(tie)) == 2  # equal to random is no better


def test_trust_metrics_flag_a_map_that_points_away():
    x = np.full((1, 16, 16), 0.6, np.float32)
    x[0, -1, -1] = 0.0
    away = np.zeros((16, 16))
    away[8:, 8:] = 1.0  # the model reads the top-left quarter only
    toward = np.zeros((16, 16))
    toward[:8, :8] = 1.0
    out = trust_metrics(
        _Recorder(), x, toward, ClassTarget(1),
        lambda m: None, ["deletion_insertion"], steps=8, n_random=2,
        baseline="black",
    )  # fmt: skip
    assert out["trust_checks"] == {"deletion": "passed", "insertion": "passed"}
    assert out["warnings"] == []
    out = trust_metrics(
        _Recorder(), x, away, ClassTarget(1), lambda m: None,
        ["deletion_insertion"], steps=8, n_random=2, baseline="black",
    )  # fmt: skip
    assert out["trust_checks"] == {"deletion": "failed", "insertion": "failed"}
    assert [w.split(":")[0] for w in out["warnings"]] == ["TRUST CHECK FAILED"] * 2


@pytest.fixture
def failing_checks(monkeypatch):
    """Deletion and insertion no better than random, and an inconclusive
    randomisation check, whatever the map."""

    def deletion(*_args, **kwargs):
        return {
            "deletion_auc": 0.982,
            "deletion_auc_random": 0.980,
            "insertion_auc": 0.46,
            "insertion_auc_random": 0.886,
            "deletion_curve": [1.0, 1.0],
            "insertion_curve": [0.0, 1.0],
            "steps": 1,
        }

    def randomization(*_args, **_kwargs):
        return {
            "correlation": 0.0,
            "stages": [],
            "mode": "full",
            "threshold": 0.5,
            "status": "inconclusive",
            "passed": False,
            "constant": {"trained": False, "randomized": True},
            "warning": "randomisation check inconclusive: constant map",
        }

    monkeypatch.setattr(metrics_mod, "deletion_insertion", deletion)
    monkeypatch.setattr(metrics_mod, "randomization_check", randomization)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny")


def test_failed_checks_reach_the_result_the_cli_and_the_sidecar(
    failing_checks, tiny, tmp_path, capsys
):
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    res = drain(explain([image], str(tiny), metrics=True))
    assert res.metrics["trust_checks"] == {
        "deletion": "failed",
        "insertion": "failed",
        "randomization": "inconclusive",
    }
    assert sum(w.startswith("TRUST CHECK FAILED") for w in res.warnings) == 2
    assert sum(w.startswith("TRUST CHECK INCONCLUSIVE") for w in res.warnings) == 1
    from PIL import Image

    src = tmp_path / "scan.png"
    Image.fromarray((image * 255).astype(np.uint8)).save(src)
    out = tmp_path / "map.npy"
    rc = main(["explain", str(src), "--model", str(tiny), "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert rc == 0
    summary = json.loads(stdout)
    lines = stderr.splitlines()
    assert sum(line.startswith("TRUST CHECK FAILED: ") for line in lines) == 2
    assert any(line.startswith("TRUST CHECK INCONCLUSIVE: ") for line in lines)
    assert summary["trust_checks"]["deletion"] == "failed"
    assert summary["randomization_status"] == "inconclusive"
    assert summary["randomization_passed"] is False
    assert len(summary["warnings"]) == 3
    side = json.loads((tmp_path / "map.json").read_text())
    assert side["trust_checks"] == summary["trust_checks"]
    assert side["warnings"] == summary["warnings"]
