"""An inference copy of a zoo model: BatchNorm folded, ReLU after max-pool.

:func:`fuse_for_inference` returns a deep copy in eval mode whose outputs
equal the original's to float32 rounding:

* each ``ConvNd`` whose only consumer is a ``BatchNormNd`` gets the norm's
  eval-mode scale and shift folded into its weights (the norm becomes
  ``Identity``), found in ``nn.Sequential`` containers and, when the model
  can be traced by ``torch.fx``, anywhere in ``forward``;
* ``ReLU`` followed by ``MaxPoolNd`` in a ``Sequential`` is swapped to
  max-pool then in-place ReLU: both are monotone, so the result is exactly
  the same, and the ReLU touches a quarter of the values;
* optionally channels-last weights, hence activations (faster oneDNN
  convolutions and pooling on CPU).

The copy keeps the original class and methods (``embed``,
``forward_with_slices``), so every caller can use it in place of the
original.  The original is left untouched (saliency needs its gradients).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONV_BN = (
    (nn.Conv1d, nn.BatchNorm1d),
    (nn.Conv2d, nn.BatchNorm2d),
    (nn.Conv3d, nn.BatchNorm3d),
)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return any(type(conv) is c and type(bn) is b for c, b in _CONV_BN) and bool(
        getattr(bn, "track_running_stats", False)
    )


def _rewrite_sequential(seq: nn.Sequential) -> int:
    """Fold conv->BN pairs and swap ReLU->MaxPool inside one Sequential.

    Returns the number of changes.
    """
    names = list(seq._modules)
    changes = 0
    for a, b in zip(names, names[1:]):
        first, second = seq._modules[a], seq._modules[b]
        if _foldable(first, second):
            seq._modules[a] = fuse_conv_bn_eval(first, second)
            seq._modules[b] = nn.Identity()
            changes += 1
        elif (
            type(first) is nn.ReLU
            and isinstance(second, _POOLS)
            and not second.return_indices
        ):
            seq._modules[a] = second
            seq._modules[b] = nn.ReLU(inplace=True)
            changes += 1
    return changes


def _fold_traced(model: nn.Module) -> int:
    """Fold conv->BN pairs that ``torch.fx`` finds in ``forward``.

    The pairs are folded in the model itself (not the traced graph), so its
    class and other methods survive.  Models that cannot be traced are left
    alone.  Returns the number of folds.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # data-dependent control flow, shape unpacking...
        return 0
    mods = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folds = 0
    for node in graph.nodes:
        if node.op != "call_module" or len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op != "call_module" or user.args[:1] != (node,):
            continue
        conv, bn = mods.get(node.target), mods.get(user.target)
        if conv is None or bn is None or not _foldable(conv, bn):
            continue
        if calls[node.target] != 1 or calls[user.target] != 1:
            continue  # a module reused elsewhere cannot be changed safely
        _set_submodule(model, node.target, fuse_conv_bn_eval(conv, bn))
        _set_submodule(model, user.target, nn.Identity())
        folds += 1
    return folds


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    owner = root.get_submodule(parent) if parent else root
    setattr(owner, name, module)


def fuse_for_inference(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """A fused eval-mode deep copy of ``model`` (see module docstring).

    Args:
        model: any zoo model (eval-mode BatchNorm statistics are used).
        channels_last: store 4D weights channels-last; 2D convolutions then
            answer channels-last activations whatever the input's layout.

    Returns:
        The copy, in eval mode, on the original's device.
    """
    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        if isinstance(module, nn.Sequential):
            _rewrite_sequential(module)
    _fold_traced(fused)
    if channels_last:
        # Module.to() gives even one-input-channel weights real channels-last
        # strides (Tensor.contiguous() keeps that ambiguous case NCHW), so a
        # (B, 1, H, W) input yields channels-last activations too: max-pooling
        # NCHW activations is ~10x slower on CPU than channels-last ones.
        fused = fused.to(memory_format=torch.channels_last)
    for module in fused.modules():
        if isinstance(module, nn.RNNBase):
            # a deep copy's GRU/LSTM weights are separate tensors; cuDNN
            # wants one block, or it compacts them (and warns) on every call
            module.flatten_parameters()
    return fused
