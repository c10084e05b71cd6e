"""A cache's features in the layouts other tools read: one .npy per video, or one Parquet table.

npy: OUT/<id>.npy ([T, D], the cache's dtype) and OUT/<id>_timestamps.npy ([T] seconds), ids'
folders kept as subfolders, which is the per-video layout of common feature extractors.
parquet: one row per frame (video_id, frame, timestamp, f0 ... f{D-1} as float32: Parquet has no
float16), in row groups of ~64k frames, the fingerprint in the file's key-value metadata.
Files appear whole (written under a temporary name, then renamed): a crash leaves no half file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from storage import durable
from storage.cache import CacheReader, open_cache
from storage.console import progress
from storage.errors import CacheError
from storage.ids import check_video_id

FORMATS = ("npy", "parquet")
ROW_GROUP_FRAMES = 65536  # frames per Parquet row group: bounds the memory an export needs


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def export_npy(cache: CacheReader, out_dir: str | os.PathLike, show_progress: bool = True) -> int:
    """Write `<id>.npy` and `<id>_timestamps.npy` per video under `out_dir`; returns the count."""
    out = Path(out_dir)
    n = 0
    for video in progress(cache.iter_videos(), total=len(cache), desc="export", unit="video",
                          enabled=show_progress):
        check_video_id(video.id)  # never a path outside out_dir
        _save_npy(out / f"{video.id}.npy", video.features)
        _save_npy(out / f"{video.id}_timestamps.npy", video.timestamps)
        n += 1
    return n


def export_parquet(cache: CacheReader, out_file: str | os.PathLike, show_progress: bool = True) -> int:
    """Write one Parquet file of every frame (with fastparquet); returns the number of videos."""
    try:
        import fastparquet
        import pandas as pd
    except ImportError:
        raise CacheError("--to parquet needs fastparquet: pip install fastparquet "
                         "(setup.sh installs it)") from None
    if not len(cache):
        raise CacheError(f"{cache.root}: the cache holds no video: nothing to export")
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    columns = [f"f{j}" for j in range(cache.dim)]
    meta = {"stan_cache.fingerprint": json.dumps(cache.fingerprint, sort_keys=True),
            "stan_cache.dtype": cache.dtype}
    pending: list = []
    n = 0

    def write_row_group() -> None:
        ids = [v.id for v in pending]
        lengths = [len(v.timestamps) for v in pending]
        table = pd.DataFrame(np.concatenate([v.features for v in pending]).astype(np.float32),
                             columns=columns)
        table.insert(0, "timestamp", np.concatenate([v.timestamps for v in pending]).astype(np.float64))
        table.insert(0, "frame", np.concatenate([np.arange(k, dtype=np.int32) for k in lengths]))
        table.insert(0, "video_id", np.repeat(np.array(ids, dtype=object), lengths))
        fastparquet.write(str(tmp), table, append=tmp.exists(), write_index=False, custom_metadata=meta,
                          compression="ZSTD")
        pending.clear()

    for video in progress(cache.iter_videos(), total=len(cache), desc="export", unit="video",
                          enabled=show_progress):
        pending.append(video)
        n += 1
        if sum(len(v.timestamps) for v in pending) >= ROW_GROUP_FRAMES:
            write_row_group()
    if pending:
        write_row_group()
    durable.fsync_file(tmp)
    os.replace(tmp, out)
    return n


def export(root: str | os.PathLike, fmt: str, out: str | os.PathLike, show_progress: bool = True) -> int:
    """Export the cache at `root` to `out` in `fmt` (npy | parquet); returns the number of videos."""
    if fmt not in FORMATS:
        raise CacheError(f"--to {fmt}: choose one of {', '.join(FORMATS)}")
    with open_cache(root) as cache:
        if fmt == "npy":
            return export_npy(cache, out, show_progress)
        return export_parquet(cache, out, show_progress)
