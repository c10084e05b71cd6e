"""cache.json: the cache's format version, dim, dtype, fingerprint (compared) and provenance (recorded)."""

from __future__ import annotations

import json
import os

from storage.errors import CacheError
from storage.files import write_json
from storage.location import as_path

CACHE_VERSION = 2  # 2: shards carry their fingerprint, the index commits them
CACHE_JSON = "cache.json"


def rebuild_hint(root: str | os.PathLike) -> str:
    return f"`python -m storage verify --rebuild-index {root}` rebuilds it from the shards"


def read_cache_json(root: str | os.PathLike) -> dict:
    path = as_path(root) / CACHE_JSON
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        if (as_path(root) / "shards").is_dir():
            raise CacheError(f"{root}: {CACHE_JSON} is missing; {rebuild_hint(root)}") from None
        raise CacheError(f"{root}: not a feature cache (no {CACHE_JSON})") from None
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: unreadable ({e}); {rebuild_hint(root)}") from e
    version = info.get("format_version")
    if version == 1:
        raise CacheError(f"{root} was written by an older version (format 1, no index); "
                         f"{rebuild_hint(root)} (the shards are kept as they are)")
    if version != CACHE_VERSION:
        raise CacheError(f"{path}: cache format {version!r}, this code reads {CACHE_VERSION}")
    return info


def write_cache_json(root: str | os.PathLike, info: dict) -> None:
    write_json(as_path(root) / CACHE_JSON, info, sort_keys=True)  # fsynced: durable before any shard


def fingerprint_diff(old: dict, new: dict) -> list[str]:
    """Human-readable differences between two fingerprints (empty when they agree)."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} in the cache, {new.get(k)!r} now" for k in keys
            if old.get(k) != new.get(k)]
