"""Random-kill soak (issue 5): SIGKILL `python -m extract` at seeded random moments, resume, repeat;
the final cache must equal an uninterrupted run's bit for bit (CPU), with `verify` clean.

    python bench/soak.py                 # CI-sized: 3 trials
    python bench/soak.py --trials 20     # the documented soak (about 2-3 minutes on 2 cores)

Each trial kills one run either at a random time (the decoder slowed by EXTRACT_TEST_DECODE_DELAY
so that the run is long enough to be hit anywhere, start-up included) or, one trial in three,
inside a shard commit at a random stage (tests/faultinject.py). After every kill the cache must
verify clean. Prints one JSON line; exit status 1 if anything was lost, duplicated or damaged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import storage  # noqa: E402
from extract import ExtractConfig, run  # noqa: E402
from tests import testing  # noqa: E402

CLI = ["--model", "vit_tiny_patch16_224", "--model-kwargs", '{"img_size": 32, "depth": 2}',
       "--no-pretrained", "--batch-size", "8", "--videos-per-shard", "1", "--no-progress", "--every", "2"]
CFG = dict(model="vit_tiny_patch16_224", model_kwargs={"img_size": 32, "depth": 2}, pretrained=False,
           batch_size=8, videos_per_shard=1, progress=False, every=2, fps=None)


def content(cache: Path) -> dict:
    c = storage.open_cache(cache)
    return {v: (c.features(v), c.timestamps(v)) for v in c.video_ids}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--videos", type=int, default=6)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    vids = work / "videos"
    for i in range(args.videos):
        testing.good(vids / f"v{i:02d}.mp4", n=16 + 4 * i, fps=8, seed=i)
    ref = work / "ref"
    t0 = time.monotonic()
    assert run(ExtractConfig(**CFG), vids, ref).ok
    want = content(ref)
    out = work / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "EXTRACT_TEST_DECODE_DELAY": "0.15"}
    log, problems = [], []
    for t in range(args.trials):
        if storage.shard_paths(out) and len(storage.shard_paths(out)) >= args.videos:
            # finished: start a fresh cache so that every trial kills a run that has work to do
            out = work / f"cache{t}"
        e = dict(env)
        if t % 3 == 2:
            e["FAULT"] = f"kill:{rng.randint(1, 2)}:{rng.choice(['begin', 'fsync', 'renamed', 'indexed'])}"
            kind = e["FAULT"]
            delay = None
        else:
            delay = rng.uniform(0.5, 7.0)  # start-up (model load) takes ~3-5 s of that
            kind = f"time:{delay:.2f}s"
        proc = subprocess.Popen([sys.executable, "-m", "tests.faultinject", "--videos", str(vids),
                                 "--out", str(out), *CLI], env=e, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay if delay is not None else 120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        rep = storage.verify(out) if (out / "cache.json").exists() else None
        n = len(storage.shard_paths(out))
        tmp = len(list((out / "shards").glob("*.tmp-*"))) if (out / "shards").is_dir() else 0
        log.append({"trial": t, "kill": kind, "rc": proc.returncode, "committed": n, "tmp_left": tmp})
        if rep is not None and not rep.ok:
            problems.append(f"trial {t}: verify after the kill: {rep.problems}")
    # resume every cache the trials touched, then compare each with the reference
    caches = sorted(p for p in work.iterdir() if p.name.startswith("cache"))
    for c in caches:
        s = run(ExtractConfig(**CFG), vids, c)
        if not s.ok:
            problems.append(f"{c.name}: resume failed: {s.failures}")
        rep = storage.verify(c)
        if not rep.ok:
            problems.append(f"{c.name}: {rep.problems}")
        ids = [v for p in storage.shard_paths(c) for v in storage.Shard(p).video_ids]
        if len(ids) != len(set(ids)):
            problems.append(f"{c.name}: duplicate videos")
        got = content(c)
        if sorted(got) != sorted(want):
            problems.append(f"{c.name}: ids differ: {sorted(set(want) ^ set(got))}")
        for v in want:
            same = v in got and all(np.array_equal(got[v][k], want[v][k]) for k in (0, 1))
            if v in got and not same:
                problems.append(f"{c.name}: {v}: features differ from the uninterrupted run")
    print(json.dumps({"trials": args.trials, "seed": args.seed, "videos": args.videos,
                      "caches": len(caches), "lost_or_damaged": problems, "ok": not problems,
                      "seconds": round(time.monotonic() - t0, 1), "log": log}))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
