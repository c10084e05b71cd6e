"""A run folder: what training writes, and what evaluation and prediction read back.

A run directory holds everything `evaluate` needs in a fresh process:

    config.json        options, task, classes, dims, target scaling, cache + labels paths (absolute and
                       relative to the run), the cache's fingerprint and provenance (predict re-extracts)
    model.safetensors  the weights of the best validation epoch
    history.csv        one row per epoch: loss, val loss and metrics, learning rate
    summary.json       best epoch, epochs run, timing, sizes, and the val metrics of the kept weights

While training, checkpoint.safetensors (temporal/checkpoint.py) holds the state after the last
finished epoch; `resume=True` continues from it, and it is removed once summary.json is written.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from storage.device import pick_device
from storage.durable import TMP_MARK, atomic_write
from storage.files import write_json
from storage.location import ObjectPath, as_path, is_remote
from temporal.checkpoint import CHECKPOINT
from temporal.config import Config, saved_config
from temporal.data import (
    AnyVideos,
    Videos,
)
from temporal.dataset import load_data
from temporal.labels import LabelError
from temporal.meta import RUN_FORMAT, RunMeta
from temporal.model import build_model
from temporal.scoring import full_length_note, score_rows, video_scores, write_predictions

RUN_FILES = ("config.json", "model.safetensors", "history.csv", "summary.json", "metrics_*.json",
             "predictions_*.csv")


class RunError(ValueError):
    """A run directory or evaluation request that cannot be served; the message says why."""


def prepare_out(out: Path, resume: bool, overwrite: bool, log=print) -> bool:
    """Check that `out` may be written (a finished or interrupted run is replaced only on request);
    returns whether to resume from its checkpoint."""
    finished, ckpt = (out / "summary.json").exists(), (out / CHECKPOINT).exists()
    for p in out.glob(f"{CHECKPOINT}{TMP_MARK}*"):  # a checkpoint being written when the run was killed
        p.unlink()
    if resume and not overwrite:
        if finished and not ckpt:
            raise RunError(f"{out}: this run already finished (summary.json): nothing to resume; "
                           "pass --overwrite to train it again")
        if not ckpt:
            log(f"note: {out} has no checkpoint ({CHECKPOINT}) to resume from: starting from epoch 1")
        return ckpt
    if not overwrite and finished:
        raise RunError(f"{out} already holds a finished run (summary.json): choose another --out, "
                       "or pass --overwrite to replace it")
    if not overwrite and ckpt:
        raise RunError(f"{out} holds an interrupted run ({CHECKPOINT}): pass --resume to continue it, "
                       "or --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    for pattern in (*RUN_FILES, CHECKPOINT):  # a previous run's files must not pass for this one's
        for p in out.glob(pattern):
            p.unlink()
    return False


def recorded_paths(cache_dir, labels_csv, out: Path) -> dict:
    """The cache and labels paths a run records: absolute, and relative to the run (for a moved tree)."""
    paths = {}
    for key, p in (("cache", cache_dir), ("labels", labels_csv)):
        p = as_path(p)
        if is_remote(p):  # an fsspec URL: the same from anywhere
            paths[key] = p.url
            continue
        p = p.resolve()
        paths[key], paths[f"{key}_from_run"] = str(p), os.path.relpath(p, out.resolve())
    return paths


def recorded_path(run: Path, meta: RunMeta, key: str) -> Path | ObjectPath:
    """The `cache` or `labels` path a run recorded, found from any working directory."""
    tried = [as_path(getattr(meta, key))]
    if getattr(meta, f"{key}_from_run") is not None:
        tried.append(run / getattr(meta, f"{key}_from_run"))
    for p in tried:
        if p.exists():
            return p
    raise FileNotFoundError(f"{key} recorded at training not found (tried {', '.join(map(str, tried))}); "
                            f"pass --{key} explicitly")


def write_history(path: Path, rows: list[dict]) -> None:
    """history.csv: one row per epoch, replaced whole each epoch (a crash leaves the last one)."""
    cols = list(rows[0])
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    atomic_write(path, text.getvalue().encode())


EVAL_OVERRIDES = ("eval_mode", "eval_views", "batch_size", "device", "memory_budget")


def read_meta(run_dir: str | os.PathLike) -> RunMeta:
    """A training run's config.json."""
    return RunMeta.from_json(read_run_json(run_dir, "train"))


def read_run_json(run_dir: str | os.PathLike, kind: str) -> dict:
    """A run folder's config.json as it is, of a training run (`kind` "train") or a pre-training one
    ("pretrain"), refused by name when it is of the other kind or another format."""
    run = Path(run_dir)
    what = {"train": "a training run", "pretrain": "a pre-training run"}[kind]
    try:
        meta = json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        raise RunError(f"{run}: not {what} (no config.json)") from None
    if meta.get("kind", "train") != kind:
        raise RunError(f"{run}: not {what} (its config.json says {meta.get('kind', 'train')!r})")
    if meta.get("format") != RUN_FORMAT:
        raise RunError(f"{run}: run format {meta.get('format')!r}, this code reads {RUN_FORMAT}")
    return meta


