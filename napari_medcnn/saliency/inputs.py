"""What :func:`~napari_medcnn.saliency.explain.explain` runs on: the
user's images turned into model inputs, each with the geometry that maps
its saliency back onto the image grid (``prepare_with_geometry``; for a
volume record, ``preprocessing.volume.prepare_volume``, whose slice axis,
depth crop and slice resampling :class:`VolumeItemGeometry` undoes), and
the method parameters that depend on that geometry (occlusion's mm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class VolumeItemGeometry:
    """The geometry of a volume-record input (``preprocessing.volume.
    VolumeGeometry``: slice axis, slice positions, in-plane box) with what
    explain reads from a ``preprocessing.geometry.Geometry``.

    Attributes:
        volume: the ``VolumeGeometry``.
        image_shape: the scan's array shape (z, y, x).
        input_shape: the model input's spatial shape (S, H, W).
    """

    def __init__(self, volume: Any, input_shape: Sequence[int]):
        self.volume = volume
        self.image_shape = tuple(int(v) for v in volume.shape)
        self.input_shape = tuple(int(v) for v in input_shape)

    def _moved(self, values: Sequence[Any]) -> list[Any]:
        """Per-axis ``values`` of the scan, the slice axis first."""
        axis = self.volume.axis
        return [values[axis]] + [v for i, v in enumerate(values) if i != axis]

    def input_spacing(self, spacing: Sequence[float] | None = None) -> tuple:
        """Size in mm of one model-input voxel, (slice, row, column) of
        the input; ``spacing`` is the scan's mm per array axis (default 1)."""
        sp = [1.0] * 3 if spacing is None else [float(s) for s in spacing][-3:]
        sp = [1.0] * (3 - len(sp)) + sp
        depth, rows, cols = self._moved(sp)
        pos = np.asarray(self.volume.positions, float)
        step = abs(float(pos[1] - pos[0])) if pos.size > 1 else 1.0
        ys, xs = self.volume.box
        _s, h, w = self.input_shape
        return (
            step * depth,
            (ys.stop - ys.start) * rows / h,
            (xs.stop - xs.start) * cols / w,
        )

    def fov_mask(self) -> np.ndarray:
        """False on input voxels that are pure padding: slices sampled
        outside the scan, and the in-plane box outside the image."""
        v = self.volume
        n, h, w = self._moved(self.image_shape)
        ys, xs = v.box
        plane = _plane_mask((ys.start, ys.stop, xs.start, xs.stop), (h, w),
                            self.input_shape[-2:])  # fmt: skip
        pos = np.asarray(v.positions, float)
        depth = (pos >= -0.5) & (pos <= n - 0.5)
        return depth[:, None, None] & plane[None]

    def __repr__(self) -> str:
        return (
            f"VolumeItemGeometry(image_shape={self.image_shape}, "
            f"input_shape={self.input_shape}, axis={self.volume.axis})"
        )


@dataclass
class Item:
    """One model input: ``x`` (C, *input spatial) float32, its
    ``preprocessing.Geometry``, and ``dest``, the slice of the output volume
    it explains (None: the whole output)."""

    x: np.ndarray
    geometry: Any
    dest: int | None


@dataclass
class Plan:
    """The job: the LoadedModel, the resolved scope, the output (image)
    spatial shape, the spacing in mm (one per output axis, array order),
    the items, and the slice index given for ``slice`` scope."""

    loaded: Any
    scope: str
    out_shape: tuple[int, ...]
    spacing: tuple[float, ...]
    items: list[Item]
    slice_index: int | None


def make_plan(
    images, model, scope, spacing, slice_index, rgb, device, first_only=False
) -> Plan:
    """Check the input against the model card, resolve the scope and prepare
    the items (arguments as in ``explain``; ``first_only``: prepare just
    the first item, enough for an estimate).

    Raises:
        ValueError / CardError: input the model cannot take, before compute.
    """
    from napari_medcnn.inference.request import check_request
    from napari_medcnn.models.checkpoint import resolve_model
    from napari_medcnn.preprocessing.geometry import prepare_with_geometry
    from napari_medcnn.preprocessing.volume import is_volume_record, prepare_volume

    loaded = resolve_model(model, device)
    card = loaded.card
    images = [np.asarray(im) for im in images]
    if not images:
        raise ValueError("no image given")
    for im in images[1:]:
        if im.shape != images[0].shape:
            raise ValueError(
                f"channels differ in shape: {images[0].shape} vs {im.shape}"
            )
    out_shape = tuple(images[0].shape[: -1 if rgb else None])
    nd = len(out_shape)
    if nd not in (2, 3):
        raise ValueError(f"expected a 2D image or a 3D volume, got shape {out_shape}")
    req = check_request(
        card,
        scope=scope,
        n_channels=len(images),
        ndim=nd,
        slice_index=slice_index,
        n_slices=out_shape[0] if nd == 3 else None,
    )
    scope, slice_index = req.scope, req.slice_index
    sp = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * nd
    sp = ((1.0,) * nd + sp)[-nd:]
    record, inplane = card.preprocessing, sp[-2:]
    if scope == "volume" and nd == 3 and is_volume_record(record):
        x, vg = prepare_volume(images, record, sp, with_geometry=True)
        items = [Item(x, VolumeItemGeometry(vg, x.shape[1:]), None)]
        return Plan(loaded, scope, out_shape, sp, items, slice_index)
    if scope == "slice" and nd == 3:
        dests = [slice_index]
    elif scope == "slices" and nd == 3:
        dests = list(range(out_shape[0]))[: 1 if first_only else None]
    else:
        dests = [None]
    items = []
    for k in dests:
        chans = images if k is None else [im[k] for im in images]
        x, geom = prepare_with_geometry(chans, record, inplane)
        items.append(Item(x, geom, k))
    return Plan(loaded, scope, out_shape, sp, items, slice_index)


