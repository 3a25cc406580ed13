"""Writing side of de-identification: preflight, names, encoding, atomic
writes.  No PHI leaves through here: output names are digests of the new
UIDs, and pydicom's warnings (which quote values) are silenced while a file
is processed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from napari_medcnn._atomic import atomic_write
from napari_medcnn.deid.options import DeidOptions

__all__ = [
    "AtomicWriter",
    "DeidError",
    "encode",
    "ensure_file_meta",
    "output_name",
    "preflight",
    "quiet_pydicom",
    "write_atomic",
]

#: Room asked for beyond the inputs' size (bytes), and the factor for
#: blanking, which may store compressed pixels uncompressed.
MARGIN_BYTES = 1 << 20
BLANK_FACTOR = 8


class DeidError(Exception):
    """The export cannot start or go on; the message says why and what was
    (not) written."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _open_probe(folder: Path) -> None:
    """Create, write and delete a file in ``folder`` (raises OSError)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".deid-probe-")
    try:
        os.write(fd, b"\0")
    finally:
        os.close(fd)
        os.unlink(tmp)


def _existing(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists."""
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    return folder


def _writable(folder: Path, what: str) -> None:
    """Check that files can be created in ``folder`` without creating it: a
    missing folder is probed in its nearest existing ancestor (it is made
    only when the first file is written, so a failed run leaves none)."""
    try:
        base = _existing(folder)
        if not base.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        _open_probe(base)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DeidError(
            f"cannot write to the {what} {folder}: {reason}; nothing was written"
        ) from None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def preflight(
    out_dir: str | os.PathLike,
    files: Sequence[Path],
    inputs: Iterable[str | os.PathLike],
    *,
    manifest: str | os.PathLike | None = None,
    key_file: str | os.PathLike | None = None,
    options: DeidOptions | None = None,
    overwrite: bool = False,
) -> Path:
    """Check that an export to ``out_dir`` can run, before writing anything.

    Nothing is created here: a missing output folder is made when the first
    file is written.

    Args:
        overwrite: an existing ``manifest`` may be replaced (the export
            folder must be new or empty either way).

    Returns:
        The resolved output folder.

    Raises:
        DeidError: the folder overlaps an input, is a file, is not empty
            (a second export into it would mix two pseudonymisations), is
            read-only or lacks room for the export (sizes in MB in the
            message), the manifest or key file would sit inside it, or the
            manifest exists and ``overwrite`` is off.
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise DeidError(f"the output path {out} is a file, not a folder")
    for raw in inputs:
        src = Path(raw).expanduser().resolve()
        if src.is_dir() and (_inside(out, src) or _inside(src, out)):
            raise DeidError(  # input paths may hold names: not quoted
                f"the output folder {out} overlaps an input folder: choose a "
                "separate folder"
            )
        if src.is_file() and _inside(src, out):
            raise DeidError(f"an input file lies inside the output folder {out}")
    for extra, what in ((manifest, "manifest"), (key_file, "key file")):
        if extra is not None and _inside(Path(extra).expanduser().resolve(), out):
            raise DeidError(
                f"the {what} must be kept apart from the export: {extra} is "
                f"inside {out}"
            )
    if out.is_dir() and any(out.iterdir()):
        raise DeidError(
            f"the output folder {out} is not empty: export into a new or empty "
            "folder (the same key gives the same names, so exports can be "
            "merged later); nothing was written"
        )
    if manifest is not None:
        from napari_medcnn._atomic import check_overwrite

        try:
            check_overwrite(manifest, overwrite=overwrite)
        except (OSError, ValueError) as exc:
            raise DeidError(f"manifest: {exc}; nothing was written") from None
    _writable(out, "output folder")
    if manifest is not None:
        _writable(Path(manifest).expanduser().resolve().parent, "manifest folder")
    need = sum(_size(f) for f in files)
    if options is not None and options.blank_rectangles:
        need *= BLANK_FACTOR
    need += MARGIN_BYTES
    free = shutil.disk_usage(_existing(out)).free
    if free < need:
        raise DeidError(
            f"the output folder {out} is full: {free / 1e6:.1f} MB free, about "
            f"{need / 1e6:.1f} MB needed; nothing was written"
        )
    return out


def _hex(value: str, n: int) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:n]


def output_name(ds: pydicom.Dataset, pseudonym: str, index: int) -> Path:
    """Relative output path of a de-identified dataset, from its new values
    only: ``<pseudonym>/study-<hex>/<modality>_S<number>_<hex>/<hex>.dcm``."""
    study = str(ds.get("StudyInstanceUID", "") or "")
    series = str(ds.get("SeriesInstanceUID", "") or "")
    sop = str(ds.get("SOPInstanceUID", "") or f"file-{index}")
    modality = "".join(ch for ch in str(ds.get("Modality", "") or "") if ch.isalnum())
    try:
        number = f"S{int(ds.get('SeriesNumber')):03d}_"
    except (TypeError, ValueError):
        number = ""
    return Path(
        pseudonym,
        f"study-{_hex(study, 10)}",
        f"{modality or 'OT'}_{number}{_hex(series, 10)}",
        f"{_hex(sop, 16)}.dcm",
    )


def ensure_file_meta(ds: pydicom.Dataset) -> None:
    """Complete the file meta so the output is a conformant Part 10 file
    (the transfer syntax of a file without meta follows how it was read)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if not meta.get("TransferSyntaxUID"):
        implicit, little = ds.original_encoding
        explicit = ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else explicit
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]


