"""python -m storage info|verify CACHE"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from storage.cache import CacheError, open_cache, read_failures, shard_paths
from storage.verify import verify


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def info(root: Path, as_json: bool) -> int:
    cache = open_cache(root)
    shards = shard_paths(root)
    size = _bytes(root)
    fails = cache.failures()
    summary = {
        "path": str(root), "videos": len(cache), "frames": cache.total_frames,
        "dim": cache.dim, "dtype": cache.dtype, "shards": len(shards),
        "formats": sorted({p.suffix.lstrip(".") for p in shards}), "bytes": size,
        "failures": len(fails), "fingerprint": cache.fingerprint,
        "provenance": cache.info.get("provenance", {}), "created": cache.info.get("created"),
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{root}: {len(cache)} videos, {cache.total_frames} frames, "
          f"{cache.dtype}[{cache.dim}], {len(shards)} shard(s), {_human(size)}")
    if fails:
        print(f"failed videos: {len(fails)} (see {root / 'failures.jsonl'})")
    print("fingerprint:")
    for k, v in sorted(cache.fingerprint.items()):
        print(f"  {k}: {v}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m storage", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="videos, frames, dim, bytes, fingerprint")
    p.add_argument("cache", type=Path)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = sub.add_parser("verify", help="every shard opens and agrees with the index")
    p.add_argument("cache", type=Path)
    p.add_argument("--quick", action="store_true", help="skip the per-video checksums")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "info":
            return info(args.cache, args.json)
        rep = verify(args.cache, checksums=not args.quick)
    except CacheError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in rep.notes:
        print(f"note: {note}")
    for prob in rep.problems:
        print(f"BAD: {prob}")
    n_fail = len({k for k in read_failures(args.cache)}) if rep.ok else 0
    status = "ok" if rep.ok else f"{len(rep.problems)} problem(s) in {len(rep.bad_shards)} shard(s)"
    print(f"{args.cache}: {status}: {rep.videos} videos, {rep.frames} frames in {rep.shards} shard(s)"
          + (f"; {n_fail} video(s) listed in failures.jsonl" if n_fail else ""))
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
