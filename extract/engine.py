"""Stage one end to end: find videos, skip finished ones, decode + embed the rest into shards.

Process layout (one extraction process; the same per dask worker):

    decoder subprocess(es) ──pickled uint8 frame chunks──▶ reader thread(s) ─▶ bounded queue
        ─▶ main thread: fixed-size batches across video boundaries ─▶ backbone ─▶ ShardSink

One group of videos (sorted by id, `videos_per_shard` at a time) = one shard. A shard is
committed when all its videos are resolved (done or failed); the pipeline keeps running across
group boundaries, so there is no bubble between shards. The parts: `discover` (which videos, which
shard), `batcher` (the model loop), `sink` (results -> shards), `distributed` (the dask path).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import storage
from extract.backbone import Backbone, device_for, load_backbone, provenance
from extract.batcher import DECODER_NICE, Extractor, decoder_count, set_threads
from extract.config import ExtractConfig, ExtractError
from extract.decoder import kill_all, spawn_decoder
from extract.discover import Plan, find_videos, groups_of
from extract.sink import ShardSink
from storage.console import progress

log = logging.getLogger(__name__)

Advance = Callable[[int, int], None]  # (videos just finished, frames so far) -> progress shown


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
    extract_seconds: float = 0.0  # without start-up (model load, cache scan)
    precision: str = ""  # the backbone's compute precision (fp32 | bf16 | fp16)
    compile_seconds: float = 0.0  # torch.compile at start-up (0: not compiled)
    model_seconds: float = 0.0  # time in the backbone (the rest of extract_seconds: waiting, writing)

    @property
    def ok(self) -> bool:
        return self.failed == 0

    @property
    def fps(self) -> float:
        return self.frames / self.extract_seconds if self.extract_seconds > 0 else 0.0

    def line(self) -> str:
        fail = "0 failed"
        if self.failed:
            fail = f"{self.failed} failed (see {self.cache.rstrip('/')}/failures.jsonl)"
        compiled = f", compiled in {self.compile_seconds:.1f} s" if self.compile_seconds else ""
        return (f"extract: {self.videos} videos: {self.done} done, {self.skipped} skipped (already cached), "
                f"{fail}; {self.frames} frames in {self.seconds:.1f} s "
                f"({self.fps:.1f} frames/s while extracting, {self.precision or '?'}"
                f"{compiled}) -> {self.cache}")


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
    device = device_for(cfg)
    distributed = bool(cfg.workers or cfg.scheduler)
    procs: list = []
    if not distributed:
        set_threads(cfg)
        # start the decoders now: their start-up (imports) overlaps the model's
        procs = [spawn_decoder(DECODER_NICE)
                 for _ in range(min(decoder_count(cfg, device), max(1, len(videos))))]
    try:
        bb = backbone or load_backbone(cfg, device)
        summary = Summary(cache=str(out_dir), videos=len(videos), precision=bb.precision,
                          compile_seconds=bb.compile_seconds)
        with storage.CacheWriter(out_dir, dim=bb.dim, dtype=cfg.dtype, fingerprint=bb.fingerprint(cfg),
                                 provenance=provenance(bb)) as cache:
            if repair:  # under the lock: nobody else is writing
                summary.repaired = storage.quarantine(out_dir, storage.verify(out_dir).bad_shards)
            committed = cache.committed_ids()
            pending = [v for v in videos if v.id not in committed]
            summary.skipped = len(videos) - len(pending)
            log.info("extract: %d videos, %d already cached, %d to extract -> %s; %s (%s) on %s, %s",
                     len(videos), summary.skipped, len(pending), out_dir, bb.name, bb.source, bb.device,
                     bb.precision)
            size = cfg.videos_per_shard
            if distributed:  # fewer videos than workers x a shard: smaller shards, every worker busy
                from extract.distributed import task_size, worker_count

                size = task_size(len(pending), size, worker_count(cfg))
            groups = groups_of(pending, size)
            t_work = time.monotonic()
            plan = Plan(cfg, groups, [cache.allocate_shard(cfg.format) for _ in groups])
            with _progress(len(pending), cfg) as advance:
                if distributed:
                    _run_dask(plan, cache, summary, advance)
                else:
                    _run_local(plan, bb, cache, summary, advance, procs)
                    procs.clear()  # the pool took them
            summary.extract_seconds = time.monotonic() - t_work
    finally:
        kill_all(procs)  # the ones the pool did not take
    summary.failed = len(summary.failures)
    summary.seconds = time.monotonic() - t0
    return summary


@contextlib.contextmanager
def _progress(total: int, cfg: ExtractConfig) -> Iterator[Advance]:
    """A tqdm bar over videos that also shows the running frame rate."""
    bar = progress(total=total, unit="video", desc="extract", enabled=cfg.progress, smoothing=0.1)
    t_start = time.monotonic()

    def advance(videos: int, frames: int) -> None:
        dt = time.monotonic() - t_start
        # the postfix first: the line `update` prints (if it prints) shows the frames just counted
        bar.set_postfix_str(f"{frames} frames, {frames / dt if dt else 0.0:.1f} frames/s", refresh=False)
        bar.update(videos)

    try:
        yield advance
    finally:
        bar.close()


def _failed(cache: storage.CacheWriter, summary: Summary, vid: str, path: str, reason: str) -> None:
    cache.record_failure(vid, path, reason)
    summary.failures[vid] = reason


def _run_local(plan: Plan, bb: Backbone, cache: storage.CacheWriter, summary: Summary, advance: Advance,
               procs: list) -> None:
    """The whole plan in this process; `procs`: decoder subprocesses already started."""
    pending = plan.videos
    spans, start = [], 0
    for shard, group in zip(plan.shards, plan.groups, strict=True):
        spans.append((shard, list(range(start, start + len(group)))))
        start += len(group)
    ex = Extractor(bb, plan.cfg)

    def committed(path: Path, vids: list[str]) -> None:
        summary.shards.append(path.name)
        summary.done += len(vids)

    sink = ShardSink(spans, bb.dim, plan.cfg.dtype, [v.id for v in pending],
                     lambda i, reason: _failed(cache, summary, pending[i].id, pending[i].path, reason),
                     on_commit=committed, fingerprint=bb.fingerprint(plan.cfg), provenance=provenance(bb))
    ex.process(pending, sink, on_video=lambda _i: advance(1, ex.frames), procs=list(procs))
    summary.frames = ex.frames
    summary.model_seconds = ex.infer_seconds
    summary.notes.update({pending[i].id: n for i, n in ex.notes.items()})


def _run_dask(plan: Plan, cache: storage.CacheWriter, summary: Summary, advance: Advance) -> None:
    """One dask task per shard (extract.distributed); the results are recorded here, under the lock.

    A shard counts once this process finds it, with its index entry, and it passes
    `storage.verify_shard` (fingerprint, entry, checksums): a worker's word is not enough.
    """
    from extract.distributed import shard_results

    with contextlib.closing(shard_results(plan)) as results:
        for g, res in results:
            if "unshared" in res:
                raise ExtractError(_unshared(cache.root, res["unshared"]))
            for vid, path, reason in res["failures"]:
                _failed(cache, summary, vid, path, reason)
            committed = res["committed"]
            if committed and not _shard_checks(plan, g, res, cache, summary):
                committed = []
            if committed:
                summary.shards.append(plan.shards[g].name)
            summary.done += len(committed)
            summary.frames += res["frames"]
            summary.model_seconds += res["model_seconds"]
            summary.notes.update(res["notes"])
            advance(len(plan.groups[g]), summary.frames)


def _unshared(root: Path, what: str) -> str:
    return (f"the dask workers do not share the cache's file system: {what}, while this driver "
            f"(host {socket.gethostname()}) writes the cache at {Path(root).absolute()}. Give --out a path "
            "every worker mounts at the same place (a shared or network file system). Shards already "
            "committed are kept: run again to resume.")


def _shard_checks(plan: Plan, g: int, res: dict, cache: storage.CacheWriter, summary: Summary) -> bool:
    """Whether the shard a worker reported committed is here and sound; a damaged one is quarantined
    and its videos recorded as failed (the next run extracts them again)."""
    path = plan.shards[g]
    try:
        storage.verify_shard(path)
        return True
    except FileNotFoundError as e:
        what = f"the worker on host {res['host']} reported {path.name} committed, but {e.filename} is missing"
        raise ExtractError(_unshared(cache.root, what)) from None
    except storage.CorruptShardError as e:
        storage.quarantine(cache.root, [path])
        paths = {v.id: v.path for v in plan.groups[g]}
        for vid in res["committed"]:
            _failed(cache, summary, vid, paths[vid], f"written by the worker on host {res['host']}, "
                    f"but its shard fails verification (moved to quarantine/): {e}")
        return False
