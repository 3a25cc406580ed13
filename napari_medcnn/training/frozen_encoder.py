"""The volume stage with a frozen slice encoder: encode once, train the head.

After the slice stage (:mod:`.slice_stage`) a lesion-mask model's slice
encoder stays frozen for the whole volume stage.  Running it on every slice
of every volume in every epoch then only recomputes the same numbers: on 2
CPU cores that was about 65 s per epoch for 40 volumes of 48 slices of
96 x 96, nearly all of it the encoder.  :func:`fit_head` encodes each volume
once (eval mode, as inference does) and trains the sequence part (RNN,
attention, evidence gate, head) on the stored slice features with
:func:`~.trainer.fit`, so an epoch takes well under a second and the head
can train until its validation loss stops falling (at a peak learning rate
of at least :data:`HEAD_MIN_LR`).

The price: volume augmentation cannot reach features computed once (the
slice stage augmented the slices already), so the head trains on the
volumes as they are.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from napari_medcnn.training.control import TrainControl
from napari_medcnn.training.trainer import TrainConfig, TrainEvent, TrainResult, fit

#: the head's smallest peak learning rate: a few small layers on fixed
#: features (a probe) move too slowly at the rates that suit a whole network
HEAD_MIN_LR = 1e-2


class _Head(nn.Module):
    """The part of a sequence model after its encoder, as a model of slice
    features (B, S, F); its parameters are the model's own (trained in
    place).  The encoder is held outside the module tree, so the optimiser
    and the trainer see only the head."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.parts = nn.ModuleDict(
            {n: m for n, m in model.named_children() if n != "encoder"}
        )
        self._model = [model]  # a list: not registered as a submodule

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        out = self._model[0].forward_features(feats)
        return getattr(out, "logits", out)  # sequence models: SequenceOutput


def can_fit_head(model: nn.Module, config: TrainConfig) -> bool:
    """A sequence model whose encoder stays frozen for every epoch."""
    return (
        hasattr(model, "forward_features")
        and isinstance(getattr(model, "encoder", None), nn.Module)
        and config.freeze_backbone_epochs >= config.epochs
    )


def encode_volumes(
    model: nn.Module, x: Any, rows, device, control: TrainControl | None = None
) -> Generator[TrainEvent, None, np.ndarray]:
    """(N, S, F) slice features (a 3D evidence model: (N, 3) summaries) of
    volumes ``x[rows]`` by the frozen encoder in eval mode; yields
    ``"features"`` events (step i of N)."""
    enc = model.encoder.eval()
    rows = list(rows)
    out = []
    with torch.inference_mode():
        for i, r in enumerate(rows, 1):
            if control is not None and control.cancelled:
                break
            v = torch.from_numpy(np.array(x[r], np.float32))[None].to(device)
            out.append(enc(v)[0].float().cpu().numpy())
            yield TrainEvent("features", 1, 1, i, len(rows), {})
    return np.stack(out) if out else np.zeros((0, 0, 0), np.float32)


def fit_head(
    model: nn.Module,
    x: Any,
    y: np.ndarray,
    train_rows,
    val_rows,
    config: TrainConfig,
    control: TrainControl | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train ``model``'s sequence head on its frozen encoder's features.

    Arguments as :func:`~.trainer.fit` takes them, but as the volumes ``x``
    and their labels ``y`` with the rows of each side.  Yields
    ``"features"`` events while encoding, then the trainer's events.
    Returns the trainer's result with ``model`` (the whole network, eval
    mode) as its model.
    """
    from napari_medcnn.models.checkpoint import best_device

    device = torch.device(config.device) if config.device else best_device()
    model.to(device)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    ftr = yield from encode_volumes(model, x, train_rows, device, control)
    fva = yield from encode_volumes(model, x, val_rows, device, control)
    for p in model.encoder.parameters():
        p.requires_grad_(True)
    if control is not None and control.cancelled:
        return TrainResult(
            model.eval(), [], 0, False, None, None, cancelled=True,
            stop_reason="cancelled",
        )  # fmt: skip
    head = _Head(model)
    cfg = replace(
        config,
        augment=None,
        freeze_backbone_epochs=0,
        lr=max(config.lr, HEAD_MIN_LR),
    )
    res = yield from fit(
        head, (ftr, y[list(train_rows)]), (fva, y[list(val_rows)]), cfg, control
    )
    res.model = model.eval()
    return res
