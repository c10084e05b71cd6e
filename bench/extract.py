"""Benchmark stage one: end-to-end extraction vs the backbone alone vs a naive loop. Prints ONE JSON line.

    python bench/extract.py                                   # small ViT and tf_efficientnet_lite0
    python bench/extract.py --model tf_efficientnet_lite0 --every 5 --size 360x640

Per model, on the same synthetic videos (textured, moving, H.264) and the same settings:
  backbone_fps   the model alone on ready input tensors, same batch size and threads: the limit
  e2e_fps        `extract.run` (decode subprocess + batching + model + shard writes), start-up excluded
  naive_fps      one video at a time in one process: decode, preprocess, infer, no overlap
  decode_fps     the decoder alone (decode + resize/crop, one process): what decoding costs
and the ratios e2e/backbone and e2e/naive. All rates are frames per second measured in this run.
Random-init weights: speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from extract import ExtractConfig, run
from extract.backbone import load_backbone
from extract.decode import decode_video
from extract.engine import find_videos
from pipeline.synth import write_video


def textured_frames(n: int, h: int, w: int, seed: int):
    """A smooth random texture panning across the frame plus a little noise: codec work like real video."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 4 + 64, w // 4 + 64, 3), dtype=np.uint8)
    base = np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))  # 4x4 blocks: compressible, not trivial
    for i in range(n):
        y, x = (2 * i) % 200, (3 * i) % 200
        f = base[y:y + h, x:x + w].astype(np.int16) + rng.integers(-6, 7, (h, w, 1), dtype=np.int16)
        yield np.clip(f, 0, 255).astype(np.uint8)


def make_videos(root: Path, count: int, seconds: float, fps: float, h: int, w: int) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        write_video(root / f"v{k:03d}.mp4", textured_frames(round(seconds * fps), h, w, k), fps=fps, gop=250,
                    crf=23)


def backbone_fps(bb, batch: int, seconds: float) -> float:
    h, w = bb.input_size
    x = bb.normalize(torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8))
    with torch.inference_mode():
        bb.model(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3 * batch:
            bb.model(x)
            n += batch
    return n / (time.perf_counter() - t0)


def naive_fps(bb, cfg: ExtractConfig, videos: list) -> float:
    """One video at a time: decode all its picked frames, then infer them; nothing overlaps."""
    n, t0 = 0, time.perf_counter()
    for v in videos:
        pix = [ev[2] for ev in decode_video(v.path, cfg.sampling(), bb.geometry) if ev[0] == "frames"]
        pix = torch.from_numpy(np.concatenate(pix))
        for a in range(0, len(pix), cfg.batch_size):
            bb.embed(pix[a:a + cfg.batch_size])
        n += len(pix)
    return n / (time.perf_counter() - t0)


def decode_fps(bb, cfg: ExtractConfig, videos: list) -> float:
    n, t0 = 0, time.perf_counter()
    for v in videos:
        n += sum(len(ev[2]) for ev in decode_video(v.path, cfg.sampling(), bb.geometry) if ev[0] == "frames")
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="timm model (repeatable); default: "
                    "vit_small_patch16_224 and tf_efficientnet_lite0")
    ap.add_argument("--videos", type=int, default=6, help="number of synthetic videos")
    ap.add_argument("--seconds", type=float, default=12.0, help="length of each video")
    ap.add_argument("--src-fps", type=float, default=25.0)
    ap.add_argument("--size", default="270x480", help="video HxW")
    pol = ap.add_mutually_exclusive_group()
    pol.add_argument("--fps", type=float, help="sampling: frames per second")
    pol.add_argument("--every", type=int, help="sampling: every N-th frame (default 5)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--backbone-seconds", type=float, default=10.0)
    ap.add_argument("--videos-dir", help="benchmark on these videos instead of synthetic ones")
    ap.add_argument("--skip-naive", action="store_true")
    args = ap.parse_args(argv)
    models = args.model or ["vit_small_patch16_224", "tf_efficientnet_lite0"]
    h, w = map(int, args.size.lower().split("x"))
    every = args.every if (args.every or args.fps) else 5
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        vdir = Path(args.videos_dir) if args.videos_dir else tmp / "videos"
        if not args.videos_dir:
            make_videos(vdir, args.videos, args.seconds, args.src_fps, h, w)
        videos = find_videos(vdir, ExtractConfig().extensions)
        synth = {"size": f"{h}x{w}", "fps": args.src_fps, "seconds": args.seconds,
                 "codec": "h264 crf23 gop250"}
        out = {"host_cores": os.cpu_count(), "torch": torch.__version__,
               "videos": len(videos), "video": None if args.videos_dir else synth,
               "sampling": {"fps": args.fps} if args.fps else {"every": every},
               "batch_size": args.batch_size, "models": {}}
        for name in models:
            cfg = ExtractConfig(model=name, pretrained=False, batch_size=args.batch_size,
                                threads=args.threads, fps=args.fps, every=None if args.fps else every,
                                progress=False)
            torch.set_num_threads(args.threads or os.cpu_count() or 1)
            bb = load_backbone(cfg)
            res = {"threads": torch.get_num_threads()}
            # the CPU is shared: measure the limit right before and right after, use the mean
            before = backbone_fps(bb, cfg.batch_size, args.backbone_seconds)
            s = run(cfg, vdir, tmp / f"cache-{name}")
            assert s.ok, s.failures
            after = backbone_fps(bb, cfg.batch_size, args.backbone_seconds)
            res["backbone_fps_before_after"] = [round(before, 2), round(after, 2)]
            res["backbone_fps"] = (before + after) / 2
            res["frames"] = s.frames
            res["e2e_fps"] = s.fps
            res["e2e_fps_with_startup"] = s.frames / s.seconds
            res["decode_fps"] = decode_fps(bb, cfg, videos)
            if not args.skip_naive:
                res["naive_fps"] = naive_fps(bb, cfg, videos)
                res["e2e_vs_naive"] = res["e2e_fps"] / res["naive_fps"]
            res["e2e_vs_backbone"] = res["e2e_fps"] / res["backbone_fps"]
            out["models"][name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}
            shutil.rmtree(tmp / f"cache-{name}", ignore_errors=True)
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
