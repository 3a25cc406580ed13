"""Targets: what a saliency map explains, as small callables.

``target(logits) -> scores``: logits of shape (B, K), one score per example,
shape (B,).  :class:`ClassTarget` picks a class; :class:`PredictedClass`
is resolved to the predicted one once the model has run; any callable of
that shape works (a custom score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


class ClassTarget:
    """The score of class ``index``: ``target(logits) -> (B,)``.

    Args:
        index: the class, in the model's output order.
        name: the class name, for display.
        score: ``logit``: the raw logit (Grad-CAM's definition).
            ``log_prob``: the class's log-probability, ``log
            softmax(logits)[:, index]``: evidence shared by all classes (a
            logit offset) cancels and competing classes count; computed as
            ``-softplus(logsumexp_k(l_k - l_index))`` over the other
            classes k, whose gradient keeps its precision when the
            probability rounds to 1 in float32.  None (default): the
            method's choice (``Explainer.default_score``); a bare call
            scores the logit.
    """

    SCORES = ("log_prob", "logit", None)

    def __init__(self, index: int, name: str | None = None, score: str | None = None):
        if score not in self.SCORES:
            raise ValueError(f"score must be one of {self.SCORES}, not {score!r}")
        self.index = int(index)
        self.name = name
        self.score = score

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.score != "log_prob":
            return logits[:, self.index]
        # log p = -softplus(logsumexp_{k != index}(l_k - l_index)): no
        # 1 - p cancellation, so the gradient survives p rounding to 1
        others = logits - logits[:, self.index : self.index + 1]
        skip = torch.zeros_like(others, dtype=torch.bool)
        skip[:, self.index] = True
        z = torch.logsumexp(others.masked_fill(skip, float("-inf")), 1)
        return -torch.nn.functional.softplus(z)

    def __repr__(self) -> str:
        return f"ClassTarget({self.index}, score={self.score!r})"


class PredictedClass:
    """Placeholder for "the predicted class"; :func:`resolve_target` turns it
    into a :class:`ClassTarget` once the model has run."""

    def __repr__(self) -> str:
        return "PredictedClass()"


Target = Callable[[torch.Tensor], torch.Tensor]


def check_target(target: Any, classes: Sequence[str], score: str | None = None) -> Any:
    """Validate a user's target against the model's classes.

    Args:
        target: None (predicted class), a class index, a class name, a
            :class:`ClassTarget` or any callable ``logits -> (B,)`` scores.
        classes: the model's class names, in output order.
        score: the :class:`ClassTarget` score for an index, a name or a
            ClassTarget without one (None: each method's default).

    Returns:
        a :class:`ClassTarget`, :class:`PredictedClass` or the callable.

    Raises:
        ValueError: a class that does not exist (the message lists them).
    """
    valid = ", ".join(f"{i} ({n!r})" for i, n in enumerate(classes))
    if target is None or isinstance(target, PredictedClass):
        return PredictedClass()
    if isinstance(target, str):
        if target not in classes:
            raise ValueError(f"no class named {target!r}; valid classes: {valid}")
        return ClassTarget(list(classes).index(target), target, score)
    if isinstance(target, (int, np.integer)):
        target = ClassTarget(int(target), score=score)
    if isinstance(target, ClassTarget):
        if not 0 <= target.index < len(classes):
            raise ValueError(
                f"target class {target.index} does not exist; valid classes: {valid}"
            )
        return ClassTarget(target.index, classes[target.index], target.score or score)
    if not callable(target):
        raise TypeError(f"target must be a class index, name or callable: {target!r}")
    return target


def resolve_target(
    target: Any, probabilities: np.ndarray, classes, score: str | None = None
) -> Any:
    """Replace :class:`PredictedClass` by the class with the highest mean
    probability over ``probabilities`` (N, K), scored by ``score``."""
    if isinstance(target, PredictedClass):
        idx = int(
            np.argmax(np.asarray(probabilities).reshape(-1, len(classes)).mean(0))
        )
        return ClassTarget(idx, classes[idx], score)
    return target


def target_index(target: Any) -> int | None:
    """The class index of a target, or None for a custom callable."""
    return getattr(target, "index", None)
