"""A cache folder: `cache.json` (format + fingerprint), committed shards, and `failures.jsonl`.

The index of extracted videos is derived from the committed shards alone, so whatever a crash
interrupts, re-opening the cache sees exactly the videos whose shard was committed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage import lock
from storage.ids import check_video_id
from storage.shard import SHARD_NAME, SUFFIX, TMP_MARK, Shard, ShardWriter, remove_path

CACHE_VERSION = 1
CACHE_JSON = "cache.json"
FAILURES = "failures.jsonl"
LOCK = lock.LOCK


class CacheError(RuntimeError):
    """A cache that cannot be used as asked; the message says why and what to do."""


class FingerprintMismatch(CacheError):
    pass


class CacheBusy(CacheError):
    pass


def shard_paths(root: str | os.PathLike) -> list[Path]:
    """The committed shards of a cache, in shard-number order."""
    d = Path(root) / "shards"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := SHARD_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def read_cache_json(root: str | os.PathLike) -> dict:
    path = Path(root) / CACHE_JSON
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CacheError(f"{root}: not a feature cache (no {CACHE_JSON})") from None
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable ({e})") from e
    if info.get("format_version") != CACHE_VERSION:
        raise CacheError(
            f"{path}: cache format {info.get('format_version')!r}, this code reads {CACHE_VERSION}"
        )
    return info


def read_failures(root: str | os.PathLike) -> dict[str, dict]:
    """The latest failure record per video id (a torn last line from a crash is skipped)."""
    out: dict[str, dict] = {}
    path = Path(root) / FAILURES
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
            out[rec["video_id"]] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return out


def fingerprint_diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they agree)."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} in the cache, {new.get(k)!r} now" for k in keys
            if old.get(k) != new.get(k)]


@dataclass
class Video:
    id: str
    features: np.ndarray  # [T, D]
    timestamps: np.ndarray  # [T] seconds


class CacheReader:
    """Read-only view of a cache: ids, and each video's features and timestamps."""

    def __init__(self, root: str | os.PathLike, check: bool = True):
        self.root = Path(root)
        self.info = read_cache_json(self.root)
        self.check = check
        self.shards = [Shard(p) for p in shard_paths(self.root)]
        self._where: dict[str, tuple[int, int]] = {}
        for s, shard in enumerate(self.shards):
            for i, vid in enumerate(shard.video_ids):
                if vid in self._where:
                    other = self.shards[self._where[vid][0]].path.name
                    raise CacheError(
                        f"{self.root}: video {vid!r} is in both {other} and {shard.path.name}; "
                        "run `python -m storage verify` to see the damage"
                    )
                self._where[vid] = (s, i)
        self.video_ids = sorted(self._where)

    @property
    def fingerprint(self) -> dict:
        return self.info["fingerprint"]

    @property
    def dim(self) -> int:
        return int(self.info["dim"])

    @property
    def dtype(self) -> str:
        return self.info["dtype"]

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, vid: object) -> bool:
        return vid in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self.video_ids)

    def __getitem__(self, vid: str) -> Video:
        feats, times = self._read(vid)
        return Video(vid, feats, times)

    def _read(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            s, i = self._where[vid]
        except KeyError:
            raise KeyError(f"video {vid!r} is not in the cache {self.root}") from None
        return self.shards[s].read(i, check=self.check)

    def features(self, vid: str) -> np.ndarray:
        return self._read(vid)[0]

    def timestamps(self, vid: str) -> np.ndarray:
        return self._read(vid)[1]

    def num_frames(self, vid: str) -> int:
        s, i = self._where[vid]
        off = self.shards[s].offsets
        return int(off[i + 1] - off[i])

    @property
    def total_frames(self) -> int:
        return sum(s.num_frames for s in self.shards)

    def iter_videos(self) -> Iterator[Video]:
        """Every video, reading each shard in one pass (the fast way to load a whole cache)."""
        for shard in self.shards:
            feats, times = shard.read_all(check=self.check)
            for i, vid in enumerate(shard.video_ids):
                a, b = shard.offsets[i], shard.offsets[i + 1]
                yield Video(vid, feats[a:b], times[a:b])

    def failures(self) -> dict[str, dict]:
        """Videos whose latest attempt failed and that are not in the cache."""
        return {k: v for k, v in read_failures(self.root).items() if k not in self._where}

    def close(self) -> None:
        for s in self.shards:
            s.close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(root: str | os.PathLike, check: bool = True) -> CacheReader:
    """Open a cache for reading. `check` verifies each video's checksum as it is read."""
    return CacheReader(root, check=check)


class CacheWriter:
    """Exclusive write access to a cache: holds its lock, allocates shards, logs failures.

    One writer per cache at a time (a second one gets CacheBusy). Distributed workers write the
    shards the writer allocated to them with a plain ShardWriter; only the writer commits
    failures and cleans up temporary files.
    """

    def __init__(self, root: str | os.PathLike, *, dim: int, dtype: str, fingerprint: dict,
                 provenance: dict | None = None, wait: bool = False):
        self.root = Path(root)
        self.dim, self.dtype = int(dim), str(np.dtype(dtype).name)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.root / LOCK, wait=wait)
        try:
            self._init_info(fingerprint, provenance or {})
            self._clean_tmp()
        except BaseException:
            self.close()
            raise
        self._next = max((int(SHARD_NAME.match(p.name).group(1)) for p in shard_paths(self.root)),
                         default=-1) + 1

    def _init_info(self, fingerprint: dict, provenance: dict) -> None:
        want = {"dim": self.dim, "dtype": self.dtype, **fingerprint}
        path = self.root / CACHE_JSON
        if path.exists():
            info = read_cache_json(self.root)
            have = {"dim": info["dim"], "dtype": info["dtype"], **info["fingerprint"]}
            diff = fingerprint_diff(have, want)
            if diff:
                raise FingerprintMismatch(
                    f"{self.root} was extracted with different settings, so it cannot be extended:\n  "
                    + "\n  ".join(diff)
                    + "\nUse another --out folder, or the cache's settings (python -m storage info)."
                )
            self.info = info
            return
        self.info = {
            "format_version": CACHE_VERSION, "dim": self.dim, "dtype": self.dtype,
            "fingerprint": fingerprint, "provenance": provenance,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        tmp = path.with_name(CACHE_JSON + TMP_MARK + str(os.getpid()))
        tmp.write_text(json.dumps(self.info, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)

    def _clean_tmp(self) -> None:
        # Safe only because we hold the lock: nobody else is writing here.
        for p in (self.root / "shards").iterdir():
            if TMP_MARK in p.name:
                remove_path(p)
        for p in self.root.iterdir():
            if TMP_MARK in p.name:
                remove_path(p)

    def committed_ids(self) -> set[str]:
        """Ids of every video in a committed shard (reads only the shards' small index arrays)."""
        ids: set[str] = set()
        for p in shard_paths(self.root):
            ids.update(Shard(p).video_ids)
        return ids

    def allocate_shard(self, fmt: str = "zarr") -> Path:
        """A fresh shard path (never reused in this cache) for one group of videos."""
        if fmt not in SUFFIX:
            raise ValueError(f"unknown shard format {fmt!r}; choose one of {sorted(SUFFIX)}")
        path = self.root / "shards" / f"part-{self._next:05d}{SUFFIX[fmt]}"
        self._next += 1
        return path

    def shard_writer(self, path: Path, chunk_frames: int = 1024) -> ShardWriter:
        return ShardWriter(path, self.dim, self.dtype, chunk_frames)

    def record_failure(self, video_id: str, path: str, reason: str) -> None:
        rec = {"video_id": check_video_id(video_id), "path": path, "reason": reason,
               "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.root / FAILURES, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line: a crash cannot interleave records
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._lock_fd is not None:
            lock.release(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _lock(path: Path, wait: bool) -> int:
    try:
        return lock.acquire(path, wait)
    except lock.Held as e:
        raise CacheBusy(
            f"{path.parent} is being written by {e}; wait for it to finish "
            "(it resumes where it stops) or use another --out folder"
        ) from None
