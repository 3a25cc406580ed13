"""Region labels: patches around painted pixels, a patch classifier, and its
sliding-window class-probability map.

In a napari Labels layer each label value is a class (0 = unlabelled).
:func:`sample_patches` cuts patches (2D, or 3D for volumes) of a size in mm
around painted pixels, balanced per class; :func:`train_patch_classifier`
fine-tunes a small zoo model on them (through :func:`~.finetune.finetune`);
:func:`probability_map` slides it over the image and returns a
class-probability map with the image's shape, to show as an Image layer
with the image's scale and translate.  Correct the labels, retrain: that is
the interactive loop.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medcnn.training.data.dataset import LabeledSet
from napari_medcnn.training.data.splits import NotEnoughLabels

PATCH_ARCH = "seed_cnn"
PATCH_ARCH_KWARGS: dict[str, Any] = {
    "widths": [16, 32, 64],
    "pooled_size": 2,
    "dropout": 0.3,
}
#: patches are small: flips, small rotations and intensity changes only
PATCH_AUGMENT: dict[str, bool] = {
    "flip": True,
    "rotate": True,
    "affine": False,
    "elastic": False,
    "intensity": True,
    "gamma": False,
    "noise": False,
}
INTENSITY = {"mode": "percentile", "low": 1.0, "high": 99.0, "scope": "image"}


@dataclass
class PatchSet:
    """Patches and their classes.

    Attributes:
        x: float32 (N, 1, *patch) in [0, 1]; patch is (h, w) or (d, h, w).
        y: (N,) class indices into ``classes``.
        classes: class names; ``values`` the label value of each class.
        centers: (N, image ndim) pixel index of each patch centre.
        patch_px: patch size in pixels per image axis (1 along z for 2D
            patches of a volume).
        patch_mm: the requested size in mm.
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    values: list[int]
    centers: np.ndarray
    patch_px: tuple[int, ...]
    patch_mm: float
    warnings: list[str] = field(default_factory=list)

    def as_labeled(self) -> LabeledSet:
        """A :class:`LabeledSet`; patches within one patch-sized block share
        a group, so near-identical neighbours do not straddle the split."""
        block = self.centers // np.maximum(1, np.asarray(self.patch_px))
        groups = np.array(["/".join(map(str, b)) for b in block], dtype=object)
        items = [f"patch:{'/'.join(map(str, c))}" for c in self.centers]
        return LabeledSet(self.x, self.y, self.classes, groups, items, self.warnings)


def normalize_image(image: np.ndarray) -> np.ndarray:
    """The patch models' intensity scaling: 1st-99th percentile -> [0, 1]."""
    from napari_medcnn.preprocessing.record import normalize

    return normalize(image, INTENSITY)


def patch_pixels(
    patch_mm: float,
    scale: Sequence[float] | None,
    shape: Sequence[int],
    patch_dims: int = 2,
) -> tuple[int, ...]:
    """Patch size in pixels per image axis for a ``patch_mm`` side.

    Args:
        patch_mm: patch side in mm.
        scale: mm per pixel per image axis (the layer's scale); None = 1 mm.
        shape: the image shape (2D or 3D).
        patch_dims: 2 (in-plane patches; 1 pixel along z of a volume) or 3.

    Raises:
        ValueError: a patch larger than the image, with the largest size
            that fits, in mm.
    """
    nd = len(shape)
    sc = [1.0] * nd if scale is None else [float(s) for s in scale[-nd:]]
    if patch_dims not in (2, 3) or patch_dims > nd:
        raise ValueError(f"patch_dims must be 2 or 3 (<= image dims {nd})")
    if not patch_mm > 0:
        raise ValueError(f"patch size must be > 0 mm, not {patch_mm}")
    px = [max(4, int(round(patch_mm / s))) for s in sc]
    if nd == 3 and patch_dims == 2:
        px[0] = 1
    names = "zyx"[-nd:]
    for ax in range(nd):
        if px[ax] > shape[ax]:
            fit = min(shape[a] * sc[a] for a in range(nd) if px[a] > 1)
            raise ValueError(
                f"a {patch_mm:g} mm patch is {px[ax]} px along {names[ax]}, "
                f"but the image has only {shape[ax]} px ({shape[ax] * sc[ax]:g} "
                f"mm) there: choose a patch of at most {fit:g} mm"
            )
    return tuple(px)


