"""One shard: the frame features of a group of videos, in Zarr v3 or HDF5.

A shard is written under a temporary name and renamed into place when complete, so a crash
never leaves a half-written shard that looks whole. Arrays (identical in both formats):

    features   [frames, D]    float16 or float32, chunked along frames
    timestamps [frames]       float32, seconds
    offsets    [videos + 1]   int64: video i is rows offsets[i]:offsets[i+1]
    video_ids  [videos]       str
    checksums  [videos]       uint32: crc32 of the video's features bytes then timestamps bytes
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
import zlib
from pathlib import Path

import numpy as np

from storage.ids import check_video_id

SHARD_VERSION = 1
SUFFIX = {"zarr": ".zarr", "hdf5": ".h5"}
SHARD_NAME = re.compile(r"^part-(\d{5,})\.(zarr|h5)$")
TMP_MARK = ".tmp-"


class CorruptShardError(OSError):
    """A shard that cannot be read back as written; the message names the file and the reason."""


def shard_format(path: str | os.PathLike) -> str:
    """'zarr' or 'hdf5', from the shard's file name."""
    name = Path(path).name.split(TMP_MARK)[0]
    for fmt, suffix in SUFFIX.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"{path}: not a shard (expected a .zarr or .h5 name)")


def checksum(features: np.ndarray, timestamps: np.ndarray) -> int:
    crc = zlib.crc32(np.ascontiguousarray(features).data)
    return zlib.crc32(np.ascontiguousarray(timestamps).data, crc)


