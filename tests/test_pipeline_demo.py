import csv
from collections import Counter

import decord
import numpy as np
import pytest

from pipeline.demo import DemoConfig, make_demo, plan
from pipeline.params import build

TINY = DemoConfig(videos=12, min_seconds=3, max_seconds=5, fps=5, width=64, height=48)


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_demo_is_deterministic_real_video_with_balanced_order_labels(tmp_path):
    paths = make_demo(tmp_path / "a", TINY)
    order, content = read(paths["order"]), read(paths["content"])
    assert [r["video_id"] for r in order] == [r["video_id"] for r in content]
    # every pair appears in both orders: content alone cannot predict order
    by_pair = Counter((c["label"], o["label"]) for c, o in zip(content, order, strict=True))
    assert len(by_pair) == 12 and set(by_pair.values()) == {1}
    assert {r["split"] for r in order} == {"train", "val", "test"}
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
        keys = [s.image for s in segments if s.image in ("cat", "coffee", "rocket", "astronaut")]
        a, b = labels["content"].split("+")
        assert keys == ([a, b] if labels["order"] == "forward" else [b, a])


def test_params_build_refuses_unknown_keys():
    assert build(DemoConfig, {"videos": 3}, "demo").videos == 3
    with pytest.raises(ValueError, match="did you mean 'videos'"):
        build(DemoConfig, {"vidoes": 3}, "params.yaml [demo]")
