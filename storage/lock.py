"""The cache's write lock: an exclusive `flock` on CACHE/.lock, with the holder's pid written inside.

The file's content ("pid N") only names the holder for messages and for the dask lease; the
flock alone decides who writes. This module is the one place that writes or reads that content.
The file is empty when nobody holds it, as before the first run: a run that changed nothing leaves
the cache folder byte-identical (DVC tracks it).

On an object store there is no flock. The lock is then an object that exists while held, created
with fsspec's exclusive mode (`open(..., "xb")`), holding "pid N host H", and deleted on release.
Exclusive creation is atomic only where the file system implements it (for S3/GCS: a conditional
PUT, in the fsspec back-ends that support it); elsewhere the object is written, read back and
compared, which narrows the race of two writers starting at once but does not close it. A holder
that was killed leaves the object behind: one from this host whose process is gone is taken over;
one from another host is reported, and must be deleted by hand once that run is known to be dead.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

from storage.location import ObjectPath, as_path, is_remote

LOCK = ".lock"
HOLDER_WAIT = 2.0  # seconds a refused writer waits for the new holder to write its pid


class Held(Exception):
    """The lock is held by another process: `pid`, or None if it has not said who it is."""

    def __init__(self, pid: int | None, host: str | None = None):
        who = f"pid {pid}" if pid is not None else "another process"
        super().__init__(f"{who} on {host}" if host and host != socket.gethostname() else who)
        self.pid = pid


def acquire(path: Path | ObjectPath, wait: bool) -> int | ObjectPath:
    """Take the exclusive lock on `path` (blocking if `wait`) and record our pid; returns the handle
    for `release` (a file descriptor, or the lock object on an object store).

    Raises Held if another process holds it (the new holder's pid is waited for HOLDER_WAIT s).
    """
    if is_remote(path):
        return _acquire_object(path, wait)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            os.close(fd)
            raise
        pid = _wait_for_holder(fd)
        os.close(fd)
        raise Held(pid) from None
    record = f"pid {os.getpid()}".encode()
    os.pwrite(fd, record, 0)  # overwrite in place, then cut: the file is never empty while held
    os.ftruncate(fd, len(record))
    return fd


def release(fd: int | ObjectPath) -> None:
    """Clear the pid (a later reader must not take it for a live holder; the file is empty again, as
    before the run), then drop the lock. Cleared while still held, so no new holder's pid is erased."""
    if is_remote(fd):
        if _object_holder(fd) == _me():
            fd.unlink(missing_ok=True)
        return
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock


def holder_pid(fd: int) -> int | None:
    """The pid recorded in an open lock file, or None if there is none."""
    text = os.pread(fd, 64, 0).decode(errors="replace").strip()
    kind, _, pid = text.partition(" ")
    return int(pid) if kind == "pid" and pid.isdigit() else None


def _wait_for_holder(fd: int) -> int | None:
    """The new holder's pid: it takes the flock first and writes its pid just after, so wait a little.

    A pid left by a holder that was killed (no `release`) is not believed while that process is gone.
    """
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        pid = holder_pid(fd)
        if pid is not None and _alive(pid):
            return pid
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def held_by(root: str | os.PathLike, pid: int, host: str | None = None) -> bool:
    """True if process `pid` on `host` (default: this one) holds the write lock of the cache at `root`.

    Only a lock object (an object store) names its host; a flock is checked on this host only."""
    root = as_path(root)
    if is_remote(root):
        return _object_holder(root / LOCK) == (pid, host or socket.gethostname())
    try:
        fd = os.open(Path(root) / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        if holder_pid(fd) != pid:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True  # held exclusively: by `pid`, which wrote its pid after taking it
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False  # nobody holds it: `pid` is gone
    finally:
        os.close(fd)


def _me() -> tuple[int, str]:
    return os.getpid(), socket.gethostname()


def _object_holder(path: ObjectPath) -> tuple[int, str] | None:
    """(pid, host) written in a lock object, or None if there is none."""
    try:
        kind, pid, _, host = path.read_bytes().decode(errors="replace").split(" ", 3)
    except (FileNotFoundError, ValueError):
        return None
    return (int(pid), host) if kind == "pid" and pid.isdigit() else None


def _acquire_object(path: ObjectPath, wait: bool) -> ObjectPath:
    pid, host = _me()
    record = f"pid {pid} host {host}".encode()
    while True:
        try:
            with path.open("xb") as f:  # exclusive where the file system supports it (see above)
                f.write(record)
            if _object_holder(path) == (pid, host):  # read back: another writer may have raced us
                return path
        except FileExistsError:
            pass
        holder = _object_holder(path)
        if holder is not None and holder[1] == host and not _alive(holder[0]):
            path.unlink(missing_ok=True)  # left by a killed run on this host
            continue
        if not wait:
            raise Held(*(holder or (None, None)))
        time.sleep(1.0)
