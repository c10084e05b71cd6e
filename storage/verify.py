"""`verify`: every committed shard opens, agrees with its index entry, the cache and its checksums.

`rebuild_index` makes the index again from the shards alone; `quarantine` moves shards aside.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from storage import durable, index, lock
from storage.cache import lock_cache
from storage.durable import listdir
from storage.errors import CacheError, CorruptShardError
from storage.info import CACHE_JSON, CACHE_VERSION, fingerprint_diff, read_cache_json, write_cache_json
from storage.location import as_path
from storage.shard import SHARD_NAME, TMP_MARK, Shard, shard_number

QUARANTINE = "quarantine"


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

    def bad(self, path: Path, problem: str) -> None:
        self.problems.append(problem)
        if path not in self.bad_shards:
            self.bad_shards.append(path)


def _shard_files(root: Path) -> list[Path]:
    names = [n for n in listdir(root / "shards") if SHARD_NAME.match(n)]
    return [root / "shards" / n for n in sorted(names, key=shard_number)]


def _described(fp: dict, dim: int, dtype: str) -> dict:
    return {"dim": int(dim), "dtype": str(dtype), **fp}


def _check_shard(path: Path, expect: dict | None, entry: dict | None, checksums: bool) -> Shard:
    """Open `path` and compare it with the cache's fingerprint and its index entry; raise if they differ."""
    shard = Shard(path)
    try:
        fp = shard.fingerprint if shard.fingerprint is not None else (entry or {}).get("fingerprint")
        have = _described(fp or {}, shard.dim, shard.dtype)
        if expect is not None and (diff := fingerprint_diff(expect, have)):
            raise CorruptShardError(f"{path}: extracted with other settings than the cache: "
                                    + "; ".join(d.replace("in the cache", "in cache.json")
                                                .replace("now", "in the shard") for d in diff))
        if entry is not None:
            mine = shard.entry(fp or {})
            if any(mine[k] != entry[k] for k in ("ids", "offsets", "checksums", "dim", "dtype")):
                raise CorruptShardError(f"{path}: does not match its index entry "
                                        f"{index.entry_path(path.parent.parent, path.name)}")
        if checksums:
            shard.read_all(check=True)
    finally:
        shard.close()
    return shard


def verify_shard(path: str | os.PathLike, checksums: bool = True) -> None:
    """Check one committed shard as `verify` does: it opens, carries the cache's fingerprint, agrees
    with its index entry and (`checksums`) every video's checksum holds.

    Raises CorruptShardError, or FileNotFoundError when the shard or its index entry is not there.
    """
    path = Path(path)
    root = path.parent.parent
    if not (path.exists() or path.is_symlink()):
        raise FileNotFoundError(errno.ENOENT, "no such shard", str(path))
    entry = index.read_entry(root, path.name)  # FileNotFoundError when it has none
    info = read_cache_json(root)
    _check_shard(path, _described(info["fingerprint"], info["dim"], info["dtype"]), entry, checksums)


def verify(root: str | os.PathLike, checksums: bool = True) -> Report:
    """Check a cache thoroughly; never raises for damage, reports it."""
    root = as_path(root)
    rep = Report()
    try:
        info = read_cache_json(root)
        expect = _described(info["fingerprint"], info["dim"], info["dtype"])
    except CacheError as e:
        rep.problems.append(str(e))
        if not (root / "shards").is_dir() or "older version" in str(e):
            return rep
        expect = None  # no cache.json: the shards must at least agree with each other
    try:
        entries = index.load(root)
    except CacheError as e:
        rep.problems.append(str(e))
        return rep
    seen: dict[str, str] = {}
    fingerprints: dict[str, list[str]] = {}
    files = _shard_files(root)
    for path in files:
        entry = entries.get(path.name)
        if entry is None:
            rep.notes.append(f"{path.name} has no index entry: not committed (removed by the next "
                             f"extraction), or the index was lost ({index.INDEX_DIR}/ rebuilt by "
                             "`python -m storage verify --rebuild-index`)")
            continue
        rep.shards += 1
        try:
            shard = _check_shard(path, expect, entry, checksums)
        except CorruptShardError as e:
            rep.bad(path, str(e))
            continue
        fp = _described(shard.fingerprint or entry["fingerprint"], shard.dim, shard.dtype)
        fingerprints.setdefault(json.dumps(fp, sort_keys=True), []).append(path.name)
        for vid in shard.video_ids:
            if vid in seen:
                rep.bad(path, f"{path}: video {vid!r} is also in {seen[vid]}")
            seen[vid] = path.name
        rep.frames += shard.num_frames
    for name in sorted(set(entries) - {p.name for p in files}, key=shard_number):
        rep.bad(root / "shards" / name, f"{root / 'shards' / name}: committed in the index but missing")
    if len(fingerprints) > 1:
        groups = "; ".join(f"{len(v)} shard(s) ({v[0]}, ...) with {k}" for k, v in fingerprints.items())
        rep.problems.append(f"{root}: the shards were extracted with different settings: {groups}")
    rep.videos = len(seen)
    stale = [n for n in listdir(root / "shards") if TMP_MARK in n]
    if stale:
        rep.notes.append(f"{len(stale)} unfinished temporary shard(s) from an interrupted run "
                         "(ignored; removed when extraction resumes)")
    return rep


