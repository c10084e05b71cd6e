"""Losses on aggregated scores and the task metrics, all computed by scikit-learn."""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as skm

LOWER_IS_BETTER = {"loss", "mse", "mae"}
METRICS = {"single": ("accuracy", "macro_f1"), "multi": ("map", "macro_f1", "micro_f1"),
           "regression": ("mse", "mae", "r2")}


def scores_loss(task: str, y: np.ndarray, scores: np.ndarray) -> float:
    """The training loss, from final scores (probabilities, or standardised predictions for
    regression) rather than logits, so it also applies to several views averaged."""
    if task == "single":
        p = np.clip(scores[np.arange(len(y)), y], 1e-12, 1.0)
        return float(-np.log(p).mean())
    if task == "multi":
        p = np.clip(scores, 1e-12, 1 - 1e-12)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    return float(np.mean((scores - y) ** 2))


def compute_metrics(task: str, y: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """single: y int [N], scores probs [N, C] -> accuracy, macro_f1.
    multi: y {0,1} [N, C], scores probs [N, C] -> map, macro_f1, micro_f1.
    regression: y [N], scores predictions [N] -> mse, mae, r2."""
    if task == "single":
        pred = scores.argmax(1)
        out = {"accuracy": skm.accuracy_score(y, pred),
               # macro over the classes present in y or pred (scikit-learn's default)
               "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=0)}
    elif task == "multi":
        pred = (scores >= threshold).astype(int)
        has_pos = y.sum(0) > 0  # average precision is undefined for a class with no positives
        ap = skm.average_precision_score(y[:, has_pos], scores[:, has_pos], average="macro") \
            if has_pos.any() else float("nan")
        out = {"map": ap,
               # classes with neither positives nor predictions are left out of the average
               "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=np.nan),
               "micro_f1": skm.f1_score(y, pred, average="micro", zero_division=0)}
    else:
        out = {"mse": skm.mean_squared_error(y, scores), "mae": skm.mean_absolute_error(y, scores),
               # undefined for fewer than two videos or a constant target (scikit-learn says 0 or 1)
               "r2": skm.r2_score(y, scores) if len(y) > 1 and np.ptp(y) > 0 else float("nan")}
    return {k: clean(v) for k, v in out.items()}


def clean(v) -> float | None:
    """A JSON-safe float: NaN becomes null (plain JSON has no NaN)."""
    v = float(v)
    return None if math.isnan(v) else v


def better(name: str, new: float | None, best: float | None) -> bool:
    if new is None:
        return False
    if best is None:
        return True
    return new < best if name in LOWER_IS_BETTER else new > best
