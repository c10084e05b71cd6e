"""One shard: the frame features of a group of videos, in a Zarr v3 folder or an HDF5 file.

The formats are backends (storage/zarr_shard.py, storage/hdf5_shard.py) with one interface:
`Writer(path, dim, dtype, chunk)` with `append(feats, times)`, `finish(arrays, attrs)`, `close()`;
`Reader(path, thorough)` with `attrs`, `array(name)`, `read(name, a, b)`, `close()`. Arrays
(identical in both, with named dimensions so xarray opens them as they are):

    features   [frame, feature]  float16 or float32, chunked along frames
    timestamps [frame]           float32, seconds
    offsets    [video_edge]      int64, videos + 1: video i is rows offsets[i]:offsets[i+1]
    video_ids  [video]           str
    checksums  [video]           uint32: crc32 of the video's features bytes then timestamps bytes

and attributes: shard_version, videos, frames, dim, dtype, fingerprint, fingerprint_id, provenance.

Commit: the shard's data is written and flushed, and then its index entry is written whole
(storage/index.py). The entry is the commit: until it exists the shard is not part of the cache.
Locally the data is written under a temporary name and renamed into place before the entry; on
an object store (no atomic rename of a folder) it is written at its final name, which the lock
holder allocated to this writer alone, and an uncommitted one is removed at the next open.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import uuid
import zlib
from pathlib import Path

import numpy as np

from storage import durable, hdf5_shard, index, zarr_shard
from storage.durable import TMP_MARK
from storage.errors import CorruptShardError, FingerprintMismatch, environmental
from storage.ids import check_video_id
from storage.info import fingerprint_diff, read_cache_json
from storage.location import as_path, is_remote

SHARD_VERSION = 2
BACKENDS = {"zarr": zarr_shard, "hdf5": hdf5_shard}
SUFFIX = {fmt: b.SUFFIX for fmt, b in BACKENDS.items()}
SHARD_NAME = re.compile(r"^part-(\d{5,})\.(zarr|h5)$")

__all__ = ["TMP_MARK", "CorruptShardError", "Shard", "ShardWriter"]


def shard_format(path: str | os.PathLike) -> str:
    """'zarr' or 'hdf5', from the shard's file name."""
    name = as_path(path).name.split(TMP_MARK)[0]
    for fmt, suffix in SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"{path}: not a shard (expected a .zarr or .h5 name)")


def shard_number(name: str) -> int:
    m = SHARD_NAME.match(name)
    return int(m.group(1)) if m else -1


def checksum(features: np.ndarray, timestamps: np.ndarray) -> int:
    crc = zlib.crc32(np.ascontiguousarray(features).data)
    return zlib.crc32(np.ascontiguousarray(timestamps).data, crc)


def storage_provenance() -> dict:
    """Who wrote a shard: the libraries that shape its bytes, and the host."""
    import h5py
    import zarr

    return {"python": platform.python_version(), "numpy": np.__version__, "zarr": zarr.__version__,
            "h5py": h5py.__version__, "host": socket.gethostname()}


def repair_hint(root: str | os.PathLike) -> str:
    return (f"its videos cannot be read until `python -m extract --videos ... --out {root} --repair` "
            "moves it to quarantine/ and extracts them again")


def damaged(path: Path, what: str, e: BaseException) -> CorruptShardError:
    """The error to raise for `e` met while reading `path`; re-raises `e` if it is not damage."""
    if environmental(e):
        raise e
    return CorruptShardError(f"{path}: {what} ({type(e).__name__}: {e}); {repair_hint(path.parent.parent)}")


def check_video(path: Path, vid: str, feats: np.ndarray, times: np.ndarray, crc: int) -> None:
    """Raise CorruptShardError unless the video's bytes match the checksum written with them."""
    if checksum(feats, times) != int(crc):
        raise CorruptShardError(f"{path}: video {vid!r} fails its checksum (data damaged on disk); "
                                f"{repair_hint(path.parent.parent)}")


def make_entry(name: str, *, dim: int, dtype: str, fingerprint: dict, provenance: dict,
               ids: list[str], offsets: list[int], checksums: list[int]) -> dict:
    """A shard's index entry: all a reader needs to find a video without opening the shard."""
    return {"shard": name, "format": shard_format(name), "dim": int(dim), "dtype": str(dtype),
            "fingerprint": fingerprint, "provenance": provenance, "frames": int(offsets[-1]),
            "ids": list(ids), "offsets": [int(o) for o in offsets],
            "checksums": [int(c) for c in checksums]}


