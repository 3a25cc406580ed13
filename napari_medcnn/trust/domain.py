"""The domain guard: say when an input lies outside what a model knows.

A model card's ``domain`` records what the model was trained on::

    {"version": 1,
     "modalities": ["MR"],            # DICOM Modality values (or declared)
     "color": "grey",                 # or "rgb"
     "anatomy": "head (brain), axial slices",   # free text
     "orientation": {"plane": "axial", "max_oblique_deg": 30},
     "content": {"border_background": {"min": ...}, "foreground": {...}},
     "intensity": {...},              # statistics of prepared inputs
     "features": {"method": "knn_cosine", "k": 5, "threshold": t,
                  "n_reference": N, "validation_flagged": f, ...}}

and the checkpoint carries the reference features (the L2-normalised
penultimate features of the training images) as the tensor
``domain.reference`` beside the weights.

Every prediction gets ``{"in_domain", "score", "threshold", "reasons"}``:

* **outright rules**: a DICOM modality the card does not list, colour
  input to a grey model, a slice plane the card's orientation rule rejects;
* **content rules** on the prepared input: a whole-head slice has
  background around it (a crop of tissue, a photograph or a test pattern
  does not), and its foreground covers a share of the field of view seen in
  training;
* **feature novelty**: 1 - mean cosine similarity of the input's
  penultimate features to its ``k`` nearest training images; above the
  threshold fitted on validation images (at most 5 % of them flagged), the
  input is outside.

Pure core: numpy only (features come from the inference pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DOMAIN_VERSION = 1
#: side fraction of the border ring used by the content rules
RING = 0.08
#: share of the robust range (min .. 99th percentile) under which a pixel
#: counts as background
DARK = 0.1


def content_stats(x: np.ndarray) -> np.ndarray:
    """Content statistics of prepared model inputs.

    Args:
        x: (N, C, H, W) prepared inputs (channel 0 is used).

    Returns:
        float (N, 2): the background share of the border ring (pixels
        under :data:`DARK` of the range min .. 99th percentile, in a ring
        :data:`RING` of the side wide), and the foreground share of the
        whole input.
    """
    a = np.asarray(x, np.float32)[:, 0]
    n, h, w = a.shape
    flat = a.reshape(n, -1)
    lo = flat.min(axis=1)
    hi = np.percentile(flat, 99, axis=1)
    rng = np.where(hi > lo, hi - lo, 1.0)
    v = (a - lo[:, None, None]) / rng[:, None, None]
    dark = v < DARK
    r = max(1, int(round(RING * min(h, w))))
    ring = np.ones((h, w), bool)
    ring[r:-r, r:-r] = False
    border = dark[:, ring].mean(axis=1)
    fg = 1.0 - dark.reshape(n, -1).mean(axis=1)
    flat_img = ~(hi > lo)
    border[flat_img] = 0.0
    fg[flat_img] = 0.0
    return np.stack([border, fg], axis=1)


def knn_novelty(
    features: np.ndarray, reference: np.ndarray, k: int = 5, chunk: int = 512
) -> np.ndarray:
    """1 - mean cosine similarity to the ``k`` nearest reference rows.

    Args:
        features: (N, F) penultimate features (any scale).
        reference: (M, F) L2-normalised training features.

    Returns:
        float (N,) in [0, 2]; higher = farther from the training images.
    """
    f = np.asarray(features, np.float32)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8)
    ref = np.asarray(reference, np.float32)
    k = max(1, min(int(k), len(ref)))
    out = np.empty(len(f), np.float32)
    for a in range(0, len(f), chunk):
        sims = f[a : a + chunk] @ ref.T
        top = np.partition(sims, -k, axis=1)[:, -k:]
        out[a : a + chunk] = 1.0 - top.mean(axis=1)
    return out


def normalise_reference(features: np.ndarray) -> np.ndarray:
    """L2-normalised float16 reference rows for the checkpoint."""
    f = np.asarray(features, np.float32)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8)
    return f.astype(np.float16)


def _quantiles(v: np.ndarray) -> dict[str, float]:
    q = np.percentile(v, [0.5, 1, 5, 50, 95, 99, 99.5])
    keys = ("p0_5", "p1", "p5", "p50", "p95", "p99", "p99_5")
    return {k: round(float(x), 5) for k, x in zip(keys, q)}


def fit_domain(
    train_x: np.ndarray,
    train_features: np.ndarray,
    val_x: np.ndarray,
    val_features: np.ndarray,
    *,
    modalities: Sequence[str],
    color: str = "grey",
    anatomy: str = "",
    orientation: Mapping[str, Any] | None = None,
    k: int = 5,
    flag_rate: float = 0.05,
    content_quantile: float = 0.5,
) -> tuple[dict[str, Any], np.ndarray]:
    """Fit a card's ``domain`` and the reference features.

    Args:
        train_x, val_x: (N, C, H, W) prepared training / validation inputs.
        train_features, val_features: their penultimate features.
        modalities: DICOM Modality values the model was trained on.
        color: ``grey`` or ``rgb``.
        anatomy: free text (anatomy and orientation).
        orientation: e.g. ``{"plane": "axial", "max_oblique_deg": 30}``.
        k: neighbours of the novelty score.
        flag_rate: the threshold is the ``1 - flag_rate`` quantile of the
            validation images' combined score, so at most that share of
            in-domain validation images is flagged.
        content_quantile: percentile (0-100) of the training images under
            which the content rules start to flag.

    Returns:
        ``(domain dict, reference float16 (M, F))``.
    """
    reference = normalise_reference(train_features)
    train_c = content_stats(train_x)
    val_c = content_stats(val_x)
    content = {
        "border_background": {
            "min": round(float(np.percentile(train_c[:, 0], content_quantile)), 5),
            "train": _quantiles(train_c[:, 0]),
        },
        "foreground": {
            "min": round(float(np.percentile(train_c[:, 1], content_quantile)), 5),
            "max": round(
                float(np.percentile(train_c[:, 1], 100 - content_quantile)), 5
            ),
            "train": _quantiles(train_c[:, 1]),
        },
    }
    val_score = knn_novelty(val_features, reference, k)
    # validation images the content rules flag count against the budget
    content_ok = _content_reasons_mask(val_c, content)
    if 1 - content_ok.mean() > flag_rate / 2:
        # training images that differ from the validation set in content
        # (e.g. healthy slices at every level of a head) must not spend the
        # whole budget, or the novelty threshold ends at the validation
        # maximum: widen each content rule to flag at most flag_rate / 6
        # of the validation images
        low, high = 100 * flag_rate / 6, 100 * (1 - flag_rate / 6)
        bb, fg = content["border_background"], content["foreground"]
        bb["min"] = round(min(bb["min"], float(np.percentile(val_c[:, 0], low))), 5)
        fg["min"] = round(min(fg["min"], float(np.percentile(val_c[:, 1], low))), 5)
        fg["max"] = round(max(fg["max"], float(np.percentile(val_c[:, 1], high))), 5)
        content_ok = _content_reasons_mask(val_c, content)
    score_ok = val_score[content_ok]
    budget = max(0.0, flag_rate - (1 - content_ok.mean()))
    threshold = float(np.quantile(score_ok, 1 - budget)) if score_ok.size else 1.0
    flagged = (~content_ok) | (val_score > threshold)
    flat = np.asarray(train_x, np.float32)[:, 0].reshape(len(train_x), -1)
    domain = {
        "version": DOMAIN_VERSION,
        "modalities": [str(m) for m in modalities],
        "color": color,
        "anatomy": anatomy,
        "orientation": dict(orientation or {}),
        "content": content,
        "intensity": {
            "prepared_p1": _quantiles(np.percentile(flat, 1, axis=1)),
            "prepared_p99": _quantiles(np.percentile(flat, 99, axis=1)),
        },
        "features": {
            "method": "knn_cosine",
            "layer": "penultimate",
            "k": int(k),
            "threshold": round(threshold, 6),
            "n_reference": int(len(reference)),
            "validation_flagged": round(float(flagged.mean()), 5),
            "train_score": _quantiles(knn_novelty(train_features, reference, k + 1)),
            "validation_score": _quantiles(val_score),
        },
    }
    return domain, reference


def _content_reasons_mask(c: np.ndarray, content: Mapping[str, Any]) -> np.ndarray:
    """True where no content rule fires (see :func:`content_reasons`)."""
    return np.array([not content_reasons(row, content) for row in c], bool)


def content_reasons(stats: np.ndarray, content: Mapping[str, Any]) -> list[str]:
    """The content rules that flag one input's :func:`content_stats` row."""
    reasons = []
    border, fg = float(stats[0]), float(stats[1])
    bb = content.get("border_background") or {}
    if "min" in bb and border < bb["min"]:
        reasons.append(
            f"no background around the anatomy ({100 * border:.0f} % of the "
            f"border is background; training images: >= {100 * bb['min']:.0f} "
            "%): a crop, a photograph or not a whole-head slice"
        )
    fgr = content.get("foreground") or {}
    if "min" in fgr and fg < fgr["min"]:
        reasons.append(
            f"the anatomy fills {100 * fg:.0f} % of the field of view "
            f"(training: >= {100 * fgr['min']:.0f} %)"
        )
    elif "max" in fgr and fg > fgr["max"]:
        reasons.append(
            f"the image fills {100 * fg:.0f} % of the field of view "
            f"(training: <= {100 * fgr['max']:.0f} %)"
        )
    return reasons


