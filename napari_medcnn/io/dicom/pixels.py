"""Pixel handling shared by single DICOM files and series.

Order of operations (PS3.4 grayscale pipeline, then what napari needs):

1. decode (pydicom's decoders; YBR_FULL/YBR_FULL_422 come back as RGB),
2. colour: PALETTE COLOR -> RGB via the palette, other YBR -> RGB,
3. modality transform: ModalityLUTSequence, else RescaleSlope/Intercept
   (CT in HU).  Integral slope/intercept whose result fits give ``int16``
   (computed in place), otherwise ``float32``,
4. VOI LUT: a VOILUTSequence is applied (except for CT/PT, whose values stay
   quantitative); WindowCenter/Width is *not* applied, it becomes the layer's
   contrast limits,
5. MONOCHROME1 is inverted (``lo + hi - v`` over the data range) so that
   napari's grey colormap shows it the right way round; recorded in metadata.

Missing decoders raise :class:`ScanReadError` naming the transfer syntax and
the pip package to install; corrupt data (a native decoder's error or panic)
raises it with the decoder's own words, which never reach the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi
from pydicom.pixels import get_decoder as _pydicom_get_decoder
from pydicom.pixels.utils import as_pixel_options
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSTransferSyntaxes,
    RLELossless,
)

from napari_medcnn.io.dicom._imagecodecs_plugin import register as _register_imagecodecs
from napari_medcnn.io.dicom.native import (
    NativeDecoderPanic,
    NativeOutput,
    native_decoder,
)
from napari_medcnn.io.scan import ScanReadError

# 12-bit JPEG Extended (Pillow and python-gdcm wheels cannot decode it),
# JPEG Lossless without python-gdcm's crashes, a JPEG Baseline fallback.
_register_imagecodecs()

#: pip packages (non-GPL first) that provide a decoder for each syntax.
_J2K = "pylibjpeg pylibjpeg-openjpeg"
DECODER_PACKAGES: dict[str, str] = {
    JPEGBaseline8Bit: "pillow",
    JPEGExtended12Bit: "imagecodecs",
    JPEGLossless: "imagecodecs",
    JPEGLosslessSV1: "imagecodecs",
    RLELossless: "pylibjpeg pylibjpeg-rle",
    **{ts: "pyjpegls" for ts in JPEGLSTransferSyntaxes},
    **{ts: _J2K for ts in JPEG2000TransferSyntaxes},
}
#: Fastest plugin per syntax (measured on the pydicom corpus: pillow is ~3x
#: faster than gdcm on baseline JPEG, pylibjpeg-rle ~5x faster than pydicom's
#: RLE); the other available plugins are tried when it fails, except those
#: in :data:`CRASH_PRONE_PLUGINS`.
PREFERRED_PLUGIN: dict[str, str] = {
    JPEGBaseline8Bit: "pillow",
    JPEGExtended12Bit: "pillow",
    JPEGLossless: "imagecodecs",
    JPEGLosslessSV1: "imagecodecs",
    RLELossless: "pylibjpeg",
    **{ts: "pyjpegls" for ts in JPEGLSTransferSyntaxes},
    **{ts: "pylibjpeg" for ts in JPEG2000TransferSyntaxes},
}
#: Plugins used only where no other plugin can decode the syntax: python-gdcm
#: segfaults or aborts (an uncaught C++ exception) on corrupt JPEG data that
#: Pillow rejected ("Unsupported JPEG data precision 157", "Corrupt JPEG
#: data: 14 extraneous bytes"; 2 of 10,000 mutants of
#: scripts/fuzz_reader.py), which no ``except`` can catch.
CRASH_PRONE_PLUGINS = frozenset({"gdcm"})
GPL_HINT = (
    "imagecodecs (BSD, a dependency: pip install imagecodecs) or "
    "pylibjpeg-libjpeg (GPL-3.0, optional: pip install 'napari-medcnn[gpl]')"
)
#: Modalities whose values are quantitative: no VOI LUT is baked in.
QUANTITATIVE = {"CT", "PT", "RTDOSE"}


def get_decoder(tsyntax: str) -> Any:
    """pydicom's decoder for a transfer syntax (a seam for tests)."""
    return _pydicom_get_decoder(tsyntax)


def stored_dtype(bits_allocated: int, pixel_representation: int) -> np.dtype:
    """numpy dtype of natively stored pixels (1-bit data unpacks to uint8)."""
    if bits_allocated in (1, 8):
        return np.dtype(np.int8 if pixel_representation == 1 else np.uint8)
    if bits_allocated in (16, 32):
        kind = "i" if pixel_representation == 1 else "u"
        return np.dtype(f"{kind}{bits_allocated // 8}")
    raise ValueError(f"unsupported BitsAllocated {bits_allocated}")


