"""An opened cohort item as napari layers (no Qt widgets).

:func:`show_item` adds the item's scan as an Image layer with the reader's
geometry (``Scan.to_layer_data``: scale and translate in mm, axis labels,
units, window as contrast limits, the reader's metadata), puts the row's
classification record in ``metadata["classification"]`` (where the
Classify widget keeps its own) and the row's identity in
``metadata["cohort"]``, adds the saliency map as an overlay with the
scan's geometry and the Saliency widget's colormap and naming
(:func:`napari_medcnn.widgets.saliency.layers.show_overlay`), and moves
napari to the row's most telling slice.  Layers are updated by name:
opening a row twice never piles up layers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from napari_medcnn.widgets._common.layers import slice_axis, slice_world_position

#: ``layer.metadata`` key of the cohort item a layer shows
COHORT_KEY = "cohort"


def cohort_key_of(layer: Any) -> str | None:
    """The item key of a layer this widget opened, else None."""
    info = (getattr(layer, "metadata", None) or {}).get(COHORT_KEY) or {}
    return info.get("key")


def _find(viewer: Any, name: str) -> Any:
    for layer in viewer.layers:
        if layer.name == name:
            return layer
    return None


def layer_name(viewer: Any, name: str, key: str) -> str:
    """``name``, or ``name [<key>]`` when a layer of that name shows
    another item or is not one of the widget's."""
    other = _find(viewer, name)
    if other is None or cohort_key_of(other) == key:
        return name
    return f"{name} [{key[:6]}]"


def show_item(
    viewer: Any,
    opened: Any,
    row: Mapping[str, Any] | None,
    record: Mapping[str, Any] | None,
    name: str,
) -> tuple[Any, Any]:
    """Show an :class:`~.jobs.OpenedItem` (see module doc).

    Args:
        viewer: the napari viewer.
        opened: the loaded scan and saliency map.
        row: the item's result row (None: not processed yet).
        record: :func:`.rows.row_record` of the row, or None.
        name: the base layer name (the row's redacted name).

    Returns:
        (scan layer, saliency overlay layer or None).
    """
    data, kwargs, _kind = opened.scan.to_layer_data()
    kwargs["name"] = layer_name(viewer, name, opened.key)
    md = dict(kwargs.get("metadata") or {})
    md[COHORT_KEY] = {
        "key": opened.key,
        "status": (row or {}).get("status", "pending"),
        "top_slice": (row or {}).get("top_slice"),
    }
    if record is not None:
        md["classification"] = dict(record)
    kwargs["metadata"] = md
    layer = _find(viewer, kwargs["name"])
    if layer is None:
        layer = viewer.add_image(data, **kwargs)
    else:  # the same item again: refresh it in place
        layer.data = data
        for attr in ("scale", "translate", "metadata", "contrast_limits"):
            if attr in kwargs:
                setattr(layer, attr, kwargs[attr])
    overlay = None
    if opened.saliency is not None:
        from napari_medcnn.widgets.saliency.layers import DisplayOptions, show_overlay

        rec = dict(opened.saliency_record or {})
        rec.setdefault("source", "cohort")
        method = str((row or {}).get("explain_method") or rec.get("method") or "map")
        overlay = show_overlay(viewer, layer, opened.saliency, method, rec,
                               DisplayOptions())  # fmt: skip
        overlay.metadata = {**overlay.metadata, COHORT_KEY: md[COHORT_KEY]}
    viewer.layers.selection.active = layer
    top = (row or {}).get("top_slice")
    if top is not None and layer.ndim == 3:
        go_to_slice(viewer, layer, int(top))
    return layer, overlay


def go_to_slice(viewer: Any, layer: Any, index: int) -> None:
    """Move napari to slice ``index`` (data axis 0) of ``layer``."""
    axis = slice_axis(viewer.dims.ndim, layer)
    viewer.dims.set_point(axis, slice_world_position(layer, index))


def remove_items(viewer: Any, keep: str | None = None) -> int:
    """Remove the layers this widget opened, except those of item ``keep``;
    how many were removed."""
    gone = [
        lay
        for lay in list(viewer.layers)
        if cohort_key_of(lay) is not None and cohort_key_of(lay) != keep
    ]
    for lay in gone:
        viewer.layers.remove(lay)
    return len(gone)
