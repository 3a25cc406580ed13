"""Worker jobs and input checks of the Classify widget (no Qt widgets).

The job functions run in napari ``thread_worker`` threads; torch is imported
only inside them, so docking the widget does not slow napari's start.
:func:`job_arguments` checks, before any compute, that the chosen layers,
scope and model fit, and turns napari's state into :func:`classify`
arguments.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from napari_medcnn.widgets._common.jobs import guarded
from napari_medcnn.widgets._common.layers import current_slice_index


def iter_classify_job(images: Sequence[Any], model: Any, **kwargs) -> Generator:
    """:func:`napari_medcnn.inference.predict.classify` for a worker thread
    (``RuntimeError`` re-raised as ``JobError``, see ``_common.jobs``).

    Sequence models in ``volume`` scope also get their slice importance
    (:func:`napari_medcnn.saliency.slices.classify_slice_importance`; the
    curve draws it), unless ``slice_importance`` is given.
    """
    from napari_medcnn.inference.predict import classify
    from napari_medcnn.saliency.slices import classify_slice_importance

    kwargs.setdefault("slice_importance", classify_slice_importance)
    return (yield from guarded(classify(images, model, **kwargs)))


#: the scope choices as the panel names them (for the request check's words)
SCOPE_CHOICES = {
    "slice": "Current slice",
    "slices": "Every slice",
    "volume": "Whole volume",
}


def job_arguments(
    model: Any, layers: Sequence[Any], scope: str, world_point: Sequence[float]
) -> dict[str, Any]:
    """Keyword arguments of :func:`classify` for ``layers`` (channel order).

    Args:
        model: the ``LoadedModel`` (or None: refused).
        layers: the napari image layers, in channel order.
        scope: ``slice``, ``slices`` or ``volume``.
        world_point: ``viewer.dims.point``; in ``slice`` scope it picks the
            slice of a 3D layer (converted to a data index).

    Raises:
        ValueError / CardError: no model or layer, a 4D layer, a slice model
            asked for a whole volume, or channels/dims the card refuses.
    """
    if model is None:
        raise ValueError("No model loaded: choose a model first.")
    if not layers:
        raise ValueError("Tick the image layer(s) to classify.")
    card = model.card
    first = layers[0]
    nd = first.ndim  # spatial: napari leaves the RGB axis out
    if nd not in (2, 3):
        raise ValueError(f"'{first.name}' has {nd} dimensions; expected 2 or 3.")
    from napari_medcnn.inference.request import check_request

    on_volume = scope == "slice" and nd == 3
    want = current_slice_index(first, world_point) if on_volume else None
    req = check_request(
        card,
        scope=scope,
        n_channels=len(layers),
        ndim=nd,
        slice_index=want,
        names=SCOPE_CHOICES,
    )
    scope, slice_index = req.scope, req.slice_index
    return {
        "scope": scope,
        "spacing": tuple(float(s) for s in first.scale),
        "slice_index": slice_index,
        "rgb": bool(getattr(first, "rgb", False)),
        # modality, orientation...: what the domain guard's rules read
        "context": dict(getattr(first, "metadata", None) or {}),
    }
