"""Training and evaluation from the cache: the loop, checkpoints, and per-video predictions.

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

import contextlib
import copy
import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import storage
from storage.console import progress
from storage.device import pick_device
from storage.durable import TMP_MARK
from storage.files import write_json
from temporal.checkpoint import CHECKPOINT, checkpoint_state, load_checkpoint, save_checkpoint
from temporal.config import Config, ConfigError, as_config, memory_bytes
from temporal.data import (
    AnyVideos,
    Clip,
    Videos,
    collate,
    eval_batches,
    eval_clips,
    frame_sample,
    load_videos,
    principal_components,
    prototypes,
    sample_frames,
    upcoming,
)
from temporal.labels import LabelError, Labels, check_classes, match_cache, read_labels, train_subset
from temporal.metrics import METRICS, better, clean, compute_metrics, scores_loss
from temporal.model import build_model

RUN_FORMAT = 1


RUN_FILES = ("config.json", "model.safetensors", "history.csv", "summary.json", "metrics_*.json",
             "predictions_*.csv")


class RunError(ValueError):
    """A run directory or evaluation request that cannot be served; the message says why."""


# ---------------------------------------------------------------- data shared by train/evaluate/baseline

@dataclass
class Data:
    labels: Labels  # row i of labels is video i of videos
    videos: AnyVideos
    train: list[int]  # rows (after train_fraction)
    val: list[int]
    test: list[int]
    fingerprint: dict
    provenance: dict = field(default_factory=dict)  # how the cache was made (weights source, versions)


def load_data(cache_dir: str | os.PathLike, labels_csv: str | os.PathLike, cfg: Config,
              task: str | None = None, classes: list[str] | None = None, log=print,
              training: bool = True) -> Data:
    """The labelled videos of a cache; `training` subsets the train split and checks every class
    has training videos (evaluation needs neither: its labels file may hold no train rows)."""
    cache = storage.open_cache(cache_dir)
    labels = read_labels(labels_csv, task or cfg.task)
    if classes is not None:
        labels = remap_classes(labels, classes)
    labels, notes = match_cache(labels, cache, cfg.skip_missing)
    train = train_subset(labels, cfg.train_fraction, cfg.seed) if training else labels.rows("train")
    n_all = len(labels.rows("train"))
    if len(train) < n_all:
        notes.append(f"train_fraction {cfg.train_fraction}: training on {len(train)} of {n_all} train videos")
    if training:
        check_classes(labels, train)
    for note in notes:
        log(f"note: {note}")
    videos = open_videos(cache, labels.ids, cfg, log)
    return Data(labels, videos, train, labels.rows("val"), labels.rows("test"), cache.fingerprint,
                cache.info.get("provenance") or {})


def open_videos(cache, ids: list[str], cfg: Config, log=print) -> AnyVideos:
    """The videos `ids` in memory, or read from the shards as needed when they exceed memory_budget."""
    budget = memory_bytes(cfg.memory_budget)
    videos = load_videos(cache, ids, budget)
    if videos.lazy:
        log(f"note: the features exceed memory_budget {cfg.memory_budget} ({budget / 2**20:.0f} MiB): "
            "reading them from the shards as batches need them")
    return videos


def remap_classes(labels: Labels, classes: list[str]) -> Labels:
    """Express `labels` in a trained model's class list (a class it never saw is an error)."""
    if labels.task == "regression":
        return labels
    unknown = sorted(set(labels.classes) - set(classes))
    if unknown:
        raise LabelError(f"labels have class(es) the model was not trained on: {unknown[:10]}")
    index = {c: i for i, c in enumerate(classes)}
    if labels.task == "single":
        targets = [index[labels.classes[t]] for t in labels.targets]
    else:
        targets = [sorted(index[labels.classes[c]] for c in t) for t in labels.targets]
    return Labels(labels.task, list(classes), labels.ids, labels.splits, targets, labels.notes)


# ---------------------------------------------------------------- small helpers

def autocast(device: torch.device):
    # bf16 needs no loss scaling; on the CPU we stay in float32 (exact, reproducible)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def loss_fn(task: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if task == "single":
        return F.cross_entropy(logits, y)
    if task == "multi":
        return F.binary_cross_entropy_with_logits(logits, y)
    return F.mse_loss(logits[:, 0], y)


