"""Prepared volumes on disk: a cache keyed by content, read lazily.

A training set of volumes does not fit in memory the way slices do (40
volumes of 180 x 128 x 128 float32 are 470 MB; a cohort is many times
that).  Each prepared volume (the card's volume record applied, see
:mod:`napari_medcnn.preprocessing.volume`) is written once as an ``.npy``
file into a cache folder and memory-mapped from then on:

* :class:`VolumeCache` finds or writes the prepared tensor of a scan.  The
  file name is a SHA-256 of the record and of the source's identity (its
  path, size and modification time, every file of a DICOM folder), so a
  changed scan or record is prepared again and nothing identifying is in
  the name.  Writes are atomic (a temporary file renamed).
* :class:`VolumeStack` is an array-like of such volumes: ``len``,
  ``shape``, integer and index-array access (a new lazy stack) and
  ``stack[i:j]`` (a real array, for a batch).  Training reads one volume
  per sample, so only a batch of volumes is ever in memory.

The cache holds pixel values only (no header, no names); it lives in the
user's cache folder (``platformdirs``) unless a folder is given.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def default_cache_dir() -> Path:
    """``<user cache>/napari-medcnn/volumes``."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-medcnn")) / "volumes"


def source_identity(path: str | os.PathLike) -> list[Any]:
    """(name, size, mtime_ns) of a file, or of every file under a folder."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    out: list[Any] = [os.fspath(p.resolve())]
    for f in files:
        st = f.stat()
        out += [f.name, st.st_size, st.st_mtime_ns]
    return out


class VolumeCache:
    """Prepared volumes as ``.npy`` files in ``folder`` (created 0700)."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_cache_dir()

    def key(self, identity: Sequence[Any], record: dict[str, Any]) -> str:
        text = json.dumps([list(identity), record], sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npy"

    def get(self, key: str) -> np.ndarray | None:
        """The cached array (memory-mapped, read-only), or None."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return np.load(p, mmap_mode="r")
        except (OSError, ValueError):  # a damaged file: prepare again
            return None

    def put(self, key: str, x: np.ndarray) -> np.ndarray:
        """Write ``x`` atomically and return it memory-mapped."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        p = self.path(key)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(x, np.float32))
            os.replace(tmp, p)
        finally:
            if tmp.exists():
                tmp.unlink()
        return np.load(p, mmap_mode="r")


class VolumeStack:
    """A lazy (N, C, S, H, W) array of volumes, each its own array
    (memory-mapped or in memory), all of one shape."""

    def __init__(self, volumes: Sequence[np.ndarray]):
        self.volumes = list(volumes)
        shapes = {tuple(v.shape) for v in self.volumes}
        if len(shapes) > 1:
            raise ValueError(f"volumes differ in prepared shape: {sorted(shapes)}")
        self._item = shapes.pop() if shapes else (0,)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.volumes), *self._item)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return np.asarray(self.volumes[int(idx)], np.float32)
        if isinstance(idx, slice):
            part = self.volumes[idx]
            if not part:
                return np.zeros((0, *self._item), np.float32)
            return np.stack([np.asarray(v, np.float32) for v in part])
        return VolumeStack([self.volumes[int(i)] for i in np.asarray(idx)])

    def __array__(self, dtype=None, copy=None):
        out = self[0 : len(self)]
        return out if dtype is None else out.astype(dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4

    @classmethod
    def concat(cls, parts: Sequence[Any]) -> VolumeStack:
        """Join stacks and plain (N, ...) arrays into one stack."""
        vols: list[np.ndarray] = []
        for p in parts:
            vols += p.volumes if isinstance(p, VolumeStack) else list(p)
        return cls(vols)
