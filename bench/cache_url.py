"""The cache through fsspec against a local folder, side by side in one process. Prints ONE JSON line.

    python bench/cache_url.py                       # 200 shards x 10 videos, zarr and hdf5
    python bench/cache_url.py --url memory://b --shards 1000

For each format, builds the same cache twice through the real writer (CacheWriter allocates,
ShardWriter writes and commits each shard: local = temporary name, fsync, rename, entry;
URL = objects at the final name, then the entry as one PUT), then times `open_cache` and
reading every video. `memory://` measures the protocol's own cost (no network); point `--url`
at a real bucket to see a store's latency.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from cache_scale import FP, write_shard  # bench/ is on sys.path (the script's folder); it adds the repo

import storage


def one(root: str, fmt: str, shards: int, per: int, frames: int, dim: int) -> dict:
    t0 = time.perf_counter()
    with storage.CacheWriter(root, dim=dim, dtype="float16", fingerprint=FP) as w:
        for s in range(shards):
            write_shard(str(w.allocate_shard(fmt)), s * per, (s + 1) * per, frames, dim)
    t1 = time.perf_counter()
    cache = storage.open_cache(root)
    t2 = time.perf_counter()
    n = sum(cache.features(v).shape[0] for v in cache.video_ids)
    t3 = time.perf_counter()
    assert n == shards * per * frames and storage.verify(root, checksums=False).ok
    return {"write_s": round(t1 - t0, 3), "open_s": round(t2 - t1, 4), "read_all_s": round(t3 - t2, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default="memory://cache-url-bench")
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--per-shard", type=int, default=10)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--formats", default="zarr,hdf5")
    a = ap.parse_args()
    out: dict = {"shards": a.shards, "videos": a.shards * a.per_shard, "frames": a.frames, "dim": a.dim}
    for fmt in a.formats.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            local = one(str(Path(tmp) / "cache"), fmt, a.shards, a.per_shard, a.frames, a.dim)
        url = f"{a.url.rstrip('/')}-{fmt}"
        remote = one(url, fmt, a.shards, a.per_shard, a.frames, a.dim)
        loc = storage.location.as_path(url)
        loc.fs.rm(loc.path, recursive=True)
        out[fmt] = {"local": local, "url": remote,
                    "url_over_local": {k: round(remote[k] / local[k], 2) for k in local if local[k]}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
