"""What goes wrong with a cache, as exceptions whose messages say what happened and what to do."""

from __future__ import annotations

import errno
import re


class CacheError(RuntimeError):
    """A cache that cannot be used as asked; the message says why and what to do."""


class FingerprintMismatch(CacheError):
    """Features extracted with other settings than the cache's."""


class CacheBusy(CacheError):
    """Another process holds the cache's write lock."""


class CorruptShardError(CacheError):
    """A shard that cannot be read back as written; the message names the file and the way out."""


# Failures of the machine rather than of the data: the shard is fine, the read must not blame it.
_ENVIRONMENT = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EACCES, errno.EPERM, errno.EAGAIN,
                errno.EINTR, errno.ENOSPC, errno.EROFS, errno.ETIMEDOUT}


def environmental(e: BaseException) -> bool:
    """True for errors that are not damage to the data (too many open files, permissions, memory)."""
    if isinstance(e, MemoryError):
        return True
    if not isinstance(e, OSError):
        return False
    code = e.errno
    if code is None:  # h5py puts the C errno in the message only
        m = re.search(r"errno = (\d+)", str(e))
        code = int(m.group(1)) if m else None
    return code in _ENVIRONMENT
