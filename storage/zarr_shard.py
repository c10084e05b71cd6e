"""The Zarr v3 shard backend: a folder, one array per name, named dimensions, consolidated metadata."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from storage import durable
from storage.location import is_remote

SUFFIX = ".zarr"


def _store(path, read_only: bool = False):
    """What zarr opens: the local folder, or an fsspec store for an object-store path."""
    if not is_remote(path):
        return str(path)
    from zarr.storage import FsspecStore

    with warnings.catch_warnings():  # "fs was not created with asynchronous=True" (wrapped for us)
        warnings.simplefilter("ignore", UserWarning)
        return FsspecStore.from_url(path.url, storage_options=path.options, read_only=read_only)


class Writer:
    """Feature rows appended chunk by chunk; `finish` adds the per-video arrays and flushes to disk."""

    def __init__(self, path: Path, dim: int, dtype: np.dtype, chunk: int):
        import zarr

        self.path = path
        self.root = zarr.open_group(_store(path), mode="w")
        self.features = self.root.create_array(
            "features", shape=(0, dim), chunks=(chunk, dim), dtype=dtype,
            dimension_names=("frame", "feature"))
        self.timestamps = self.root.create_array(
            "timestamps", shape=(0,), chunks=(chunk * 16,), dtype="float32", dimension_names=("frame",))

    def append(self, feats: np.ndarray, times: np.ndarray) -> None:
        self.features.append(feats, axis=0)
        self.timestamps.append(times, axis=0)

    def finish(self, arrays: dict[str, tuple[np.ndarray, str]], attrs: dict) -> None:
        """Write `arrays` {name: (data, dimension name)} and `attrs`; everything is on disk after."""
        import zarr

        for name, (data, dim) in arrays.items():
            if data.dtype.kind in "OUT":
                a = self.root.create_array(name, shape=data.shape, dtype=str, dimension_names=(dim,))
                if len(data):
                    a[:] = data.astype(object)
            else:
                self.root.create_array(name, data=data, dimension_names=(dim,))
        self.root.update_attributes(attrs)  # one metadata write, not one per key
        with warnings.catch_warnings():  # "consolidated metadata is not in the v3 spec (yet)"
            warnings.simplefilter("ignore", UserWarning)
            zarr.consolidate_metadata(_store(self.path))
        durable.fsync_tree(self.path)

    def close(self) -> None:
        pass


class Reader:
    """Read access; `thorough` ignores the consolidated metadata and reads every array's own."""

    def __init__(self, path: Path, thorough: bool = False):
        import zarr

        # None: the consolidated copy when there is one (shards written before it was added have none)
        self.root = zarr.open_group(_store(path, read_only=True), mode="r",
                                    use_consolidated=False if thorough else None)
        self.attrs = dict(self.root.attrs)
        self._arrays: dict = {}

    def array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.root[name]
        return self._arrays[name]

    def read(self, name: str, a: int | None = None, b: int | None = None) -> np.ndarray:
        return np.asarray(self.array(name)[a:b])

    def close(self) -> None:
        self._arrays.clear()
