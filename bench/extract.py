"""Benchmark stage one: the backbone per precision and layout, end to end, fidelity, memory. ONE JSON line.

    python bench/extract.py                                   # small ViT and tf_efficientnet_lite0, 1 frame/s
    python bench/extract.py --model tf_efficientnet_lite0 --every 5 --size 360x640
    python bench/extract.py --videos-dir ../shared/real_videos   # real footage instead of synthetic

Per model, on the same videos and settings (rates in frames per second, measured in this run):
  backbone_fps   the model alone on ready input tensors, same batch and threads, per configuration:
                 fp32_eager (fp32, NCHW: what stage one ran before --precision), fp32 (channels_last
                 for convolutional models), and each reduced precision the CPU runs natively
                 (autocast + channels_last)
  e2e_fps        `extract.run` as the CLI runs it with the default --precision auto: frames /
                 extraction time (decode subprocess + batching + model + shard writes)
  ratios         e2e / fp32_eager, e2e / best backbone, e2e / the backbone in e2e's own
                 configuration; medians over alternating rounds (the CPU is shared)
  fidelity       features per precision vs fp32 on real frames (photos panned into a video, or
                 --videos-dir): per-frame cosine (median, min) and relative L2 error
  compile        torch.compile of the auto configuration: compile seconds, rate, and the frame
                 count from which it pays for itself (--no-compile skips it)
  peak_rss_mb    peak resident memory of `python -m extract` (auto, and --precision fp32)
ideal_ratio_given_decode_cost: model + decode CPU time per frame on these cores, the ceiling for
e2e / backbone on this workload. tf_efficientnet_lite0 runs its real offline ImageNet weights (fidelity
depends on them); other models random init (speed does not depend on the weight values).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `python -m extract` does (before torch loads)

import torch

from extract import ExtractConfig, run
from extract.backbone import OFFLINE_MODEL, fidelity, load_backbone, native_precisions
from extract.decode import decode_video
from extract.discover import find_videos
from extract.synth import write_video
from pipeline.demo import DemoConfig, Segment, render

REPO = Path(__file__).resolve().parents[1]


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


def photo_video(path: Path) -> None:
    """64 s of real photos (scikit-image), each panned and zoomed for 4 s: real frames for fidelity."""
    names = ("cat", "coffee", "rocket", "astronaut", "grass", "gravel", "brick", "moon",
             "hubble_deep_field", "text", "coins", "camera", "colorwheel", "page", "cat", "coffee")
    cfg = DemoConfig(fps=5, width=320, height=240)
    frames = render([Segment(n, 4.0) for n in names], cfg, np.random.default_rng(0))
    write_video(path, frames, fps=cfg.fps, gop=10)


def backbone_variant(bb, precision: str, channels_last: bool):
    """The same weights in another precision / memory layout (eager)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = copy.deepcopy(bb.model).to(memory_format=fmt)
    return dataclasses.replace(bb, model=model, forward=model, precision=precision,
                               channels_last=channels_last, compile_seconds=0.0)


def backbone_frames(bb, x: torch.Tensor, seconds: float) -> int:
    bb.infer(x)  # warm-up (oneDNN picks its kernels on the first call)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 3 * len(x):
        bb.infer(x)
        n += len(x)
    return n


def rate(fn, *args) -> float:
    t0 = time.perf_counter()
    n = fn(*args)
    return n / (time.perf_counter() - t0)


def decode_frames(bb, cfg: ExtractConfig, videos: list) -> int:
    return sum(len(ev[2]) for v in videos for ev in decode_video(v.path, cfg.sampling(), bb.geometry)
               if ev[0] == "frames")


def naive_frames(bb, cfg: ExtractConfig, videos: list) -> int:
    """One video at a time: decode all its picked frames, then infer them; nothing overlaps."""
    n = 0
    for v in videos:
        pix = [ev[2] for ev in decode_video(v.path, cfg.sampling(), bb.geometry) if ev[0] == "frames"]
        pix = torch.from_numpy(np.concatenate(pix))
        for a in range(0, len(pix), cfg.batch_size):
            bb.embed(pix[a:a + cfg.batch_size])
        n += len(pix)
    return n


