"""STAN itself: every variant trains, padding is invisible, sampling and batching behave."""

import numpy as np
import pytest
import torch

import temporal
from temporal import as_config, build_model
from temporal.data import Clip, eval_batches, sample_frames, view_frames

pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = dict(dim=32, heads=4, depth_spatial=1, depth_temporal=1, depth_fusion=1, clip_len=3)


def batch(lengths, width=None, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    x = torch.randn(len(lengths), width, dim, generator=g)
    t = torch.arange(width).float().expand(len(lengths), width) * 0.5
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    return x, t, mask


FUSIONS = ("cross", "concat", "sum", "late")
VARIANTS = [("stan", "both", f) for f in FUSIONS] + [
    ("stan", "spatial", "cross"), ("stan", "temporal", "cross"), ("meanpool", "both", "cross")]


@pytest.mark.parametrize(("model", "streams", "fusion"), VARIANTS)
def test_every_variant_runs_forward_and_backward_with_masks(model, streams, fusion):
    torch.manual_seed(0)
    m = build_model(as_config(model=model, streams=streams, fusion=fusion, **SMALL), 16, 5).train()
    x, t, mask = batch([7, 11, 2])
    out, aux = m.outputs(x, t, mask)
    assert out.shape == (3, 5) and torch.isfinite(out).all()
    (out.logsumexp(-1).mean() + sum(a.logsumexp(-1).mean() for a in aux)).backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if model == "stan":  # both streams' parameters are reached when both are on
        assert (m.spatial is None) == (streams == "temporal")
        assert (m.temporal is None) == (streams == "spatial")


@pytest.mark.parametrize(("time_encoding", "events", "pairs"),
                         [("timestamp", 0, False), ("index", 0, False), ("none", 0, False),
                          ("timestamp", 5, False), ("timestamp", 5, True)])
@pytest.mark.parametrize(("model", "streams", "fusion"), VARIANTS)
def test_padding_does_not_change_the_output(model, streams, fusion, time_encoding, events, pairs):
    torch.manual_seed(0)
    cfg = as_config(model=model, streams=streams, fusion=fusion, time_encoding=time_encoding, events=events,
                 event_pairs=pairs, **SMALL)
    m = build_model(cfg, 16, 4).eval()
    lengths = [7, 11, 1, 4]
    x, t, mask = batch(lengths, width=14)
    x[~mask] = float("nan")  # whatever sits in the padding must not leak in
    t = t.masked_fill(~mask, 1e6)
    padded = m(x, t, mask)
    alone = torch.cat([m(x[i:i + 1, :n], t[i:i + 1, :n], mask[i:i + 1, :n]) for i, n in enumerate(lengths)])
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stream_input", ["features", "events", "mixed"])
@pytest.mark.parametrize("streams", ["both", "temporal"])
def test_padding_does_not_change_the_output_with_recurrence(streams, stream_input):
    torch.manual_seed(0)
    cfg = as_config(streams=streams, recurrence=True, stream_input=stream_input, events=5, **SMALL)
    m = build_model(cfg, 16, 4).eval()
    lengths = [7, 11, 1, 4]
    x, t, mask = batch(lengths, width=14)
    x[~mask] = float("nan")
    t = t.masked_fill(~mask, 1e6)
    alone = torch.cat([m(x[i:i + 1, :n], t[i:i + 1, :n], mask[i:i + 1, :n]) for i, n in enumerate(lengths)])
    torch.testing.assert_close(m(x, t, mask), alone, atol=1e-5, rtol=1e-5)


def test_comeback_marks_a_shot_that_returns_and_not_one_that_lasts():
    """Shots a, b, a: a's frames come back (later for the first piece, earlier for the second);
    one long shot a, alike to itself 8 frames on, does not."""
    from temporal.model import recurrence

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 16, generator=g)
    t, mask = torch.arange(9.0)[None], torch.ones(1, 9, dtype=torch.bool)
    noise = 0.05 * torch.randn(1, 9, 16, generator=g)
    later, earlier = recurrence(torch.stack([a] * 3 + [b] * 3 + [a] * 3)[None] + noise, t, mask)[0, :, -2:].T
    assert (later[:3] > 0.8).all() and (earlier[6:] > 0.8).all()
    assert later[3:].abs().max() < 0.1 and earlier[:6].abs().max() < 0.1
    lasting = recurrence(torch.stack([a] * 9)[None] + noise, t, mask)[0, :, -2:]
    assert lasting.abs().max() < 0.05
    x, t, mask = batch([13, 9])
    torch.testing.assert_close(recurrence(x, t, mask, rows=4), recurrence(x, t, mask, rows=13))  # chunked


