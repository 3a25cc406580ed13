"""The public entry: explain a classification as a map on the image grid.

:func:`explain` is a generator, like ``inference.classify``: it yields
``("explain", done, total)`` progress and ``("warning", message)`` events,
and returns a :class:`SaliencyResult` whose ``map`` has the input's spatial
shape, so an overlay with the source layer's scale and translate aligns.

Flow: images -> ``prepare_with_geometry`` (the card's preprocessing; a
volume record's ``prepare_volume``) -> method on the model-input grid ->
zero where the input is pure padding (``input_fov_mask``: the field of view
the model saw) -> ``inputs.to_image`` (``to_image_grid``, or for a volume
record ``to_scan_grid``: undoes crop and resize, the slice count and the
slice axis too; nothing outside the crop) -> one robust scale for the
whole volume (or one per slice).

The default method is Grad-CAM on the deepest stage whose feature map is
at least 16 cells a side (:mod:`.cam`; ``layer="last"`` gives the classic
last feature map): chosen by the deletion test and the pointing game
among Grad-CAM on the last and on that stage, HiResCAM and LayerCAM fused
over stages (README, "Saliency").

Scopes (as in ``classify``): ``slice`` (a 2D image, or ``slice_index`` of a
volume, through a slice model; the rest of the volume's map is 0),
``slices`` (every slice through a slice model, batched) and ``volume`` (a
3D CNN or CNN+RNN on the whole volume; CNN+RNN maps are computed per slice
by the slice encoder's last convolution).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medcnn.saliency.base import METHODS, load_methods
from napari_medcnn.saliency.inputs import (
    Plan,
    estimate_occlusion,
    input_fov_mask,
    make_plan,
    method_params,
    to_image,
)
from napari_medcnn.saliency.targets import (
    ClassTarget,
    check_target,
    resolve_target,
    target_index,
)

__all__ = [
    "DEFAULT_METHOD",
    "SaliencyResult",
    "estimate_occlusion",
    "explain",
    "normalize_map",
]

Event = tuple
#: the method ``explain``, the CLI and the widget use unless told otherwise
DEFAULT_METHOD = "gradcam"
_UNDERFLOW = (
    "the target's probability rounds to 1, so its log-probability neither "
    "changes nor has a usable gradient; the map explains the class logit"
)


@dataclass
class SaliencyResult:
    """A saliency map and what it explains.

    Attributes:
        map: float32, the input's spatial shape; in [0, 1] (or [-1, 1] for
            ``sign="signed"``), 1 at the robust maximum (99.5th percentile
            of |map| over the volume, or per slice).
        method: method name; target: class index (None for a custom
            target callable); target_name: its class name.
        model_id: the checkpoint's id.
        slice_importance: CNN+RNN: how much each slice of the scan (along
            the card's slice axis) drove the target, >= 0, summing to 1, by
            the method ``classify`` records (:func:`~napari_medcnn.saliency.
            slices.classify_slice_importance`: occlusion where affordable;
            ``params["slice_importance_method"]`` says which); gradient x
            input per slice for a custom target callable; None otherwise.
        slice_attention: CNN+RNN attention weights per slice of the scan
            (along the card's slice axis), or None.
        metrics: trust metrics (see ``metrics.py``) when asked for.
        params: the method's parameters, layer, scale(s), scope and the
            probability of the target class.
        warnings: things the user should know.
    """

    map: np.ndarray
    method: str
    target: int | None
    target_name: str
    model_id: str
    slice_importance: np.ndarray | None = None
    slice_attention: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    scope: str = "slice"
    slice_index: int | None = None
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0


def normalize_map(
    m: np.ndarray,
    mode: str = "volume",
    computed: np.ndarray | None = None,
    percentile: float = 99.5,
    signed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale a map robustly: divide by the ``percentile`` of |map| and clip.

    Args:
        m: the map, (H, W) or (S, H, W).
        mode: ``volume`` (one scale for all of it) or ``slice`` (one per
            slice along axis 0 of a 3D map).
        computed: bool (S,) slices that hold computed values (the others are
            left 0 and ignored for the scale); default all.
        signed: clip to [-1, 1] instead of [0, 1].

    Returns:
        (normalised float32 map, scale(s): shape () or (S,)).
    """
    if mode not in ("volume", "slice"):
        raise ValueError(f"normalize must be 'volume' or 'slice', not {mode!r}")
    a = np.abs(m)
    lo = -1.0 if signed else 0.0
    if mode == "slice" and m.ndim == 3:
        scales = np.array([_robust_scale(s) for s in a], dtype=np.float32)
        out = m / scales[:, None, None]
    else:
        sel = a if computed is None or m.ndim == 2 else a[np.asarray(computed)]
        scales = np.asarray(_robust_scale(sel), dtype=np.float32)
        out = m / scales
    return np.clip(out, lo, 1.0).astype(np.float32), scales


def _robust_scale(a: np.ndarray, percentile: float = 99.5) -> float:
    if a.size == 0:
        return 1.0
    q = float(np.percentile(a, percentile))
    if q <= 0:
        q = float(a.max())
    return q if q > 0 else 1.0


def _apply_sign(m: np.ndarray, sign: str) -> np.ndarray:
    if sign == "positive":
        return np.maximum(m, 0)
    if sign == "absolute":
        return np.abs(m)
    if sign == "signed":
        return m
    raise ValueError(f"sign must be auto, positive, absolute or signed, not {sign!r}")


def _forward_probs(plan: Plan, batch_size: int):
    """Probabilities (N, K) of every item, and CNN+RNN attention (S,)."""
    import torch

    from napari_medcnn.models.calibration import softmax
    from napari_medcnn.saliency.base import fresh_input, model_session

    net, card = plan.loaded.model, plan.loaded.card
    logits, attention = [], None
    with model_session(net), torch.no_grad():
        for start in range(0, len(plan.items), batch_size):
            xs = np.stack([it.x for it in plan.items[start : start + batch_size]])
            xt = fresh_input(xs, plan.loaded.device)
            if hasattr(net, "forward_with_slices"):
                out = net.forward_with_slices(xt)
                if out.attention is not None:
                    attention = out.attention[0].float().cpu().numpy()
                logits.append(out.logits.float().cpu().numpy())
            else:
                logits.append(net(xt).float().cpu().numpy())
    return softmax(np.concatenate(logits), card.temperature), attention


def explain(
    images: Sequence[np.ndarray],
    model=None,
    method: str = DEFAULT_METHOD,
    target: Any = None,
    *,
    spacing: Sequence[float] | None = None,
    slice_index: int | None = None,
    scope: str | None = None,
    rgb: bool = False,
    target_score: str | None = None,
    normalize: str = "volume",
    sign: str = "auto",
    batch_size: int = 8,
    metrics: bool | Sequence[str] = False,
    metric_options: dict[str, Any] | None = None,
    warn_seconds: float = 60.0,
    device=None,
    **params: Any,
) -> Generator[Event, None, SaliencyResult]:
    """Explain a model's decision on co-registered images as a saliency map.

    Args:
        images: one array per channel, equal shapes: (H, W), (S, H, W), or
            with a trailing RGB axis when ``rgb``; card channel order.
        model: None (the default model), a checkpoint path or a LoadedModel.
        method: ``gradcam`` (default: on the deepest stage of at least
            16x16 cells where the input allows), ``layercam``,
            ``gradcam++``, ``hirescam``, ``integrated_gradients``,
            ``occlusion``, ``smoothgrad``, ``gradient``,
            ``gradient_x_input`` (see :func:`available_methods`).
        target: None (predicted class; for ``slices`` the class with the
            highest mean probability), a class index or name, a
            ``ClassTarget`` or a callable ``logits (B, K) -> (B,)``.
        target_score: how a class target is scored: ``logit``,
            ``log_prob`` (its log-probability: evidence shared by all
            classes cancels) or None: the method's default (``logit`` for
            CAM and gradient methods, ``log_prob`` for Integrated
            Gradients and occlusion; see ``Explainer.default_score``).
        spacing: the layer's scale in mm, array order; converts occlusion's
            mm and squares the preprocessing crop, as in ``classify``.
        slice_index: the slice explained in ``slice`` scope on a volume.
        scope: ``slice``, ``slices`` or ``volume``; None picks ``volume``
            for volume models, else ``slice`` for 2D input or when
            ``slice_index`` is given, else ``slices``.
        normalize: ``volume`` (one scale) or ``slice`` (one per slice).
        sign: ``auto`` (the method's default: ``positive``, evidence for
            the target, for CAM, occlusion, Integrated Gradients and
            gradient x input; ``absolute`` for the gradient magnitudes of
            ``gradient`` and SmoothGrad), ``positive``, ``absolute`` (either
            way) or ``signed`` (the map then lies in [-1, 1]).
        batch_size: examples (slices) per method call.
        metrics: True, or names among ``deletion_insertion`` and
            ``randomization``: trust metrics on the explained slice (for
            ``slices``: ``slice_index`` or the most probable slice).
        metric_options: keyword arguments for the metric functions.
        warn_seconds: occlusion jobs estimated longer than this yield a
            ``("warning", message)`` event first.
        params: the method's own parameters: ``layer`` (Grad-CAM,
            Grad-CAM++), ``layers``, ``min_resolution``, ``fuse``
            (LayerCAM, HiResCAM), ``baseline``,
            ``n_steps``, ``internal_batch_size``, ``memory_limit_mb``,
            ``blur_sigma`` (IG, voxels), ``window_mm``, ``stride_mm``,
            ``perturbations_per_eval`` (occlusion), ``n_samples``,
            ``noise`` (SmoothGrad).

    Yields:
        ``("explain", done, total)`` and ``("warning", message)``.

    Returns:
        :class:`SaliencyResult`.

    Raises:
        ValueError: unknown method, a target class that does not exist,
            Grad-CAM on a model without convolution, unfit input.
    """
    from napari_medcnn.saliency.occlusion import occlusion_cost

    t0 = time.perf_counter()
    load_methods()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    plan = make_plan(images, model, scope, spacing, slice_index, rgb, device)
    net, card = plan.loaded.model, plan.loaded.card
    tgt = check_target(target, card.classes, target_score)
    cls = METHODS[method]
    if cls.needs_conv:
        cls(net)  # raises the "no convolution" error before any compute
    probs, attention = _forward_probs(plan, batch_size)
    tgt = resolve_target(tgt, probs, card.classes, target_score)
    idx = target_index(tgt)
    sign = cls.default_sign if sign == "auto" else sign
    warnings: list[str] = []
    n = len(plan.items)
    per_call = 1 if method == "occlusion" else max(1, batch_size)
    est = None
    if method == "occlusion":
        p0 = method_params(method, plan.items[0], plan.spacing, params)
        est = occlusion_cost(
            net, plan.items[0].x[None], p0["window"], p0["stride"], n,
            p0.get("perturbations_per_eval", 16),
        )  # fmt: skip
        if est.seconds > warn_seconds:
            warnings.append(est.message())
            yield ("warning", est.message())
    out = np.zeros(plan.out_shape, np.float32)
    computed = np.zeros(plan.out_shape[0], bool) if len(plan.out_shape) == 3 else None
    input_maps: dict[int, np.ndarray] = {}
    explainer = found = None
    yield ("explain", 0, n)
    for start in range(0, n, per_call):
        batch = plan.items[start : start + per_call]
        explainer = cls(net, **method_params(method, batch[0], plan.spacing, params))
        if cls.needs_conv:
            explainer.reuse_layers(found)  # searched once per job
        with explainer:
            xs = np.stack([it.x for it in batch])
            maps = explainer.attribute(xs, tgt).numpy()
            p_batch = probs[start : start + len(batch), idx] if idx is not None else 0
            if (
                not maps.any()
                and getattr(explainer.scored(tgt), "score", "") == "log_prob"
                and np.min(p_batch) > 1 - 1e-6
            ):
                # p rounds to 1: log p no longer changes (occlusion) or its
                # gradient underflows; the logit still does
                maps = explainer.attribute(xs, ClassTarget(idx, tgt.name, "logit"))
                maps = maps.numpy()
                warnings.append(_UNDERFLOW)
        for k, (it, m) in enumerate(zip(batch, maps)):
            # no heat where the model saw only the preprocessing's padding
            m = _apply_sign(m, sign) * input_fov_mask(it.geometry)
            input_maps[start + k] = m
            grid = to_image(m, it.geometry)
            if it.dest is None:
                out[...] = grid
                if computed is not None:
                    computed[:] = True
            else:
                out[it.dest] = grid
                computed[it.dest] = True
        if cls.needs_conv:
            found = explainer.chosen_layers()
        yield ("explain", min(start + per_call, n), n)
    normed, scales = normalize_map(out, normalize, computed, signed=sign == "signed")
    info = _params_info(method, explainer, params, plan, normalize, sign, scales)
    if est is not None:
        info["estimated_passes"] = est.forward_passes
        info["estimated_seconds"] = round(est.seconds, 3)
    info["target_score"] = getattr(explainer.scored(tgt), "score", "custom")
    info["probability"] = float(probs.mean(0)[idx]) if idx is not None else None
    importance = None
    if plan.scope == "volume" and hasattr(net, "forward_with_slices"):
        importance, info["slice_importance_method"] = _slice_importance(
            net, plan.items[0].x, tgt, idx, card.temperature
        )
    if plan.scope == "volume":
        # one value per slice of the scan (along the card's slice axis),
        # as classify records them, not one per prepared slice
        importance = _on_scan_slices(importance, plan.items[0].geometry)
        attention = _on_scan_slices(attention, plan.items[0].geometry)
    result_metrics: dict[str, Any] = {}
    if metrics:
        from napari_medcnn.saliency.metrics import trust_metrics

        names = ("deletion_insertion", "randomization") if metrics is True else metrics
        k = _metric_item(plan, probs, idx)
        factory = _factory(method, plan.items[k], plan.spacing, params)
        result_metrics = trust_metrics(
            net, plan.items[k].x, input_maps[k], tgt, factory, names,
            sign=sign, temperature=card.temperature, **(metric_options or {}),
        )  # fmt: skip
        warnings += result_metrics.pop("warnings", [])
    return SaliencyResult(
        map=normed,
        method=method,
        target=idx,
        target_name=card.classes[idx] if idx is not None else repr(tgt),
        model_id=card.model_id,
        slice_importance=importance,
        slice_attention=attention if plan.scope == "volume" else None,
        metrics=result_metrics,
        params=info,
        scope=plan.scope,
        slice_index=plan.slice_index if plan.scope == "slice" else None,
        warnings=list(dict.fromkeys(warnings)),
        elapsed_s=time.perf_counter() - t0,
    )


def _factory(method, item, spacing, params):
    p = method_params(method, item, spacing, params)
    return lambda m: METHODS[method](m, **p)


def _metric_item(plan: Plan, probs: np.ndarray, idx: int | None) -> int:
    if plan.scope != "slices":
        return 0
    if plan.slice_index is not None:
        return int(plan.slice_index)
    return int(np.argmax(probs[:, idx])) if idx is not None else 0


def _params_info(method, explainer, params, plan, normalize, sign, scales) -> dict:
    info: dict[str, Any] = {
        k: v for k, v in params.items() if isinstance(v, (int, float, str, tuple))
    }
    info.update(normalize=normalize, sign=sign, spacing_mm=list(plan.spacing))
    info["scale"] = scales.tolist()
    for attr, key in (
        ("layer_name", "layer"),
        ("layer_names", "layers"),
        ("fuse", "fuse"),
        ("window", "window"),
        ("stride", "stride"),
        ("used_internal_batch_size", "used_internal_batch_size"),
    ):
        value = getattr(explainer, attr, None)
        if value is not None:
            info[key] = list(value) if isinstance(value, list) else value
    if getattr(explainer, "layer_names", None) is not None:
        info["min_resolution"] = explainer.min_resolution
    info["map_resolution"] = map_resolution(explainer, plan.items[0].x.shape[1:])
    return info


def map_resolution(explainer, input_shape) -> list[int]:
    """Cells per spatial axis that a method's map can tell apart on the
    model input: a CAM's finest feature map, occlusion's window positions,
    the input grid itself for gradient methods."""
    res = getattr(explainer, "resolution", None)
    if res is not None:
        return [int(v) for v in res]
    window = getattr(explainer, "window", None)
    stride = getattr(explainer, "stride", None)
    shape = [int(v) for v in input_shape]
    if window is not None and stride is not None:
        w = np.broadcast_to(window, (len(shape),))
        st = np.broadcast_to(stride, (len(shape),))
        return [int(max(1, -(-(n - a) // b) + 1)) for n, a, b in zip(shape, w, st)]
    return shape


def _slice_importance(net, x, tgt, idx: int | None, temperature: float):
    """Per-slice importance of a sequence model's volume decision and the
    method that gave it: the one ``classify`` records (so the Saliency and
    Classify panels show the same curve), or gradient x input for a
    custom target that has no class index."""
    if idx is None:
        from napari_medcnn.saliency.gradients import gradient_x_input_per_slice

        return gradient_x_input_per_slice(net, x[None], tgt), "gradient"
    from napari_medcnn._progress import drain
    from napari_medcnn.saliency.slices import classify_slice_importance

    si = drain(classify_slice_importance(net, x, idx, temperature=temperature))
    return si.importance, si.method


def _on_scan_slices(values, geometry):
    """Per prepared slice -> one per scan slice (a volume record's input;
    other inputs are returned as they are).  Non-negative weights (the
    default importance, attention) stay summing to 1, with 0 on slices
    the model did not see; signed values (gradient x input) are
    interpolated only."""
    from napari_medcnn.saliency.inputs import VolumeItemGeometry

    if values is None or not isinstance(geometry, VolumeItemGeometry):
        return values
    from napari_medcnn.preprocessing.volume import (
        to_scan_slices,
        weights_to_scan_slices,
    )

    v = np.asarray(values, np.float32)
    if (v < 0).any():
        return to_scan_slices(v, geometry.volume)
    return weights_to_scan_slices(v, geometry.volume)
