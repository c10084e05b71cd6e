"""Where a cache lives: a local folder (`pathlib.Path`) or an fsspec URL (`ObjectPath`).

`as_path("s3://bucket/cache")` gives an `ObjectPath`: the few `pathlib.Path` methods the cache code
uses (`/`, `name`, `parent`, `exists`, `is_dir`, `iterdir`, `read_bytes`, ...) over an fsspec file
system, so the same code walks both. What differs is in `storage.durable` (local: temporary
name, fsync, rename; object store: one PUT) and `storage.lock`. `file://` URLs become plain
local paths: the local protocol (fsync, rename, flock) is the stronger one. `local://` (fsspec's
other name for the local file system) keeps the object-store protocol on a local folder, which
lets the crash tests kill a writer of that protocol and resume it in another process.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from pathlib import Path


def is_url(target: object) -> bool:
    return isinstance(target, str) and "://" in target


def as_path(target: str | os.PathLike) -> Path | ObjectPath:
    """A local Path for a path or a `file://` URL, an ObjectPath for any other fsspec URL."""
    if isinstance(target, ObjectPath | Path):
        return target
    if not is_url(target):
        return Path(target)
    protocol, _, rest = str(target).partition("://")
    if protocol == "file":
        return Path(rest)
    import fsspec

    options = {"auto_mkdir": True} if protocol == "local" else {}  # objects need no parent folders
    fs = fsspec.filesystem(protocol, **options)
    return ObjectPath(fs, fs._strip_protocol(str(target)).rstrip("/"), protocol, options)


def is_remote(path: object) -> bool:
    return isinstance(path, ObjectPath)


class ObjectPath:
    """A path on an fsspec file system, with the subset of the `pathlib.Path` API the cache uses."""

    def __init__(self, fs, path: str, protocol: str, options: dict | None = None):
        self.fs, self.path, self.protocol, self.options = fs, path, protocol, options or {}

    def _at(self, path: str) -> ObjectPath:
        return ObjectPath(self.fs, path, self.protocol, self.options)

    def __truediv__(self, name: str) -> ObjectPath:
        return self._at(posixpath.join(self.path, name))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> ObjectPath:
        return self._at(posixpath.dirname(self.path))

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.path}"

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"ObjectPath({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectPath) and (self.fs, self.path) == (other.fs, other.path)

    def __hash__(self) -> int:
        return hash(self.path)

    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_symlink(self) -> bool:
        return False

    def iterdir(self) -> Iterator[ObjectPath]:
        self.fs.invalidate_cache(self.path)  # other machines write here too: list afresh
        try:
            names = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return iter(())
        return iter(self._at(n.rstrip("/")) for n in names if n.rstrip("/") != self.path)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, errors: str | None = None) -> str:
        return self.read_bytes().decode(errors=errors or "strict")

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        self.fs.makedirs(self.path, exist_ok=True)  # object stores have no folders: often a no-op

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def open(self, mode: str = "rb"):
        return self.fs.open(self.path, mode)

    def size(self) -> int:
        """Bytes under this path (every object below it)."""
        return int(self.fs.du(self.path, total=True)) if self.exists() else 0
