"""Augmentation with MONAI transforms, each one switchable.

The config is a plain dict (stored in model cards):
``{"flip": True, "rotate": True, "affine": True, "elastic": False,
"intensity": True, "gamma": True, "noise": True}``.  Transforms act on one
channel-first float sample, (C, H, W) or (C, D, H, W), with values in [0, 1].
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, bool] = {
    "flip": True,
    "rotate": True,
    "affine": True,
    "elastic": False,
    "intensity": True,
    "gamma": True,
    "noise": True,
}


def default_config(modality: str | None = None) -> dict[str, bool]:
    """Sensible defaults per modality.

    CT keeps intensities (HU are absolute), so intensity/gamma are off.
    """
    cfg = dict(DEFAULTS)
    if modality == "CT":
        cfg.update(intensity=False, gamma=False)
    return cfg


def build_augmentation(
    config: dict[str, Any] | None, spatial_dims: int = 2, seed: int = 0
):
    """A MONAI ``Compose`` for the switched-on transforms (identity if none)."""
    import numpy as np
    from monai import transforms as T

    cfg = dict(DEFAULTS if config is None else config)
    tf: list = []
    if cfg.get("flip"):
        tf.append(T.RandFlip(prob=0.5, spatial_axis=spatial_dims - 1))
    if cfg.get("rotate"):
        rng = np.pi / 12
        kw = (
            {"range_x": rng}
            if spatial_dims == 2
            else {"range_x": rng / 2, "range_y": rng / 2, "range_z": rng}
        )
        tf.append(T.RandRotate(prob=0.5, padding_mode="zeros", **kw))
    if cfg.get("affine"):
        tf.append(
            T.RandAffine(
                prob=0.5,
                scale_range=[0.1] * spatial_dims,
                translate_range=[8] * spatial_dims,
                padding_mode="zeros",
            )
        )
    if cfg.get("elastic"):
        if spatial_dims == 2:
            tf.append(
                T.Rand2DElastic(prob=0.3, spacing=(20, 20), magnitude_range=(1, 2))
            )
        else:
            tf.append(
                T.Rand3DElastic(prob=0.3, sigma_range=(5, 7), magnitude_range=(50, 100))
            )
    if cfg.get("intensity"):
        tf.append(T.RandScaleIntensity(factors=0.1, prob=0.5))
        tf.append(T.RandShiftIntensity(offsets=0.05, prob=0.5))
    if cfg.get("gamma"):
        tf.append(T.RandAdjustContrast(prob=0.3, gamma=(0.7, 1.5)))
    if cfg.get("noise"):
        tf.append(T.RandGaussianNoise(prob=0.3, std=0.02))
    comp = T.Compose(tf)
    comp.set_random_state(seed=seed)
    return comp
