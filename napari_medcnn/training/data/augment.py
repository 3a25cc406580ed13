"""Augmentation with MONAI transforms, each one switchable.

The config is a plain dict (stored in model cards):
``{"flip": True, "rotate": True, "affine": True, "elastic": False,
"intensity": True, "gamma": True, "noise": True, "blur": False,
"cutout": False}``.  Optional numbers tune the strength (defaults in
:data:`STRENGTH`): ``rotate_deg`` (degrees, in-plane), ``scale`` (relative
zoom range), ``translate_px`` (pixels), ``gamma_low``/``gamma_high``,
``noise_std`` (in [0, 1] intensity units), ``cutout_px`` (the largest
erased square, pixels) and ``histogram_points`` (the most control points of
the random monotone intensity curve that ``histogram`` applies, MONAI's
``RandHistogramShift``: contrast differences between sequences, scanners
and sites, which a gamma curve alone does not cover).  Transforms act on
one channel-first float sample, (C, H, W) or (C, D, H, W), with values in
[0, 1].
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
    "blur": False,
    "cutout": False,
    "histogram": False,
    "pixel_dropout": False,
    "slice_dropout": True,
}
#: default strengths (used when the config gives no number)
STRENGTH: dict[str, float] = {
    "rotate_deg": 15.0,
    "scale": 0.1,
    "translate_px": 8.0,
    "gamma_low": 0.7,
    "gamma_high": 1.5,
    "noise_std": 0.02,
    "cutout_px": 32.0,
    "histogram_points": 10.0,
    "pixel_dropout_max": 0.5,
    "pixel_dropout_blur": 0.0,
    "slice_dropout_max": 0.15,
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
    k = {name: float(cfg.get(name, value)) for name, value in STRENGTH.items()}
    nd = spatial_dims
    tf: list = []
    by_min = cfg.get("fill", "zero") == "minimum"
    # MONAI pads with zeros; "border" repeats the edge (the background) instead
    pad = "border" if by_min else "zeros"
    if cfg.get("flip"):
        tf.append(T.RandFlip(prob=0.5, spatial_axis=nd - 1))
    if cfg.get("rotate"):
        rng = np.deg2rad(k["rotate_deg"])
        kw = (
            {"range_x": rng}
            if nd == 2
            else {"range_x": rng / 2, "range_y": rng / 2, "range_z": rng}
        )
        tf.append(T.RandRotate(prob=0.5, padding_mode=pad, **kw))
    if cfg.get("affine"):
        tf.append(
            T.RandAffine(
                prob=0.5,
                scale_range=[k["scale"]] * nd,
                translate_range=[k["translate_px"]] * nd,
                padding_mode=pad,
            )
        )
    if cfg.get("elastic"):
        if nd == 2:
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
        tf.append(
            T.RandAdjustContrast(prob=0.3, gamma=(k["gamma_low"], k["gamma_high"]))
        )
    if cfg.get("blur"):
        sig = {f"sigma_{a}": (0.3, 1.0) for a in "xyz"[:nd]}
        tf.append(T.RandGaussianSmooth(prob=0.2, **sig))
    if cfg.get("histogram"):
        most = max(5, int(k["histogram_points"]))
        tf.append(T.RandHistogramShift(num_control_points=(4, most), prob=0.3))
    if cfg.get("noise"):
        tf.append(T.RandGaussianNoise(prob=0.3, std=k["noise_std"]))
    if cfg.get("cutout"):
        big = int(k["cutout_px"])
        cut = T.RandCoarseDropout(
            holes=1,
            spatial_size=[max(big // 2, 1)] * nd,
            max_spatial_size=[big] * nd,
            prob=0.3,
        )
        if by_min:
            cut.set_random_state(seed + 1)
        tf.append(_AtMinimum(cut) if by_min else cut)
    if cfg.get("pixel_dropout"):
        drop = PixelDropout(
            k["pixel_dropout_max"], prob=0.3, blurred=k["pixel_dropout_blur"]
        )
        tf.append(drop.set_random_state(seed + 2))
    if nd == 3 and cfg.get("slice_dropout"):
        drop = SliceDropout(k["slice_dropout_max"], prob=0.5)
        tf.insert(0, drop.set_random_state(seed + 3))
    comp = T.Compose(tf)
    comp.set_random_state(seed=seed)
    return comp


#: transforms that move pixels: a lesion mask must follow them
SPATIAL = ("RandFlip", "RandRotate", "RandAffine", "Rand2DElastic",
           "Rand3DElastic", "SliceDropout")  # fmt: skip


def augment_with_mask(transform, x, mask):
    """Augment image ``x`` (C, ...) and its mask (...) alike.

    The transforms of a ``Compose`` from :func:`build_augmentation` run in
    order: those that move pixels (:data:`SPATIAL`) on the image and the
    mask stacked as one more channel, the intensity ones on the image only.
    Returns ``(x, mask)`` as float32 tensors.
    """
    import torch

    x = torch.as_tensor(x, dtype=torch.float32)
    m = torch.as_tensor(mask, dtype=torch.float32)[None]
    for t in getattr(transform, "transforms", [transform]):
        if type(t).__name__ in SPATIAL:
            both = torch.as_tensor(t(torch.cat([x, m])), dtype=torch.float32)
            x, m = both[:-1], both[-1:]
        else:
            x = torch.as_tensor(t(x), dtype=torch.float32)
    return x, m[0]


class _AtMinimum:
    """Run a zero-filling MONAI transform so that what it fills becomes the
    sample's minimum: shift the sample to min 0, transform, shift back."""

    def __init__(self, transform):
        self.transform = transform

    def set_random_state(self, seed=None, state=None):
        self.transform.set_random_state(seed, state)
        return self

    def __call__(self, x):
        import torch

        t = torch.as_tensor(x)
        lo = t.min()
        return torch.as_tensor(self.transform(t - lo)) + lo


