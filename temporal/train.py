"""Training from the cache: `train` fits a model on the train split, early-stopping on val
(the run folder it writes: temporal/run.py)."""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from storage.console import progress
from storage.device import pick_device
from storage.files import write_json
from temporal.checkpoint import CHECKPOINT, checkpoint_state, load_checkpoint, save_checkpoint
from temporal.config import Config, ConfigError, as_config, saved_config
from temporal.data import (
    AnyVideos,
)
from temporal.dataset import Data, load_data
from temporal.loop import (
    Schedule,
    augment,
    autocast,
    average_weights,
    cpu_weights,
    epoch_batches,
    feature_std,
    fit_without_labels,
    loss_fn,
    make_optimizer,
    optimizer_step,
)
from temporal.meta import RunMeta
from temporal.metrics import METRICS, better
from temporal.model import build_model
from temporal.pretrain import load_pretrained
from temporal.run import RunError, prepare_out, recorded_paths, write_history
from temporal.scoring import full_length_note, score_outputs, score_rows


def describe_model(cfg: Config) -> str:
    """e.g. "stan: event summary (K=24, pairs, gaps)", "stan: streams both/cross + event summary (K=24)"."""
    if cfg.model != "stan":
        return cfg.model
    fusion = f"/{cfg.stan.fusion}" if cfg.stan.streams == "both" else ""
    parts = [] if cfg.stan.streams == "none" else [f"streams {cfg.stan.streams}{fusion}"]
    if cfg.stan.events:
        extras = "".join(f", {n}" for n, on in (("pairs", cfg.stan.event_pairs),
                                                   ("gaps", cfg.stan.event_gaps)) if on)
        parts.append(f"event summary (K={cfg.stan.events}{extras})")
    return "stan: " + " + ".join(parts)


def sparsity(model: torch.nn.Module, cfg: Config) -> torch.Tensor | float:
    """What training adds to the task loss: with `lasso: penalty`, event_l1 x the event summary's
    group lasso (its gradient counts towards `grad_clip` with the rest); else 0."""
    events = getattr(model, "events", None)
    if cfg.loss.lasso != "penalty" or not cfg.loss.event_l1 or events is None:
        return 0.0
    return cfg.loss.event_l1 * events.penalty()


def proximal_step(model: torch.nn.Module, cfg: Config, lr: float) -> None:
    """With `lasso: proximal`, after an optimiser step at `lr`: the group lasso's shrinkage."""
    events = getattr(model, "events", None)
    if cfg.loss.lasso == "proximal" and cfg.loss.event_l1 and events is not None:
        events.shrink(lr * cfg.loss.event_l1)