class ShardWriter:
    """Appends videos to a new shard of the cache `path.parent.parent`; `commit()` adds it to the cache.

    Rows are buffered up to one chunk so each on-disk chunk is written once. `fingerprint`: the
    settings that produced the features; a cache with other settings refuses the shard at
    commit (None: the cache's own, for writers that already checked it).
    """

    def __init__(self, path: str | os.PathLike, dim: int, dtype: str = "float16",
                 chunk_frames: int = 1024, fingerprint: dict | None = None,
                 provenance: dict | None = None):
        self.path = as_path(path)
        self.root = self.path.parent.parent
        self.format = shard_format(self.path)
        self.dim, self.dtype, self.chunk = int(dim), np.dtype(dtype), int(chunk_frames)
        self.fingerprint, self.provenance = fingerprint, {**storage_provenance(), **(provenance or {})}
        self.tmp = self.path.with_name(f"{self.path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
        if is_remote(self.path):  # no rename on an object store: written in place (see above)
            if index.entry_path(self.root, self.path.name).exists():
                raise FileExistsError(f"{self.path}: a shard of that name is already committed")
            self.tmp = self.path
        self.ids: list[str] = []
        self.offsets = [0]
        self.sums: list[int] = []
        self._feats: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._buffered = 0
        self._backend = BACKENDS[self.format].Writer(self.tmp, self.dim, self.dtype, self.chunk)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_frames(self) -> int:
        return self.offsets[-1]

    def add(self, video_id: str, features: np.ndarray, timestamps: np.ndarray) -> None:
        """Append one video's features [T, D] and timestamps [T] (seconds)."""
        features = np.ascontiguousarray(features, dtype=self.dtype)
        timestamps = np.ascontiguousarray(timestamps, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"{video_id}: features shape {features.shape}, expected [T, {self.dim}]")
        if timestamps.shape != (features.shape[0],):
            raise ValueError(f"{video_id}: {timestamps.shape[0]} timestamps for {features.shape[0]} frames")
        check_video_id(video_id)
        if video_id in self.ids:
            raise ValueError(f"{video_id}: added twice to {self.path.name}")
        self.ids.append(video_id)
        self.offsets.append(self.offsets[-1] + features.shape[0])
        self.sums.append(checksum(features, timestamps))
        self._feats.append(features)
        self._times.append(timestamps)
        self._buffered += features.shape[0]
        if self._buffered >= self.chunk:
            self._flush(whole_chunks=True)

    def _flush(self, whole_chunks: bool) -> None:
        if not self._buffered:
            return
        feats, times = np.concatenate(self._feats), np.concatenate(self._times)
        n = (len(feats) // self.chunk) * self.chunk if whole_chunks else len(feats)
        self._append(feats[:n], times[:n])
        self._feats, self._times = [feats[n:]], [times[n:]]
        self._buffered = len(feats) - n

    def _append(self, feats: np.ndarray, times: np.ndarray) -> None:
        if len(feats):
            self._backend.append(feats, times)

    def _cache_fingerprint(self) -> dict:
        """The cache's fingerprint, after checking ours against it (the refusal at write)."""
        info = read_cache_json(self.root)
        have = {"dim": info["dim"], "dtype": info["dtype"], **info["fingerprint"]}
        want = {"dim": self.dim, "dtype": self.dtype.name, **(self.fingerprint or info["fingerprint"])}
        diff = fingerprint_diff(have, want)
        if diff:
            raise FingerprintMismatch(f"{self.path.name}: not added to {self.root}, whose features were "
                                      "extracted with other settings:\n  " + "\n  ".join(diff))
        return info["fingerprint"]

    def commit(self) -> Path:
        """Write the per-video arrays, flush, rename into place (locally) and commit the index entry."""
        fingerprint = self._cache_fingerprint()
        self._flush(whole_chunks=False)
        ids = np.array(self.ids, dtype=object)
        arrays = {"offsets": (np.asarray(self.offsets, dtype=np.int64), "video_edge"),
                  "video_ids": (ids, "video"), "checksums": (np.asarray(self.sums, dtype=np.uint32), "video")}
        attrs = {"shard_version": SHARD_VERSION, "videos": len(self.ids), "frames": self.num_frames,
                 "dim": self.dim, "dtype": self.dtype.name, "fingerprint": fingerprint,
                 "fingerprint_id": index.fingerprint_id(self.dim, self.dtype.name, fingerprint),
                 "provenance": self.provenance}
        if index.entry_path(self.root, self.path.name).exists():
            raise FileExistsError(f"{self.path}: a shard of that name is already committed")
        self._backend.finish(arrays, attrs)
        if self.tmp != self.path:
            if self.path.exists():
                raise FileExistsError(f"{self.path}: a shard of that name already exists")
            os.replace(self.tmp, self.path)
            durable.fsync_file(self.path.parent)
        index.write_entry(self.root, make_entry(
            self.path.name, dim=self.dim, dtype=self.dtype.name, fingerprint=fingerprint,
            provenance=self.provenance, ids=self.ids, offsets=self.offsets,
            checksums=self.sums))
        return self.path

    def abort(self) -> None:
        """Drop the uncommitted shard."""
        self._backend.close()
        if self.tmp != self.path or not index.entry_path(self.root, self.path.name).exists():
            durable.remove_path(self.tmp)


class Shard:
    """Everything in one shard, read from the shard alone (verify, rebuilding the index, tests).

    `thorough` reads every array's own metadata (Zarr) rather than the consolidated copy.
    """

    def __init__(self, path: str | os.PathLike, thorough: bool = True):
        self.path = as_path(path)
        self.format = shard_format(self.path)
        try:
            self._r = BACKENDS[self.format].Reader(self.path, thorough=thorough)
            self.attrs = self._r.attrs
            self.offsets = self._r.read("offsets").astype(np.int64)
            self.checksums = self._r.read("checksums").astype(np.uint32)
            raw = self._r.read("video_ids")
            self.video_ids = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
            fshape = tuple(self._r.array("features").shape)
            tshape = tuple(self._r.array("timestamps").shape)
            self.dtype = np.dtype(self._r.array("features").dtype).name
        except Exception as e:
            raise damaged(self.path, "cannot read shard", e) from e
        n = len(self.video_ids)
        problems = []
        if len(fshape) != 2:
            problems.append(f"features has shape {fshape}, expected [frames, D]")
        elif self.offsets.shape != (n + 1,) or self.checksums.shape != (n,):
            problems.append(f"{n} ids but {len(self.offsets)} offsets and {len(self.checksums)} checksums")
        elif self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != fshape[0]:
            problems.append(f"offsets do not cover the {fshape[0]} feature rows")
        elif tshape != (fshape[0],):
            problems.append(f"{tshape} timestamps for {fshape[0]} frames")
        if problems:
            raise CorruptShardError(
                f"{self.path}: {'; '.join(problems)}; {repair_hint(self.path.parent.parent)}")
        self.dim = fshape[1]
        self.num_frames = fshape[0]

    @property
    def fingerprint(self) -> dict | None:
        """The fingerprint stamped in the shard (None in shards written before shards carried one)."""
        return self.attrs.get("fingerprint")

    def entry(self, fingerprint: dict) -> dict:
        """This shard's index entry, as its writer made it."""
        return make_entry(self.path.name, dim=self.dim, dtype=self.dtype, fingerprint=fingerprint,
                          provenance=self.attrs.get("provenance", {}), ids=self.video_ids,
                          offsets=self.offsets.tolist(), checksums=self.checksums.tolist())

    def __len__(self) -> int:
        return len(self.video_ids)

    def read(self, index: int, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Features [T, D] and timestamps [T] of the shard's `index`-th video."""
        a, b = int(self.offsets[index]), int(self.offsets[index + 1])
        try:
            feats, times = self._r.read("features", a, b), self._r.read("timestamps", a, b)
        except Exception as e:
            raise damaged(self.path, f"cannot read video {self.video_ids[index]!r}", e) from e
        if check:
            check_video(self.path, self.video_ids[index], feats, times, self.checksums[index])
        return feats, times

    def read_all(self, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All features and timestamps of the shard in one read."""
        try:
            feats, times = self._r.read("features"), self._r.read("timestamps")
        except Exception as e:
            raise damaged(self.path, "cannot read", e) from e
        if check:
            for i in range(len(self)):
                a, b = self.offsets[i], self.offsets[i + 1]
                check_video(self.path, self.video_ids[i], feats[a:b], times[a:b], self.checksums[i])
        return feats, times

    def close(self) -> None:
        self._r.close()
