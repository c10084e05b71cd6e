"""Training from a cache larger than the memory budget: features read lazily from the shards give
the same batches and metrics as the in-memory path, while the chunk store stays within the budget."""

import csv
import json
import shutil

import numpy as np
import pytest

import storage
import temporal
from temporal.config import ConfigError, memory_bytes
from temporal.data import LazyVideos, Videos, feature_bytes, frame_sample, load_videos
from temporal.loop import feature_std, train_batch
from temporal.synth import class_task, write_cache
from tests.testing import run_module

TINY = dict(dim=32, heads=4, depth_spatial=1, depth_temporal=1, depth_fusion=1, clip_len=2, frames=16,
            batch_size=8, lr=3e-3, warmup=1, dropout=0.0, eval_views=2)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """(cache, labels, budget): 48 videos of 8-40 frames, 2 per shard (many small chunks), and a
    memory budget of a quarter of their features. Shared: tests must not change it."""
    tmp_path = tmp_path_factory.mktemp("lazy")
    cache, labels = class_task(tmp_path / "src", videos=48, classes=3, lengths=(8, 40))
    src = storage.open_cache(cache)
    out = write_cache(tmp_path / "cache", ((v.id, v.features, v.timestamps) for v in src.iter_videos()),
                      src.dim, per_shard=2)
    reader = storage.open_cache(out)
    return out, labels, feature_bytes(reader, reader.video_ids) // 4


def test_lazy_videos_serve_the_same_frames_within_the_budget(small_shards):
    cache, _, budget = small_shards
    reader = storage.open_cache(cache)
    ids = reader.video_ids[::-1]  # not in storage order
    mem, lazy = Videos(reader, ids), load_videos(reader, ids, budget)
    assert isinstance(lazy, LazyVideos) and isinstance(load_videos(reader, ids, 4 * budget), Videos)
    np.testing.assert_array_equal(mem.lengths, lazy.lengths)
    cfg = temporal.as_config(TINY)
    for seed in range(3):  # a few epochs' worth of batches, same generator state on both sides
        r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
        for rows in np.array_split(np.random.default_rng(100 + seed).permutation(len(ids)), 6):
            a = train_batch(mem, rows, cfg.data, r1, "cpu")
            lazy.prefetch(rows[::-1])  # a read in the background must not change what is served
            b = train_batch(lazy, rows, cfg.data, r2, "cpu")
            for x, y in zip(a, b, strict=True):
                assert x.equal(y)
        np.testing.assert_array_equal(frame_sample(mem, range(len(ids)), np.random.default_rng(seed), 300),
                                      frame_sample(lazy, range(len(ids)), np.random.default_rng(seed), 300))
        np.testing.assert_array_equal(feature_std(mem, np.random.default_rng(seed), 200),
                                      feature_std(lazy, np.random.default_rng(seed), 200))
    store = lazy.store
    assert 0 < store.nbytes <= store.peak <= budget  # the store's own accounting, never over
    chunks = sum(len(range(0, e["frames"], reader.chunk_rows(s))) + 1 for s, e in enumerate(reader.entries))
    assert store.reads > chunks  # it did drop chunks and read them again: the budget was binding


def test_a_damaged_video_read_lazily_names_its_shard(small_shards, tmp_path):
    cache = shutil.copytree(small_shards[0], tmp_path / "cache")
    budget = small_shards[2]
    reader = storage.open_cache(cache)
    ids = reader.video_ids
    s = reader.locate(ids[5])[0]
    shard = reader.shard_path(s)
    zarr_chunk = next(p for p in (shard / "features" / "c").rglob("*") if p.is_file())
    zarr_chunk.write_bytes(b"\0" * zarr_chunk.stat().st_size)
    lazy = LazyVideos(storage.open_cache(cache), ids, budget)
    with pytest.raises(storage.CorruptShardError, match=shard.name):
        lazy.frames(5)
    assert len(lazy.frames(0)[0]) == lazy.lengths[0]  # the other shards read normally


