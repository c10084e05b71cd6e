"""Stage one end to end: find videos, skip finished ones, decode + embed the rest into shards.

Process layout (one extraction process; the same per dask worker):

    decoder subprocess(es) ──pickled uint8 frame chunks──▶ reader thread(s) ─▶ bounded queue
        ─▶ main thread: fixed-size batches across video boundaries ─▶ backbone ─▶ ShardSink

One group of videos (sorted by id, `videos_per_shard` at a time) = one shard. A shard is
committed when all its videos are resolved (done or failed); the pipeline keeps running across
group boundaries, so there is no bubble between shards.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import storage
from extract.backbone import Backbone, load_backbone, pick_device
from extract.config import ExtractConfig, ExtractError
from extract.decoder import PKG_ROOT, DecoderPool, Done, Failed, Frames, kill_all, spawn_decoder

DECODER_NICE = 5  # decoders yield the CPU to the model; they get it whenever the model waits


@dataclass(frozen=True)
class VideoFile:
    path: str
    id: str


def find_videos(videos_dir: str | os.PathLike, extensions: tuple[str, ...]) -> list[VideoFile]:
    """Every file under `videos_dir` (recursively) whose name ends in one of `extensions`, by id.

    Entries that only look like videos (a directory or a broken symlink named x.mp4) are listed
    too, so that they are reported as failures rather than silently ignored.
    """
    root = os.fspath(videos_dir)
    if not os.path.isdir(root):
        raise ExtractError(f"--videos {root}: not a directory")
    found: list[VideoFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if d.lower().endswith(extensions)]:
            if name.lower().endswith(extensions):
                path = os.path.join(dirpath, name)
                found.append(VideoFile(path, storage.video_id(path, root)))
    return sorted(found, key=lambda f: f.id)


def groups_of(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


# ---------------------------------------------------------------------------------------------
# results -> shards


class ShardSink:
    """Collects per-video results; adds them to each group's shard in group order; commits groups.

    groups: [(shard path, [item index, ...])]. Items are indices into the caller's video list.
    """

    def __init__(self, groups: list[tuple[Path, list[int]]], dim: int, dtype: str, ids: list[str],
                 on_failure: Callable[[int, str], None],
                 before_commit: Callable[[Path], None] | None = None,
                 on_commit: Callable[[Path, list[str]], None] | None = None):
        self.groups = groups
        self.dim, self.dtype, self.ids = dim, dtype, ids
        self.on_failure, self.before_commit, self.on_commit = on_failure, before_commit, on_commit
        self.where = {item: (g, k) for g, (_, items) in enumerate(groups) for k, item in enumerate(items)}
        self.results: list[dict[int, tuple | None]] = [{} for _ in groups]
        self.next_pos = [0] * len(groups)
        self.writers: list[storage.ShardWriter | None] = [None] * len(groups)
        self.committed: list[Path] = []
        self.done_ids: list[str] = []
        self.failed: dict[int, str] = {}

    def video_done(self, item: int, feats: np.ndarray, ts: np.ndarray) -> None:
        g, k = self.where[item]
        self.results[g][k] = (feats, ts)
        self._advance(g)

    def video_failed(self, item: int, reason: str) -> None:
        g, k = self.where[item]
        self.results[g][k] = None
        self.failed[item] = reason
        self.on_failure(item, reason)
        self._advance(g)

    def _advance(self, g: int) -> None:
        path, items = self.groups[g]
        res = self.results[g]
        while self.next_pos[g] in res:
            r = res.pop(self.next_pos[g])
            if r is not None:
                if self.writers[g] is None:
                    self.writers[g] = storage.ShardWriter(path, self.dim, self.dtype)
                self.writers[g].add(self.ids[items[self.next_pos[g]]], *r)
            self.next_pos[g] += 1
        if self.next_pos[g] == len(items):
            w, self.writers[g] = self.writers[g], None
            if w is None:
                return  # every video of the group failed: no shard
            try:
                if self.before_commit is not None:
                    self.before_commit(path)
                w.commit()
            except BaseException:
                w.abort()
                raise
            self.committed.append(path)
            self.done_ids.extend(w.ids)
            if self.on_commit is not None:
                self.on_commit(path, list(w.ids))

    def abort(self) -> None:
        for i, w in enumerate(self.writers):
            if w is not None:
                w.abort()
                self.writers[i] = None


# ---------------------------------------------------------------------------------------------
# the model loop


class _VideoState:
    __slots__ = ("expected", "feats", "inferred", "info", "ts")

    def __init__(self) -> None:
        self.feats: list[np.ndarray] = []  # in the storage dtype as they come, not float32 until the end
        self.ts: list[np.ndarray] = []
        self.inferred = 0
        self.expected: int | None = None
        self.info: dict = {}


class Extractor:
    """Runs decoded frames through the backbone in fixed-size batches across video boundaries."""

    def __init__(self, backbone: Backbone, cfg: ExtractConfig, nice: int = DECODER_NICE):
        self.bb, self.cfg, self.nice = backbone, cfg, nice
        self.frames = 0
        self.batches = 0
        self.infer_seconds = 0.0  # in the model (the rest of the main loop's time is waiting/copying)
        self.notes: dict[int, list[str]] = {}  # video index -> what the decoder worked around

    def process(self, videos: list[VideoFile], sink: ShardSink,
                on_video: Callable[[int], None] | None = None, procs: list | None = None) -> None:
        """Extract `videos` (indices = positions in the list) into `sink`."""
        cfg, bb = self.cfg, self.bb
        h, w = bb.input_size
        B = cfg.batch_size
        buf = torch.empty((B, h, w, 3), dtype=torch.uint8)
        if bb.device.type == "cuda":
            buf = buf.pin_memory()
        owners = np.full(B, -1, dtype=np.int64)
        fill = 0
        state: dict[int, _VideoState] = {}

        def finish(i: int) -> None:
            st = state.get(i)
            if st is None or st.expected is None or st.inferred < st.expected:
                return
            del state[i]
            if st.expected == 0:
                sink.video_failed(i, f"{videos[i].path}: no frame could be decoded")
            else:
                feats = np.concatenate(st.feats)
                ts = np.concatenate(st.ts).astype(np.float32)
                self.frames += len(feats)
                sink.video_done(i, feats, ts)
            if on_video is not None:
                on_video(i)

        def infer() -> None:
            nonlocal fill
            if fill == 0:
                return
            # always a full batch (stale rows past `fill` are ignored): the same shapes every time,
            # so a frame's features do not depend on its neighbours or on where a run was resumed
            t = time.perf_counter()
            y = bb.embed(buf)
            self.infer_seconds += time.perf_counter() - t
            self.batches += 1
            touched = []
            r = 0
            while r < fill:
                i = int(owners[r])
                e = r
                while e < fill and owners[e] == i:
                    e += 1
                st = state.get(i)
                if st is not None:
                    st.feats.append(y[r:e].numpy().astype(cfg.dtype))  # a copy, in the storage dtype
                    st.inferred += e - r
                    touched.append(i)
                r = e
            fill = 0
            for i in touched:
                finish(i)

        pool = DecoderPool([(i, v.path) for i, v in enumerate(videos)], policy=cfg.sampling(),
                           geometry=bb.geometry, decoders=decoder_count(cfg, bb.device),
                           fault_tol=cfg.fault_tol, timeout=cfg.decode_timeout, nice=self.nice, procs=procs)
        try:
            for ev in pool:
                if isinstance(ev, Frames):
                    st = state.setdefault(ev.index, _VideoState())
                    pix = torch.from_numpy(ev.pixels)
                    st.ts.append(ev.timestamps)
                    k, n = 0, len(pix)
                    while k < n:
                        take = min(B - fill, n - k)
                        buf[fill:fill + take] = pix[k:k + take]
                        owners[fill:fill + take] = ev.index
                        fill += take
                        k += take
                        if fill == B:
                            infer()
                elif isinstance(ev, Done):
                    st = state.setdefault(ev.index, _VideoState())
                    st.expected, st.info = ev.frames, ev.info
                    if ev.info.get("notes"):
                        self.notes[ev.index] = list(dict.fromkeys(ev.info["notes"]))
                    finish(ev.index)
                elif isinstance(ev, Failed):
                    if ev.index < 0:
                        raise RuntimeError(ev.reason)
                    state.pop(ev.index, None)
                    sink.video_failed(ev.index, ev.reason)
                    if on_video is not None:
                        on_video(ev.index)
            infer()
            if state:  # cannot happen unless a decoder lied about its frame count
                for i in list(state):
                    state.pop(i)
                    sink.video_failed(i, f"{videos[i].path}: decoder sent fewer frames than announced")
        except BaseException:
            pool.close()
            sink.abort()
            raise


# ---------------------------------------------------------------------------------------------
# run


@dataclass
class Summary:
    """What one run did. `failures` maps video id -> reason."""

    cache: str
    videos: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    seconds: float = 0.0
    shards: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)  # video id -> decoder work-arounds
    # --repair: damaged shard moved to CACHE/quarantine/ -> the video ids it held (None: unreadable)
    repaired: dict[str, list[str] | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    extract_seconds: float = 0.0  # without start-up (model load, cache scan)
    precision: str = ""  # the backbone's compute precision (fp32 | bf16 | fp16)
    compile_seconds: float = 0.0  # torch.compile at start-up (0: not compiled)
    model_seconds: float = 0.0  # time in the backbone (the rest of extract_seconds: waiting, writing)

    @property
    def fps(self) -> float:
        return self.frames / self.extract_seconds if self.extract_seconds > 0 else 0.0

    def line(self) -> str:
        fail = "0 failed"
        if self.failed:
            fail = f"{self.failed} failed (see {Path(self.cache) / 'failures.jsonl'})"
        compiled = f", compiled in {self.compile_seconds:.1f} s" if self.compile_seconds else ""
        return (f"extract: {self.videos} videos: {self.done} done, {self.skipped} skipped (already cached), "
                f"{fail}; {self.frames} frames in {self.seconds:.1f} s "
                f"({self.fps:.1f} frames/s while extracting, {self.precision or '?'}"
                f"{compiled}) -> {self.cache}")


def provenance(bb: Backbone) -> dict:
    import av
    import decord
    import timm

    return {
        "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
        "decord": decord.__version__, "av": av.__version__, "numpy": np.__version__,
        "weights_source": bb.source, "device": str(bb.device), "host": socket.gethostname(),
        "memory_format": "channels_last" if bb.channels_last else "contiguous",
        "compiled": bb.compile_seconds > 0,
    }


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def decoder_count(cfg: ExtractConfig, device: torch.device) -> int:
    """`cfg.decoders`, or for 0: one beside a CPU model (one decoder reads ~300 sampled frames/s at
    1 frame/s, the model 20-100), one per remaining core beside a GPU."""
    if cfg.decoders:
        return cfg.decoders
    return max(1, usable_cores() - 1) if device.type == "cuda" else 1


def worker_rank() -> int | None:
    """This dask worker's number (a LocalCluster names its workers 0..N-1); None elsewhere."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return name if isinstance(name, int) else int(name) if str(name).isdigit() else None


