"""Fine-tune (or train from scratch) on labelled examples, end to end.

:func:`finetune` is the one generator the widget, the CLI and the
benchmark drive: it checks the labels, starts from the parent checkpoint
(a copy: the parent is never changed) or a fresh network, plans the split
(by patient/study, k-fold for few labels), teaches an evidence encoder from
lesion-mask slices first when there are masks (:mod:`.slice_stage`), trains
with :func:`~.trainer.fit` (yielding its events; k-fold events carry ``fold``
and ``n_folds`` in their metrics), then measures the confusion matrix and
per-class metrics, judges the curves (:func:`~.advice.recommend`) and
writes the checkpoint and its card atomically.  A cancelled run writes
nothing unless asked; its :class:`FinetuneResult` can still be saved.

Under ``torchrun`` every process runs this same function: each plans the
same split (checked across processes), trains its share in
DistributedDataParallel (see :mod:`.distributed`), and only rank 0 writes
the checkpoint; the card's ``provenance["distributed"]`` records the world
size, the backend and whether the replicas ended identical.
"""

from __future__ import annotations

import copy
import os
import platform
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from napari_medcnn.models.card import ModelCard
from napari_medcnn.training import distributed
from napari_medcnn.training.advice import Advice, recommend
from napari_medcnn.training.control import TrainControl
from napari_medcnn.training.data.dataset import LabeledSet
from napari_medcnn.training.data.splits import MIN_PER_CLASS, check_labels, plan_split
from napari_medcnn.training.frozen_encoder import can_fit_head, fit_head
from napari_medcnn.training.slice_stage import train_slices
from napari_medcnn.training.trainer import TrainConfig, TrainEvent, TrainResult, fit


@dataclass
class FinetuneResult:
    """What a run produced.

    Attributes:
        model: the trained network (eval mode, CPU or the run's device).
        card: its card (``model_id`` set once saved).
        history: per-epoch metrics (of the last fold for k-fold).
        advice: "still improving" / "plateaued" / "overfitting" and why.
        metrics: validation summary (accuracy, AUC, ECE, confusion_matrix,
            per_class); out-of-fold for k-fold.
        cancelled: the user stopped the run (the model is the best so far).
        stop_reason: ``completed``, ``early_stopping`` or ``cancelled``.
        checkpoint: the written weights path, or None.
        warnings: split fallbacks and skipped labels.
    """

    model: nn.Module
    card: ModelCard
    history: list[dict[str, float]]
    advice: Advice
    metrics: dict[str, Any]
    cancelled: bool
    stop_reason: str
    checkpoint: Path | None = None
    warnings: list[str] = field(default_factory=list)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint (safetensors + JSON card) atomically."""
        from napari_medcnn.models.checkpoint import save_checkpoint

        self.checkpoint = save_checkpoint(self.model, self.card, path)
        return self.checkpoint

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary (metrics, advice, counts; no arrays)."""
        m = self.metrics
        return {
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "model_id": self.card.model_id,
            "parent": self.card.parent,
            "classes": list(self.card.classes),
            "label_counts": self.card.provenance.get("label_counts"),
            "split": self.card.provenance.get("split"),
            "accuracy": m.get("accuracy"),
            "auc": m.get("auc"),
            "confusion_matrix": m.get("confusion_matrix"),
            "per_class": m.get("per_class"),
            "advice": self.advice.to_dict(),
            "stop_reason": self.stop_reason,
            "epochs_run": len(self.history),
            "warnings": list(self.warnings),
        }


