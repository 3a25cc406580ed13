"""The preprocessing record and the functions that apply it.

A model card stores a *record* (a JSON dict) of how training inputs were
prepared; inference, saliency and fine-tuning apply the same record, so a
user's DICOM slice is prepared exactly like the training JPEGs were.

Record keys (all optional but ``size``):

* ``color``: ``"luminance"`` - RGB input is turned to gray (ITU-R 601).
* ``intensity``: ``{"mode": "percentile", "low": 1, "high": 99}`` (per
  image or, with ``"scope": "volume"``, per volume), ``{"mode": "window",
  "center": c, "width": w}`` in modality units (HU): float32 clipped to
  [0, 1]; ``{"mode": "zscore"}``: (value - mean) / standard deviation over
  the whole image (per slice, or per volume with ``"scope": "volume"``),
  float32, optionally clipped to ``"clip": [lo, hi]`` standard deviations;
  or ``{"mode": "none"}``.
* ``foreground_crop``: ``{"threshold": 0.1, "margin": 0.05}`` crops to the
  bounding box of normalised values above ``threshold``, widened by
  ``margin`` of its size and made square in mm, so that heads of any field of
  view fill the input alike.  ``None`` disables it.
* ``square``: with no ``foreground_crop``, ``True`` pads the whole image
  to a square field of view in mm (centred) before the resize, so the
  aspect ratio is kept; the padding takes the value of ``pad``.
* ``pad``: ``"zero"`` (default) or ``"minimum"``: the value that padding
  outside the image takes, 0 or the smallest normalised value of the
  image (the background of a z-scored image; 0 there is mid-grey).
* ``size``: the model's input size, (H, W) (or (D, H, W) for 3D CNNs).
* ``monochrome``: how MONOCHROME1 was handled (the reader inverts it, so
  bright always means high signal); recorded, nothing to apply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

RECORD_VERSION = 1
#: record version of z-score models with a square, uncropped field of view
RECORD_VERSION_FOV = 2


def default_record(size: Sequence[int] = (128, 128)) -> dict[str, Any]:
    """The record used by the default brain-MR model."""
    return {
        "version": RECORD_VERSION,
        "color": "luminance",
        "intensity": {"mode": "percentile", "low": 1.0, "high": 99.0},
        "foreground_crop": {"threshold": 0.1, "margin": 0.05},
        "size": list(size),
        "resample": "area-weighted (antialiased) to size, square field of view in mm",
        "monochrome": "MONOCHROME1 inverted by the reader (bright = high signal)",
    }


def fov_record(size: Sequence[int] = (96, 96)) -> dict[str, Any]:
    """The record of whole-field-of-view models: no head crop, the image
    padded to a square (in mm) with its background value, z-scored."""
    return {
        "version": RECORD_VERSION_FOV,
        "color": "luminance",
        "intensity": {"mode": "zscore", "clip": [-5.0, 8.0]},
        "foreground_crop": None,
        "square": True,
        "pad": "minimum",
        "size": list(size),
        "resample": "area-weighted (antialiased) to size, square field of view in mm",
        "monochrome": "MONOCHROME1 inverted by the reader (bright = high signal)",
    }


def to_gray(image: np.ndarray) -> np.ndarray:
    """RGB(A) (..., 3|4) -> luminance float32; gray input is returned as float32."""
    a = np.asarray(image)
    if a.ndim >= 3 and a.shape[-1] in (3, 4):
        rgb = a[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return a.astype(np.float32, copy=False)


def normalize(data: np.ndarray, intensity: dict[str, Any] | None) -> np.ndarray:
    """Map intensities to [0, 1] float32 as the record says (to
    [0, 1 + ``headroom``] when the record has a ``headroom``: values above
    the upper percentile or window edge then keep their contrast)."""
    a = np.asarray(data, dtype=np.float32)
    mode = (intensity or {}).get("mode", "percentile")
    if mode == "none":
        return a
    if mode == "zscore":
        return _zscore(a, intensity, None)
    if mode == "window":
        c, w = float(intensity["center"]), float(intensity["width"])
        lo, hi = c - w / 2.0, c + w / 2.0
    elif mode == "percentile":
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return np.zeros_like(a)
        step = max(1, finite.size // 2_000_000)
        lo, hi = np.percentile(
            finite[::step], [intensity.get("low", 1.0), intensity.get("high", 99.0)]
        )
    else:
        raise ValueError(f"unknown intensity mode {mode!r}")
    if not hi > lo:
        return np.zeros_like(a)
    top = float((intensity or {}).get("headroom", 0.0))
    out = _rescale(a, np.float64(lo), np.float64(hi), 1.0 + max(top, 0.0))
    return np.nan_to_num(out, copy=False)


def _zscore(
    a: np.ndarray, intensity: dict[str, Any], axis: tuple[int, ...] | None
) -> np.ndarray:
    """``(a - mean) / std`` over ``axis`` (None: all of ``a``), float32;
    0 where the standard deviation is 0 or not finite; non-finite values
    become 0 and are left out of the statistics."""
    a = np.asarray(a, np.float32)
    kd = axis is not None
    total = a.sum(axis=axis, keepdims=kd, dtype=np.float64)
    # a float64 sum of float32 values cannot overflow, so any inf or NaN
    # shows in it: finite images skip the masking passes
    finite = None if a.size and np.isfinite(total).all() else np.isfinite(a)
    if finite is None:
        clean = a
        n = a.size if axis is None else np.prod([a.shape[i] for i in axis])
    else:
        clean = np.where(finite, a, np.float32(0))
        n = np.maximum(finite.sum(axis=axis, keepdims=kd, dtype=np.float64), 1)
        total = clean.sum(axis=axis, keepdims=kd, dtype=np.float64)
    mean = total / n
    out = clean - mean.astype(np.float32)
    if finite is not None:
        out = np.where(finite, out, np.float32(0))
    var = np.square(out).sum(axis=axis, keepdims=kd, dtype=np.float64) / n
    std = np.sqrt(var)
    ok = std > 1e-6 * np.maximum(np.abs(mean), 1.0)
    np.divide(out, np.where(ok, std, 1.0).astype(np.float32), out=out)
    if not np.all(ok):
        out = np.where(ok, out, np.float32(0)).astype(np.float32, copy=False)
    return _clip(out, intensity)


def _clip(out: np.ndarray, intensity: dict[str, Any] | None) -> np.ndarray:
    """The record's z-score clip (``intensity["clip"]``), in place."""
    clip = (intensity or {}).get("clip")
    if clip:
        np.clip(out, float(clip[0]), float(clip[1]), out=out)
    return out


