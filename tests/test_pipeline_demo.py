import csv
from collections import Counter

import decord
import numpy as np
import pytest

from pipeline.demo import KEYS, MARKERS, DemoConfig, make_demo, plan
from pipeline.params import build

TINY = DemoConfig(videos=24, min_seconds=3, max_seconds=5, fps=5, width=64, height=48)


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_demo_is_deterministic_real_video_with_balanced_order_labels(tmp_path):
    paths = make_demo(tmp_path / "a", TINY)
    order, content = read(paths["order"]), read(paths["content"])
    assert [r["video_id"] for r in order] == [r["video_id"] for r in content]
    # every object appears in both orders in every split: content alone cannot predict order
    groups = Counter((c["label"], o["label"], o["split"]) for c, o in zip(content, order, strict=True))
    assert len(groups) == 4 * 2 * 3 and set(groups.values()) == {1}
    for r in order:
        vr = decord.VideoReader(str(tmp_path / "a" / "videos" / r["video_id"]))
        seconds = len(vr) / vr.get_avg_fps()
        assert 3 - 0.5 <= seconds <= 5 + 0.5 and vr[0].shape == (48, 64, 3)
    make_demo(tmp_path / "b", TINY)
    a = decord.VideoReader(str(tmp_path / "a" / "videos" / "demo_007.mp4"))
    b = decord.VideoReader(str(tmp_path / "b" / "videos" / "demo_007.mp4"))
    last = [0, len(a) - 1]
    np.testing.assert_array_equal(a.get_batch(last).asnumpy(), b.get_batch(last).asnumpy())


def test_order_label_follows_the_plan():
    for i in range(24):
        segments, labels = plan(i, TINY)
        markers = [s.image for s in segments if s.image in MARKERS]
        assert markers == (list(MARKERS) if labels["order"] == "wheel_first" else list(MARKERS[::-1]))
        i_wheel = [s.image for s in segments].index("colorwheel")
        assert {segments[i_wheel - 1].image, segments[i_wheel + 1].image} & {"page"}  # adjacent
        assert [s.image for s in segments if s.image in KEYS] == [labels["content"]]


def test_params_build_refuses_unknown_keys():
    assert build(DemoConfig, {"videos": 3}, "demo").videos == 3
    with pytest.raises(ValueError, match="did you mean 'videos'"):
        build(DemoConfig, {"vidoes": 3}, "params.yaml [demo]")
