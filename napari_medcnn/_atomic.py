"""One atomic file writer for everything the plugin writes (no torch, no Qt),
and the one check that keeps it from replacing a user's file.

A temporary file in the target's folder is written, flushed and fsynced, then
renamed over the target, so readers see the old file or the complete new
one, never a part, and a crash or a full disk leaves no half-written file.

No command or export replaces a file that it did not create in the same
run unless asked to (``--overwrite`` on the command line, ``overwrite=True``
in Python, or a save dialog where the user confirmed the replacement):
:func:`check_overwrite` is that check, called before any work starts, and
``atomic_write(..., overwrite=False)`` repeats it at the rename without a
race (a hard link that fails when the target exists).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["OverwriteError", "atomic_write", "check_overwrite"]


class OverwriteError(FileExistsError):
    """A write would replace a file that the current run did not create.

    Attributes:
        path: the existing file (or folder).
    """

    def __init__(self, path: str | os.PathLike, what: str = "file"):
        self.path = Path(path)
        super().__init__(
            f"{self.path} already exists: not replacing a {what} this run did "
            "not create; choose another name, or allow replacing it "
            "(--overwrite on the command line, overwrite=True in Python)"
        )


def check_overwrite(
    paths: str | os.PathLike | Iterable[str | os.PathLike | None] | None,
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Check, before any work, that writing ``paths`` replaces nothing.

    Args:
        paths: the files one run is about to write (None entries ignored).
        overwrite: existing files may be replaced (the user said so).

    Returns:
        The paths as :class:`~pathlib.Path` objects.

    Raises:
        OverwriteError: one of them exists (a folder always counts, and is
            refused even with ``overwrite``), naming the first.
        ValueError: two of them are the same file (the second write would
            replace the first within the run).
    """
    if paths is None or isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[Path] = []
    seen: dict[Path, Path] = {}
    for raw in paths:
        if raw is None:
            continue
        path = Path(raw)
        key = path.expanduser().resolve()
        if key in seen:
            raise ValueError(
                f"{seen[key]} and {path} are the same file: give each output "
                "its own name"
            )
        seen[key] = path
        if path.is_dir():
            raise OverwriteError(path, "folder")
        if path.exists() and not overwrite:
            raise OverwriteError(path)
        out.append(path)
    return out


def atomic_write(
    path: str | os.PathLike,
    data: bytes | memoryview,
    mode: int | None = None,
    keep_mode: bool = False,
    overwrite: bool = True,
) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    Args:
        path: the target file (its folder must exist).
        data: the bytes to write.
        mode: permission bits of the result; None: the usual ``0o666``
            less the process umask (``mkstemp`` alone would make 0600).
        keep_mode: a file being replaced keeps its own permission bits.
        overwrite: replace an existing file (the default for the plugin's
            own files: label stores, keys, caches); False raises
            :class:`OverwriteError` when ``path`` exists, even if it
            appears while the data is written.
    """
    path = Path(path)
    if not overwrite:
        check_overwrite(path)
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
        if overwrite:
            os.replace(tmp, path)
        else:
            _rename_no_replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _rename_no_replace(tmp: str, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (OverwriteError).

    A hard link fails atomically when the target exists; where the file
    system has no hard links the check is repeated just before a rename.
    """
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OverwriteError(path) from None
    except OSError:  # no hard links here (some network or FAT file systems)
        if path.exists():
            raise OverwriteError(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_text(
    path: str | os.PathLike, text: str, *, overwrite: bool = True
) -> Path:
    """Write ``text`` (UTF-8) to ``path`` via a temporary file and a rename.

    The file keeps the mode of the file it replaces (new files: 0o644).
    ``overwrite=False`` refuses an existing file
    (:class:`OverwriteError`).  Returns the path
    written.
    """
    return atomic_write(
        path, text.encode("utf-8"), mode=0o644, keep_mode=True, overwrite=overwrite
    )
