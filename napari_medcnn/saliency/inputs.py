"""What :func:`~napari_medcnn.saliency.explain.explain` runs on: the
user's images turned into model inputs, each with the geometry that maps
its saliency back onto the image grid (``prepare_with_geometry``), and the
method parameters that depend on that geometry (occlusion's mm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


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
    from napari_medcnn.preprocessing.record import resize

    y0, y1, x0, x1 = geometry.box
    h, w = geometry.image_shape[-2:]
    inside = np.zeros((y1 - y0, x1 - x0), np.float32)
    inside[max(0, -y0) : min(h, y1) - y0, max(0, -x0) : min(w, x1) - x0] = 1.0
    if inside.all():
        return np.ones(geometry.input_shape, bool)
    plane = resize(inside, geometry.input_shape[-2:]) > 1e-6
    return np.broadcast_to(plane, geometry.input_shape).copy()


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
