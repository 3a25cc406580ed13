"""Pixel handling shared by single DICOM files and series.

Order of operations (PS3.4 grayscale pipeline, then what napari needs):

1. decode (``decoders.decode``: pydicom's decoders; YBR_FULL/YBR_FULL_422
   come back as RGB),
2. colour: PALETTE COLOR -> RGB via the palette, other YBR -> RGB,
3. modality transform: ModalityLUTSequence, else RescaleSlope/Intercept
   (CT in HU).  Integral slope/intercept whose result fits give ``int16``
   (computed in place), otherwise ``float32``,
4. VOI LUT: a VOILUTSequence is applied (except for CT/PT, whose values stay
   quantitative); WindowCenter/Width is *not* applied, it becomes the layer's
   contrast limits,
5. MONOCHROME1 is inverted (``lo + hi - v`` over the data range) so that
   napari's grey colormap shows it the right way round; recorded in metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

#: Modalities whose values are quantitative: no VOI LUT is baked in.
QUANTITATIVE = {"CT", "PT", "RTDOSE"}


def stored_dtype(bits_allocated: int, pixel_representation: int) -> np.dtype:
    """numpy dtype of natively stored pixels (1-bit data unpacks to uint8)."""
    if bits_allocated in (1, 8):
        return np.dtype(np.int8 if pixel_representation == 1 else np.uint8)
    if bits_allocated in (16, 32):
        kind = "i" if pixel_representation == 1 else "u"
        return np.dtype(f"{kind}{bits_allocated // 8}")
    raise ValueError(f"unsupported BitsAllocated {bits_allocated}")


@dataclass
class PixelInfo:
    """What the pipeline did, for ``layer.metadata``."""

    rgb: bool = False
    window: tuple[float, float] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def to_rgb(arr: np.ndarray, ds: Dataset, photometric: str) -> np.ndarray:
    """Palette or YBR pixels as RGB, ``uint8`` where that loses nothing.

    ``arr`` is one or more frames; the result has a trailing axis of 3.
    """
    pi = photometric.upper()
    if pi == "PALETTE COLOR":
        out = apply_color_lut(arr, ds)
        if out.dtype != np.uint8:
            # 16-bit palette entries: the top byte is the displayed colour
            out = (
                (out >> 8).astype(np.uint8) if out.max() > 255 else out.astype(np.uint8)
            )
        return out
    if pi.startswith("YBR") and arr.dtype == np.uint8:
        from pydicom.pixels import convert_color_space

        if pi in ("YBR_FULL", "YBR_FULL_422"):
            return convert_color_space(arr, pi, "RGB")
    return arr


def _integral(values: np.ndarray) -> bool:
    return bool(np.all(np.abs(values - np.round(values)) < 1e-9))


def _wrap(value: int, dtype: np.dtype) -> Any:
    """``value`` modulo 2**bits as a scalar of ``dtype`` (for in-place math)."""
    bits = dtype.itemsize * 8
    v = int(value) % (1 << bits)
    if dtype.kind == "i" and v >= 1 << (bits - 1):
        v -= 1 << bits
    return dtype.type(v)


def rescale(
    raw: np.ndarray,
    slopes: np.ndarray,
    intercepts: np.ndarray,
    value_range: tuple[int, int] | None = None,
) -> np.ndarray:
    """Apply RescaleSlope/Intercept per frame; may reuse ``raw``'s memory.

    Args:
        raw: stored values, ``(frames, ...)`` with one slope/intercept per
            frame (a single frame may have no leading axis if both have
            length 1).
        slopes, intercepts: per-frame values.
        value_range: ``(min, max)`` of ``raw`` when already known (saves two
            passes over a large volume).

    Returns:
        ``raw`` itself for an identity transform; ``int16`` (computed in place
        for 16-bit input) when slope and intercept are integers, uniform and
        the result fits; else a new ``float32`` array.
    """
    slopes = np.asarray(slopes, float).reshape(-1)
    intercepts = np.asarray(intercepts, float).reshape(-1)
    if np.all(slopes == 1) and np.all(intercepts == 0):
        return raw
    uniform = np.all(slopes == slopes[0]) and np.all(intercepts == intercepts[0])
    if (
        uniform
        and raw.dtype.kind in "iu"
        and raw.dtype.itemsize <= 2
        and _integral(np.r_[slopes[:1], intercepts[:1]])
        and raw.size
    ):
        s, b = int(round(slopes[0])), int(round(intercepts[0]))
        lo, hi = value_range or (int(raw.min()), int(raw.max()))
        out_lo, out_hi = sorted((lo * s + b, hi * s + b))
        if out_lo >= -32768 and out_hi <= 32767:
            # int16 arithmetic is modulo 2**16, so doing it in place on a
            # (u)int16 buffer is exact whenever the true result fits.
            out = (
                raw.view(np.int16) if raw.dtype.itemsize == 2 else raw.astype(np.int16)
            )
            if s != 1:
                np.multiply(out, _wrap(s, out.dtype), out=out)
            if b != 0:
                np.add(out, _wrap(b, out.dtype), out=out)
            return out
    out = np.empty(raw.shape, np.float32)
    if uniform or raw.ndim == 0:
        np.multiply(raw, np.float32(slopes[0]), out=out, casting="unsafe")
        out += np.float32(intercepts[0])
        return out
    for k in range(raw.shape[0]):
        np.multiply(raw[k], np.float32(slopes[k]), out=out[k], casting="unsafe")
        out[k] += np.float32(intercepts[k])
    return out


def invert(data: np.ndarray) -> tuple[np.ndarray, float]:
    """MONOCHROME1 -> display polarity in place: ``v -> lo + hi - v``.

    ``lo``/``hi`` are the data's own min/max, so the result stays in range
    for any dtype.  Returns ``(data, lo + hi)``.
    """
    if data.size == 0:
        return data, 0.0
    lo, hi = data.min(), data.max()
    total = float(lo) + float(hi)
    if data.dtype.kind in "iu":
        np.subtract(_wrap(int(lo) + int(hi), data.dtype), data, out=data)
    else:
        np.subtract(data.dtype.type(total), data, out=data)
    return data, total


def window_of(ds: Dataset | None) -> tuple[float, float] | None:
    """(center, width) from WindowCenter/WindowWidth, first value if many."""
    if ds is None:
        return None
    try:
        c, w = ds.get("WindowCenter"), ds.get("WindowWidth")
        if c is None or w is None:
            return None
        c = float(c[0] if hasattr(c, "__len__") and not isinstance(c, str) else c)
        w = float(w[0] if hasattr(w, "__len__") and not isinstance(w, str) else w)
    except (TypeError, ValueError, IndexError):
        return None
    if not (np.isfinite(c) and np.isfinite(w)) or w <= 0:
        return None
    return (c, w)


def finish_grayscale(
    data: np.ndarray,
    ds: Dataset,
    photometric: str,
    *,
    slopes: np.ndarray | None,
    intercepts: np.ndarray | None,
    window: tuple[float, float] | None,
    modality: str | None,
    invert_now: bool = True,
    value_range: tuple[int, int] | None = None,
) -> tuple[np.ndarray, PixelInfo]:
    """Modality transform, VOI LUT and MONOCHROME1 inversion of stored values.

    Args:
        data: stored values (frames first when ``slopes`` has several).
        ds: the dataset (or header) holding the LUT sequences.
        photometric: MONOCHROME1 or MONOCHROME2.
        slopes, intercepts: per-frame rescale (None -> no rescale, or the
            ModalityLUTSequence of ``ds`` when it has one).
        window: (center, width) in modality units, adjusted for inversion.
        modality: DICOM modality (decides whether a VOI LUT is baked in).
        invert_now: False lets a series invert once over the whole volume.
        value_range: known ``(min, max)`` of the stored ``data``.
    """
    info = PixelInfo(window=window)
    if "ModalityLUTSequence" in ds:
        data = apply_modality_lut(data, ds)
        info.notes["modality_lut_applied"] = True
    elif slopes is not None and intercepts is not None:
        data = rescale(data, slopes, intercepts, value_range)
    if "VOILUTSequence" in ds:
        if (modality or "").upper() in QUANTITATIVE:
            info.notes["voi_lut_skipped"] = "values kept in modality units"
        else:
            data = apply_voi(data, ds, index=0)
            info.notes["voi_lut_applied"] = True
            info.window = None
    if photometric.upper() == "MONOCHROME1":
        info.notes["photometric_original"] = "MONOCHROME1"
        if invert_now:
            data, total = invert(data)
            info.notes["monochrome1_inverted"] = True
            info.notes["inversion_sum"] = total
            if info.window is not None:
                info.window = (total - info.window[0], info.window[1])
    return data, info
