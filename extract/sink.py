"""Per-video results -> shards: each group of videos is added to its shard in id order, then committed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

import storage


class ShardSink:
    """Collects per-video results; adds them to each group's shard in group order; commits groups.

    groups: [(shard path, [item index, ...])]. Items are indices into the caller's video list.
    """

    def __init__(self, groups: list[tuple[Path, list[int]]], dim: int, dtype: str, ids: list[str],
                 on_failure: Callable[[int, str], None],
                 before_commit: Callable[[Path], None] | None = None,
                 on_commit: Callable[[Path, list[str]], None] | None = None,
                 fingerprint: dict | None = None, provenance: dict | None = None):
        self.groups = groups
        # what produced the features (the cache refuses other settings) and where: in each shard
        self.fingerprint, self.provenance = fingerprint, provenance
        self.dim, self.dtype, self.ids = dim, dtype, ids
        self.on_failure, self.before_commit, self.on_commit = on_failure, before_commit, on_commit
        self.where = {item: (g, k) for g, (_, items) in enumerate(groups) for k, item in enumerate(items)}
        self.results: list[dict[int, tuple | None]] = [{} for _ in groups]
        self.next_pos = [0] * len(groups)
        self.writers: list[storage.ShardWriter | None] = [None] * len(groups)
        self.committed: list[Path] = []
        self.done_ids: list[str] = []
        self.failed: dict[int, str] = {}

    def video_done(self, item: int, feats: np.ndarray, ts: np.ndarray) -> None:
        g, k = self.where[item]
        self.results[g][k] = (feats, ts)
        self._advance(g)

    def video_failed(self, item: int, reason: str) -> None:
        g, k = self.where[item]
        self.results[g][k] = None
        self.failed[item] = reason
        self.on_failure(item, reason)
        self._advance(g)

    def _advance(self, g: int) -> None:
        path, items = self.groups[g]
        res = self.results[g]
        while self.next_pos[g] in res:
            r = res.pop(self.next_pos[g])
            if r is not None:
                if self.writers[g] is None:
                    self.writers[g] = storage.ShardWriter(path, self.dim, self.dtype,
                                                          fingerprint=self.fingerprint,
                                                          provenance=self.provenance)
                self.writers[g].add(self.ids[items[self.next_pos[g]]], *r)
            self.next_pos[g] += 1
        if self.next_pos[g] == len(items):
            w, self.writers[g] = self.writers[g], None
            if w is None:
                return  # every video of the group failed: no shard
            try:
                if self.before_commit is not None:
                    self.before_commit(path)
                w.commit()
            except BaseException:
                w.abort()
                raise
            self.committed.append(path)
            self.done_ids.extend(w.ids)
            if self.on_commit is not None:
                self.on_commit(path, list(w.ids))

    def abort(self) -> None:
        for i, w in enumerate(self.writers):
            if w is not None:
                w.abort()
                self.writers[i] = None
