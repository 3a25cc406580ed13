"""Fine-tuning core: Br35H acceptance, pause/cancel/resume, transfer,
splits, advice, checkpoints and bad input."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from napari_medcnn._progress import drain
from napari_medcnn.models import build_model
from napari_medcnn.preprocessing.record import default_record
from napari_medcnn.training.advice import (
    OVERFITTING,
    PLATEAUED,
    STILL_IMPROVING,
    recommend,
)
from napari_medcnn.training.control import TrainControl
from napari_medcnn.training.data.dataset import LabeledSet
from napari_medcnn.training.data.splits import NotEnoughLabels, check_labels, plan_split
from napari_medcnn.training.finetune import finetune, predict_logits
from napari_medcnn.training.trainer import (
    TrainConfig,
    TrainingOutOfMemory,
    fit,
)
from napari_medcnn.training.transfer import replace_head, start_model

SMALL = {"widths": [8, 16, 16], "pooled_size": 2, "dropout": 0.2}
FAST = dict(batch_size=16, device="cpu", augment=None, patience=0)


def disks(n: int, size: int = 32, seed: int = 0, n_groups: int = 0) -> LabeledSet:
    """Class 1: a bright disk at the centre; class 0: noise only."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    disk = (yy**2 + xx**2 < (size / 5) ** 2).astype(np.float32)
    y = np.arange(n) % 2
    x = rng.normal(0.3, 0.1, (n, 1, size, size)).astype(np.float32)
    x[y == 1, 0] += 0.5 * disk
    groups = np.arange(n) % n_groups if n_groups else np.arange(n)
    items = [f"data:{i}#image" for i in range(n)]
    return LabeledSet(np.clip(x, 0, 1), y, ["empty", "disk"], groups, items)


def record32():
    rec = default_record((32, 32))
    rec["foreground_crop"] = None
    return rec


