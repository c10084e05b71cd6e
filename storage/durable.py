"""Writes that survive a crash: fsync of files and folders, and all-or-nothing file replacement."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TMP_MARK = ".tmp-"  # every temporary name contains it; only the cache's lock holder removes them


def fsync_file(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes the renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for dirpath, _, files in os.walk(path):
        for f in files:
            fsync_file(Path(dirpath) / f)
        fsync_file(Path(dirpath))


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` by `data` all at once: readers see the old file or the new one, never a part."""
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