@dataclass
class Run:
    """A trained run, loaded: `predict` scores videos given as arrays (as `python -m temporal predict`)."""

    dir: Path
    model: torch.nn.Module  # in eval mode, on `device`
    config: Config  # the training options, with any evaluation overrides
    meta: RunMeta  # config.json
    device: torch.device

    @property
    def task(self) -> str:
        return self.meta.task

    @property
    def classes(self) -> list[str]:
        return self.meta.classes

    def scores(self, videos: AnyVideos, rows: list[int]) -> np.ndarray:
        """Scores of videos `rows`: probabilities [N, C], or regression values [N] in the label's unit."""
        scores = video_scores(self.model, videos, rows, self.config, self.task, self.device)
        return self.meta.label_units(scores)

    def predict(self, features, timestamps) -> np.ndarray:
        """One video (features [T, D], timestamps [T] in seconds) -> class probabilities [C] (a 0-d
        value for regression, in the label's unit); lists of videos -> [N, C] (or [N])."""
        one = getattr(features, "ndim", None) == 2
        feats, times = ([features], [timestamps]) if one else (list(features), list(timestamps))
        videos = Videos.from_arrays(feats, times, self.meta.in_dim)
        s = self.scores(videos, list(range(len(videos))))
        return s[0] if one else s


def load_run(run_dir: str | os.PathLike, device: torch.device | str | None = None, **overrides) -> Run:
    """A run directory's model (eval mode) and options; `overrides` may change the evaluation
    options (eval_mode, eval_views, batch_size, device)."""
    bad = sorted(set(overrides) - set(EVAL_OVERRIDES))
    if bad:
        raise RunError(f"evaluation can only override {EVAL_OVERRIDES}, not {bad}")
    meta = read_meta(run_dir)
    cfg = saved_config(meta.config).replace(**{k: v for k, v in overrides.items() if v is not None})
    model = build_model(cfg, meta.in_dim, meta.out_dim)
    state = load_file(str(Path(run_dir) / "model.safetensors"))
    if hasattr(model, "selected"):  # runs saved before training chose an output predicted with the fused one
        state.setdefault("selected", torch.tensor(-1))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # e.g. saved by a version whose event summary had other layers
        first = str(e).strip().splitlines()[0]
        raise RunError(f"{run_dir}: its weights do not fit the model its config.json describes (saved by "
                       f"another version of temporal? train it again): {first}") from None
    device = torch.device(device) if device is not None else pick_device(cfg.device)
    return Run(Path(run_dir), model.to(device).eval(), cfg, meta, device)


def evaluate(run_dir: str | os.PathLike, split: str = "test", metrics_path: str | os.PathLike | None = None,
             predictions_path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             labels_csv: str | os.PathLike | None = None, log=print, **overrides) -> dict:
    """Metrics of a saved run on `split`; writes metrics JSON and a per-video predictions CSV
    (defaults: RUN/metrics_SPLIT.json, RUN/predictions_SPLIT.csv). `overrides` may change
    eval_mode, eval_views, batch_size, device."""
    if split not in ("train", "val", "test"):
        raise RunError(f"unknown split {split!r}: choose train, val or test")
    run = Path(run_dir)
    loaded = load_run(run, **overrides)
    model, cfg, meta, device = loaded.model, loaded.config, loaded.meta, loaded.device
    cache_dir = as_path(cache_dir) if cache_dir is not None else recorded_path(run, meta, "cache")
    labels_csv = Path(labels_csv) if labels_csv is not None else recorded_path(run, meta, "labels")
    data = load_data(cache_dir, labels_csv, cfg, task=meta.task, classes=meta.classes or None, log=log,
                     training=False)
    check_fingerprint(cache_dir, data.fingerprint, meta)
    rows = getattr(data, split)
    if not rows:
        raise LabelError(f"split {split!r} has no videos in {labels_csv}")
    note = full_length_note(cfg, data.videos.lengths[rows])
    if note:
        log(f"warning: {note}")
    metrics, scores = score_rows(model, data, rows, cfg, meta, device)
    metrics = {"split": split, **metrics}
    write_json(Path(metrics_path or run / f"metrics_{split}.json"), metrics)
    write_predictions(Path(predictions_path or run / f"predictions_{split}.csv"), data.labels, rows, scores)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    log(f"{run} on {split} ({len(rows)} videos): {shown}")
    return metrics


def check_fingerprint(cache_dir, fingerprint: dict, meta: RunMeta) -> None:
    if fingerprint != meta.fingerprint:
        raise RunError(f"{cache_dir}: its fingerprint differs from the cache the run was trained on "
                       "(different backbone or preprocessing): the features would not mean the same")
