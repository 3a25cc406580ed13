"""Classify images and volumes with a checkpoint (pure core, no Qt).

:func:`classify` is a generator: it yields ``("classify", done, total)``
progress and returns a :class:`ClassificationResult`.  Widgets run it in a
worker; the CLI and tests drain it with
:func:`napari_medcnn._progress.drain`.

Scopes:

* ``"slice"``: one 2D image (or ``slice_index`` of a volume) through a 2D
  model;
* ``"slices"``: every slice of a volume through a 2D model, batched; the
  volume-level probabilities are the mean over slices, and per-slice
  probabilities are returned;
* ``"volume"``: the whole volume through a CNN+RNN (``sequence``) or 3D CNN
  (``volume``) model; CNN+RNN models also return per-slice probabilities,
  and, when the caller passes a ``slice_importance`` function (the front
  ends pass :func:`napari_medcnn.saliency.slices.classify_slice_importance`;
  this layer cannot import saliency), how much each slice drove the
  decision.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medcnn.inference.fast import (
    forward_numpy,
    optimized_model,
    per_slice_logits,
)
from napari_medcnn.inference.request import check_request
from napari_medcnn.models.checkpoint import resolve_model
from napari_medcnn.trust.domain import DomainGuard, content_stats, is_colour, summarise
from napari_medcnn.trust.uncertainty import predictive_uncertainty

Progress = tuple[str, int, int]


@dataclass
class ClassificationResult:
    """Outcome of one classification.

    Attributes:
        classes: class names in output order.
        probabilities: calibrated class probabilities (sum to 1).
        label: the predicted class name; ``index`` its position.
        scope: ``slice``, ``slices`` or ``volume``.
        slice_probabilities: (S, K) per-slice probabilities, or None.
        slice_index: the slice classified in ``slice`` scope, if any.
        model_id, model_name, model_path: the model's identity.
        device: where it ran; elapsed_s: wall time in seconds.
        warnings: things the user should know (constant image...).
        domain: how far the input lies inside the model's training domain:
            ``{"in_domain": bool, "score": float, "threshold": float,
            "reasons": [str, ...]}`` (score: novelty, higher = farther from
            the training images; ``in_domain`` is False when any outright
            rule fires or the score exceeds the card's threshold); None when
            the card records no domain.
        slice_in_domain: (S,) bool per slice for ``slices`` / CNN+RNN, or
            None; a volume's label is computed from in-domain slices only.
        slice_domain_scores: (S,) float novelty per slice, or None.
        uncertainty: 0 (certain) .. 1 (a coin flip) for the returned
            probabilities (see :mod:`napari_medcnn.uncertainty`), or None.
        slice_uncertainty: (S,) per-slice uncertainty, or None.
        slice_importance: sequence models in ``volume`` scope, when asked
            for: (S,) how much each slice drove the predicted class (>= 0,
            sums to 1; see :mod:`napari_medcnn.saliency.slices`), or None.
        slice_importance_method: the method that computed it
            (``occlusion``, ``attention`` or ``gradient``), or None.
    """

    classes: list[str]
    probabilities: list[float]
    label: str
    index: int
    scope: str
    slice_probabilities: np.ndarray | None = None
    slice_index: int | None = None
    model_id: str = ""
    model_name: str = ""
    model_path: str = ""
    device: str = "cpu"
    elapsed_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    domain: dict[str, Any] | None = None
    slice_in_domain: np.ndarray | None = None
    slice_domain_scores: np.ndarray | None = None
    uncertainty: float | None = None
    slice_uncertainty: np.ndarray | None = None
    slice_importance: np.ndarray | None = None
    slice_importance_method: str | None = None

    @property
    def in_domain(self) -> bool:
        """False when the domain guard put the input outside the model's
        training domain (True when the card records no domain)."""
        return bool(self.domain is None or self.domain.get("in_domain", True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (no image data, no patient data)."""
        d = {
            "label": self.label,
            "index": self.index,
            "classes": list(self.classes),
            "probabilities": [float(p) for p in self.probabilities],
            "scope": self.scope,
            "slice_index": self.slice_index,
            "model_id": self.model_id,
            "model_name": self.model_name,
            "device": self.device,
            "elapsed_s": round(float(self.elapsed_s), 4),
            "warnings": list(self.warnings),
        }
        if self.slice_probabilities is not None:
            d["slice_probabilities"] = np.round(self.slice_probabilities, 6).tolist()
        d["domain"] = None if self.domain is None else dict(self.domain)
        d["uncertainty"] = (
            None if self.uncertainty is None else round(float(self.uncertainty), 6)
        )
        if self.slice_in_domain is not None:
            d["slice_in_domain"] = [bool(v) for v in self.slice_in_domain]
        if self.slice_domain_scores is not None:
            d["slice_domain_scores"] = np.round(self.slice_domain_scores, 4).tolist()
        if self.slice_uncertainty is not None:
            d["slice_uncertainty"] = np.round(self.slice_uncertainty, 4).tolist()
        if self.slice_importance is not None:
            d["slice_importance"] = np.round(self.slice_importance, 6).tolist()
            d["slice_importance_method"] = self.slice_importance_method
        return d


def _spatial_ndim(images: Sequence[np.ndarray], rgb: bool) -> int:
    return images[0].ndim - (1 if rgb else 0)


def _check_images(images: Sequence[np.ndarray], rgb: bool) -> list[str]:
    if not images:
        raise ValueError("no image given")
    shape = images[0].shape
    for im in images[1:]:
        if im.shape != shape:
            raise ValueError(
                f"channel layers must have the same shape: {shape} vs {im.shape}"
            )
    warnings = []
    for i, im in enumerate(images):
        if im.size == 0:
            raise ValueError(f"channel {i} is empty (shape {im.shape})")
        sample = np.asarray(im).ravel()[:: max(1, im.size // 1_000_000)]
        if np.nanmax(sample) == np.nanmin(sample):
            warnings.append(
                f"channel {i} is constant ({float(sample[0]):g}); the prediction "
                "does not reflect image content"
            )
    nd = _spatial_ndim(images, rgb)
    if nd not in (2, 3):
        raise ValueError(f"expected a 2D image or a 3D volume, got shape {shape}")
    return warnings


def _probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    from napari_medcnn.models.calibration import softmax

    return softmax(logits, temperature).astype(np.float32)


def classify(
    images: Sequence[np.ndarray],
    model=None,
    *,
    scope: str = "slice",
    spacing: Sequence[float] | None = None,
    slice_index: int | None = None,
    rgb: bool = False,
    batch_size: int | None = None,
    device=None,
    context: dict[str, Any] | None = None,
    slice_importance: Callable[..., Generator] | None = None,
) -> Generator[Progress, None, ClassificationResult]:
    """Classify co-registered images (one array per channel/layer).

    Args:
        images: arrays of equal shape, (H, W), (H, W, 3) with ``rgb``, or
            (S, H, W) volumes; their order is the card's channel order.
        model: None (the default model), a checkpoint path or a LoadedModel.
        scope: ``slice``, ``slices`` or ``volume`` (see module docstring).
        spacing: the layer's scale in mm (array order); the last two values
            (row, column) square the crop in mm.
        slice_index: which slice of a volume to classify in ``slice`` scope.
        rgb: the arrays carry a trailing RGB axis.
        batch_size: slices per forward pass; default
            :func:`~napari_medcnn.inference.fast.cpu_batch` on CPU (each
            of ``torch.get_num_threads()`` worker threads runs whole
            batches on one core), :data:`GPU_BATCH` on a GPU (the
            worker threads prepare the next batches while the device runs
            this one).
        device: ``"cpu"``, ``"cuda"``, ``"mps"``...; default the best one.
        context: the first layer's metadata (``modality``,
            ``image_orientation_patient`` or the reader's ``orientation``),
            which the domain guard's outright rules read; None: content
            and feature rules only.
        slice_importance: for sequence models in ``volume`` scope, a
            progress generator function ``(model, x (1, C, S, H, W),
            target, temperature=T)`` returning an object with
            ``importance`` (S,) and ``method`` (e.g.
            :func:`napari_medcnn.saliency.slices.classify_slice_importance`:
            occlusion of each slice, about three more forward passes of the
            volume plus one recurrent pass per slice); its events are
            passed on.  None: not computed.

    The result carries a domain assessment (see
    :mod:`napari_medcnn.trust.domain`) when the card records a domain, and
    an uncertainty (:mod:`napari_medcnn.trust.uncertainty`) always.  In
    ``slices`` scope the volume's probabilities are the mean over the
    slices inside the domain (all slices when none is, with a warning).

        CardError / ValueError: input the model cannot take; raised before
            any compute with a message saying what was expected.
    """
    from napari_medcnn.preprocessing.record import prepare
    from napari_medcnn.preprocessing.volume import (
        is_volume_record,
        prepare_model_input,
        prepare_volume,
        to_scan_slices,
        weights_to_scan_slices,
    )

    t0 = time.perf_counter()
    loaded = resolve_model(model, device)
    card = loaded.card
    images = [np.asarray(im) for im in images]
    warnings = _check_images(images, rgb)
    nd = _spatial_ndim(images, rgb)
    inplane = tuple(spacing[-2:]) if spacing is not None else (1.0, 1.0)
    req = check_request(
        card,
        scope=scope,
        n_channels=len(images),
        ndim=nd,
        slice_index=slice_index,
        n_slices=images[0].shape[0] if nd == 3 else None,
    )
    scope, slice_index = req.scope, req.slice_index
    if slice_index is not None:
        images = [im[slice_index] for im in images]
        nd = 2
    dev = loaded.device
    guard = _guard(loaded)
    colour = bool(rgb) and is_colour(images[0])
    rules = guard.rule_reasons(context, colour) if guard.active else []
    feats_net = None
    if guard.needs_features and scope != "volume":
        feats_net = optimized_model(loaded, with_features=True)
    net = feats_net if feats_net is not None else optimized_model(loaded)
    from napari_medcnn.models.features import with_tta

    net = with_tta(net, card)  # the card's test-time augmentation (mirror)
    k = card.num_classes
    record = card.preprocessing
    slice_probs = slice_domain = slice_scores = None
    domain = None
    importance = importance_method = None
    if scope == "slice":
        yield ("classify", 0, 1)
        x = prepare(images, record, inplane)[None]
        out = forward_numpy(net, x, dev)
        probs = _probs(out[:, :k], card.temperature)[0]
        if guard.active:
            feats = out[:, k:] if feats_net is not None else None
            domain = guard.assess(content_stats(x), feats, rules)[0]
        yield ("classify", 1, 1)
    elif scope == "slices":
        out = yield from per_slice_logits(
            images, net, dev, record, inplane, rgb, batch_size,
            stats=content_stats if guard.active else None,
        )  # fmt: skip
        slice_probs = _probs(out[:, :k], card.temperature)
        probs = slice_probs.mean(axis=0)
        if guard.active:
            feats = out[:, k:-2] if feats_net is not None else None
            items = guard.assess(out[:, -2:], feats, rules)
            slice_domain = np.array([it["in_domain"] for it in items], bool)
            slice_scores = np.array(
                [np.nan if it["score"] is None else it["score"] for it in items],
                np.float32,
            )
            domain = summarise(items)
            if slice_domain.any():
                probs = slice_probs[slice_domain].mean(axis=0)
                if not slice_domain.all():
                    warnings.append(
                        f"label from the {int(slice_domain.sum())} of "
                        f"{len(slice_domain)} slices inside the model's domain"
                    )
            else:
                warnings.append(
                    "no slice is inside the model's domain; the label "
                    "averages all slices and should not be trusted"
                )
    else:
        yield ("classify", 0, 1)
        geo = None
        if is_volume_record(record):
            x, geo = prepare_volume(images, record, spacing, with_geometry=True)
            x = x[None]
        else:
            x = prepare_model_input(images, record, spacing)[None]
        if hasattr(net, "forward_with_slices"):
            logits, slice_logits = forward_numpy(net, x, dev, with_slices=True)
            slice_probs = _probs(slice_logits[0], card.temperature)
        else:
            logits = forward_numpy(net, x, dev)
        probs = _probs(logits, card.temperature)[0]
        if slice_importance is not None and card.input_kind == "sequence":
            got = yield from slice_importance(
                net, x, int(np.argmax(probs)), temperature=card.temperature
            )
            importance = np.asarray(got.importance, np.float32)
            importance_method = str(got.method)
        if geo is not None:  # one value per slice of the scan, not of x
            if slice_probs is not None:
                slice_probs = to_scan_slices(slice_probs, geo)
            if importance is not None:
                importance = weights_to_scan_slices(importance, geo)
        if guard.active:
            domain = {
                "in_domain": not rules, "score": None, "threshold": None,
                "reasons": list(rules),
            }  # fmt: skip
        yield ("classify", 1, 1)
    if domain is not None and not domain["in_domain"]:
        warnings.append(
            "outside the model's domain: " + "; ".join(domain["reasons"][:3])
        )
    idx = int(np.argmax(probs))
    return ClassificationResult(
        classes=list(card.classes),
        probabilities=[float(p) for p in probs],
        label=card.classes[idx],
        index=idx,
        scope=scope,
        slice_probabilities=slice_probs,
        slice_index=slice_index if scope == "slice" else None,
        model_id=card.model_id,
        model_name=card.name or card.arch,
        model_path=os.fspath(loaded.path),
        device=str(dev),
        elapsed_s=time.perf_counter() - t0,
        warnings=warnings,
        domain=domain,
        slice_in_domain=slice_domain,
        slice_domain_scores=slice_scores,
        uncertainty=float(predictive_uncertainty(probs)),
        slice_uncertainty=(
            None if slice_probs is None else predictive_uncertainty(slice_probs)
        ),
        slice_importance=importance,
        slice_importance_method=importance_method,
    )


def classify_scan(scan: Any, model=None, scope: str = "slice", **kwargs):
    """:func:`classify` on a reader :class:`~napari_medcnn.io.Scan`, the
    user's path: its data, spacing, RGB flag and metadata (the domain
    guard's context).  ``scope="slice"`` on a volume means every slice
    (as ``napari-medcnn classify --scope slice``).  A progress generator
    returning the :class:`ClassificationResult`; ``kwargs`` go to
    :func:`classify` (``batch_size``, ``device``...)."""
    if scope == "slice" and scan.ndim_spatial == 3:
        scope = "slices"
    return classify(
        [scan.data],
        model,
        scope=scope,
        spacing=scan.spacing,
        rgb=scan.rgb,
        context=scan.metadata,
        **kwargs,
    )


def _guard(loaded):
    """The :class:`DomainGuard` of a loaded model (inactive without a
    recorded domain)."""
    ref = getattr(loaded, "extras", {}).get("domain.reference")
    return DomainGuard(loaded.card.domain, None if ref is None else ref.float().numpy())
