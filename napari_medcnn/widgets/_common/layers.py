"""napari layer helpers of the widgets (no Qt widgets).

* :func:`level0` and :func:`contains`: a layer's full-resolution data, and
  membership by ``==`` (the viewer may hand out ``PublicOnlyProxy``
  wrappers, for which ``is`` fails).
* :func:`current_slice_index` and :func:`slice_world_position` convert
  between napari's world coordinates (``viewer.dims.point``, mm) and a
  layer's slice index along its first data axis, with the layer's own
  transforms (``world_to_data`` / ``data_to_world``: scale, translate and
  any affine), so layers of any spacing and origin map correctly.
* :data:`RESULT_KEY` marks the layers the plugin adds as results
  (probability maps, previews): not scans to label or train on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: layer metadata marking the plugin's result layers (not scans to label)
RESULT_KEY = "medcnn_result"


def level0(layer: Any) -> Any:
    """The full-resolution data of a (possibly multiscale) layer."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def contains(layers: Any, layer: Any) -> bool:
    """``layer in layers`` by ``==`` (napari may hand out proxies)."""
    return layer is not None and any(layer == other for other in layers)


def is_result(layer: Any) -> bool:
    """Whether ``layer`` is one of the plugin's result layers."""
    return bool((layer.metadata or {}).get(RESULT_KEY))


# -- slice geometry ------------------------------------------------------------
def slice_axis(viewer_ndim: int, layer: Any, data_axis: int = 0) -> int:
    """The viewer (world) axis of ``layer``'s data axis ``data_axis`` (0:
    its slices as stored; a volume model's card may slice along another).

    napari aligns a layer's axes with the *last* ``layer.ndim`` world axes.
    """
    return int(viewer_ndim) - int(layer.ndim) + int(data_axis)


def curve_axis(card: Any, scope: str) -> int:
    """The data axis of the classified layer that a result's per-slice
    values run along: the volume record's slice axis (``coronal`` 1,
    ``sagittal`` 2) for a volume model in ``volume`` scope, else 0 (a 2D
    model reads the layer's stored slices)."""
    from napari_medcnn.preprocessing.volume import SLICE_AXES, is_volume_record

    record = getattr(card, "preprocessing", None)
    if scope != "volume" or not is_volume_record(record):
        return 0
    return SLICE_AXES.get(record["volume"].get("slice_axis", "axial"), 0)


def current_slice_index(
    layer: Any, world_point: Sequence[float], data_axis: int = 0
) -> int:
    """The slice of ``layer`` (index along data axis ``data_axis``) at
    ``world_point``.

    ``world_point`` is ``viewer.dims.point`` (world units, e.g. mm); the
    result is clipped to the layer's slices.  2D layers give 0.
    """
    if layer.ndim < 3:
        return 0
    data = np.asarray(layer.world_to_data(np.asarray(world_point, dtype=float)))
    n = int(np.shape(layer.data[0] if layer.multiscale else layer.data)[data_axis])
    return int(np.clip(np.round(data[data_axis]), 0, n - 1))


def slice_world_position(layer: Any, index: int, data_axis: int = 0) -> float:
    """World coordinate, on :func:`slice_axis`, of slice ``index`` of
    ``layer`` along data axis ``data_axis``."""
    pos = np.zeros(layer.ndim)
    pos[data_axis] = index
    return float(layer.data_to_world(pos)[data_axis])
