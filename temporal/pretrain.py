"""Self-supervised pre-training of STAN on the unlabelled cache: timeline reconstruction.

A video goes through STAN up to its representation z (what the classification head reads). A small
decoder then has to say, from z and a time t alone, what the frame at t looked like: its features
projected on the cache's leading principal components (whitened). To answer for every t, z must
hold *what happens when* in the whole video, which is what order, count and position labels ask
about, and no label is needed. Fine-tuning (`train` with `init=RUN`) starts from these weights,
all but the heads and the event summary, which it fits anew (so with `stream_input: mixed` the
pre-trained temporal stream reads assignments to prototypes other than those it was trained on; that
is the variant measured).

A pre-training run directory holds config.json (kind "pretrain"), model.safetensors (STAN without
its head) and history.csv. A run of 0 epochs holds config.json alone: `init` from it is the random
init, which lets a pipeline keep its pretrain stage in place and switch it off.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

import storage
from storage.console import progress
from storage.device import pick_device
from storage.files import write_json
from temporal.config import Config, ConfigError, as_config, saved_config, section_paths
from temporal.data import principal_components
from temporal.dataset import open_videos
from temporal.loop import (
    Schedule,
    augment,
    cpu_weights,
    epoch_batches,
    feature_std,
    fit_without_labels,
    make_optimizer,
    optimizer_step,
)
from temporal.meta import RUN_FORMAT
from temporal.model import build_model, sinusoid
from temporal.run import RunError, read_run_json, write_history

# what fine-tuning learns anew, never handed over: the heads, and the event summary (fitted again on
# the labelled videos; the summary's projection trained to reconstruct frames made count fall from
# 0.96 to 0.35 at 25 % of the labels, docs/ablations.md)
PER_TASK = ("heads.", "branch_heads.", "selected", "events.")

class Decoder(nn.Module):
    """(z [B, E], t [B, T] seconds) -> the frames' target features [B, T, P]."""

    def __init__(self, embed_dim: int, out_dim: int, hidden: int = 256, time_dim: int = 64):
        super().__init__()
        self.time_dim = time_dim
        self.mlp = nn.Sequential(nn.Linear(embed_dim + time_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, out_dim))

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        q = sinusoid(t, self.time_dim, min_period=1.0)
        return self.mlp(torch.cat([z[:, None].expand(-1, t.shape[1], -1), q], dim=-1))


