"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018).

Written here rather than wrapped: Captum has no Grad-CAM++, and MONAI's
``visualize.GradCAM`` registers hooks it never removes, switches the model
to ``train()`` afterwards whatever its mode was, and normalises each map on
its own.  The two methods differ only in how channels are weighted
(:meth:`CAMBase.channel_weights`), pytorch-grad-cam style.

Gradients come from ``torch.autograd.grad`` on the hooked activations, so
no parameter's ``.grad`` is touched.  For CNN+RNN models the hooked layer
is inside the slice encoder: its activations (B*S, K, h, w) give one map
per slice, (B, S, H, W).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import (
    Explainer,
    Target,
    conv_layers,
    find_target_layer,
    get_layer,
    no_conv_error,
    register_method,
)


class CAMBase(Explainer):
    """Class activation maps on one convolution (``layer``: its name in
    ``model.named_modules()``; default: :func:`find_target_layer`)."""

    needs_conv = True
    default_sign = "positive"

    def __init__(self, model, layer: str | None = None, **kw):
        if not conv_layers(model):
            raise no_conv_error(model)
        super().__init__(model, **kw)
        self.layer_name = layer
        self.layer = get_layer(model, layer) if layer else None

    def channel_weights(self, acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """(N, K, *sp) activations and gradients -> (N, K) weights."""
        raise NotImplementedError

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        if self.layer is None:
            self.layer_name, self.layer = find_target_layer(self.model, x)
        acts: list[torch.Tensor] = []
        self.hook(self.layer.register_forward_hook(lambda _m, _i, o: acts.append(o)))
        score = target(self.model(x))
        if not acts:
            raise RuntimeError(f"layer {self.layer_name!r} did not run")
        grads = torch.autograd.grad(score.sum(), acts)
        a = torch.cat([t.detach() for t in acts])
        g = torch.cat([t.detach() for t in grads])
        b = x.shape[0]
        per_slice = a.shape[0] != b  # a slice encoder ran on B*S slices
        w = self.channel_weights(a, g)
        cam = F.relu((w.reshape(*w.shape, *[1] * (a.dim() - 2)) * a).sum(1))
        return _upsample(cam, x, per_slice)


def _upsample(cam: torch.Tensor, x: torch.Tensor, per_slice: bool) -> torch.Tensor:
    """(N, *sp) CAM -> (B, *input spatial), linear interpolation."""
    b = x.shape[0]
    size = x.shape[-(cam.dim() - 1) :]
    mode = "bilinear" if cam.dim() == 3 else "trilinear"
    up = F.interpolate(cam[:, None], size=tuple(size), mode=mode, align_corners=False)
    up = up[:, 0]
    if per_slice:
        return up.reshape(b, -1, *up.shape[1:])
    return up


@register_method
class GradCAM(CAMBase):
    """Grad-CAM: channels weighted by their spatially averaged gradient."""

    name = "gradcam"

    def channel_weights(self, acts, grads):
        return grads.flatten(2).mean(2)


@register_method
class GradCAMPlusPlus(CAMBase):
    """Grad-CAM++: positive gradients weighted per location (alpha), with
    the exponential-score closed form of the paper (as pytorch-grad-cam)."""

    name = "gradcam++"

    def channel_weights(self, acts, grads):
        g2, g3 = grads**2, grads**3
        sum_a = acts.flatten(2).sum(2).reshape(*acts.shape[:2], *[1] * (acts.dim() - 2))
        denom = 2 * g2 + sum_a * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        return (alpha * F.relu(grads)).flatten(2).sum(2)
