"""A cache folder: `cache.json`, committed shards with their index, and `failures.jsonl`.

    cache.json        format version, dim, dtype, fingerprint (compared), provenance (recorded)
    .lock             flock held by the one writer (its pid inside while held, empty after)
    failures.jsonl    append-only; the latest line per video id counts
    shards/           part-NNNNN.zarr | part-NNNNN.h5
    index/            one entry per committed shard (storage/index.py); index.json packs them

Opening reads the index only (no shard is opened until one of its videos is read), and at most
`max_open` shards are open at a time. `root` is a folder or an fsspec URL (storage/location.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage import durable, index, lock
from storage.durable import TMP_MARK, listdir
from storage.errors import CacheBusy, CacheError, FingerprintMismatch
from storage.ids import check_video_id
from storage.info import (
    CACHE_JSON,
    CACHE_VERSION,
    fingerprint_diff,
    read_cache_json,
    rebuild_hint,
    write_cache_json,
)
from storage.location import ObjectPath, as_path, is_remote
from storage.shard import (
    BACKENDS,
    SHARD_NAME,
    SUFFIX,
    ShardWriter,
    check_video,
    damaged,
    shard_number,
)

FAILURES = "failures.jsonl"
LOCK = lock.LOCK
MAX_OPEN = 64  # shards held open by a reader (HDF5: one descriptor each)


def shard_paths(root: str | os.PathLike) -> list[Path]:
    """The committed shards of a cache (those with an index entry), in shard-number order."""
    d = as_path(root) / "shards"
    return [d / n for n in sorted(index.entry_names(root), key=shard_number)]


def read_failures(root: str | os.PathLike) -> dict[str, dict]:
    """The latest failure record per video id (a torn last line from a crash is skipped)."""
    out: dict[str, dict] = {}
    path = as_path(root) / FAILURES
    if not path.exists():
        return out
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
            out[rec["video_id"]] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _load_index(root: Path | ObjectPath) -> tuple[list[dict], bool]:
    entries, current = index.load_with_state(root)
    lost = not entries and not index.made(root)  # made with the cache: absent = lost (or never made)
    if lost and any(SHARD_NAME.match(n) for n in listdir(root / "shards")):
        raise CacheError(f"{root}: the shards have no index; {rebuild_hint(root)}")
    return sorted(entries.values(), key=lambda e: shard_number(e["shard"])), current


@dataclass
class Video:
    id: str
    features: np.ndarray  # [T, D]
    timestamps: np.ndarray  # [T] seconds


class CacheReader:
    """Read-only view of a cache: ids, and each video's features and timestamps."""

    def __init__(self, root: str | os.PathLike, check: bool = True, max_open: int = MAX_OPEN):
        self.root = as_path(root)
        self.info = read_cache_json(self.root)
        self.check, self.max_open = check, max(1, max_open)
        self.entries, _ = _load_index(self.root)
        self._where: dict[str, tuple[int, int]] = {}
        for s, e in enumerate(self.entries):
            for i, vid in enumerate(e["ids"]):
                if vid in self._where:
                    other = self.entries[self._where[vid][0]]["shard"]
                    raise CacheError(f"{self.root}: video {vid!r} is in both {other} and {e['shard']}; "
                                     "run `python -m storage verify` to see the damage")
                self._where[vid] = (s, i)
        self.video_ids = sorted(self._where)
        self._open: OrderedDict[int, object] = OrderedDict()
        self._pid = os.getpid()

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

    def shard_path(self, s: int) -> Path | ObjectPath:
        return self.root / "shards" / self.entries[s]["shard"]

    def _shard(self, s: int):
        """The open reader of shard `s` (least recently used ones are closed beyond `max_open`)."""
        if self._pid != os.getpid():  # h5py handles do not survive fork: reopen in each process
            self._open.clear()
            self._pid = os.getpid()
        if s in self._open:
            self._open.move_to_end(s)
            return self._open[s]
        e, path = self.entries[s], self.shard_path(s)
        try:
            r = BACKENDS[e["format"]].Reader(path)
            shape = tuple(r.array("features").shape)
        except Exception as exc:
            raise damaged(path, "cannot open shard", exc) from exc
        if shape != (e["frames"], self.dim):
            r.close()
            raise damaged(path, "the shard does not match its index entry",
                          ValueError(f"features {shape}, the index says {(e['frames'], self.dim)}"))
        self._open[s] = r
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].close()
        return r

    def _read(self, vid: str) -> tuple[np.ndarray, np.ndarray]:
        s, a, b = self.locate(vid)
        feats, times = self.read_rows(s, a, b, f"video {vid!r}")
        if self.check:
            self.check_video(vid, feats, times)
        return feats, times

    def locate(self, vid: str) -> tuple[int, int, int]:
        """(shard s, first row, end row): where a video's frames are (`entries[s]`; nothing opened)."""
        try:
            s, i = self._where[vid]
        except KeyError:
            raise KeyError(f"video {vid!r} is not in the cache {self.root}") from None
        off = self.entries[s]["offsets"]
        return s, int(off[i]), int(off[i + 1])

    def read_rows(self, s: int, a: int, b: int, what: str = "") -> tuple[np.ndarray, np.ndarray]:
        """Features and timestamps of rows a:b of shard `s` (any rows: a video, a chunk)."""
        what = what or f"rows {a}:{b}"
        return self.read_array(s, "features", a, b, what), self.read_array(s, "timestamps", a, b, what)

    def read_array(self, s: int, name: str, a: int | None = None, b: int | None = None,
                   what: str = "") -> np.ndarray:
        """Rows a:b (default: all) of array `name` (features, timestamps) of shard `s`."""
        r = self._shard(s)
        try:
            return r.read(name, a, b)
        except Exception as exc:
            raise damaged(self.shard_path(s), f"cannot read {what or name}", exc) from exc

    def chunk_rows(self, s: int) -> int:
        """Rows per stored chunk of shard `s`'s features (the whole shard when it is not chunked)."""
        chunks = getattr(self._shard(s).array("features"), "chunks", None)
        return int(chunks[0]) if chunks else max(1, int(self.entries[s]["frames"]))

    def check_video(self, vid: str, feats: np.ndarray, times: np.ndarray) -> None:
        """Raise CorruptShardError unless a video's frames match the checksum in the index."""
        s, i = self._where[vid]
        check_video(self.shard_path(s), vid, feats, times, self.entries[s]["checksums"][i])

    def features(self, vid: str) -> np.ndarray:
        return self._read(vid)[0]

    def timestamps(self, vid: str) -> np.ndarray:
        return self._read(vid)[1]

    def num_frames(self, vid: str) -> int:
        s, i = self._where[vid]
        off = self.entries[s]["offsets"]
        return int(off[i + 1] - off[i])

    @property
    def total_frames(self) -> int:
        return sum(e["frames"] for e in self.entries)

    def provenances(self) -> list[dict]:
        """The distinct provenances of the shards (more than one: written under different setups)."""
        seen: dict[str, dict] = {}
        for e in self.entries:
            seen.setdefault(json.dumps(e["provenance"], sort_keys=True), e["provenance"])
        return list(seen.values())

    def iter_videos(self) -> Iterator[Video]:
        """Every video, reading each shard in one pass (the fast way to load a whole cache)."""
        for s, e in enumerate(self.entries):
            r, path = self._shard(s), self.shard_path(s)
            try:
                feats, times = r.read("features"), r.read("timestamps")
            except Exception as exc:
                raise damaged(path, "cannot read", exc) from exc
            for i, vid in enumerate(e["ids"]):
                a, b = e["offsets"][i], e["offsets"][i + 1]
                if self.check:
                    check_video(path, vid, feats[a:b], times[a:b], e["checksums"][i])
                yield Video(vid, feats[a:b], times[a:b])

    def failures(self) -> dict[str, dict]:
        """Videos whose latest attempt failed and that are not in the cache."""
        return {k: v for k, v in read_failures(self.root).items() if k not in self._where}

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(root: str | os.PathLike, check: bool = True, max_open: int = MAX_OPEN) -> CacheReader:
    """Open a cache for reading. `check` verifies each video's checksum as it is read."""
    return CacheReader(root, check=check, max_open=max_open)