# -- acceptance: Br35H ----------------------------------------------------------
def _br35h_sets(tmp_path, n_train=60, n_test=120):
    from napari_medcnn.io import load
    from napari_medcnn.models.checkpoint import default_model_path, read_card
    from napari_medcnn.preprocessing.record import prepare, to_gray
    from napari_medcnn.training.data import br35h
    from napari_medcnn.training.data.dataset import load_labeled
    from napari_medcnn.training.labels.store import LabelStore

    try:
        root = br35h.br35h_root()
    except br35h.DatasetMissing as exc:
        pytest.skip(str(exc))
    card = read_card(default_model_path())
    prov = card.provenance
    held_out = set(prov["validation_files"]) | set(prov["test_files"])
    rng = np.random.default_rng(0)
    sidecars = []
    for folder, cls in (("no/", "no_tumor"), ("yes/", "tumor")):
        pool = [f for f in prov["train_files"] if f.startswith(folder)]
        for name in rng.choice(pool, n_train // 2, replace=False):
            assert name not in held_out
            dst = tmp_path / name.replace("/", "_")
            dst.write_bytes((root / name).read_bytes())
            store = LabelStore.open(dst, classes=card.classes)  # the model's classes
            store.label_image(cls)
            sidecars.append(store.path)
    train = drain(load_labeled(sidecars, card.preprocessing))
    test_names = rng.choice(prov["test_files"], n_test, replace=False)
    xt = np.stack(
        [
            prepare([to_gray(s.data)], card.preprocessing, s.spacing)
            for s in (load(root / n)[0] for n in test_names)
        ]
    )
    yt = np.array(
        [card.classes.index(br35h.CLASSES[n.startswith("yes/")]) for n in test_names]
    )
    return card, train, xt, yt


@pytest.mark.slow
def test_br35h_finetune_beats_scratch(tmp_path):
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.predict import classify
    from napari_medcnn.models.checkpoint import default_model_path

    card, data, xt, yt = _br35h_sets(tmp_path)
    assert data.counts() == {"no_tumor": 30, "tumor": 30}
    cfg = TrainConfig(epochs=4, batch_size=16, lr=5e-4, patience=0, device="cpu")
    scratch = drain(
        finetune(data, None, config=cfg, kfold=None, record=card.preprocessing)
    )
    tuned = drain(
        finetune(
            data,
            default_model_path(),
            out=tmp_path / "tuned",
            config=cfg,
            kfold=None,
        )
    )
    acc = {
        name: float(np.mean(predict_logits(r.model, xt).argmax(1) == yt))
        for name, r in (("scratch", scratch), ("tuned", tuned))
    }
    print("held-out accuracy", acc)
    assert acc["tuned"] >= 0.8  # chance is 0.5
    assert acc["tuned"] > acc["scratch"]
    # the new checkpoint classifies at once, with the same card preprocessing
    assert tuned.card.parent == card.model_id
    assert tuned.card.provenance["label_counts"] == {"no_tumor": 30, "tumor": 30}
    res = drain(classify([np.asarray(xt[0, 0] * 255)], tuned.checkpoint))
    assert res.classes == card.classes


# -- pause / cancel / resume ---------------------------------------------------
def test_pause_resume_and_cancel_returns_best_so_far():
    data = disks(64)
    model = build_model("seed_cnn", num_classes=2, **SMALL)
    ctl = TrainControl(poll_s=0.01)
    cfg = TrainConfig(epochs=50, **FAST)
    gen = fit(model, (data.x[:48], data.y[:48]), (data.x[48:], data.y[48:]), cfg, ctl)
    kinds = []
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            res = stop.value
            break
        kinds.append(ev.kind)
        if ev.kind == "epoch" and ev.epoch == 1:
            ctl.pause()
        if ev.kind == "paused" and kinds.count("paused") == 3:
            assert ctl.paused and ev.epoch == 2 and ev.step == 1
            ctl.resume()  # the next event is a batch again
        if ev.kind == "epoch" and ev.epoch == 3:
            ctl.cancel()
    i = kinds.index("paused")
    assert kinds[i : i + 4] == ["paused"] * 3 + ["batch"]
    assert kinds.count("epoch") == 3 and kinds[-1] == "epoch"
    assert res.cancelled and res.stop_reason == "cancelled"
    assert res.best_epoch == int(np.argmin([h["val_loss"] for h in res.history])) + 1
    assert not res.model.training  # best weights loaded, eval mode


def test_cancel_result_keeps_best_weights_and_parent_untouched(tmp_path):
    data = disks(64)
    parent = tmp_path / "parent"
    first = drain(
        finetune(
            data,
            None,
            out=parent,
            config=TrainConfig(epochs=2, **FAST),
            arch_kwargs=SMALL,
            record=record32(),
            kfold=None,
        )  # fmt: skip
    )
    before = parent.with_suffix(".safetensors").read_bytes()
    ctl = TrainControl(poll_s=0.01)
    gen = finetune(data, first.checkpoint, out=tmp_path / "child", control=ctl,
                   config=TrainConfig(epochs=30, **FAST), kfold=None)  # fmt: skip
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            res = stop.value
            break
        if ev.kind == "epoch" and ev.epoch == 2:
            threading.Thread(target=ctl.cancel).start()  # from another thread
    assert res.cancelled and res.stop_reason == "cancelled"
    assert 1 <= len(res.history) <= 3 and res.checkpoint is None
    assert not (tmp_path / "child.safetensors").exists()  # nothing written
    assert parent.with_suffix(".safetensors").read_bytes() == before
    best = res.card.provenance["best_epoch"]
    assert best >= 1  # best-so-far weights, offered for saving:
    path = res.save(tmp_path / "best_so_far")
    assert path.exists() and res.card.parent == first.card.model_id


def test_out_of_memory_stops_with_advice():
    class Hungry(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory")

    x = np.zeros((8, 1, 2, 2), np.float32)
    y = np.arange(8) % 2
    with pytest.raises(TrainingOutOfMemory, match="lower the batch size") as err:
        drain(fit(Hungry(), (x, y), (x, y), TrainConfig(epochs=1, **FAST)))
    assert err.value.result is not None and err.value.result.best_epoch == 0


# -- training features ------------------------------------------------------------
def test_kfold_for_few_labels_and_card_records_everything(tmp_path):
    from napari_medcnn._progress import drain
    from napari_medcnn.inference.predict import classify
    from napari_medcnn.models.checkpoint import read_card

    data = disks(24, n_groups=12)
    events = []
    cfg = TrainConfig(epochs=6, seed=7, **(FAST | {"batch_size": 4, "lr": 3e-3}))
    gen = finetune(
        data, None, out=tmp_path / "m", arch_kwargs=SMALL, record=record32(), config=cfg
    )
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    folds = {e.metrics.get("fold") for e in events}
    assert folds == {0, 1, 2, 3, 4, 5}  # 5 folds + the final all-data run
    card = read_card(res.checkpoint)
    prov = card.provenance
    assert prov["split"]["method"] == "group_kfold"
    assert prov["label_counts"] == {"empty": 12, "disk": 12}
    assert prov["seed"] == 7 and prov["train_config"]["seed"] == 7
    assert prov["augmentation"] is None and prov["start"]["start"] == "scratch"
    assert card.metrics["validation"]["scope"] == "out-of-fold"
    assert np.array(card.metrics["validation"]["confusion_matrix"]).sum() == 24
    assert prov["advice"]["verdict"] in (STILL_IMPROVING, PLATEAUED, OVERFITTING)
    assert res.metrics["accuracy"] >= 0.7  # out-of-fold, 24 labels; chance 0.5
    assert drain(classify([data.x[1, 0]], res.checkpoint)).label == "disk"


def test_group_split_keeps_groups_whole():
    y = np.arange(200) % 2
    groups = np.arange(200) // 4  # 4 slices per scan
    plan = plan_split(y, groups, 0.25, kfold=None)
    (tr, va), = plan.folds  # fmt: skip
    assert plan.method == "group_holdout"
    assert not set(groups[tr]) & set(groups[va])
    plan = plan_split(y[:20], groups[:20], kfold="auto")
    assert plan.method == "group_kfold" and len(plan.folds) == 5
    for tr, va in plan.folds:
        assert not set(groups[tr]) & set(groups[va])
    one_scan = plan_split(y[:60], np.zeros(60), kfold=None)
    assert one_scan.method == "item_holdout" and one_scan.warnings


def test_balanced_sampler_and_frozen_backbone():
    data = disks(40)
    y = data.y.copy()
    y[:16] = 1  # imbalance 28:12
    model = build_model("seed_cnn", num_classes=2, **SMALL)
    first_conv = next(model.features.parameters()).detach().clone()
    cfg = TrainConfig(epochs=1, balance="sampler", freeze_backbone_epochs=1, **FAST)
    res = drain(fit(model, (data.x, y), (data.x, y), cfg))
    assert torch.equal(next(res.model.features.parameters()), first_conv)
    with pytest.raises(ValueError, match="balance"):
        TrainConfig(balance="x").validate()


def test_soft_labels_distil_a_teacher_probability():
    """(N, K) class probabilities train the model towards them (knowledge
    distillation): a teacher that says 80 % disk on every disk image gives
    a student whose mean disk probability there stays well under the ~1.0
    that hard labels give (0.67 after 12 epochs, still rising to 0.8)."""
    data = disks(64)
    soft = np.where(data.y[:, None] == 1, [0.2, 0.8], [1.0, 0.0]).astype(np.float32)
    cfg = TrainConfig(epochs=12, lr=3e-3, balance="none", **FAST)
    p_disk = {}
    for name, targets in (("hard", data.y), ("soft", soft)):
        torch.manual_seed(0)
        model = build_model("seed_cnn", num_classes=2, **SMALL)
        res = drain(fit(model, (data.x, targets), (data.x, data.y), cfg))
        logits = predict_logits(res.model.eval(), data.x[data.y == 1], 32)
        p_disk[name] = float(torch.softmax(torch.from_numpy(logits), 1)[:, 1].mean())
        # validation metrics stay on the hard labels
        assert 0 <= res.history[-1]["val_accuracy"] <= 1
    assert p_disk["hard"] > 0.93, p_disk
    assert 0.55 < p_disk["soft"] < 0.88, p_disk


def test_new_head_keeps_known_classes():
    model = build_model("seed_cnn", num_classes=2, **SMALL)
    old = model.head[-1].weight.detach().clone()
    kept = replace_head(model, ["a", "b"], ["b", "c", "a"])
    assert kept == ["b", "a"] and model.head[-1].out_features == 3
    assert torch.equal(model.head[-1].weight[0], old[1])
    assert torch.equal(model.head[-1].weight[2], old[0])


def test_transfer_from_checkpoint_with_new_classes(tmp_path):
    from napari_medcnn.models.checkpoint import default_model_path, resolve_model
    from napari_medcnn.models.features import last_linear

    parent = resolve_model(default_model_path(), "cpu")
    w0 = last_linear(parent.model).weight.detach().clone()
    model, card, note = start_model(["tumor", "cyst", "no_tumor"], parent)
    assert note == {"start": "checkpoint", "head": "new",
                    "kept_classes": ["tumor", "no_tumor"]}  # fmt: skip
    assert card.parent == parent.card.model_id and card.arch_kwargs["num_classes"] == 3
    assert last_linear(model).out_features == 3
    assert parent.card.domain and card.domain == {} and card.tta == []
    assert torch.equal(last_linear(parent.model).weight, w0)  # untouched


# -- bad input --------------------------------------------------------------------
def test_bad_input_messages(tmp_path):
    with pytest.raises(NotEnoughLabels, match="at least 2 classes"):
        check_labels({"a": 10, "b": 0})
    with pytest.raises(NotEnoughLabels, match="label 3 more 'b'"):
        check_labels({"a": 10, "b": 2}, min_per_class=5)
    data = disks(12)
    with pytest.raises(NotEnoughLabels, match="at least 8"):
        drain(finetune(data, None, min_per_class=8, record=record32()))
    with pytest.raises(ValueError, match="model takes"):
        drain(finetune(disks(20, size=24), None, record=record32()))
    with pytest.raises(ValueError, match="at least 2 classes"):
        start_model(["only"])
    ckpt = tmp_path / "p"
    drain(finetune(disks(20), None, out=ckpt, arch_kwargs=SMALL, record=record32(),
                   config=TrainConfig(epochs=1, **FAST), kfold=None))  # fmt: skip
    with pytest.raises(ValueError, match="parent"):
        drain(finetune(disks(20), ckpt, out=ckpt.with_suffix(".safetensors")))


# -- advice and preview -----------------------------------------------------------
def _hist(train, val):
    return [{"train_loss": t, "val_loss": v} for t, v in zip(train, val)]


def test_recommendation_from_curves():
    down = np.linspace(1.0, 0.3, 8)
    assert recommend(_hist(down, down + 0.1)).verdict == STILL_IMPROVING
    flat = [1.0, 0.6, 0.45, 0.40, 0.40, 0.401, 0.399, 0.40]
    assert recommend(_hist(down, flat)).verdict == PLATEAUED
    over = [1.0, 0.6, 0.45, 0.40, 0.45, 0.52, 0.60, 0.70]
    adv = recommend(_hist(down, over))
    assert adv.verdict == OVERFITTING and "epoch 4" in adv.reason
    assert recommend(_hist([1, 0.9], [1, 0.9])).verdict == STILL_IMPROVING


def test_augmentation_preview():
    from napari_medcnn.training.preview import augmentation_preview, montage

    x = disks(2).x[1]
    s = augmentation_preview(x, n=6, seed=1)
    assert s.shape == (6, 1, 32, 32) and s.dtype == np.float32
    assert np.array_equal(s[0], x) and not np.allclose(s[1:], x)
    assert np.array_equal(s, augmentation_preview(x, n=6, seed=1))
    assert montage(s, cols=3, gap=2).shape == (66, 100)


# -- subprocess runner ------------------------------------------------------------
def test_subprocess_runner_streams_events_and_cancels(tmp_path):
    from napari_medcnn.training.subprocess_runner import finetune_job, run_in_subprocess

    ctl = TrainControl.for_processes()
    kwargs = dict(
        data=disks(32),
        out=str(tmp_path / "sub"),
        config=TrainConfig(epochs=40, **FAST),
        arch_kwargs=SMALL,
        record=record32(),
        kfold=None,
        save_cancelled=True,
    )
    gen = run_in_subprocess(finetune_job, kwargs, control=ctl, threads=1)
    kinds = []
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            summary = stop.value
            break
        kinds.append(ev.kind)
        if ev.kind == "epoch" and ev.epoch == 2:
            ctl.cancel()
    # the child runs ahead of the queue: it stops within an epoch or two
    assert 2 <= kinds.count("epoch") < 10 and "batch" in kinds
    assert summary["cancelled"] and summary["stop_reason"] == "cancelled"
    assert (tmp_path / "sub.safetensors").exists()  # best so far, as asked


def _returns_at_once(control=None):
    """A child that yields nothing and returns straight away."""
    return {"done": True}
    yield  # a generator function


def _dies(control=None):
    """A child killed without a word (as by the OOM killer)."""
    import time

    yield "started"
    time.sleep(0.5)  # os._exit does not wait for the queue to flush
    os._exit(3)


def test_subprocess_runner_gets_a_fast_childs_result_and_reports_a_dead_one():
    from napari_medcnn.training.subprocess_runner import (
        SubprocessError,
        run_in_subprocess,
    )

    # the result may reach the pipe just after the child has exited
    for _ in range(3):
        gen = run_in_subprocess(_returns_at_once, threads=1, poll_s=0.001)
        with pytest.raises(StopIteration) as stop:
            next(gen)
        assert stop.value.value == {"done": True}
    gen = run_in_subprocess(_dies, threads=1, poll_s=0.01)
    assert next(gen) == "started"
    with pytest.raises(SubprocessError, match="exited with code 3"):
        next(gen)


def test_histogram_augmentation_is_a_random_monotone_curve():
    from napari_medcnn.training.data.augment import DEFAULTS, build_augmentation

    only = {k: False for k in DEFAULTS} | {"histogram": True}
    x = np.random.default_rng(0).random((1, 24, 24)).astype(np.float32)
    order = np.argsort(x.ravel())
    changed = 0
    aug = build_augmentation(only, 2, seed=3)
    for _ in range(12):
        y = np.asarray(aug(x)).ravel()
        assert np.all(np.diff(y[order]) >= -1e-6)  # intensity order kept
        assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6
        changed += not np.allclose(y, x.ravel())
    assert 0 < changed < 12  # applied to some samples only (prob 0.3)
    assert not DEFAULTS["histogram"]  # off unless asked for
