"""Which frames to read: pure functions of the frames' presentation times and the policy."""

from __future__ import annotations

import math

import numpy as np


def uniform(n: int, k: int) -> np.ndarray:
    """k indices spread uniformly over range(n): the centre of each of k equal segments."""
    if k >= n:
        return np.arange(n, dtype=np.int64)
    return np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64)


def select(pts: np.ndarray, policy: dict) -> np.ndarray:
    """Indices (increasing, unique) of the frames to read.

    pts: presentation times in seconds of every frame, in presentation order.
    policy: {"policy": "fps"|"every"|"num_frames", ..., "max_frames": int | None}.
    """
    pts = np.asarray(pts, dtype=np.float64)
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    kind = policy["policy"]
    if kind == "every":
        idx = np.arange(0, n, int(policy["every"]), dtype=np.int64)
    elif kind == "num_frames":
        idx = uniform(n, int(policy["num_frames"]))
    elif kind == "fps":
        idx = _by_time(pts, float(policy["fps"]))
    else:
        raise ValueError(f"unknown sampling policy {kind!r}")
    cap = policy.get("max_frames")
    if cap is not None and len(idx) > cap:
        idx = idx[uniform(len(idx), int(cap))]
    return idx


def _by_time(pts: np.ndarray, fps: float) -> np.ndarray:
    """For targets t0, t0 + 1/fps, ... up to the last frame: the frame nearest each (ties: earlier)."""
    t0, end = float(pts.min()), float(pts.max())
    eps = 1e-6
    count = math.floor((end - t0) * fps + eps) + 1
    targets = t0 + np.arange(count, dtype=np.float64) / fps
    order = np.argsort(pts, kind="stable")  # decoders may give out-of-order times on broken files
    sp = pts[order]
    right = np.clip(np.searchsorted(sp, targets, side="left"), 0, len(sp) - 1)
    left = np.clip(right - 1, 0, len(sp) - 1)
    take_left = np.abs(targets - sp[left]) <= np.abs(sp[right] - targets) + eps
    chosen = order[np.where(take_left, left, right)]
    return np.unique(chosen)  # sorted; drops repeats when fps exceeds the video's rate