def to_scores(task: str, logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if task == "single":
        return logits.softmax(-1)
    if task == "multi":
        return logits.sigmoid()
    return logits[:, 0]


def lr_at(step: int, total: int, warmup: int, lr: float) -> float:
    """Linear warm-up, then cosine decay to lr/10 (not 0: early stopping rarely reaches the end)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def describe_model(cfg: Config) -> str:
    """e.g. "stan: event summary (K=24, pairs)", "stan: streams both/cross + event summary (K=24)"."""
    if cfg.model != "stan":
        return cfg.model
    fusion = f"/{cfg.fusion}" if cfg.streams == "both" else ""
    parts = [] if cfg.streams == "none" else [f"streams {cfg.streams}{fusion}"]
    if cfg.events:
        parts.append(f"event summary (K={cfg.events}{', pairs' if cfg.event_pairs else ''})")
    return "stan: " + " + ".join(parts)


def sparsity(model: torch.nn.Module, cfg: Config) -> torch.Tensor | float:
    """What training adds to the task loss: event_l1 x the event summary's group lasso (0 without a
    summary, e.g. the mean-pool baseline). Its gradient counts towards `grad_clip` with the rest."""
    events = getattr(model, "events", None)
    return cfg.event_l1 * events.penalty() if cfg.event_l1 and events is not None else 0.0


def no_decay(name: str, p: torch.nn.Parameter) -> bool:
    """Biases, norms and learned tokens (CLS, mask) are not shrunk; weight matrices are (nanoGPT)."""
    return p.dim() < 2 or name.rsplit(".", 1)[-1] in ("cls", "mask_token")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]


def targets_tensor(data: Data, rows, mean: float, std: float) -> torch.Tensor:
    y = data.labels.target_array(list(rows))
    if data.labels.task == "regression":
        return torch.from_numpy((y - mean) / std)
    return torch.from_numpy(y)


def fit_without_labels(model: torch.nn.Module, videos: AnyVideos, rows, cfg: Config,
                       pca: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Fit what STAN takes from the frames alone before training, on videos `rows` (no label read):
    the PCA input map (`pca_dims`, or `pca` when already computed) and the event prototypes."""
    project, events = getattr(model, "project", None), getattr(model, "events", None)
    rng = np.random.default_rng(cfg.seed)
    if project is not None:
        pca = pca or principal_components(videos, rows, cfg.pca_dims, rng)
        project.fit(*(torch.from_numpy(a) for a in pca))
    if events is not None:
        X = frame_sample(videos, rows, rng)
        if project is not None:
            X = (X - pca[0]) @ pca[1][:, : cfg.pca_dims]
        events.fit(torch.from_numpy(prototypes(X, cfg.events, cfg.seed)))


def train_batch(videos: AnyVideos, rows, cfg: Config, rng: np.random.Generator, device: torch.device):
    """One training batch: `cfg.frames` frames sampled from each video, padded, on the device."""
    clips = [Clip(int(i), sample_frames(int(videos.lengths[i]), cfg.frames, cfg.sampling, rng)) for i in rows]
    return collate(videos, clips, device)


def feature_std(videos: AnyVideos, rng: np.random.Generator, max_frames: int = 5000) -> np.ndarray:
    """[D] float32: each feature's spread over (a sample of) the videos' frames; noise is scaled by it."""
    v = rng.integers(len(videos), size=max_frames)
    f = np.array([int(rng.integers(videos.lengths[i])) for i in v], dtype=np.int64)
    return videos.gather(v, f).astype(np.float32).std(0) + 1e-6


