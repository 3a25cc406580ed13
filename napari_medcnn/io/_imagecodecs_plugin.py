"""A pydicom decoding plugin for 12-bit JPEG Extended (process 2 and 4).

Neither Pillow nor python-gdcm's wheels decode 12-bit JPEG, and the one
pydicom plugin that does (pylibjpeg-libjpeg) is GPL-3.  imagecodecs
(BSD-3-Clause) bundles libjpeg-turbo 3, which reads 8- and 12-bit
precision, so it is registered with pydicom's decoder for this syntax.
"""

from __future__ import annotations

import contextlib

from pydicom import uid

DECODER_DEPENDENCIES = {
    uid.JPEGBaseline8Bit: ("imagecodecs",),
    uid.JPEGExtended12Bit: ("imagecodecs",),
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
    """Add the plugin to pydicom's JPEG Extended decoder (idempotent)."""
    from pydicom.pixels import get_decoder

    decoder = get_decoder(uid.JPEGExtended12Bit)
    with contextlib.suppress(ValueError):  # already registered
        decoder.add_plugin("imagecodecs", (__name__, "_decode_frame"))
