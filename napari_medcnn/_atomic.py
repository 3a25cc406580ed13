"""One atomic file writer for everything the plugin writes (no torch, no Qt).

A temporary file in the target's folder is written, flushed and fsynced, then
renamed over the target, so readers see the old file or the complete new
one, never a part, and a crash or a full disk leaves no half-written file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(
    path: str | os.PathLike,
    data: bytes | memoryview,
    mode: int | None = None,
    keep_mode: bool = False,
) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    Args:
        path: the target file (its folder must exist).
        data: the bytes to write.
        mode: permission bits of the result; None: the usual ``0o666``
            less the process umask (``mkstemp`` alone would make 0600).
        keep_mode: a file being replaced keeps its own permission bits.
    """
    path = Path(path)
    if keep_mode and path.exists():
        mode = path.stat().st_mode & 0o777
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