def augment(x: torch.Tensor, mask: torch.Tensor, cfg: Config, std: torch.Tensor | None,
            rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature-space augmentation: Gaussian noise (`aug_noise` x each feature's std) and frames
    dropped at random (`aug_drop`, by masking: every video keeps at least its first frame)."""
    if cfg.aug_noise > 0:
        noise = torch.randn(x.shape, generator=_torch_rng(rng)).to(x.device)
        x = x + cfg.aug_noise * std * noise
    if cfg.aug_drop > 0:
        keep = torch.from_numpy(rng.random(tuple(mask.shape)) >= cfg.aug_drop).to(mask.device)
        keep[:, 0] = True
        mask = mask & keep
    return x, mask


def _torch_rng(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(1 << 62)))


def optimizer_step(opt: torch.optim.Optimizer, params: torch.nn.Module, loss: torch.Tensor, lr: float,
                   grad_clip: float) -> None:
    """One AdamW step at learning rate `lr`, gradients clipped to norm `grad_clip` (0: off)."""
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params.parameters(), grad_clip)
    opt.step()


@torch.inference_mode()
def predict(model: torch.nn.Module, videos: AnyVideos, rows: list[int], cfg: Config, task: str,
            device: torch.device) -> np.ndarray:
    """Scores per row (probabilities; standardised predictions for regression), averaged over views."""
    model.eval()
    clips = eval_clips(videos, rows, cfg.frames, cfg.eval_mode, cfg.sampling, cfg.eval_views)
    where = {v: r for r, v in enumerate(rows)}
    sums: np.ndarray | None = None
    counts = np.zeros(len(rows))
    batches = eval_batches(clips, cfg.batch_size * cfg.frames)
    for k, batch in enumerate(batches):
        x, t, m = collate(videos, batch, device)
        videos.prefetch(c.video for c in (batches[k + 1] if k + 1 < len(batches) else []))  # next one
        with autocast(device):
            s = to_scores(task, model(x, t, m)).cpu().numpy().astype(np.float64)
        if sums is None:
            sums = np.zeros((len(rows), *s.shape[1:]))
        for c, si in zip(batch, s, strict=True):
            sums[where[c.video]] += si
            counts[where[c.video]] += 1
    if sums is None:
        return np.zeros((0,))
    return sums / counts.reshape(-1, *([1] * (sums.ndim - 1)))


def full_length_note(cfg: Config, lengths: np.ndarray) -> str | None:
    """Training sees at most `frames` frames of a video, spread over all of it; full-length
    evaluation sees every frame, closer together than in training (the temporal stream's
    differences then span shorter steps). Say so when it happens."""
    if cfg.eval_mode != "full" or not len(lengths) or lengths.max() <= cfg.frames:
        return None
    longer = int((lengths > cfg.frames).sum())
    return (f"eval_mode full: {longer} video(s) are longer than the {cfg.frames} frames training samples, "
            f"so evaluation sees their frames up to {lengths.max() / cfg.frames:.1f}x closer together than "
            "training did; train with frames >= the longest video (or eval_mode views) for the two to agree")


def label_units(scores: np.ndarray, meta: dict) -> np.ndarray:
    """Regression predictions back in the label's unit (training standardised the targets)."""
    if meta["task"] != "regression":
        return scores
    return scores * meta["target_std"] + meta["target_mean"]


def score_rows(model, data: Data, rows: list[int], cfg: Config, meta: dict, device
               ) -> tuple[dict, np.ndarray]:
    """(metrics incl. loss, scores in label units) for `rows`."""
    task = meta["task"]
    scores = predict(model, data.videos, rows, cfg, task, device)
    y = data.labels.target_array(rows)
    if task == "regression":
        loss = scores_loss(task, (y - meta["target_mean"]) / meta["target_std"], scores)
    else:
        loss = scores_loss(task, y, scores)
    scores = label_units(scores, meta)
    return {"videos": len(rows), "loss": clean(loss), **compute_metrics(task, y, scores)}, scores


# ---------------------------------------------------------------- train

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
        p = Path(p).resolve()
        paths[key], paths[f"{key}_from_run"] = str(p), os.path.relpath(p, out.resolve())
    return paths


def recorded_path(run: Path, meta: dict, key: str) -> Path:
    """The `cache` or `labels` path a run recorded, found from any working directory."""
    tried = [Path(meta[key])]
    if f"{key}_from_run" in meta:
        tried.append(run / meta[f"{key}_from_run"])
    for p in tried:
        if p.exists():
            return p
    raise FileNotFoundError(f"{key} recorded at training not found (tried {', '.join(map(str, tried))}); "
                            f"pass --{key} explicitly")


def train(cache_dir: str | os.PathLike, labels_csv: str | os.PathLike, out_dir: str | os.PathLike,
          config: Config | dict | None = None, log=print, resume: bool = False, overwrite: bool = False,
          **overrides) -> Path:
    """Train on the `train` split, early-stop on `val`, save the best weights to `out_dir`.

    A finished run in `out_dir` is an error unless `overwrite`; `resume` continues an interrupted
    one from its last epoch's checkpoint, ending exactly where the uninterrupted run would."""
    cfg = as_config(config, **overrides)
    out = Path(out_dir)
    resuming = prepare_out(out, resume, overwrite, log)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    data = load_data(cache_dir, labels_csv, cfg, log=log)
    task, classes = data.labels.task, data.labels.classes
    if cfg.monitor not in ("loss", *METRICS[task]):
        raise ConfigError(f"monitor {cfg.monitor!r} is not a val metric of a {task} task: "
                          f"choose from {('loss', *METRICS[task])}")
    meta = {"format": RUN_FORMAT, "task": task, "classes": classes, "in_dim": data.videos.dim,
            "out_dim": 1 if task == "regression" else len(classes), "target_mean": 0.0, "target_std": 1.0,
            **recorded_paths(cache_dir, labels_csv, out), "fingerprint": data.fingerprint,
            "provenance": data.provenance, "config": cfg.to_dict(),
            "versions": {"torch": torch.__version__, "numpy": np.__version__}}
    if task == "regression":  # standardise targets so lr and init suit any unit
        y = data.labels.target_array(data.train)
        meta["target_mean"], meta["target_std"] = float(y.mean()), float(y.std()) or 1.0
    y_all = targets_tensor(data, range(len(data.labels)), meta["target_mean"], meta["target_std"])

    model = build_model(cfg, meta["in_dim"], meta["out_dim"])
    fit_without_labels(model, data.videos, data.train, cfg)
    if cfg.init:  # pre-trained weights, their input projection included
        from temporal.pretrain import load_pretrained

        log(f"note: {load_pretrained(model, cfg.init, cfg, meta['in_dim'], data.fingerprint)}")
    model = model.to(device)
    std = None  # only noise augmentation needs the features' spread: no sampling pass otherwise
    if cfg.aug_noise > 0:
        std = torch.from_numpy(feature_std(data.videos, np.random.default_rng(cfg.seed))).to(device)
    opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95),
                            fused=device.type == "cuda")
    n_params = sum(p.numel() for p in model.parameters())
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size)
    total, warm = cfg.epochs * steps_per_epoch, round(cfg.warmup * steps_per_epoch)
    kind = f"{task}-label task | {len(classes)} classes" if classes else "regression task"
    log(f"{kind} | videos: {len(data.train)} train, {len(data.val)} val, {len(data.test)} test "
        f"({_held(data.videos)}) | "
        f"{describe_model(cfg)}, {n_params / 1e6:.2f}M params on {device}")
    note = full_length_note(cfg, data.videos.lengths)
    if note:
        log(f"warning: {note}")
    use_val = bool(data.val)
    if not use_val:
        log("note: no val split: no early stopping, keeping the last epoch's weights")
    monitor = cfg.monitor

    history, best, best_epoch, best_state, stopped_early = [], None, 0, None, False
    step, done, seconds = 0, 0, 0.0
    if resuming:
        check_resumable(out, checkpoint_state(out / CHECKPOINT), cfg, data.fingerprint)
        state, best_state = load_checkpoint(out / CHECKPOINT, model, opt, rng)
        history, best, best_epoch, stopped_early = (state[k] for k in ("history", "best", "best_epoch",
                                                                        "stopped_early"))
        step, done, seconds = state["step"], state["epoch"], state["seconds"]
        log(f"resuming {out} after epoch {done}/{cfg.epochs}")
    t0 = time.time() - seconds
    epochs = range(done + 1, 1 if stopped_early else cfg.epochs + 1)
    bar = progress(epochs, desc="epochs", unit="ep", initial=done, total=cfg.epochs)
    for epoch in bar:
        model.train()
        perm = rng.permutation(data.train)
        loss_sum, seen = 0.0, 0
        for b in range(0, len(perm), cfg.batch_size):
            rows = perm[b:b + cfg.batch_size]
            x, t, m = train_batch(data.videos, rows, cfg, rng, device)
            data.videos.prefetch(upcoming(perm, b, cfg.batch_size))  # read while this step computes
            x, m = augment(x, m, cfg, std, rng)
            y = y_all[torch.from_numpy(rows)].to(device)
            lr = lr_at(step, total, warm, cfg.lr)
            with autocast(device):
                logits, aux = model.outputs(x, t, m)
            loss = loss_fn(task, logits, y)
            extra = sum(loss_fn(task, a, y) for a in aux) * (cfg.aux_loss / max(1, len(aux)))
            optimizer_step(opt, model, loss + extra + sparsity(model, cfg), lr, cfg.grad_clip)
            loss_sum += loss.item() * len(rows)
            seen += len(rows)
            step += 1
        row = {"epoch": epoch, "train_loss": loss_sum / seen}
        if use_val:
            val, _ = score_rows(model, data, data.val, cfg, meta, device)
            row.update({f"val_{k}": v for k, v in val.items() if k != "videos"})
        row.update({"lr": lr, "seconds": round(time.time() - t0, 3)})
        history.append(row)
        _write_history(out / "history.csv", history)
        current = row.get(f"val_{monitor}") if use_val else -epoch  # without val: the latest wins
        if better(monitor if use_val else "loss", current, best):
            best, best_epoch = current, epoch
            best_state = copy.deepcopy(model.state_dict())
        post = {f"val_{monitor}": _fmt(current)} if use_val else {}
        bar.set_postfix(loss=_fmt(row["train_loss"]), **post)
        stopped_early = bool(use_val and cfg.patience and epoch - best_epoch >= cfg.patience
                             and epoch < cfg.epochs)
        save_checkpoint(out / CHECKPOINT, model, opt, best_state, rng, {
            "epoch": epoch, "step": step, "history": history, "best": best, "best_epoch": best_epoch,
            "stopped_early": stopped_early, "seconds": time.time() - t0, "config": cfg.to_dict(),
            "fingerprint": data.fingerprint})
        if stopped_early:
            break
    bar.close()

    if best_state is None:  # e.g. r2 or map undefined on a tiny val split at every epoch
        log(f"note: val {monitor} was never defined: keeping the last epoch's weights")
        best_epoch = len(history)
    else:
        model.load_state_dict(best_state)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(out / "model.safetensors"))
    meta["best_epoch"] = best_epoch
    write_json(out / "config.json", meta)
    summary = {"best_epoch": best_epoch, "epochs_run": len(history), "stopped_early": stopped_early,
               "train_seconds": round(time.time() - t0, 2), "params": n_params,
               "videos": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}}
    if use_val:
        summary["val"], _ = score_rows(model, data, data.val, cfg, meta, device)
    write_json(out / "summary.json", summary)
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: nothing left to resume
    shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.get("val", {}).items()
                      if k != "videos" and v is not None)
    log(f"trained {describe_model(cfg)} on {len(data.train)} videos: "
        f"best epoch {best_epoch}/{len(history)}{' (early stop)' if stopped_early else ''}"
        f"{', val ' + shown if shown else ''}, {summary['train_seconds']:.1f} s -> {out}")
    return out