class CacheWriter:
    """Exclusive write access to a cache: holds its lock, allocates shards, logs failures.

    One writer per cache at a time (a second one gets CacheBusy). Distributed workers write the
    shards the writer allocated to them with a ShardWriter (which commits its own index entry);
    only the writer removes uncommitted shards, appends failures and rewrites the index pack.
    """

    def __init__(self, root: str | os.PathLike, *, dim: int, dtype: str, fingerprint: dict,
                 provenance: dict | None = None, wait: bool = False):
        self.root = as_path(root)
        self.dim, self.dtype = int(dim), str(np.dtype(dtype).name)
        self.fingerprint, self.provenance = fingerprint, provenance or {}
        fresh = not (self.root / "shards").is_dir()
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_cache(self.root, wait=wait)
        try:
            if fresh:
                index.make(self.root)
            entries, _ = _load_index(self.root)
            self._init_info(entries)
            last = self._clean_uncommitted({e["shard"] for e in entries})
        except BaseException:
            self.close()
            raise
        # past every name seen, committed or not: a name is never reused, so a straggling worker of
        # an earlier run can never write into a shard allocated now
        self._next = max([last, *(shard_number(e["shard"]) for e in entries)]) + 1

    def _init_info(self, entries: list[dict]) -> None:
        want = {"dim": self.dim, "dtype": self.dtype, **self.fingerprint}
        if (self.root / CACHE_JSON).exists():
            info = read_cache_json(self.root)
            have = {"dim": info["dim"], "dtype": info["dtype"], **info["fingerprint"]}
            where = "the cache"
        elif entries:  # cache.json lost: the shards still say how they were made
            e = next((e for e in entries if index.fingerprint_id(e["dim"], e["dtype"], e["fingerprint"])
                      != index.fingerprint_id(self.dim, self.dtype, self.fingerprint)), entries[0])
            have, where = {"dim": e["dim"], "dtype": e["dtype"], **e["fingerprint"]}, f"shard {e['shard']}"
        else:
            have = want
        diff = fingerprint_diff(have, want)
        if diff:
            raise FingerprintMismatch(
                f"{self.root} was extracted with different settings ({where}), so it cannot be "
                "extended:\n  " + "\n  ".join(diff)
                + "\nUse another --out folder, or the cache's settings (python -m storage info).")
        if not (self.root / CACHE_JSON).exists():
            write_cache_json(self.root, {
                "format_version": CACHE_VERSION, "dim": self.dim, "dtype": self.dtype,
                "fingerprint": self.fingerprint, "provenance": self.provenance,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})

    def _clean_uncommitted(self, committed: set[str]) -> int:
        """Remove temporary and uncommitted shards; returns the highest shard number seen (-1: none)."""
        # Safe only because we hold the lock: nobody else is writing here. A complete shard without
        # an index entry was never committed (a crash between its data and its entry).
        last = -1
        for name in listdir(self.root / "shards"):
            base = name.split(TMP_MARK)[0]
            last = max(last, shard_number(base))
            if TMP_MARK in name or (SHARD_NAME.match(name) and name not in committed):
                durable.remove_path(self.root / "shards" / name)
        for d in (self.root, self.root / index.INDEX_DIR):
            for name in listdir(d):
                if TMP_MARK in name:
                    durable.remove_path(d / name)
        return last

    def committed_ids(self) -> set[str]:
        """Ids of every video in a committed shard (from the index; no shard is opened)."""
        return {vid for e in index.load(self.root).values() for vid in e["ids"]}

    def allocate_shard(self, fmt: str = "zarr") -> Path | ObjectPath:
        """A fresh shard path (never reused in this cache) for one group of videos."""
        if fmt not in SUFFIX:
            raise ValueError(f"unknown shard format {fmt!r}; choose one of {sorted(SUFFIX)}")
        path = self.root / "shards" / f"part-{self._next:05d}{SUFFIX[fmt]}"
        self._next += 1
        return path

    def shard_writer(self, path: Path | ObjectPath, chunk_frames: int = 1024) -> ShardWriter:
        return ShardWriter(path, self.dim, self.dtype, chunk_frames, fingerprint=self.fingerprint,
                           provenance=self.provenance)

    def record_failure(self, video_id: str, path: str, reason: str) -> None:
        rec = {"video_id": check_video_id(video_id), "path": path, "reason": reason,
               "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        line = (json.dumps(rec, ensure_ascii=False) + "\n").encode()
        if is_remote(self.root):  # no append on an object store: rewrite it whole (we hold the lock)
            path = self.root / FAILURES
            durable.atomic_write(path, (path.read_bytes() if path.exists() else b"") + line)
            return
        fd = os.open(self.root / FAILURES, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line: a crash cannot interleave records
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._lock_fd is None:
            return
        # the pack is derived data: failing to refresh it costs the next open some speed, no more
        with contextlib.suppress(OSError, CacheError):
            entries, current = index.load_with_state(self.root)
            if not current:
                index.write_pack(self.root, entries)
        lock.release(self._lock_fd)  # emptied: a run that changed nothing leaves the folder as it was
        self._lock_fd = None

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def lock_cache(root: Path | ObjectPath, wait: bool = False) -> int | ObjectPath:
    """Take the cache's write lock (storage.lock); returns its descriptor, for `lock.release`."""
    try:
        return lock.acquire(root / LOCK, wait)
    except lock.Held as e:
        stale = (f" (a run killed on another machine leaves its lock object behind: delete {root / LOCK} "
                 "once that run is known to be dead)" if is_remote(root) else "")
        raise CacheBusy(
            f"{root} is being written by {e}; wait for it to finish "
            f"(it resumes where it stops) or use another --out folder{stale}"
        ) from None
