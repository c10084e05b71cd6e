"""Run `python -m extract ...` with a fault injected into the storage layer (tests and bench only).

    FAULT=kill:<k>:<stage>  SIGKILL this process during the k-th shard commit (k from 1), at
                            stage `begin` (data written, no per-video arrays yet), `fsync` (shard
                            complete and flushed, not yet renamed), `renamed` (renamed, no index
                            entry yet), `indexed` (index entry renamed into place, its folder
                            not yet fsynced) or `entry` (data complete, just before the entry
                            is written: on an object store, the one step that commits)
    FAULT=enospc:<k>        the k-th shard commit fails with OSError(ENOSPC)
    FAULT=enospc-append     the first write of feature rows fails with OSError(ENOSPC)
    FAULT=enospc-failures   appending to failures.jsonl fails with OSError(ENOSPC)

Usage: python -m tests.faultinject <extract CLI args>   (FAULT in the environment)
"""

from __future__ import annotations

import errno
import os
import signal
import sys

import storage.cache
import storage.durable as durable
import storage.index
import storage.shard as shard


def _enospc(what: str) -> OSError:
    return OSError(errno.ENOSPC, f"No space left on device (injected: {what})")


def install(spec: str) -> None:
    kind, *rest = spec.split(":")
    commits = [0]
    orig_commit = shard.ShardWriter.commit

    def die() -> None:
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    if kind == "kill":
        k, stage = int(rest[0]), rest[1]
        orig_tree, orig_file = durable.fsync_tree, durable.fsync_file

        def commit(self):
            commits[0] += 1
            if commits[0] == k and stage == "begin":
                die()
            return orig_commit(self)

        def fsync_tree(path):
            orig_tree(path)
            if commits[0] == k and stage == "fsync":
                die()

        def fsync_file(path):
            is_dir = os.path.isdir(path)
            if commits[0] == k and is_dir and (stage, path.name) in (("renamed", "shards"),
                                                                     ("indexed", "index")):
                die()
            orig_file(path)
            if commits[0] == k and stage == "fsync" and not is_dir and durable.TMP_MARK in path.name:
                die()  # hdf5: the temporary file is flushed, not renamed

        orig_entry = storage.index.write_entry

        def write_entry(root, entry):
            if commits[0] == k and stage == "entry":
                die()
            orig_entry(root, entry)

        shard.ShardWriter.commit = commit
        durable.fsync_tree, durable.fsync_file = fsync_tree, fsync_file
        storage.index.write_entry = write_entry
    elif kind == "enospc":
        k = int(rest[0])

        def commit(self):
            commits[0] += 1
            if commits[0] == k:
                raise _enospc("shard commit")
            return orig_commit(self)

        shard.ShardWriter.commit = commit
    elif kind == "enospc-append":
        def append(self, feats, times):
            raise _enospc("feature rows")

        shard.ShardWriter._append = append
    elif kind == "enospc-failures":
        def record_failure(self, video_id, path, reason):
            raise _enospc("failures.jsonl")

        storage.cache.CacheWriter.record_failure = record_failure
    else:
        raise SystemExit(f"unknown FAULT {spec!r}")


if __name__ == "__main__":
    if os.environ.get("FAULT"):
        install(os.environ["FAULT"])
    from extract.__main__ import main

    sys.exit(main(sys.argv[1:]))
