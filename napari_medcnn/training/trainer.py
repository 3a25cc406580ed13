"""The training loop, as a generator of progress events.

``fit(...)`` yields :class:`TrainEvent` after every batch and epoch and
returns a :class:`TrainResult` (the model holds the best validation weights).
Widgets run it in a worker (cancel = stop iterating); the CLI and the
scripts drain it.  It never touches Qt.
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
from torch.utils.data import DataLoader, Dataset

from .augment import DEFAULTS, build_augmentation


@dataclass
class TrainConfig:
    """Hyper-parameters (all recorded in the checkpoint's card).

    Attributes:
        epochs: maximum epochs.
        batch_size: samples per step.
        lr: peak learning rate (AdamW), cosine-annealed to 1% over ``epochs``.
        weight_decay: AdamW weight decay.
        augment: augmentation switches (see ``augment.py``); None disables.
        balance: ``"weighted_loss"`` (inverse class frequency) or ``"none"``.
        patience: early stopping after this many epochs without a lower
            validation loss (0 disables).
        freeze_backbone_epochs: train only the last linear layer first.
        seed: seeds torch, numpy and the augmentation.
        device: ``"cpu"``, ``"cuda"``...; default: best available.
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

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class TrainEvent:
    """Progress: ``kind`` is ``"batch"`` or ``"epoch"``; metrics per kind."""

    kind: str
    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    metrics: dict[str, float]


@dataclass
class TrainResult:
    """The trained model (best validation weights) and its curves."""

    model: nn.Module
    history: list[dict[str, float]]
    best_epoch: int
    stopped_early: bool
    val_logits: np.ndarray
    val_labels: np.ndarray


class ArrayDataset(Dataset):
    """(N, C, ...) float32 images and (N,) labels, with optional augmentation."""

    def __init__(self, x: np.ndarray, y: np.ndarray, transform=None):
        self.x = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        x = self.x[i]
        if self.transform is not None:
            x = torch.as_tensor(self.transform(x), dtype=torch.float32)
        return x, self.y[i]


def last_linear(model: nn.Module) -> nn.Linear:
    """The classification head: the model's last ``nn.Linear``."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("model has no linear classification layer")
    return linears[-1]


def _set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    head = {id(p) for p in last_linear(model).parameters()}
    for p in model.parameters():
        p.requires_grad_(not frozen or id(p) in head)


def _evaluate(model, loader, loss_fn, device) -> tuple[float, np.ndarray, np.ndarray]:
    model.eval()
    logits, labels, total = [], [], 0.0
    with torch.inference_mode():
        for x, y in loader:
            out = model(x.to(device))
            total += float(loss_fn(out, y.to(device))) * len(y)
            logits.append(out.float().cpu().numpy())
            labels.append(y.numpy())
    n = max(1, sum(len(y) for y in labels))
    return total / n, np.concatenate(logits), np.concatenate(labels)


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    config: TrainConfig | None = None,
) -> Generator[TrainEvent, None, TrainResult]:
    """Train ``model`` on ``train`` = (x, y), keep the best on ``val``.

    Args:
        model: any zoo model taking (B, C, ...) and returning logits.
        train, val: arrays (N, C, H, W) or (N, C, D, H, W) in [0, 1], labels (N,).
        config: hyper-parameters.

    Yields:
        TrainEvent per batch (metrics: loss, lr) and per epoch (train_loss,
        val_loss, val_accuracy, elapsed_s, eta_s).

    Returns:
        TrainResult with the best-validation-loss weights loaded.
    """
    from .metrics import accuracy, macro_auc, softmax

    cfg = config or TrainConfig()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    from ..models.checkpoint import best_device

    device = torch.device(cfg.device) if cfg.device else best_device()
    model.to(device)
    spatial_dims = train[0].ndim - 2
    aug = (
        build_augmentation(cfg.augment, spatial_dims, cfg.seed) if cfg.augment else None
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        ArrayDataset(*train, transform=aug),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=gen,
        drop_last=len(train[1]) > cfg.batch_size,
    )
    val_loader = DataLoader(ArrayDataset(*val), batch_size=max(64, cfg.batch_size))
    n_classes = last_linear(model).out_features
    weight = None
    if cfg.balance == "weighted_loss":
        counts = np.bincount(train[1], minlength=n_classes).astype(np.float64)
        w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_classes, 0.0)
        weight = torch.tensor(w, dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    opt = torch.optim.AdamW(
        [p for p in model.parameters()], lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    steps = cfg.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)),
    )
    best = (math.inf, copy.deepcopy(model.state_dict()), 0, None, None)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    since_best = 0
    stopped = False
    for epoch in range(1, cfg.epochs + 1):
        _set_backbone_frozen(model, epoch <= cfg.freeze_backbone_epochs)
        model.train()
        running, seen = 0.0, 0
        for step, (x, y) in enumerate(train_loader, 1):
            x, y = x.to(device), y.to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(y)
            seen += len(y)
            yield TrainEvent(
                "batch",
                epoch,
                cfg.epochs,
                step,
                len(train_loader),
                {"loss": loss.item(), "lr": opt.param_groups[0]["lr"]},
            )
        val_loss, logits, labels = _evaluate(model, val_loader, loss_fn, device)
        probs = softmax(logits)
        elapsed = time.perf_counter() - t0
        row = {
            "epoch": epoch,
            "train_loss": running / max(seen, 1),
            "val_loss": val_loss,
            "val_accuracy": accuracy(probs, labels),
            "val_auc": macro_auc(probs, labels),
            "elapsed_s": elapsed,
            "eta_s": elapsed / epoch * (cfg.epochs - epoch),
        }
        history.append(row)
        if val_loss < best[0]:
            best = (val_loss, copy.deepcopy(model.state_dict()), epoch, logits, labels)
            since_best = 0
        else:
            since_best += 1
        yield TrainEvent(
            "epoch", epoch, cfg.epochs, len(train_loader), len(train_loader), row
        )
        if cfg.patience and since_best >= cfg.patience:
            stopped = True
            break
    _set_backbone_frozen(model, False)
    model.load_state_dict(best[1])
    model.eval()
    return TrainResult(model, history, best[2], stopped, best[3], best[4])