def slice_plane(context: Mapping[str, Any] | None) -> tuple[str, float] | None:
    """(plane, obliquity in degrees) of the slices, from DICOM
    ``image_orientation_patient`` or the reader's NIfTI ``orientation``
    text; None when the metadata says nothing."""
    if not context:
        return None
    iop = context.get("image_orientation_patient")
    if iop is not None and len(iop) == 6:
        row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
        normal = np.cross(row, col)
        norm = np.linalg.norm(normal)
        if norm > 0:
            normal = np.abs(normal / norm)
            axis = int(np.argmax(normal))
            angle = float(np.degrees(np.arccos(np.clip(normal[axis], -1, 1))))
            return ("sagittal", "coronal", "axial")[axis], angle
    text = str(context.get("orientation") or "")
    if "z " in text:
        z = text.split("z ", 1)[1].split(" (")[0].split(",")[0]
        plane = (
            "axial"
            if "Superior" in z or "Inferior" in z
            else "coronal"
            if "Anterior" in z or "Posterior" in z
            else "sagittal"
            if "Left" in z or "Right" in z
            else None
        )
        if plane:
            return plane, float(context.get("oblique_deg") or 0.0)
    return None


def is_colour(image: np.ndarray, tolerance: float = 0.02) -> bool:
    """True when an (..., 3|4) image really holds colour: its channels
    differ by more than ``tolerance`` of the range on average (grey images
    stored as RGB JPEG differ only by compression noise)."""
    a = np.asarray(image)
    if a.ndim < 3 or a.shape[-1] not in (3, 4):
        return False
    rgb = a[..., :3].astype(np.float32)
    step = max(1, rgb[..., 0].size // 250_000)
    flat = rgb.reshape(-1, 3)[::step]
    span = float(flat.max() - flat.min()) or 1.0
    diff = np.abs(flat[:, 0] - flat[:, 1]) + np.abs(flat[:, 1] - flat[:, 2])
    return float(diff.mean()) / span > tolerance


class DomainGuard:
    """Applies a card's ``domain`` (see module docstring).

    Args:
        domain: the card's ``domain`` dict (empty: the guard says nothing).
        reference: (M, F) L2-normalised training features, or None.
    """

    def __init__(self, domain: Mapping[str, Any] | None, reference=None):
        self.domain = dict(domain or {})
        self.reference = None if reference is None else np.asarray(reference)
        feats = self.domain.get("features") or {}
        self.threshold = float(feats.get("threshold", np.inf))
        self.k = int(feats.get("k", 5))

    @property
    def active(self) -> bool:
        """True when the card records a domain."""
        return bool(self.domain)

    @property
    def needs_features(self) -> bool:
        """True when the novelty score needs penultimate features."""
        return self.reference is not None and np.isfinite(self.threshold)

    def rule_reasons(
        self, context: Mapping[str, Any] | None, colour: bool = False
    ) -> list[str]:
        """Outright rules for the whole input: modality, colour, plane."""
        d = self.domain
        reasons = []
        modality = (context or {}).get("modality")
        allowed = [str(m).upper() for m in d.get("modalities") or []]
        if modality and allowed and str(modality).upper() not in allowed:
            reasons.append(
                f"modality {modality}, model trained on {', '.join(allowed)}"
            )
        if colour and d.get("color", "grey") == "grey":
            reasons.append("colour image, model trained on grey images")
        rule = d.get("orientation") or {}
        plane = slice_plane(context)
        if rule.get("plane") and plane is not None:
            name, oblique = plane
            limit = float(rule.get("max_oblique_deg", 30))
            if name != rule["plane"]:
                reasons.append(f"{name} slices, model trained on {rule['plane']}")
            elif oblique > limit:
                reasons.append(
                    f"slices {oblique:.0f} degrees oblique (model: at most "
                    f"{limit:.0f} from {rule['plane']})"
                )
        return reasons

    def assess(
        self,
        stats: np.ndarray,
        features: np.ndarray | None,
        rule_reasons: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """One assessment per prepared input.

        Args:
            stats: (N, 2) :func:`content_stats` of the prepared inputs.
            features: (N, F) penultimate features, or None.
            rule_reasons: outright reasons that hold for every item.

        Returns:
            ``[{"in_domain", "score", "threshold", "reasons"}, ...]``; score
            is the feature novelty (None without features).
        """
        n = len(stats)
        content = self.domain.get("content") or {}
        scores = (
            knn_novelty(features, self.reference, self.k)
            if features is not None and self.needs_features
            else None
        )
        out = []
        for i in range(n):
            reasons = list(rule_reasons) + content_reasons(stats[i], content)
            score = None if scores is None else float(scores[i])
            if score is not None and score > self.threshold:
                reasons.append(
                    f"unlike the training images (novelty {score:.3f} > "
                    f"{self.threshold:.3f})"
                )
            out.append(
                {
                    "in_domain": not reasons,
                    "score": None if score is None else round(score, 5),
                    "threshold": (
                        round(self.threshold, 5)
                        if np.isfinite(self.threshold)
                        else None
                    ),
                    "reasons": reasons,
                }
            )
        return out


def summarise(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One assessment for a volume from its slices': in the domain when any
    slice is; the score is the median over slices; reasons are counted."""
    if not items:
        return {"in_domain": False, "score": None, "threshold": None,
                "reasons": ["no slice to assess"]}  # fmt: skip
    inside = [bool(it["in_domain"]) for it in items]
    scores = [it["score"] for it in items if it.get("score") is not None]
    counts: dict[str, int] = {}
    for it in items:
        for r in it["reasons"]:
            key = r.split(" (")[0]
            counts[key] = counts.get(key, 0) + 1
    n = len(items)
    reasons = []
    if not any(inside):
        reasons.append("no slice is inside the model's domain")
    reasons += [f"{c} of {n} slices: {r}" for r, c in counts.items()]
    return {
        "in_domain": any(inside),
        "score": round(float(np.median(scores)), 5) if scores else None,
        "threshold": items[0].get("threshold"),
        "reasons": reasons,
        "slices_in_domain": int(sum(inside)),
    }
