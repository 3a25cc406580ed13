"""``napari-medcnn train``: fine-tune on label sidecars or CSVs, headless.

The same generator as the napari widget (:func:`~.training.finetune.finetune`)
is drained here: one progress line per epoch on stderr, the final summary
(metrics, confusion matrix, recommendation) as JSON on stdout.  Ctrl-C
cancels cleanly: the parent is untouched and nothing is written unless
``--save-cancelled``.

Started by ``torchrun --nproc_per_node=N`` the same command trains with N
processes (DistributedDataParallel, see ``training/distributed.py``): only
rank 0 prints progress and the summary and writes the checkpoint, its card
and ``--json``; the other ranks print errors only.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from napari_medcnn._progress import drain
from napari_medcnn.cli.options import (
    EXIT_DONE,
    EXIT_NOTHING,
    EXIT_PARTIAL,
    EXIT_STATUS,
    add_overwrite_option,
    refuse_existing,
)


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a model on label sidecars or a path,label CSV",
        description="Read labels (JSON sidecars written by the labelling widget, "
        "folders of them, or CSV files with 'path,label[,group]' rows), "
        "prepare the scans with the parent model card's preprocessing, "
        "fine-tune (or train from scratch), and write a checkpoint whose card "
        "records label counts, augmentation, split, metrics, parent and seed.",
        epilog="The checkpoint (CKPT.safetensors and its CKPT.json card) and "
        "--json are new files: existing ones are refused before training "
        "unless --overwrite. " + EXIT_STATUS + " (Labels that cannot be "
        "used, a parent that cannot be loaded or a failed training: 2. A "
        "cancelled run: 1 when --save-cancelled wrote its checkpoint, else "
        "2.) Under torchrun --nproc_per_node=N it trains with N processes "
        "(gloo on CPU, NCCL on CUDA; --batch-size is per process); rank 0 "
        "alone prints and writes.",
    )
    p.add_argument("--labels", nargs="+", required=True, metavar="SIDECAR_OR_CSV")
    p.add_argument(
        "--model",
        metavar="PARENT",
        help="checkpoint to start from (default: the shipped Br35H model)",
    )
    p.add_argument(
        "--scratch",
        action="store_true",
        help="train --arch from scratch (with the parent card's preprocessing)",
    )
    p.add_argument(
        "--arch",
        default="seed_cnn",
        help="architecture for --scratch; a volume architecture (cnn_rnn, "
        "slice_pool, resnet3d, densenet3d) trains a new volume model on volume "
        "labels (a CNN+RNN's slice encoder starts from --model)",
    )
    vol = p.add_argument_group(
        "volume models",
        "how volumes are prepared for --arch cnn_rnn|slice_pool|resnet3d|"
        "densenet3d (recorded in the card, applied again by classify)",
    )
    vol.add_argument(
        "--slices", type=int, default=32, help="slices per prepared volume"
    )
    vol.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="in-plane pixels (default: the encoder's for cnn_rnn/slice_pool, "
        "else 64 64)",
    )
    vol.add_argument(
        "--slice-spacing",
        type=float,
        metavar="MM",
        help="resample to this slice spacing in mm and keep --slices slices "
        "around the head (default: the head's slice range in --slices slices)",
    )
    vol.add_argument(
        "--slice-axis", choices=("axial", "coronal", "sagittal"), default="axial"
    )
    vol.add_argument(
        "--modality",
        choices=("MR", "CT"),
        help="intensity mapping of a 3D CNN: MR percentiles per volume "
        "(default) or a CT window",
    )
    vol.add_argument(
        "--window", type=float, nargs=2, metavar=("CENTER", "WIDTH"), help="CT HU"
    )
    vol.add_argument(
        "--no-encoder",
        action="store_true",
        help="cnn_rnn/slice_pool: a fresh slice encoder instead of --model's",
    )
    vol.add_argument(
        "--no-masks",
        action="store_true",
        help="ignore lesion masks (a 'mask' column of the label CSV, or masks "
        "painted beside the sidecars); by default they make cnn_rnn/"
        "slice_pool learn a per-pixel evidence map with a full-resolution "
        "slice encoder (lesion_fcn), and resnet3d a per-voxel one (its "
        "evidence variant)",
    )
    vol.add_argument(
        "--slice-epochs",
        type=int,
        help="with lesion masks: epochs of the slice stage, which teaches the "
        "slice encoder where lesions are on single slices (resnet3d: on 3D "
        "patches) before the volume stage (default 15; 0: none)",
    )
    vol.add_argument(
        "--accumulate",
        type=int,
        default=1,
        help="batches per optimiser step (gradient accumulation)",
    )
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument(
        "--batch-size", type=int, help="default 32 (slices), 2 (volume models)"
    )
    p.add_argument(
        "--lr", type=float, help="default 1e-3 (slices), 3e-3 (volume models)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=6, help="early stopping (0: off)")
    p.add_argument(
        "--freeze-epochs",
        type=int,
        help="epochs with the backbone frozen (default 0; with lesion masks, "
        "every epoch after the slice stage)",
    )
    p.add_argument(
        "--balance",
        choices=("weighted_loss", "sampler", "none"),
        default="weighted_loss",
    )
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument(
        "--kfold", default="auto", help="folds, 0 for a hold-out split, or auto"
    )
    p.add_argument("--min-per-class", type=int, default=5)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument(
        "--augment",
        metavar="LIST",
        help="comma-separated augmentations to use instead of the defaults "
        f"(from: {', '.join(AUGMENTATIONS)})",
    )
    p.add_argument("--device", help="torch device (default: cuda, mps, then cpu)")
    p.add_argument("--save-cancelled", action="store_true")
    p.add_argument("--json", metavar="OUT", help="also write the summary here")
    add_overwrite_option(p)
    p.set_defaults(func=_run_train)


def _progress(ev: Any) -> str:
    m = ev.metrics
    fold = f"fold {int(m['fold'])}/{int(m['n_folds'])} " if m.get("n_folds") else ""
    if fold and m["fold"] == 0:
        fold = "all labels "
    if ev.kind == "slice_epoch":
        return (
            f"{fold}slice stage epoch {ev.epoch}/{ev.n_epochs}  "
            f"train {m['train_loss']:.4f}  val {m['val_loss']:.4f}  "
            f"slice AUC {m['val_slice_auc']:.3f}  "
            f"{m['elapsed_s']:.0f}s (eta {m['eta_s']:.0f}s)"
        )
    return (
        f"{fold}epoch {ev.epoch}/{ev.n_epochs}  train {m['train_loss']:.4f}  "
        f"val {m['val_loss']:.4f}  acc {m['val_accuracy']:.3f}  "
        f"{m['elapsed_s']:.0f}s (eta {m['eta_s']:.0f}s)"
    )


#: the switches ``--augment`` accepts (see ``training/data/augment.py``)
AUGMENTATIONS = (
    "flip", "rotate", "affine", "elastic", "intensity", "gamma", "noise",
    "blur", "cutout", "histogram", "pixel_dropout", "slice_dropout",
)  # fmt: skip


def _augment(text: str | None, defaults: dict[str, bool]) -> dict[str, bool]:
    """``--augment flip,noise``: exactly those switches on (else the defaults).

    Raises:
        ValueError: a name that is not an augmentation.
    """
    if not text:
        return dict(defaults)
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in AUGMENTATIONS]
    if bad:
        raise ValueError(
            f"--augment: unknown {', '.join(bad)}; choose from "
            + ", ".join(AUGMENTATIONS)
        )
    return {n: n in names for n in AUGMENTATIONS}


def _masked(args: argparse.Namespace) -> bool:
    """Whether the labels give lesion masks (and they are wanted): a CSV
    ``mask`` column, or a mask painted in napari beside a sidecar."""
    from napari_medcnn.training.data.dataset import expand_sources
    from napari_medcnn.training.labels.masks import mask_path
    from napari_medcnn.training.labels.store import LabelsError, read_label_csv

    if args.no_masks:
        return False
    try:
        sources = expand_sources(args.labels)
    except LabelsError:
        return False  # reported when the labels load
    for src in sources:
        if src.suffix.lower() != ".csv":
            if mask_path(src).is_file():
                return True
            continue
        try:
            if any(row.mask is not None for row in read_label_csv(src)):
                return True
        except LabelsError:
            return False  # reported with its line when the labels load
    return False


def _run_train(args: argparse.Namespace) -> int:
    from napari_medcnn.models.checkpoint import (
        CheckpointError,
        card_path_for,
        default_model_path,
        resolve_model,
        weights_path_for,
    )
    from napari_medcnn.training import distributed
    from napari_medcnn.training.transfer import (
        EVIDENCE_SIZE,
        VOLUME_ARCHS,
        evidence_kwargs,
        is_volume_arch,
    )

    try:
        weights = weights_path_for(args.out)
    except CheckpointError as exc:
        print(f"error: --out: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    outputs = (weights, card_path_for(weights), args.json)
    if not refuse_existing(outputs, args.overwrite):
        return EXIT_NOTHING
    try:
        parent = resolve_model(args.model or default_model_path(), "cpu")
    except (CheckpointError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    card = parent.card
    record, input_kind = card.preprocessing, card.input_kind
    args.arch_kwargs = None
    if is_volume_arch(args.arch):
        try:
            if evidence_kwargs(args.arch) is not None and _masked(args):
                # a dense evidence head needs a full-resolution encoder
                args.no_encoder = True
                args.size = args.size or list(EVIDENCE_SIZE)
                args.arch_kwargs = evidence_kwargs(args.arch)
            record = _volume_record(args, card)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_NOTHING
        input_kind = VOLUME_ARCHS[args.arch][1]
    try:
        with distributed.process_group(args.device) as run:
            return _train(args, parent, record, input_kind, run)
    except ValueError as exc:  # torchrun variables or device unusable
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING


def _train(args: argparse.Namespace, parent, record, input_kind, run) -> int:
    """Load the labels, train and report (rank 0 only prints and writes)."""
    from napari_medcnn.training import distributed
    from napari_medcnn.training.control import TrainControl
    from napari_medcnn.training.data.augment import DEFAULTS
    from napari_medcnn.training.data.dataset import load_labeled
    from napari_medcnn.training.finetune import finetune
    from napari_medcnn.training.labels.store import LabelsError
    from napari_medcnn.training.trainer import TrainConfig, TrainingOutOfMemory
    from napari_medcnn.training.transfer import (
        is_evidence,
        is_volume_arch,
        with_lesion_masks,
    )

    def say(text: str) -> None:
        if run.is_main:
            print(text, file=sys.stderr, flush=True)

    volume_arch = is_volume_arch(args.arch)
    kfold: Any = args.kfold
    if kfold != "auto":
        kfold = int(kfold) or None
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size or (2 if volume_arch else 32),
        lr=args.lr or (3e-3 if volume_arch else 1e-3),
        augment=None if args.no_augment else _augment(args.augment, DEFAULTS),
        balance=args.balance,
        patience=args.patience,
        freeze_backbone_epochs=args.freeze_epochs or 0,
        seed=args.seed,
        device=run.device,
        accumulate=args.accumulate,
    )
    if is_evidence(args.arch_kwargs):
        # lesion masks: the slice (3D: patch) stage teaches the encoder,
        # then the volume stage trains the head on its evidence (encoder
        # frozen)
        cfg = with_lesion_masks(cfg, args.slice_epochs, args.freeze_epochs)
    ctl = TrainControl()
    try:
        gen = load_labeled(args.labels, record, input_kind=input_kind)
        data = _drain(gen)
        if args.no_masks:
            data.masks = None
        say(f"{len(data)} labelled examples: {data.counts()}")
        if data.masks is not None and args.arch_kwargs:
            n = sum(m is not None for m in data.masks)
            who = (
                "the 3D ResNet learns a per-voxel"
                if args.arch_kwargs.get("evidence")
                else "the slice encoder (lesion_fcn) learns a per-pixel"
            )
            say(
                f"{n} lesion masks for {', '.join(data.mask_classes())}: "
                f"{who} evidence map"
            )
        sequence = volume_arch and input_kind == "sequence"
        gen = finetune(
            data,
            None if args.scratch or volume_arch else parent,
            out=args.out,
            config=cfg,
            control=ctl,
            arch=args.arch,
            arch_kwargs=args.arch_kwargs,
            record=record,
            encoder_from=parent if sequence and not args.no_encoder else None,
            val_fraction=args.val_fraction,
            kfold=kfold,
            min_per_class=args.min_per_class,
            save_cancelled=args.save_cancelled,
            provenance={"tool": "napari-medcnn train (CLI)"},
        )
        with _cancel_on_sigint(ctl):
            result = _drain(
                gen, lambda ev: run.is_main and ev.kind in ("epoch", "slice_epoch")
            )
        distributed.dump_replica(result.model)
    except TrainingOutOfMemory as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    except (LabelsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOTHING
    if not run.is_main:  # rank 0 reports and writes; same exit status
        if result.cancelled:
            return EXIT_PARTIAL if args.save_cancelled else EXIT_NOTHING
        return EXIT_DONE
    summary = result.summary()
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    if args.json:
        from pathlib import Path

        from napari_medcnn._atomic import atomic_write

        atomic_write(Path(args.json), text.encode("utf-8"), overwrite=args.overwrite)
    if result.cancelled:
        saved = f"; wrote {result.checkpoint}" if result.checkpoint else ""
        say(f"cancelled: the parent is unchanged{saved}")
        return EXIT_PARTIAL if result.checkpoint else EXIT_NOTHING
    say(f"wrote {result.checkpoint}: {result.advice.verdict}")
    return EXIT_DONE


def _volume_record(args: argparse.Namespace, parent_card) -> dict[str, Any]:
    """The volume record the options describe (see
    :func:`~napari_medcnn.training.transfer.volume_record_for`)."""
    from napari_medcnn.training.transfer import volume_record_for

    try:
        return volume_record_for(
            args.arch,
            parent_card,
            args.slices,
            size=args.size,
            encoder=not args.no_encoder,
            modality=args.modality,
            spacing_mm=args.slice_spacing,
            slice_axis=args.slice_axis,
            window=tuple(args.window) if args.window else None,
        )
    except ValueError as exc:
        raise ValueError(f"--model: {exc} (or give --no-encoder)") from None


class _cancel_on_sigint:
    """Ctrl-C cancels the run (after the current batch) instead of killing
    it; a second Ctrl-C interrupts as usual."""

    def __init__(self, control):
        self.control = control
        self.old = None

    def _handler(self, signum, frame):
        import signal

        print("cancelling after this batch (Ctrl-C again to abort)", file=sys.stderr)
        self.control.cancel()
        signal.signal(signal.SIGINT, self.old)

    def __enter__(self):
        import signal

        try:
            self.old = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self.old = None
        return self

    def __exit__(self, *exc):
        import signal

        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)


def _drain(gen, show=None):
    """Drain a generator, printing the events that ``show`` picks."""

    def report(ev) -> None:
        if show is not None and show(ev):
            print(_progress(ev), file=sys.stderr, flush=True)

    return drain(gen, report)
