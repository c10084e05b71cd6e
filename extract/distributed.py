"""The dask path: one task per group of videos = one shard, written by the worker, committed under a lease.

The driver holds the cache lock and allocates the shard names; a worker decodes, embeds and writes
its shard with `storage.ShardWriter`, and commits it only while the driver still holds the lock
(`storage.lock.held_by`), so an orphaned worker of a killed run cannot commit a duplicate.
Failures come back to the driver, which records them. A worker that cannot see the cache says so
at once (`unshared`); the driver checks every shard a worker reports (`extract.engine`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import storage.location
import storage.lock
from extract.backbone import device_for, load_backbone, provenance
from extract.batcher import Extractor, set_threads
from extract.config import ExtractConfig
from extract.decoder import PKG_ROOT
from extract.discover import Plan, VideoFile
from extract.sink import ShardSink

log = logging.getLogger(__name__)


def lease_ok(root: Path, driver_pid: int, driver_host: str) -> bool:
    """True if the driver that allocated our shard still holds the cache lock (checked before commit)."""
    return storage.lock.held_by(root, driver_pid, driver_host)


def unshared(root: Path) -> str | None:
    """Why this machine cannot be writing into the driver's cache `root` (None: it sees the cache).

    The driver made all three before submitting any task, so a worker that misses one is looking
    at another file system than the driver's."""
    # an object store has no empty folders: there cache.json and the lock object must be seen
    names = ("cache.json", storage.lock.LOCK) if storage.location.is_remote(root) else (
        "cache.json", storage.lock.LOCK, "shards")
    for p in (root / n for n in names):
        if not p.exists():
            return f"{p} does not exist on host {socket.gethostname()}"
    return None


def task_size(pending: int, videos_per_shard: int, workers: int) -> int:
    """Videos per task: a shard's worth, or fewer so that every worker gets one when few are pending."""
    return max(1, min(videos_per_shard, math.ceil(pending / max(1, workers))))


def worker_count(cfg: ExtractConfig) -> int:
    """The worker threads a run can use: `workers`, or those of the scheduler's cluster right now."""
    if not cfg.scheduler:
        return cfg.workers
    from distributed import Client

    with Client(cfg.scheduler) as client:
        return sum(client.nthreads().values())


def worker_rank() -> int | None:
    """This dask worker's number (a LocalCluster names its workers 0..N-1); None elsewhere."""
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return None
    return name if isinstance(name, int) else int(name) if str(name).isdigit() else None


_WORKER: dict = {}  # per worker process: the loaded backbone and the settings it was loaded for


def shard_task(cfg_dict: dict, items: list[tuple[str, str]], shard_path: str, driver_pid: int,
               driver_host: str, share: int) -> dict:
    """Run on a dask worker: extract `items` [(path, id)] into the shard `shard_path`.

    Returns {"committed": [ids], "failures": [(id, path, reason)], "frames": n, "host": ...}; the
    driver records the failures (it holds the cache lock). A worker that does not see the cache
    returns {"unshared": why, "host": ...} without extracting anything.
    """
    path = storage.location.as_path(shard_path)
    host = socket.gethostname()
    why = unshared(path.parent.parent)
    if why is not None:
        return {"unshared": why, "host": host}
    cfg = ExtractConfig.from_dict(cfg_dict)
    key = json.dumps(cfg_dict, sort_keys=True, default=str)
    if _WORKER.get("key") != key:
        set_threads(cfg, share)
        _WORKER.clear()
        _WORKER.update(key=key, bb=load_backbone(cfg, device_for(cfg, worker_rank())))
    bb = _WORKER["bb"]
    videos = [VideoFile(p, i) for p, i in items]
    failures: list[tuple[str, str, str]] = []

    def guard(p: Path) -> None:
        if not lease_ok(p.parent.parent, driver_pid, driver_host):
            raise RuntimeError(f"{p}: the extraction run that asked for this shard has ended; not committing")

    sink = ShardSink([(path, list(range(len(videos))))], bb.dim, cfg.dtype, [v.id for v in videos],
                     lambda i, r: failures.append((videos[i].id, videos[i].path, r)), before_commit=guard,
                     fingerprint=bb.fingerprint(cfg), provenance=provenance(bb))
    ex = Extractor(bb, cfg)
    ex.process(videos, sink)
    return {"committed": sink.done_ids, "failures": failures, "frames": ex.frames, "host": host,
            "model_seconds": ex.infer_seconds,
            "notes": {videos[i].id: n for i, n in ex.notes.items()}}


def on_worker(root: str, task: dict) -> dict:
    """What a dask task runs: put the project folder on sys.path, then `shard_task(**task)`.

    Standard library only, and submitted by value (see `by_value`), so that the scheduler, which
    unpickles every task it is sent, does not need this project, and a worker on the same file
    system runs it even where the project is not installed.
    """
    import importlib
    import sys

    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("extract.distributed").shard_task(**task)


def by_value(fn: Callable) -> Callable:
    """A copy of `fn` that pickles by value: not the object `module.name` refers to, so plain
    pickle refuses it and dask.distributed falls back to cloudpickle, which then ships its code."""
    import cloudpickle

    module = sys.modules[fn.__module__]
    cloudpickle.register_pickle_by_value(module)
    try:
        return cloudpickle.loads(cloudpickle.dumps(fn))
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def shard_results(plan: Plan) -> Iterator[tuple[int, dict]]:
    """Submit one task per group of `plan` to dask; yield (group index, shard_task's result) as each ends.

    Uses the scheduler `plan.cfg.scheduler`, or a local cluster of `plan.cfg.workers` processes.
    Closing the generator early cancels the tasks not yet done.
    """
    from distributed import Client, LocalCluster, as_completed

    cfg = plan.cfg
    cluster = None
    if cfg.scheduler:
        client = Client(cfg.scheduler)
        share = 1
    else:
        # spawned worker processes must import this project even when it is not installed
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_ROOT, os.environ.get("PYTHONPATH")) if p)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # workers load torch after this
        bokeh = importlib.util.find_spec("bokeh") is not None  # the dashboard needs it
        cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0" if bokeh else None, silence_logs=40)
        client = Client(cluster)
        share = cfg.workers
        log.info("dask: %d local worker(s); %s", cfg.workers,
                 f"dashboard at {cluster.dashboard_link}" if bokeh
                 else "no dashboard (it needs bokeh: pip install bokeh)")
    try:
        cfg_dict = cfg.to_dict()
        cfg_dict.update(workers=0, scheduler=None, progress=False)
        host, pid = socket.gethostname(), os.getpid()
        task = by_value(on_worker)
        futures = {}
        for g, (group, shard) in enumerate(zip(plan.groups, plan.shards, strict=True)):
            # plain data only, absolute paths: a worker's working directory is not ours
            kw = {"cfg_dict": cfg_dict, "items": [(os.path.abspath(v.path), v.id) for v in group],
                  "shard_path": str(shard.absolute() if isinstance(shard, Path) else shard),  # or a URL
                  "driver_pid": pid, "driver_host": host, "share": share}
            fut = client.submit(task, PKG_ROOT, kw, key=f"extract-{shard.name}-{uuid.uuid4().hex[:8]}",
                                pure=False)
            futures[fut] = g
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
