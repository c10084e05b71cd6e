"""python -m storage info|verify|export CACHE: what a feature cache holds; whether it is intact;
its features as one .npy per video or a Parquet table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from storage.cache import open_cache, read_failures
from storage.console import console_options, setup_console
from storage.errors import CacheError
from storage.export import FORMATS, export
from storage.location import as_path
from storage.verify import rebuild_index, verify


def _bytes(root: str) -> int:
    path = as_path(root)
    if isinstance(path, Path):
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.size()


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def info(root: str, as_json: bool) -> int:
    cache = open_cache(root)  # reads the index only: a damaged shard does not stop it
    size = _bytes(root)
    fails = cache.failures()
    provenances = cache.provenances()
    summary = {
        "path": str(root), "videos": len(cache), "frames": cache.total_frames,
        "dim": cache.dim, "dtype": cache.dtype, "shards": len(cache.entries),
        "formats": sorted({e["format"] for e in cache.entries}), "bytes": size,
        "failures": len(fails), "fingerprint": cache.fingerprint,
        "provenance": cache.info.get("provenance", {}), "shard_provenances": provenances,
        "created": cache.info.get("created"),
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{root}: {len(cache)} videos, {cache.total_frames} frames, "
          f"{cache.dtype}[{cache.dim}], {len(cache.entries)} shard(s), {_human(size)}")
    if fails:
        print(f"failed videos: {len(fails)} (see {root.rstrip('/')}/failures.jsonl)")
    print("fingerprint:")
    for k, v in sorted(cache.fingerprint.items()):
        print(f"  {k}: {v}")
    if len(provenances) > 1:
        print(f"written under {len(provenances)} different setups (library versions, hosts): "
              "`--json` lists them")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storage", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="videos, frames, dim, bytes, fingerprint")
    p.add_argument("cache", help="cache folder or fsspec URL")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("verify", help="every shard opens and agrees with the index")
    p.add_argument("cache", help="cache folder or fsspec URL")
    p.add_argument("--quick", action="store_true", help="skip the per-video checksums")
    p.add_argument("--rebuild-index", action="store_true",
                   help="index every good shard again (and cache.json if lost); move bad ones to quarantine/")
    p = sub.add_parser("export", help="features as OUT/<id>.npy + OUT/<id>_timestamps.npy, or one "
                                      "Parquet table (a row per frame)",
                       description="npy: OUT/<id>.npy [frames, dim] in the cache's dtype and "
                                   "OUT/<id>_timestamps.npy [frames] in seconds, ids' folders kept. "
                                   "parquet: OUT is one file with columns video_id, frame, timestamp, "
                                   "f0 ... f{dim-1} (float32).")
    p.add_argument("cache", type=Path, help="cache folder")
    p.add_argument("--to", choices=FORMATS, required=True, help="output layout")
    p.add_argument("out", type=Path, help="npy: a folder; parquet: the .parquet file")
    for p in sub.choices.values():
        console_options(p)
    args = ap.parse_args(argv)
    setup_console(args)
    try:
        if args.cmd == "info":
            return info(args.cache, args.json)
        if args.cmd == "export":
            n = export(args.cache, args.to, args.out)
            print(f"{args.cache}: {n} videos exported as {args.to} -> {args.out}")
            return 0
        if args.rebuild_index:
            rep = rebuild_index(args.cache)
        else:
            rep = verify(args.cache, checksums=not args.quick)
    except CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # not damage: permissions, too many open files, ...
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in rep.notes:
        print(f"note: {note}")
    for prob in rep.problems:
        print(f"BAD: {prob}")
    n_fail = len({k for k in read_failures(args.cache)}) if rep.ok else 0
    if args.cmd == "verify" and args.rebuild_index:
        print(f"{args.cache}: index rebuilt: {rep.videos} videos, {rep.frames} frames in "
              f"{rep.shards - len(rep.bad_shards)} shard(s)")
        return 0 if rep.ok else 1
    status = "ok" if rep.ok else f"{len(rep.problems)} problem(s) in {len(rep.bad_shards)} shard(s)"
    print(f"{args.cache}: {status}: {rep.videos} videos, {rep.frames} frames in {rep.shards} shard(s)"
          + (f"; {n_fail} video(s) listed in failures.jsonl" if n_fail else ""))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
