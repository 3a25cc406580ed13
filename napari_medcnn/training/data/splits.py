"""Label checks and train/validation plans that keep patients whole.

Examples carry a *group* (hashed patient ID, else hashed study UID, else
the scan's key), so all slices of a scan, and all scans and studies of a
patient, fall on the same side of a split.  Very few labels get k-fold
cross-validation instead of one split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_PER_CLASS = 5
#: below this many examples (or 2x this per class), k-fold is used
KFOLD_BELOW = 40


class NotEnoughLabels(ValueError):
    """Too few classes or examples; the message says how many are needed."""


def check_labels(counts: dict[str, int], min_per_class: int = MIN_PER_CLASS) -> None:
    """Refuse to train on fewer than 2 classes or ``min_per_class`` each.

    Args:
        counts: examples per class name (classes with 0 included).

    Raises:
        NotEnoughLabels: naming how many more of which class are needed.
    """
    used = {c: n for c, n in counts.items() if n > 0}
    if len(used) < 2:
        have = ", ".join(f"{c}: {n}" for c, n in counts.items()) or "no labels"
        raise NotEnoughLabels(
            f"training needs at least 2 classes with at least {min_per_class} "
            f"labelled examples each; have {have}"
        )
    short = {c: min_per_class - n for c, n in counts.items() if n < min_per_class}
    if short:
        need = ", ".join(f"{k} more '{c}'" for c, k in short.items())
        raise NotEnoughLabels(
            f"each class needs at least {min_per_class} labelled examples: "
            f"label {need} (have {', '.join(f'{c}: {n}' for c, n in counts.items())})"
        )


@dataclass
class SplitPlan:
    """Train/validation index pairs: one for a hold-out split, k for k-fold."""

    folds: list[tuple[np.ndarray, np.ndarray]]
    method: str  # "group_holdout", "item_holdout", "group_kfold", "item_kfold"
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        """JSON-safe summary for the model card."""
        return {
            "method": self.method,
            "n_folds": len(self.folds),
            "n_train": [int(len(t)) for t, _ in self.folds],
            "n_val": [int(len(v)) for _, v in self.folds],
            "warnings": list(self.warnings),
        }


def _assign(groups, labels, k, seed) -> np.ndarray | None:
    """Fold number per item: groups dealt round-robin per majority class."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    majority = {g: int(np.bincount(labels[groups == g]).argmax()) for g in uniq}
    fold_of = {}
    for cls in np.unique(labels):
        gs = [g for g in uniq if majority[g] == cls]
        rng.shuffle(gs)
        start = int(rng.integers(k))
        for i, g in enumerate(gs):
            fold_of[g] = (start + i) % k
    folds = np.array([fold_of[g] for g in groups])
    ok = all(
        len(np.unique(labels[folds != f])) == len(np.unique(labels))
        and (folds == f).any()
        for f in range(k)
    )
    return folds if ok else None


def plan_split(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    val_fraction: float = 0.2,
    kfold: int | str | None = "auto",
    seed: int = 0,
) -> SplitPlan:
    """Plan validation by group (patient/study/scan), k-fold when labels are few.

    Args:
        labels: (N,) class indices.
        groups: (N,) group keys; None = every item its own group.
        val_fraction: validation share for a hold-out split.
        kfold: number of folds, None/0 for a hold-out split, or ``"auto"``:
            up to 5 folds when there are fewer than :data:`KFOLD_BELOW`
            examples or fewer than a quarter of that in some class, else a
            hold-out split.
        seed: shuffles groups.

    Returns:
        A :class:`SplitPlan`; falls back to item-level splits (with a
        warning) when there are too few groups for a split by group.
    """
    labels = np.asarray(labels)
    n = len(labels)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    counts = np.bincount(labels)
    if kfold == "auto":
        few = n < KFOLD_BELOW or counts[counts > 0].min() < KFOLD_BELOW // 4
        kfold = min(5, int(counts[counts > 0].min())) if few else None
    warnings: list[str] = []
    if kfold and kfold >= 2:
        folds = _assign(groups, labels, kfold, seed)
        method = "group_kfold"
        if folds is None:
            warnings.append(
                "too few scans/patients per class for folds by group: folds "
                "are by item, so validation is optimistic"
            )
            folds = _assign(np.arange(n), labels, kfold, seed)
            method = "item_kfold"
        idx = np.arange(n)
        pairs = [(idx[folds != f], idx[folds == f]) for f in range(kfold)]
        return SplitPlan(pairs, method, warnings)
    from napari_medcnn.training.data.dedup import group_split

    for g, method in ((groups, "group_holdout"), (np.arange(n), "item_holdout")):
        tr, va = group_split(g, labels, (1 - val_fraction, val_fraction), seed)
        if len(va) and set(labels[va]) == set(labels) == set(labels[tr]):
            if method == "item_holdout":
                warnings.append(
                    "too few scans/patients per class for a split by group: "
                    "validation items may share a scan with training items"
                )
            return SplitPlan([(tr, va)], method, warnings)
    raise NotEnoughLabels("cannot form a validation set holding every class")
