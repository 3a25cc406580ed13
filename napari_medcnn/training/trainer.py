"""The training loop, as a generator of progress events.

``fit(...)`` yields :class:`TrainEvent` after every batch and epoch (and
``"paused"`` events while a :class:`~.control.TrainControl` holds it) and
returns a :class:`TrainResult` (the model holds the best validation
weights).  Widgets run it in a worker and pause/cancel it through the
control; the CLI and the scripts drain it.  It never touches Qt.

A cancelled run returns the best weights validated so far; running out of
memory raises :class:`TrainingOutOfMemory` (with the best-so-far result
attached and advice to lower the batch or patch size).

Under ``torchrun`` (a ``torch.distributed`` group is up, see
:mod:`.distributed`) the model trains in DistributedDataParallel: each
process takes its share of the training set (``batch_size`` is per
process), validation is sharded and its predictions gathered, and the
metrics are summed across processes, so every rank sees the same history
and takes the same early-stopping decision.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler

from napari_medcnn.training import distributed
from napari_medcnn.training.control import TrainControl
from napari_medcnn.training.data.augment import (
    DEFAULTS,
    augment_with_mask,
    build_augmentation,
)

BALANCE_MODES = ("weighted_loss", "sampler", "none")
SCHEDULES = ("cosine", "constant")
_OOM = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)


class TrainingOutOfMemory(RuntimeError):
    """Training ran out of memory; ``result`` holds the best-so-far model."""

    def __init__(self, message: str, result: TrainResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class TrainConfig:
    """Hyper-parameters (all recorded in the checkpoint's card).

    Attributes:
        epochs: maximum epochs.
        batch_size: samples per step.
        lr: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        augment: augmentation switches (see ``augment.py``); None disables.
        balance: ``"weighted_loss"`` (inverse class frequency),
            ``"sampler"`` (class-balanced sampling with replacement) or
            ``"none"``.
        patience: early stopping after this many epochs without a lower
            validation loss (0 disables).
        freeze_backbone_epochs: train only the last linear layer first
            (BatchNorm statistics of the backbone are frozen too).
        seed: seeds torch, numpy, the sampler and the augmentation.
        device: ``"cpu"``, ``"cuda"``...; default: best available.
        schedule: ``"cosine"`` (annealed to 1% of ``lr`` over ``epochs``)
            or ``"constant"``.
        label_smoothing: cross-entropy label smoothing of the training loss
            (0 = none); validation loss is always plain cross-entropy.
        warmup_epochs: linear learning-rate warm-up over this many epochs
            (may be fractional; 0 = none).
        ema_decay: when > 0, an exponential moving average of the weights
            (and BatchNorm statistics) is kept with this decay per step
            (``torch.optim.swa_utils``); validation, the best-epoch choice
            and the returned model use the averaged weights, which are
            steadier from epoch to epoch than the raw ones.
        accumulate: batches whose gradients are summed before each
            optimiser step (gradient accumulation): batches of one or two
            volumes then update like a batch ``accumulate`` times larger.
        dense_weight: weight of the lesion-mask (evidence map) loss of a
            volume model with ``evidence`` slice features, added to the
            classification loss when the training data have masks.
        slice_epochs: with lesion masks and an evidence encoder, epochs of
            the slice stage (:mod:`.slice_stage`) that trains the encoder on
            single slices before the volume stage (0: none).
    """

    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: dict[str, bool] | None = field(default_factory=lambda: dict(DEFAULTS))
    balance: str = "weighted_loss"
    patience: int = 6
    freeze_backbone_epochs: int = 0
    seed: int = 0
    device: str | None = None
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0
    ema_decay: float = 0.0
    accumulate: int = 1
    dense_weight: float = 1.0
    slice_epochs: int = 0

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def validate(self) -> None:
        """Raise ValueError for settings that cannot run."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, not {self.lr}")
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {BALANCE_MODES}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError("label_smoothing must be in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("ema_decay must be in [0, 1)")
        if self.accumulate < 1:
            raise ValueError("accumulate must be at least 1")
        if self.slice_epochs < 0:
            raise ValueError("slice_epochs must be >= 0")
        if not self.dense_weight >= 0:
            raise ValueError("dense_weight must be >= 0")


@dataclass
class TrainEvent:
    """Progress.

    ``kind``: ``"batch"`` (metrics: loss, lr, elapsed_s, eta_s),
    ``"epoch"`` (train_loss, train_accuracy, val_loss, val_accuracy,
    val_auc, elapsed_s, eta_s), ``"paused"`` (elapsed_s), or the slice
    stage's ``"slice_batch"`` and ``"slice_epoch"`` (see
    :func:`~.slice_stage.train_slices`).  Elapsed and
    ETA are in seconds and exclude paused time.
    """

    kind: str
    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    metrics: dict[str, float]


@dataclass
class TrainResult:
    """The trained model (best validation weights) and its curves.

    ``stop_reason``: ``"completed"``, ``"early_stopping"`` or
    ``"cancelled"``; ``best_epoch`` 0 means no epoch finished (the model
    holds its starting weights).
    """

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    val_logits: np.ndarray | None
    val_labels: np.ndarray | None
    cancelled: bool = False
    stop_reason: str = "completed"
    train_time_s: float = 0.0


class ArrayDataset(Dataset):
    """(N, C, ...) float32 images and their targets, with optional
    augmentation: (N,) class indices, or (N, K) class probabilities (soft
    labels, e.g. a teacher ensemble's, for knowledge distillation).
    ``masks`` (optional, per example): a lesion mask (...) or one number
    for the whole mask (0: none, NaN: unknown); items are then
    ``(x, y, mask)``, the mask augmented with the image.

    ``x`` is an array (held as one tensor) or a lazy array-like such as
    :class:`~.data.volumes.VolumeStack` (one item read per sample).
    """

    def __init__(self, x, y: np.ndarray, transform=None, masks=None):
        self.masks = masks
        self.lazy = not isinstance(x, np.ndarray) or isinstance(x, np.memmap)
        self.x = (
            x
            if self.lazy
            else torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
        )
        y = np.asarray(y)
        self.y = torch.as_tensor(
            y.astype(np.float32) if y.ndim == 2 else y.astype(np.int64)
        )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = (
            torch.from_numpy(np.array(self.x[i], np.float32))
            if self.lazy
            else self.x[i]
        )
        if self.masks is not None:
            m = self.masks[i]
            if np.ndim(m) == 0:  # a whole volume of one value (0 or NaN)
                m = np.full(x.shape[1:], m, np.float32)
            m = torch.as_tensor(np.asarray(m, np.float32))
            if self.transform is not None:
                x, m = augment_with_mask(self.transform, x, m)
            return x, self.y[i], m
        if self.transform is not None:
            x = torch.as_tensor(self.transform(x), dtype=torch.float32)
        return x, self.y[i]


def last_linear(model: nn.Module) -> nn.Linear:
    """The classification head: the model's last ``nn.Linear``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no linear classification layer")
    return linears[-1]


def backbone(model: nn.Module) -> nn.Module | None:
    """The part that ``freeze_backbone_epochs`` freezes: a sequence model's
    slice ``encoder`` (its RNN, attention and heads keep learning), else
    None (everything but the last linear layer)."""
    enc = getattr(model, "encoder", None)
    return enc if isinstance(enc, nn.Module) else None


def _set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    enc = backbone(model)
    if enc is not None:
        frozen_ids = {id(p) for p in enc.parameters()}
        for p in model.parameters():
            p.requires_grad_(not frozen or id(p) not in frozen_ids)
        return
    head = {id(p) for p in last_linear(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in head)


def _freeze_norm_stats(model: nn.Module) -> None:
    model = backbone(model) or model
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _evaluate(
    model, loader, loss_fn, device, dense_weight: float = 1.0
) -> tuple[float, np.ndarray, np.ndarray]:
    model.eval()
    logits, labels, total = [], [], 0.0
    dense_loss = getattr(model, "dense_loss", None)
    with torch.inference_mode():
        for x, y, *masks in loader:
            out = model(x.to(device))
            loss = float(loss_fn(out, y.to(device)))
            if masks and dense_loss is not None:  # lesion masks count too
                dense = dense_loss(masks[0].to(device))
                loss += 0.0 if dense is None else dense_weight * float(dense)
            total += loss * len(y)
            logits.append(out.float().cpu().numpy())
            labels.append(y.numpy())
    n = max(1, sum(len(y) for y in labels))
    return total / n, np.concatenate(logits), np.concatenate(labels)


def _validate(model, loader, loss_fn, device, labels, dense_weight: float = 1.0):
    """Mean validation loss, logits and labels of every validation row.

    Under torchrun ``loader`` holds this process's
    :func:`~.distributed.shard` of the rows: the loss is averaged and the
    logits gathered across processes (the same on every rank), and
    ``labels`` (all rows) are returned.
    """
    if not distributed.current().enabled:
        return _evaluate(model, loader, loss_fn, device, dense_weight)
    m = len(loader.dataset)  # 0 when there are more processes than rows
    loss, logits = 0.0, np.zeros((0, 0), np.float32)
    if m:
        loss, logits, _ = _evaluate(model, loader, loss_fn, device, dense_weight)
    total, n = distributed.sum_across(loss * m, m)
    labels = np.asarray(labels, dtype=np.int64)
    return total / max(n, 1), distributed.gather_rows(logits, len(labels)), labels


def hard_labels(y):
    """(N,) class indices of targets that are indices or (N, K) soft labels
    (numpy arrays or torch tensors alike; numpy input gives int64)."""
    if isinstance(y, torch.Tensor):
        return y.argmax(1) if y.ndim == 2 else y
    y = np.asarray(y)
    return (y.argmax(1) if y.ndim == 2 else y).astype(np.int64)


def _loaders(train, val, cfg: TrainConfig, n_classes: int, aug):
    gen = torch.Generator().manual_seed(cfg.seed)
    y = hard_labels(train[1])
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    sampler = None
    w = 1.0 / np.maximum(counts, 1)[y] if cfg.balance == "sampler" else None
    masks = train[2] if len(train) > 2 else None
    train_set = ArrayDataset(train[0], train[1], transform=aug, masks=masks)
    val_set = ArrayDataset(val[0], val[1], masks=val[2] if len(val) > 2 else None)
    val_batch = cfg.batch_size if val_set.lazy else max(64, cfg.batch_size)
    if distributed.current().enabled:
        # each process: its share of the training rows, its shard of the
        # validation rows (whole, unpadded: gathered back after evaluation)
        sampler = distributed.train_sampler(train_set, cfg.seed, w)
        train_loader = DataLoader(
            train_set,
            batch_size=cfg.batch_size,
            sampler=sampler,
            drop_last=sampler.num_samples > cfg.batch_size,
        )
        shard = Subset(val_set, distributed.shard(len(val_set)))
        return train_loader, DataLoader(shard, batch_size=val_batch), counts
    if w is not None:
        sampler = WeightedRandomSampler(
            torch.as_tensor(w), len(y), replacement=True, generator=gen
        )
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=gen if sampler is None else None,
        drop_last=len(y) > cfg.batch_size,
    )
    val_loader = DataLoader(val_set, batch_size=val_batch)
    return train_loader, val_loader, counts


def oom_advice(cfg: TrainConfig) -> str:
    """The message shown when training runs out of memory."""
    return (
        f"out of memory with batch size {cfg.batch_size}: lower the batch size "
        f"(e.g. {max(1, cfg.batch_size // 2)}), the patch size or the image "
        "size, or free memory; the parent model was not changed"
    )


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainConfig | None = None,
    control: TrainControl | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train ``model`` in place on ``train`` = (x, y), keep the best on ``val``.

    Args:
        model: any zoo model taking (B, C, ...) and returning logits
            (deep-copy a shared/cached model first: it is changed in place).
        train, val: arrays (N, C, H, W) or (N, C, D, H, W) in [0, 1], labels
            (N,); training targets may instead be (N, K) class probabilities
            (soft labels: the loss is then the cross-entropy against them,
            class weights and label smoothing applied as for indices).
        config: hyper-parameters.
        control: pause/cancel flags checked between batches.

    Yields:
        :class:`TrainEvent` per batch, per epoch, and while paused.

    Returns:
        TrainResult with the best-validation-loss weights loaded.

    Raises:
        TrainingOutOfMemory: with ``.result`` (best so far) and advice.
    """
    from napari_medcnn.models.calibration import softmax
    from napari_medcnn.models.checkpoint import best_device
    from napari_medcnn.training.metrics import accuracy, macro_auc

    cfg = config or TrainConfig()
    cfg.validate()
    # under torchrun each rank draws its own dropout and augmentation
    # (rank 0, and a single process, draw what they always did)
    seed = cfg.seed + distributed.current().rank
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = torch.device(cfg.device) if cfg.device else best_device()
    model.to(device)
    spatial_dims = train[0].ndim - 2
    aug = build_augmentation(cfg.augment, spatial_dims, seed) if cfg.augment else None
    n_classes = last_linear(model).out_features
    train_loader, val_loader, counts = _loaders(train, val, cfg, n_classes, aug)
    weight = None
    if cfg.balance == "weighted_loss":
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
        weight = torch.tensor(w, dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    val_loss_fn = nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.AdamW(
        list(model.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    n_steps = len(train_loader)
    # a volume model with an evidence map learns from lesion masks too
    dense_loss = getattr(model, "dense_loss", None) or (lambda _m: None)
    acc = max(1, min(cfg.accumulate, n_steps))
    updates = math.ceil(n_steps / acc)  # optimiser steps per epoch
    steps = cfg.epochs * updates
    warm = max(cfg.warmup_epochs * updates, 1.0)

    def lr_factor(s: int) -> float:
        f = min(1.0, (s + 1) / warm) if cfg.warmup_epochs else 1.0
        if cfg.schedule == "cosine":
            f *= 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        return f

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    ema = None
    if cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(
            model,
            multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
            use_buffers=True,
        )
    best = (math.inf, copy.deepcopy(model.state_dict()), 0, None, None)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    paused_s = 0.0
    since_best = 0
    reason = "completed"
    net, net_frozen = model, None  # the module that trains (DDP under torchrun)

    def elapsed() -> float:
        return time.perf_counter() - t0 - paused_s

    def result(why: str) -> TrainResult:
        _set_backbone_frozen(model, False)
        model.load_state_dict(best[1])
        model.eval()
        return TrainResult(
            model, history, best[2], why == "early_stopping", best[3], best[4],
            cancelled=why == "cancelled", stop_reason=why, train_time_s=elapsed(),
        )  # fmt: skip

    try:
        for epoch in range(1, cfg.epochs + 1):
            frozen = epoch <= cfg.freeze_backbone_epochs
            _set_backbone_frozen(model, frozen)
            if frozen != net_frozen:  # DDP syncs what requires grad at wrap
                net, net_frozen = distributed.wrap(model, device), frozen
            if hasattr(train_loader.sampler, "set_epoch"):
                train_loader.sampler.set_epoch(epoch)
            model.train()
            if frozen:
                _freeze_norm_stats(model)
            running, seen, correct = 0.0, 0, 0
            for step, batch in enumerate(train_loader, 1):
                x, y = batch[0], batch[1]
                masks = batch[2].to(device) if len(batch) > 2 else None
                while control is not None and control.paused:
                    paused_s += control.wait_while_paused()
                    m = {"elapsed_s": elapsed()}
                    yield TrainEvent("paused", epoch, cfg.epochs, step, n_steps, m)
                if distributed.any_rank(control is not None and control.cancelled):
                    return result("cancelled")
                x, y = x.to(device), y.to(device)
                if (step - 1) % acc == 0:
                    opt.zero_grad(set_to_none=True)
                    in_group = min(acc, n_steps - step + 1)
                stepping = step % acc == 0 or step == n_steps
                with distributed.no_sync(net, stepping):
                    out = net(x)
                    loss = loss_fn(out, y)
                    dense = dense_loss(masks) if masks is not None else None
                    if dense is not None:
                        loss = loss + cfg.dense_weight * dense
                    (loss / in_group).backward()
                if stepping:
                    opt.step()
                    sched.step()
                    if ema is not None:
                        ema.update_parameters(model)
                running += loss.item() * len(y)
                correct += int((out.argmax(1) == hard_labels(y)).sum())
                seen += len(y)
                done = (epoch - 1) * n_steps + step
                yield TrainEvent(
                    "batch", epoch, cfg.epochs, step, n_steps,
                    {
                        "loss": loss.item(),
                        "lr": opt.param_groups[0]["lr"],
                        "elapsed_s": elapsed(),
                        "eta_s": elapsed() / done * (cfg.epochs * n_steps - done),
                    },
                )  # fmt: skip
            running, correct, seen = distributed.sum_across(running, correct, seen)
            distributed.average_buffers(model)  # BatchNorm statistics
            judged = model if ema is None else ema.module
            if ema is not None:
                distributed.average_buffers(judged)
            val_loss, logits, labels = _validate(
                judged, val_loader, val_loss_fn, device, val[1], cfg.dense_weight
            )
            probs = softmax(logits)
            row = {
                "epoch": epoch,
                "train_loss": running / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": accuracy(probs, labels),
                "val_auc": macro_auc(probs, labels),
                "elapsed_s": elapsed(),
                "eta_s": elapsed() / epoch * (cfg.epochs - epoch),
            }
            history.append(row)
            if val_loss < best[0]:
                best = (
                    val_loss,
                    copy.deepcopy(judged.state_dict()),
                    epoch,
                    logits,
                    labels,
                )
                since_best = 0
            else:
                since_best += 1
            yield TrainEvent("epoch", epoch, cfg.epochs, n_steps, n_steps, row)
            if cfg.patience and since_best >= cfg.patience:
                reason = "early_stopping"
                break
    except _OOM:
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise TrainingOutOfMemory(oom_advice(cfg), result("out_of_memory")) from None
    return result(reason)