def _rescale(
    a: np.ndarray, lo: np.ndarray, hi: np.ndarray, top: float = 1.0
) -> np.ndarray:
    """``(a - lo) / (hi - lo)`` clipped to [0, ``top``], in float32
    arithmetic (bounds given in float64, broadcast against ``a``).  The one
    formula behind :func:`normalize` and :func:`normalize_slices`, so a
    slice comes out the same bit for bit either way."""
    out = a - np.asarray(lo, np.float32)
    out /= np.asarray(hi - lo, np.float32)
    np.clip(out, 0.0, top, out=out)
    return out


def normalize_slices(stack: np.ndarray, intensity: dict[str, Any] | None) -> np.ndarray:
    """:func:`normalize` applied to each (H, W) slice of a (S, H, W) stack.

    Same values as the per-slice loop (percentiles per slice), computed with
    one vectorised call when every value is finite.
    """
    a = np.asarray(stack, dtype=np.float32)
    mode = (intensity or {}).get("mode", "percentile")
    if mode == "zscore" and a.shape[0]:
        return _zscore(a, intensity, tuple(range(1, a.ndim)))
    if mode != "percentile" or a.shape[0] == 0:
        # "none" and "window" are elementwise: the whole stack at once is equal
        return normalize(a, intensity)
    if not np.isfinite(a).all():
        return np.stack([normalize(s, intensity) for s in a])
    flat = a.reshape(a.shape[0], -1)
    step = max(1, flat.shape[1] // 2_000_000)
    q = [intensity.get("low", 1.0), intensity.get("high", 99.0)]
    lo, hi = np.percentile(flat[:, ::step], q, axis=1)[:, :, None, None]
    ok = hi > lo
    top = 1.0 + max(float(intensity.get("headroom", 0.0)), 0.0)
    out = _rescale(a, lo, np.where(ok, hi, lo + 1.0), top)
    out[~ok[:, 0, 0]] = 0.0
    return out


def main_object(mask: np.ndarray, opening: int = 2) -> np.ndarray:
    """The largest connected object of a 2D mask after a small opening.

    Drops thin frames, rulers and burned-in text around the anatomy so they
    do not widen the crop.  Returns the input when the opening removes all.
    """
    from scipy import ndimage

    opened = ndimage.binary_opening(mask, iterations=opening) if opening else mask
    lab, n = ndimage.label(opened)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == sizes.argmax()


def foreground_box(
    mask: np.ndarray,
    spacing: Sequence[float],
    margin: float = 0.05,
) -> tuple[slice, slice]:
    """Square (in mm) bounding box of ``mask`` (H, W), widened by ``margin``.

    The box may extend past the image; :func:`crop_pad` pads with zeros.
    Returns the whole image when the mask is empty.
    """
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return box_around((0, h, 0, w), spacing, margin)
    return box_around((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1), spacing, margin)


def box_around(
    bbox: tuple[int, int, int, int], spacing: Sequence[float], margin: float
) -> tuple[slice, slice]:
    """(y0, y1, x0, x1) pixel bounds -> the square-in-mm box, widened."""
    y0, y1, x0, x1 = (int(v) for v in bbox)
    sy, sx = float(spacing[0]), float(spacing[1])
    side_mm = max((y1 - y0) * sy, (x1 - x0) * sx) * (1.0 + 2.0 * margin)
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    hy, hx = side_mm / sy / 2.0, side_mm / sx / 2.0
    return (
        slice(int(np.floor(cy - hy)), int(np.ceil(cy + hy))),
        slice(int(np.floor(cx - hx)), int(np.ceil(cx + hx))),
    )


def square_box(shape: Sequence[int], spacing: Sequence[float]) -> tuple[slice, slice]:
    """The whole (H, W) image as a centred square box in mm (no margin)."""
    h, w = int(shape[-2]), int(shape[-1])
    return box_around((0, h, 0, w), spacing, 0.0)


def pad_value(x: np.ndarray, record: dict[str, Any], lead: int = 0) -> Any:
    """The value padding takes for normalised ``x``: 0, or with ``"pad":
    "minimum"`` its smallest value (per item of the first ``lead`` axes,
    shaped to broadcast against ``x``)."""
    if record.get("pad", "zero") != "minimum" or x.size == 0:
        return 0.0
    if not lead:
        return float(np.min(x))
    m = x.reshape(*x.shape[:lead], -1).min(axis=-1)
    return m.reshape(*m.shape, *[1] * (x.ndim - lead))


def crop_pad(
    image: np.ndarray, box: tuple[slice, slice], fill: Any = 0.0
) -> np.ndarray:
    """Crop the last two axes to ``box``, padding with ``fill`` (a scalar, or
    an array broadcasting against ``image``) where it leaves the image."""
    h, w = image.shape[-2:]
    ys, xs = box
    pad_y = (max(0, -ys.start), max(0, ys.stop - h))
    pad_x = (max(0, -xs.start), max(0, xs.stop - w))
    core = image[
        ..., max(0, ys.start) : min(h, ys.stop), max(0, xs.start) : min(w, xs.stop)
    ]
    if any(pad_y) or any(pad_x):
        widths = [(0, 0)] * (image.ndim - 2) + [pad_y, pad_x]
        if np.ndim(fill) == 0:
            return np.pad(core, widths, constant_values=float(fill))
        out = np.empty(
            (
                *core.shape[:-2],
                core.shape[-2] + sum(pad_y),
                core.shape[-1] + sum(pad_x),
            ),
            core.dtype,
        )
        out[...] = fill
        out[
            ...,
            pad_y[0] : pad_y[0] + core.shape[-2],
            pad_x[0] : pad_x[0] + core.shape[-1],
        ] = core
        return out
    return core


def resize(stack: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize the last ``len(size)`` axes with antialiasing (torch, float32)."""
    import torch
    import torch.nn.functional as F

    a = np.ascontiguousarray(stack, dtype=np.float32)
    nd = len(size)
    lead = a.shape[:-nd]
    t = torch.from_numpy(a.reshape(-1, 1, *a.shape[-nd:]))
    if nd == 2:
        t = F.interpolate(
            t, size=tuple(size), mode="bilinear", antialias=True, align_corners=False
        )
    else:
        t = F.interpolate(t, size=tuple(size), mode="trilinear", align_corners=False)
    return t.reshape(*lead, *size).numpy()


def prepare(
    channels: Sequence[np.ndarray],
    record: dict[str, Any],
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Prepare co-registered images for a model, as the record says.

    Args:
        channels: one array per channel, all the same shape: (H, W) slices,
            (S, H, W) stacks of slices, or RGB (..., 3) (turned to gray).
        record: the model card's preprocessing record.
        spacing: in-plane pixel size (row, col) in mm, used to make the crop
            square in mm; default 1 mm.

    Returns:
        float32 array (C, H', W') or (C, S, H', W') at ``record["size"]``
        (for 3-element sizes the stack is resized in depth as well).
    """
    arrs = [
        to_gray(c) if record.get("color") == "luminance" else np.asarray(c, np.float32)
        for c in channels
    ]
    shape = arrs[0].shape
    for a in arrs[1:]:
        if a.shape != shape:
            raise ValueError(f"channels differ in shape: {shape} vs {a.shape}")
    if len(shape) not in (2, 3):
        raise ValueError(f"expected a 2D slice or a 3D stack, got shape {shape}")
    crop = record.get("foreground_crop")
    threshold = float(crop.get("threshold", 0.1)) if crop else None
    x, mask = _normalize_channels(arrs, record.get("intensity"), threshold)
    if crop:
        # one box for all channels and slices keeps them co-registered
        mask = main_object(mask)
        box = foreground_box(mask, spacing or (1.0, 1.0), crop.get("margin", 0.05))
        x = crop_pad(x, box, pad_value(x, record))
    elif record.get("square"):
        x = crop_pad(
            x, square_box(x.shape, spacing or (1.0, 1.0)), pad_value(x, record)
        )
    size = list(record["size"])
    if len(size) == 3:
        if x.ndim != 4:
            raise ValueError("a 3D model needs a volume, got a 2D slice")
        return resize(x, size)
    return resize(x, size[-2:])


def _normalize_channels(
    arrs: Sequence[np.ndarray],
    intensity: dict[str, Any] | None,
    threshold: float | None,
    chunk: int = 16,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalised channels as one float32 (C, [S,] H, W) array, and the
    (H, W) mask of channel 0 above ``threshold`` (any slice), or None.

    Stacks are normalised ``chunk`` slices at a time (float32 arithmetic,
    as :func:`normalize` does), so a volume needs no float64 copy of
    itself.
    """
    per_volume = (intensity or {}).get("scope") == "volume"
    shape = arrs[0].shape
    x = np.empty((len(arrs), *shape), np.float32)
    mask = np.zeros(shape[-2:], bool) if threshold is not None else None
    step = chunk if len(shape) == 3 and not per_volume else None
    for c, a in enumerate(arrs):
        parts = [slice(None)] if step is None else _spans(shape[0], step)
        for part in parts:
            n = (
                normalize(a, intensity)
                if step is None
                else normalize_slices(a[part], intensity)
            )
            x[c][part] = n
            if c == 0 and mask is not None:
                above = n > threshold
                mask |= above.any(axis=0) if above.ndim == 3 else above
    return x, mask


def _spans(n: int, step: int) -> list[slice]:
    return [slice(a, min(n, a + step)) for a in range(0, n, step)]
