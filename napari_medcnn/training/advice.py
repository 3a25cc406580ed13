"""When to stop: "still improving", "plateaued" or "overfitting".

:func:`recommend` reads the per-epoch history that :func:`~.trainer.fit`
returns (``train_loss`` and ``val_loss`` per epoch) and says what more
epochs would likely do, with the reason in words for the UI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STILL_IMPROVING = "still improving"
PLATEAUED = "plateaued"
OVERFITTING = "overfitting"


@dataclass(frozen=True)
class Advice:
    """The verdict (one of the three constants) and a one-line reason."""

    verdict: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"verdict": self.verdict, "reason": self.reason}


def _slope(values: Sequence[float]) -> float:
    """Least-squares slope per epoch."""
    y = np.asarray(values, dtype=np.float64)
    x = np.arange(len(y), dtype=np.float64)
    return float(np.polyfit(x, y, 1)[0]) if len(y) > 1 else 0.0


def recommend(
    history: Sequence[dict[str, float]],
    window: int = 3,
    rel_tol: float = 0.02,
    overfit_rise: float = 0.10,
) -> Advice:
    """Judge the learning curves.

    Args:
        history: one dict per epoch with ``train_loss`` and ``val_loss``.
        window: recent epochs whose trend is judged.
        rel_tol: a validation-loss change below this fraction of the best
            loss per epoch counts as flat.
        overfit_rise: the last validation loss this fraction above its
            minimum, while training loss still falls, is overfitting.

    Returns:
        :class:`Advice`; with fewer than 3 epochs always "still improving"
        (too early to tell).
    """
    val = [float(h["val_loss"]) for h in history if "val_loss" in h]
    train = [float(h["train_loss"]) for h in history if "train_loss" in h]
    if len(val) < 3:
        return Advice(STILL_IMPROVING, f"only {len(val)} epoch(s): too early to tell")
    best_i = int(np.argmin(val))
    best = max(val[best_i], 1e-8)
    recent_val = val[-window:]
    recent_train = train[-window:] if len(train) >= window else train
    since_best = len(val) - 1 - best_i
    rise = (val[-1] - best) / best
    train_falling = _slope(recent_train) < -rel_tol * max(recent_train[0], 1e-8) / 2
    if since_best >= 2 and rise > overfit_rise and train_falling:
        return Advice(
            OVERFITTING,
            f"validation loss is {100 * rise:.0f}% above its best (epoch "
            f"{best_i + 1}) while training loss still falls: use the best "
            "checkpoint, add labels or augmentation",
        )
    slope = _slope(recent_val)
    if slope < -rel_tol * best and since_best <= 1:
        return Advice(
            STILL_IMPROVING,
            f"validation loss fell {abs(slope):.3g} per epoch over the last "
            f"{len(recent_val)} epochs: more epochs should help",
        )
    return Advice(
        PLATEAUED,
        f"validation loss has not improved much since epoch {best_i + 1}: "
        "more epochs will not help; more labels might",
    )