def targets_tensor(data: Data, rows, mean: float, std: float) -> torch.Tensor:
    y = data.labels.target_array(list(rows))
    if data.labels.task == "regression":
        return torch.from_numpy((y - mean) / std)
    return torch.from_numpy(y)


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
    torch.manual_seed(cfg.optim.seed)
    rng = np.random.default_rng(cfg.optim.seed)

    data = load_data(cache_dir, labels_csv, cfg, log=log)
    task, classes = data.labels.task, data.labels.classes
    if cfg.eval.monitor not in ("loss", *METRICS[task]):
        raise ConfigError(f"monitor {cfg.eval.monitor!r} is not a val metric of a {task} task: "
                          f"choose from {('loss', *METRICS[task])}")
    meta = run_meta(data, cfg, recorded_paths(cache_dir, labels_csv, out))
    y_all = targets_tensor(data, range(len(data.labels)), meta.target_mean, meta.target_std)

    model = build_model(cfg, meta.in_dim, meta.out_dim)
    fit_rows = data.outside_test() if cfg.data.fit_on == "all" else data.train
    fit_without_labels(model, data.videos, fit_rows, cfg)
    if cfg.init:  # pre-trained weights, their input projection included
        log(f"note: {load_pretrained(model, cfg.init, cfg, meta.in_dim, data.fingerprint)}")
    model = model.to(device)
    std = None  # only noise augmentation needs the features' spread: no sampling pass otherwise
    if cfg.data.aug_noise > 0:
        std = torch.from_numpy(feature_std(data.videos, np.random.default_rng(cfg.optim.seed))).to(device)
    opt = make_optimizer(model, cfg.optim, device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.optim.ema else None
    judged = model if ema is None else ema  # the weights val scores and the run keeps
    n_params = sum(p.numel() for p in model.parameters())
    schedule = Schedule.of(cfg.optim, len(data.train))
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
    monitor = cfg.eval.monitor

    history, best, best_epoch, best_state, stopped_early = [], None, 0, None, False
    step, done, seconds = 0, 0, 0.0
    if resuming:
        check_resumable(out, checkpoint_state(out / CHECKPOINT), cfg, data.fingerprint)
        state, best_state = load_checkpoint(out / CHECKPOINT, model, opt, rng, ema)
        history, best, best_epoch, stopped_early = (state[k] for k in ("history", "best", "best_epoch",
                                                                        "stopped_early"))
        step, done, seconds = state["step"], state["epoch"], state["seconds"]
        log(f"resuming {out} after epoch {done}/{cfg.optim.epochs}")
    t0 = time.time() - seconds
    epochs = range(done + 1, 1 if stopped_early else cfg.optim.epochs + 1)
    bar = progress(epochs, desc="epochs", unit="ep", initial=done, total=cfg.optim.epochs)
    for epoch in bar:
        train_loss, step, lr = train_epoch(model, opt, data, y_all, cfg, schedule, step, std, rng, device,
                                           ema)
        row = {"epoch": epoch, "train_loss": train_loss}
        if use_val:
            val = select_output(judged, score_outputs(judged, data, data.val, cfg, meta, device), monitor)
            row.update({f"val_{k}": v for k, v in val.items() if k != "videos"})
        row.update({"lr": lr, "seconds": round(time.time() - t0, 3)})
        history.append(row)
        write_history(out / "history.csv", history)
        current = row.get(f"val_{monitor}") if use_val else -epoch  # without val: the latest wins
        if better(monitor if use_val else "loss", current, best):
            best, best_epoch = current, epoch
            best_state = copy.deepcopy(judged.state_dict())
        post = {f"val_{monitor}": _fmt(current)} if use_val else {}
        bar.set_postfix(loss=_fmt(row["train_loss"]), **post)
        stopped_early = bool(use_val and cfg.eval.patience and epoch - best_epoch >= cfg.eval.patience
                             and epoch < cfg.optim.epochs)
        save_checkpoint(out / CHECKPOINT, model, opt, best_state, rng, {
            "epoch": epoch, "step": step, "history": history, "best": best, "best_epoch": best_epoch,
            "stopped_early": stopped_early, "seconds": time.time() - t0, "config": cfg.to_dict(),
            "fingerprint": data.fingerprint}, ema=ema)
        if stopped_early:
            break
    bar.close()

    if best_state is None:  # e.g. r2 or map undefined on a tiny val split at every epoch
        log(f"note: val {monitor} was never defined: keeping the last epoch's weights")
        best_epoch = len(history)
    else:
        model.load_state_dict(best_state)
    summary = {"best_epoch": best_epoch, "epochs_run": len(history), "stopped_early": stopped_early,
               "train_seconds": round(time.time() - t0, 2), "params": n_params}
    summary = save_run(out, model, meta, summary, data, cfg, device)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.get("val", {}).items()
                      if k != "videos" and v is not None)
    log(f"trained {describe_model(cfg)} on {len(data.train)} videos: "
        f"best epoch {best_epoch}/{len(history)}{' (early stop)' if stopped_early else ''}"
        f"{', val ' + shown if shown else ''}{output_note(model)}, {summary['train_seconds']:.1f} s -> {out}")
    return out


def save_run(out: Path, model: torch.nn.Module, meta: RunMeta, summary: dict, data: Data, cfg: Config,
             device: torch.device) -> dict:
    """Write the kept weights, config.json and summary.json (with the val metrics of those weights),
    then drop the checkpoint: the run is complete, nothing is left to resume. Returns the summary."""
    save_file(cpu_weights(model), str(out / "model.safetensors"))
    meta = dataclasses.replace(meta, best_epoch=summary["best_epoch"],
                               output=model.output_names[int(getattr(model, "selected", -1)) + 1])
    write_json(out / "config.json", meta.to_json())
    summary = {**summary, "videos": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}}
    if data.val:
        summary["val"], _ = score_rows(model, data, data.val, cfg, meta, device)
    write_json(out / "summary.json", summary)
    (out / CHECKPOINT).unlink(missing_ok=True)
    return summary


