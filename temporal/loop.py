"""The mechanics of a training step and an epoch, shared by `train` and `pretrain`: batches,
augmentation, the loss, the AdamW step and its learning-rate schedule, what is fitted before training."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from temporal.config import Config, DataConfig, OptimConfig
from temporal.data import (
    AnyVideos,
    Clip,
    collate,
    eval_batches,
    eval_clips,
    frame_sample,
    principal_components,
    prototypes,
    sample_frames,
    upcoming,
)


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


def no_decay(name: str, p: torch.nn.Parameter) -> bool:
    """Biases, norms and learned tokens (CLS, mask) are not shrunk; weight matrices are (nanoGPT)."""
    return p.dim() < 2 or name.rsplit(".", 1)[-1] in ("cls", "mask_token")


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": weight_decay},
            {"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0}]


def fit_without_labels(model: torch.nn.Module, videos: AnyVideos, rows, cfg: Config,
                       pca: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Fit what STAN takes from the frames alone before training, on videos `rows` (no label read):
    the PCA input map (`pca_dims`, or `pca` when already computed), the event prototypes (kept
    as fitted, untrained, with `prototypes: fitted`) and the mean of the summary's numbers."""
    project, events = getattr(model, "project", None), getattr(model, "events", None)
    rng = np.random.default_rng(cfg.optim.seed)
    if project is not None:
        pca = pca or principal_components(videos, rows, cfg.stan.pca_dims, rng)
        project.fit(*(torch.from_numpy(a) for a in pca))
    if events is not None:
        X = frame_sample(videos, rows, rng)
        if project is not None:
            X = (X - pca[0]) @ pca[1][:, : cfg.stan.pca_dims]
        events.fit(torch.from_numpy(prototypes(X, cfg.stan.events, cfg.optim.seed)))
        events.protos.requires_grad_(cfg.stan.prototypes == "learned")  # fitted: the optimiser skips them
        if cfg.stan.event_norm == "centre":
            events.proj[0].fit(summary_numbers(model, videos, rows, cfg))


@torch.no_grad()
def summary_numbers(model: torch.nn.Module, videos: AnyVideos, rows, cfg: Config) -> torch.Tensor:
    """[N, n]: the event summary's numbers over `eval.views` samples of `data.frames` frames of each
    of videos `rows`, as training reads them (onsets count sampled frames), whatever `eval.mode`."""
    clips = eval_clips(videos, list(rows), cfg.data.frames, "views", cfg.data.sampling, cfg.eval.views)
    out = [model.summary_numbers(*collate(videos, batch))
           for batch in eval_batches(clips, cfg.optim.batch_size * cfg.data.frames)]
    return torch.cat(out)


def train_batch(videos: AnyVideos, rows, data: DataConfig, rng: np.random.Generator, device: torch.device):
    """One training batch: `data.frames` frames sampled from each video, padded, on the device."""
    clips = [Clip(int(i), sample_frames(int(videos.lengths[i]), data.frames, data.sampling, rng))
             for i in rows]
    return collate(videos, clips, device)


def feature_std(videos: AnyVideos, rng: np.random.Generator, max_frames: int = 5000) -> np.ndarray:
    """[D] float32: each feature's spread over (a sample of) the videos' frames; noise is scaled by it."""
    v = rng.integers(len(videos), size=max_frames)
    f = np.array([int(rng.integers(videos.lengths[i])) for i in v], dtype=np.int64)
    return videos.gather(v, f).astype(np.float32).std(0) + 1e-6


def augment(x: torch.Tensor, mask: torch.Tensor, data: DataConfig, std: torch.Tensor | None,
            rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature-space augmentation: Gaussian noise (`aug_noise` x each feature's std) and frames
    dropped at random (`aug_drop`, by masking: every video keeps at least its first frame)."""
    if data.aug_noise > 0:
        noise = torch.randn(x.shape, generator=_torch_rng(rng)).to(x.device)
        x = x + data.aug_noise * std * noise
    if data.aug_drop > 0:
        keep = torch.from_numpy(rng.random(tuple(mask.shape)) >= data.aug_drop).to(mask.device)
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


@torch.no_grad()
def average_weights(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """Move `ema`'s weights towards `model`'s after optimiser step `step` (from 0). The decay is
    warmed up, min(decay, (1 + step) / (10 + step)), so the first steps do not drag the init along;
    integer buffers (the selected output) are copied."""
    d = min(decay, (1 + step) / (10 + step))
    for a, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
        if a.dtype.is_floating_point:
            a.lerp_(p, 1.0 - d)
        else:
            a.copy_(p)


def make_optimizer(module: torch.nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over `module` (weight decay on weight matrices only), with fused kernels on CUDA."""
    return torch.optim.AdamW(param_groups(module, optim.weight_decay), lr=optim.lr, betas=(0.9, 0.95),
                             fused=device.type == "cuda")


@dataclass(frozen=True)
class Schedule:
    """The learning rate of each optimiser step over `cfg.optim.epochs` epochs (see `lr_at`)."""

    lr: float
    total: int  # steps
    warmup: int  # steps

    @classmethod
    def of(cls, optim: OptimConfig, videos: int) -> Schedule:
        per_epoch = math.ceil(videos / optim.batch_size)
        return cls(optim.lr, optim.epochs * per_epoch, round(optim.warmup * per_epoch))

    def __call__(self, step: int) -> float:
        return lr_at(step, self.total, self.warmup, self.lr)


def epoch_batches(videos: AnyVideos, rows, cfg: Config, rng: np.random.Generator, device: torch.device
                  ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch: `rows` in a fresh random order, `cfg.optim.batch_size` videos at a time, as (rows, x, t,
    mask); the next batch's features are read while this one computes."""
    perm = rng.permutation(rows)
    for b in range(0, len(perm), cfg.optim.batch_size):
        sel = perm[b:b + cfg.optim.batch_size]
        x, t, m = train_batch(videos, sel, cfg.data, rng, device)
        videos.prefetch(upcoming(perm, b, cfg.optim.batch_size))
        yield sel, x, t, m


def cpu_weights(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The model's state on the CPU, contiguous (as safetensors saves it), less keys starting with `skip`."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
            if not (skip and k.startswith(skip))}
