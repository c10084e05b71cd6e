"""The demo dataset: short low-resolution videos of real photos, with two label sets.

Every video shows two *key* objects (from `KEYS`) for a few seconds each, at different
moments, between stretches of *filler* texture, all with a slow camera pan and zoom.

- `content` labels name the pair of key objects ("cat+coffee"): order does not matter, so a
  mean of frame features is enough to tell them apart.
- `order` labels say which of the pair came first ("forward" when they appear in `KEYS`
  order, "reverse" otherwise). Both orders of every pair occur equally often, so the same
  content gets both labels and a mean over frames can do no better than chance.

Everything is drawn from `numpy.random.default_rng([seed, i])` per video: deterministic, and
adding videos never changes the earlier ones. Images come from scikit-image (offline).
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.synth import write_video

KEYS = ("cat", "coffee", "rocket", "astronaut")
FILLERS = ("grass", "gravel", "brick", "moon", "hubble_deep_field", "colorwheel", "text", "coins")
PAIRS = list(itertools.combinations(KEYS, 2))  # 6 pairs x 2 orders = 12 groups
SPLIT_CYCLE = ("train", "train", "train", "val", "test")


@dataclass
class DemoConfig:
    videos: int = 60
    min_seconds: float = 30.0
    max_seconds: float = 120.0
    fps: float = 10.0
    width: int = 160
    height: int = 120
    seed: int = 0


@dataclass
class Segment:
    image: str
    seconds: float


def _image(name: str) -> Image.Image:
    from skimage import data

    arr = getattr(data, "chelsea" if name == "cat" else name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8))


def plan(i: int, cfg: DemoConfig) -> tuple[list[Segment], dict]:
    """The segments of video `i` and its labels: deterministic in (seed, i)."""
    rng = np.random.default_rng([cfg.seed, i])
    group = i % (2 * len(PAIRS))
    a, b = PAIRS[group // 2]
    forward = group % 2 == 0
    first, second = (a, b) if forward else (b, a)
    total = float(rng.uniform(cfg.min_seconds, cfg.max_seconds))
    event = [total * float(rng.uniform(0.1, 0.2)) for _ in range(2)]
    gaps = rng.dirichlet([1.0, 1.0, 1.0]) * (total - sum(event))

    def filler(seconds: float) -> list[Segment]:
        # break a gap into pieces of about a tenth of the video, each a different texture
        n = max(1, round(seconds / (0.1 * total)))
        return [Segment(FILLERS[rng.integers(len(FILLERS))], seconds / n) for _ in range(n)]

    segments = [*filler(gaps[0]), Segment(first, event[0]), *filler(gaps[1]),
                Segment(second, event[1]), *filler(gaps[2])]
    labels = {"content": f"{a}+{b}", "order": "forward" if forward else "reverse",
              "split": SPLIT_CYCLE[i % len(SPLIT_CYCLE)]}
    return segments, labels


def render(segments: list[Segment], cfg: DemoConfig, rng: np.random.Generator):
    """Frames of the video: each segment pans and zooms slowly across its photo."""
    images: dict[str, Image.Image] = {}
    out = (cfg.width, cfg.height)
    for seg in segments:
        img = images.setdefault(seg.image, _image(seg.image))
        w, h = img.size
        n = max(1, round(seg.seconds * cfg.fps))
        # crop boxes with the output aspect, from 60% to 95% of the photo, start and end
        boxes = []
        for _ in range(2):
            s = rng.uniform(0.6, 0.95)
            bw, bh = min(w, h * out[0] / out[1]) * s, min(h, w * out[1] / out[0]) * s
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            boxes.append(np.array([x, y, x + bw, y + bh]))
        for k in range(n):
            box = boxes[0] + (boxes[1] - boxes[0]) * (k / max(1, n - 1))
            yield np.asarray(img.resize(out, Image.BILINEAR, box=tuple(box)))


def make_demo(out_dir: str | Path, cfg: DemoConfig) -> dict[str, Path]:
    """Write `videos/*.mp4` and `labels/{content,order}.csv` under `out_dir`."""
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(cfg.videos):
        segments, labels = plan(i, cfg)
        vid = f"demo_{i:03d}.mp4"
        frames = render(segments, cfg, np.random.default_rng([cfg.seed, i, 1]))
        write_video(out_dir / "videos" / vid, frames, fps=cfg.fps, gop=int(cfg.fps * 2))
        rows.append((vid, labels))
    paths = {}
    for task in ("content", "order"):
        paths[task] = out_dir / "labels" / f"{task}.csv"
        with paths[task].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "label", "split"])
            w.writerows((vid, lab[task], lab["split"]) for vid, lab in rows)
    return paths
