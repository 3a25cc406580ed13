"""Geometry of :func:`napari_medcnn.preprocessing.record.prepare`.

Maps computed on a model's input (saliency) go back to the image grid
through the crop box and resize that ``prepare`` applied, so overlays align
with the scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medcnn.preprocessing.record import (
    foreground_box,
    main_object,
    normalize,
    normalize_slices,
    prepare,
    resize,
    square_box,
    to_gray,
)


class Geometry:
    """Where :func:`prepare` took the model input from in the image.

    Attributes:
        image_shape: spatial shape of the original arrays in pixels, (H, W)
            or (S, H, W) (an RGB axis is not counted).
        box: the in-plane crop ``(y0, y1, x0, x1)`` in original pixels (stop
            exclusive); it may extend past the image, where prepare pads
            with zeros.  The whole image when the record has no crop.
        input_shape: spatial shape of the model input: (H', W'), (S, H', W')
            for a stack at a 2D size (slices kept), or (D', H', W') for a 3D
            size (depth resized too).
    """

    __slots__ = ("box", "image_shape", "input_shape")

    def __init__(
        self,
        image_shape: Sequence[int],
        box: Sequence[int],
        input_shape: Sequence[int],
    ):
        self.image_shape = tuple(int(v) for v in image_shape)
        self.box = tuple(int(v) for v in box)
        self.input_shape = tuple(int(v) for v in input_shape)
        if len(self.box) != 4 or len(self.input_shape) != len(self.image_shape):
            raise ValueError(
                f"inconsistent geometry: image {self.image_shape}, box "
                f"{self.box}, input {self.input_shape}"
            )

    def __repr__(self) -> str:
        return (
            f"Geometry(image_shape={self.image_shape}, box={self.box}, "
            f"input_shape={self.input_shape})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and (
            (self.image_shape, self.box, self.input_shape)
            == (other.image_shape, other.box, other.input_shape)
        )

    __hash__ = None  # type: ignore[assignment]

    @property
    def crop_shape(self) -> tuple[int, ...]:
        """Spatial shape of the cropped region before the resize (pixels)."""
        y0, y1, x0, x1 = self.box
        return (*self.image_shape[:-2], y1 - y0, x1 - x0)

    @property
    def zoom(self) -> tuple[float, ...]:
        """Model-input voxels per original pixel, per spatial axis."""
        return tuple(i / c for i, c in zip(self.input_shape, self.crop_shape))

    def input_spacing(self, spacing: Sequence[float] | None = None) -> tuple:
        """Size in mm of one model-input voxel, per spatial axis.

        Args:
            spacing: the image's pixel size in mm, array order (the last
                ``len(image_shape)`` values are used); default 1 mm.
        """
        n = len(self.image_shape)
        sp = [1.0] * n if spacing is None else [float(s) for s in spacing][-n:]
        if len(sp) < n:  # in-plane spacing given for a stack: 1 mm slices
            sp = [1.0] * (n - len(sp)) + sp
        return tuple(s / z for s, z in zip(sp, self.zoom))


def crop_box(
    channels: Sequence[np.ndarray],
    record: dict[str, Any],
    spacing: Sequence[float] | None = None,
) -> tuple[int, int, int, int]:
    """The in-plane crop ``(y0, y1, x0, x1)`` that :func:`prepare` applies.

    Computed as prepare does (first channel, normalised, thresholded, the
    largest object, squared in mm); the whole image when the record has no
    ``foreground_crop``.  Pixels, stop exclusive; may extend past the image.
    """
    first = channels[0]
    a = to_gray(first) if record.get("color") == "luminance" else first
    a = np.asarray(a, dtype=np.float32)
    h, w = a.shape[-2:]
    crop = record.get("foreground_crop")
    if not crop:
        if record.get("square"):
            ys, xs = square_box((h, w), spacing or (1.0, 1.0))
            return (ys.start, ys.stop, xs.start, xs.stop)
        return (0, h, 0, w)
    inten = record.get("intensity")
    per_volume = (inten or {}).get("scope") == "volume"
    if a.ndim == 3 and not per_volume:
        normed = normalize_slices(a, inten)
    else:
        normed = normalize(a, inten)
    mask = normed > float(crop.get("threshold", 0.1))
    if mask.ndim == 3:
        mask = mask.any(axis=0)
    ys, xs = foreground_box(
        main_object(mask), spacing or (1.0, 1.0), crop.get("margin", 0.05)
    )
    return (ys.start, ys.stop, xs.start, xs.stop)


def prepare_with_geometry(
    channels: Sequence[np.ndarray],
    record: dict[str, Any],
    spacing: Sequence[float] | None = None,
) -> tuple[np.ndarray, Geometry]:
    """:func:`prepare` plus the :class:`Geometry` that maps its output back.

    Same arguments as :func:`prepare`; the array is exactly prepare's.

    Returns:
        ``(x, geometry)``: x float32 (C, *input_shape); geometry's
        ``image_shape`` is the channels' spatial shape.
    """
    x = prepare(channels, record, spacing)
    gray = record.get("color") == "luminance"
    shape = to_gray(channels[0]).shape if gray else np.shape(channels[0])
    box = crop_box(channels, record, spacing)
    return x, Geometry(shape, box, x.shape[1:])


def to_image_grid(
    values: np.ndarray, geometry: Geometry, fill: float = 0.0
) -> np.ndarray:
    """Map a model-input-grid array back onto the original image grid.

    Inverts prepare's crop and resize: ``values`` (``geometry.input_shape``)
    is resized to the crop's shape (bilinear, or trilinear when the depth
    was resized too; pixel centres as in :func:`resize`) and pasted at the
    crop box; pixels outside the box (or values for prepare's zero padding
    outside the image) are ``fill`` / dropped.

    Returns:
        float32 array of ``geometry.image_shape``.
    """
    v = np.asarray(values, dtype=np.float32)
    if v.shape != geometry.input_shape:
        raise ValueError(
            f"values of shape {v.shape} do not match the model input "
            f"{geometry.input_shape}"
        )
    crop = geometry.crop_shape
    depth_kept = len(crop) == 3 and crop[0] == v.shape[0]
    size = crop[-2:] if depth_kept or len(crop) == 2 else crop
    if tuple(v.shape[-len(size) :]) != tuple(size):
        v = resize(v, size)
    out = np.full(geometry.image_shape, fill, dtype=np.float32)
    y0, y1, x0, x1 = geometry.box
    h, w = geometry.image_shape[-2:]
    ty0, ty1, tx0, tx1 = max(0, y0), min(h, y1), max(0, x0), min(w, x1)
    if ty1 > ty0 and tx1 > tx0:
        out[..., ty0:ty1, tx0:tx1] = v[..., ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]
    return out
