"""Shared machinery of the saliency methods (pytorch-grad-cam's design).

* **Targets** are small callables (``targets.py``).
* **Explainer** is the small base class.  A method class overrides one
  hook, :meth:`Explainer._attribute`; the base clones the input (never an
  inference tensor), enables gradients even under ``torch.no_grad`` or
  ``inference_mode``, switches in-place activations off, runs the model in
  eval mode and restores every module's own train/eval flag, and removes
  any hook a method registered, on success or on error (``__exit__`` too).
  Unlike pytorch-grad-cam it never changes the model's mode for longer than
  one call, lets ``IndexError`` through, and leaves normalisation to the
  caller (one scale per volume, see ``explain.py``).

Maps come out in the model-input grid, one value per spatial location:
(B, H, W) for 2D input, (B, D, H, W) for volumes (and for CNN+RNN input
(B, C, S, H, W): (B, S, H, W)).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from napari_medcnn.saliency.targets import ClassTarget, PredictedClass, Target

CONV_TYPES = (nn.Conv2d, nn.Conv3d)


# --- model state -----------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameterless one)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def model_session(model: nn.Module, eval_mode: bool = True) -> Iterator[None]:
    """Run a block with gradients on, in-place activations off and (by
    default) the model in eval mode; restore every module's own training
    flag and in-place flag afterwards, also after an error.

    Works under ``torch.no_grad()`` and ``torch.inference_mode()``.  Only
    modules' ``inplace`` attributes are switched (``nn.ReLU(inplace=True)``
    and friends); an in-place op written inside a ``forward`` cannot be.
    """
    modes = {m: m.training for m in model.modules()}
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    has_rnn = any(isinstance(m, nn.RNNBase) for m in model.modules())
    try:
        for m in inplace:
            m.inplace = False
        if eval_mode:
            model.eval()
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            if has_rnn and model_device(model).type == "cuda":
                # cuDNN's RNN backward refuses eval mode
                stack.enter_context(torch.backends.cudnn.flags(enabled=False))
            yield
    finally:
        for m, flag in modes.items():
            m.training = flag
        for m in inplace:
            m.inplace = True


def fresh_input(x: torch.Tensor | np.ndarray, device) -> torch.Tensor:
    """A normal (not inference-mode) float tensor copy of ``x`` on ``device``."""
    with torch.inference_mode(False):
        if isinstance(x, np.ndarray):
            return torch.tensor(x, dtype=torch.float32, device=device)
        return x.detach().to(device=device, dtype=torch.float32).clone()


# --- layers ----------------------------------------------------------------


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All 2D/3D convolutions of ``model``, in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, CONV_TYPES)]


def find_target_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module]:
    """The layer Grad-CAM hooks when none is given: the module whose output
    is the backbone's last spatial feature map.

    One forward pass on ``x[:1]`` records, in the order modules finish
    (containers after their children), every module's output shape.  The
    search starts at the last convolution to run whose output still has
    spatial extent (more than one location; 1x1 convolutions, i.e.
    projection shortcuts and transitions, are passed over when a larger
    kernel exists), then follows the modules that finish after it while
    the output keeps that convolution's batch size and spatial shape
    (channels may grow: DenseNet concatenates).  The last of them that
    runs as often as the convolution (shared modules, such as a ResNet
    block's one ReLU used twice, are passed over) is hooked.  So ResNet
    hooks its last stage (``layer4``: the block output after the residual
    sum and ReLU, not the pre-residual ``bn2``), DenseNet the ReLU on the
    final feature map, the seed CNN its last ``conv -> BatchNorm -> ReLU``
    (before the max-pool, finer) and CNN+RNN the same inside its slice
    encoder.  Pooling, flattening or the model's own output end the search.

    Returns:
        (name in ``model.named_modules()``, module).

    Raises:
        ValueError: the model has no convolution with spatial output.
    """
    stages = stage_layers(model, x)
    return stages[-1][:2]


def _forward_events(model: nn.Module, x: torch.Tensor):
    """(module -> name, [(module, output shape)] in the order modules
    finish) from one forward pass on ``x[:1]``."""
    names = {m: n for n, m in model.named_modules() if m is not model}
    events: list[tuple[nn.Module, tuple[int, ...]]] = []

    def record(module, _inp, out):
        if isinstance(out, torch.Tensor):
            events.append((module, tuple(out.shape)))

    handles = [m.register_forward_hook(record) for m in names]
    try:
        with model_session(model), torch.no_grad():
            model(fresh_input(x[:1], model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return names, events


def stage_layers(
    model: nn.Module, x: torch.Tensor
) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """The backbone's stages, shallow to deep: for each spatial size that
    convolutions produce, the module whose output is that stage's final
    feature map (the rules of :func:`find_target_layer`, applied to the
    last convolution of each size).  The last stage is the layer
    :func:`find_target_layer` returns.

    Returns:
        list of (name, module, spatial shape of its output).

    Raises:
        ValueError: the model has no convolution with spatial output.
    """
    if not conv_layers(model):
        raise no_conv_error(model)
    names, events = _forward_events(model, x)
    spatial = [
        i
        for i, (m, shape) in enumerate(events)
        if isinstance(m, CONV_TYPES) and int(np.prod(shape[2:])) > 1
    ]
    if not spatial:
        raise ValueError(
            "no convolution keeps spatial extent for this input size; give "
            "Grad-CAM a layer or use a gradient method"
        )
    wide = [i for i in spatial if max(events[i][0].kernel_size) > 1] or spatial
    calls: dict[nn.Module, int] = {}
    for m, _ in events:
        calls[m] = calls.get(m, 0) + 1
    # the last convolution of each spatial size (a later one of the same
    # size, after a smaller one, starts a new stage: U-shaped nets)
    ends = [
        i
        for k, i in enumerate(wide)
        if k + 1 == len(wide) or events[wide[k + 1]][1][2:] != events[i][1][2:]
    ]
    stages = []
    for at in ends:
        chosen = _stage_end(events, at, calls)
        name = names[chosen]
        if stages and stages[-1][0] == name:
            continue
        stages.append((name, chosen, tuple(events[at][1][2:])))
    return stages


def _stage_end(events, at: int, calls: dict) -> nn.Module:
    """From the convolution at ``events[at]``, the last module that keeps
    its batch size and spatial shape and runs as often as it does."""
    conv, shape = events[at]
    chosen = conv
    for m, out_shape in events[at + 1 :]:
        same = (
            len(out_shape) == len(shape)
            and out_shape[0] == shape[0]
            and out_shape[2:] == shape[2:]
        )
        if not same:
            break
        if calls[m] == calls[conv]:
            chosen = m
    return chosen


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (as in ``model.named_modules()``)."""
    modules = dict(model.named_modules())
    if name not in modules:
        convs = ", ".join(n for n, _ in conv_layers(model)) or "none"
        raise ValueError(f"model has no layer {name!r}; convolutions: {convs}")
    return modules[name]


# --- the base class --------------------------------------------------------

#: name -> method class, filled by :func:`register_method`
METHODS: dict[str, type[Explainer]] = {}


def register_method(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: make a method available under ``cls.name``."""
    METHODS[cls.name] = cls
    return cls


def gradient_methods() -> list[str]:
    """Methods that need only input gradients or forward passes."""
    load_methods()
    return sorted(n for n, c in METHODS.items() if not c.needs_conv)


def available_methods(model: nn.Module) -> list[str]:
    """Method names that work on ``model`` (CAM methods need a convolution)."""
    load_methods()
    has_conv = bool(conv_layers(model))
    return sorted(n for n, c in METHODS.items() if has_conv or not c.needs_conv)


def no_conv_error(model: nn.Module) -> ValueError:
    return ValueError(
        f"{type(model).__name__} has no convolutional layer, so Grad-CAM "
        "cannot run; only gradient methods are available: "
        f"{', '.join(gradient_methods())}"
    )


def load_methods() -> None:
    from napari_medcnn.saliency import cam, gradients, occlusion  # noqa: F401  (registers them)


class Explainer:
    """Base class: one saliency method bound to one model.

    Subclasses set ``name`` and override :meth:`_attribute`.  Use as
    ``Explainer(model, **params).attribute(x, target)`` or in a ``with``
    block; either way no hook outlives a call.

    Attributes:
        name: method name used by :func:`explain`.
        needs_conv: the method hooks a convolution (CAM family).
        default_score: how a :class:`ClassTarget` without a score is
            scored: ``logit`` for methods that read the gradient at the
            input (the gradient of log p fades as p -> 1, which would dim
            confident slices under one volume-wide scale), ``log_prob`` for
            path and perturbation methods (Integrated Gradients then sums
            to log p(x) - log p(baseline); occlusion reads drops in log p).
        default_sign: how :func:`explain` turns a signed map into an
            overlay: ``positive`` (clip at 0) or ``absolute``.
    """

    name: ClassVar[str] = ""
    needs_conv: ClassVar[bool] = False
    default_sign: ClassVar[str] = "absolute"
    default_score: ClassVar[str] = "logit"

    def __init__(self, model: nn.Module, eval_mode: bool = True, **params: Any):
        self.model = model
        self.eval_mode = eval_mode
        self.params = params
        self._handles: list[Any] = []

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def release(self) -> None:
        """Remove every hook this explainer registered."""
        while self._handles:
            self._handles.pop().remove()

    def hook(self, handle: Any) -> Any:
        """Keep a hook handle so that :meth:`release` removes it."""
        self._handles.append(handle)
        return handle

    def attribute(self, x: torch.Tensor | np.ndarray, target: Target) -> torch.Tensor:
        """Saliency of ``target`` for the batch ``x`` (B, C, *spatial).

        Returns:
            float tensor (B, *spatial) on the CPU, signed; channels are
            summed (CNN+RNN input (B, C, S, H, W) gives (B, S, H, W)).
        """
        if isinstance(target, PredictedClass):
            raise TypeError("resolve PredictedClass first (resolve_target)")
        target = self.scored(target)
        # the input always needs a gradient: frozen parameters must not
        # cut the path to hooked activations
        xt = fresh_input(x, model_device(self.model)).requires_grad_(True)
        try:
            with model_session(self.model, self.eval_mode):
                out = self._attribute(xt, target)
        finally:
            self.release()
        return out.detach().float().cpu()

    def scored(self, target: Target) -> Target:
        """``target`` with this method's score when it names none."""
        if isinstance(target, ClassTarget) and target.score is None:
            return ClassTarget(target.index, target.name, self.default_score)
        return target

    def _attribute(self, x: torch.Tensor, target: Target) -> torch.Tensor:
        """The one hook: (B, C, *spatial) input -> (B, *spatial) map."""
        raise NotImplementedError

    def forward_fn(self, target: Target) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> target(model(x))``: one score per example, for Captum."""

        def fwd(x: torch.Tensor) -> torch.Tensor:
            return target(self.model(x))

        return fwd


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur over the spatial axes of (B, C, *spatial); sigma in
    voxels of ``x``, truncated at 3 sigma, edges reflected."""
    import torch.nn.functional as F

    if sigma <= 0:
        return x.clone()
    nd = x.dim() - 2
    radius = max(1, int(3 * sigma + 0.5))
    k = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    b, c = x.shape[:2]
    out = x.reshape(b * c, 1, *x.shape[2:])
    conv = F.conv2d if nd == 2 else F.conv3d
    for axis in range(nd):
        shape = [1, 1] + [1] * nd
        shape[2 + axis] = k.numel()
        pad = [0, 0] * nd
        # F.pad lists the last axis first
        pad[2 * (nd - 1 - axis)] = pad[2 * (nd - 1 - axis) + 1] = radius
        mode = "reflect" if out.shape[2 + axis] > radius else "replicate"
        out = conv(F.pad(out, pad, mode=mode), k.reshape(shape))
    return out.reshape(x.shape)


def default_blur_sigma(spatial_shape: Sequence[int]) -> float:
    """Default blur for baselines: 10 % of the smallest in-plane side (voxels)."""
    return max(1.0, 0.1 * min(spatial_shape[-2:]))
