"""Saliency maps you can check: Grad-CAM (the default: on the deepest stage
of at least 16x16 cells), LayerCAM, Grad-CAM++, HiResCAM, Integrated
Gradients, occlusion and SmoothGrad on any zoo model, mapped back to the
image grid, with trust metrics (pure core: no Qt, napari or magicgui).

Entry point: :func:`explain` (a progress generator returning a
:class:`SaliencyResult`); :func:`estimate_occlusion` prices an occlusion
job before it starts; :func:`available_methods` says what a model allows.
Lower level: the method classes (``METHODS``) work on model-input tensors.
Which slices a volume decision rests on (CNN+RNN, slice_pool):
:func:`slice_importance` (:mod:`napari_medcnn.saliency.slices`), checked
by :func:`slice_deletion_insertion`.
Saving maps aligned with their scan (NIfTI, PNG, ``.npy`` + JSON sidecar):
:mod:`napari_medcnn.saliency.export`.
"""

from napari_medcnn.saliency.base import (
    METHODS,
    Explainer,
    available_methods,
    find_target_layer,
    model_session,
    stage_layers,
)
from napari_medcnn.saliency.cam import (
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    pick_stages,
)
from napari_medcnn.saliency.explain import (
    DEFAULT_METHOD,
    SaliencyResult,
    estimate_occlusion,
    explain,
    normalize_map,
)
from napari_medcnn.saliency.gradients import (
    Gradient,
    GradientXInput,
    IntegratedGradients,
    SmoothGrad,
    estimate_ig_memory,
    ig_batch_for_memory,
    make_baseline,
)
from napari_medcnn.saliency.metrics import (
    deletion_insertion,
    near_constant,
    randomization_check,
    slice_deletion_insertion,
    spearman,
    trust_warnings,
)
from napari_medcnn.saliency.occlusion import (
    Occlusion,
    OcclusionEstimate,
    count_windows,
    mm_to_voxels,
)
from napari_medcnn.saliency.slices import (
    DEFAULT_SLICE_METHOD,
    SliceImportance,
    classify_slice_importance,
    iter_slice_importance,
    slice_importance,
)
from napari_medcnn.saliency.targets import ClassTarget, PredictedClass

__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_SLICE_METHOD",
    "METHODS",
    "ClassTarget",
    "Explainer",
    "Gradient",
    "GradientXInput",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "IntegratedGradients",
    "LayerCAM",
    "Occlusion",
    "OcclusionEstimate",
    "PredictedClass",
    "SaliencyResult",
    "SliceImportance",
    "SmoothGrad",
    "available_methods",
    "classify_slice_importance",
    "count_windows",
    "deletion_insertion",
    "estimate_ig_memory",
    "estimate_occlusion",
    "explain",
    "find_target_layer",
    "ig_batch_for_memory",
    "iter_slice_importance",
    "make_baseline",
    "mm_to_voxels",
    "model_session",
    "near_constant",
    "normalize_map",
    "pick_stages",
    "randomization_check",
    "slice_deletion_insertion",
    "slice_importance",
    "spearman",
    "stage_layers",
    "trust_warnings",
]
