"""Synthetic feature caches for tests and benchmarks (written straight through storage, no videos).

`order_task` is the one that matters: each pair of videos holds the *same* frames, with two
events A and B swapped, and the label is their order ("ab" or "ba"). Any order-blind model
(mean pooling) sees identical inputs for both videos of a pair, so it is at chance by construction.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

import storage

FINGERPRINT = {"backbone": "synthetic", "fps": 1.0}


def write_cache(root: str | os.PathLike, videos: Iterable[tuple[str, np.ndarray, np.ndarray]], dim: int,
                per_shard: int = 64, fmt: str = "zarr") -> Path:
    """Write (id, features [T, D], timestamps [T]) into a float16 cache, `per_shard` videos a shard."""
    root = Path(root)
    with storage.CacheWriter(root, dim=dim, dtype="float16", fingerprint=FINGERPRINT) as w:
        sw = None
        for vid, feats, times in videos:
            if sw is None:
                sw = w.shard_writer(w.allocate_shard(fmt))
            sw.add(vid, feats, times)
            if len(sw) >= per_shard:
                sw.commit()
                sw = None
        if sw is not None:
            sw.commit()
    return root


def write_labels(path: str | os.PathLike, rows: Iterable[tuple[str, str, str]]) -> Path:
    path = Path(path)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video_id", "label", "split"])
        w.writerows(rows)
    return path


def _split(i: int, n: int, val: float, test: float) -> str:
    if i < n * test:
        return "test"
    if i < n * (test + val):
        return "val"
    return "train"


def order_task(root: str | os.PathLike, pairs: int = 64, frames: int = 24, dim: int = 16, event_len: int = 3,
               val: float = 0.2, test: float = 0.2, seed: int = 0) -> tuple[Path, Path]:
    """A cache + labels.csv where the label is the order of two events; both videos of a pair
    (same split) have exactly the same frames. Returns (cache dir, labels path)."""
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((2, dim)) * 2.0  # the two events' signatures
    times = np.arange(frames, dtype=np.float32)  # 1 frame per second
    videos, rows = [], []
    for p in range(pairs):
        base = rng.standard_normal((frames, dim))
        slots = np.sort(rng.choice(frames // event_len, size=2, replace=False)) * event_len
        first, second = base.copy(), base.copy()
        first[slots[0]:slots[0] + event_len] += a  # A then B
        first[slots[1]:slots[1] + event_len] += b
        second[slots[0]:slots[0] + event_len] = first[slots[1]:slots[1] + event_len]  # swap the blocks
        second[slots[1]:slots[1] + event_len] = first[slots[0]:slots[0] + event_len]
        split = _split(p, pairs, val, test)
        for label, x in (("ab", first), ("ba", second)):
            vid = f"pair{p:04d}_{label}.mp4"
            videos.append((vid, x.astype(np.float16), times))
            rows.append((vid, label, split))
    root = Path(root)
    write_cache(root / "cache", videos, dim)
    return root / "cache", write_labels(root / "labels.csv", rows)


def class_task(root: str | os.PathLike, videos: int = 48, classes: int = 3, frames: int = 20, dim: int = 16,
               val: float = 0.25, test: float = 0.25, seed: int = 0, lengths: tuple[int, int] | None = None
               ) -> tuple[Path, Path]:
    """An easy task: each class shifts every frame along its own direction (learnable in a few
    steps). `lengths` (lo, hi) draws a random length per video instead of `frames`."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    out, rows = [], []
    for i in range(videos):
        c = i % classes
        n = frames if lengths is None else int(rng.integers(lengths[0], lengths[1] + 1))
        x = rng.standard_normal((n, dim)) + centres[c]
        vid = f"v{i:04d}.mp4"
        out.append((vid, x.astype(np.float16), np.arange(n, dtype=np.float32) * 0.5))
        rows.append((vid, f"class{c}", _split(i // classes, videos // classes, val, test)))
    root = Path(root)
    write_cache(root / "cache", out, dim)
    return root / "cache", write_labels(root / "labels.csv", rows)


def regression_task(root: str | os.PathLike, videos: int = 30, offset: float = 0.05, scale: float = 0.1,
                    seed: int = 0) -> tuple[Path, Path, list[tuple[str, str, str]]]:
    """Video i's frames sit around i / 10 and its label is offset + scale * i; every third video is
    test, the rest train. Returns (cache dir, labels path, the label rows)."""
    rng = np.random.default_rng(seed)
    out, rows = [], []
    for i in range(videos):
        x = rng.standard_normal((10, 8)) + i / 10
        out.append((f"v{i}.mp4", x.astype(np.float16), np.arange(10, dtype=np.float32)))
        rows.append((f"v{i}.mp4", f"{offset + scale * i:.2f}", "test" if i % 3 == 0 else "train"))
    root = Path(root)
    write_cache(root / "cache", out, dim=8)
    return root / "cache", write_labels(root / "l.csv", rows), rows
