"""The demo dataset: short low-resolution videos of real photos, with two label sets.

Every video shows one *key* object (from `KEYS`) for a while, and elsewhere two *markers*, a
colour wheel and a page of text, one straight after the other; filler textures fill the rest,
and every shot pans and zooms slowly across its photo.

- `content` labels name the key object ("cat"): order does not matter, so a mean of frame
  features is enough to tell them apart.
- `order` labels say which marker came first (`wheel_first` or `page_first`). Both orders occur
  equally often with every key object, so the same content gets both labels and a mean over
  frames can do no better than chance; the change from one marker to the other can.

Videos cycle through the 8 (object, order) groups; each round of 8 goes to one split, in the
cycle train, val, test, train, train, so 40 videos split 24/8/8 with every group in every split.
Everything is drawn from `numpy.random.default_rng([seed, i])` per video: deterministic, and
adding videos never changes the earlier ones. Images come from scikit-image (offline).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from extract.synth import write_video

KEYS = ("cat", "coffee", "rocket", "astronaut")
MARKERS = ("colorwheel", "page")
ORDERS = ("wheel_first", "page_first")
FILLERS = ("grass", "gravel", "brick", "moon", "hubble_deep_field", "text", "coins", "camera")
SPLIT_CYCLE = ("train", "val", "test", "train", "train")


@dataclass
class DemoConfig:
    videos: int = 40
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


def photo(name: str) -> Image.Image:
    """A scikit-image photo as RGB ("cat" is `chelsea`); grey ones are made RGB."""
    from skimage import data

    arr = getattr(data, "chelsea" if name == "cat" else name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(arr[..., :3]).astype(np.uint8))


def plan(i: int, cfg: DemoConfig) -> tuple[list[Segment], dict]:
    """The segments of video `i` and its labels: deterministic in (seed, i)."""
    rng = np.random.default_rng([cfg.seed, i])
    groups = 2 * len(KEYS)
    key, order = KEYS[(i % groups) // 2], i % 2
    markers = MARKERS if order == 0 else MARKERS[::-1]
    total = float(rng.uniform(cfg.min_seconds, cfg.max_seconds))
    shots = [total * float(rng.uniform(0.1, 0.2)) for _ in range(3)]  # key, marker, marker
    gaps = rng.dirichlet([1.0, 1.0, 1.0]) * (total - sum(shots))

    def filler(seconds: float) -> list[Segment]:
        # break a gap into pieces of about a tenth of the video, each a different texture
        n = max(1, round(seconds / (0.1 * total)))
        return [Segment(FILLERS[rng.integers(len(FILLERS))], seconds / n) for _ in range(n)]

    events = [[Segment(key, shots[0])], [Segment(markers[0], shots[1]), Segment(markers[1], shots[2])]]
    if rng.random() < 0.5:  # the key object before or after the markers: not what `order` asks
        events.reverse()
    segments = [*filler(gaps[0]), *events[0], *filler(gaps[1]), *events[1], *filler(gaps[2])]
    labels = {"content": key, "order": ORDERS[order],
              "split": SPLIT_CYCLE[(i // groups) % len(SPLIT_CYCLE)]}
    return segments, labels


def pan_zoom(img: Image.Image, n: int, out: tuple[int, int], rng: np.random.Generator
             ) -> Iterator[np.ndarray]:
    """`n` frames of size `out` panning and zooming slowly between two random crops of `img`
    (with the output's aspect, 60 % to 95 % of the photo)."""
    w, h = img.size
    boxes = []
    for _ in range(2):
        s = rng.uniform(0.6, 0.95)
        bw, bh = min(w, h * out[0] / out[1]) * s, min(h, w * out[1] / out[0]) * s
        x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        boxes.append(np.array([x, y, x + bw, y + bh]))
    for k in range(n):
        box = boxes[0] + (boxes[1] - boxes[0]) * (k / max(1, n - 1))
        yield np.asarray(img.resize(out, Image.BILINEAR, box=tuple(box)))


def render(segments: list[Segment], cfg: DemoConfig, rng: np.random.Generator):
    """Frames of the video: each segment pans and zooms slowly across its photo."""
    images: dict[str, Image.Image] = {}
    for seg in segments:
        img = images.setdefault(seg.image, photo(seg.image))
        yield from pan_zoom(img, max(1, round(seg.seconds * cfg.fps)), (cfg.width, cfg.height), rng)


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