def predict_logits(
    model: nn.Module, x: np.ndarray, batch_size: int = 64, device=None
) -> np.ndarray:
    """Logits (N, K) of ``model`` (eval mode) for prepared inputs ``x``."""
    dev = device or next(model.parameters()).device
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size]))
            out.append(model(xb.to(dev)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _drive(gen, extra: dict[str, float]):
    """Re-yield ``gen``'s events with ``extra`` metrics; return its value."""
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value
        ev.metrics.update(extra)
        yield ev


def _train_rows(model, data, dense, tr, va, cfg, control, extra):
    """Train ``model`` on rows ``tr``, validated on ``va`` (the same rows
    for a final run): the slice stage first when lesion masks teach an
    evidence encoder, then the volume stage (on features encoded once when
    the encoder stays frozen).  Returns (TrainResult, slice-stage note or
    None); yields the events with ``extra`` metrics."""
    note = None
    if dense is not None and cfg.slice_epochs:
        stage = train_slices(model, data.x, dense, tr, va, cfg, control)
        note = yield from _drive(stage, extra)
    if note is not None and can_fit_head(model, cfg):
        # the encoder stays frozen: encode once, train the head
        gen = fit_head(model, data.x, data.y, tr, va, cfg, control)
    else:
        train, val = _subset(data, dense, tr), _subset(data, dense, va)
        gen = fit(model, train, val, cfg, control)
    res = yield from _drive(gen, extra)
    return res, note


def _subset(data, dense, rows) -> tuple:
    """(x, y[, masks]) of ``rows``; every row in order is the data itself
    (no copy)."""
    if len(rows) == len(data) and np.array_equal(rows, np.arange(len(data))):
        out = (data.x, data.y)
        return out if dense is None else (*out, dense)
    out = (data.x[rows], data.y[rows])
    # masks count in training and in validation
    return out if dense is None else (*out, [dense[i] for i in rows])


def _versions() -> dict[str, str]:
    import monai

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
    }


def finetune(
    data: LabeledSet,
    parent: Any = None,
    *,
    out: str | os.PathLike | None = None,
    config: TrainConfig | None = None,
    control: TrainControl | None = None,
    arch: str = "seed_cnn",
    arch_kwargs: dict[str, Any] | None = None,
    record: dict[str, Any] | None = None,
    val_fraction: float = 0.2,
    kfold: int | str | None = "auto",
    min_per_class: int = MIN_PER_CLASS,
    save_cancelled: bool = False,
    name: str = "",
    provenance: dict[str, Any] | None = None,
    encoder_from: Any = None,
) -> Generator[TrainEvent, None, FinetuneResult]:
    """Train on ``data`` and write the checkpoint.

    Args:
        data: prepared examples (see ``dataset.py``), prepared with the
            parent's card preprocessing (or ``record`` for a fresh start).
        parent: checkpoint path or LoadedModel to start from; None trains
            ``arch`` from scratch.
        out: where to write the checkpoint (None: don't write).  Refused
            when it is the parent's own file.
        config: hyper-parameters (``seed`` is recorded).
        control: pause/cancel flags (see ``control.py``).
        arch, arch_kwargs, record: the fresh network and its preprocessing.
        val_fraction: validation share of a hold-out split.
        kfold: folds, None for hold-out, or ``"auto"`` (few labels -> k-fold).
        min_per_class: examples needed per class (checked before anything).
        save_cancelled: write ``out`` even when the run was cancelled.
        name: the new model's display name.
        provenance: extra entries for the card (sources, tool...).
        encoder_from: with ``parent=None`` and a volume ``arch`` (see
            :data:`~.transfer.VOLUME_ARCHS`): the 2D checkpoint that starts a
            CNN+RNN's slice encoder; ``record`` is then the volume record.

    Yields:
        :class:`TrainEvent` from the trainer (k-fold adds ``fold``/``n_folds``).

    Raises:
        NotEnoughLabels, ValueError: bad input, before any training.
        TrainingOutOfMemory: with advice; nothing is written.
    """
    from napari_medcnn.training.metrics import fit_temperature, summarize
    from napari_medcnn.training.transfer import (
        is_volume_arch,
        start_model,
        start_volume_model,
    )

    cfg = copy.deepcopy(config) if config is not None else TrainConfig()
    cfg.validate()
    check_labels(data.counts(), min_per_class)
    if out is not None and parent is not None and not hasattr(parent, "card"):
        from napari_medcnn.models.checkpoint import weights_path_for

        if weights_path_for(out).resolve() == weights_path_for(parent).resolve():
            raise ValueError("the output path is the parent model: choose another")
    # the new layers' starting weights come from the run's seed too, so a
    # run is repeatable whatever ran before it in the process
    torch.manual_seed(cfg.seed)
    if parent is None and is_volume_arch(arch):
        if record is None:
            raise ValueError(f"{arch} needs a volume record (see volume_record)")
        model, card, note = start_volume_model(
            data.classes,
            arch,
            record,
            encoder_from=encoder_from,
            arch_kwargs=arch_kwargs,
            in_channels=int(data.x.shape[1]),
        )
    else:
        model, card, note = start_model(
            data.classes,
            parent,
            arch=arch,
            arch_kwargs=arch_kwargs,
            record=record,
            in_channels=int(data.x.shape[1]),
        )
    want = (card.in_channels, *card.input_size)
    if tuple(data.x.shape[1:]) != tuple(want):
        raise ValueError(
            f"examples are {tuple(data.x.shape[1:])} but the model takes {want}: "
            "prepare them with the model card's preprocessing"
        )
    # lesion masks supervise a model with an evidence map (see dense_targets)
    evidence = getattr(getattr(model, "encoder", None), "pool", None) == "evidence"
    dense = data.dense_targets() if evidence else None
    plan = plan_split(data.y, data.groups, val_fraction, kfold, cfg.seed)
    distributed.check_same_split(plan.folds, data.y, data.groups)
    k = len(plan.folds)
    oof = np.zeros((len(data), len(data.classes)), np.float32)
    res: TrainResult | None = None
    initial = copy.deepcopy(model.state_dict())
    best_epochs = []
    slice_note: dict[str, Any] | None = None
    for f, (tr, va) in enumerate(plan.folds):
        model.load_state_dict(initial)
        extra = {"fold": f + 1, "n_folds": k} if k > 1 else {}
        gen = _train_rows(model, data, dense, tr, va, cfg, control, extra)
        res, stage_note = yield from gen
        slice_note = stage_note or slice_note
        if res.cancelled:
            break
        best_epochs.append(max(1, res.best_epoch))
        oof[va] = predict_logits(res.model, data.x[va], cfg.batch_size)
    assert res is not None
    cancelled = res.cancelled
    if k > 1 and not cancelled:
        # the final model learns from every label for the folds' typical
        # length; "validation" on the (unaugmented) training data only picks
        # the epoch of lowest training loss
        model.load_state_dict(initial)
        final = replace(cfg, epochs=int(np.median(best_epochs)), patience=0)
        rows = np.arange(len(data))
        extra = {"fold": 0, "n_folds": k}
        gen = _train_rows(model, data, dense, rows, rows, final, control, extra)
        last, stage_note = yield from gen
        slice_note = stage_note or slice_note
        logits, labels = oof, data.y
        cancelled = last.cancelled
    else:
        logits, labels = res.val_logits, res.val_labels
    metrics: dict[str, Any] = {}
    temperature = 1.0
    if logits is not None and len(labels):
        if len(labels) >= 20:
            temperature = float(np.clip(fit_temperature(logits, labels), 0.5, 5.0))
        metrics = summarize(logits, labels, temperature)
        metrics["scope"] = "out-of-fold" if k > 1 else "validation"
    advice = recommend(res.history)
    run = _distributed_note(model, cfg)
    card.temperature = temperature
    card.name = name or (
        f"{card.arch} fine-tuned on {len(data)} labels"
        if note["start"] == "checkpoint"
        else f"{card.arch} trained on {len(data)} labels"
    )
    card.metrics = {"validation": metrics} if metrics else {}
    card.provenance.update(
        {
            "training": "napari-medcnn fine-tuning (training/finetune.py)",
            "start": note,
            "label_counts": data.counts(),
            **(
                {
                    "lesion_masks": {
                        "volumes": sum(m is not None for m in data.masks or []),
                        "classes": data.mask_classes(),
                        "dense_weight": cfg.dense_weight,
                        **({"slice_stage": slice_note} if slice_note else {}),
                    }
                }
                if dense is not None
                else {}
            ),
            "n_examples": len(data),
            "n_groups": int(len(np.unique(data.groups))),
            "augmentation": cfg.augment,
            "split": plan.describe()
            | {
                "val_fraction": val_fraction,
                "group_key": "hashed patient ID, else study UID, else scan",
            },
            "train_config": cfg.to_dict(),
            "seed": cfg.seed,
            "best_epoch": res.best_epoch,
            "stop_reason": "cancelled" if cancelled else res.stop_reason,
            "advice": advice.to_dict(),
            "history": res.history,
            "versions": _versions(),
            "distributed": run,
            **(provenance or {}),
        }
    )
    result = FinetuneResult(
        model.eval(),
        card,
        res.history,
        advice,
        metrics,
        cancelled,
        "cancelled" if cancelled else res.stop_reason,
        warnings=plan.warnings + data.warnings,
    )
    if not run.get("replicas_identical", True):
        result.warnings.append(
            "the training processes ended with different weights; rank 0's were saved"
        )
    if out is not None and (not cancelled or save_cancelled) and distributed.is_main():
        result.save(out)
    return result


def _distributed_note(model: nn.Module, cfg: TrainConfig) -> dict[str, Any]:
    """The card's record of how many processes trained (1: no torchrun).

    Under torchrun: the backend, the global batch (``batch_size`` is per
    process) and whether every replica holds rank 0's weights and buffers
    (compared across processes, so every rank must call this).
    """
    ctx = distributed.current()
    note: dict[str, Any] = {"world_size": ctx.world_size, "backend": ctx.backend}
    if ctx.enabled:
        note["global_batch_size"] = ctx.world_size * cfg.batch_size
        note["replicas_identical"] = distributed.replicas_identical(model)
    return note
