"""The events benchmark: plans that blind mean pooling by construction, real videos, and a tiny
feature-level version where STAN learns what mean pooling cannot."""

from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

import temporal
from pipeline.eventbench import (
    COUNT_EVENT,
    ORDERS,
    WHERE_EVENT,
    EventBenchConfig,
    make_eventbench,
    plan_group,
    split_of,
    write_feature_cache,
)


def test_a_group_holds_the_same_frames_in_other_arrangements():
    cfg = EventBenchConfig()
    for g in range(8):
        videos = plan_group(g, cfg)
        bags = [Counter((s.source, s.seed, s.start + k, s.length) for s in shots for k in range(s.seconds))
                for shots, _ in videos]
        assert all(b == bags[0] for b in bags)  # second for second the same multiset of frames
        assert sorted(lab["order"] for _, lab in videos) == sorted(ORDERS)
        assert sorted(Counter(lab["count"] for _, lab in videos).values()) == [2, 2, 2]
        assert len({lab["content"] for _, lab in videos}) == 1
        for shots, lab in videos:
            assert sum(s.seconds for s in shots) == cfg.seconds
            d = [i for i, s in enumerate(shots) if s.source == COUNT_EVENT]
            assert len(d) == ["one", "two", "three"].index(lab["count"]) + 1
            assert all(b - a > 1 for a, b in pairwise(d))  # occurrences never touch
            e = next(i for i, s in enumerate(shots) if s.source == WHERE_EVENT)
            start = sum(s.seconds for s in shots[:e])
            assert lab["where"] == pytest.approx((start + 2.5) / cfg.seconds, abs=1e-6)
    assert [split_of(g) for g in range(10)].count("train") == 4


def test_videos_are_two_minutes_of_real_footage_and_photos(tmp_path):
    pytest.importorskip("av")
    cfg = EventBenchConfig(groups=1, seconds=64, fps=2.0, width=64, height=48)
    paths = make_eventbench(tmp_path, cfg, progress=False)
    import av

    vids = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(vids) == 6
    with av.open(str(vids[0])) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 128 and frames[0].shape == (48, 64, 3)
    assert np.std([f.mean() for f in frames]) > 1  # shots differ: not a blank video
    rows = paths["order"].read_text().splitlines()
    assert rows[0] == "video_id,label,split" and len(rows) == 7


@pytest.mark.slow
def test_stan_learns_where_an_event_is_and_the_mean_pool_probe_cannot(tmp_path, one_thread):
    cfg = EventBenchConfig(groups=20, seconds=64)
    cache, labels = write_feature_cache(tmp_path, cfg, dim=16)
    quiet = lambda *a, **k: None  # noqa: E731
    tiny = dict(dim=32, heads=4, depth_spatial=1, depth_temporal=1, depth_fusion=1, clip_len=1, frames=64,
                batch_size=8, lr=3e-3, dropout=0.0, epochs=40, patience=0, pool="mean")
    run = temporal.train(cache, labels["where"], tmp_path / "stan", tiny, log=quiet)
    stan = temporal.evaluate(run, "test", log=quiet)["r2"]
    probe = temporal.baseline(cache, labels["where"], tmp_path / "probe", tiny, mlp=False, log=quiet)
    assert probe["linear"]["test"]["r2"] < 0.1  # the same frames in every video of a group
    assert stan > 0.3, stan


@pytest.mark.slow
@pytest.mark.parametrize("task", ["order", "count"])
def test_the_event_summary_learns_order_and_count_where_the_probe_cannot(tmp_path, one_thread, task):
    cfg = EventBenchConfig(groups=20, seconds=64)
    cache, labels = write_feature_cache(tmp_path, cfg, dim=16)
    quiet = lambda *a, **k: None  # noqa: E731
    tiny = dict(dim=32, heads=4, depth_spatial=1, depth_temporal=1, depth_fusion=1, clip_len=1, frames=64,
                batch_size=8, lr=3e-3, dropout=0.0, epochs=30, patience=0, events=12,
                event_l1=1.0)  # lr 3x the default's: the same proximal shrinkage per step (lr x event_l1)
    # the summary alone: in 30 epochs on these 16-dim features the joint model's summary branch
    # leaves chance on some seeds only (the default's figures are the benchmark's, docs/ablations.md)
    run = temporal.train(cache, labels[task], tmp_path / "stan", tiny, streams="none", log=quiet)
    stan = temporal.evaluate(run, "test", log=quiet)["accuracy"]
    probe = temporal.baseline(cache, labels[task], tmp_path / "probe", tiny, mlp=False, log=quiet)
    chance = 1 / (6 if task == "order" else 3)
    assert probe["linear"]["test"]["accuracy"] < chance + 0.1  # the same frames in every video of a group
    assert stan > 0.8, stan
