"""`verify`: every committed shard opens, agrees with the cache and with its own checksums."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from storage.cache import CacheError, read_cache_json, shard_paths
from storage.shard import TMP_MARK, CorruptShardError, Shard


@dataclass
class Report:
    videos: int = 0
    frames: int = 0
    shards: int = 0
    bad_shards: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(root: str | os.PathLike, checksums: bool = True) -> Report:
    """Check a cache thoroughly; never raises for damage, reports it."""
    root = Path(root)
    rep = Report()
    try:
        info = read_cache_json(root)
    except CacheError as e:
        rep.problems.append(str(e))
        return rep
    seen: dict[str, str] = {}
    for path in shard_paths(root):
        rep.shards += 1
        try:
            shard = Shard(path)
            if shard.dim != info["dim"] or shard.dtype != info["dtype"]:
                raise CorruptShardError(
                    f"{path}: features are {shard.dtype}[{shard.dim}], the cache says "
                    f"{info['dtype']}[{info['dim']}]"
                )
            if checksums:
                shard.read_all(check=True)
            shard.close()
        except CorruptShardError as e:
            rep.problems.append(str(e))
            rep.bad_shards.append(path)
            continue
        for vid in shard.video_ids:
            if vid in seen:
                rep.problems.append(f"{path}: video {vid!r} is also in {seen[vid]}")
                if path not in rep.bad_shards:
                    rep.bad_shards.append(path)
            seen[vid] = path.name
        rep.frames += shard.num_frames
    rep.videos = len(seen)
    stale = [p.name for p in (root / "shards").glob(f"*{TMP_MARK}*")] if (root / "shards").is_dir() else []
    if stale:
        rep.notes.append(f"{len(stale)} unfinished temporary shard(s) from an interrupted run "
                         "(ignored; removed when extraction resumes)")
    return rep


QUARANTINE = "quarantine"


def quarantine(root: str | os.PathLike, shards: list[Path]) -> dict[str, list[str] | None]:
    """Move damaged shards out of `root/shards` into `root/quarantine/` (kept for inspection).

    Returns {shard name: the video ids it held, or None when even its index is unreadable}.
    Once moved, the shard's videos are no longer in the index, so a resumed extraction
    re-extracts exactly them. The caller must hold the cache's write lock (a CacheWriter).
    """
    root = Path(root)
    qdir = root / QUARANTINE
    qdir.mkdir(exist_ok=True)
    held: dict[str, list[str] | None] = {}
    for path in shards:
        try:
            s = Shard(path)
            held[path.name] = list(s.video_ids)
            s.close()
        except CorruptShardError:
            held[path.name] = None
        dest, n = qdir / path.name, 1
        while dest.exists() or dest.is_symlink():
            dest, n = qdir / f"{path.name}.{n}", n + 1
        os.replace(path, dest)
    if shards:
        fd = os.open(root / "shards", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return held
