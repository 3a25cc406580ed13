"""The slice stage: teach a volume model's slice encoder where lesions are,
from lesion masks, before the volume stage.

A volume label only says that a lesion lies somewhere among a scan's slices.
With a few dozen labelled volumes that is too little to find a lesion a few
millimetres wide: a CNN+RNN trained end to end on 40 such volumes stayed at
chance, with or without the masks' pixel loss added to the volume loss
(CHANGELOG, session 14).  The masks say exactly where the lesion is, and a
volume holds dozens of slices, so single slices make a far larger training
set.

:func:`train_slices` trains the slice encoder and its evidence head
(``SliceEncoder(pool="evidence")``) on single prepared slices:

- every slice of a training volume that its mask touches (a *lesion slice*,
  repeated until an epoch holds :data:`MIN_SLICES_PER_EPOCH` slices), plus
  :data:`NEGATIVES_PER_LESION_SLICE` times as many lesion-free slices,
  drawn anew each epoch from a fixed pool per volume (slices of lesion
  volumes outside the lesion, and of volumes of classes without findings);
- light augmentation that keeps a slice's anatomy: left-right flip, shifts of
  up to :data:`MAX_SHIFT_PX` pixels, intensity scale and Gaussian noise;
- pixel-wise BCE with lesion pixels weighted :data:`LESION_PIXEL_WEIGHT`;
- the epoch with the lowest validation pixel loss (the validation volumes'
  slices, fixed) is kept.

A 3D evidence model (the 3D ResNet's lesion-mask variant,
:class:`~napari_medcnn.models.lesion_resnet3d.LesionResNet3D`) trains the
same way on 3D patches (``encoder.patch`` voxels) around the same slices:
the same epochs, augmentation and loss, one patch where a slice would be.

The volume stage (:func:`~.trainer.fit`) then trains the RNN, attention and
head on whole volumes, normally with the encoder frozen
(``freeze_backbone_epochs``).  Volumes whose mask is unknown (a finding class
without a drawn mask) take no part here.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from napari_medcnn.models.evidence import smooth
from napari_medcnn.training.control import TrainControl
from napari_medcnn.training.trainer import TrainConfig, TrainEvent

#: lesion-free slices per lesion slice in each epoch
NEGATIVES_PER_LESION_SLICE = 3
#: lesion-free slices kept per volume (drawn once, evenly over its depth)
NEGATIVE_POOL_PER_VOLUME = 16
#: weight of a lesion pixel in the BCE: lesions cover well under 1 % of a
#: slice, so equal weights learn "never"; 20 gives a map that is sure inside
#: lesions without lighting up every bright edge (fully balanced weights did)
LESION_PIXEL_WEIGHT = 20.0
#: slices an epoch holds at least (lesion slices repeat to fill it): a few
#: dozen lesion slices would otherwise make epochs of a dozen steps
MIN_SLICES_PER_EPOCH = 480
#: slices per optimiser step
SLICE_BATCH = 16
#: peak learning rate of the slice stage (AdamW, cosine to 1 %)
SLICE_LR = 2e-3
#: largest random in-plane shift in pixels
MAX_SHIFT_PX = 4


class SliceBank:
    """The slices of some prepared volumes that the slice stage uses.

    Attributes:
        x: (N, C, H, W) float32 slices in the model's input range.
        masks: (N, 1, H, W) float32 lesion fraction per pixel (0 for
            lesion-free slices).
        lesion: (N,) bool, the slice touches a lesion.
        volume: (N,) int, the row of the volume in the data set.
        core: (N,) bool, at least half of one pixel of the slice is lesion
            (slices at a lesion's edge that resampling left with a trace of
            it are lesion slices, not core ones).
    """

    def __init__(
        self, x: np.ndarray, masks: np.ndarray, lesion: np.ndarray, volume: np.ndarray
    ):
        self.x = torch.from_numpy(np.ascontiguousarray(x, np.float32))
        self.masks = torch.from_numpy(np.ascontiguousarray(masks, np.float32))
        self.lesion = np.asarray(lesion, bool)
        self.volume = np.asarray(volume, np.int64)
        self.core = (
            self.masks.flatten(1).amax(1).numpy() >= 0.5 if len(self) else self.lesion
        )

    def __len__(self) -> int:
        return len(self.lesion)

    @property
    def n_lesion(self) -> int:
        return int(self.lesion.sum())


def _crop(v, m, z: int, yx, patch, rng):
    """The (C, d, h, w) patch of volume ``v`` (C, S, H, W) and its mask
    (1, d, h, w) around slice ``z`` and in-plane point ``yx`` (None: a
    random one), moved by up to a quarter patch in-plane and kept inside
    the volume."""
    dims = v.shape[1:]
    size = [min(int(p), int(d)) for p, d in zip(patch, dims)]
    if yx is None:
        yx = [rng.uniform(0, d) for d in dims[1:]]
    else:
        yx = [c + rng.uniform(-p / 4, p / 4) for c, p in zip(yx, size[1:])]
    lo = [
        int(np.clip(round(c - p / 2), 0, d - p))
        for c, p, d in zip([z + 0.5, *yx], size, dims)
    ]
    sl = tuple(slice(a, a + p) for a, p in zip(lo, size))
    mask = np.zeros((1, *size), np.float32) if m is None else m[sl][None]
    return v[(slice(None), *sl)], np.asarray(mask, np.float32)


def slice_bank(
    x: Any,
    dense: Sequence[Any],
    rows: Sequence[int],
    seed: int = 0,
    patch: Sequence[int] | None = None,
) -> SliceBank:
    """Lesion slices and a pool of lesion-free slices of volumes ``rows``.

    Args:
        x: (N, C, S, H, W) prepared volumes (an array or a lazy stack read
            one volume at a time).
        dense: per volume, its prepared mask (S, H, W), 0.0 (no finding
            anywhere) or NaN (unknown: the volume is skipped); see
            :meth:`~.data.dataset.LabeledSet.dense_targets`.
        rows: the volumes to use.
        seed: picks the lesion-free slices (and the patches' positions).
        patch: (d, h, w) voxels: 3D patches instead of slices, one around
            each chosen slice (on the lesion's in-plane centre for a lesion
            slice, anywhere for a lesion-free one), for a 3D evidence model.
    """
    rng = np.random.default_rng(seed)
    xs, ms, lesion, vol = [], [], [], []
    for i in rows:
        m = dense[i]
        if np.ndim(m) == 0:
            if not np.isfinite(m):
                continue  # a finding somewhere, not drawn
            m = None
        elif not np.all(np.isfinite(m)):
            continue
        v = np.asarray(x[i], np.float32)  # (C, S, H, W)
        s = v.shape[1]
        touched = (
            np.zeros(s, bool)
            if m is None
            else np.asarray(m, np.float32).reshape(s, -1).max(1) > 0
        )
        free = np.flatnonzero(~touched)
        if len(free) > NEGATIVE_POOL_PER_VOLUME:
            # spread over the depth, with a random offset per volume
            step = len(free) / NEGATIVE_POOL_PER_VOLUME
            picks = rng.uniform(0, step) + step * np.arange(NEGATIVE_POOL_PER_VOLUME)
            free = free[picks.astype(int)]
        if m is not None:
            m = np.asarray(m, np.float32)
        for z in [*np.flatnonzero(touched), *free]:
            if patch is not None:
                yx = None
                if touched[z]:  # the lesion's in-plane centre (pixel centres)
                    where = np.nonzero(m[z])
                    w = m[z][where]
                    yx = [np.average(c, weights=w) + 0.5 for c in where]
                crop, mask = _crop(v, m, int(z), yx, patch, rng)
                xs.append(crop)
                ms.append(mask)
            else:
                xs.append(v[:, z])
                ms.append(
                    np.zeros((1, *v.shape[2:]), np.float32) if m is None else m[z][None]
                )
            lesion.append(bool(touched[z]))
            vol.append(int(i))
    if not xs:
        return SliceBank(
            np.zeros((0, 1, 1, 1)), np.zeros((0, 1, 1, 1)), np.zeros(0), np.zeros(0)
        )
    return SliceBank(np.stack(xs), np.stack(ms), np.array(lesion), np.array(vol))


def _augment(x: torch.Tensor, m: torch.Tensor, gen: torch.Generator):
    """Left-right flip, a small in-plane shift (image and mask alike), then
    intensity scale and noise (image only) -- per slice (or 3D patch) of
    the batch."""
    n = len(x)
    each = (n,) + (1,) * (x.ndim - 1)
    flip = (torch.rand(n, generator=gen) < 0.5).reshape(each)
    x = torch.where(flip, x.flip(-1), x)
    m = torch.where(flip, m.flip(-1), m)
    dy, dx = (
        int(v)
        for v in torch.randint(-MAX_SHIFT_PX, MAX_SHIFT_PX + 1, (2,), generator=gen)
    )
    x = torch.roll(x, (dy, dx), dims=(-2, -1))
    m = torch.roll(m, (dy, dx), dims=(-2, -1))
    scale = 0.9 + 0.2 * torch.rand(each, generator=gen)
    noise = 0.02 * torch.randn(x.shape, generator=gen)
    return x * scale + noise, m


def _pixel_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    if masks.shape[2:] != logits.shape[2:]:
        pool = F.adaptive_avg_pool3d if logits.ndim == 5 else F.adaptive_avg_pool2d
        masks = pool(masks, logits.shape[2:])
    weight = torch.tensor(LESION_PIXEL_WEIGHT, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, masks, pos_weight=weight)


def _slice_scores(encoder: nn.Module, bank: SliceBank, device):
    """Mean pixel loss and each slice's strongest (3x3-smoothed) lesion
    probability, in eval mode."""
    encoder.eval()
    total, scores = 0.0, []
    with torch.inference_mode():
        for i in range(0, len(bank), 64):
            xb = bank.x[i : i + 64].to(device)
            mb = bank.masks[i : i + 64].to(device)
            ev = encoder.evidence_map(xb)
            total += float(_pixel_loss(ev, mb)) * len(xb)
            p = torch.sigmoid(smooth(ev))
            scores.append(p.flatten(1).amax(1).float().cpu().numpy())
    return total / max(len(bank), 1), np.concatenate(scores) if scores else np.zeros(0)


def train_slices(
    model: nn.Module,
    x: Any,
    dense: Sequence[Any],
    train_rows: Sequence[int],
    val_rows: Sequence[int],
    config: TrainConfig,
    control: TrainControl | None = None,
) -> Generator[TrainEvent, None, dict[str, Any]]:
    """Train ``model.encoder`` (an evidence encoder) on slices, in place.

    Args:
        model: a CNN+RNN or slice-pool model whose encoder has
            ``pool="evidence"``, or a 3D evidence model whose encoder names
            its training ``patch`` size (then it trains on 3D patches
            around the same slices, see :func:`slice_bank`).
        x, dense: prepared volumes and their per-volume targets (see
            :func:`slice_bank`).
        train_rows, val_rows: the volumes of each side of the split (the
            same rows for both is allowed: the best epoch is then the one of
            lowest training-slice loss).
        config: ``slice_epochs``, ``seed`` and ``device`` are used.
        control: pause and cancel, checked between batches.

    Yields:
        ``"slice_batch"`` events (metrics ``loss``, ``elapsed_s``) and
        ``"slice_epoch"`` events (``train_loss``, ``val_loss``,
        ``val_slice_auc``: core lesion slices against lesion-free ones by
        their strongest evidence, ``elapsed_s``, ``eta_s``).

    Returns:
        The stage's record for the card: epochs run, best epoch, slice
        counts, best validation loss and slice AUC, whether cancelled.
    """
    from napari_medcnn.models.checkpoint import best_device
    from napari_medcnn.training.metrics import roc_auc

    encoder = model.encoder
    device = torch.device(config.device) if config.device else best_device()
    model.to(device)
    patch = getattr(encoder, "patch", None)  # a 3D evidence model
    train = slice_bank(x, dense, train_rows, config.seed, patch)
    val = slice_bank(x, dense, val_rows, config.seed + 1, patch)
    note: dict[str, Any] = {
        "epochs": config.slice_epochs,
        "lesion_slices": train.n_lesion,
        "lesion_free_slices": len(train) - train.n_lesion,
        "lesion_pixel_weight": LESION_PIXEL_WEIGHT,
        "negatives_per_lesion_slice": NEGATIVES_PER_LESION_SLICE,
        "best_epoch": 0,
        "cancelled": False,
    }
    if train.n_lesion == 0:
        note["skipped"] = "no lesion slice among the training volumes"
        return note
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    pos = np.flatnonzero(train.lesion)
    neg = np.flatnonzero(~train.lesion)
    # lesion slices repeat until an epoch holds MIN_SLICES_PER_EPOCH slices
    repeats = max(
        1,
        math.ceil(MIN_SLICES_PER_EPOCH / (len(pos) * (1 + NEGATIVES_PER_LESION_SLICE))),
    )
    pos = np.tile(pos, repeats)
    n_neg = NEGATIVES_PER_LESION_SLICE * len(pos)
    n_steps = math.ceil((len(pos) + n_neg) / SLICE_BATCH)
    epochs = config.slice_epochs
    opt = torch.optim.AdamW(encoder.parameters(), lr=SLICE_LR, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=epochs * n_steps, eta_min=SLICE_LR * 0.01
    )
    best = (math.inf, copy.deepcopy(encoder.state_dict()), 0, float("nan"))
    t0, paused = time.perf_counter(), 0.0
    for epoch in range(1, epochs + 1):
        take = rng.choice(neg, n_neg, replace=n_neg > len(neg))
        order = rng.permutation(np.concatenate([pos, take]))
        encoder.train()
        running = 0.0
        for step in range(1, n_steps + 1):
            while control is not None and control.paused:
                paused += control.wait_while_paused()
                m = {"elapsed_s": time.perf_counter() - t0 - paused}
                yield TrainEvent("paused", epoch, epochs, step, n_steps, m)
            if control is not None and control.cancelled:
                note["cancelled"] = True
                break
            idx = torch.from_numpy(order[(step - 1) * SLICE_BATCH : step * SLICE_BATCH])
            xb, mb = _augment(train.x[idx], train.masks[idx], gen)
            loss = _pixel_loss(encoder.evidence_map(xb.to(device)), mb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item() * len(idx)
            elapsed = time.perf_counter() - t0 - paused
            yield TrainEvent(
                "slice_batch", epoch, epochs, step, n_steps,
                {"loss": loss.item(), "elapsed_s": elapsed},
            )  # fmt: skip
        if note["cancelled"]:
            break
        val_loss, scores = _slice_scores(encoder, val, device)
        judged = val.core | ~val.lesion  # core lesion slices against free ones
        auc = roc_auc(scores[judged], val.core[judged]) if val.core.any() else math.nan
        elapsed = time.perf_counter() - t0 - paused
        row = {
            "train_loss": running / len(order),
            "val_loss": val_loss,
            "val_slice_auc": auc,
            "elapsed_s": elapsed,
            "eta_s": elapsed / epoch * (epochs - epoch),
        }
        # no validation slices (every validation volume unknown): the
        # training loss picks the epoch
        judge = val_loss if len(val) else row["train_loss"]
        if judge < best[0]:
            best = (judge, copy.deepcopy(encoder.state_dict()), epoch, auc)
        yield TrainEvent("slice_epoch", epoch, epochs, n_steps, n_steps, row)
    if best[2]:
        encoder.load_state_dict(best[1])
    note.update(
        best_epoch=best[2],
        val_loss=None if best[2] == 0 or not len(val) else best[0],
        val_slice_auc=None if not np.isfinite(best[3]) else float(best[3]),
    )
    encoder.eval()
    return note
