"""python -m extract --videos DIR|LIST.txt --out CACHE [options]: build or extend a per-frame
embedding cache."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from extract.config import DEFAULT_MODEL, ExtractConfig, ExtractError
from storage.console import console_options, setup_console

log = logging.getLogger("extract")


def parser() -> argparse.ArgumentParser:
    d = ExtractConfig()
    ap = argparse.ArgumentParser(
        prog="python -m extract", description=__doc__,
        epilog="Exit status: 0 all videos extracted, 1 some videos failed (see CACHE/failures.jsonl), "
               "2 the run could not start (settings, weights, cache). Run again to resume.")
    ap.add_argument("--videos", required=True,
                    help="a folder searched recursively for videos, or a text file listing video paths "
                         "(one per line, relative to the file; lines starting with '#' are comments)")
    ap.add_argument("--out", required=True,
                    help="cache folder or fsspec URL (s3://..., gs://...); created, or extended/resumed")
    g = ap.add_argument_group("sampling (one of --fps, --every, --num-frames)")
    pol = g.add_mutually_exclusive_group()
    pol.add_argument("--fps", type=float, default=None, help="frames per second (default 1)")
    pol.add_argument("--every", type=int, help="every N-th frame")
    pol.add_argument("--num-frames", type=int, help="N frames spread uniformly over each video")
    g.add_argument("--max-frames", type=int, help="at most N frames per video (kept uniformly spread)")
    g = ap.add_argument_group("backbone")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help="a timm model name, with or without a pretrained tag, or hf-hub:ORG/NAME (read "
                        "from the local Hugging Face cache when HF_HUB_OFFLINE=1 or offline; "
                        f"default {DEFAULT_MODEL})")
    g.add_argument("--model-kwargs", type=json.loads, default={},
                   help='JSON passed to timm.create_model, e.g. \'{"img_size": 112}\'')
    g.add_argument("--weights",
                   help="local weights: safetensors or torch state dict (weights_only load), loaded "
                        "through timm's checkpoint filter for the model where it takes them")
    g.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                   help="random init, seeded by --seed (offline; for tests)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of --no-pretrained's random init")
    g = ap.add_argument_group("throughput")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"frames per backbone call (default {d.batch_size})")
    g.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N (auto: cuda when present)")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=d.precision,
                   help="compute precision (autocast); auto: bf16 or fp16 where the device runs it "
                        "natively (CUDA, CPUs with AVX-512-BF16/AMX), else fp32. Part of the fingerprint")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone (compile time is in the summary line)")
    g.add_argument("--threads", type=int, default=d.threads, help="torch threads (0: all cores)")
    g.add_argument("--decoders", type=int, default=d.decoders,
                   help="decoder subprocesses per process (0: 1 on the CPU, cores - 1 with a GPU)")
    g = ap.add_argument_group("cache")
    g.add_argument("--dtype", choices=["float16", "float32"], default=d.dtype,
                   help=f"stored feature type (default {d.dtype})")
    g.add_argument("--format", choices=["zarr", "hdf5"], default=d.format,
                   help=f"shard format (default {d.format}); a cache may mix both")
    g.add_argument("--videos-per-shard", type=int, default=d.videos_per_shard,
                   help=f"videos in one shard file, the unit of resume (default {d.videos_per_shard})")
    g = ap.add_argument_group("distribution")
    g.add_argument("--workers", type=int, default=d.workers, help="local dask.distributed worker processes")
    g.add_argument("--scheduler", help="address of an existing dask.distributed scheduler")
    g = ap.add_argument_group("robustness")
    g.add_argument("--decode-timeout", type=float, default=d.decode_timeout,
                   help="seconds a decoder may go without progress before it is killed")
    g.add_argument("--fault-tol", type=float, default=d.fault_tol,
                   help="damaged frames tolerated by decord: fraction (<1) or count; <0 off")
    g.add_argument("--repair", action="store_true",
                   help="verify every shard first; move damaged ones to CACHE/quarantine/ and "
                        "extract their videos again")
    console_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    # Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning. With the decoder
    # (and anything else) sharing the cores, spinning threads burn the CPU the others need; on a
    # busy 2-core machine this alone doubles tf_efficientnet_lite0's rate (see docs/extract.md).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parser().parse_args(argv)
    setup_console(args)
    from storage import CacheError, CorruptShardError

    opts = vars(args).copy()
    videos, out, repair = opts.pop("videos"), opts.pop("out"), opts.pop("repair")
    del opts["quiet"], opts["verbose"]
    if opts["fps"] is None and opts["every"] is None and opts["num_frames"] is None:
        opts["fps"] = 1.0
    try:
        cfg = ExtractConfig(**opts)
        from extract.engine import run

        summary = run(cfg, videos, out, repair=repair)
    except (ExtractError, CacheError) as e:
        hint = ""
        if "\n  compute:" in str(e):  # e.g. a cache made in fp32 before `auto` picked bf16/fp16
            hint = ("\n--precision fp32 | bf16 | fp16 picks the compute precision "
                    "(float32 | bfloat16-autocast | float16-autocast)")
        log.error(f"error: {e}{hint}")
        return 2
    except CorruptShardError as e:
        log.error(f"error: {e}\nThe cache holds a damaged shard (`python -m storage verify {out}` lists "
                  "them): run the same command with --repair to move damaged shards to quarantine/ and "
                  "extract their videos again.")
        return 2
    except OSError as e:  # disk full, permissions, ...: committed shards are safe
        log.error(f"error: {e}\nThe cache keeps every committed shard: fix the cause and run the same "
                  "command again to resume.")
        return 2
    except KeyboardInterrupt:
        log.error("interrupted: run the same command again to resume")
        return 130
    for name, ids in sorted(summary.repaired.items()):
        held = f"{len(ids)} video(s) extracted again" if ids is not None else "index unreadable"
        log.warning(f"repair: {name} was damaged, moved to {out}/quarantine/ ({held})")
    for vid, notes in sorted(summary.notes.items()):
        for note in notes:
            log.warning(f"note: {vid}: {note}")
    for vid, reason in sorted(summary.failures.items()):
        log.warning(f"failed: {vid}: {reason}")
    print(summary.line())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
