"""Benchmark stage two: training from the cache. Prints ONE JSON line.

    python bench/train.py                      # defaults below; ~2-4 minutes on 2 CPU cores
    python bench/train.py --threads 2 --videos 128

  step     one training step split into data (sample frames, gather, pad, move to the device)
           and compute (forward, backward, AdamW), over --steps steps; data_fraction = data / step.
           Twice, side by side on a cache of --step-videos videos: `memory` (its features held in
           memory) and `lazy` (read from the shards through temporal.data.LazyVideos within a budget
           of a quarter of them: the cache is 4x the budget, and the budget still holds a few
           batches' chunks, as a real one of GBs does), same seed, same batches, alternated in 3
           rounds; medians over the steps, and data_fraction_of_sums (sum data / sum step);
           cpu_ms: the process's CPU time per step, all threads (the prefetching thread's reads
           included): lazy_extra_cpu_fraction is the share of a lazy step's CPU spent reading
  epoch    one epoch of `temporal.train` from a cache (its cache loading, the epoch and the checkpoint
           included) against extracting the same videos. The extraction side is a LOWER BOUND: only
           the timm backbone forward (--backbone, random init, same batch size and threads) over the
           same number of frames, timed on --backbone-batches batches and extrapolated; decoding,
           resizing and writing are not counted.
  memory   peak resident memory added by one training step (forward+backward+AdamW) on videos of
           T = 120, 750, 3000 frames, each in a fresh process: `full` trains on every frame
           (frames = T, the worst case), `sampled` on the default --frames per video. On CUDA
           torch.cuda.max_memory_allocated; on the CPU the peak RSS (VmHWM, reset through
           /proc/self/clear_refs) with glibc's mmap threshold pinned so freed tensors leave RSS.
Synthetic features (random, D = --in-dim): speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

import storage
import temporal
from storage.device import pick_device
from temporal.data import LazyVideos, Videos, feature_bytes, upcoming
from temporal.loop import autocast, loss_fn, optimizer_step, param_groups, train_batch
from temporal.synth import write_cache, write_labels
from temporal.train import proximal_step, sparsity

LENGTHS = (120, 750, 3000)


def synthetic_cache(root: Path, videos: int, frames: int, dim: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    items = ((f"v{i:04d}.mp4", rng.standard_normal((frames, dim), dtype=np.float32).astype(np.float16),
              np.arange(frames, dtype=np.float32)) for i in range(videos))
    cache = write_cache(root / "cache", items, dim, per_shard=32)
    rows = [(f"v{i:04d}.mp4", f"c{i % 4}", "train") for i in range(videos)]
    labels = write_labels(root / "labels.csv", rows)
    return cache, labels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_split(videos, lab, cfg: temporal.Config, steps: int) -> np.ndarray:
    """[steps, 3] seconds of data (sample, gather, pad, to the device) and compute (forward,
    backward, AdamW) of each training step, as `temporal.train` runs it, and the CPU time the
    process spent in the step (all threads: a prefetching thread's reads included)."""
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = temporal.build_model(cfg, videos.dim, len(lab.classes)).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
    y_all = torch.from_numpy(lab.target_array(list(range(len(lab)))))
    bs = cfg.optim.batch_size
    order = np.concatenate([rng.choice(len(lab), size=bs, replace=False) for _ in range(steps + 5)])
    times = []
    for s in range(steps + 2):  # the first two steps warm up allocators and kernels
        rows = order[s * bs:(s + 1) * bs]
        sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        x, t, m = train_batch(videos, rows, cfg.data, rng, device)
        y = y_all[torch.from_numpy(rows)].to(device)
        videos.prefetch(upcoming(order, s * bs, bs))  # as temporal.train does
        sync(device)
        t1 = time.perf_counter()
        with autocast(device):
            logits = model(x, t, m)
        loss = loss_fn("single", logits, y) + sparsity(model, cfg)
        optimizer_step(opt, model, loss, cfg.optim.lr, cfg.optim.grad_clip)
        proximal_step(model, cfg, cfg.optim.lr)
        sync(device)
        times.append((t1 - t0, time.perf_counter() - t1, time.process_time() - c0))
    return np.array(times[2:])


def step_memory_vs_lazy(cache: Path, labels: Path, cfg: temporal.Config, steps: int, rounds: int = 3) -> dict:
    """`step_split` on the features in memory and read lazily (a budget of 1/4 of them), alternated
    over `rounds` so both see the same machine load. Medians over the steps (a shared machine's
    bursts are not the code's), and the fraction of the summed times too."""
    lab = temporal.read_labels(labels)
    reader = storage.open_cache(cache)
    budget = feature_bytes(reader, lab.ids) // 4
    kinds = {"memory": lambda: Videos(reader, lab.ids), "lazy": lambda: LazyVideos(reader, lab.ids, budget)}
    runs: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    out: dict = {"lazy": {}}
    for _ in range(rounds):
        for kind, make in kinds.items():
            videos = make()
            runs[kind].append(step_split(videos, lab, cfg, steps))
            if kind == "lazy":
                store = videos.store
                out["lazy"] = {"budget_bytes": budget, "peak_bytes": store.peak, "chunk_reads": store.reads}
    for kind, rs in runs.items():
        t = np.concatenate(rs)
        data, comp = np.median(t[:, 0]), np.median(t[:, 1])
        out[kind] = {"data_ms": round(1000 * data, 3), "compute_ms": round(1000 * comp, 2),
                     "step_ms": round(1000 * (data + comp), 2),
                     "data_fraction": round(data / (data + comp), 5),
                     "data_fraction_of_sums": round(t[:, 0].sum() / t[:, :2].sum(), 5),
                     "cpu_ms": round(1000 * np.median(t[:, 2]), 2), **out.get(kind, {})}
    out["lazy_step_over_memory_step"] = round(out["lazy"]["step_ms"] / out["memory"]["step_ms"], 3)
    # the CPU a lazy step costs beyond an in-memory one (reading, decoding), as a share of its CPU
    out["lazy_extra_cpu_fraction"] = round(1 - out["memory"]["cpu_ms"] / out["lazy"]["cpu_ms"], 4)
    out.update(steps=steps, rounds=rounds, batch_size=cfg.optim.batch_size, frames=cfg.data.frames,
               feature_bytes=feature_bytes(reader, lab.ids))
    return out


def epoch_vs_extraction(cache: Path, labels: Path, cfg: temporal.Config, root: Path, args) -> dict:
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bar: stdout/stderr stay one JSON line
        temporal.train(cache, labels, root / "run", cfg.replace(epochs=1), log=lambda *a: None)
    cache_epoch = time.perf_counter() - t0

    import timm

    device = pick_device(cfg.device)
    net = timm.create_model(args.backbone, pretrained=False, num_classes=0).to(device).eval()
    x = torch.randn(cfg.optim.batch_size, 3, 224, 224, device=device)
    with torch.inference_mode(), autocast(device):
        net(x)  # warm-up
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.backbone_batches):
            net(x)
        sync(device)
    fps = args.backbone_batches * cfg.optim.batch_size / (time.perf_counter() - t0)
    frames = args.videos * args.frames_per_video
    extract_s = frames / fps
    return {"videos": args.videos, "frames_per_video": args.frames_per_video,
            "cache_epoch_s": round(cache_epoch, 3),
            "extract_backbone": args.backbone, "extract_frames": frames, "backbone_fps": round(fps, 2),
            "extract_epoch_s_lower_bound": round(extract_s, 1), "speedup": round(extract_s / cache_epoch, 1)}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(length: int, frames: int, cfg: temporal.Config, in_dim: int) -> dict:
    """(run in a fresh process) peak memory added by one training step on one batch of videos."""
    device = pick_device(cfg.device)
    torch.manual_seed(0)
    model = temporal.build_model(cfg, in_dim, 4).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
    rng = np.random.default_rng(0)
    n = min(frames, length)  # frames sampled from a video of `length` frames at 25 fps
    idx = np.stack([np.sort(rng.choice(length, size=n, replace=False)) for _ in range(cfg.optim.batch_size)])
    x = torch.randn(cfg.optim.batch_size, n, in_dim, device=device)
    t = torch.from_numpy(idx.astype(np.float32) / 25).to(device)
    m = torch.ones(cfg.optim.batch_size, n, dtype=torch.bool, device=device)
    y = torch.randint(0, 4, (cfg.optim.batch_size,), device=device)

    def step():
        with autocast(device):
            logits = model(x, t, m)
        optimizer_step(opt, model, loss_fn("single", logits, y), cfg.optim.lr, 0.0)

    step()  # allocates AdamW state and warms kernels: not part of a step's working memory
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        sync(device)
        return {"mib": round((torch.cuda.max_memory_allocated() - base) / 2**20, 1), "method": "cuda"}
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
    base = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    step()
    return {"mib": round((_rss_kib("VmHWM") - base) / 1024, 1), "method": "rss",
            "step_s": round(time.perf_counter() - t0, 2)}


