"""Rectangles to blank, from a napari Shapes layer (no Qt widgets)."""

from __future__ import annotations

from typing import Any

import numpy as np


def shapes_to_rects(shapes: Any, image: Any | None) -> tuple[tuple[int, ...], ...]:
    """Bounding boxes of a Shapes layer's shapes as ``(x, y, width, height)``
    pixel rectangles of ``image`` (via world coordinates, so scale and
    translate are honoured); without an image, the shapes' own last two
    coordinates are taken as (row, column) pixels."""
    rects = []
    for verts in shapes.data:
        pts = np.asarray(verts, dtype=float)
        if image is not None:
            world = np.array([shapes.data_to_world(p) for p in pts])
            pts = np.array([image.world_to_data(p) for p in world])
        rows, cols = pts[:, -2], pts[:, -1]
        y0, x0 = int(np.floor(rows.min() + 0.5)), int(np.floor(cols.min() + 0.5))
        y1, x1 = int(np.floor(rows.max() + 0.5)), int(np.floor(cols.max() + 0.5))
        if y1 > y0 and x1 > x0:
            rects.append((x0, y0, x1 - x0, y1 - y0))
    return tuple(rects)
