"""Worker job, methods and input checks of the Saliency widget (no Qt widgets).

:func:`iter_saliency_job` runs :func:`napari_medcnn.saliency.explain` once
per chosen method in a napari ``thread_worker`` (torch is imported there,
not when the widget docks).  :func:`offered_methods` lists the methods a
model allows (:data:`METHOD_LABELS` names them), and :func:`job_arguments`
checks, before any compute, that the layers, scope, target and model fit,
and says why not.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from napari_medcnn.widgets._common.jobs import guarded
from napari_medcnn.widgets._common.layers import current_slice_index

#: core method name -> label shown in the widget
METHOD_LABELS = {
    "gradcam": "Grad-CAM",
    "layercam": "LayerCAM (multi-layer)",
    "gradcam++": "Grad-CAM++",
    "hirescam": "HiResCAM",
    "integrated_gradients": "Integrated Gradients",
    "occlusion": "Occlusion",
    "smoothgrad": "SmoothGrad",
    "gradient": "Gradient",
    "gradient_x_input": "Gradient × input",
}
CAM_METHODS = ("gradcam", "layercam", "gradcam++", "hirescam")


def offered_methods(model: Any) -> tuple[list[str], str]:
    """(methods ``model`` allows, in display order; why some are missing)."""
    from napari_medcnn.saliency import available_methods
    from napari_medcnn.saliency.base import no_conv_error

    allowed = set(available_methods(model.model))
    methods = [m for m in METHOD_LABELS if m in allowed]
    why = "" if set(CAM_METHODS) <= allowed else str(no_conv_error(model.model))
    return methods, why


def iter_saliency_job(
    images: Sequence[Any],
    model: Any,
    runs: Sequence[tuple[str, dict[str, Any]]],
    **common: Any,
) -> Generator:
    """Explain once per (method, parameters) of ``runs``.

    Yields:
        ``("explain", done, total)`` over all runs (each run counts as many
        steps as its own progress says, scaled to 100) and
        ``("warning", message)``.

    Returns:
        list of ``SaliencyResult``, one per run.
    """
    from napari_medcnn.saliency import explain

    results = []
    n = len(runs)
    for k, (method, params) in enumerate(runs):
        gen = guarded(explain(images, model, method, **common, **params))
        try:
            while True:
                event = next(gen)
                if event and event[0] == "explain" and event[2]:
                    done = k * 100 + int(100 * event[1] / event[2])
                    yield ("explain", done, 100 * n, METHOD_LABELS.get(method))
                else:
                    yield event
        except StopIteration as stop:
            results.append(stop.value)
    return results


#: the panel's scope choices in the request check's words: for a slice
#: model, "Whole volume" means every slice
SCOPE_CHOICES = {
    "slice": "Current slice",
    "slices": "Whole volume",
    "volume": "Whole volume",
}


def job_arguments(
    model: Any,
    layers: Sequence[Any],
    scope: str,
    world_point: Sequence[float],
    target: Any,
) -> dict[str, Any]:
    """Keyword arguments of ``explain`` common to every method.

    Args:
        model: the ``LoadedModel`` (None: refused).
        layers: the image layers, in the card's channel order.
        scope: ``slice`` (the slice napari shows) or ``volume`` (all of it).
        world_point: ``viewer.dims.point``, to find the current slice.
        target: None (predicted class), a class name or index.

    Raises:
        ValueError / CardError: why the input does not fit, in words.
    """
    from napari_medcnn.saliency.targets import check_target

    if model is None:
        raise ValueError("No model loaded: choose a model first.")
    if not layers:
        raise ValueError("Tick the image layer(s) to explain.")
    card = model.card
    first = layers[0]
    nd = first.ndim
    if nd not in (2, 3):
        raise ValueError(f"'{first.name}' has {nd} dimensions; expected 2 or 3.")
    check_target(target, card.classes)
    from napari_medcnn.inference.request import check_request, is_volume_model

    # the widget offers "Current slice" and "Whole volume"; for a slice
    # model the whole volume means every slice
    if is_volume_model(card):
        wanted = "volume"
    else:
        wanted = "slice" if scope == "slice" or nd == 2 else "slices"
    req = check_request(
        card,
        scope=wanted,
        n_channels=len(layers),
        ndim=nd,
        slice_index=(
            current_slice_index(first, world_point)
            if wanted == "slice" and nd == 3
            else None
        ),
        names=SCOPE_CHOICES,
    )
    core_scope, slice_index = req.scope, req.slice_index
    return {
        "target": target,
        "scope": core_scope,
        "slice_index": slice_index,
        "spacing": tuple(float(s) for s in first.scale),
        "rgb": bool(getattr(first, "rgb", False)),
    }
