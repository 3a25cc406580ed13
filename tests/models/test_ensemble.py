"""An ensemble of trained models as one model (models/ensemble.py): exactly
the mean of the members' calibrated logits, saved and loaded like any
checkpoint, seen by the domain guard (concatenated features), the fast
inference path and the CAM methods (each member explained, maps added)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medcnn._progress import drain
from napari_medcnn.models import build_model
from napari_medcnn.models.card import ModelCard
from napari_medcnn.models.checkpoint import load_checkpoint, save_checkpoint
from napari_medcnn.models.ensemble import Ensemble, combine
from napari_medcnn.models.features import features_model
from napari_medcnn.preprocessing.record import default_record

CNN = {
    "spatial_dims": 2,
    "in_channels": 1,
    "num_classes": 2,
    "batchnorm": True,
    "widths": [8, 16, 16],
    "convs_per_block": 2,
    "head": "gap",
}


def _members(seed: int = 0):
    torch.manual_seed(seed)
    nets = [build_model("seed_cnn", **CNN).eval() for _ in range(2)]
    for net in nets:  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    specs = [{"arch": "seed_cnn", "arch_kwargs": dict(CNN)} for _ in nets]
    return nets, specs


def test_ensemble_is_the_mean_of_calibrated_logits():
    nets, specs = _members()
    x = torch.randn(3, 1, 32, 32)
    ens, kwargs = combine(nets, specs, [0.5, 2.0], x)
    with torch.inference_mode():
        want = (nets[0](x) / 0.5 + nets[1](x) / 2.0) / 2
        assert torch.allclose(ens(x), want, atol=1e-5)
        # the guard's features: both members' penultimate features
        wrapped = features_model(ens, x)
        assert wrapped is not None
        out = wrapped(x)
        assert torch.allclose(out[:, :2], want, atol=1e-5)
        feats = torch.cat([n.embed(x) for n in nets], 1)
        assert torch.allclose(out[:, 2:], feats, atol=1e-5)
    # the members were copied, not shared
    assert all(a is not b for a, b in zip(ens.members, nets))
    assert kwargs["temperatures"] == [0.5, 2.0] and len(kwargs["members"]) == 2


def _saved_ensemble(tmp_path, seed: int, probe: torch.Tensor):
    """Two seed CNNs combined and saved: (ensemble, checkpoint path, members)."""
    nets, specs = _members(seed)
    ens, kwargs = combine(nets, specs, [1.0, 1.0], probe)
    card = ModelCard(
        arch="ensemble",
        arch_kwargs=kwargs,
        classes=["a", "b"],
        spatial_dims=2,
        in_channels=1,
        input_size=[32, 32],
        preprocessing=default_record((32, 32)),
    )
    return ens, save_checkpoint(ens, card, tmp_path / "ens"), nets


def test_ensemble_checkpoint_round_trip_and_classify(tmp_path):
    from napari_medcnn.inference.predict import classify

    probe = torch.randn(2, 1, 32, 32)
    ens, path, _ = _saved_ensemble(tmp_path, 1, probe)
    loaded = load_checkpoint(path, "cpu")
    assert isinstance(loaded.model, Ensemble)
    with torch.inference_mode():
        assert torch.allclose(loaded.model.eval()(probe), ens(probe), atol=1e-6)
    # the user's path: fast inference (folded, traced) on every slice
    volume = np.random.default_rng(0).random((5, 40, 40)).astype(np.float32)
    result = drain(classify([volume], loaded, scope="slices"))
    probs = np.asarray(result.slice_probabilities)
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_bad_ensembles_are_refused():
    with pytest.raises(ValueError, match="at least two"):
        Ensemble([{"arch": "seed_cnn", "arch_kwargs": CNN}])
    with pytest.raises(ValueError, match="cannot hold an ensemble"):
        Ensemble([{"arch": "ensemble", "arch_kwargs": {}}] * 2)
    with pytest.raises(ValueError, match="temperature"):
        Ensemble([{"arch": "seed_cnn", "arch_kwargs": CNN}] * 2, temperatures=[1, 0])
    nets, specs = _members()
    specs[1] = {"arch": "seed_cnn", "arch_kwargs": {**CNN, "in_channels": 3}}
    with pytest.raises(ValueError, match="differs"):
        combine(nets, specs, [1, 1], torch.randn(1, 1, 32, 32))


@pytest.mark.parametrize("method", ["layercam", "gradcam", "hirescam"])
def test_cam_of_an_ensemble_adds_its_members_maps(method):
    """The ensemble's score is the mean of the members' (temperatures 1),
    so its map is half the sum of each member's map made alone, at the
    layers the automatic rule picks in each member."""
    from napari_medcnn.saliency.base import METHODS, load_methods
    from napari_medcnn.saliency.targets import ClassTarget

    load_methods()
    nets, specs = _members(2)
    x = torch.randn(2, 1, 32, 32)
    ens, _ = combine(nets, specs, [1.0, 1.0], x)
    target = ClassTarget(1, "b", "logit")  # linear in the members' logits
    with METHODS[method](ens) as explainer:
        both = explainer.attribute(x, target)
        names = getattr(explainer, "layer_names", None) or explainer.layer_name
        names = names if isinstance(names, list) else names.split(",")
    assert any(n.startswith("members.0.") for n in names), names
    assert any(n.startswith("members.1.") for n in names), names
    alone = []
    for net in nets:
        with METHODS[method](net) as explainer:
            alone.append(explainer.attribute(x, target))
    want = (alone[0] + alone[1]) / 2
    assert torch.allclose(both, want, atol=1e-5 * float(want.abs().max()) + 1e-7)


def test_slice_encoder_from_an_ensemble_starts_from_its_first_member(tmp_path):
    """A CNN+RNN's slice encoder is one network: from an ensemble checkpoint
    it takes member 0's architecture and weights, and says so."""
    from napari_medcnn.training.transfer import start_volume_model, volume_record_for

    _, path, nets = _saved_ensemble(tmp_path, 2, torch.randn(2, 1, 32, 32))
    record = volume_record_for("cnn_rnn", load_checkpoint(path).card, 6)
    model, vcard, note = start_volume_model(
        ["a", "b"], "cnn_rnn", record, encoder_from=path
    )
    assert vcard.arch_kwargs["encoder"] == "seed_cnn"
    assert vcard.arch_kwargs["encoder_kwargs"]["widths"] == CNN["widths"]
    assert note["start"] == "encoder" and note["encoder_member"] == 0
    assert vcard.provenance["encoder_from"]["member"] == 0
    own = model.encoder.net.state_dict()
    for name, value in nets[0].features.state_dict().items():
        torch.testing.assert_close(own[f"features.{name}"], value)
