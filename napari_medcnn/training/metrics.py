"""Classification metrics and temperature calibration (pure numpy/torch).

Probabilities are (N, K) arrays; labels are (N,) class indices.
"""

from __future__ import annotations

import numpy as np

from napari_medcnn.models.calibration import softmax


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of argmax predictions equal to ``labels``."""
    return float(np.mean(np.argmax(probs, axis=1) == labels)) if len(labels) else 0.0


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of binary ``positive`` (0/1) by ``scores``.

    Mann-Whitney U with tie correction; NaN when one class is absent.
    """
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive).astype(bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    _, start, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = start + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def macro_auc(probs: np.ndarray, labels: np.ndarray) -> float:
    """One-vs-rest AUC averaged over classes (binary: AUC of class 1)."""
    k = probs.shape[1]
    if k == 2:
        return roc_auc(probs[:, 1], labels == 1)
    aucs = [roc_auc(probs[:, c], labels == c) for c in range(k)]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def expected_calibration_error(
    probs: np.ndarray, labels: np.ndarray, n_bins: int = 15
) -> float:
    """ECE of the top-class confidence with equal-width bins (Guo et al. 2017)."""
    conf = probs.max(axis=1)
    correct = np.argmax(probs, axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts, rows = true class, columns = predicted class."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def per_class_metrics(cm: np.ndarray) -> list[dict[str, float]]:
    """Precision, recall (sensitivity) and F1 per class from a confusion matrix."""
    out = []
    for c in range(cm.shape[0]):
        tp = cm[c, c]
        fp = cm[:, c].sum() - tp
        fn = cm[c, :].sum() - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        out.append(
            {
                "precision": float(prec),
                "recall": float(rec),
                "f1": float(f1),
                "support": int(cm[c, :].sum()),
            }
        )
    return out


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature T > 0 minimising the NLL of ``softmax(logits / T)``.

    A 1-D search over log T (golden section on [-3, 3]); robust and exact
    enough for calibration, with no optimiser state.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-12)))

    a, b = -3.0, 3.0
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(80):
        if nll(c) < nll(d):
            b = d
        else:
            a = c
        c, d = b - g * (b - a), a + g * (b - a)
    return float(np.exp((a + b) / 2))


def summarize(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict:
    """Accuracy, AUC, ECE and the confusion matrix at ``temperature``."""
    probs = softmax(logits, temperature)
    k = probs.shape[1]
    cm = confusion_matrix(labels, probs.argmax(1), k)
    return {
        "n": int(len(labels)),
        "accuracy": accuracy(probs, labels),
        "auc": macro_auc(probs, labels),
        "ece": expected_calibration_error(probs, labels),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class_metrics(cm),
    }