def _held(videos: AnyVideos) -> str:
    if videos.lazy:
        return f"features read lazily, at most {videos.store.budget / 2**20:.0f} MiB held"
    return f"{videos.nbytes / 2**20:.1f} MiB of features in memory"


def check_resumable(out: Path, state: dict, cfg: Config, fingerprint: dict) -> None:
    """A checkpoint continues only the run that wrote it: same options (device, memory aside), same cache."""
    free = ("device", "memory_budget")  # where and how the features are held: the run is the same
    # runs interrupted before event_l1 existed trained without the lasso
    saved = {k: v for k, v in {"event_l1": 0.0, **state["config"]}.items() if k not in free}
    now = {k: v for k, v in cfg.to_dict().items() if k not in free}
    if saved != now:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
                         if saved.get(k) != now.get(k))
        raise RunError(f"{out}: cannot resume with other options than the interrupted run's ({diff}); "
                       "run with the same options, or --overwrite to start again")
    if state["fingerprint"] != fingerprint:
        raise RunError(f"{out}: the cache's fingerprint differs from the one the interrupted run trained on")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _write_history(path: Path, rows: list[dict]) -> None:
    cols = list(rows[0])
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
    os.replace(tmp, path)


# ---------------------------------------------------------------- evaluate

EVAL_OVERRIDES = ("eval_mode", "eval_views", "batch_size", "device", "memory_budget")


