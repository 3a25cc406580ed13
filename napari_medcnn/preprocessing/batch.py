"""Prepare a whole batch of slices at once, as :func:`prepare` would one by one.

Slice models were trained on images cropped one by one, so every slice keeps
its own foreground crop; what is batched is the rest: percentiles in one
vectorised call, one opening and one labelling for the whole batch (2D
structuring elements, so slices never touch), and one output array.  The
result equals the per-slice loop bit for bit (see ``tests/test_inference``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_medcnn.preprocessing.record import (
    box_around,
    crop_pad,
    normalize_slices,
    pad_value,
    prepare,
    resize,
    square_box,
    to_gray,
)


def largest_object_bboxes(mask: np.ndarray, opening: int = 2) -> np.ndarray:
    """Per-slice bounding box of :func:`main_object` for a (S, H, W) mask.

    One opening and one labelling for the whole stack, with 2D structuring
    elements so slices never touch: the same boxes as calling
    :func:`main_object` slice by slice.

    Returns:
        int array (S, 4) of ``y0, y1, x0, x1`` in pixels (stop exclusive);
        ``-1`` rows where the slice's mask is empty.
    """
    from scipy import ndimage

    cross = np.zeros((3, 3, 3), bool)
    cross[1] = ndimage.generate_binary_structure(2, 1)
    opened = _open_cross(mask, opening) if opening else mask
    lab, _ = ndimage.label(opened, structure=cross)
    # labels follow raster order, so each slice owns a contiguous label range
    ends = np.maximum.accumulate(lab.reshape(len(lab), -1).max(axis=1))
    starts = np.concatenate([[0], ends[:-1]])
    sizes = np.bincount(lab.ravel())
    boxes = np.full((len(mask), 4), -1, dtype=np.int64)
    for k, (a, b) in enumerate(zip(starts, ends)):
        # the largest label (ties: the first, as in main_object); none left
        # after the opening: main_object keeps the mask
        top = a + 1 + int(np.argmax(sizes[a + 1 : b + 1])) if b > a else 0
        sel = lab[k] == top if top else mask[k]
        rows = np.flatnonzero(sel.any(axis=1))
        if rows.size:
            cols = np.flatnonzero(sel.any(axis=0))
            boxes[k] = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return boxes


def _open_cross(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_opening`` with the 4-connected cross, per (H, W) slice
    of a (S, H, W) stack (border value 0), by shifted ANDs and ORs."""
    m = np.array(mask, dtype=bool)
    for _ in range(iterations):
        e = m.copy()
        e[:, 1:] &= m[:, :-1]
        e[:, :-1] &= m[:, 1:]
        e[:, :, 1:] &= m[:, :, :-1]
        e[:, :, :-1] &= m[:, :, 1:]
        e[:, [0, -1]] = False
        e[:, :, [0, -1]] = False
        m = e
    for _ in range(iterations):
        d = m.copy()
        d[:, 1:] |= m[:, :-1]
        d[:, :-1] |= m[:, 1:]
        d[:, :, 1:] |= m[:, :, :-1]
        d[:, :, :-1] |= m[:, :, 1:]
        m = d
    return m


def prepare_slices(
    channels: Sequence[np.ndarray],
    record: dict[str, Any],
    spacing: Sequence[float] | None = None,
    rgb: bool = False,
    chunk: int = 8,
) -> np.ndarray:
    """Prepare each slice of co-registered stacks as :func:`prepare` would.

    Equal (to float32 rounding) to ``np.stack([prepare([c[k] for c in
    channels], record, spacing) for k in range(S)])``, but normalised,
    opened and labelled ``chunk`` slices at a time.  The foreground crop is
    still found per slice, as training images were cropped one by one.

    Args:
        channels: one (S, H, W) array per channel, or (S, H, W, 3) with
            ``rgb``.
        record: the model card's preprocessing record (2D ``size``).
        spacing: in-plane pixel size (row, col) in mm; default 1 mm.
        rgb: the arrays carry a trailing RGB axis.
        chunk: slices processed at once (small batches keep temporaries in
            cache; a whole volume at once is slower than slice by slice).

    Returns:
        float32 array (S, C, H', W') at ``record["size"]``.
    """
    n = len(channels[0])
    if n > chunk:
        parts = [
            prepare_slices(
                [c[a : a + chunk] for c in channels], record, spacing, rgb, chunk
            )
            for a in range(0, n, chunk)
        ]
        return np.concatenate(parts)
    size = list(record["size"])
    luminance = record.get("color") == "luminance"
    if len(size) != 2 or (rgb and not luminance):
        return np.stack(
            [prepare([c[k] for c in channels], record, spacing) for k in range(n)]
        )
    arrs = [to_gray(c) if rgb else np.asarray(c, np.float32) for c in channels]
    x = np.stack([normalize_slices(a, record.get("intensity")) for a in arrs], 1)
    crop = record.get("foreground_crop")
    if not crop:
        if record.get("square"):
            # per slice: as prepare pads each (C, H, W) slice with its minimum
            box = square_box(x.shape, spacing or (1.0, 1.0))
            x = crop_pad(x, box, pad_value(x, record, lead=1))
        return resize(x, size)
    sp, margin = spacing or (1.0, 1.0), crop.get("margin", 0.05)
    h, w = x.shape[-2:]
    bboxes = largest_object_bboxes(x[:, 0] > float(crop.get("threshold", 0.1)))
    out = np.empty((len(x), x.shape[1], *size), np.float32)
    for k, bbox in enumerate(bboxes):
        box = box_around((0, h, 0, w) if bbox[0] < 0 else bbox, sp, margin)
        out[k] = resize(crop_pad(x[k], box, pad_value(x[k], record)), size)
    return out
