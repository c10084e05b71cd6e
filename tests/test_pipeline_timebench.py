"""The time benchmark: every video of a group holds the same frames (but its scene shot), only
re-arranged, and the group covers every combination of the bag-blind labels."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from pipeline.timebench import FAR_S, Renderer, TimeBenchConfig, plan_group

CFG = TimeBenchConfig(groups=2, width=32, height=24)


def sampled(frames: np.ndarray, fps: int) -> Counter:
    """The frames a 1 frame/s extraction reads (one at every whole second), as a multiset."""
    return Counter(frames[i].tobytes() for i in range(0, len(frames), fps))


def test_a_group_is_one_multiset_of_frames_and_every_label_combination():
    render = Renderer(CFG)
    fps = round(CFG.fps)
    bags, combos = [], set()
    for shots, labels in plan_group(1, CFG):
        assert sum(s.seconds for s in shots) == CFG.seconds
        combos.add((labels["repeat"], labels["direction"], labels["interval"]))
        bag = Counter()
        for s in shots:
            if s.kind != "scene":  # the scene shot is drawn per video: the one content label
                bag += sampled(render.frames(s), fps)
        bags.append(bag)
        starts = np.cumsum([0, *(s.seconds for s in shots)])
        clips = [k for k, s in enumerate(shots) if s.kind == "clip"]
        gap = starts[clips[1]] - starts[clips[0] + 1]
        assert gap == 0 if labels["interval"] == "near" else gap >= FAR_S
        novel = [k for k, s in enumerate(shots) if s.kind == "novel"]
        assert len(novel) == (2 if labels["repeat"] == "twice" else 1)
        assert len(novel) == 1 or novel[1] - novel[0] >= 2  # the pieces never touch
        fillers = [s.source for s in shots if s.kind == "filler"]
        assert len(set(fillers)) == len(fillers) and shots[novel[0]].source not in fillers
    assert len(combos) == 8 and all(b == bags[0] for b in bags)


def test_backwards_is_the_same_sampled_frames_in_the_other_order():
    render = Renderer(CFG)
    zoom = next(s for s in plan_group(0, CFG)[0][0] if s.kind == "zoom")
    fwd = render.frames(dataclasses.replace(zoom, reverse=False))
    back = render.frames(dataclasses.replace(zoom, reverse=True))
    fps = round(CFG.fps)
    f, b = fwd[::fps], back[::fps]
    assert len(fwd) == len(back) and np.array_equal(f, b[::-1])
    assert not np.array_equal(f, b)  # a zoom: the first and last frames differ
