"""What decoding costs stage one at 1 frame/s, and what skipping unreferenced frames saves. ONE JSON line.

    python bench/decode.py                     # the synthetic videos of bench/extract.py (25 fps, H.264)
    python bench/decode.py --videos-dir DIR    # your own footage

On 2 cores the decoder shares the CPU with the backbone, so its cost per sampled frame bounds end to
end / backbone alone (docs/extract.md). Measured on one thread, in alternating rounds, as CPU
milliseconds per second of video (medians):
  decord_1fps      decord's get_batch of one frame per second, as stage one reads
  av_all           PyAV decoding every frame, no colour conversion
  av_nonref        the same with skip_frame=NONREF: B-frames no other frame refers to are skipped
  nonref_saving    1 - time(av_nonref) / time(av_all) within a round: the most that skipping
                   unreferenced frames could save stage one's decoder
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import av
import decord
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # before bench/, whose extract.py shadows it

from extract import ExtractConfig
from extract.decode import probe
from extract.discover import find_videos

HERE = Path(__file__).resolve().parent


def decord_1fps(videos: list[Path]) -> None:
    for v in videos:
        vr = decord.VideoReader(str(v), num_threads=1)
        vr.get_batch(list(range(0, len(vr), max(1, round(vr.get_avg_fps())))))


def av_decode(videos: list[Path], skip: str | None) -> None:
    for v in videos:
        with av.open(str(v)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "NONE"
            if skip:
                stream.codec_context.skip_frame = skip
            for _ in container.decode(stream):
                pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos-dir", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if a.videos_dir:
            videos = [Path(v.path) for v in find_videos(a.videos_dir, ExtractConfig().extensions)]
        else:
            spec = importlib.util.spec_from_file_location("bench_extract", HERE / "extract.py")
            bench = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(bench)
            bench.make_videos(Path(tmp), 4, 40, 25, 270, 480)  # as bench/extract.py makes them
            videos = sorted(Path(tmp).glob("*.mp4"))
        seconds = sum(probe(str(v)).duration for v in videos)
        ways = {"decord_1fps": lambda: decord_1fps(videos), "av_all": lambda: av_decode(videos, None),
                "av_nonref": lambda: av_decode(videos, "NONREF")}
        runs: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(a.rounds):
            for name, fn in ways.items():
                t = time.process_time()
                fn()
                runs[name].append(time.process_time() - t)
    ms = {k: round(1000 * float(np.median(v)) / seconds, 2) for k, v in runs.items()}
    saving = np.median([1 - r / f for r, f in zip(runs["av_nonref"], runs["av_all"], strict=True)])
    print(json.dumps({"videos": len(videos), "video_seconds": round(seconds, 1),
                      "cpu_ms_per_video_second": ms, "nonref_saving": round(float(saving), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
