"""Several trained zoo models as one: the mean of their calibrated logits.

    build_model("ensemble", members=[{"arch": "seed_cnn", "arch_kwargs": {...}},
                                     {"arch": "resnet", "arch_kwargs": {...}}],
                spatial_dims=2, in_channels=1, num_classes=2)

An ensemble of networks trained apart ranks and calibrates better than any
of them (on Br35H, two 4-block CNNs of different recipes: held-out AUC 0.993
against 0.986 each; README).  :class:`Ensemble` keeps it a single model with
the interface every part of the plugin expects:

* ``embed(x)`` concatenates the members' penultimate features, and ``fc``
  (the model's last linear layer) holds every member's classification
  layer side by side, each divided by the number of members and by that
  member's temperature, so ``fc(embed(x))`` is exactly the mean of the
  members' calibrated logits.  The domain guard therefore compares the
  concatenated features, and the fast inference path folds and traces the
  ensemble like any zoo model;
* saliency sees one network whose score is the mean of the members':
  the CAM methods explain each member at its own stages and add the maps
  (``members`` is what they look for).

Members must have ``embed`` with ``logits = last_linear(member)(embed(x))``
(the seed CNN, the MONAI nets and the CNN+RNN do); :func:`combine` checks
it on a probe.  The members' own classification layers stay inside them,
unused by ``forward``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from napari_medcnn.models.features import last_linear
from napari_medcnn.models.registry import build_model, register

#: arguments an ensemble passes to every member
SHARED = ("spatial_dims", "in_channels", "num_classes")


class Ensemble(nn.Module):
    """The mean of several models' (calibrated) logits as one model.

    Args:
        members: ``{"arch": name, "arch_kwargs": {...}}`` per member.
        spatial_dims, in_channels, num_classes: shared by every member
            (they override the members' own values).
        temperatures: each member's calibration temperature, folded into
            ``fc`` by :meth:`combine_heads` (default: 1 each).
    """

    def __init__(
        self,
        members: Sequence[Mapping[str, Any]],
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_classes: int = 2,
        temperatures: Sequence[float] | None = None,
    ):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        shared = {
            "spatial_dims": spatial_dims,
            "in_channels": in_channels,
            "num_classes": num_classes,
        }
        nets = []
        for i, spec in enumerate(members):
            if not isinstance(spec, Mapping) or "arch" not in spec:
                raise ValueError(f"member {i}: needs 'arch' and 'arch_kwargs'")
            if spec["arch"] == "ensemble":
                raise ValueError(f"member {i}: an ensemble cannot hold an ensemble")
            kwargs = {**dict(spec.get("arch_kwargs") or {}), **shared}
            net = build_model(spec["arch"], **kwargs)
            if not hasattr(net, "embed"):
                raise ValueError(
                    f"member {i} ({spec['arch']}) has no embed(): its "
                    "penultimate features cannot be combined"
                )
            nets.append(net)
        self.members = nn.ModuleList(nets)
        temps = list(temperatures) if temperatures is not None else [1.0] * len(nets)
        if len(temps) != len(nets) or not all(t > 0 for t in temps):
            raise ValueError("one positive temperature per member is needed")
        self.temperatures = [float(t) for t in temps]
        dims = [last_linear(n).in_features for n in nets]
        self.feature_dim = int(sum(dims))
        # registered after the members: ``last_linear`` finds this one
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self.combine_heads()

    @torch.no_grad()
    def combine_heads(self) -> None:
        """Set ``fc`` from the members' classification layers: weights side
        by side and biases summed, each divided by the number of members
        and by the member's temperature."""
        n = len(self.members)
        weights, bias = [], torch.zeros_like(self.fc.bias)
        for net, t in zip(self.members, self.temperatures):
            head = last_linear(net)
            weights.append(head.weight / (n * t))
            bias += head.bias / (n * t)
        self.fc.weight.copy_(torch.cat(weights, dim=1))
        self.fc.bias.copy_(bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated penultimate features, (B, ``feature_dim``)."""
        return torch.cat([net.embed(x) for net in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed(x))


@register("ensemble")
def _ensemble(**kwargs: Any) -> nn.Module:
    return Ensemble(**kwargs)


def combine(
    models: Sequence[nn.Module],
    specs: Sequence[Mapping[str, Any]],
    temperatures: Sequence[float],
    probe: torch.Tensor,
) -> tuple[Ensemble, dict[str, Any]]:
    """An :class:`Ensemble` holding copies of trained ``models``.

    Args:
        models: the trained members (left untouched).
        specs: ``{"arch", "arch_kwargs"}`` of each (from their cards).
        temperatures: their calibration temperatures.
        probe: an input batch; each member's ``embed`` must reproduce its
            logits through its last linear layer on it (to 1e-4).

    Returns:
        (the ensemble in eval mode, its ``arch_kwargs`` for the card).

    Raises:
        ValueError: shared arguments differ, or a member's logits do not
            come from its ``embed``.
    """
    first = dict(specs[0]["arch_kwargs"])
    shared = {k: first[k] for k in SHARED if k in first}
    for i, spec in enumerate(specs[1:], 1):
        other = {k: spec["arch_kwargs"].get(k) for k in shared}
        if other != shared:
            raise ValueError(f"member {i}: {other} differs from member 0's {shared}")
    arch_kwargs = {
        **shared,
        "members": [
            {"arch": s["arch"], "arch_kwargs": dict(s["arch_kwargs"])} for s in specs
        ],
        "temperatures": [float(t) for t in temperatures],
    }
    ensemble = Ensemble(**arch_kwargs)
    for target, source in zip(ensemble.members, models):
        target.load_state_dict(source.state_dict())
    ensemble.combine_heads()
    ensemble.eval()
    with torch.inference_mode():
        for i, net in enumerate(ensemble.members):
            ref = net(probe)
            via = last_linear(net)(net.embed(probe))
            if not torch.allclose(ref, via, atol=1e-4, rtol=1e-4):
                raise ValueError(
                    f"member {i}: its logits do not come from embed() through "
                    "its last linear layer"
                )
        mean = torch.stack(
            [net(probe) / t for net, t in zip(ensemble.members, ensemble.temperatures)]
        ).mean(0)
        if not torch.allclose(ensemble(probe), mean, atol=1e-4, rtol=1e-4):
            raise ValueError("the combined head does not give the members' mean")
    return ensemble, arch_kwargs
