"""The index: one small JSON entry per committed shard, and a pack of them for a fast open.

Writing a shard's entry is the step that commits it: a shard without an entry is not part of
the cache, whatever state it is in. An entry is written whole (a local rename here; a single
object PUT on object storage), so the same protocol needs no atomic rename of the shard itself.

    index/part-00000.zarr.json   {shard, format, dim, dtype, fingerprint, provenance, frames,
                                  chunk, ids, offsets, checksums}
    index.json                   the pack: the entries known when it was written, fingerprints and
                                 provenances stored once. Derived data: the writer rewrites it when
                                 entries were added; a reader uses it for the entries it lists and
                                 reads only the newer ones, so a stale or lost pack costs speed only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from storage import durable
from storage.errors import CacheError
from storage.location import as_path, is_remote

INDEX_DIR = "index"
PACK = "index.json"
PACK_VERSION = 1
SUFFIX = ".json"
MARKER = ".made"  # object stores only: index/ exists even before the first entry


def fingerprint_id(dim: int, dtype: str, fingerprint: dict) -> str:
    """A short stable digest of what the features mean (dim, dtype and the extraction fingerprint)."""
    text = json.dumps({"dim": int(dim), "dtype": str(dtype), **fingerprint}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_path(root: str | os.PathLike, shard_name: str) -> Path:
    return as_path(root) / INDEX_DIR / (shard_name + SUFFIX)


def write_entry(root: str | os.PathLike, entry: dict) -> None:
    """Commit a shard: its entry appears whole or not at all."""
    path = entry_path(root, entry["shard"])
    path.parent.mkdir(exist_ok=True)
    durable.atomic_write(path, json.dumps(entry, separators=(",", ":")).encode())


def make(root: str | os.PathLike) -> None:
    """Create the empty index of a new cache (on an object store, a marker: there are no empty folders)."""
    d = as_path(root) / INDEX_DIR
    d.mkdir(exist_ok=True)
    if is_remote(d):
        durable.atomic_write(d / MARKER, b"")


def made(root: str | os.PathLike) -> bool:
    """Whether the cache's index was made (absent: lost, or a cache older than the index)."""
    d = as_path(root) / INDEX_DIR
    return (d / MARKER).exists() if is_remote(d) else d.is_dir()


def remove_entry(root: str | os.PathLike, shard_name: str) -> None:
    path = entry_path(root, shard_name)
    if path.exists():
        path.unlink()
        durable.fsync_file(path.parent)


def entry_names(root: str | os.PathLike) -> list[str]:
    """Names of the shards that have an entry (committed), unordered."""
    names = durable.listdir(as_path(root) / INDEX_DIR)
    return [n[: -len(SUFFIX)] for n in names if n.endswith(SUFFIX) and durable.TMP_MARK not in n]


def read_entry(root: str | os.PathLike, shard_name: str) -> dict:
    path = entry_path(root, shard_name)
    try:
        entry = json.loads(path.read_bytes())
        if entry["shard"] != shard_name or len(entry["offsets"]) != len(entry["ids"]) + 1:
            raise ValueError("entry does not match its name or its ids")
    except (ValueError, KeyError, TypeError) as e:
        raise CacheError(f"{path}: unreadable index entry ({e}); rebuild the index from the shards with "
                         f"`python -m storage verify --rebuild-index {as_path(root)}`") from e
    return entry


def _read_pack(root: Path) -> dict[str, dict]:
    try:
        pack = json.loads((root / PACK).read_bytes())
        if pack.get("pack_version") != PACK_VERSION:
            return {}
        fps, provs = pack["fingerprints"], pack["provenances"]
        out = {}
        for e in pack["entries"]:
            e.update(fps[e.pop("fingerprint_id")])
            e["provenance"] = provs[e["provenance"]]
            out[e["shard"]] = e
        return out
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}  # missing or damaged: the entries themselves are the truth


def load(root: str | os.PathLike) -> dict[str, dict]:
    """{shard name: entry} of every committed shard: the pack for the ones it holds, files for the rest."""
    return load_with_state(root)[0]


def load_with_state(root: str | os.PathLike) -> tuple[dict[str, dict], bool]:
    """`load`, and whether the pack holds exactly the committed entries (else it is worth rewriting)."""
    root = as_path(root)
    names = entry_names(root)
    packed = _read_pack(root) if names else {}
    entries = {n: packed[n] if n in packed else read_entry(root, n) for n in names}
    return entries, len(packed) == len(entries) and all(n in packed for n in names)


def write_pack(root: str | os.PathLike, entries: dict[str, dict]) -> None:
    """Write the pack of `entries` (the lock holder only)."""
    fps: dict[str, dict] = {}
    provs: list[dict] = []
    prov_ids: dict[str, int] = {}
    packed = []
    for e in entries.values():
        fid = fingerprint_id(e["dim"], e["dtype"], e["fingerprint"])
        fps[fid] = {"dim": e["dim"], "dtype": e["dtype"], "fingerprint": e["fingerprint"]}
        key = json.dumps(e["provenance"], sort_keys=True)
        if key not in prov_ids:
            prov_ids[key] = len(provs)
            provs.append(e["provenance"])
        rest = {k: v for k, v in e.items() if k not in ("dim", "dtype", "fingerprint", "provenance")}
        packed.append({**rest, "fingerprint_id": fid, "provenance": prov_ids[key]})
    pack = {"pack_version": PACK_VERSION, "fingerprints": fps, "provenances": provs, "entries": packed}
    durable.atomic_write(as_path(root) / PACK, json.dumps(pack, separators=(",", ":")).encode())