def pretrain(cache_dir: str | os.PathLike, out_dir: str | os.PathLike, config: Config | dict | None = None,
             exclude: set[str] | frozenset[str] = frozenset(), targets: int = 64, log=print,
             epochs: int | None = None, **overrides) -> Path:
    """Pre-train STAN's streams on every video of the cache not in `exclude` (no labels read).

    Uses the architecture and optimisation options of `config` (lr, batch_size, frames,
    augmentation, seed) for `epochs` (default: its optim.epochs; 0 writes the random-init run);
    writes the run to `out_dir` and returns it.
    """
    cfg = as_config(config, **overrides)
    epochs = cfg.optim.epochs if epochs is None else epochs
    if epochs < 0:
        raise ConfigError(f"pre-training epochs must be >= 0, got {epochs}")
    if epochs:
        cfg = cfg.replace(epochs=epochs)  # the schedule's length
    if cfg.model != "stan" or cfg.stan.streams == "none":
        raise ConfigError("pre-training trains STAN's streams: model must be 'stan' and streams not 'none' "
                          "(e.g. --streams both)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.optim.seed)
    rng = np.random.default_rng(cfg.optim.seed)
    cache = storage.open_cache(cache_dir)
    ids = [v for v in cache.video_ids if v not in exclude and cache.num_frames(v) > 0]
    if not ids:
        raise RunError(f"{cache_dir}: no video left to pre-train on")
    if epochs == 0:
        write_json(out / "config.json", run_json(cache_dir, cache, cfg, len(ids), 0))
        (out / "model.safetensors").unlink(missing_ok=True)
        log(f"pre-training off (0 epochs): {out} says train from a random init")
        return out
    videos = open_videos(cache, ids, cfg, log)
    mean, proj = (torch.from_numpy(a) for a in
                  principal_components(videos, range(len(ids)), max(targets, cfg.stan.pca_dims), rng))
    std = torch.from_numpy(feature_std(videos, rng)).to(device)
    model = build_model(cfg, videos.dim, 1)
    fit_without_labels(model, videos, range(len(ids)), cfg, pca=(mean.numpy(), proj.numpy()))
    model = model.to(device)
    mean_t, proj_t = mean.to(device), proj[:, :targets].to(device)
    decoder = Decoder(model.embed_dim, proj_t.shape[1]).to(device)
    params = nn.ModuleList([model, decoder])
    opt = make_optimizer(params, cfg.optim, device)
    rows = np.arange(len(ids))
    schedule = Schedule.of(cfg.optim, len(rows))
    log(f"pre-training on {len(ids)} unlabelled videos ({int(videos.lengths.sum())} frames), "
        f"{proj_t.shape[1]} target dims, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params "
        f"on {device}")
    history, step, t0 = [], 0, time.time()
    bar = progress(range(1, epochs + 1), desc="pretrain", unit="ep")
    for epoch in bar:
        params.train()
        loss_sum, seen = 0.0, 0
        for sel, x, t, m in epoch_batches(videos, rows, cfg, rng, device):
            target = (x - mean_t) @ proj_t  # what the clean frames were, dropped ones included
            xa, ma = augment(x, m, cfg.data, std, rng)
            pred = decoder(model.embed(xa, t, ma), t)
            loss = _masked_mean(F.mse_loss(pred, target, reduction="none").mean(-1), m)
            optimizer_step(opt, params, loss, schedule(step), cfg.optim.grad_clip)
            loss_sum += loss.item() * len(sel)
            seen += len(sel)
            step += 1
        history.append({"epoch": epoch, "loss": loss_sum / seen, "lr": opt.param_groups[0]["lr"],
                        "seconds": round(time.time() - t0, 3)})
        write_history(out / "history.csv", history)
        bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
    bar.close()
    save_file(cpu_weights(model, skip=PER_TASK), str(out / "model.safetensors"))
    write_json(out / "config.json", {
        **run_json(cache_dir, cache, cfg, len(ids), epochs), "targets": int(proj_t.shape[1]),
        "final_loss": history[-1]["loss"], "train_seconds": round(time.time() - t0, 2)})
    log(f"pre-trained {len(history)} epochs on {len(ids)} videos: reconstruction loss "
        f"{history[0]['loss']:.4f} -> {history[-1]['loss']:.4f} (1.0 = predicting the mean), "
        f"{time.time() - t0:.1f} s -> {out}")
    return out


def run_json(cache_dir, cache, cfg: Config, videos: int, epochs: int) -> dict:
    """What every pre-training run's config.json records."""
    return {"format": RUN_FORMAT, "kind": "pretrain", "in_dim": int(cache.dim), "videos": videos,
            "epochs": epochs, "fingerprint": cache.fingerprint, "cache": str(cache_dir),
            "config": cfg.to_dict()}


def _masked_mean(err: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp(min=1)


SUMMARY_ONLY = ("stan.prototypes", "stan.event_gaps", "stan.event_norm")  # options of events.* alone


def load_pretrained(model: nn.Module, run_dir: str | os.PathLike, cfg: Config, in_dim: int,
                    fingerprint: dict | None = None) -> str:
    """Load a pre-training run's weights into `model` (everything but the head); returns a note."""
    run = Path(run_dir)
    meta = read_run_json(run, "pretrain")
    if meta.get("epochs") == 0:  # nothing to hand over, whatever it was built as
        return f"random init ({run} is pre-training switched off: 0 epochs)"
    theirs = saved_config(meta["config"])  # an option newer than the run reads as it trained
    # the summary is fitted anew by fine-tuning (PER_TASK), so the options that shape it alone are
    # not part of what is handed over
    differ = [f"{p}={theirs.get(p)!r} (here {cfg.get(p)!r})" for p in section_paths("stan")
              if p not in SUMMARY_ONLY and theirs.get(p) != cfg.get(p)]
    if differ:
        raise ConfigError(f"init {run} was pre-trained with another architecture: " + ", ".join(differ))
    if meta["in_dim"] != in_dim or (fingerprint is not None and meta["fingerprint"] != fingerprint):
        raise RunError(f"init {run} was pre-trained on features of another backbone or preprocessing")
    state = {k: v for k, v in load_file(str(run / "model.safetensors")).items()
             if not k.startswith(PER_TASK)}  # runs of older versions hold the summary too
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(PER_TASK) for k in missing):
        raise RunError(f"init {run}: weights do not fit the model ({missing[:3]}, {unexpected[:3]})")
    return f"initialised from {run} (pre-trained on {meta['videos']} videos)"
