"""Writes that survive a crash: fsync of files and folders, and all-or-nothing file replacement.

On an object store (`storage.location.ObjectPath`) a single PUT is already all-or-nothing and
durable once it returns, so `atomic_write` is one `pipe_file` and the fsyncs are no-ops.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from storage.location import is_remote

TMP_MARK = ".tmp-"  # every temporary name contains it; only the cache's lock holder removes them


def fsync_file(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames inside it durable)."""
    if is_remote(path):
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    if is_remote(path):
        return
    for dirpath, _, files in os.walk(path):
        for f in files:
            fsync_file(Path(dirpath) / f)
        fsync_file(Path(dirpath))


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` all at once: readers see the old file or the new one, never a part."""
    if is_remote(path):
        path.fs.pipe_file(path.path, data)  # one PUT: an object appears whole or not at all
        return
    tmp = path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_file(path.parent)


def listdir(d: Path) -> list[str]:
    """Names in the folder `d` (none if it does not exist)."""
    if is_remote(d):
        return [p.name for p in d.iterdir()]
    try:
        return os.listdir(d)
    except FileNotFoundError:
        return []


def remove_path(path: Path) -> None:
    """Remove a file or a whole folder (a shard), if there."""
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
    elif path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def move(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` (on an object store: copy then delete, not atomic)."""
    if is_remote(src):
        src.fs.mv(src.path, dst.path, recursive=True)
    else:
        os.replace(src, dst)
