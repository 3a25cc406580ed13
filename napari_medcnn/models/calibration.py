"""From a model's logits to calibrated class probabilities.

A card's ``temperature`` (fitted on validation images by
:func:`napari_medcnn.training.metrics.fit_temperature`) divides the logits
before the softmax; inference, saliency, training and active learning all
turn logits into probabilities here.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities (N, K) from logits (N, K), divided by
    ``temperature`` (> 0, unitless) first; computed in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
