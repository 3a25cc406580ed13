"""A pydicom decoding plugin for JPEG through imagecodecs' libjpeg-turbo 3.

* 12-bit JPEG Extended (process 2 and 4): neither Pillow nor python-gdcm's
  wheels decode it, and the one pydicom plugin that does
  (pylibjpeg-libjpeg) is GPL-3.
* JPEG Lossless (process 14, and its selection value 1): libjpeg-turbo 3
  reads lossless JPEG of 2-16 bits, bit for bit as python-gdcm does on
  pydicom's files, and, unlike python-gdcm, fails with an exception on
  corrupt data instead of crashing the process.
* JPEG Baseline: a fallback when Pillow rejects a frame.

imagecodecs (BSD-3-Clause) is a dependency; the plugin is registered with
pydicom's decoder for each of these syntaxes.
"""

from __future__ import annotations

import contextlib

from pydicom import uid

DECODER_DEPENDENCIES = {
    uid.JPEGBaseline8Bit: ("imagecodecs",),
    uid.JPEGExtended12Bit: ("imagecodecs",),
    uid.JPEGLossless: ("imagecodecs",),
    uid.JPEGLosslessSV1: ("imagecodecs",),
}


def is_available(tsyntax: str) -> bool:
    """True when imagecodecs imports and has libjpeg-turbo."""
    if tsyntax not in DECODER_DEPENDENCIES:
        return False
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(imagecodecs, "JPEG8", None) and imagecodecs.JPEG8.available)


def _decode_frame(src: bytes, runner) -> bytes:
    """Decode one JPEG frame to raw native-order bytes, without colour
    conversion (pydicom applies YBR->RGB itself, as for its own plugins)."""
    import imagecodecs

    kwargs = {}
    if runner.samples_per_pixel == 3 and str(
        runner.photometric_interpretation
    ).startswith("YBR"):
        # keep the stored YCbCr components: pydicom converts them to RGB
        kwargs = {"colorspace": "YCBCR", "outcolorspace": "YCBCR"}
    return imagecodecs.jpeg8_decode(src, **kwargs).tobytes()


def register() -> None:
    """Add the plugin to pydicom's JPEG decoders (idempotent)."""
    from pydicom.pixels import get_decoder

    for tsyntax in DECODER_DEPENDENCIES:
        decoder = get_decoder(tsyntax)
        with contextlib.suppress(ValueError):  # already registered
            decoder.add_plugin("imagecodecs", (__name__, "_decode_frame"))
