"""Reference figures: mean-pooled features + a scikit-learn linear model, and a mean-pool MLP.

Same labels, splits, train_fraction subset and metrics as STAN, so every STAN number has a
baseline beside it. Mean pooling is blind to frame order: on a task decided by order alone
these baselines sit at chance, which is the point of the temporal stream.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from storage.files import write_json
from temporal.config import Config, ConfigError, as_config
from temporal.metrics import better, clean, compute_metrics, scores_loss
from temporal.train import evaluate, load_data, train, write_predictions

STRENGTHS = (0.01, 0.1, 1.0, 10.0)  # C for logistic regression; ridge uses alpha = 1 / C
# STAN's own switches: the mean-pool baselines never read them (the MLP takes `dim` and `dropout`)
STAN_ONLY = ("model", "streams", "fusion", "heads", "depth_spatial", "depth_temporal", "depth_fusion",
             "clip_len", "mlp_ratio", "time_encoding", "pool", "events", "event_pairs", "event_l1",
             "pca_dims", "init")
BASELINE_OPTIONS = tuple(f.name for f in dataclasses.fields(Config) if f.name not in STAN_ONLY)


def mean_features(videos, rows: list[int]) -> np.ndarray:
    """[N, D] float32: each video's features averaged over all its frames."""
    return np.stack([videos.frames(i)[0].astype(np.float32).mean(0) for i in rows]) if rows else \
        np.zeros((0, videos.dim), np.float32)


def _fit(task: str, X: np.ndarray, y: np.ndarray, strength: float):
    if task == "regression":
        est = Ridge(alpha=1.0 / strength)
    elif task == "single":
        est = LogisticRegression(C=strength, max_iter=2000)
    else:
        est = OneVsRestClassifier(LogisticRegression(C=strength, max_iter=2000))
    model = make_pipeline(StandardScaler(), est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)  # one-vs-rest on a class constant in train
        model.fit(X, y)
    return model


def _scores(task: str, model, X: np.ndarray, n_classes: int) -> np.ndarray:
    if task == "regression":
        return model.predict(X).astype(np.float64)
    p = model.predict_proba(X)
    if task == "single":  # columns follow the classes seen in training; place them in the full list
        full = np.zeros((len(X), n_classes))
        full[:, model.classes_.astype(int)] = p
        return full
    return p


def linear_probe(data, cfg: Config, out: Path) -> dict:
    task, n_classes = data.labels.task, len(data.labels.classes)
    feats = {s: mean_features(data.videos, getattr(data, s)) for s in ("train", "val", "test")}
    ys = {s: data.labels.target_array(getattr(data, s)) for s in ("train", "val", "test")}
    monitor = cfg.monitor
    chosen, best = 1.0, None
    if len(feats["val"]):  # pick the regularisation on val, by the same rule as STAN's early stopping
        for c in STRENGTHS:
            m = _fit(task, feats["train"], ys["train"], c)
            s = _scores(task, m, feats["val"], n_classes)
            val = {"loss": scores_loss(task, ys["val"], s), **compute_metrics(task, ys["val"], s)}
            if monitor not in val:
                raise ConfigError(f"monitor {monitor!r} is not a metric of a {task} task: {sorted(val)}")
            if better(monitor, val[monitor], best):
                chosen, best = c, val[monitor]
    model = _fit(task, feats["train"], ys["train"], chosen)
    name = {"single": "logistic", "multi": "logistic_ovr", "regression": "ridge"}[task]
    result: dict = {"estimator": name}
    if task == "regression":
        result["alpha"] = 1.0 / chosen
    else:
        result["C"] = chosen
    for split in ("val", "test"):
        rows = getattr(data, split)
        if not rows:
            continue
        s = _scores(task, model, feats[split], n_classes)
        result[split] = {"videos": len(rows), "loss": clean(scores_loss(task, ys[split], s)),
                         **compute_metrics(task, ys[split], s)}
        write_predictions(out / f"predictions_linear_{split}.csv", data.labels, rows, s)
    return result


def baseline(cache_dir: str | os.PathLike, labels_csv: str | os.PathLike, out_dir: str | os.PathLike,
             config: Config | dict | None = None, mlp: bool = True, log=print, **overrides) -> dict:
    """Linear probe (and, with `mlp`, a mean-pool MLP trained by the STAN loop into OUT/mlp).
    Writes OUT/metrics.json {"linear": {...}, "mlp": {...}}; returns the same dict."""
    cfg = as_config(config, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(cache_dir, labels_csv, cfg, log=log)
    result = {"linear": linear_probe(data, cfg, out)}
    splits = [s for s in ("val", "test") if getattr(data, s)]
    del data
    if mlp:
        run = train(cache_dir, labels_csv, out / "mlp", cfg.replace(model="meanpool", init=""), log=log,
                    overwrite=True)  # part of the baseline's outputs, replaced with them
        result["mlp"] = {s: evaluate(run, s, log=log) for s in splits}
    write_json(out / "metrics.json", result)
    for name, res in result.items():
        for split in ("val", "test"):
            if split in res:
                shown = ", ".join(f"{k} {v:.4f}" for k, v in res[split].items() if isinstance(v, float))
                log(f"baseline {name} on {split}: {shown}")
    return result

