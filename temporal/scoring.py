"""Scores of videos from a model (averaged over views), their metrics, and the score files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from temporal.config import Config
from temporal.data import (
    AnyVideos,
    collate,
    eval_batches,
    eval_clips,
)
from temporal.dataset import Data
from temporal.labels import Labels
from temporal.loop import autocast, to_scores
from temporal.meta import RunMeta
from temporal.metrics import clean, compute_metrics, scores_loss


@torch.inference_mode()
def video_scores(model: torch.nn.Module, videos: AnyVideos, rows: list[int], cfg: Config, task: str,
            device: torch.device, every: bool = False) -> np.ndarray:
    """Scores per row (probabilities; standardised predictions for regression), averaged over views;
    `every`: of each of the model's outputs (fused head, branch heads), stacked first."""
    model.eval()
    clips = eval_clips(videos, rows, cfg.data.frames, cfg.eval.mode, cfg.data.sampling, cfg.eval.views)
    where = {v: r for r, v in enumerate(rows)}
    sums: np.ndarray | None = None
    counts = np.zeros(len(rows))
    batches = eval_batches(clips, cfg.optim.batch_size * cfg.data.frames)
    for k, batch in enumerate(batches):
        x, t, m = collate(videos, batch, device)
        videos.prefetch(c.video for c in (batches[k + 1] if k + 1 < len(batches) else []))  # next one
        with autocast(device):
            if every:
                logits, aux = model.outputs(x, t, m)
                s = torch.stack([to_scores(task, o) for o in (logits, *aux)], dim=1)
            else:
                s = to_scores(task, model(x, t, m))
        s = s.cpu().numpy().astype(np.float64)
        if sums is None:
            sums = np.zeros((len(rows), *s.shape[1:]))
        for c, si in zip(batch, s, strict=True):
            sums[where[c.video]] += si
            counts[where[c.video]] += 1
    if sums is None:
        return np.zeros((0,))
    mean = sums / counts.reshape(-1, *([1] * (sums.ndim - 1)))
    return np.moveaxis(mean, 1, 0) if every else mean


def full_length_note(cfg: Config, lengths: np.ndarray) -> str | None:
    """Training sees at most `frames` frames of a video, spread over all of it; full-length
    evaluation sees every frame, closer together than in training (the temporal stream's
    differences then span shorter steps). Say so when it happens."""
    if cfg.eval.mode != "full" or not len(lengths) or lengths.max() <= cfg.data.frames:
        return None
    frames = cfg.data.frames
    longer = int((lengths > frames).sum())
    return (f"eval_mode full: {longer} video(s) are longer than the {frames} frames training samples, "
            f"so evaluation sees their frames up to {lengths.max() / frames:.1f}x closer together than "
            "training did; train with frames >= the longest video (or eval_mode views) for the two to agree")


def score_rows(model, data: Data, rows: list[int], cfg: Config, meta: RunMeta, device
               ) -> tuple[dict, np.ndarray]:
    """(metrics incl. loss, scores in label units) for `rows`."""
    return score_array(video_scores(model, data.videos, rows, cfg, meta.task, device), data, rows, meta)


def score_outputs(model, data: Data, rows: list[int], cfg: Config, meta: RunMeta, device) -> list[dict]:
    """The metrics of each of the model's outputs (fused head, then each branch head) on `rows`."""
    every = video_scores(model, data.videos, rows, cfg, meta.task, device, every=True)
    return [score_array(s, data, rows, meta)[0] for s in every]


def score_array(scores: np.ndarray, data: Data, rows: list[int], meta: RunMeta) -> tuple[dict, np.ndarray]:
    task = meta.task
    y = data.labels.target_array(rows)
    if task == "regression":
        loss = scores_loss(task, (y - meta.target_mean) / meta.target_std, scores)
    else:
        loss = scores_loss(task, y, scores)
    scores = meta.label_units(scores)
    return {"videos": len(rows), "loss": clean(loss), **compute_metrics(task, y, scores)}, scores


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
