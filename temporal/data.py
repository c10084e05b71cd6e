"""Videos from the cache (in memory, or read lazily within a memory budget), frame sampling, and
padded batches with masks.

`Videos` reads each shard once (`iter_videos`) and keeps a video's features as a float16 view
into its shard's array: no per-video copy is made until a batch gathers the sampled frames.
`LazyVideos` serves the same frames from a cache larger than memory: a video is read from its
shard when a batch samples it, through a least-recently-used store of shard chunks whose bytes
stay under the budget. Both give the same frames in the same order, so a run with the same seed
draws the same batches either way. `load_videos` picks one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import torch


@dataclass
class Clip:
    """The frames of one video that go into one batch row."""

    video: int  # index into the dataset's videos
    index: np.ndarray  # frame indices, increasing


class Videos:
    """The labelled videos of a cache, held in memory as views of the shards' arrays."""

    lazy = False

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
        self.dim, self.dtype = int(cache.dim), np.dtype(cache.dtype)
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
        self.dtype = np.result_type(*(f.dtype for f in self.feats)) if self.feats else np.dtype(np.float32)
        self.lengths = np.array([len(f) for f in self.feats], dtype=np.int64)
        return self

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(sum(f.nbytes + t.nbytes for f, t in zip(self.feats, self.times, strict=True)))

    def frames(self, i: int, index=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """(features [n, D], timestamps [n]) of frames `index` of video `i`."""
        return self.feats[i][index], self.times[i][index]

    def gather(self, videos: np.ndarray, frames: np.ndarray) -> np.ndarray:
        """[N, D]: frame frames[k] of video videos[k], for every k."""
        return np.stack([self.feats[v][f] for v, f in zip(videos, frames, strict=True)])

    def prefetch(self, rows) -> None:
        """Videos `rows` come next (nothing to do: they are in memory)."""


class ChunkStore:
    """Shard chunks read from a cache, least recently used dropped first, under `budget` bytes.

    Features are kept chunk by chunk (the unit a shard stores and reads) and dropped least
    recently used first; timestamps a shard at a time, kept (4 bytes a frame; their chunks are
    longer). `nbytes` is what it holds now, `peak` the most it ever held (the arrays' bytes,
    timestamps included): at most the budget, or one chunk more when the budget is smaller than
    the timestamps plus one chunk. Thread-safe, so a prefetching thread may fill it while the
    model runs: one thread reads the cache at a time, and a chunk already held is served while
    another is being read.
    """

    def __init__(self, cache, budget: int):
        self.cache, self.budget = cache, int(budget)
        self._chunks: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # (shard, chunk)
        self._times: dict[int, np.ndarray] = {}  # shard -> its timestamps
        self._rows: dict[int, int] = {}
        self._pinned = self._held_chunks = 0
        self._held = threading.Lock()  # the store's own state
        self._io = threading.Lock()  # the cache reader (its open shards are not thread-safe)
        self.nbytes = self.peak = self.reads = 0

    def rows(self, s: int, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Features and timestamps of rows a:b of shard `s`, from the chunks holding them."""
        if b <= a:
            return np.zeros((0, self.cache.dim), self.cache.dtype), np.zeros(0, np.float32)
        n = self._rows.get(s)
        if n is None:
            with self._io:
                n = self._rows[s] = self.cache.chunk_rows(s)
        times = self._times.get(s)
        if times is None:  # 4 bytes a frame (0.3 % of D = 768 float16 features): kept, not dropped
            with self._io:
                times = self._times.get(s)
                if times is None:
                    times = self.cache.read_array(s, "timestamps")
                    with self._held:
                        self._times[s] = times
                        self.reads += 1
                        self._pinned += times.nbytes
                        self._count(0)
        parts = []
        for c in range(a // n, (b - 1) // n + 1):
            lo = c * n
            f = self._get((s, c), lambda lo=lo: self.cache.read_array(
                s, "features", lo, min(lo + n, self.cache.entries[s]["frames"])))
            parts.append(f[max(a - lo, 0):b - lo])
        feats = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return feats, times[a:b]

    def _get(self, key: tuple[int, int], read) -> np.ndarray:
        with self._held:
            got = self._hit(key)
        if got is not None:
            return got
        with self._io:
            with self._held:
                got = self._hit(key)  # read by the other thread while we waited
            if got is not None:
                return got
            got = read()
        with self._held:
            self.reads += 1
            self._chunks[key] = got
            self._count(got.nbytes)
        return got

    def _count(self, added: int) -> None:
        """Account for `added` bytes just stored, dropping the least recently used chunks (never the
        one just added) until the total is within the budget."""
        self._held_chunks += added
        while len(self._chunks) > 1 and self._pinned + self._held_chunks > self.budget:
            self._held_chunks -= self._chunks.popitem(last=False)[1].nbytes
        self.nbytes = self._pinned + self._held_chunks
        self.peak = max(self.peak, self.nbytes)

    def _hit(self, key: tuple[int, int]) -> np.ndarray | None:
        got = self._chunks.get(key)
        if got is not None:
            self._chunks.move_to_end(key)
        return got


class LazyVideos:
    """The labelled videos of a cache, read from the shards as they are sampled (`Videos`' interface).

    Shard chunks are kept in a `ChunkStore` of `budget` bytes; each video's checksum is checked
    the first time it is read, as `Videos` checks it on loading. `prefetch(rows)` reads the next
    batch's videos in a background thread while the current step computes.
    """

    lazy = True

    def __init__(self, cache, ids: list[str], budget: int):
        lost = [v for v in ids if v not in cache]
        if lost:
            raise KeyError(f"{len(lost)} video(s) not found in the cache: {lost[:5]}")
        self.cache, self.ids = cache, list(ids)
        self.where = np.array([cache.locate(v) for v in ids], dtype=np.int64).reshape(-1, 3)
        self.lengths = self.where[:, 2] - self.where[:, 1]
        self.dim, self.dtype = int(cache.dim), np.dtype(cache.dtype)
        self.store = ChunkStore(cache, budget)
        self._checked = np.zeros(len(ids), dtype=bool)
        self._ahead = ThreadPoolExecutor(1, thread_name_prefix="prefetch")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    def frames(self, i: int, index=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        s, a, b = (int(x) for x in self.where[i])
        feats, times = self.store.rows(s, a, b)
        if not self._checked[i]:
            self.cache.check_video(self.ids[i], feats, times)
            self._checked[i] = True
        return feats[index], times[index]

    def prefetch(self, rows) -> None:
        """Read videos `rows` into the store in the background (errors surface when they are used)."""
        rows = [int(i) for i in rows]

        def read() -> None:
            for i in rows:
                try:
                    self.frames(i)  # checksum included: off the training thread too
                except Exception:  # the same read raises it again where the video is used
                    return

        self._ahead.submit(read)

    def gather(self, videos: np.ndarray, frames: np.ndarray) -> np.ndarray:
        videos, frames = np.asarray(videos), np.asarray(frames)
        out = np.empty((len(videos), self.dim), dtype=self.dtype)
        # in storage order, so each chunk is read once however small the store
        order = np.lexsort((frames, self.where[videos, 1], self.where[videos, 0]))
        for run in _runs(videos[order]):
            k = order[run]
            out[k] = self.frames(int(videos[k[0]]), frames[k])[0]
        return out


def _runs(values: np.ndarray) -> list[slice]:
    """Slices of the runs of equal consecutive values."""
    if not len(values):
        return []
    cuts = np.flatnonzero(values[1:] != values[:-1]) + 1
    edges = [0, *cuts.tolist(), len(values)]
    return [slice(a, b) for a, b in pairwise(edges)]


def feature_bytes(cache, ids: list[str]) -> int:
    """Bytes `Videos` holds for `ids`: every shard holding one of them, read whole."""
    shards = {cache.locate(v)[0] for v in ids if v in cache}
    row = cache.dim * np.dtype(cache.dtype).itemsize + 4  # features + a float32 timestamp
    return sum(int(cache.entries[s]["frames"]) for s in shards) * row


AnyVideos = Videos | LazyVideos
AHEAD = 2  # batches read ahead by `LazyVideos.prefetch`: slack for a busy machine


def upcoming(order: np.ndarray, start: int, batch_size: int) -> np.ndarray:
    """The rows of the AHEAD batches after the one starting at `start` of `order` (to prefetch)."""
    return order[start + batch_size:start + (1 + AHEAD) * batch_size]


def load_videos(cache, ids: list[str], budget: int) -> AnyVideos:
    """The videos in memory when their shards fit in `budget` bytes, else read lazily within it."""
    if feature_bytes(cache, ids) <= budget:
        return Videos(cache, ids)
    return LazyVideos(cache, ids, budget)


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


def eval_clips(videos: AnyVideos, rows: list[int], frames: int, mode: str, sampling: str,
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


def collate(videos: AnyVideos, clips: list[Clip], device: torch.device | str = "cpu"
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [B, L, D] float32, t [B, L] float32 seconds, mask [B, L] bool (True = a real frame).

    Padding is zeros at the end; the model must (and is tested to) ignore it.
    """
    width = max(1, max(len(c.index) for c in clips))
    x = np.zeros((len(clips), width, videos.dim), dtype=videos.dtype)
    t = np.zeros((len(clips), width), dtype=np.float32)
    mask = np.zeros((len(clips), width), dtype=bool)
    for b, c in enumerate(clips):
        n = len(c.index)
        x[b, :n], t[b, :n] = videos.frames(c.video, c.index)
        mask[b, :n] = True
    non_blocking = torch.device(device).type == "cuda"
    # move float16 and convert on the device: half the bytes over the bus
    xt = torch.from_numpy(x).to(device, non_blocking=non_blocking).float()
    return xt, torch.from_numpy(t).to(device), torch.from_numpy(mask).to(device)


def frame_sample(videos: AnyVideos, rows, rng: np.random.Generator, max_frames: int = 20000) -> np.ndarray:
    """[N, D] float64: at most `max_frames` frames drawn without replacement from videos `rows`."""
    rows = np.asarray(list(rows))
    counts = videos.lengths[rows]
    total = int(counts.sum())
    picks = np.sort(rng.choice(total, size=min(max_frames, total), replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    which = np.searchsorted(starts, picks, side="right") - 1
    return videos.gather(rows[which], picks - starts[which]).astype(np.float64)


def principal_components(videos: AnyVideos, rows, dims: int, rng: np.random.Generator, max_frames: int = 20000
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], projection [D, P]) onto the `dims` leading principal components of the frames of
    videos `rows` (a sample of at most `max_frames`), whitened: each output has unit variance."""
    X = frame_sample(videos, rows, rng, max_frames)
    mean = X.mean(0)
    try:
        _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    except np.linalg.LinAlgError:  # LAPACK's divide-and-conquer driver fails on a few matrices
        import scipy.linalg

        _, s, vt = scipy.linalg.svd(X - mean, full_matrices=False, lapack_driver="gesvd")
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