def require_decoder(path: Any, tsyntax: Any) -> Any:
    """Return pydicom's decoder for ``tsyntax`` or raise a clear ScanReadError."""
    ts = UID(str(tsyntax))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise ScanReadError(
            path,
            f"transfer syntax {ts.name} ({ts}) is not supported: pydicom has "
            "no pixel decoder for it",
        ) from None
    if not decoder.is_available:
        pkg = DECODER_PACKAGES.get(ts, "pylibjpeg")
        raise ScanReadError(
            path,
            f"no decoder installed for transfer syntax {ts.name} ({ts}); "
            f"install one with: pip install {pkg}",
        )
    return decoder


def plugin_order(tsyntax: str, available: Any) -> list[str]:
    """The decoding plugins to try for ``tsyntax``, in order: the preferred
    one, then the others, leaving out :data:`CRASH_PRONE_PLUGINS` unless
    nothing else is available.  ``[""]`` (pydicom's own choice) for native,
    uncompressed syntaxes, which have no plugins."""
    safe = [p for p in available if p not in CRASH_PRONE_PLUGINS]
    preferred = PREFERRED_PLUGIN.get(tsyntax)
    order = ([preferred] if preferred in safe else []) + [
        p for p in safe if p != preferred
    ]
    return order or list(available) or [""]


def decode(
    path: Any,
    ds: Dataset,
    index: int | None = None,
    messages: list[str] | None = None,
) -> tuple[np.ndarray, str]:
    """Decode the pixel data of ``ds`` (all frames, or frame ``index``).

    The decoders run inside :func:`.native.native_decoder`: what a native
    library prints (OpenJPEG's "Invalid number of tiles...") stays off the
    terminal and goes into the error, or into ``messages``; a Rust panic
    (pylibjpeg-rle on a corrupt RLE frame) becomes a :class:`ScanReadError`.

    Args:
        path: the file, named in errors and messages.
        ds: the dataset, pixel data included.
        index: one frame (0-based), or None for all.
        messages: when given, ``"<path>: <decoder output>"`` is appended
            for a decode that succeeded but made a decoder print something
            (for the caller's quality report).

    Returns:
        ``(array, photometric)``: the array as pydicom shapes it, in native
        byte order, and the photometric interpretation *after* decoding
        (YBR_FULL/_422 are converted to ``RGB`` by pydicom).

    Raises:
        ScanReadError: missing decoder, truncated, corrupt or undecodable
            data; the message names the file and the transfer syntax.
    """
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not ts:
        raise ScanReadError(path, "no TransferSyntaxUID: cannot decode pixel data")
    ts = UID(str(ts))
    decoder = require_decoder(path, ts)
    out = NativeOutput()
    try:
        opts = as_pixel_options(ds)
        with native_decoder() as out:
            arr, props = _decode_with(decoder, ts, ds, index, opts)
    except NativeDecoderPanic as exc:
        raise ScanReadError(
            path,
            f"could not decode the pixel data ({ts.name}): a native decoder "
            f"panicked, the data is likely corrupt ({exc})" + _said(out, str(exc)),
        ) from exc
    except Exception as exc:
        msg = str(exc)
        if "12-bit precision" in msg and "imagecodecs" not in decoder.available_plugins:
            raise ScanReadError(
                path,
                f"12-bit {ts.name} needs a decoder that is not installed: {GPL_HINT}",
            ) from exc
        detail = " ".join(msg.split()) or type(exc).__name__
        detail = detail if len(detail) <= 400 else detail[:397] + "..."
        raise ScanReadError(
            path,
            f"could not decode the pixel data ({ts.name}): {detail}" + _said(out, msg),
        ) from exc
    if messages is not None and (said := out.summary()):
        messages.append(f"{path}: the {ts.name} decoder reported: {said}")
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    pi = str(props.get("photometric_interpretation") or ds.PhotometricInterpretation)
    return arr, pi


_ALL_FAILED = "Unable to decode as exceptions were raised by all available plugins:"


def _decode_with(decoder: Any, ts: UID, ds: Dataset, index: Any, opts: dict):
    """Try each plugin of :func:`plugin_order` until one decodes ``ds``.

    A plain error moves on to the next plugin.  A Rust panic is not an
    ``Exception`` and ends the attempt: the frame is corrupt, and pydicom's
    own RLE decoder turns such a frame into wrong pixels (4,077 of 4,096 on
    the mutated MR_small_RLE.dcm of the tests) with only a warning.
    """
    errors: dict[str, str] = {}
    for plugin in plugin_order(ts, decoder.available_plugins):
        try:
            return decoder.as_array(
                ds, index=index, validate=True, decoding_plugin=plugin, **opts
            )
        except Exception as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            text = text.removeprefix(_ALL_FAILED).strip()  # pydicom's wrapper
            errors[plugin or "pydicom"] = text.removeprefix(f"{plugin}: ")
    if len(set(errors.values())) == 1:  # e.g. a validation error: say it once
        raise ValueError(next(iter(errors.values())))
    raise ValueError("; ".join(f"{p}: {e}" for p, e in errors.items()) or "no plugin")


def _said(out: NativeOutput, known: str) -> str:
    """``"; decoder output: ..."`` for an error message, or ``""``."""
    said = out.summary(known)
    return f"; decoder output: {said}" if said else ""


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