def run_meta(data: Data, cfg: Config, paths: dict) -> RunMeta:
    """What a run's config.json records before training (best_epoch and output come after)."""
    task, classes = data.labels.task, data.labels.classes
    meta = RunMeta(task, classes, data.videos.dim, 1 if task == "regression" else len(classes), cfg.to_dict(),
                   data.fingerprint, **paths, provenance=data.provenance or {},
                   versions={"torch": torch.__version__, "numpy": np.__version__})
    if task == "regression":  # standardise targets so lr and init suit any unit
        y = data.labels.target_array(data.train)
        meta.target_mean, meta.target_std = float(y.mean()), float(y.std()) or 1.0
    return meta


def train_epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, data: Data, y_all: torch.Tensor,
                cfg: Config, schedule: Schedule, step: int, std: torch.Tensor | None,
                rng: np.random.Generator, device: torch.device,
                ema: torch.nn.Module | None = None) -> tuple[float, int, float]:
    """One pass over the train split: (mean task loss, steps taken so far, the last learning rate).
    Each branch head's loss is added with weight aux_loss (averaged over branches), and the
    summary's group lasso as a loss term or a proximal step (`lasso`); `ema` follows the weights
    after every step."""
    model.train()
    task, loss_sum, seen, lr = data.labels.task, 0.0, 0, schedule(step)
    for rows, x, t, m in epoch_batches(data.videos, data.train, cfg, rng, device):
        x, m = augment(x, m, cfg.data, std, rng)
        y = y_all[torch.from_numpy(rows)].to(device)
        lr = schedule(step)
        with autocast(device):
            logits, aux = model.outputs(x, t, m)
        loss = loss_fn(task, logits, y)
        extra = sum(loss_fn(task, a, y) for a in aux) * (cfg.loss.aux_loss / max(1, len(aux)))
        optimizer_step(opt, model, loss + extra + sparsity(model, cfg), lr, cfg.optim.grad_clip)
        proximal_step(model, cfg, lr)
        if ema is not None:
            average_weights(ema, model, cfg.optim.ema, step)
        loss_sum += loss.item() * len(rows)
        seen += len(rows)
        step += 1
    return loss_sum / seen, step, lr


def output_note(model: torch.nn.Module) -> str:
    names = model.output_names
    return f" (predicting with the {names[int(model.selected) + 1]} head)" if len(names) > 1 else ""


def select_output(model: torch.nn.Module, scored: list[dict], monitor: str) -> dict:
    """Point the model at its output (fused head or a branch head) best on `monitor`; its metrics.
    With one output there is nothing to choose. The fused head wins ties."""
    if len(scored) == 1:
        return scored[0]
    best = 0
    for k, s in enumerate(scored[1:], 1):
        if s.get(monitor) is not None and better(monitor, s[monitor], scored[best].get(monitor)):
            best = k
    model.selected.fill_(best - 1)
    return {**scored[best], "output": model.output_names[best]}


def _held(videos: AnyVideos) -> str:
    if videos.lazy:
        return f"features read lazily, at most {videos.store.budget / 2**20:.0f} MiB held"
    return f"{videos.nbytes / 2**20:.1f} MiB of features in memory"


def check_resumable(out: Path, state: dict, cfg: Config, fingerprint: dict) -> None:
    """A checkpoint continues only the run that wrote it: same options (device, memory aside), same cache."""
    free = ("device", "data.memory_budget")  # where and how the features are held: the run is the same
    saved = {k: v for k, v in saved_config(state["config"]).flat().items() if k not in free}
    now = {k: v for k, v in cfg.flat().items() if k not in free}
    if saved != now:
        diff = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now))
                         if saved.get(k) != now.get(k))
        raise RunError(f"{out}: cannot resume with other options than the interrupted run's ({diff}); "
                       "run with the same options, or --overwrite to start again")
    if state["fingerprint"] != fingerprint:
        raise RunError(f"{out}: the cache's fingerprint differs from the one the interrupted run trained on")


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
