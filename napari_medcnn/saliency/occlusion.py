"""Occlusion sensitivity (Zeiler & Fergus 2014), wrapped from Captum.

A window of the baseline value (0, black, by default) slides over the
model input; a location's attribution is the mean drop of the target score
over the windows that covered it (Captum ``Occlusion``).  Windows cover all
channels at once.  Users give window and stride in mm;
:func:`mm_to_voxels` converts them with the model-input voxel size, which
is the layer's spacing times the preprocessing's crop/resize factor
(``Geometry.input_spacing``).

The cost is one forward pass per window position, so a job can be
estimated before it starts: :func:`occlusion_cost` counts the passes and
times one of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from napari_medcnn.saliency.base import (
    Explainer,
    Target,
    fresh_input,
    model_device,
    model_session,
    register_method,
)


def mm_to_voxels(
    size_mm: float | Sequence[float],
    voxel_mm: Sequence[float],
    input_shape: Sequence[int],
) -> tuple[int, ...]:
    """Window or stride in mm -> whole model-input voxels per spatial axis.

    Args:
        size_mm: one length for every axis or one per spatial axis (mm).
        voxel_mm: size of a model-input voxel per axis (mm).
        input_shape: the model input's spatial shape (caps the result).

    Returns:
        rounded voxel counts, each at least 1 and at most the axis length.
    """
    nd = len(input_shape)
    sizes = [float(size_mm)] * nd if np.isscalar(size_mm) else list(size_mm)
    if len(sizes) != nd:
        raise ValueError(f"{len(sizes)} sizes given for {nd} spatial axes")
    if any(s <= 0 for s in sizes):
        raise ValueError(f"sizes must be > 0 mm, got {sizes}")
    return tuple(
        int(min(n, max(1, round(s / v))))
        for s, v, n in zip(sizes, voxel_mm, input_shape)
    )


def count_windows(
    input_shape: Sequence[int], window: Sequence[int], stride: Sequence[int]
) -> int:
    """Window positions per example, as Captum 0.9 places them:
    ``prod(ceil((n - w) / s) + 1)`` over the spatial axes."""
    return int(
        np.prod(
            [math.ceil((n - w) / s) + 1 for n, w, s in zip(input_shape, window, stride)]
        )
    )


@dataclass
class OcclusionEstimate:
    """What an occlusion job will cost.

    Attributes:
        window, stride: model-input voxels per spatial axis.
        windows: window positions per example.
        examples: examples (slices or volumes) to explain.
        forward_passes: model calls in total (one unoccluded call per batch
            plus one per ``perturbations_per_eval`` windows).
        seconds_per_pass: measured time of one such call (s).
        seconds: estimated total time (s).
    """

    window: tuple[int, ...]
    stride: tuple[int, ...]
    windows: int
    examples: int
    forward_passes: int
    seconds_per_pass: float
    seconds: float

    def message(self) -> str:
        return (
            f"occlusion needs {self.forward_passes} forward passes "
            f"({self.windows} windows x {self.examples} example(s)), about "
            f"{self.seconds:.0f} s"
        )


def occlusion_cost(
    model,
    x: torch.Tensor | np.ndarray,
    window: Sequence[int],
    stride: Sequence[int],
    n_examples: int = 1,
    perturbations_per_eval: int = 16,
    batch: int = 1,
) -> OcclusionEstimate:
    """Count the passes of an occlusion job and time one of them.

    Args:
        x: one example (1, C, *spatial) as the model takes it.
        window, stride: model-input voxels per spatial axis.
        n_examples: examples in the whole job; ``batch`` go in each call.
        perturbations_per_eval: windows evaluated per call.
    """
    spatial = tuple(x.shape[2:])
    windows = count_windows(spatial, window, stride)
    ppe = max(1, min(perturbations_per_eval, windows))
    calls_per_batch = 1 + math.ceil(windows / ppe)
    n_batches = math.ceil(n_examples / max(1, batch))
    xt = fresh_input(x, model_device(model))
    probe = xt.expand(min(batch, n_examples) * ppe, *xt.shape[1:])
    with model_session(model), torch.no_grad():
        t0 = time.perf_counter()
        model(probe)
        per_pass = time.perf_counter() - t0
    passes = calls_per_batch * n_batches
    return OcclusionEstimate(
        tuple(window),
        tuple(stride),
        windows,
        n_examples,
        passes,
        per_pass,
        per_pass * passes,
    )


@register_method
class Occlusion(Explainer):
    """Captum ``Occlusion`` with windows over all channels.

    Args:
        window, stride: model-input voxels, one per spatial axis (use
            :func:`mm_to_voxels` for mm).
        baseline: value of occluded voxels (0: black after normalisation).
        perturbations_per_eval: windows per forward pass (memory vs speed).
    """

    name = "occlusion"
    default_sign = "positive"
    default_score = "log_prob"

    def __init__(
        self,
        model,
        window: Sequence[int] = (8, 8),
        stride: Sequence[int] = (4, 4),
        baseline: float = 0.0,
        perturbations_per_eval: int = 16,
        **kw,
    ):
        super().__init__(model, **kw)
        self.window, self.stride = tuple(window), tuple(stride)
        self.baseline, self.ppe = float(baseline), int(perturbations_per_eval)

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        from captum.attr import Occlusion as CaptumOcclusion

        nd, c = x.dim() - 2, x.shape[1]
        if len(self.window) != nd or len(self.stride) != nd:
            raise ValueError(
                f"window {self.window} / stride {self.stride} need {nd} values "
                f"for input of shape {tuple(x.shape)}"
            )
        window = tuple(min(w, n) for w, n in zip(self.window, x.shape[2:]))
        with torch.no_grad():
            attr = CaptumOcclusion(self.forward_fn(target)).attribute(
                x,
                sliding_window_shapes=(c, *window),
                strides=(c, *self.stride),
                baselines=self.baseline,
                perturbations_per_eval=self.ppe,
            )
        # every channel of a location gets the same value: keep one
        return attr.mean(1)