def encode(ds: pydicom.Dataset) -> io.BytesIO:
    """The Part 10 bytes of ``ds``.  A dataset read with another VR encoding
    than its transfer syntax says (pydicom then keeps its elements raw,
    without VR) is decoded in full, which gives every element its VR, and
    written again."""
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except (TypeError, ValueError, AttributeError):
        for _elem in ds.iterall():
            pass
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
    return buf


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename:
    readers see the old file or the complete new one, never a part."""
    atomic_write(path, data, mode=0o644)


class AtomicWriter:
    """Runs :func:`write_atomic` on background threads, so that the next
    file is de-identified while this one goes to disk (fsync releases the
    GIL).  Writes finish in submission order as far as the caller sees:
    each ``on_done`` runs in the caller's thread, oldest first.

    Args:
        workers: writer threads.
        max_pending_bytes: submitting waits while more is in flight.
    """

    def __init__(self, workers: int = 4, max_pending_bytes: int = 256 << 20):
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="deid-write")
        self._pending: deque[tuple[Future, int, Callable[[], None]]] = deque()
        self._bytes = 0
        self._limit = max_pending_bytes

    def submit(self, path: Path, data: bytes, on_done: Callable[[], None]) -> None:
        """Queue ``data`` for ``path``; ``on_done()`` runs once it is on disk.

        Raises:
            OSError: an earlier write failed (all others were waited for).
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        self._pending.append((self._pool.submit(write_atomic, path, data), len(data),
                              on_done))  # fmt: skip
        self._bytes += len(data)
        self.harvest(block=self._bytes > self._limit)

    def harvest(self, block: bool = False) -> None:
        """Run ``on_done`` of the writes that have finished (wait for the
        oldest ones while over the byte limit when ``block``)."""
        while self._pending and (self._pending[0][0].done() or block):
            future, size, on_done = self._pending.popleft()
            self._bytes -= size
            try:
                future.result()
            except OSError:
                self.drain(raise_errors=False)
                raise
            on_done()
            block = block and self._bytes > self._limit

    def drain(self, raise_errors: bool = True) -> None:
        """Wait for every pending write (running ``on_done`` of the good
        ones); re-raise the first error unless ``raise_errors`` is False."""
        first: OSError | None = None
        while self._pending:
            future, size, on_done = self._pending.popleft()
            self._bytes -= size
            try:
                future.result()
            except OSError as exc:
                first = first or exc
                continue
            on_done()
        if first is not None and raise_errors:
            raise first

    def close(self) -> None:
        """Wait for the writes in flight, then stop the threads."""
        try:
            self.drain(raise_errors=False)
        finally:
            self._pool.shutdown(wait=True)


class _QuietFilter(logging.Filter):
    """Drops pydicom's log records in threads that are de-identifying: its
    warnings quote element values, which may be PHI."""

    active = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.active, "on", False)


_QUIET = _QuietFilter()


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records (this thread's) inside."""
    logger = logging.getLogger("pydicom")
    if _QUIET not in logger.filters:
        logger.addFilter(_QUIET)
    _QUIET.active.on = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET.active.on = False
