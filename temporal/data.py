"""Videos from the cache in memory, frame sampling, and padded batches with masks.

Each shard is read once (`iter_videos`), and a video's features stay a float16 view into its
shard's array: no per-video copy is made until a batch gathers the sampled frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Clip:
    """The frames of one video that go into one batch row."""

    video: int  # index into the dataset's videos
    index: np.ndarray  # frame indices, increasing


class Videos:
    """The labelled videos of a cache, held in memory as views of the shards' arrays."""

    def __init__(self, cache, ids: list[str]):
        want = {v: i for i, v in enumerate(ids)}
        self.ids = list(ids)
        self.feats: list[np.ndarray | None] = [None] * len(ids)
        self.times: list[np.ndarray | None] = [None] * len(ids)
        for video in cache.iter_videos():
            i = want.get(video.id)
            if i is not None:
                self.feats[i], self.times[i] = video.features, video.timestamps
        lost = [v for v, f in zip(ids, self.feats, strict=True) if f is None]
        if lost:
            raise KeyError(f"{len(lost)} video(s) not found in the cache: {lost[:5]}")
        self.dim = int(cache.dim)
        self.lengths = np.array([len(f) for f in self.feats], dtype=np.int64)

    @classmethod
    def from_arrays(cls, feats: list, times: list, dim: int) -> Videos:
        """Videos given as arrays (features [T, D], timestamps [T] seconds), e.g. from another tool."""
        if len(feats) != len(times):
            raise ValueError(f"{len(feats)} feature arrays but {len(times)} timestamp arrays")
        self = cls.__new__(cls)
        self.ids, self.dim, self.feats, self.times = [str(i) for i in range(len(feats))], int(dim), [], []
        for i, (f, t) in enumerate(zip(feats, times, strict=True)):
            f, t = np.asarray(f), np.asarray(t, dtype=np.float32)
            if f.ndim != 2 or f.shape[1] != dim or len(f) == 0 or t.shape != (len(f),):
                raise ValueError(f"video {i}: expected features [T, {dim}] with T > 0 and timestamps [T], "
                                 f"got {f.shape} and {t.shape}")
            self.feats.append(f if f.dtype in (np.float16, np.float32) else f.astype(np.float32))
            self.times.append(t)
        self.lengths = np.array([len(f) for f in self.feats], dtype=np.int64)
        return self

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(sum(f.nbytes + t.nbytes for f, t in zip(self.feats, self.times, strict=True)))


def sample_frames(length: int, frames: int, mode: str, rng: np.random.Generator) -> np.ndarray:
    """Training sample: `frames` increasing indices (all of them if the video is shorter)."""
    if length <= frames:
        return np.arange(length)
    if mode == "window":
        start = int(rng.integers(0, length - frames + 1))
        return np.arange(start, start + frames)
    # one frame from each of `frames` segments of whole frames, at a random place in it (TSN):
    # covers the whole video every time, different steps see different frames, and no frame is
    # taken twice (segments of fractional width would share frames at their edges)
    edges = np.round(np.linspace(0, length, frames + 1)).astype(np.int64)
    return edges[:-1] + (rng.random(frames) * np.diff(edges)).astype(np.int64)


def view_frames(length: int, frames: int, mode: str, views: int) -> list[np.ndarray]:
    """Evaluation samples: `views` deterministic samples drawn the way training draws them."""
    if length <= frames:
        return [np.arange(length)]
    if mode == "window":
        starts = np.unique(np.round(np.linspace(0, length - frames, views)).astype(np.int64))
        return [np.arange(s, s + frames) for s in starts]
    edges = np.round(np.linspace(0, length, frames + 1)).astype(np.int64)
    return [edges[:-1] + ((v + 0.5) / views * np.diff(edges)).astype(np.int64) for v in range(views)]


def eval_clips(videos: Videos, rows: list[int], frames: int, mode: str, sampling: str,
               views: int) -> list[Clip]:
    """The clips evaluation runs over: every frame (mode 'full'), or `views` samples per video."""
    clips = []
    for i in rows:
        n = int(videos.lengths[i])
        if mode == "full":
            clips.append(Clip(i, np.arange(n)))
        else:
            clips += [Clip(i, idx) for idx in view_frames(n, frames, sampling, views)]
    return clips


def eval_batches(clips: list[Clip], frame_budget: int) -> list[list[Clip]]:
    """Clips grouped by length under a budget of frames per batch, so full-length evaluation of
    long videos keeps memory bounded and short videos are not padded to long ones."""
    order = sorted(clips, key=lambda c: -len(c.index))
    batches, cur, cur_len = [], [], 0
    for c in order:
        n = max(len(c.index), 1)
        width = max(cur_len, n)
        if cur and width * (len(cur) + 1) > frame_budget:
            batches.append(cur)
            cur, width = [], n
        cur.append(c)
        cur_len = width
    if cur:
        batches.append(cur)
    return batches


def collate(videos: Videos, clips: list[Clip], device: torch.device | str = "cpu"
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [B, L, D] float32, t [B, L] float32 seconds, mask [B, L] bool (True = a real frame).

    Padding is zeros at the end; the model must (and is tested to) ignore it.
    """
    width = max(1, max(len(c.index) for c in clips))
    x = np.zeros((len(clips), width, videos.dim), dtype=videos.feats[clips[0].video].dtype)
    t = np.zeros((len(clips), width), dtype=np.float32)
    mask = np.zeros((len(clips), width), dtype=bool)
    for b, c in enumerate(clips):
        n = len(c.index)
        x[b, :n] = videos.feats[c.video][c.index]
        t[b, :n] = videos.times[c.video][c.index]
        mask[b, :n] = True
    non_blocking = torch.device(device).type == "cuda"
    # move float16 and convert on the device: half the bytes over the bus
    xt = torch.from_numpy(x).to(device, non_blocking=non_blocking).float()
    return xt, torch.from_numpy(t).to(device), torch.from_numpy(mask).to(device)


def frame_sample(videos: Videos, rows, rng: np.random.Generator, max_frames: int = 20000) -> np.ndarray:
    """[N, D] float64: at most `max_frames` frames drawn without replacement from videos `rows`."""
    rows = np.asarray(list(rows))
    counts = videos.lengths[rows]
    total = int(counts.sum())
    picks = np.sort(rng.choice(total, size=min(max_frames, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    which = np.searchsorted(starts, picks, side="right") - 1
    X = np.stack([videos.feats[rows[w]][p - starts[w]] for w, p in zip(which, picks, strict=True)])
    return X.astype(np.float64)


def principal_components(videos: Videos, rows, dims: int, rng: np.random.Generator, max_frames: int = 20000
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], projection [D, P]) onto the `dims` leading principal components of the frames of
    videos `rows` (a sample of at most `max_frames`), whitened: each output has unit variance."""
    X = frame_sample(videos, rows, rng, max_frames)
    mean = X.mean(0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    dims = min(dims, len(s))
    scale = np.maximum(s[:dims] / np.sqrt(max(1, len(X) - 1)), 1e-6)
    return mean.astype(np.float32), (vt[:dims].T / scale).astype(np.float32)


def prototypes(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    """[k, D] float32: spherical k-means centres of the frames X (unit rows), the kinds of shot
    the frames fall into, found without labels."""
    from sklearn.cluster import KMeans

    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    k = min(k, len(X))
    centres = KMeans(k, n_init=3, random_state=seed).fit(X).cluster_centers_
    return (centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)).astype(np.float32)