def cli_run(args: list[str], env: dict, logs: Path) -> tuple[float, float]:
    """(frames/s while extracting, peak RSS in MB) of one `python -m extract` run.

    Peak RSS is the child's VmHWM, polled: getrusage/wait4 would report at least this process's own
    size, which Linux carries over into a child's ru_maxrss across fork + exec.
    """
    hwm = 0
    with open(logs / "out.txt", "w") as out, open(logs / "err.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "extract", *args], stdout=out, stderr=err, env=env)
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                hwm = max(hwm, int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)))
            except (OSError, AttributeError):
                pass  # exiting
            time.sleep(0.05)
    text = (logs / "out.txt").read_text()
    if proc.returncode != 0:
        err = (logs / "err.txt").read_text()
        raise RuntimeError(f"extract {args} failed ({proc.returncode}):\n{text}\n{err}")
    m = re.search(r"\(([\d.]+) frames/s while extracting", text)
    return float(m.group(1)), hwm / 1024


def real_frames(paths: list[str], geometry: dict) -> torch.Tensor:
    """Frames at 1 frame/s from `paths`, preprocessed for the model: uint8 [N, H, W, 3]."""
    policy = {"policy": "fps", "fps": 1.0, "max_frames": None}
    return torch.from_numpy(np.concatenate(
        [ev[2] for p in paths for ev in decode_video(p, policy, geometry) if ev[0] == "frames"]))


