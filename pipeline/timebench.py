"""The time benchmark: one-minute videos whose labels depend on repetition, direction and interval.

The events benchmark (pipeline/eventbench.py) asks which fixed events come where. Real long-video
labels also depend on whether *something* comes back (a shot never seen before), which way a shot
runs, and how far apart two things happen. Videos come in groups of eight; every video of a
group holds the same shots, re-arranged, so a bag of frames is at chance by construction on
the first three label sets:

- `repeat` (once | twice): a *novel* shot, a photo that is one of this group's fillers elsewhere
  in the benchmark, is shown whole (6 s) or cut in two pieces of 3 s with other shots between.
  Fillers never repeat inside a video, so "a shot comes back" is the only cue; which shot it
  is changes from group to group, so no fixed prototype can learn it;
- `direction` (in | out): an 8-s zoom into the astronaut photo (centre drawn per group), or the
  same frames reversed;
- `interval` (near | far): two 4-s clips of real footage (bikes, then carphone), straight after
  each other or at least 20 s apart, always in that order;
- `scene` (10 classes): one 10-s shot of one of ten photos decides the class; a bag of frames
  suffices (the control: a temporal model must match the mean-pool probe here, not trail it).

The eight videos of a group are the 2 x 2 x 2 combinations of repeat, direction and interval;
the scene shot is drawn per video. Segments start and end on whole seconds. Groups go to train,
val, test or unlabelled by the events benchmark's cycle (96-104 train videos for 32 groups), and
everything is drawn from `numpy.random.default_rng([seed, group])`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.demo import pan_zoom, photo
from pipeline.eventbench import clip_frames, footage_window, write_benchmark

FILLERS = ("brick", "camera", "cell", "coins", "grass", "gravel", "hubble_deep_field",
           "immunohistochemistry", "moon", "page", "retina", "text")
SCENES = ("cat", "coffee", "horse", "rocket", "logo", "colorwheel", "checkerboard", "clock",
          "shepp_logan_phantom", "microaneurysms")
ZOOM_PHOTO, NEAR_FAR = "astronaut", ("bikes", "carphone_pristine")
TASKS = ("repeat", "direction", "interval", "scene")
PER_GROUP, FILLERS_PER_VIDEO = 8, 5
REPEAT_S, ZOOM_S, CLIP_S, SCENE_S, FAR_S = 6, 8, 4, 10, 20


@dataclass
class TimeBenchConfig:
    groups: int = 32  # of 8 videos: 104 train, 24 val, 80 test, 48 unlabelled
    seconds: int = 60
    fps: float = 5.0
    width: int = 160
    height: int = 120
    seed: int = 0


@dataclass(frozen=True)
class Shot:
    kind: str  # filler | novel | zoom | clip | scene
    source: str
    seconds: int
    seed: int
    start: int = 0  # a piece: seconds [start, start + seconds) of the whole shot
    reverse: bool = False


def plan_group(group: int, cfg: TimeBenchConfig) -> list[tuple[list[Shot], dict]]:
    """The eight videos of `group`: each a list of shots and its labels."""
    rng = np.random.default_rng([cfg.seed, group])
    photos = rng.choice(FILLERS, size=FILLERS_PER_VIDEO + 1, replace=False)
    novel = Shot("novel", str(photos[0]), REPEAT_S, int(rng.integers(1 << 31)))
    filler_total = cfg.seconds - REPEAT_S - ZOOM_S - 2 * CLIP_S - SCENE_S
    if filler_total < 3 * FILLERS_PER_VIDEO or filler_total < FAR_S:
        raise ValueError(f"{cfg.seconds} s leave too little room for the fillers")
    n = FILLERS_PER_VIDEO
    extra = rng.multinomial(filler_total - 3 * n, np.ones(n) / n)
    fillers = [Shot("filler", str(p), int(3 + e), int(rng.integers(1 << 31)))
               for p, e in zip(photos[1:], extra, strict=True)]
    zoom_seed = int(rng.integers(1 << 31))
    a, b = (Shot("clip", src, CLIP_S, int(rng.integers(1 << 31))) for src in NEAR_FAR)
    videos = []
    for combo in rng.permutation(PER_GROUP):
        twice, out, far = bool(combo & 1), bool(combo & 2), bool(combo & 4)
        scene = str(SCENES[rng.integers(len(SCENES))])
        shots = _arrange(rng, fillers, novel, twice, far, a, b, cfg,
                         Shot("zoom", ZOOM_PHOTO, ZOOM_S, zoom_seed, reverse=out),
                         Shot("scene", scene, SCENE_S, int(rng.integers(1 << 31))))
        assert sum(s.seconds for s in shots) == cfg.seconds
        labels = {"repeat": "twice" if twice else "once", "direction": "out" if out else "in",
                  "interval": "far" if far else "near", "scene": scene}
        videos.append((shots, labels))
    return videos


def _arrange(rng, fillers, novel, twice, far, a, b, cfg, zoom, scene) -> list[Shot]:
    """A random order of the shots meeting the labels: the novel shot's two pieces apart, and
    A straight before B (near) or >= FAR_S seconds before it (far). Drawn until one fits."""
    half = novel.seconds // 2
    pieces = [Shot("novel", novel.source, half, novel.seed, start=0),
              Shot("novel", novel.source, half, novel.seed, start=half)] if twice else [novel]
    for _ in range(10_000):
        items: list = [*fillers, *pieces, zoom, scene, a]
        items = [items[i] for i in rng.permutation(len(items))]
        if twice and abs(items.index(pieces[0]) - items.index(pieces[1])) < 2:
            continue  # the two pieces must not touch: another shot between them
        if not far:
            items.insert(items.index(a) + 1, b)
            return items
        starts = np.cumsum([0, *(s.seconds for s in items)])
        a_end = starts[items.index(a)] + a.seconds
        later = [k for k in range(items.index(a) + 1, len(items) + 1) if starts[k] - a_end >= FAR_S]
        if later:
            items.insert(later[int(rng.integers(len(later)))], b)
            return items
    raise RuntimeError("no arrangement found")


class Renderer:
    """Frames of shots, each whole shot rendered once (a group's videos re-use the same frames)."""

    def __init__(self, cfg: TimeBenchConfig):
        self.cfg, self.size = cfg, (cfg.width, cfg.height)
        self.cache: dict[tuple, np.ndarray] = {}

    def _whole(self, shot: Shot) -> np.ndarray:
        rng = np.random.default_rng(shot.seed)
        seconds = REPEAT_S if shot.kind == "novel" else shot.seconds
        n = round(seconds * self.cfg.fps)
        if shot.kind == "clip":
            return footage_window(*clip_frames(shot.source), n, self.cfg.fps, self.size, rng)
        img = photo(shot.source)
        if shot.kind == "zoom":
            return np.stack(list(zoom_in(img, n, self.size, rng)))
        return np.stack(list(pan_zoom(img, n, self.size, rng)))

    def frames(self, shot: Shot) -> np.ndarray:
        key = (shot.kind, shot.source, shot.seed)
        if key not in self.cache:
            self.cache[key] = self._whole(shot)
        f = self.cache[key]
        a = round(shot.start * self.cfg.fps)
        f = f[a:a + round(shot.seconds * self.cfg.fps)]
        if shot.reverse:  # played backwards so that the frames sampled at whole seconds are the same
            step = round(self.cfg.fps)  # as forwards (frame 0, fps, 2 fps ...): [n - fps, ..., 0, 0 ...]
            f = f[np.clip(len(f) - step - np.arange(len(f)), 0, None)]
        return f

    def video(self, shots: list[Shot]) -> Iterator[np.ndarray]:
        for s in shots:
            yield from self.frames(s)


def zoom_in(img: Image.Image, n: int, out: tuple[int, int], rng: np.random.Generator):
    """`n` frames zooming from the whole photo to a fifth of it, around a random centre."""
    w, h = img.size
    bw0, bh0 = min(w, h * out[0] / out[1]), min(h, w * out[1] / out[0])
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    for k in range(n):
        s = 0.2 ** (k / max(1, n - 1))  # geometric: a constant zoom rate
        bw, bh = bw0 * s, bh0 * s
        x = float(np.clip(cx - bw / 2, 0, w - bw))
        y = float(np.clip(cy - bh / 2, 0, h - bh))
        yield np.asarray(img.resize(out, Image.BILINEAR, box=(x, y, x + bw, y + bh)))


def make_timebench(out_dir: str | Path, cfg: TimeBenchConfig, progress: bool = True) -> dict[str, Path]:
    """Write `videos/g###_v#.mp4` and `labels/{repeat,direction,interval,scene}.csv` under `out_dir`."""
    return write_benchmark(out_dir, cfg, plan_group, Renderer, TASKS, "timebench", progress)
