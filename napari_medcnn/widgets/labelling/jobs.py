"""Worker jobs of the labelling widget (no Qt; torch imported lazily).

:func:`region_job` samples patches around painted pixels, trains the patch
classifier and slides it over the image; :func:`next_case_job` ranks the
unlabelled slices/images ("Next case").  Both are generators for
``thread_worker``; torch is imported only inside them.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from napari_medcnn.widgets._common.jobs import JobError, guarded


def region_job(
    image: np.ndarray,
    labels: np.ndarray,
    scale: Sequence[float],
    patch_mm: float,
    patch_dims: int,
    class_names: dict[int, str],
    parent: str | None,
    out: str,
    control: Any,
    epochs: int = 10,
) -> Generator[Any, None, tuple[Any, Any]]:
    """Patches -> patch classifier -> class-probability map, in a worker.

    Yields ``("patches", 0, 0)``, the trainer's ``TrainEvent``s and
    ``("probability_map", i, n)``.  Returns ``(FinetuneResult, ProbabilityMap)``
    (the map is None when the run was cancelled).
    """
    from napari_medcnn.training.labels.regions import (
        PATCH_AUGMENT,
        probability_map,
        sample_patches,
        train_patch_classifier,
    )
    from napari_medcnn.training.trainer import TrainConfig

    yield ("patches", 0, 0)
    patches = sample_patches(
        image,
        labels,
        scale=scale,
        patch_mm=patch_mm,
        patch_dims=patch_dims,
        class_names=class_names,
    )
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, augment=PATCH_AUGMENT)
    res = yield from guarded(
        train_patch_classifier(
            patches, parent, out=out, config=cfg, control=control, kfold=None
        )
    )
    if res.cancelled:
        return res, None
    pm = yield from guarded(probability_map(image, res))
    return res, pm


def next_case_job(scans: list[dict[str, Any]], model: Any) -> Generator:
    """Rank the unlabelled slices/images of ``scans`` (see
    :func:`~napari_medcnn.training.labels.active.rank_candidates`); returns the
    ``Ranking``.  A multi-channel model is refused with a message."""
    from napari_medcnn.models.checkpoint import resolve_model
    from napari_medcnn.training.labels.active import rank_candidates

    loaded = resolve_model(model)
    if loaded.card.in_channels != 1 or loaded.card.input_kind != "slice":
        raise JobError(
            f"'Next case' ranks single slices; the model "
            f"'{loaded.card.name or loaded.card.arch}' takes "
            f"{loaded.card.in_channels} channel(s) of {loaded.card.input_kind}s"
        )
    return (yield from guarded(rank_candidates(scans, model=loaded)))