def input_fov_mask(geometry: Any) -> np.ndarray:
    """Where the model input saw the image: False on model-input locations
    that are pure padding (the preprocessing's crop or square box extends
    past the image and is padded there), True elsewhere.

    Computed from the item's ``preprocessing_geometry.Geometry`` (its box
    in the image) with the preprocessing's own resize of an in-image
    indicator, so it follows the record: a location that any image pixel
    contributes to is kept.

    Returns:
        bool array of ``geometry.input_shape``.
    """
    if isinstance(geometry, VolumeItemGeometry):
        return geometry.fov_mask()
    plane = _plane_mask(
        geometry.box, geometry.image_shape[-2:], geometry.input_shape[-2:]
    )
    return np.broadcast_to(plane, geometry.input_shape).copy()


def _plane_mask(box, image_hw, input_hw) -> np.ndarray:
    """(H', W') bool: the model-input pixels that some image pixel of the
    in-plane crop ``box`` (y0, y1, x0, x1; may leave the image) feeds."""
    from napari_medcnn.preprocessing.record import resize

    y0, y1, x0, x1 = box
    h, w = image_hw
    inside = np.zeros((y1 - y0, x1 - x0), np.float32)
    inside[max(0, -y0) : min(h, y1) - y0, max(0, -x0) : min(w, x1) - x0] = 1.0
    if inside.all():
        return np.ones(tuple(input_hw), bool)
    return resize(inside, tuple(input_hw)) > 1e-6


def to_image(values: np.ndarray, geometry: Any) -> np.ndarray:
    """A map on the model-input grid back on the image grid: a volume
    record's through ``preprocessing.volume.to_scan_grid`` (slice axis,
    slice positions, in-plane box), any other through
    ``preprocessing.geometry.to_image_grid``.  float32, the image's shape."""
    if isinstance(geometry, VolumeItemGeometry):
        from napari_medcnn.preprocessing.volume import to_scan_grid

        v = np.asarray(values, np.float32)
        if v.shape != geometry.input_shape:
            raise ValueError(
                f"values of shape {v.shape} do not match the model input "
                f"{geometry.input_shape}"
            )
        return to_scan_grid(v, geometry.volume)
    from napari_medcnn.preprocessing.geometry import to_image_grid

    return to_image_grid(values, geometry)


def method_params(method: str, item: Item, spacing, params: dict) -> dict:
    """mm -> voxels for occlusion (per item: crops may differ by slice)."""
    if method != "occlusion":
        return params
    from napari_medcnn.saliency.occlusion import mm_to_voxels

    p = dict(params)
    n = len(item.geometry.image_shape)
    voxel_mm = item.geometry.input_spacing(spacing[-n:])
    shape = item.geometry.input_shape
    p["window"] = mm_to_voxels(p.pop("window_mm", 10.0), voxel_mm, shape)
    p["stride"] = mm_to_voxels(p.pop("stride_mm", 5.0), voxel_mm, shape)
    return p


def estimate_occlusion(
    images: Sequence[np.ndarray],
    model=None,
    *,
    window_mm: float | Sequence[float] = 10.0,
    stride_mm: float | Sequence[float] = 5.0,
    spacing: Sequence[float] | None = None,
    slice_index: int | None = None,
    scope: str | None = None,
    rgb: bool = False,
    perturbations_per_eval: int = 16,
    device=None,
):
    """What :func:`explain` with ``method="occlusion"`` will cost, before
    starting it: window positions, forward passes and an estimated time
    (from one timed forward pass).  Arguments as in :func:`explain`.

    Returns:
        :class:`~napari_medcnn.saliency.occlusion.OcclusionEstimate`.
    """
    from napari_medcnn.saliency.occlusion import occlusion_cost

    plan = make_plan(images, model, scope, spacing, slice_index, rgb, device, True)
    item = plan.items[0]
    p = method_params(
        "occlusion",
        item,
        plan.spacing,
        {"window_mm": window_mm, "stride_mm": stride_mm},
    )
    n = plan.out_shape[0] if plan.scope == "slices" else 1
    return occlusion_cost(
        plan.loaded.model, item.x[None], p["window"], p["stride"], n,
        perturbations_per_eval,
    )  # fmt: skip
