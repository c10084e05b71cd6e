import csv
import hashlib
import os
import subprocess
import sys
from collections import Counter
from dataclasses import asdict

import decord
import pytest

from pipeline.demo import KEYS, MARKERS, DemoConfig, make_demo, plan
from pipeline.params import build
from tests.testing import REPO

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


def hashes(videos) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(videos.glob("*.mp4"))}


@pytest.mark.slow  # (the fast tier stays under a minute; CI runs it)
def test_demo_videos_are_byte_identical_across_runs_and_thread_settings(tmp_path):
    cfg = DemoConfig(videos=8, min_seconds=8, max_seconds=12, fps=10, width=96, height=64)
    make_demo(tmp_path / "a", cfg)
    make_demo(tmp_path / "b", cfg)
    # another process on one core with other thread settings: x264 would pick its threads from the cores
    code = ("import sys; from pipeline.demo import DemoConfig, make_demo; "
            f"make_demo(sys.argv[1], DemoConfig(**{asdict(cfg)!r}))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "c")], check=True, env=env, cwd=REPO,
                   preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    a, b, c = (hashes(tmp_path / d / "videos") for d in "abc")
    assert len(a) == 8 and a == b == c
    # and decord, which stage one decodes with, reads them: every frame, at the demo's size and rate
    vr = decord.VideoReader(str(tmp_path / "a" / "videos" / "demo_000.mp4"))
    assert vr.get_avg_fps() == 10 and vr[len(vr) - 1].shape == (64, 96, 3)
    assert 8 * 10 - 5 <= len(vr) <= 12 * 10 + 5


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
