"""Benchmark stage one: end-to-end extraction vs the backbone alone vs a naive loop. Prints ONE JSON line.

    python bench/extract.py                                   # small ViT and tf_efficientnet_lite0
    python bench/extract.py --model tf_efficientnet_lite0 --every 5 --size 360x640

Per model, on the same synthetic videos (textured, moving, H.264) and the same settings:
  backbone_fps   the model alone on ready input tensors, same batch size and threads: the limit
  e2e_fps        `extract.run` as the CLI runs it (decode subprocess + batching + model + shard
                 writes): frames / extraction time, i.e. after the model has loaded
  naive_fps      one video at a time in one process: decode, preprocess, infer, no overlap
  decode_fps     the decoder alone (decode + resize/crop, one process): what decoding costs
  model_busy     share of the e2e extraction time the model was computing (1.0: never waited)
and the ratios e2e/backbone and e2e/naive (median over alternating rounds, since the CPU may be
shared), and ideal_ratio_given_decode_cost: model + decode CPU time per frame on these cores, the
ceiling for e2e/backbone on this workload. All rates are frames per second measured in this run.
Random-init weights: speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m extract` does (before torch loads)

import torch

from extract import ExtractConfig, run
from extract.backbone import load_backbone
from extract.decode import decode_video
from extract.discover import find_videos
from extract.synth import write_video


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


def cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def measured(fn, *args) -> tuple[float, float]:
    """(frames per wall second, frames per CPU second of this process and its children) of fn(*args)."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = fn(*args)
    return n / (time.perf_counter() - t0), n / max(1e-9, cpu_seconds() - c0)


def backbone_frames(bb, batch: int, seconds: float) -> int:
    h, w = bb.input_size
    x = bb.normalize(torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8))
    with torch.inference_mode():
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3 * batch:
            bb.model(x)
            n += batch
    return n


def e2e_frames(cfg, vdir, out, got: list) -> int:
    s = run(cfg, vdir, out)  # as the CLI: decoders start while the model loads
    assert s.ok, s.failures
    got.append(s)
    return s.frames


def naive_frames(bb, cfg: ExtractConfig, videos: list) -> float:
    """One video at a time: decode all its picked frames, then infer them; nothing overlaps."""
    n = 0
    for v in videos:
        pix = [ev[2] for ev in decode_video(v.path, cfg.sampling(), bb.geometry) if ev[0] == "frames"]
        pix = torch.from_numpy(np.concatenate(pix))
        for a in range(0, len(pix), cfg.batch_size):
            bb.embed(pix[a:a + cfg.batch_size])
        n += len(pix)
    return n


def decode_frames(bb, cfg: ExtractConfig, videos: list) -> float:
    n = 0
    for v in videos:
        n += sum(len(ev[2]) for ev in decode_video(v.path, cfg.sampling(), bb.geometry) if ev[0] == "frames")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="timm model (repeatable); default: "
                    "vit_small_patch16_224 and tf_efficientnet_lite0")
    ap.add_argument("--videos", type=int, default=8, help="number of synthetic videos")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each video (8 x 8 s x 5 = 320 "
                    "frames = 10 batches of 32: no padded batch)")
    ap.add_argument("--src-fps", type=float, default=25.0)
    ap.add_argument("--size", default="270x480", help="video HxW")
    pol = ap.add_mutually_exclusive_group()
    pol.add_argument("--fps", type=float, help="sampling: frames per second")
    pol.add_argument("--every", type=int, help="sampling: every N-th frame (default 5)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--backbone-seconds", type=float, default=6.0)
    ap.add_argument("--videos-dir", help="benchmark on these videos instead of synthetic ones")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--rounds", type=int, default=2, help="alternating measurement rounds (median ratio)")
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
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
               "videos": len(videos), "video": None if args.videos_dir else synth,
               "sampling": {"fps": args.fps} if args.fps else {"every": every},
               "batch_size": args.batch_size, "models": {}}
        load0 = [round(x, 2) for x in os.getloadavg()]
        for name in models:
            cfg = ExtractConfig(model=name, pretrained=False, batch_size=args.batch_size,
                                threads=args.threads, fps=args.fps, every=None if args.fps else every,
                                progress=False)
            torch.set_num_threads(args.threads or os.cpu_count() or 1)
            bb = load_backbone(cfg)
            rounds = []
            # the CPU is shared with other work: alternate the measurements in rounds and compare
            # within each round; also count CPU seconds (this process + its decoder children)
            for r in range(args.rounds):
                rr = {}
                rr["backbone_fps"], _ = measured(
                    backbone_frames, bb, cfg.batch_size, args.backbone_seconds)
                shutil.rmtree(tmp / "cache", ignore_errors=True)
                got: list = []
                measured(e2e_frames, cfg, vdir, tmp / "cache", got)
                s = got[0]
                # e2e_fps: frames / extraction time (what the summary line reports: model load excluded)
                rr["e2e_fps"], rr["frames"] = s.fps, s.frames
                rr["model_busy"] = s.model_seconds / s.extract_seconds
                rr["e2e_fps_with_startup"] = s.frames / s.seconds
                if not args.skip_naive:
                    rr["naive_fps"], _ = measured(naive_frames, bb, cfg, videos)
                if r == 0:
                    rr["decode_fps"], _ = measured(decode_frames, bb, cfg, videos)
                rounds.append(rr)
            res = {"threads": torch.get_num_threads(), "frames": rounds[0]["frames"],
                   "decode_fps_one_core": rounds[0]["decode_fps"]}
            for key in ("backbone_fps", "e2e_fps", "e2e_fps_with_startup", "naive_fps", "model_busy"):
                if key in rounds[0]:
                    res[key] = [round(rr[key], 2) for rr in rounds]
            med = lambda xs: float(np.median(xs))  # noqa: E731
            res["e2e_vs_backbone"] = med([rr["e2e_fps"] / rr["backbone_fps"] for rr in rounds])
            # the best any pipeline can do on these cores: model + decoding CPU seconds per frame
            cores = os.cpu_count() or 1
            res["ideal_ratio_given_decode_cost"] = med(
                [1 / (1 + rr["backbone_fps"] / (cores * res["decode_fps_one_core"])) for rr in rounds])
            if not args.skip_naive:
                res["e2e_vs_naive"] = med([rr["e2e_fps"] / rr["naive_fps"] for rr in rounds])

            out["models"][name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}
        out["load_average_start"] = load0
        out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
