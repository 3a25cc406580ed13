"""Input-gradient methods, wrapped from Captum.

* ``integrated_gradients`` (Sundararajan et al. 2017): Captum's
  ``IntegratedGradients`` from a baseline (``black``: zeros; ``blurred``:
  the Gaussian-blurred input; ``mean``: each channel's mean of this input)
  in ``n_steps``; ``internal_batch_size`` bounds how many interpolated
  inputs go through the model at once, hence the memory (see
  :func:`estimate_ig_memory`).
* ``smoothgrad`` (Smilkov et al. 2017): Captum ``NoiseTunnel`` over
  ``Saliency`` (absolute vanilla gradient), averaged over noisy copies.
* ``gradient``: absolute vanilla gradient (Simonyan et al. 2014).
* ``gradient_x_input``: Captum ``InputXGradient``.

All sum the channels into one map per location.  None needs a
convolution, so they also explain models without one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn

from napari_medcnn.saliency.base import (
    Explainer,
    Target,
    blur,
    default_blur_sigma,
    fresh_input,
    model_device,
    model_session,
    register_method,
)

BASELINES = ("black", "blurred", "mean")


def make_baseline(
    x: torch.Tensor, kind: str = "black", blur_sigma: float | None = None
) -> torch.Tensor:
    """A baseline input like ``x`` (B, C, *spatial).

    Args:
        kind: ``black`` (zeros), ``blurred`` (Gaussian blur of ``x``, sigma
            ``blur_sigma`` voxels, default 10 % of the in-plane side) or
            ``mean`` (each example's per-channel mean, constant image).
    """
    if kind == "black":
        return torch.zeros_like(x)
    if kind == "blurred":
        sigma = default_blur_sigma(x.shape[2:]) if blur_sigma is None else blur_sigma
        return blur(x, sigma)
    if kind == "mean":
        dims = tuple(range(2, x.dim()))
        return x.mean(dim=dims, keepdim=True).expand_as(x).clone()
    raise ValueError(f"baseline must be one of {', '.join(BASELINES)}, not {kind!r}")


def activation_bytes(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Bytes of every leaf module's output for ONE example of
    ``input_shape`` (C, *spatial): what autograd keeps per example."""
    total = 0

    def count(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        x = torch.zeros((1, *input_shape), device=model_device(model))
        with model_session(model), torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def estimate_ig_memory(
    model: nn.Module, input_shape: Sequence[int], internal_batch_size: int
) -> int:
    """Estimated peak extra memory (bytes) of Integrated Gradients.

    ``internal_batch_size`` examples are in flight at once; each holds its
    activations and their gradients (2x :func:`activation_bytes`) and about
    four input-sized tensors (scaled input, its gradient, baseline, sum).
    Independent of ``n_steps`` (Captum sums the chunks as it goes).
    """
    per_input = int(np.prod(input_shape)) * 4
    per_example = 2 * activation_bytes(model, input_shape) + 4 * per_input
    return int(internal_batch_size) * per_example


def ig_batch_for_memory(
    model: nn.Module,
    input_shape: Sequence[int],
    memory_limit_mb: float,
    n_steps: int,
    n_examples: int = 1,
) -> int:
    """Largest internal batch (<= n_steps * n_examples, >= n_examples) whose
    :func:`estimate_ig_memory` stays within ``memory_limit_mb`` (MiB)."""
    per = estimate_ig_memory(model, input_shape, 1)
    fit = int(memory_limit_mb * 2**20 // max(per, 1))
    return int(min(max(fit, n_examples), n_steps * n_examples))


@register_method
class IntegratedGradients(Explainer):
    """Captum Integrated Gradients (see module docstring for parameters).

    Args:
        baseline: ``black``, ``blurred`` or ``mean``.
        n_steps: points on the straight path (Gauss-Legendre).
        internal_batch_size: interpolated inputs per forward pass; None
            picks the largest that fits ``memory_limit_mb``.
        blur_sigma: sigma of the blurred baseline, model-input voxels.
        memory_limit_mb: bound (MiB) used when ``internal_batch_size`` is None.
    """

    name = "integrated_gradients"
    default_sign = "positive"
    default_score = "log_prob"

    def __init__(
        self,
        model,
        baseline: str = "black",
        n_steps: int = 32,
        internal_batch_size: int | None = None,
        blur_sigma: float | None = None,
        memory_limit_mb: float = 1024.0,
        **kw,
    ):
        super().__init__(model, **kw)
        if baseline not in BASELINES:
            raise ValueError(
                f"baseline must be one of {', '.join(BASELINES)}, not {baseline!r}"
            )
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, not {n_steps}")
        self.baseline, self.n_steps = baseline, int(n_steps)
        self.internal_batch_size = internal_batch_size
        self.blur_sigma, self.memory_limit_mb = blur_sigma, memory_limit_mb
        self.used_internal_batch_size: int | None = None

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        from captum.attr import IntegratedGradients as CaptumIG

        b = x.shape[0]
        ibs = self.internal_batch_size
        if ibs is None:
            ibs = ig_batch_for_memory(
                self.model, x.shape[1:], self.memory_limit_mb, self.n_steps, b
            )
        # Captum never goes below one step for every example
        ibs = max(int(ibs), b)
        self.used_internal_batch_size = ibs
        base = make_baseline(x, self.baseline, self.blur_sigma)
        attr = CaptumIG(self.forward_fn(target)).attribute(
            x, baselines=base, n_steps=self.n_steps, internal_batch_size=ibs
        )
        return attr.sum(1)


@register_method
class SmoothGrad(Explainer):
    """Captum ``NoiseTunnel(Saliency)``: mean absolute gradient over
    ``n_samples`` copies with Gaussian noise of ``noise`` x the input's
    value range; ``samples_batch`` copies per forward pass; ``seed`` makes
    the noise repeatable."""

    name = "smoothgrad"

    def __init__(
        self,
        model,
        n_samples: int = 16,
        noise: float = 0.15,
        samples_batch: int = 8,
        seed: int = 0,
        **kw,
    ):
        super().__init__(model, **kw)
        self.n_samples, self.noise = int(n_samples), float(noise)
        self.samples_batch, self.seed = int(samples_batch), int(seed)

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        from captum.attr import NoiseTunnel, Saliency

        stdev = self.noise * float(x.detach().max() - x.detach().min()) or self.noise
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            attr = NoiseTunnel(Saliency(self.forward_fn(target))).attribute(
                x,
                nt_type="smoothgrad",
                nt_samples=self.n_samples,
                nt_samples_batch_size=min(self.samples_batch, self.n_samples),
                stdevs=stdev,
            )
        return attr.sum(1)


@register_method
class Gradient(Explainer):
    """Absolute input gradient (Captum ``Saliency``), channels summed."""

    name = "gradient"

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        from captum.attr import Saliency

        return Saliency(self.forward_fn(target)).attribute(x, abs=True).sum(1)


@register_method
class GradientXInput(Explainer):
    """Gradient x input (Captum ``InputXGradient``), channels summed."""

    name = "gradient_x_input"
    default_sign = "positive"

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        from captum.attr import InputXGradient

        return InputXGradient(self.forward_fn(target)).attribute(x).sum(1)


def gradient_x_input_per_slice(
    model: nn.Module, x: torch.Tensor | np.ndarray, target: Target
) -> np.ndarray:
    """Gradient x input of a (1, C, S, H, W) volume summed per slice: the
    first-order contribution of each slice to the target score, (S,)."""
    xt = fresh_input(x, model_device(model)).requires_grad_(True)
    with model_session(model):
        score = target(model(xt)).sum()
        (g,) = torch.autograd.grad(score, xt)
    return (g * xt).detach().sum(dim=(1, 3, 4))[0].cpu().numpy()
