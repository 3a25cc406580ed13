"""Guards around native (C, C++, Rust) pixel decoders.

Two things go wrong in native decoders that Python's ``except Exception``
does not cover:

* **Rust panics.**  pylibjpeg-rle (and any other pyo3 extension) turns a
  Rust panic into ``pyo3_runtime.PanicException``, which derives from
  ``BaseException``: on a corrupt RLE frame it would escape every
  ``except Exception`` and take napari down.  :func:`native_decoder`
  re-raises a panic as :class:`NativeDecoderPanic`, an ordinary
  ``Exception``.  KeyboardInterrupt, SystemExit and every other
  ``BaseException`` pass through untouched.
* **Messages on the terminal.**  OpenJPEG (inside python-gdcm) prints
  "Invalid number of tiles...", and a panicking Rust library prints its
  message (and, with ``RUST_BACKTRACE`` set, a backtrace), straight to
  file descriptor 2, not through Python.  :func:`native_decoder` points
  descriptor 2 at a temporary file for the duration of the call, and hands
  what was written back to the caller, who puts it in the error or the
  quality report.

The redirect is process-wide (a file descriptor is): while any thread is
inside :func:`native_decoder`, whatever *any* thread writes to descriptor 2
is captured, so text from a concurrent decode (or, rarely, an unrelated
message) can land in another file's capture.  Decodes take milliseconds,
and callers put the text in an error or a quality report.  What is lost:
if the process dies inside a decoder (a segfault), whatever was written to
descriptor 2 meanwhile (a faulthandler trace on descriptor 2) goes with the
temporary file.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "NativeDecoderPanic",
    "NativeOutput",
    "is_native_panic",
    "native_decoder",
    "summarise_output",
]

#: At most this many characters of captured decoder output go into a message.
MAX_MESSAGE_CHARS = 300


class NativeDecoderPanic(Exception):
    """A native decoder panicked (a Rust ``PanicException``); the message is
    the panic's own ("index out of bounds: the len is 8192 but...")."""


def is_native_panic(exc: BaseException) -> bool:
    """True for a pyo3 ``PanicException`` (a Rust panic surfaced in Python).

    Matched by class name and module, because ``pyo3_runtime`` is not an
    importable module: each pyo3 extension creates the class at run time.
    """
    return any(
        c.__name__ == "PanicException" and c.__module__ == "pyo3_runtime"
        for c in type(exc).__mro__
    )


@dataclass
class NativeOutput:
    """What native code wrote to file descriptor 2 during one guarded call."""

    text: str = ""

    def summary(self, known: str = "") -> str:
        """The captured text as one short line (see :func:`summarise_output`),
        without lines that ``known`` (an exception's message) already holds."""
        return summarise_output(self.text, known=known)


def summarise_output(text: str, limit: int = MAX_MESSAGE_CHARS, known: str = "") -> str:
    """Decoder output as one line of at most ``limit`` characters.

    Drops a Rust panic's boilerplate ("thread '...' panicked at",
    "note: run with RUST_BACKTRACE", the backtrace itself) and lines that
    ``known`` (the exception's own message) already contains.
    """
    keep = []
    for line in text.splitlines():
        s = line.strip()
        if not s or (known and s in known):
            continue
        if s.startswith("stack backtrace:"):
            break
        if s.startswith(("thread '", "note: ")):
            continue
        keep.append(s)
    out = " | ".join(dict.fromkeys(keep))  # once each, in order
    return out if len(out) <= limit else out[: limit - 3] + "..."


class _Stderr:
    """Reference-counted redirect of descriptor 2 to a temporary file."""

    lock = threading.Lock()
    depth = 0
    saved: int | None = None
    fd: int | None = None

    @classmethod
    def enter(cls) -> int | None:
        """Start (or join) the redirect; returns this call's start offset,
        or None when descriptor 2 cannot be redirected."""
        with cls.lock:
            if cls.depth == 0:
                with contextlib.suppress(Exception):  # sys.stderr may be None
                    sys.stderr.flush()
                try:
                    saved = os.dup(2)  # fails when there is no descriptor 2
                except OSError:
                    return None
                try:
                    fd, name = tempfile.mkstemp(prefix="medcnn-stderr-")
                    os.unlink(name)
                    os.dup2(fd, 2)
                except OSError:
                    os.close(saved)
                    return None
                cls.fd, cls.saved = fd, saved
            cls.depth += 1
            return os.lseek(cls.fd, 0, os.SEEK_CUR)

    @classmethod
    def leave(cls, start: int) -> str:
        """Stop (or leave) the redirect; returns what was written since
        ``start``."""
        with cls.lock:
            with contextlib.suppress(Exception):
                sys.stderr.flush()  # Python text written meanwhile
            end = os.lseek(cls.fd, 0, os.SEEK_CUR)
            raw = os.pread(cls.fd, end - start, start) if end > start else b""
            cls.depth -= 1
            if cls.depth == 0:
                os.dup2(cls.saved, 2)
                os.close(cls.saved)
                os.close(cls.fd)
                cls.fd = cls.saved = None
        return raw.decode("utf-8", "replace")


@contextlib.contextmanager
def native_decoder() -> Iterator[NativeOutput]:
    """Run native decoder code with its stderr captured and panics tamed.

    Yields:
        A :class:`NativeOutput`, filled in when the block ends (also when it
        raises): ``out.summary()`` gives the text for a message.

    Raises:
        NativeDecoderPanic: the block raised a Rust ``PanicException``
            (chained as ``__cause__``).  Other exceptions, and every other
            ``BaseException`` (KeyboardInterrupt, SystemExit), pass through.
    """
    out = NativeOutput()
    start = _Stderr.enter()
    try:
        yield out
    except BaseException as exc:
        if not is_native_panic(exc):
            raise
        raise NativeDecoderPanic(str(exc).strip() or "panic") from exc
    finally:
        if start is not None:
            out.text = _Stderr.leave(start)
