"""The cache's write lock: an exclusive `flock` on CACHE/.lock, with the holder's pid written inside.

The file's content ("pid N host H") only names the holder for messages and for the dask lease;
the flock alone decides who writes. This module is the one place that writes or reads that content.
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
        where = f" on host {host}" if host and host != socket.gethostname() else ""
        super().__init__(f"pid {pid}{where}" if pid is not None else "another process")
        self.pid, self.host = pid, host


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
        who = _wait_for_holder(fd)
        os.close(fd)
        raise Held(*(who or (None, None))) from None
    record = f"pid {os.getpid()} host {socket.gethostname()}".encode()
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


def holder(fd: int) -> tuple[int, str | None] | None:
    """(pid, host) recorded in an open lock file (host None in files written before it was), or None."""
    words = os.pread(fd, 512, 0).decode(errors="replace").split()
    if len(words) not in (2, 4) or words[0] != "pid" or not words[1].isdigit():
        return None
    if len(words) == 4 and words[2] != "host":
        return None
    return int(words[1]), (words[3] if len(words) == 4 else None)


def _wait_for_holder(fd: int) -> tuple[int, str | None] | None:
    """The new holder: it takes the flock first and writes its pid just after, so wait a little.

    A pid left by a holder on this host that was killed (no `release`) is not believed while that
    process is gone; another host's pid cannot be checked and is believed.
    """
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        who = holder(fd)
        if who is not None and (who[1] not in (None, socket.gethostname()) or _alive(who[0])):
            return who
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
    """True if process `pid` of `host` (default: this one) holds the write lock of the cache at `root`.

    On this host the flock itself is checked (a killed holder's pid left in the file is not
    believed). Another host's flock cannot be seen from here (network file systems do not all
    share it), so there the file must name exactly that pid and host: true until that holder
    releases the lock or another run takes it, false if the file cannot be read at all.
    """
    here = socket.gethostname()
    host = host or here
    root = as_path(root)
    if is_remote(root):
        return _object_holder(root / LOCK) == (pid, host)
    try:
        fd = os.open(Path(root) / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        who = holder(fd)
        if who is None or who[0] != pid or (who[1] or here) != host:
            return False
        if host != here:
            return True
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