def read_history(run):
    with open(run / "history.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)]


def test_training_from_a_cache_4x_the_budget_matches_the_in_memory_run(small_shards, tmp_path):
    cache, labels, budget = small_shards
    opts = dict(TINY, epochs=3, patience=0, events=3, pca_dims=8, aug_noise=0.1)  # every sampling path
    notes: list[str] = []
    mem = temporal.train(cache, labels, tmp_path / "mem", opts, log=lambda *_: None)
    lazy = temporal.train(cache, labels, tmp_path / "lazy", opts, memory_budget=str(budget),
                          log=lambda m, *_: notes.append(m))
    assert any("exceed memory_budget" in n for n in notes), notes
    assert any("read lazily" in n for n in notes), notes
    assert read_history(mem) == read_history(lazy)
    sums = [json.loads((r / "summary.json").read_text())["val"] for r in (mem, lazy)]
    assert sums[0] == sums[1]
    a = temporal.evaluate(mem, "test", log=lambda *_: None)
    b = temporal.evaluate(lazy, "test", log=lambda *_: None, memory_budget=str(budget))
    assert a == b


def test_memory_budget_is_parsed_and_refused_clearly():
    assert memory_bytes("2GB") == 2 * 10**9 and memory_bytes("1.5GiB") == 3 * 2**29
    assert memory_bytes("512mb") == 512 * 10**6 and memory_bytes("4096") == 4096
    assert memory_bytes("auto") > 0
    for bad in ("lots", "-1GB", "2XB", "0"):
        with pytest.raises(ConfigError, match="memory_budget"):
            temporal.as_config(memory_budget=bad)


@pytest.mark.slow
def test_the_cli_takes_a_memory_budget(small_shards, tmp_path):
    cache, labels, budget = small_shards
    proc = run_module("temporal", "train", "--cache", cache, "--labels", labels, "--out", tmp_path / "run",
                      "--width", 32, "--attention-heads", 4, "--frames", 8, "--epochs", 1,
                      "--memory-budget", str(budget),
                      env={"OMP_NUM_THREADS": "1"})
    assert "read lazily" in proc.stdout
    proc = run_module("temporal", "train", "--cache", cache, "--labels", labels, "--out", tmp_path / "r2",
                      "--memory-budget", "plenty", env={"OMP_NUM_THREADS": "1"}, check=False)
    assert proc.returncode == 2 and "memory_budget" in proc.stderr


def test_a_run_interrupted_in_memory_resumes_lazily_to_the_same_end(small_shards, tmp_path, monkeypatch):
    """memory_budget is not an option of the run: a resume may read the features another way."""
    from tests.test_temporal_resume import Killed, interrupt_after, same_weights, untimed

    cache, labels, budget = small_shards
    opts = dict(TINY, epochs=3, patience=0)
    whole = temporal.train(cache, labels, tmp_path / "whole", opts, log=lambda *_: None)
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Killed):
        temporal.train(cache, labels, tmp_path / "cut", opts, log=lambda *_: None)
    monkeypatch.undo()
    notes: list[str] = []
    cut = temporal.train(cache, labels, tmp_path / "cut", opts, resume=True, memory_budget=str(budget),
                         log=lambda m, *_: notes.append(m))
    assert any("read lazily" in n for n in notes) and any("resuming" in n for n in notes), notes
    assert same_weights(whole, cut) and untimed(whole) == untimed(cut)


def test_principal_components_survive_lapacks_divide_and_conquer_failing(tmp_path, monkeypatch):
    """numpy's SVD (LAPACK gesdd) once failed to converge in a MiniRocket probe's PCA on real
    features; the slower gesvd driver then gives the same components."""
    from temporal.data import principal_components

    cache, _ = class_task(tmp_path, videos=12, classes=2)
    videos = load_videos(storage.open_cache(cache), storage.open_cache(cache).video_ids, 1 << 30)
    mean, proj = principal_components(videos, range(12), 4, np.random.default_rng(0))

    def fails(*_a, **_k):
        raise np.linalg.LinAlgError("SVD did not converge")

    monkeypatch.setattr(np.linalg, "svd", fails)
    mean2, proj2 = principal_components(videos, range(12), 4, np.random.default_rng(0))
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_allclose(np.abs(proj), np.abs(proj2), rtol=1e-4, atol=1e-6)  # up to each sign