def test_temporal_stream_sees_order_and_mean_pool_does_not():
    torch.manual_seed(0)
    x, t, mask = batch([12])
    rev = x.flip(1)
    stan = build_model(as_config(streams="temporal", **SMALL), 16, 2).eval()
    pool = build_model(as_config(model="meanpool", **SMALL), 16, 2).eval()
    assert not torch.allclose(stan(x, t, mask), stan(rev, t, mask), atol=1e-4)
    torch.testing.assert_close(pool(x, t, mask), pool(rev, t, mask))


def test_event_summary_says_how_much_where_and_how_often():
    """Frames of three kinds: a (filler, entered 4 times, the first frame too), b at 20-29 %, c
    twice. With the prototypes on the kinds (as k-means finds them) the summary reads share,
    position, onsets and which comes before which off exactly."""
    torch.manual_seed(0)
    kinds = torch.eye(3, 16)
    seq = [0] * 20 + [1] * 10 + [0] * 30 + [2] * 5 + [0] * 20 + [2] * 5 + [0] * 11  # 101 frames
    x = kinds[seq][None] + 0.01 * torch.randn(1, len(seq), 16)
    t = torch.arange(len(seq)).float()[None] * 2.0
    m = build_model(as_config(events=3, event_pairs=True, **SMALL), 16, 2).eval()
    m.events.fit(kinds)
    with torch.no_grad():
        m.events.log_scale.fill_(np.log(200.0))
    stats = m.events.stats(x, t, torch.ones_like(t, dtype=torch.bool))[0]
    share, where, onsets = stats[:9].view(3, 3)
    before = stats[9:12]  # pairs (a, b), (a, c), (b, c)
    torch.testing.assert_close(before, torch.tensor([20 / 81, (5 * 50 + 5 * 70) / (81 * 10), 1.0]),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(share, torch.tensor([81, 10, 10]) / 101, atol=1e-3, rtol=0)
    torch.testing.assert_close(where[1], torch.tensor(24.5 / 100), atol=3e-3, rtol=0)
    torch.testing.assert_close(onsets, torch.tensor([4.0, 1.0, 2.0]), atol=1e-2, rtol=0)
    highest = stats[-4:-2]  # comeback (later, earlier): a and c return after frames unlike them
    assert (highest > 0.9).all(), highest  # (1 minus the noise)
    reordered = build_model(as_config(events=3, event_pairs=True, **SMALL), 16, 2).eval()
    reordered.load_state_dict(m.state_dict())
    assert not torch.allclose(m(x, t, t > -1), reordered(x.flip(1), t, t > -1))  # same frames, other order


def test_the_pair_numbers_say_which_event_comes_first_and_flip_with_time():
    """b (20-29 %) comes wholly before c (65-70 %, 85-90 %): P[b before c] = 1; played backwards,
    every pair's number becomes one minus itself."""
    torch.manual_seed(0)
    kinds = torch.eye(3, 16)
    seq = [0] * 20 + [1] * 10 + [0] * 35 + [2] * 5 + [0] * 15 + [2] * 5 + [0] * 10
    x = kinds[seq][None] + 0.01 * torch.randn(1, len(seq), 16)
    t = torch.arange(len(seq)).float()[None]
    mask = torch.ones_like(t, dtype=torch.bool)
    ev = build_model(as_config(events=3, event_pairs=True, **SMALL), 16, 2).eval().events
    ev.fit(kinds)
    with torch.no_grad():
        ev.log_scale.fill_(np.log(200.0))
        pairs = ev.stats(x, t, mask)[0, 9:12]  # (a, b), (a, c), (b, c)
        back = ev.stats(x.flip(1), t, mask)[0, 9:12]
    assert pairs[2] > 0.99
    torch.testing.assert_close(back, 1 - pairs, atol=2e-2, rtol=0)


def test_the_gap_numbers_say_how_far_apart_two_events_are():
    """b then c, touching or 50 frames apart: which comes first is the same (P[b before c] = 1),
    the gap (c's mean position minus b's, a fraction of the video) tells them apart; played
    backwards, every gap changes sign."""
    torch.manual_seed(0)
    kinds = torch.eye(3, 16)
    ev = build_model(as_config(events=3, event_pairs=True, event_gaps=True, **SMALL), 16, 2).eval().events
    ev.fit(kinds)
    with torch.no_grad():
        ev.log_scale.fill_(np.log(200.0))
    stats = {}
    for name, between in (("near", 0), ("far", 50)):
        seq = [0] * 20 + [1] * 10 + [0] * between + [2] * 10 + [0] * (61 - between)  # 101 frames
        x = kinds[seq][None] + 0.01 * torch.randn(1, len(seq), 16)
        t = torch.arange(len(seq)).float()[None]
        mask = torch.ones_like(t, dtype=torch.bool)
        with torch.no_grad():
            stats[name] = ev.stats(x, t, mask)[0]
            stats[name + " backwards"] = ev.stats(x.flip(1), t, mask)[0]
    for name, want in (("near", 10 / 100), ("far", 60 / 100)):
        assert stats[name][11] > 0.99  # the pair (b, c)
        torch.testing.assert_close(stats[name][14], torch.tensor(want), atol=1e-2, rtol=0)  # its gap
        torch.testing.assert_close(stats[name + " backwards"][12:15], -stats[name][12:15], atol=3e-3, rtol=0)


def test_the_event_summary_alone_is_an_ablation_of_the_streams():
    m = build_model(as_config(streams="none", events=4, **SMALL), 16, 3).eval()
    assert m.spatial is None and m.temporal is None
    x, t, mask = batch([7, 11])
    assert m(x, t, mask).shape == (2, 3)
    with pytest.raises(temporal.ConfigError, match="events > 0"):
        as_config(streams="none", events=0)


def test_sampling_covers_the_video_and_views_are_deterministic():
    rng = np.random.default_rng(0)
    idx = sample_frames(3000, 64, "uniform", rng)
    assert len(idx) == 64 and np.all(np.diff(idx) > 0) and idx[0] < 47 and idx[-1] >= 3000 - 47
    win = sample_frames(3000, 64, "window", rng)
    assert np.array_equal(win, np.arange(win[0], win[0] + 64))
    assert np.array_equal(sample_frames(10, 64, "uniform", rng), np.arange(10))  # short: every frame
    views = view_frames(3000, 64, "uniform", 4)
    assert len(views) == 4 and all(len(v) == 64 for v in views)
    assert len({tuple(v) for v in views}) == 4  # different frames per view
    assert all(np.array_equal(a, b) for a, b in zip(views, view_frames(3000, 64, "uniform", 4), strict=True))
    wins = view_frames(100, 10, "window", 3)
    assert [w[0] for w in wins] == [0, 45, 90]
    assert len(view_frames(5, 10, "window", 3)) == 1


def test_eval_batches_respect_the_frame_budget():
    clips = [Clip(i, np.arange(n)) for i, n in enumerate([3000, 40, 64, 64, 10, 1500, 64])]
    batches = eval_batches(clips, 256)
    assert sorted(c.video for b in batches for c in b) == list(range(7))
    for b in batches:
        width = max(len(c.index) for c in b)
        assert len(b) == 1 or width * len(b) <= 256


@pytest.mark.parametrize("length", [64, 65, 100, 120, 127, 150, 191, 300])
def test_uniform_sampling_never_repeats_a_frame(length):
    # between `frames` and ~3x `frames` long, segments narrower than two frames used to share
    # their edge frames: a 120-frame video at 64 frames repeated about 3 steps per sample
    rng = np.random.default_rng(0)
    for _ in range(200):
        idx = sample_frames(length, 64, "uniform", rng)
        assert len(idx) == 64 and np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < length
    for v in view_frames(length, 64, "uniform", 4):
        assert len(v) == 64 and np.all(np.diff(v) > 0) and v[-1] < length


@pytest.mark.slow  # (the fast tier stays under a minute; CI runs it)
def test_full_length_forward_never_builds_the_attention_matrix():
    # 6000 frames: the math kernel (T x T float attention matrices for 4 heads) raises peak RSS by
    # ~1.1 GB here; scaled_dot_product_attention's fused kernels keep memory linear in T (~0.1 GB)
    import resource

    torch.manual_seed(0)
    m = build_model(as_config(dim=64, heads=4, depth_spatial=1, depth_temporal=1, clip_len=1), 32, 3).eval()
    x, t, mask = batch([6000, 2000], dim=32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with torch.inference_mode():
        out = m(x, t, mask)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert grew < 400 * 1024, f"a full-length forward of 6000 frames raised peak RSS by {grew / 1024:.0f} MiB"


def test_the_summary_numbers_are_centred_on_the_videos_they_were_fitted_on():
    """fit_without_labels takes each of the summary's numbers' mean over the fit videos' evaluation
    clips (no label read): there they have mean 0, and keep their units (differences unchanged)."""
    from temporal.data import Videos
    from temporal.loop import fit_without_labels, summary_numbers

    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(n, 16)).astype(np.float32) for n in rng.integers(30, 80, size=12)]
    videos = Videos.from_arrays(feats, [np.arange(len(f), dtype=np.float32) for f in feats], 16)
    cfg = as_config(events=4, frames=16, **SMALL)
    m = build_model(cfg, 16, 2)
    fit_without_labels(m, videos, range(12), cfg)
    numbers = summary_numbers(m, videos, range(12), cfg)
    centred = m.events.proj[0](numbers)
    assert centred.shape == (12 * cfg.eval.views, 3 * 4 + 2 * 6 + 4)
    torch.testing.assert_close(centred.mean(0), torch.zeros(centred.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(centred - centred[:1], numbers - numbers[:1])
    assert numbers.std(0).max() > 0.1  # (not a trivially constant summary)