def read_meta(run_dir: str | os.PathLike) -> dict:
    run = Path(run_dir)
    try:
        meta = json.loads((run / "config.json").read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{run}: not a training run (no config.json)") from None
    if meta.get("format") != RUN_FORMAT:
        raise RunError(f"{run}: run format {meta.get('format')!r}, this code reads {RUN_FORMAT}")
    return meta


@dataclass
class Run:
    """A trained run, loaded: `predict` scores videos given as arrays (as `python -m temporal predict`)."""

    dir: Path
    model: torch.nn.Module  # in eval mode, on `device`
    config: Config  # the training options, with any evaluation overrides
    meta: dict  # config.json
    device: torch.device

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def classes(self) -> list[str]:
        return self.meta["classes"]

    def scores(self, videos: AnyVideos, rows: list[int]) -> np.ndarray:
        """Scores of videos `rows`: probabilities [N, C], or regression values [N] in the label's unit."""
        return label_units(predict(self.model, videos, rows, self.config, self.task, self.device), self.meta)

    def predict(self, features, timestamps) -> np.ndarray:
        """One video (features [T, D], timestamps [T] in seconds) -> class probabilities [C] (a 0-d
        value for regression, in the label's unit); lists of videos -> [N, C] (or [N])."""
        one = getattr(features, "ndim", None) == 2
        feats, times = ([features], [timestamps]) if one else (list(features), list(timestamps))
        videos = Videos.from_arrays(feats, times, self.meta["in_dim"])
        s = self.scores(videos, list(range(len(videos))))
        return s[0] if one else s


def load_run(run_dir: str | os.PathLike, device: torch.device | str | None = None, **overrides) -> Run:
    """A run directory's model (eval mode) and options; `overrides` may change the evaluation
    options (eval_mode, eval_views, batch_size, device)."""
    bad = sorted(set(overrides) - set(EVAL_OVERRIDES))
    if bad:
        raise RunError(f"evaluation can only override {EVAL_OVERRIDES}, not {bad}")
    meta = read_meta(run_dir)
    cfg = Config.from_dict(meta["config"]).replace(**{k: v for k, v in overrides.items() if v is not None})
    model = build_model(cfg, meta["in_dim"], meta["out_dim"])
    try:
        model.load_state_dict(load_file(str(Path(run_dir) / "model.safetensors")))
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
    cache_dir = Path(cache_dir) if cache_dir is not None else recorded_path(run, meta, "cache")
    labels_csv = Path(labels_csv) if labels_csv is not None else recorded_path(run, meta, "labels")
    data = load_data(cache_dir, labels_csv, cfg, task=meta["task"], classes=meta["classes"] or None, log=log,
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


def check_fingerprint(cache_dir, fingerprint: dict, meta: dict) -> None:
    if fingerprint != meta["fingerprint"]:
        raise RunError(f"{cache_dir}: its fingerprint differs from the cache the run was trained on "
                       "(different backbone or preprocessing): the features would not mean the same")


def write_predictions(path: Path, labels: Labels, rows: list[int], scores: np.ndarray) -> None:
    """video_id,actual,predicted[,prob_<class>...]: one row per video (for confusion matrices)."""
    write_scores(path, [labels.ids[i] for i in rows], labels.task, labels.classes, scores,
                 actual=[labels.label_text(i) for i in rows])


def write_scores(path: Path, ids: list[str], task: str, classes: list[str], scores: np.ndarray,
                 actual: list[str] | None = None) -> None:
    """video_id[,actual],predicted[,prob_<class>...]: the predicted class (classes joined by '|' for
    multi-label, those with probability >= 0.5; the value for regression) and each class's probability."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", *(["actual"] if actual is not None else []), "predicted"]
                   + ([f"prob_{c}" for c in classes] if task != "regression" else []))
        for r, vid in enumerate(ids):
            s = scores[r]
            if task == "single":
                pred = classes[int(np.argmax(s))]
            elif task == "multi":
                pred = "|".join(c for c, p in zip(classes, s, strict=True) if p >= 0.5)
            else:
                pred = f"{float(s):.6g}"
            probs = [f"{p:.6f}" for p in s] if task != "regression" else []
            w.writerow([vid, *([actual[r]] if actual is not None else []), pred, *probs])
