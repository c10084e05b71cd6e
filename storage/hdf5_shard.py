"""The HDF5 shard backend: one file, netCDF-style dimension scales, chunks no larger than the data.

A shard smaller than the writer's buffer (`chunk` rows) is stored contiguously at its exact size;
a larger one in chunks of a quarter of that, so the one partly filled chunk at the end wastes at
most chunk/4 rows (HDF5 allocates whole chunks; Zarr compresses the padding away).

On an object store (`storage.location.ObjectPath`) HDF5 cannot write in place: the shard is built
in a local temporary file and uploaded whole by `finish`; readers open it through fsspec (h5py
reads file-like objects, fetching the byte ranges it needs).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from storage import durable
from storage.location import is_remote

SUFFIX = ".h5"
JSON_ATTRS = ("fingerprint", "provenance")  # dicts, stored as JSON text (HDF5 attributes are flat)
# what netCDF-4 (and so h5netcdf / xarray) writes on a dimension that has no coordinate values
NETCDF_DIM = b"This is a netCDF dimension but not a netCDF variable."


class Writer:
    """Feature rows appended chunk by chunk; `finish` adds the per-video arrays and flushes to disk."""

    def __init__(self, path: Path, dim: int, dtype: np.dtype, chunk: int):
        import h5py

        self.path, self.dim, self.dtype, self.chunk = path, dim, dtype, chunk
        self.local = path
        if is_remote(path):  # built here, uploaded by finish
            fd, name = tempfile.mkstemp(suffix=SUFFIX, prefix="shard-")
            os.close(fd)
            self.local = Path(name)
        # v110 object headers: ~2 KB less per file than the 1.8-compatible default (HDF5 >= 1.10 reads it)
        self.file = h5py.File(self.local, "w", libver=("v110", "latest"))
        self.rows = 0

    def append(self, feats: np.ndarray, times: np.ndarray) -> None:
        f = self.file
        end = self.rows + len(feats)
        if "features" not in f:
            if len(feats) < self.chunk:  # the writer's last call: the whole shard is smaller than a chunk
                f.create_dataset("features", data=feats)
                f.create_dataset("timestamps", data=times)
                self.rows = end
                return
            rows = max(1, self.chunk // 4)
            f.create_dataset("features", shape=(0, self.dim), maxshape=(None, self.dim),
                             chunks=(rows, self.dim), dtype=self.dtype)
            f.create_dataset("timestamps", shape=(0,), maxshape=(None,), chunks=(rows,), dtype="float32")
        f["features"].resize(end, axis=0)
        f["timestamps"].resize(end, axis=0)
        f["features"][self.rows:end] = feats
        f["timestamps"][self.rows:end] = times
        self.rows = end

    def finish(self, arrays: dict[str, tuple[np.ndarray, str]], attrs: dict) -> None:
        """Write `arrays` {name: (data, dimension name)} and `attrs`; everything is on disk after."""
        import h5py

        f = self.file
        if "features" not in f:  # no frames at all
            f.create_dataset("features", shape=(0, self.dim), dtype=self.dtype)
            f.create_dataset("timestamps", shape=(0,), dtype="float32")
        dims = {"frame": ["features", "timestamps"], "feature": []}
        for name, (data, dim) in arrays.items():
            if data.dtype.kind in "OUT":
                f.create_dataset(name, data=[str(s) for s in data], dtype=h5py.string_dtype())
            else:
                f.create_dataset(name, data=data)
            dims.setdefault(dim, []).append(name)
        sizes = {"frame": self.rows, "feature": self.dim}
        sizes.update({dim: len(arrays[names[0]][0]) for dim, names in dims.items() if dim not in sizes})
        for dim, names in dims.items():
            scale = f.create_dataset(dim, shape=(sizes[dim],), dtype="float32")  # never written: no space
            scale.make_scale(dim)
            scale.attrs["NAME"] = np.bytes_(NETCDF_DIM)
            for name in names:
                f[name].dims[0].attach_scale(scale)
        f["features"].dims[1].attach_scale(f["feature"])
        for k, v in attrs.items():
            f.attrs[k] = json.dumps(v, sort_keys=True) if k in JSON_ATTRS else v
        f.flush()
        f.close()
        if self.local != self.path:
            self.path.fs.put_file(str(self.local), self.path.path)
            self.local.unlink()
        else:
            durable.fsync_file(self.path)

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()
        if self.local != self.path:
            self.local.unlink(missing_ok=True)


class Reader:
    """Read access to one file (one open descriptor until `close`)."""

    def __init__(self, path: Path, thorough: bool = False):
        import h5py

        self._fobj = path.open("rb") if is_remote(path) else None
        self.file = h5py.File(self._fobj or path, "r")
        self.attrs = {k: json.loads(v) if k in JSON_ATTRS else getattr(v, "item", lambda v=v: v)()
                      for k, v in self.file.attrs.items()}

    def array(self, name: str):
        return self.file[name]

    def read(self, name: str, a: int | None = None, b: int | None = None) -> np.ndarray:
        return np.asarray(self.file[name][a:b])

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()
        if self._fobj is not None:
            self._fobj.close()