def _padded(norm: np.ndarray, px: Sequence[int]) -> np.ndarray:
    """Reflect-pad so that the window starting at index c is centred on c."""
    return np.pad(norm, [(p // 2, p - p // 2) for p in px], mode="reflect")


def _windows(padded: np.ndarray, px: Sequence[int]) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(padded, tuple(px))


def _squeeze(patches: np.ndarray, px: Sequence[int]) -> np.ndarray:
    """(B, *px) -> (B, 1, *spatial) with 2D patches of volumes made 2D."""
    keep = [i + 1 for i, p in enumerate(px) if p > 1 or len(px) == 2]
    shape = (patches.shape[0], 1, *[patches.shape[i] for i in keep])
    return np.ascontiguousarray(patches.reshape(shape), dtype=np.float32)


def sample_patches(
    image: np.ndarray,
    labels: np.ndarray,
    scale: Sequence[float] | None = None,
    patch_mm: float = 16.0,
    *,
    patch_dims: int = 2,
    class_names: dict[int, str] | None = None,
    max_per_class: int = 256,
    balance: bool = True,
    seed: int = 0,
) -> PatchSet:
    """Patches centred on painted pixels, a class per label value.

    Args:
        image: (H, W) or (D, H, W) single-channel image.
        labels: the Labels layer's data, same shape; 0 = unlabelled.
        scale: mm per pixel per axis (the layers' scale).
        patch_mm: patch side in mm.
        patch_dims: 2 or 3 (3D patches need a volume).
        class_names: label value -> class name (default ``"label <v>"``).
        max_per_class: patches per class at most.
        balance: sample every class equally often (small classes are drawn
            with replacement).
        seed: the random choice of centres.

    Raises:
        ValueError: shapes differ or the patch is larger than the image.
        NotEnoughLabels: fewer than 2 label values painted.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if labels.shape != image.shape:
        raise ValueError(
            f"region labels have shape {labels.shape} but the image has shape "
            f"{image.shape}: paint on a Labels layer made for this image"
        )
    if image.ndim not in (2, 3):
        raise ValueError(f"expected a 2D image or 3D volume, got shape {image.shape}")
    values = [int(v) for v in np.unique(labels) if v > 0]
    if len(values) < 2:
        raise NotEnoughLabels(
            f"paint at least 2 label values (classes); found {len(values)}: "
            f"{values or 'none'}"
        )
    px = patch_pixels(patch_mm, scale, image.shape, patch_dims)
    rng = np.random.default_rng(seed)
    where = {v: np.argwhere(labels == v) for v in values}
    n = min(max_per_class, max(len(w) for w in where.values()))
    centers, ys = [], []
    for k, v in enumerate(values):
        pts = where[v]
        m = n if balance else min(max_per_class, len(pts))
        pick = rng.choice(len(pts), m, replace=m > len(pts))
        centers.append(pts[pick])
        ys.append(np.full(m, k, np.int64))
    c = np.concatenate(centers)
    win = _windows(_padded(normalize_image(image), px), px)
    x = _squeeze(win[tuple(c.T)], px)
    names = class_names or {}
    return PatchSet(
        x,
        np.concatenate(ys),
        [str(names.get(v, f"label {v}")) for v in values],
        values,
        c,
        px,
        float(patch_mm),
    )


def patch_record(patches: PatchSet) -> dict[str, Any]:
    """The preprocessing record of a patch classifier's card."""
    spatial = [p for p in patches.patch_px if p > 1 or len(patches.patch_px) == 2]
    return {
        "version": 1,
        "task": "patch",
        "intensity": dict(INTENSITY),
        "foreground_crop": None,
        "size": spatial,
        "patch": {"size_mm": patches.patch_mm, "size_px": list(patches.patch_px)},
    }


def train_patch_classifier(
    patches: PatchSet,
    parent: Any = None,
    *,
    out: str | os.PathLike | None = None,
    config=None,
    control=None,
    **kwargs: Any,
):
    """Fine-tune a patch classifier (generator; see :func:`~.finetune.finetune`).

    ``parent`` None trains :data:`PATCH_ARCH` from scratch; a previous patch
    classifier's checkpoint continues from it (the retraining loop).  The
    default config: 10 epochs, batch 32, lr 3e-3, :data:`PATCH_AUGMENT`.  The
    card records the label value of each class (``provenance.label_values``).
    """
    from napari_medcnn.training.finetune import finetune
    from napari_medcnn.training.trainer import TrainConfig

    if config is None:
        config = TrainConfig(epochs=10, batch_size=32, lr=3e-3, augment=PATCH_AUGMENT)
    prov = dict(kwargs.pop("provenance", None) or {})
    prov.update(label_values=patches.values, task="patch classification")
    kwargs.setdefault("min_per_class", 8)
    return finetune(
        patches.as_labeled(),
        parent,
        out=out,
        config=config,
        control=control,
        arch=PATCH_ARCH,
        arch_kwargs=kwargs.pop("arch_kwargs", PATCH_ARCH_KWARGS),
        record=patch_record(patches),
        provenance=prov,
        **kwargs,
    )


@dataclass
class ProbabilityMap:
    """Class probabilities aligned with the image.

    ``probs`` is float32 (K, *image.shape); use the image layer's scale and
    translate.  ``values`` are the label values of the classes.
    """

    probs: np.ndarray
    classes: list[str]
    values: list[int]
    stride: tuple[int, ...]
    patch_px: tuple[int, ...]

    def label_image(self) -> np.ndarray:
        """Argmax as label values (a Labels layer to correct and retrain)."""
        return np.asarray(self.values, np.int32)[self.probs.argmax(0)]


def _centers(n: int, stride: int) -> np.ndarray:
    c = np.arange(0, n, stride)
    return c if c[-1] == n - 1 else np.append(c, n - 1)


def probability_map(
    image: np.ndarray,
    model: Any,
    *,
    card=None,
    stride: int | Sequence[int] | None = None,
    batch_size: int = 256,
    device=None,
) -> Generator[tuple[str, int, int], None, ProbabilityMap]:
    """Slide a patch classifier over ``image``; yields ``("probability_map",
    done, total)`` per batch.

    Args:
        image: (H, W) or (D, H, W), same kind as the training image.
        model: a patch classifier checkpoint path, a LoadedModel, a
            :class:`~.finetune.FinetuneResult`, or an nn.Module with ``card``.
        stride: pixels between evaluated centres per axis (default a
            quarter patch in-plane, 1 along z for 2D patches); the coarse
            map is linearly interpolated back to every pixel.
        batch_size: patches per forward pass.
    """
    import torch
    from scipy import ndimage

    from napari_medcnn.models.calibration import softmax
    from napari_medcnn.training.finetune import predict_logits

    if card is None:
        if hasattr(model, "card") and hasattr(model, "model"):
            model, card = model.model, model.card
        else:
            from napari_medcnn.models.checkpoint import resolve_model

            loaded = resolve_model(model, device)
            model, card = loaded.model, loaded.card
    image = np.asarray(image)
    px = tuple(card.preprocessing.get("patch", {}).get("size_px") or card.input_size)
    if len(px) != image.ndim:
        raise ValueError(
            f"patch size {px} does not fit an image of shape {image.shape}"
        )
    for ax, (p, n) in enumerate(zip(px, image.shape)):
        if p > n:
            raise ValueError(
                f"the {p} px patch is larger than the image ({n} px) on axis {ax}"
            )
    if stride is None:
        stride = tuple(1 if p == 1 else max(1, p // 4) for p in px)
    elif np.isscalar(stride):
        stride = tuple(1 if p == 1 else int(stride) for p in px)
    stride = tuple(int(s) for s in stride)
    win = _windows(_padded(normalize_image(image), px), px)
    axes = [_centers(n, s) for n, s in zip(image.shape, stride)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(px))
    dev = device or next(model.parameters()).device
    k = len(card.classes)
    logits = np.empty((len(grid), k), np.float32)
    total = -(-len(grid) // batch_size)
    yield ("probability_map", 0, total)
    for b in range(total):
        sl = slice(b * batch_size, (b + 1) * batch_size)
        xb = _squeeze(win[tuple(grid[sl].T)], px)
        logits[sl] = predict_logits(model, xb, batch_size, torch.device(dev))
        yield ("probability_map", b + 1, total)
    coarse = softmax(logits, card.temperature).astype(np.float32)
    coarse = coarse.reshape(*[len(a) for a in axes], k)
    coords = np.meshgrid(
        *[
            np.interp(np.arange(n), a, np.arange(len(a)))
            for n, a in zip(image.shape, axes)
        ],
        indexing="ij",
    )
    probs = np.stack(
        [
            ndimage.map_coordinates(coarse[..., c], coords, order=1, mode="nearest")
            for c in range(k)
        ]
    )
    probs /= np.maximum(probs.sum(0, keepdims=True), 1e-12)
    values = card.provenance.get("label_values") or list(range(1, k + 1))
    return ProbabilityMap(
        probs.astype(np.float32), list(card.classes), list(values), stride, px
    )
