"""Keep pydicom's parse warnings of one thread off the terminal.

pydicom reports files it can still read (an odd VR, a wrong transfer
syntax) through ``warnings`` *and* its ``pydicom`` logger.  A folder scan
reads every file's header, so these would fill the terminal (and napari's
notifications); what matters reaches the scan's quality report instead.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator


class _ThisThread(logging.Filter):
    """Drops the records logged by one thread (others pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.ident


@contextlib.contextmanager
def quiet_parse() -> Iterator[None]:
    """Silence pydicom's parse warnings (``warnings`` and its ``pydicom``
    logger, e.g. "Expected explicit VR, but found implicit VR") raised by
    this thread while a header is read.  A folder scan reads every file,
    and pydicom copes with these; they would only fill the terminal."""
    flt = _ThisThread()
    logger = logging.getLogger("pydicom")
    logger.addFilter(flt)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logger.removeFilter(flt)
