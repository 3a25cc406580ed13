"""Pixel decoders: pydicom's, chosen and guarded.

:func:`decode` runs pydicom's decoders (YBR_FULL/YBR_FULL_422 come back as
RGB) trying the fastest plugin first (:data:`PREFERRED_PLUGIN`) and never
handing data another plugin rejected to a crash-prone one
(:data:`CRASH_PRONE_PLUGINS`).  Missing decoders raise
:class:`ScanReadError` naming the transfer syntax and the pip package to
install; corrupt data (a native decoder's error or panic, see ``native.py``)
raises it with the decoder's own words, which never reach the terminal.
What is done with the decoded values is in ``pixels.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydicom.dataset import Dataset
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

__all__ = ["DECODER_PACKAGES", "decode", "plugin_order", "require_decoder"]

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


def get_decoder(tsyntax: str) -> Any:
    """pydicom's decoder for a transfer syntax (a seam for tests)."""
    return _pydicom_get_decoder(tsyntax)


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