def measure_model(name: str, args, vdir: Path, photos: list[str], tmp: Path) -> dict:
    med = lambda xs: float(np.median(xs))  # noqa: E731
    real_weights = name.split(".")[0] == OFFLINE_MODEL
    policy = {"fps": args.fps, "every": None} if args.fps else {"every": args.every}
    cfg = ExtractConfig(model=name, pretrained=real_weights, batch_size=args.batch_size, threads=args.threads,
                        progress=False, **policy)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    bb = load_backbone(cfg)  # precision auto
    videos = find_videos(vdir, cfg.extensions)
    native = native_precisions(bb.device)
    variants = {"fp32_eager": backbone_variant(bb, "fp32", False),
                "fp32": backbone_variant(bb, "fp32", bb.channels_last)}
    for p in ("bf16", "fp16"):
        if p in native:
            variants[p] = backbone_variant(bb, p, bb.channels_last)
    h, w = bb.input_size
    x = bb.normalize(torch.randint(0, 256, (args.batch_size, h, w, 3), dtype=torch.uint8))

    # fidelity on real frames, against fp32 NCHW eager (what stage one computed before)
    pix = real_frames(photos, bb.geometry)
    with torch.inference_mode():
        ref = torch.cat([variants["fp32_eager"].embed(pix[a:a + 32]) for a in range(0, len(pix), 32)])
        fid = {p: fidelity(torch.cat([v.embed(pix[a:a + 32]) for a in range(0, len(pix), 32)]), ref)
               for p, v in variants.items() if p != "fp32_eager"}
    fid = {p: {k: round(v, 5) if isinstance(v, float) else v for k, v in f.items()} for p, f in fid.items()}

    rounds = []
    for r in range(args.rounds):  # alternate everything; compare within a round
        rr = {f"bb_{k}": rate(backbone_frames, v, x, args.backbone_seconds) for k, v in variants.items()}
        shutil.rmtree(tmp / "cache", ignore_errors=True)
        s = run(cfg, vdir, tmp / "cache", backbone=bb)  # as the CLI, model already loaded
        assert s.ok, s.failures
        rr.update(e2e=s.fps, frames=s.frames, busy=s.model_seconds / s.extract_seconds)
        if args.naive:
            rr["naive"] = rate(naive_frames, bb, cfg, videos)
        if r == 0:
            rr["decode"] = rate(decode_frames, bb, cfg, videos)
        rounds.append(rr)

    bb_fps = {k: [round(rr[f"bb_{k}"], 2) for rr in rounds] for k in variants}
    best = max(variants, key=lambda k: med(bb_fps[k]))
    res = {"precision": bb.precision, "channels_last": bb.channels_last,
           "weights": "ImageNet (offline)" if real_weights else "random init",
           "threads": torch.get_num_threads(), "frames": rounds[0]["frames"],
           "backbone_fps": bb_fps, "best_backbone": best,
           "e2e_fps": [round(rr["e2e"], 2) for rr in rounds],
           "model_busy": [round(rr["busy"], 3) for rr in rounds],
           "e2e_vs_fp32_eager": med([rr["e2e"] / rr["bb_fp32_eager"] for rr in rounds]),
           "e2e_vs_best_backbone": med([rr["e2e"] / rr[f"bb_{best}"] for rr in rounds]),
           "e2e_vs_own_backbone": med([rr["e2e"] / rr[f"bb_{bb.precision}"] for rr in rounds]),
           "best_vs_fp32_eager": med([rr[f"bb_{best}"] / rr["bb_fp32_eager"] for rr in rounds]),
           "decode_fps_one_core": round(rounds[0]["decode"], 1)}
    cores = os.cpu_count() or 1
    res["ideal_ratio_given_decode_cost"] = med(
        [1 / (1 + rr[f"bb_{bb.precision}"] / (cores * rounds[0]["decode"])) for rr in rounds])
    if args.naive:
        res["e2e_vs_naive"] = med([rr["e2e"] / rr["naive"] for rr in rounds])
    res["fidelity_vs_fp32"] = fid

    if args.compile:
        cbb = load_backbone(dataclasses.replace(cfg, compile=True))
        eager = rate(backbone_frames, bb, x, args.backbone_seconds)
        compiled = rate(backbone_frames, cbb, x, args.backbone_seconds)
        saved = 1 / eager - 1 / compiled  # seconds per frame
        res["compile"] = {"seconds": round(cbb.compile_seconds, 1), "fps": round(compiled, 2),
                          "eager_fps": round(eager, 2), "vs_eager": round(compiled / eager, 3),
                          "break_even_frames": round(cbb.compile_seconds / saved) if saved > 0 else None}
        del cbb

    # peak memory of the CLI itself, the new default against fp32 (one run each)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                                        if p)}
    common = ["--videos", str(vdir), "--model", name, "--batch-size", str(args.batch_size), "--no-progress",
              "--threads", str(args.threads), *(["--fps", str(args.fps)] if args.fps else
                                                 ["--every", str(args.every)])]
    if not real_weights:
        common.append("--no-pretrained")
    rss, cli_fps = {}, {}
    for p in ("auto", "fp32"):
        out = tmp / f"cache-{p}"
        shutil.rmtree(out, ignore_errors=True)
        cli_fps[p], rss[p] = cli_run([*common, "--out", str(out), "--precision", p], env, tmp)
    res["cli_e2e_fps"] = cli_fps
    res["peak_rss_mb"] = {k: round(v) for k, v in rss.items()}
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", help="timm model (repeatable); default: "
                    "vit_small_patch16_224 and tf_efficientnet_lite0")
    ap.add_argument("--videos", type=int, default=8, help="number of synthetic videos")
    ap.add_argument("--seconds", type=float, default=40.0, help="length of each video (8 x 40 s at 1 "
                    "frame/s = 320 frames = 10 batches of 32: no padded batch)")
    ap.add_argument("--src-fps", type=float, default=25.0)
    ap.add_argument("--size", default="270x480", help="video HxW")
    pol = ap.add_mutually_exclusive_group()
    pol.add_argument("--fps", type=float, help="sampling: frames per second (default 1)")
    pol.add_argument("--every", type=int, help="sampling: every N-th frame")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    ap.add_argument("--backbone-seconds", type=float, default=4.0)
    ap.add_argument("--videos-dir", help="benchmark (and measure fidelity) on these videos instead")
    ap.add_argument("--naive", action="store_true", help="also time a naive one-video-at-a-time loop")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    ap.add_argument("--rounds", type=int, default=2, help="alternating measurement rounds (median ratio)")
    args = ap.parse_args(argv)
    if not args.every and not args.fps:
        args.fps = 1.0
    models = args.model or ["vit_small_patch16_224", OFFLINE_MODEL]
    h, w = map(int, args.size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    try:
        vdir = Path(args.videos_dir) if args.videos_dir else tmp / "videos"
        if not args.videos_dir:
            make_videos(vdir, args.videos, args.seconds, args.src_fps, h, w)
        if args.videos_dir:  # fidelity on the given footage
            photos = [v.path for v in find_videos(vdir, ExtractConfig().extensions)]
        else:
            photo_video(tmp / "photos.mp4")
            photos = [str(tmp / "photos.mp4")]
        synth = {"size": f"{h}x{w}", "fps": args.src_fps, "seconds": args.seconds,
                 "codec": "h264 crf23 gop250"}
        out = {"host_cores": os.cpu_count(), "torch": torch.__version__,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "native_reduced_precisions": list(native_precisions(torch.device("cpu"))),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
               "videos": len(find_videos(vdir, ExtractConfig().extensions)),
               "video": None if args.videos_dir else synth,
               "sampling": {"fps": args.fps} if args.fps else {"every": args.every},
               "batch_size": args.batch_size, "models": {}}
        load0 = [round(x, 2) for x in os.getloadavg()]
        for name in models:
            out["models"][name] = measure_model(name, args, vdir, photos, tmp)
        out["load_average_start"] = load0
        out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
