"""Benchmark the cache at dataset scale: open time, open files, reads. Prints ONE JSON line.

    python bench/cache_scale.py                          # 100,000 videos in 10,000 shards, zarr and hdf5
    python bench/cache_scale.py --videos 10000 --shards 1000 --formats hdf5

Builds each cache synthetically through the real writer (a CacheWriter allocates the shards,
`--jobs` processes write and commit them with ShardWriter as distributed workers do: shard, fsync,
rename, index entry; the CacheWriter packs the index when it closes), then in a fresh process
(so nothing is warm in Python, though the page cache is): the time to `open_cache`, the
descriptors open after it, the time to read one video (the first read also imports the format
library), and `reads` random videos with the most descriptors ever open during them. Then the
bytes of single shards of 38 to 5000 frames at D=768 in both formats (HDF5 over Zarr).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import storage  # noqa: E402

FP = {"model": "synthetic", "fps": 1.0}


def write_shard(path: str, first: int, last: int, frames: int, dim: int) -> None:
    """One worker's task, as in a distributed extraction: write and commit one allocated shard."""
    feats = np.random.default_rng(first).standard_normal((frames, dim)).astype("float16")
    times = np.arange(frames, dtype="float32")
    sw = storage.ShardWriter(path, dim, "float16", fingerprint=FP)
    for v in range(first, last):
        sw.add(f"d{v // 1000:03d}/v{v:06d}.mp4", feats, times)
    sw.commit()


def build(root: Path, fmt: str, videos: int, shards: int, frames: int, dim: int, jobs: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    per = -(-videos // shards)
    t0 = time.perf_counter()
    # commits wait on fsync more than on the CPU: several writer processes keep the disk busy
    with storage.CacheWriter(root, dim=dim, dtype="float16", fingerprint=FP) as w, \
            ProcessPoolExecutor(jobs) as pool:
        tasks = [(str(w.allocate_shard(fmt)), s * per, min(videos, (s + 1) * per), frames, dim)
                 for s in range(shards)]
        for f in [pool.submit(write_shard, *t) for t in tasks]:
            f.result()
    seconds = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in (root / "shards").rglob("*") if f.is_file())
    return {"build_s": round(seconds, 1), "shard_bytes": size}


def measure(root: Path, reads: int) -> dict:
    """Run in a fresh process: open, one read, many reads; descriptors counted from /proc."""
    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    base = fds()
    t0 = time.perf_counter()
    cache = storage.open_cache(root)
    open_s = time.perf_counter() - t0
    after_open = fds() - base
    ids = cache.video_ids
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    cache.features(ids[len(ids) // 2])
    one_s = time.perf_counter() - t0
    peak = 0
    t0 = time.perf_counter()
    for i in rng.integers(0, len(ids), reads):
        cache.features(ids[i])
        peak = max(peak, fds() - base)
    many_s = time.perf_counter() - t0
    return {"videos": len(cache), "open_s": round(open_s, 3), "open_files_after_open": after_open,
            "read_one_s": round(one_s, 4), "reads": reads,
            "read_ms_per_video": round(1000 * many_s / reads, 2),
            "max_open_files_while_reading": peak, "max_open_setting": storage.cache.MAX_OPEN}


def sizes(work: Path, dim: int = 768) -> dict:
    """Bytes of one shard of two videos per format, at a real feature width, for a few shard lengths."""
    rng = np.random.default_rng(2)
    out = {}
    for frames in (38, 300, 1500, 5000):
        got = {}
        for fmt in ("zarr", "hdf5"):
            root = work / f"size-{fmt}-{frames}"
            with storage.CacheWriter(root, dim=dim, dtype="float16", fingerprint=FP) as w:
                sw = w.shard_writer(w.allocate_shard(fmt))
                for k in range(2):
                    n = frames // 2
                    sw.add(f"v{k}.mp4", rng.standard_normal((n, dim)).astype("float16"),
                           np.arange(n, dtype="float32"))
                path = sw.commit()
            got[fmt] = sum(f.stat().st_size for f in [path, *path.rglob("*")] if f.is_file())
        out[f"{frames}_frames"] = {**got, "hdf5_over_zarr": round(got["hdf5"] / got["zarr"], 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=100_000)
    ap.add_argument("--shards", type=int, default=10_000)
    ap.add_argument("--frames-per-video", type=int, default=8, help="frames per video")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--formats", default="zarr,hdf5")
    ap.add_argument("--jobs", type=int, default=8, help="shard-writing processes")
    ap.add_argument("--workdir", help="keep the caches here (default: a temporary folder, removed)")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure), args.reads)))
        return
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cache_scale-"))
    out = {"videos": args.videos, "shards": args.shards, "frames_per_video": args.frames_per_video,
           "dim": args.dim}
    try:
        for fmt in args.formats.split(","):
            root = work / fmt
            shutil.rmtree(root, ignore_errors=True)
            res = build(root, fmt, args.videos, args.shards, args.frames_per_video, args.dim, args.jobs)
            cmd = [sys.executable, __file__, "--measure", str(root), "--reads", str(args.reads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res.update(json.loads(proc.stdout))
            out[fmt] = res
        out["shard_sizes_dim768"] = sizes(work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