def quarantine(root: str | os.PathLike, shards: list[Path]) -> dict[str, list[str] | None]:
    """Move shards out of the cache into `root/quarantine/` (kept for inspection).

    Returns {shard name: the video ids it held, or None when even its index is unreadable}.
    The index entry goes first, so from then on its videos are not in the cache and a resumed
    extraction re-extracts exactly them. The caller must hold the cache's write lock.
    """
    root = as_path(root)
    qdir = root / QUARANTINE
    qdir.mkdir(exist_ok=True)
    held: dict[str, list[str] | None] = {}
    for path in shards:
        try:
            held[path.name] = list(index.read_entry(root, path.name)["ids"])
        except (OSError, CacheError):
            held[path.name] = None
        index.remove_entry(root, path.name)
        if not (path.exists() or path.is_symlink()):
            continue
        dest, n = qdir / path.name, 1
        while dest.exists() or dest.is_symlink():
            dest, n = qdir / f"{path.name}.{n}", n + 1
        durable.move(path, dest)
    if shards:
        durable.fsync_file(root / "shards")
    return held


def rebuild_index(root: str | os.PathLike) -> Report:
    """Index every good shard again (and cache.json if lost); move the others to quarantine/."""
    root = as_path(root)
    if not (root / "shards").is_dir():
        raise CacheError(f"{root}: not a feature cache (no shards/ folder)")
    fd = lock_cache(root)
    try:
        return _rebuild(root)
    finally:
        lock.release(fd)


def _rebuild(root: Path) -> Report:
    rep = Report()
    try:
        info = json.loads((root / CACHE_JSON).read_text())
    except (OSError, ValueError):
        info = None
    good: list[tuple[Path, Shard]] = []
    for path in _shard_files(root):
        rep.shards += 1
        try:
            shard = _check_shard(path, None, None, checksums=True)
        except CorruptShardError as e:
            rep.bad(path, str(e))
            continue
        if shard.fingerprint is None and info is None:
            rep.bad(path, f"{path}: written before shards carried their fingerprint, and cache.json is lost")
            continue
        good.append((path, shard))
    if info is None:  # the shards say what the cache is, if they agree
        kinds = {json.dumps(_described(s.fingerprint, s.dim, s.dtype), sort_keys=True) for _, s in good}
        if len(kinds) > 1:
            raise CacheError(f"{root}: cache.json is lost and the shards were extracted with "
                             f"{len(kinds)} different settings; move the unwanted ones out of shards/ "
                             "and run this again")
        if good:
            s = good[0][1]
            info = {"format_version": CACHE_VERSION, "dim": s.dim, "dtype": s.dtype,
                    "fingerprint": s.fingerprint, "provenance": s.attrs.get("provenance", {}),
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            rep.notes.append(f"{CACHE_JSON} restored from the shards")
    expect = _described(info["fingerprint"], info["dim"], info["dtype"]) if info else None
    entries: dict[str, dict] = {}
    seen: dict[str, str] = {}
    for path, shard in good:
        fp = shard.fingerprint if shard.fingerprint is not None else info["fingerprint"]
        diff = fingerprint_diff(expect, _described(fp, shard.dim, shard.dtype))
        if diff:
            rep.bad(path, f"{path}: extracted with other settings than the cache: {'; '.join(diff)}")
            continue
        dup = next((v for v in shard.video_ids if v in seen), None)
        if dup is not None:
            rep.bad(path, f"{path}: video {dup!r} is also in {seen[dup]}")
            continue
        seen.update(dict.fromkeys(shard.video_ids, path.name))
        entries[path.name] = shard.entry(fp)
        rep.frames += shard.num_frames
    rep.videos = len(seen)
    for name in set(index.entry_names(root)) - set(entries):
        index.remove_entry(root, name)
    for name, entry in entries.items():
        try:
            same = index.read_entry(root, name) == entry
        except (OSError, CacheError):
            same = False
        if not same:
            index.write_entry(root, entry)
    index.make(root)
    index.write_pack(root, entries)
    if info is not None and (info.get("format_version") != CACHE_VERSION or not (root / CACHE_JSON).exists()):
        info["format_version"] = CACHE_VERSION
        write_cache_json(root, info)
    if rep.bad_shards:
        quarantine(root, rep.bad_shards)
        rep.notes.append(f"{len(rep.bad_shards)} shard(s) moved to {root / QUARANTINE}: run the "
                         "extraction again to extract their videos")
    return rep
