"""Saliency overlays as napari Image layers (no Qt widgets).

* :func:`show_overlay` adds the map as an Image layer named after its
  source and method, or updates the layer of that name (data, geometry,
  metadata), so re-running never piles up layers.  The overlay copies the
  source's ``scale``, ``translate`` and ``affine``; its shape is the
  source's spatial shape, so it lies on the scan in 2D and 3D.
* :func:`apply_display` sets colormap, blending, opacity and the
  percentile threshold.  The colormaps are inferno or turbo whose alpha
  rises from 0 at the lower contrast limit (see ``saliency.export.
  colormap_rgba``), so values below the threshold are not drawn at all,
  whatever the blending.
* :func:`set_side_by_side` shows two overlays in napari's grid, each on
  its own view of the scan (a second layer sharing the scan's array).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

#: ``layer.metadata`` key of an overlay's record (and of the reference view)
META_KEY = "saliency"
REFERENCE_KEY = "saliency_reference"
# layer names in list order before a side-by-side view (restored after it)
PRIOR_ORDER_KEY = "saliency_prior_order"
COLORMAPS = ("inferno", "turbo")
BLENDINGS = ("translucent", "additive")


@dataclass
class DisplayOptions:
    """How overlays are drawn: colormap (``inferno``/``turbo``), blending
    (``translucent``/``additive``), opacity (0-1) and the percentile (0-100)
    of the map's positive values below which nothing is drawn."""

    colormap: str = "inferno"
    blending: str = "translucent"
    opacity: float = 0.6
    threshold_percentile: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "colormap": self.colormap,
            "blending": self.blending,
            "opacity": float(self.opacity),
            "threshold_percentile": float(self.threshold_percentile),
        }


def overlay_name(source_name: str, method: str) -> str:
    """The overlay layer's name: one layer per (source, method)."""
    return f"{source_name} · saliency {method}"


def is_overlay(layer: Any) -> bool:
    """A layer this widget made (an overlay or a side-by-side view)."""
    md = getattr(layer, "metadata", None) or {}
    return META_KEY in md or REFERENCE_KEY in md


@lru_cache(maxsize=8)
def napari_colormap(name: str):
    """napari Colormap ``saliency <name>``: transparent at its low end."""
    from napari.utils.colormaps import Colormap

    from napari_medcnn.saliency.export import colormap_rgba

    rgba = colormap_rgba(name)
    return Colormap(colors=rgba, name=f"saliency {name}")


def _find(viewer: Any, name: str) -> Any:
    for layer in viewer.layers:
        if layer.name == name:
            return layer
    return None


def source_geometry(source: Any) -> dict[str, Any]:
    """``scale``, ``translate``, ``affine`` (and units, axis labels) of a
    layer, for its overlay."""
    geometry: dict[str, Any] = {
        "scale": tuple(float(s) for s in source.scale),
        "translate": tuple(float(t) for t in source.translate),
        "affine": np.asarray(source.affine.affine_matrix),
    }
    for key in ("units", "axis_labels"):  # napari >= 0.5
        if getattr(source, key, None) is not None:
            geometry[key] = tuple(str(v) for v in getattr(source, key))
    return geometry


def show_overlay(
    viewer: Any,
    source: Any,
    saliency: np.ndarray,
    method: str,
    record: dict[str, Any],
    display: DisplayOptions,
) -> Any:
    """Add or update (by name) the overlay of ``saliency`` on ``source``.

    Args:
        source: the scan's Image layer (the first channel).
        saliency: float32 map, the source's spatial shape, values 0-1.
        record: JSON-safe description (method, target, metrics...), stored
            in ``layer.metadata["saliency"]``.

    Returns:
        the overlay Image layer (placed right above ``source`` when new).
    """
    name = overlay_name(str(source.name), method)
    geometry = source_geometry(source)
    layer = _find(viewer, name)
    metadata = {META_KEY: record, "source_layer": str(source.name)}
    if layer is None:
        layer = viewer.add_image(
            saliency, name=name, metadata=metadata, **geometry,
            colormap=napari_colormap(display.colormap),
            contrast_limits=(0.0, 1.0), blending=display.blending,
            opacity=display.opacity,
        )  # fmt: skip
        _place_above(viewer, layer, source)
    else:
        layer.data = saliency
        for key, value in geometry.items():
            setattr(layer, key, value)
        layer.metadata = metadata
    apply_display(layer, display)
    return layer


def _place_above(viewer: Any, layer: Any, source: Any) -> None:
    layers = list(viewer.layers)
    if source in layers:
        src, cur = layers.index(source), layers.index(layer)
        if cur != src + 1:
            viewer.layers.move(cur, src + 1)


def apply_display(layer: Any, display: DisplayOptions) -> None:
    """Colormap, blending, opacity and threshold (as contrast limits)."""
    from napari_medcnn.saliency.export import threshold_value

    cut = threshold_value(layer.data, display.threshold_percentile)
    cut = min(cut, 0.999)
    layer.colormap = napari_colormap(display.colormap)
    layer.blending = display.blending
    layer.opacity = float(display.opacity)
    layer.contrast_limits = (cut, 1.0)
    rec = dict(layer.metadata.get(META_KEY) or {})
    rec["display"] = {**display.to_dict(), "threshold_value": cut}
    layer.metadata = {**layer.metadata, META_KEY: rec}


def reference_name(source_name: str) -> str:
    """Name of the second view of the scan used side by side."""
    return f"{source_name} (side by side)"


