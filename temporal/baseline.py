"""Reference figures beside STAN: mean-pooled features + a scikit-learn linear model, a mean-pool
MLP, and MiniRocket (aeon) on the PCA-reduced frame series with a ridge head.

Same labels, splits, train_fraction subset and metrics as STAN, so every STAN number has a
baseline beside it. Mean pooling is blind to frame order: on a task decided by order alone the
mean-pool baselines sit at chance; MiniRocket reads the series in time, as a time-series
practitioner's first choice would.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from storage.files import write_json
from temporal.config import Config, ConfigError, as_config
from temporal.dataset import load_data
from temporal.metrics import better, clean, compute_metrics, scores_loss
from temporal.run import evaluate
from temporal.scoring import write_predictions
from temporal.train import train

STRENGTHS = (0.01, 0.1, 1.0, 10.0)  # C for logistic regression; ridge uses alpha = 1 / C
# MiniRocket's ~10 000 standardised features need a stronger ridge (alpha = 1 / strength: 10 ... 10^4)
ROCKET_STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)
# STAN's own switches: the mean-pool baselines never read them (the MLP takes `dim` and `dropout`)

def mean_features(videos, rows: list[int]) -> np.ndarray:
    """[N, D] float32: each video's features averaged over all its frames."""
    return np.stack([videos.frames(i)[0].astype(np.float32).mean(0) for i in rows]) if rows else \
        np.zeros((0, videos.dim), np.float32)


def _fit(task: str, X: np.ndarray, y: np.ndarray, strength: float, ridge: bool = False):
    if task == "regression":
        est = Ridge(alpha=1.0 / strength)
    elif ridge:  # MiniRocket's head: ridge on one-hot targets (its scores are softmaxed decisions)
        est = RidgeClassifier(alpha=1.0 / strength)
        if task == "multi":
            est = OneVsRestClassifier(est)
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
    if not hasattr(model, "predict_proba"):  # a ridge classifier: softmax (or sigmoid) of its decisions
        d = model.decision_function(X)
        if task == "multi":
            return 1.0 / (1.0 + np.exp(-d))
        d = np.stack([-d, d], 1) if d.ndim == 1 else d
        p = np.exp(d - d.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
    else:
        p = model.predict_proba(X)
    if task == "single":  # columns follow the classes seen in training; place them in the full list
        full = np.zeros((len(X), n_classes))
        full[:, model.classes_.astype(int)] = p
        return full
    return p


def linear_probe(data, cfg: Config, out: Path) -> dict:
    """Mean-pooled features, logistic regression (ridge for regression), C chosen on val."""
    feats = {s: mean_features(data.videos, getattr(data, s)) for s in ("train", "val", "test")}
    return fit_probe(data, cfg, out, feats, "linear")


def minirocket_probe(data, cfg: Config, out: Path, dims: int = 32, length: int = 128) -> dict:
    """The time-series practitioner's peer: each video's frames reduced to their `dims` leading
    principal components (fitted on training frames), resampled to `length` steps, MiniRocket
    features (aeon, 10 000 kernels) and a ridge head, its strength chosen on val."""
    from aeon.transformations.collection.convolution_based import MiniRocket

    from temporal.data import principal_components

    rng = np.random.default_rng(cfg.optim.seed)
    mean, proj = principal_components(data.videos, data.train, dims, rng)
    dims = proj.shape[1]  # no more components than the features have

    def series(rows: list[int]) -> np.ndarray:
        out_ = np.zeros((len(rows), dims, length), np.float32)
        for k, i in enumerate(rows):
            x = (data.videos.frames(i)[0].astype(np.float32) - mean) @ proj  # [T, dims]
            src = np.linspace(0, 1, len(x))
            dst = np.linspace(0, 1, length)
            out_[k] = np.stack([np.interp(dst, src, x[:, c]) for c in range(x.shape[1])])
        return out_

    rocket = MiniRocket(random_state=cfg.optim.seed)
    raw = {s: series(getattr(data, s)) for s in ("train", "val", "test")}
    threads = torch.get_num_threads()
    try:
        rocket.fit(raw["train"])
        feats = {s: rocket.transform(x) if len(x) else np.zeros((0, 1)) for s, x in raw.items()}
    finally:  # aeon sets torch's thread count to the cores': what trains next in this process would
        torch.set_num_threads(threads)  # sum in another order (DVC's stages compute on one thread)
    return fit_probe(data, cfg, out, feats, "minirocket", ridge=True, strengths=ROCKET_STRENGTHS)


def fit_probe(data, cfg: Config, out: Path, feats: dict[str, np.ndarray], name: str,
              ridge: bool = False, strengths: tuple[float, ...] = STRENGTHS) -> dict:
    """A scikit-learn linear head on fixed video features, its strength chosen on val."""
    task, n_classes = data.labels.task, len(data.labels.classes)
    ys = {s: data.labels.target_array(getattr(data, s)) for s in ("train", "val", "test")}
    monitor = cfg.eval.monitor
    chosen, best = strengths[len(strengths) // 2], None
    if len(feats["val"]):  # pick the regularisation on val, by the same rule as STAN's early stopping
        for c in strengths:
            m = _fit(task, feats["train"], ys["train"], c, ridge)
            s = _scores(task, m, feats["val"], n_classes)
            val = {"loss": scores_loss(task, ys["val"], s), **compute_metrics(task, ys["val"], s)}
            if monitor not in val:
                raise ConfigError(f"monitor {monitor!r} is not a metric of a {task} task: {sorted(val)}")
            if better(monitor, val[monitor], best):
                chosen, best = c, val[monitor]
    model = _fit(task, feats["train"], ys["train"], chosen, ridge)
    estimator = "ridge" if ridge or task == "regression" else "logistic"
    result: dict = {"estimator": estimator + ("_ovr" if task == "multi" else "")}
    if ridge or task == "regression":
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
        write_predictions(out / f"predictions_{name}_{split}.csv", data.labels, rows, s)
    return result


def baseline(cache_dir: str | os.PathLike, labels_csv: str | os.PathLike, out_dir: str | os.PathLike,
             config: Config | dict | None = None, mlp: bool = True, log=print,
             probes: tuple[str, ...] = ("linear", "minirocket"), **overrides) -> dict:
    """Linear probe, MiniRocket (and, with `mlp`, a mean-pool MLP trained by the STAN loop into OUT/mlp).
    Writes OUT/metrics.json {"linear": {...}, "mlp": {...}}; returns the same dict."""
    cfg = as_config(config, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(cache_dir, labels_csv, cfg, log=log)
    fits = {"linear": linear_probe, "minirocket": minirocket_probe}
    result = {name: fits[name](data, cfg, out) for name in probes}
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