class ShardWriter:
    """Appends videos to a new shard; `commit()` makes it visible atomically.

    Rows are buffered up to one chunk so each on-disk chunk is written once.
    """

    def __init__(
        self, path: str | os.PathLike, dim: int, dtype: str = "float16", chunk_frames: int = 1024
    ):
        self.path = Path(path)
        self.format = shard_format(self.path)
        self.dim, self.dtype, self.chunk = int(dim), np.dtype(dtype), int(chunk_frames)
        self.tmp = self.path.with_name(f"{self.path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
        self.ids: list[str] = []
        self.offsets = [0]
        self.sums: list[int] = []
        self._feats: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._buffered = 0
        self._written = 0
        if self.format == "zarr":
            import zarr

            self._root = zarr.open_group(str(self.tmp), mode="w")
            self._f = self._root.create_array(
                "features", shape=(0, self.dim), chunks=(self.chunk, self.dim), dtype=self.dtype
            )
            self._t = self._root.create_array(
                "timestamps", shape=(0,), chunks=(self.chunk * 16,), dtype="float32"
            )
        else:
            import h5py

            self._root = h5py.File(self.tmp, "w")
            self._f = self._root.create_dataset(
                "features", shape=(0, self.dim), maxshape=(None, self.dim),
                chunks=(self.chunk, self.dim), dtype=self.dtype,
            )
            self._t = self._root.create_dataset(
                "timestamps", shape=(0,), maxshape=(None,), chunks=(self.chunk * 16,),
                dtype="float32",
            )

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
        if not len(feats):
            return
        if self.format == "zarr":
            self._f.append(feats, axis=0)
            self._t.append(times, axis=0)
        else:
            end = self._written + len(feats)
            self._f.resize(end, axis=0)
            self._t.resize(end, axis=0)
            self._f[self._written:end] = feats
            self._t[self._written:end] = times
        self._written += len(feats)

    def commit(self) -> Path:
        """Write the index arrays, flush to disk and rename into place; returns the final path."""
        self._flush(whole_chunks=False)
        offsets = np.asarray(self.offsets, dtype=np.int64)
        sums = np.asarray(self.sums, dtype=np.uint32)
        attrs = {
            "shard_version": SHARD_VERSION, "videos": len(self.ids),
            "frames": int(offsets[-1]), "dim": self.dim, "dtype": self.dtype.name,
        }
        if self.format == "zarr":
            r = self._root
            r.create_array("offsets", data=offsets)
            r.create_array("checksums", data=sums)
            ids = r.create_array("video_ids", shape=(len(self.ids),), dtype=str)
            if self.ids:
                ids[:] = np.array(self.ids, dtype=object)
            r.attrs.update(attrs)
            _fsync_tree(self.tmp)
        else:
            import h5py

            r = self._root
            r.create_dataset("offsets", data=offsets)
            r.create_dataset("checksums", data=sums)
            r.create_dataset("video_ids", data=self.ids, dtype=h5py.string_dtype())
            r.attrs.update(attrs)
            r.flush()
            r.close()
            _fsync_file(self.tmp)
        if self.path.exists():
            raise FileExistsError(f"{self.path}: a committed shard of that name already exists")
        os.replace(self.tmp, self.path)
        _fsync_file(self.path.parent)
        return self.path

    def abort(self) -> None:
        """Drop the temporary shard."""
        if self.format == "hdf5":
            with contextlib.suppress(Exception):
                self._root.close()
        remove_path(self.tmp)


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for f in files:
            _fsync_file(Path(dirpath) / f)
        _fsync_file(Path(dirpath))


class Shard:
    """Read access to one committed shard. Any failure to read raises CorruptShardError."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.format = shard_format(self.path)
        self._pid = None
        try:
            self._open()
            self.offsets = np.asarray(self._arr("offsets")[:], dtype=np.int64)
            self.checksums = np.asarray(self._arr("checksums")[:], dtype=np.uint32)
            raw = self._arr("video_ids")[:]
            self.video_ids = [v.decode() if isinstance(v, bytes) else str(v) for v in raw]
            fshape = tuple(self._arr("features").shape)
            tshape = tuple(self._arr("timestamps").shape)
            self.dtype = np.dtype(self._arr("features").dtype).name
        except CorruptShardError:
            raise
        except Exception as e:
            raise CorruptShardError(f"{self.path}: cannot read shard ({type(e).__name__}: {e})") from e
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
            raise CorruptShardError(f"{self.path}: {'; '.join(problems)}")
        self.dim = fshape[1]
        self.num_frames = fshape[0]

    def _open(self) -> None:
        # h5py handles do not survive fork: reopen in each process that reads.
        if self._pid == os.getpid():
            return
        if self.format == "zarr":
            import zarr

            self._root = zarr.open_group(str(self.path), mode="r")
        else:
            import h5py

            self._root = h5py.File(self.path, "r")
        self._arrays: dict = {}
        self._pid = os.getpid()

    def _arr(self, name: str):
        self._open()
        if name not in self._arrays:
            self._arrays[name] = self._root[name]
        return self._arrays[name]

    def __len__(self) -> int:
        return len(self.video_ids)

    def read(self, index: int, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Features [T, D] and timestamps [T] of the shard's `index`-th video."""
        a, b = int(self.offsets[index]), int(self.offsets[index + 1])
        try:
            feats = np.asarray(self._arr("features")[a:b])
            times = np.asarray(self._arr("timestamps")[a:b])
        except Exception as e:
            raise CorruptShardError(
                f"{self.path}: cannot read video {self.video_ids[index]!r} ({type(e).__name__}: {e})"
            ) from e
        if check:
            self._check(index, feats, times)
        return feats, times

    def read_all(self, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """All features and timestamps of the shard in one read (fast bulk loading)."""
        try:
            feats = np.asarray(self._arr("features")[:])
            times = np.asarray(self._arr("timestamps")[:])
        except Exception as e:
            raise CorruptShardError(f"{self.path}: cannot read ({type(e).__name__}: {e})") from e
        if check:
            for i in range(len(self)):
                a, b = self.offsets[i], self.offsets[i + 1]
                self._check(i, feats[a:b], times[a:b])
        return feats, times

    def _check(self, index: int, feats: np.ndarray, times: np.ndarray) -> None:
        if checksum(feats, times) != int(self.checksums[index]):
            raise CorruptShardError(
                f"{self.path}: video {self.video_ids[index]!r} fails its checksum (data damaged on disk)"
            )

    def close(self) -> None:
        if self._pid is not None and self.format == "hdf5":
            with contextlib.suppress(Exception):
                self._root.close()
        self._pid = None