def _set_threads(cfg: ExtractConfig, share: int = 1) -> None:
    n = cfg.threads or max(1, usable_cores() // max(1, share))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _progress(total: int, cfg: ExtractConfig):
    from tqdm import tqdm

    return tqdm(total=total, unit="video", desc="extract", file=sys.stderr, disable=not cfg.progress,
                dynamic_ncols=True, smoothing=0.1)


def run(config: ExtractConfig, videos_dir: str | os.PathLike, out_dir: str | os.PathLike,
        backbone: Backbone | None = None, repair: bool = False) -> Summary:
    """Extract every video under `videos_dir` not yet in the cache `out_dir`; returns what it did.

    `backbone`: an already loaded `extract.backbone.load_backbone(config)` to reuse (optional).
    `repair`: first verify every shard (checksums included), move damaged ones to
    `out_dir/quarantine/`, then extract their videos again (with the rest of the pending ones).

    Raises ExtractError (bad settings, weights unavailable) or storage.CacheError (fingerprint
    mismatch, cache busy) before any work; per-video failures are in the Summary, not raised.
    """
    t0 = time.monotonic()
    cfg = config
    cfg.validate()
    videos = find_videos(videos_dir, cfg.extensions)
    device = pick_device(cfg.device)
    distributed = bool(cfg.workers or cfg.scheduler)
    procs: list = []
    if not distributed:
        _set_threads(cfg)
        # start the decoders now: their start-up (imports) overlaps the model's
        procs = [spawn_decoder(DECODER_NICE)
                 for _ in range(min(decoder_count(cfg, device), max(1, len(videos))))]
    try:
        return _run(cfg, videos, device, distributed, procs, out_dir, t0, backbone, repair)
    finally:
        kill_all(procs)  # the ones the pool did not take


def _run(cfg, videos, device, distributed, procs, out_dir, t0, bb, repair=False) -> Summary:
    bb = bb or load_backbone(cfg, device)
    summary = Summary(cache=str(out_dir), videos=len(videos), precision=bb.precision,
                      compile_seconds=bb.compile_seconds)
    with storage.CacheWriter(out_dir, dim=bb.dim, dtype=cfg.dtype, fingerprint=bb.fingerprint(cfg),
                             provenance=provenance(bb)) as cache:
        if repair:  # under the lock: nobody else is writing
            summary.repaired = storage.quarantine(out_dir, storage.verify(out_dir).bad_shards)
        committed = cache.committed_ids()
        pending = [v for v in videos if v.id not in committed]
        summary.skipped = len(videos) - len(pending)
        groups = groups_of(pending, cfg.videos_per_shard)
        t_work = time.monotonic()
        paths = [cache.allocate_shard(cfg.format) for _ in groups]
        if distributed:
            _run_dask(cfg, cache, groups, paths, summary)
        else:
            _run_local(cfg, bb, cache, pending, groups, paths, summary, procs)
            procs.clear()
        summary.extract_seconds = time.monotonic() - t_work
    summary.failed = len(summary.failures)
    summary.seconds = time.monotonic() - t0
    return summary


def _run_local(cfg, bb, cache, pending, groups, paths, summary, procs) -> None:
    ids = [v.id for v in pending]
    spans, start = [], 0
    for g, grp in enumerate(groups):
        spans.append((paths[g], list(range(start, start + len(grp)))))
        start += len(grp)
    bar = _progress(len(pending), cfg)
    ex = Extractor(bb, cfg)
    t_start = time.monotonic()

    def failed(i: int, reason: str) -> None:
        cache.record_failure(ids[i], pending[i].path, reason)
        summary.failures[ids[i]] = reason

    def committed(path: Path, vids: list[str]) -> None:
        summary.shards.append(path.name)
        summary.done += len(vids)

    def tick(_i: int) -> None:
        bar.update(1)
        dt = time.monotonic() - t_start
        fps = ex.frames / dt if dt else 0.0
        bar.set_postfix_str(f"{ex.frames} frames, {fps:.1f} frames/s", refresh=False)

    sink = ShardSink(spans, bb.dim, cfg.dtype, ids, failed, on_commit=committed)
    try:
        ex.process(pending, sink, on_video=tick, procs=list(procs))
    finally:
        bar.close()
    summary.frames = ex.frames
    summary.model_seconds = ex.infer_seconds
    summary.notes.update({ids[i]: n for i, n in ex.notes.items()})


# ---------------------------------------------------------------------------------------------
# distributed: one task = one group of videos = one shard, written by the worker


def lease_ok(root: Path, driver_pid: int, driver_host: str) -> bool:
    """True if the driver that allocated our shard still holds the cache lock (checked before commit)."""
    import fcntl

    if driver_host != socket.gethostname():
        return True  # cannot see another host's processes; the driver's lock still guards the cache
    lock = root / ".lock"
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return False
    try:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        if holder != f"pid {driver_pid}":
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True  # held exclusively: the driver is alive
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False  # nobody holds it: the driver is gone
    finally:
        os.close(fd)


_WORKER: dict = {}

# A task is the builtin `eval` of this expression with plain data: the scheduler deserializes the
# graph without importing this project (it may not have it), and the worker puts the project
# folder on sys.path (a shared file system) before importing it, even if not installed there.
REMOTE_CALL = ("(ROOT in __import__('sys').path or __import__('sys').path.insert(0, ROOT), "
               "__import__('extract.engine', fromlist=['shard_task']).shard_task(**KW))[1]")


def shard_task(cfg_dict: dict, items: list[tuple[str, str]], shard_path: str, driver_pid: int,
               driver_host: str, share: int) -> dict:
    """Run on a dask worker: extract `items` [(path, id)] into the shard `shard_path`.

    Returns {"committed": [ids], "failures": [(id, path, reason)], "frames": n}; the driver
    records the failures (it holds the cache lock).
    """
    cfg = ExtractConfig.from_dict(cfg_dict)
    key = json.dumps(cfg_dict, sort_keys=True, default=str)
    if _WORKER.get("key") != key:
        _set_threads(cfg, share)
        _WORKER.clear()
        _WORKER.update(key=key, bb=load_backbone(cfg, pick_device(cfg.device, worker_rank())))
    bb = _WORKER["bb"]
    videos = [VideoFile(p, i) for p, i in items]
    path = Path(shard_path)
    failures: list[tuple[str, str, str]] = []

    def guard(p: Path) -> None:
        if not lease_ok(p.parent.parent, driver_pid, driver_host):
            raise RuntimeError(f"{p}: the extraction run that asked for this shard has ended; not committing")

    sink = ShardSink([(path, list(range(len(videos))))], bb.dim, cfg.dtype, [v.id for v in videos],
                     lambda i, r: failures.append((videos[i].id, videos[i].path, r)), before_commit=guard)
    ex = Extractor(bb, cfg)
    ex.process(videos, sink)
    return {"committed": sink.done_ids, "failures": failures, "frames": ex.frames,
            "model_seconds": ex.infer_seconds,
            "notes": {videos[i].id: n for i, n in ex.notes.items()}}


def _run_dask(cfg: ExtractConfig, cache, groups, paths, summary) -> None:
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if cfg.scheduler:
        client = Client(cfg.scheduler)
        share = 1
    else:
        # spawned worker processes must import this project even when it is not installed
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_ROOT, os.environ.get("PYTHONPATH")) if p)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # workers load torch after this
        cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        share = cfg.workers
    try:
        cfg_dict = cfg.to_dict()
        cfg_dict.update(workers=0, scheduler=None, progress=False)
        host, pid = socket.gethostname(), os.getpid()
        futures = {}
        for g, grp in enumerate(groups):
            # absolute paths: a worker's working directory is not ours
            kw = {"cfg_dict": cfg_dict, "items": [(os.path.abspath(v.path), v.id) for v in grp],
                  "shard_path": str(paths[g].absolute()), "driver_pid": pid, "driver_host": host,
                  "share": share}
            fut = client.submit(eval, REMOTE_CALL, {"ROOT": PKG_ROOT, "KW": kw},
                                key=f"extract-{paths[g].name}-{uuid.uuid4().hex[:8]}", pure=False)
            futures[fut] = g
        bar = _progress(sum(len(g) for g in groups), cfg)
        t_start = time.monotonic()
        try:
            for fut in as_completed(futures):
                res = fut.result()
                for vid, path, reason in res["failures"]:
                    cache.record_failure(vid, path, reason)
                    summary.failures[vid] = reason
                if res["committed"]:
                    summary.shards.append(paths[futures[fut]].name)
                summary.done += len(res["committed"])
                summary.frames += res["frames"]
                summary.model_seconds += res["model_seconds"]
                summary.notes.update(res["notes"])
                bar.update(len(groups[futures[fut]]))
                dt = time.monotonic() - t_start
                fps = summary.frames / dt if dt else 0.0
                bar.set_postfix_str(f"{summary.frames} frames, {fps:.1f} frames/s", refresh=False)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        finally:
            bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
