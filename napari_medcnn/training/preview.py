"""Augmentation preview: what the model will see during training.

:func:`augmentation_preview` returns N augmented copies of one prepared
sample, and :func:`montage` tiles them into one 2D image for a napari
Image layer (or show the (N, H, W) stack in napari's grid mode).
"""

from __future__ import annotations

import numpy as np

from napari_medcnn.training.data.augment import build_augmentation


def augmentation_preview(
    sample: np.ndarray,
    config: dict[str, bool] | None = None,
    n: int = 8,
    seed: int = 0,
) -> np.ndarray:
    """``n`` augmented copies of ``sample``, as training would draw them.

    Args:
        sample: a prepared sample in [0, 1]: (H, W), (C, H, W) or
            (C, D, H, W) (e.g. one row of a LabeledSet's ``x``).
        config: augmentation switches (``augment.py``; None = defaults).
        n: number of samples.
        seed: makes the preview reproducible.

    Returns:
        float32 (n, C, ...) array; the first copy is the unaugmented sample.
    """
    import torch

    x = np.asarray(sample, np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim not in (3, 4):
        raise ValueError(f"expected (H, W), (C, H, W) or (C, D, H, W), got {x.shape}")
    aug = build_augmentation(config, x.ndim - 1, seed)
    t = torch.from_numpy(x)
    out = [x]
    for _ in range(max(0, n - 1)):
        out.append(np.asarray(aug(t.clone()), np.float32))
    return np.stack(out)


def montage(samples: np.ndarray, cols: int | None = None, gap: int = 2) -> np.ndarray:
    """Tile (N, H, W) or (N, 1, H, W) samples into one (rows*H, cols*W) image
    with ``gap`` pixels of 0 between tiles."""
    s = np.asarray(samples, np.float32)
    if s.ndim == 4:
        s = s[:, 0]
    n, h, w = s.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap), np.float32)
    for i, tile in enumerate(s):
        r, c = divmod(i, cols)
        out[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = tile
    return out