def set_side_by_side(
    viewer: Any, source: Any, overlays: Sequence[Any], on: bool
) -> bool:
    """Show two overlays next to each other in napari's grid, or stop.

    On: a second Image layer shows ``source``'s array (no copy), and the
    four layers go to the bottom of the layer list in the order scan,
    overlay 1, scan view, overlay 2 with a grid stride of 2, so that each
    grid view shows one map on the scan.  Off: the view is removed, the
    layers go back to the order they had before, and the grid is turned off
    (a grid the user set up alone is left as it is).
    Returns whether the side-by-side grid is on.
    """
    ref = _find(viewer, reference_name(str(source.name)))
    if not on or len(overlays) < 2:
        if ref is not None:  # the user's own grid is left alone
            prior = ref.metadata.get(PRIOR_ORDER_KEY) or []
            viewer.layers.remove(ref)
            restore_order(viewer, prior)
            _grid(viewer).enabled = False
            _grid(viewer).stride = 1
        return False
    if ref is None:
        kwargs: dict[str, Any] = {
            "name": reference_name(str(source.name)),
            "metadata": {
                REFERENCE_KEY: str(source.name),
                PRIOR_ORDER_KEY: [str(lay.name) for lay in viewer.layers],
            },
            "rgb": bool(getattr(source, "rgb", False)),
            **source_geometry(source),
        }
        if not kwargs["rgb"]:
            kwargs.update(
                contrast_limits=tuple(source.contrast_limits),
                colormap=source.colormap,
            )
        ref = viewer.add_image(source.data, **kwargs)
    order = [source, overlays[0], ref, overlays[1]]
    for target, layer in enumerate(order):
        viewer.layers.move(list(viewer.layers).index(layer), target)
    for layer in order:
        layer.visible = True
    _grid(viewer).stride = 2
    _grid(viewer).enabled = True
    return True


def _grid(viewer: Any) -> Any:
    """The viewer's grid settings (``viewer.canvas.grid`` since napari 0.9,
    ``viewer.grid`` before)."""
    canvas = getattr(viewer, "canvas", None)
    return getattr(canvas, "grid", None) or viewer.grid


def restore_order(viewer: Any, names: Sequence[str]) -> None:
    """Put the layers named in ``names`` back in that relative order, in the
    list positions they hold now; other layers (added since) stay put."""
    current = list(viewer.layers)
    slots = [i for i, lay in enumerate(current) if lay.name in names]
    rank = {n: k for k, n in enumerate(names)}
    wanted = sorted((current[i] for i in slots), key=lambda lay: rank[lay.name])
    target = list(current)
    for i, lay in zip(slots, wanted):
        target[i] = lay
    for i, lay in enumerate(target):  # positions before i are final
        j = list(viewer.layers).index(lay)
        if j != i:
            viewer.layers.move(j, i)


def export_overlay(
    path: Any,
    result: Any,
    source: Any,
    display: DisplayOptions,
    model_name: str | None = None,
    overwrite: bool = False,
    card: Any = None,
) -> tuple[Any, Any]:
    """Write ``result``'s map aligned with ``source`` (a layer from the
    plugin's reader carries its LPS affine and window in its metadata; any
    other layer is taken as axis-aligned with its scale) and the sidecar
    (existing files refused unless ``overwrite``).  ``.dcm``: a DICOM
    Parametric Map on the source layer's DICOM series
    (:func:`export_dicom_overlay`).

    Returns:
        (map path, sidecar path); see ``saliency.export.write_map``.
    """
    from napari_medcnn.saliency.export import map_format, write_map

    if map_format(path) == "dicom":
        return export_dicom_overlay(path, result, source, model_name, overwrite, card)
    md = getattr(source, "metadata", None) or {}
    affine = md.get("affine")
    if affine is None or np.shape(affine) != (4, 4):
        affine = None
    window = md.get("window")
    data = source.data[0] if getattr(source, "multiscale", False) else source.data
    return write_map(
        path, result, image=np.asarray(data), affine=affine,
        spacing=tuple(source.scale),
        window=None if window is None else (window["center"], window["width"]),
        rgb=bool(getattr(source, "rgb", False)), source_name=str(source.name),
        model_name=model_name, overlay=display.to_dict(), overwrite=overwrite,
    )  # fmt: skip


def export_dicom_overlay(
    path: Any,
    result: Any,
    source: Any,
    model_name: str | None = None,
    overwrite: bool = False,
    card: Any = None,
) -> tuple[Any, Any]:
    """Write ``result``'s map as a DICOM Parametric Map on the DICOM series
    ``source`` was read from (:mod:`napari_medcnn.export.pmap`), plus the
    JSON sidecar; existing files refused unless ``overwrite``.

    Raises:
        ValueError: ``source`` has no DICOM source (NIfTI, image, a layer
            made in napari); the message says why.
    """
    import json
    from pathlib import Path

    from napari_medcnn._atomic import atomic_write_text, check_overwrite
    from napari_medcnn.export.pmap import write_parametric_map
    from napari_medcnn.export.sources import source_images
    from napari_medcnn.saliency.export import saliency_record, sidecar_path

    side = sidecar_path(path)
    check_overwrite([path, side], overwrite=overwrite)
    shape = np.shape(
        source.data[0] if getattr(source, "multiscale", False) else source.data
    )
    spatial = len(shape) - (1 if getattr(source, "rgb", False) else 0)
    src = source_images(
        dict(getattr(source, "metadata", None) or {}),
        n_slices=shape[0] if spatial == 3 else 1,
        name=str(source.name),
    )
    out = write_parametric_map(result, src, path, card=card, overwrite=overwrite)
    rec = saliency_record(
        result, source_name=str(source.name), model_name=model_name,
        spacing=tuple(source.scale),
        extra={"file": Path(path).name, "format": "dicom"},
    )  # fmt: skip
    atomic_write_text(side, json.dumps(rec, indent=2) + "\n")
    return out, side