def memory(cfg: temporal.Config, in_dim: int, threads: int) -> dict:
    out: dict = {}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(threads)}
    for mode in ("full", "sampled"):
        for length in LENGTHS:
            frames = length if mode == "full" else cfg.data.frames
            arg = json.dumps({"length": length, "frames": frames, "config": cfg.to_dict(), "in_dim": in_dim})
            proc = subprocess.run([sys.executable, __file__, "--memory-child", arg], env=env,
                                  capture_output=True, text=True, check=True)
            out.setdefault(mode, {})[str(length)] = json.loads(proc.stdout.strip().splitlines()[-1])
    full = {int(k): v["mib"] for k, v in out["full"].items()}
    out["method"] = out["full"]["120"]["method"]
    out["full_mib"] = {str(k): v for k, v in full.items()}
    out["sampled_mib"] = {k: v["mib"] for k, v in out["sampled"].items()}
    # linear growth: mib(T) / mib(120) no more than T / 120 (the constant part only helps)
    out["full_growth"] = {f"{a}->{b}": {"memory_x": round(full[b] / full[a], 2), "frames_x": round(b / a, 2)}
                          for a, b in ((120, 750), (750, 3000), (120, 3000))}
    out["full_mib_per_frame_per_video"] = {
        str(k): round(v / (k * cfg.optim.batch_size), 4) for k, v in full.items()}
    del out["full"], out["sampled"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=64, help="videos in the synthetic cache (one epoch)")
    ap.add_argument("--frames-per-video", type=int, default=120, help="cached frames each (2 min at 1 fps)")
    ap.add_argument("--in-dim", type=int, default=768, help="feature width D (ViT-B: 768)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--step-videos", type=int, default=1024, help="videos in the cache of the step figures")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    ap.add_argument("--backbone", default="vit_base_patch16_224")
    ap.add_argument("--backbone-batches", type=int, default=2)
    ap.add_argument("--mem-batch-size", type=int, default=4, help="videos per step in the memory runs")
    ap.add_argument("--step-only", action="store_true", help="only the step figures (memory vs lazy)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        a = json.loads(args.memory_child)
        print(json.dumps(memory_child(a["length"], a["frames"], temporal.Config.from_dict(a["config"]),
                                      a["in_dim"])))
        return
    cfg = temporal.as_config(eval_mode="views", patience=0)  # the defaults (64 frames)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache, labels = synthetic_cache(root, args.videos, args.frames_per_video, args.in_dim)
        step_cache = synthetic_cache(root / "step", args.step_videos, args.frames_per_video, args.in_dim)
        result = {
            "device": str(pick_device(cfg.device)), "threads": args.threads, "torch": torch.__version__,
            "model": {"model": cfg.model, **dataclasses.asdict(cfg.stan)},
            "in_dim": args.in_dim,
            "step": step_memory_vs_lazy(*step_cache, cfg, args.steps),
        }
        if not args.step_only:
            result["epoch"] = epoch_vs_extraction(cache, labels, cfg, root, args)
            mcfg = cfg.replace(batch_size=args.mem_batch_size)
            result["memory"] = {"batch_size": mcfg.optim.batch_size,
                                **memory(mcfg, args.in_dim, args.threads)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