class _Seeded:
    """A random transform with MONAI's ``set_random_state`` protocol."""

    def __init__(self):
        import numpy as np

        self.R = np.random.RandomState()

    def set_random_state(self, seed=None, state=None):
        import numpy as np

        self.R = state if state is not None else np.random.RandomState(seed)
        return self


class PixelDropout(_Seeded):
    """Set a random fraction (uniform in [0, ``max_fraction``]) of the
    spatial locations of a (C, *spatial) sample to its minimum, with
    probability ``prob`` (all channels of a location together).

    With probability ``blurred`` the dropped locations take the values of
    a Gaussian-blurred copy of the sample instead (sigma 10 % of the
    smallest side, in pixels): the model then survives scattered blurred
    pixels as well as black ones, the two substrates of the deletion test.
    """

    def __init__(
        self, max_fraction: float = 0.5, prob: float = 0.3, blurred: float = 0.0
    ):
        super().__init__()
        self.max_fraction = float(max_fraction)
        self.prob = float(prob)
        self.blurred = float(blurred)

    def __call__(self, x):
        import torch

        t = torch.as_tensor(x)
        if self.R.rand() >= self.prob:
            return t
        frac = self.R.uniform(0.0, self.max_fraction)
        keep = self.R.rand(*t.shape[1:]) >= frac
        mask = torch.as_tensor(keep)[None]
        if self.blurred > 0 and self.R.rand() < self.blurred:
            from scipy.ndimage import gaussian_filter

            sigma = max(1.0, 0.1 * min(t.shape[-2:]))
            arr = t.detach().cpu().numpy()
            spatial = (0,) + (sigma,) * (arr.ndim - 1)
            fill = torch.as_tensor(gaussian_filter(arr, spatial), dtype=t.dtype)
            return torch.where(mask, t, fill)
        return torch.where(mask, t, t.min())


class SliceDropout(_Seeded):
    """Drop a random fraction (uniform in [0, ``max_fraction``]) of the
    slices of a (C, S, H, W) volume and stretch the rest back to ``S``
    slices (linear in depth), with probability ``prob``.

    A volume model then sees the same anatomy at varying slice spacing and
    with missing slices, as scans of other protocols have: the depths it
    learns are not tied to one slice count.  The first and last slices are
    kept, so the covered extent does not change.
    """

    def __init__(self, max_fraction: float = 0.15, prob: float = 0.5):
        super().__init__()
        self.max_fraction = float(max_fraction)
        self.prob = float(prob)

    def __call__(self, x):
        import numpy as np
        import torch

        t = torch.as_tensor(x)
        s = t.shape[1]
        if s < 4 or self.R.rand() >= self.prob:
            return t
        n_drop = int(round(self.R.uniform(0.0, self.max_fraction) * (s - 2)))
        if n_drop == 0:
            return t
        inner = self.R.choice(np.arange(1, s - 1), s - 2 - n_drop, replace=False)
        keep = np.sort(np.concatenate([[0], inner, [s - 1]]))
        # the kept slices, evenly re-spaced over the S output slices
        pos = np.linspace(0, len(keep) - 1, s)
        i0 = np.floor(pos).astype(int)
        i1 = np.minimum(i0 + 1, len(keep) - 1)
        w = torch.as_tensor(pos - i0, dtype=t.dtype).reshape(1, s, 1, 1)
        kept = t[:, torch.as_tensor(keep)]
        return kept[:, i0] * (1 - w) + kept[:, i1] * w
