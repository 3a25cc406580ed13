"""Read plain images (PNG, JPEG, TIFF, BMP) into a :class:`Scan`.

These formats carry no patient geometry, so every scan gets unit spacing,
origin 0, units ``"pixel"`` and an identity-like affine (array ``x`` along
LPS +x, ``y`` along +y, ``z`` along +z, 1 mm per pixel), the same layout as
an axial DICOM series of 1 mm pixels at the origin.

Layouts:

* grayscale -> ``(y, x)``; grayscale + alpha -> the gray channel;
* RGB / RGBA -> ``(y, x, 3)`` with ``rgb=True`` (alpha dropped);
* multi-page TIFF -> ``(z, y, x)`` (or ``(z, y, x, 3)`` for RGB pages).

Pixel values keep their stored dtype (uint8, uint16, float32...); 1-bit
images become uint8 0/1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_medcnn.io.scan import Scan, ScanReadError

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_image(path: str | os.PathLike) -> Scan:
    """Read a PNG/JPEG/TIFF/BMP file with scikit-image.

    Args:
        path: the image file.

    Returns:
        A :class:`Scan` with ``spacing`` of 1 per spatial axis, units
        ``"pixel"``, ``axis_labels`` ``("y", "x")`` or ``("z", "y", "x")``.

    Raises:
        ScanReadError: the file is missing, corrupt, or not a 2D/3D image;
            the message names the file and the reason.
    """
    path = Path(path)
    if not path.is_file():
        raise ScanReadError(path, "no such file")
    try:
        arr, samples_last = _imread(path)
    except ScanReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # PIL, imageio and tifffile raise many types
        reason = str(exc).strip() or type(exc).__name__
        raise ScanReadError(path, f"cannot read the image ({reason})") from exc
    data, rgb = _normalise_layout(path, arr, samples_last)
    nd = data.ndim - (1 if rgb else 0)
    affine = np.eye(4)
    # index (z, y, x) -> LPS (x, y, z): columns z->e_z, y->e_y, x->e_x
    affine[:3, :3] = np.eye(3)[:, ::-1]
    metadata: dict[str, Any] = {
        "format": "image",
        "file_type": path.suffix.lower().lstrip("."),
        "original_shape": list(arr.shape),
        "original_dtype": str(arr.dtype),
        "geometry": "none (pixel units, unit spacing)",
        "source_path": str(path),
    }
    return Scan(
        data=data,
        spacing=(1.0,) * nd,
        origin=(0.0,) * nd,
        affine=affine,
        name=path.stem,
        modality=None,
        rgb=rgb,
        axis_labels=("z", "y", "x")[-nd:],
        units=("pixel",) * nd,
        metadata=metadata,
        source_paths=[str(path)],
    )


def _imread(path: Path) -> tuple[np.ndarray, bool]:
    """All pages of ``path`` as one array (skimage picks the plugin), and
    whether its last axis holds colour samples."""
    import skimage.io

    arr = np.asarray(skimage.io.imread(str(path)))
    if arr.size == 0:
        raise ScanReadError(path, "the image holds no pixels")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        # A (3, y, x) TIFF may be three pages or one RGB page stored planar;
        # only the TIFF's own axes string tells which.
        with tifffile.TiffFile(str(path)) as tif:
            axes = tif.series[0].axes
        samples_last = axes.endswith("S") and arr.shape[-1] in (2, 3, 4)
    else:
        samples_last = arr.ndim == 3
    return arr, samples_last


def _normalise_layout(
    path: Path, arr: np.ndarray, samples_last: bool
) -> tuple[np.ndarray, bool]:
    """Return ``(data, rgb)`` in the plugin's layout (see module docstring)."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "uif":
        raise ScanReadError(path, f"unsupported pixel type {arr.dtype}")
    if samples_last:
        channels = arr.shape[-1]
        if channels in (3, 4):
            arr, rgb = arr[..., :3], True
        elif channels in (1, 2):  # gray (+ alpha)
            arr, rgb = arr[..., 0], False
        else:
            raise ScanReadError(path, f"{channels} colour samples per pixel")
    else:
        rgb = False
    nd = arr.ndim - (1 if rgb else 0)
    if nd not in (2, 3):
        raise ScanReadError(
            path, f"image of shape {arr.shape} is not a 2D/3D grayscale or RGB image"
        )
    return np.ascontiguousarray(arr), rgb
