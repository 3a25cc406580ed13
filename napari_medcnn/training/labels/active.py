"""Active learning: which unlabelled slice or image to label next.

Uncertainty is the entropy of the predicted class probabilities or, for
models with dropout, the mutual information between prediction and weights
estimated by MC dropout (BALD: the entropy of the mean prediction minus the
mean entropy of the dropout samples).  Both are in nats; higher = more
informative.  :func:`rank_uncertainty` ranks prepared inputs;
:func:`rank_candidates` prepares the unlabelled slices/images of open
scans with the card's preprocessing and ranks them ("Next case").
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

METHODS = ("auto", "entropy", "mutual_information")


def entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each row of (N, K) probabilities."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(-1)


def mutual_information(mc_probs: np.ndarray) -> np.ndarray:
    """BALD score (nats) from (T, N, K) MC-dropout probabilities."""
    mc = np.asarray(mc_probs, np.float64)
    return entropy(mc.mean(0)) - entropy(mc).mean(0)


def has_dropout(model: nn.Module) -> bool:
    """True when the model has a dropout layer with p > 0."""
    return any(
        isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
        for m in model.modules()
    )


def _set_dropout(model: nn.Module, on: bool) -> None:
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train(on)


@dataclass
class Ranking:
    """Items ranked most informative first.

    Attributes:
        order: indices into the candidates, most informative first.
        scores: (N,) uncertainty in nats (same order as the candidates).
        probs: (N, K) mean predicted probabilities.
        method: ``entropy`` or ``mutual_information``.
        candidates: what each index stands for (see :func:`rank_candidates`).
    """

    order: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    method: str
    candidates: list[Any] | None = None

    def best(self, n: int = 1) -> list[Any]:
        """The ``n`` most informative candidates (or indices)."""
        top = self.order[:n].tolist()
        return [self.candidates[i] for i in top] if self.candidates else top


def rank_uncertainty(
    model: nn.Module,
    x: np.ndarray,
    *,
    method: str = "auto",
    mc_samples: int = 20,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
) -> Generator[tuple[str, int, int], None, Ranking]:
    """Rank prepared inputs ``x`` (N, C, ...) by uncertainty.

    Args:
        method: ``entropy``, ``mutual_information`` (needs dropout) or
            ``auto`` (mutual information when the model has dropout).
        mc_samples: dropout samples for mutual information.
        temperature: the card's calibration temperature.

    Yields:
        ``("rank", done, total)`` per forward pass.
    """
    from napari_medcnn.models.calibration import softmax

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if method == "auto":
        method = "mutual_information" if has_dropout(model) else "entropy"
    if method == "mutual_information" and not has_dropout(model):
        raise ValueError("MC-dropout mutual information needs a model with dropout")
    dev = next(model.parameters()).device
    passes = mc_samples if method == "mutual_information" else 1
    n_batches = -(-len(x) // batch_size)
    total = passes * n_batches
    torch.manual_seed(seed)
    out = []
    yield ("rank", 0, total)
    try:
        _set_dropout(model, method == "mutual_information")
        with torch.inference_mode():
            for t in range(passes):
                logits = []
                for b in range(n_batches):
                    xb = torch.from_numpy(
                        np.ascontiguousarray(x[b * batch_size : (b + 1) * batch_size])
                    )
                    logits.append(model(xb.to(dev)).float().cpu().numpy())
                    yield ("rank", t * n_batches + b + 1, total)
                out.append(softmax(np.concatenate(logits), temperature))
    finally:
        model.eval()
    mc = np.stack(out)
    scores = entropy(mc[0]) if passes == 1 else mutual_information(mc)
    order = np.argsort(-scores, kind="stable")
    return Ranking(order, scores, mc.mean(0), method)


@dataclass(frozen=True)
class Candidate:
    """An unlabelled item: ``scan`` (index into the scans given), and its
    ``slice`` index (None for a 2D image)."""

    scan: int
    slice: int | None


def rank_candidates(
    scans: Sequence[dict[str, Any]],
    model: Any = None,
    **kwargs: Any,
) -> Generator[tuple[str, int, int], None, Ranking]:
    """Rank the unlabelled slices/images of open scans ("Next case").

    Args:
        scans: one dict per scan: ``images`` (list of channel arrays, the
            card's channel order), optional ``spacing`` (mm), ``rgb`` and
            ``store`` (its :class:`~.labels.LabelStore`; labelled items are
            skipped).
        model: checkpoint path, LoadedModel or None (the default model).
        **kwargs: passed to :func:`rank_uncertainty`.

    Returns:
        A :class:`Ranking` whose ``candidates`` are :class:`Candidate`.
    """
    from napari_medcnn.models.checkpoint import resolve_model
    from napari_medcnn.preprocessing.batch import prepare_slices
    from napari_medcnn.preprocessing.record import prepare

    loaded = resolve_model(model)
    record = loaded.card.preprocessing
    xs, cands = [], []
    for k, s in enumerate(scans):
        images = [np.asarray(im) for im in s["images"]]
        rgb = bool(s.get("rgb", False))
        sp = s.get("spacing")
        inplane = tuple(sp[-2:]) if sp is not None else (1.0, 1.0)
        store = s.get("store")
        if images[0].ndim - rgb == 2:
            if store is None or store.image_label is None:
                xs.append(prepare(images, record, inplane)[None])
                cands.append(Candidate(k, None))
            continue
        todo = [
            i
            for i in range(images[0].shape[0])
            if store is None or i not in store.slices
        ]
        if todo:
            xs.append(prepare_slices([im[todo] for im in images], record, inplane, rgb))
            cands += [Candidate(k, i) for i in todo]
    if not xs:
        raise ValueError("every slice and image is labelled: nothing to rank")
    kwargs.setdefault("temperature", loaded.card.temperature)
    net = loaded.model
    if has_dropout(net) and kwargs.get("method", "auto") != "entropy":
        import copy

        # MC dropout switches layers to train mode: never on the cached
        # model that classify and saliency may be using at the same time
        net = copy.deepcopy(net)
    ranking = yield from rank_uncertainty(net, np.concatenate(xs), **kwargs)
    ranking.candidates = cands
    return ranking
