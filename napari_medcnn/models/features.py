"""Penultimate features beside the logits, in one forward pass.

The domain guard compares an input's penultimate features (the input of
the classification layer) with those of the training images.
:class:`WithFeatures` wraps a model that has ``embed`` so that one call
returns ``[logits | features]`` as a single (B, K + F) tensor: that keeps
it traceable and freezable by the fast inference path, so the guard costs
no second pass.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def last_linear(model: nn.Module) -> nn.Linear:
    """The classification layer: the model's last ``nn.Linear``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no linear classification layer")
    return linears[-1]


class WithFeatures(nn.Module):
    """``forward(x) -> cat([logits, features], 1)`` for a model whose logits
    are ``last_linear(model)(model.embed(x))`` (checked by
    :func:`features_model`)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.fc = last_linear(net)
        self.n_classes = int(self.fc.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.embed(x)
        return torch.cat([self.fc(f), f], dim=1)


class FlipAveraged(nn.Module):
    """Test-time augmentation: the mean of the first ``n_classes`` outputs
    (logits) of ``net`` on an input and on its left-right mirror; any
    further columns (the penultimate features of :class:`WithFeatures`,
    which the domain guard compares with unflipped training features)
    come from the plain input."""

    def __init__(self, net: nn.Module, n_classes: int):
        super().__init__()
        self.net = net
        self.n_classes = int(n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.n_classes
        both = self.net(torch.cat([x, torch.flip(x, dims=[-1])]))
        a, b = both[: x.shape[0]], both[x.shape[0] :]
        return torch.cat([(a[:, :k] + b[:, :k]) / 2, a[:, k:]], dim=1)


def with_tta(net: nn.Module, card) -> nn.Module:
    """``net`` wrapped in the card's test-time augmentation (slice models
    with ``card.tta == ["flip"]``), else ``net`` itself."""
    if "flip" in (getattr(card, "tta", None) or []) and card.input_kind == "slice":
        return FlipAveraged(net, card.num_classes)
    return net


def features_model(net: nn.Module, probe: torch.Tensor) -> WithFeatures | None:
    """A :class:`WithFeatures` wrapper of ``net`` in eval mode, or None when
    ``net`` has no ``embed`` or its logits are not the last linear layer of
    its embedding (checked on ``probe``, to 1e-4)."""
    if not hasattr(net, "embed"):
        return None
    try:
        wrapped = WithFeatures(net)
        with torch.inference_mode():
            out = wrapped(probe)
            ref = net(probe)
    except Exception:
        return None
    k = wrapped.n_classes
    if out.shape[1] <= k or not torch.allclose(out[:, :k], ref, atol=1e-4, rtol=1e-4):
        return None
    return wrapped


def penultimate(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, penultimate features) of any model with a last linear layer,
    eager (a forward hook on that layer's input)."""
    fc = last_linear(net)
    seen: list[torch.Tensor] = []
    handle = fc.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0]))
    try:
        logits = net(x)
    finally:
        handle.remove()
    return logits, seen[-1].flatten(1)
