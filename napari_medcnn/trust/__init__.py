"""How far to trust a prediction (pure core: no Qt).

* :mod:`.domain`: is the input inside what the model was trained on?
  Outright rules (modality, colour, orientation) from the card's recorded
  training domain, content rules on the prepared input (a whole-head slice
  has background around it) and a feature-space novelty score (k nearest
  training images, cosine distance of penultimate features) with a
  threshold fitted on validation images.
* :mod:`.uncertainty`: a 0..1 uncertainty beside every probability.
"""

from napari_medcnn.trust.domain import (
    DomainGuard,
    content_stats,
    fit_domain,
    knn_novelty,
)
from napari_medcnn.trust.uncertainty import binary_entropy, predictive_uncertainty

__all__ = [
    "DomainGuard",
    "binary_entropy",
    "content_stats",
    "fit_domain",
    "knn_novelty",
    "predictive_uncertainty",
]
