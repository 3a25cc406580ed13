"""A volume's lesion mask, kept beside its label sidecar.

A mask is painted in napari (Label images: *Draw lesion mask*) on the scan's
own voxel grid; non-zero voxels lie inside a finding.  It is written next to
the scan's label sidecar as ``<sidecar>.mask.npz`` (compressed, boolean,
pixel values only: no patient data), atomically, so that a crash never
leaves half a mask, and read back when the scan is opened again or trained
on from the command line (``train --labels scans/``), where it supervises a
volume model's evidence map exactly as a CSV ``mask`` column does.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from napari_medcnn.training.labels.errors import LabelsError

#: appended to a sidecar's name for its mask file
MASK_SUFFIX = ".mask.npz"


def mask_path(sidecar: str | os.PathLike) -> Path:
    """The mask file of a label sidecar (``<sidecar>.mask.npz``)."""
    sidecar = Path(sidecar)
    return sidecar.with_name(sidecar.name + MASK_SUFFIX)


def save_mask(path: str | os.PathLike, mask: np.ndarray) -> Path | None:
    """Write ``mask`` (non-zero = finding) to ``path`` atomically.

    An empty mask removes the file (the user erased the finding).  Returns
    the path written, or None when nothing is left.
    """
    from napari_medcnn._atomic import atomic_write

    path = Path(path)
    m = np.asarray(mask) != 0
    if not m.any():
        path.unlink(missing_ok=True)
        return None
    buf = io.BytesIO()
    np.savez_compressed(buf, mask=np.packbits(m, axis=None), shape=np.array(m.shape))
    return atomic_write(path, buf.getvalue())


def load_mask(path: str | os.PathLike, shape: tuple[int, ...]) -> np.ndarray | None:
    """The mask in ``path`` as uint8 (1 inside), or None without a file.

    Raises:
        LabelsError: the file is damaged or not on a grid of ``shape``
            (the message names the file).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = tuple(int(s) for s in z["shape"])
            bits = z["mask"]
        n = int(np.prod(stored))
        m = np.unpackbits(bits, count=n).reshape(stored)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise LabelsError(f"{path}: unreadable lesion mask ({exc})") from None
    if stored != tuple(shape):
        raise LabelsError(
            f"{path}: mask shape {stored} differs from its scan's {tuple(shape)}; "
            "the scan changed since the mask was drawn"
        )
    return m.astype(np.uint8)
