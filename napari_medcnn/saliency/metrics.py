"""Trust metrics for saliency maps, computed on the model-input grid.

* **Deletion / insertion** (Petsiuk et al. 2018, RISE): the target class
  probability as the most salient locations are removed from the image
  (set to the baseline: the blurred image by default, or "black": the
  darkest value of the model input, per channel, not 0, which is mid-grey
  for z-scored inputs) or inserted into the baseline image, over ``steps``
  equal fractions, batched.  The area under each curve (fraction of
  locations on x, probability on y, trapezoid, in [0, 1]) is compared with
  the same curves for random orders of the same locations (mean over
  ``n_random`` orders).  A faithful map deletes faster (``deletion_auc`` <
  ``deletion_auc_random``) and inserts faster (``insertion_auc`` >
  ``insertion_auc_random``) than chance.
* **Model randomisation** (Adebayo et al. 2018, "Sanity checks for
  saliency maps"): the Spearman rank correlation of |map| from the trained
  model with |map| from a copy whose weights are re-initialised (each
  module's own ``reset_parameters``, seeded).  ``cascading`` re-initialises
  the layers from the output towards the input, one more at a time, and
  reports the correlation after each; ``full`` re-initialises all at once.
  A map that stays correlated (>= ``threshold``) with the trained one does
  not depend on what the model learned (an edge detector), and is flagged.
  A constant or near-constant map (trained or randomised) has no rank order
  to compare: the check is then ``inconclusive``, never ``passed``.

Each check that a map fails (deletion no faster than random, insertion no
faster than random, randomisation failed or inconclusive) adds a plain
``TRUST CHECK ...`` message to ``warnings`` (:func:`trust_warnings`).

A location is a spatial position: all channels go together.

* **Slice deletion / insertion** (:func:`slice_deletion_insertion`): the
  same test for a slice-importance curve (:mod:`.slices`) with whole
  slices as the locations: slices are replaced by the fill (each
  channel's minimum over the volume, as occlusion does) most important
  first, or put back into the all-fill volume, over ``steps`` equal
  fractions of the slices; AUCs as above, against ``n_random`` random
  orders (seeded), and the fraction of those orders each curve beats.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from napari_medcnn.saliency.base import (
    blur,
    default_blur_sigma,
    fresh_input,
    model_device,
    model_session,
)
from napari_medcnn.saliency.targets import target_index

#: correlation at or above which the randomisation check warns
RANDOMIZATION_THRESHOLD = 0.5


def _scores(model, xs: torch.Tensor, target, temperature: float, batch: int):
    """Target class probability (softmax of logits / temperature) per input;
    a custom target callable's raw score."""
    idx = target_index(target)
    out = []
    with model_session(model), torch.no_grad():
        for part in xs.split(batch):
            logits = model(part).float()
            if idx is None:
                out.append(target(logits))
            else:
                out.append(torch.softmax(logits / temperature, dim=1)[:, idx])
    return torch.cat(out).cpu().numpy()


def _curve(model, x, fill, order, steps, target, temperature, batch) -> np.ndarray:
    """Scores with the first ``k/steps`` of ``order`` taken from ``fill``
    (and the rest from ``x``), k = 0..steps."""
    n = order.size
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.as_tensor(order)] = torch.arange(n)
    rank = rank.reshape(x.shape[2:]).to(x.device)
    counts = np.round(np.linspace(0, n, steps + 1)).astype(int)
    scores = []
    for start in range(0, steps + 1, batch):
        ks = torch.as_tensor(counts[start : start + batch], device=x.device)
        mask = (rank[None] < ks.reshape(-1, *[1] * rank.dim()))[:, None]
        xs = torch.where(mask, fill, x)
        scores.append(_scores(model, xs, target, temperature, batch))
    return np.concatenate(scores)


def _auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, dx=1.0 / (len(curve) - 1)))


def deletion_insertion(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    saliency: np.ndarray,
    target,
    *,
    steps: int = 32,
    baseline: str = "blurred",
    blur_sigma: float | None = None,
    n_random: int = 3,
    batch_size: int = 33,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Deletion and insertion AUCs of a map, and of random orders.

    Args:
        model: the classifier.
        x: one model input (C, *spatial), as prepared for the model.
        saliency: (*spatial) map on the same grid (higher = more salient).
        target: a ``ClassTarget`` (probability of its class is scored) or a
            callable ``logits -> (B,)`` (its raw score is).
        steps: fractions of locations, 0 to all in ``steps`` steps.
        baseline: what deleted locations become and insertion starts from:
            ``blurred`` (default: Gaussian, ``blur_sigma`` voxels, default
            10 % of the in-plane side) or ``black`` (each channel's minimum
            over the input, its darkest value: 0 only for [0, 1] inputs;
            insertion then starts from that flat image).
        n_random: random orders averaged for the reference AUCs.
        batch_size: perturbed inputs per forward pass.
        temperature: the card's calibration temperature.

    Returns:
        dict with ``deletion_auc``, ``deletion_auc_random``,
        ``insertion_auc``, ``insertion_auc_random`` (all in [0, 1] for
        class targets), ``deletion_curve``, ``insertion_curve`` (lists,
        ``steps + 1`` values) and ``steps``.
    """
    dev = model_device(model)
    xt = fresh_input(np.asarray(x) if not torch.is_tensor(x) else x, dev)[None]
    sal = np.asarray(saliency, dtype=np.float64)
    if sal.shape != tuple(xt.shape[2:]):
        raise ValueError(f"map {sal.shape} does not match input {tuple(xt.shape)}")
    if baseline == "blurred":
        sigma = default_blur_sigma(xt.shape[2:]) if blur_sigma is None else blur_sigma
        fill = blur(xt, sigma)
    elif baseline == "black":
        fill = black_fill(xt)
    else:
        raise ValueError(f"baseline must be 'blurred' or 'black', not {baseline!r}")
    order = np.argsort(-sal.ravel(), kind="stable")
    args = (steps, target, temperature, batch_size)
    deletion = _curve(model, xt, fill, order, *args)
    insertion = _curve(model, fill, xt, order, *args)
    rng = np.random.default_rng(seed)
    rand_del, rand_ins = [], []
    for _ in range(n_random):
        perm = rng.permutation(order.size)
        rand_del.append(_auc(_curve(model, xt, fill, perm, *args)))
        rand_ins.append(_auc(_curve(model, fill, xt, perm, *args)))
    return {
        "deletion_auc": _auc(deletion),
        "deletion_auc_random": float(np.mean(rand_del)),
        "insertion_auc": _auc(insertion),
        "insertion_auc_random": float(np.mean(rand_ins)),
        "deletion_curve": deletion.tolist(),
        "insertion_curve": insertion.tolist(),
        "steps": int(steps),
    }


def slice_deletion_insertion(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    importance: np.ndarray,
    target,
    *,
    steps: int = 32,
    fill: str = "minimum",
    n_random: int = 8,
    batch_size: int = 16,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Deletion and insertion of whole slices, in importance order and in
    random orders: does a slice-importance curve find the slices the
    decision rests on?

    Args:
        model: takes (B, C, S, H, W).
        x: one model input (C, S, H, W) or (1, C, S, H, W).
        importance: (S,) per-slice importance (higher = more important).
        target: a ``ClassTarget`` or a class index (its probability is
            scored).
        steps: fractions of the slices, 0 to all in ``min(steps, S)``
            steps.
        fill: what a deleted slice becomes (``minimum``: each channel's
            smallest value over the volume; ``interpolate``: the kept
            neighbours' interpolation; see ``slices.fill_slices``);
            insertion starts from the volume with every slice deleted.
        n_random: random orders (seeds ``seed``, ``seed + 1``...).
        batch_size: volumes per forward pass.
        temperature: the card's calibration temperature.

    Returns:
        dict with ``deletion_auc``, ``deletion_auc_random`` (mean over the
        random orders), ``insertion_auc``, ``insertion_auc_random`` (all
        in [0, 1]), ``deletion_beats_random_fraction`` (the fraction of
        random orders whose deletion AUC is higher: the importance deletes
        faster), ``insertion_beats_random_fraction`` (lower insertion AUC),
        ``deletion_curve``, ``insertion_curve`` (``steps + 1`` values),
        ``steps``, ``fill``, ``n_random``, ``trust_checks`` (``deletion``
        and ``insertion``: ``passed`` when the AUC beats the random mean)
        and ``warnings`` (one ``TRUST CHECK FAILED`` message per failed
        check).
    """
    from napari_medcnn.saliency.slices import SliceScorer

    scorer = SliceScorer(model, x, fill, temperature, batch_size)
    s = scorer.n_slices
    imp = np.asarray(importance, dtype=np.float64).ravel()
    if imp.shape != (s,):
        raise ValueError(f"importance has {imp.size} values for {s} slices")
    idx = target_index(target)
    if idx is None:
        idx = int(target)
    n_steps = max(1, min(int(steps), s))
    counts = np.round(np.linspace(0, s, n_steps + 1)).astype(int)

    def curves(order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rank = np.empty(s, int)
        rank[order] = np.arange(s)
        gone = rank[None] < counts[:, None]  # (steps + 1, S): deleted slices
        probs = scorer.probabilities(np.concatenate([gone, ~gone]), idx)
        return probs[: len(counts)], probs[len(counts) :]

    deletion, insertion = curves(np.argsort(-imp, kind="stable"))
    rng = np.random.default_rng(seed)
    rand_del, rand_ins = [], []
    for _ in range(n_random):
        d, i = curves(rng.permutation(s))
        rand_del.append(_auc(d))
        rand_ins.append(_auc(i))
    out: dict[str, Any] = {
        "deletion_auc": _auc(deletion),
        "deletion_auc_random": float(np.mean(rand_del)) if rand_del else None,
        "insertion_auc": _auc(insertion),
        "insertion_auc_random": float(np.mean(rand_ins)) if rand_ins else None,
        "deletion_curve": deletion.tolist(),
        "insertion_curve": insertion.tolist(),
        "steps": n_steps,
        "fill": fill,
        "n_random": int(n_random),
    }
    if rand_del:
        out["deletion_beats_random_fraction"] = float(
            np.mean(np.asarray(rand_del) > out["deletion_auc"])
        )
        out["insertion_beats_random_fraction"] = float(
            np.mean(np.asarray(rand_ins) < out["insertion_auc"])
        )
        d_ok = out["deletion_auc"] < out["deletion_auc_random"]
        i_ok = out["insertion_auc"] > out["insertion_auc_random"]
        out["trust_checks"] = {
            "deletion": "passed" if d_ok else "failed",
            "insertion": "passed" if i_ok else "failed",
        }
    out["warnings"] = slice_trust_warnings(out)
    return out


def slice_trust_warnings(metrics: dict[str, Any]) -> list[str]:
    """The ``TRUST CHECK FAILED`` messages of :func:`slice_deletion_insertion`
    (deletion AUC at or above random, insertion AUC at or below)."""
    return order_warnings(metrics, "the most important slices", "the slice importance")


def order_warnings(metrics: dict[str, Any], items: str, subject: str) -> list[str]:
    """``TRUST CHECK FAILED`` messages of a deletion/insertion result:
    removing ``items`` first lowers the score no faster than a random
    order (deletion AUC >= random), or adding them first raises it no
    faster (insertion AUC <= random).  Checks not run say nothing."""
    out = []
    d, dr = metrics.get("deletion_auc"), metrics.get("deletion_auc_random")
    if d is not None and dr is not None and d >= dr:
        out.append(
            f"TRUST CHECK FAILED: deleting {items} first lowers the score no "
            f"faster than random order (deletion AUC {d:.3f} >= random "
            f"{dr:.3f}); {subject} may not show what drives the model"
        )
    i, ir = metrics.get("insertion_auc"), metrics.get("insertion_auc_random")
    if i is not None and ir is not None and i <= ir:
        out.append(
            f"TRUST CHECK FAILED: inserting {items} first raises the score no "
            f"faster than random order (insertion AUC {i:.3f} <= random "
            f"{ir:.3f}); {subject} may not show what drives the model"
        )
    return out


def black_fill(x: torch.Tensor) -> torch.Tensor:
    """A flat image of each channel's darkest value over (B, C, *spatial)
    ``x``: "black" for any intensity normalisation."""
    dims = tuple(range(2, x.dim()))
    return x.amin(dim=dims, keepdim=True).expand_as(x).clone()


#: a map whose range is below this fraction of its largest |value|, or
#: whose most common value covers more than NEAR_CONSTANT_SHARE of its
#: locations, has no rank order worth comparing
NEAR_CONSTANT_RTOL = 1e-3
NEAR_CONSTANT_SHARE = 0.99


def near_constant(m: np.ndarray) -> bool:
    """Whether a map is constant or nearly so: its range is below
    ``NEAR_CONSTANT_RTOL`` of its largest magnitude (or it is all zero),
    or one value fills more than ``NEAR_CONSTANT_SHARE`` of it (e.g. a
    rectified CAM that is 0 almost everywhere)."""
    a = np.ravel(np.asarray(m, dtype=np.float64))
    if a.size == 0 or not np.isfinite(a).all():
        return True
    peak = float(np.abs(a).max())
    if peak == 0 or float(np.ptp(a)) <= NEAR_CONSTANT_RTOL * peak:
        return True
    _, counts = np.unique(a, return_counts=True)
    return counts.max() > NEAR_CONSTANT_SHARE * a.size


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened; ties averaged);
    0 when either map is constant (e.g. a randomised model's all-zero
    Grad-CAM), which has no rank order to share."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def parameter_layers(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Modules with their own parameters and ``reset_parameters``, in the
    order they run on ``x`` (one forward pass)."""
    names = {
        m: n
        for n, m in model.named_modules()
        if hasattr(m, "reset_parameters") and list(m.parameters(recurse=False))
    }
    order: list[nn.Module] = []

    def seen(module, _inp, _out):
        if module not in order:
            order.append(module)

    handles = [m.register_forward_hook(seen) for m in names]
    try:
        with model_session(model), torch.no_grad():
            model(fresh_input(x, model_device(model)))
    finally:
        for h in handles:
            h.remove()
    return [(names[m], m) for m in order]


def randomized_copy(
    model: nn.Module, layers: Sequence[str], seed: int = 0
) -> nn.Module:
    """A deep copy of ``model`` with the named modules re-initialised
    (``reset_parameters``; BatchNorm also resets its running statistics)."""
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in layers:
            modules[name].reset_parameters()
    return clone


def randomization_check(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    make_explainer: Callable[[nn.Module], Any],
    target,
    *,
    mode: str = "cascading",
    max_stages: int = 8,
    threshold: float = RANDOMIZATION_THRESHOLD,
    sign: str = "absolute",
    seed: int = 0,
    reference: np.ndarray | None = None,
) -> dict[str, Any]:
    """Model-randomisation sanity check (Adebayo et al. 2018).

    Args:
        x: one model input (C, *spatial).
        make_explainer: ``model -> Explainer`` (same method and parameters).
        target: a resolved target (``ClassTarget`` or callable).
        mode: ``cascading`` (from the output layer inwards, cumulative; at
            most ``max_stages`` evenly spaced stages, the last being all
            layers) or ``full`` (all layers at once).
        threshold: Spearman correlation at or above which it warns.
        sign: maps are compared as |map| (``absolute``, default: the sign
            of an attribution flips freely under random weights), clipped
            at 0 (``positive``, as CAM overlays) or raw (``signed``).
        reference: the trained model's map (*spatial), if already computed.

    Returns:
        dict with ``correlation`` (after randomising every layer),
        ``stages`` (list of [last layer randomised, correlation]), ``mode``,
        ``threshold``, ``status``: ``passed`` (correlation < threshold),
        ``failed`` (>= threshold) or ``inconclusive`` (the trained map or
        the fully randomised one is constant or nearly so:
        :func:`near_constant`, so there is no rank order to compare),
        ``passed`` (True only for status ``passed``), ``constant``
        (``{"trained": bool, "randomized": bool}``) and ``warning`` (a
        message, or None when passed).
    """
    xt = fresh_input(np.asarray(x) if not torch.is_tensor(x) else x, "cpu")[None]

    def saliency(m: nn.Module) -> np.ndarray:
        with make_explainer(m) as e:
            out = e.attribute(xt, target)[0].numpy()
        if sign == "absolute":
            return np.abs(out)
        return np.maximum(out, 0) if sign == "positive" else out

    ref = saliency(model) if reference is None else np.asarray(reference)
    layers = [n for n, _ in parameter_layers(model, xt)][::-1]
    if mode == "full":
        cuts = [len(layers)]
    elif mode == "cascading":
        k = min(max_stages, len(layers))
        cuts = sorted({int(round(v)) for v in np.linspace(1, len(layers), k)})
    else:
        raise ValueError(f"mode must be 'cascading' or 'full', not {mode!r}")
    stages = []
    rand = ref
    for cut in cuts:
        rand = saliency(randomized_copy(model, layers[:cut], seed))
        stages.append([layers[cut - 1], spearman(ref, rand)])
    rho = stages[-1][1]
    constant = {"trained": near_constant(ref), "randomized": near_constant(rand)}
    warning = None
    if constant["trained"] or constant["randomized"]:
        status = "inconclusive"
        which = " and ".join(
            name for name, flat in (("trained", constant["trained"]),
                                    ("randomised", constant["randomized"])) if flat
        )  # fmt: skip
        warning = (
            f"randomisation check inconclusive: the {which} model's map is "
            "constant or nearly so, so there is no rank order to compare; "
            "this check cannot vouch for the map"
        )
    elif rho >= threshold:
        status = "failed"
        warning = (
            f"saliency barely changes when the model's weights are randomised "
            f"(Spearman {rho:.2f} >= {threshold}); it may show image edges "
            "rather than what the model learned"
        )
    else:
        status = "passed"
    return {
        "correlation": rho,
        "stages": stages,
        "mode": mode,
        "threshold": threshold,
        "status": status,
        "passed": status == "passed",
        "constant": constant,
        "warning": warning,
    }


def trust_warnings(metrics: dict[str, Any]) -> list[str]:
    """One plain message per trust check that a map failed: deletion AUC
    at or above random (``>=``), insertion AUC at or below random
    (``<=``), randomisation check failed or inconclusive.  Checks not run
    say nothing.  Messages start ``TRUST CHECK FAILED:`` (or
    ``TRUST CHECK INCONCLUSIVE:``)."""
    out = order_warnings(metrics, "the map's most salient pixels", "the map")
    rand = metrics.get("randomization") or {}
    status = rand.get("status")
    if status == "failed":
        out.append(f"TRUST CHECK FAILED: {rand.get('warning')}")
    elif status == "inconclusive":
        out.append(f"TRUST CHECK INCONCLUSIVE: {rand.get('warning')}")
    return out


def trust_metrics(
    model: nn.Module,
    x: np.ndarray,
    saliency: np.ndarray,
    target,
    make_explainer: Callable[[nn.Module], Any],
    names: Sequence[str] = ("deletion_insertion", "randomization"),
    *,
    sign: str = "absolute",
    temperature: float = 1.0,
    **options: Any,
) -> dict[str, Any]:
    """The metrics ``explain(metrics=...)`` asks for, in one dict.

    ``options`` go to :func:`deletion_insertion` (``steps``, ``baseline``,
    ``n_random``...) and :func:`randomization_check` (``randomization_mode``
    as ``mode``, ``threshold``, ``max_stages``); ``warnings`` lists the
    failed checks (:func:`trust_warnings`), and ``trust_checks`` each
    check's verdict: ``{"deletion": "passed"|"failed", "insertion": ...,
    "randomization": "passed"|"failed"|"inconclusive"}`` (checks run only).
    """
    unknown = set(names) - {"deletion_insertion", "randomization"}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}")
    out: dict[str, Any] = {"warnings": []}
    di_keys = ("steps", "baseline", "blur_sigma", "n_random", "batch_size", "seed")
    if "deletion_insertion" in names:
        di = {k: v for k, v in options.items() if k in di_keys}
        out.update(
            deletion_insertion(
                model, x, saliency, target, temperature=temperature, **di
            )
        )
    if "randomization" in names:
        rc = {
            k: options[k] for k in ("threshold", "max_stages", "seed") if k in options
        }
        rc["mode"] = options.get("randomization_mode", "full")
        check = randomization_check(
            model, x, make_explainer, target, sign=sign, reference=None, **rc
        )
        out["randomization"] = check
    checks: dict[str, str] = {}
    if "deletion_auc" in out:
        d_ok = out["deletion_auc"] < out["deletion_auc_random"]
        i_ok = out["insertion_auc"] > out["insertion_auc_random"]
        checks["deletion"] = "passed" if d_ok else "failed"
        checks["insertion"] = "passed" if i_ok else "failed"
    if "randomization" in out:
        checks["randomization"] = out["randomization"]["status"]
    out["trust_checks"] = checks
    out["warnings"] = trust_warnings(out)
    return out
