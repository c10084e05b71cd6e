import json
import os

import h5py
import numpy as np
import pytest
import zarr

import storage
from storage.shard import CorruptShardError
from tests.testing import run_module

FP = {"model": "m", "fps": 1.0}


def fill(root, fmt, videos, dim=16, chunk=8):
    """Write `videos` {id: T} into one committed shard; returns the data written."""
    rng = np.random.default_rng(0)
    data = {}
    with storage.CacheWriter(root, dim=dim, dtype="float16", fingerprint=FP) as w:
        sw = w.shard_writer(w.allocate_shard(fmt), chunk_frames=chunk)
        for vid, t in videos.items():
            f = rng.standard_normal((t, dim)).astype("float16")
            ts = np.arange(t, dtype="float32") * 0.5
            sw.add(vid, f, ts)
            data[vid] = (f, ts)
        sw.commit()
    return data


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_round_trip_and_plain_readers(tmp_path, fmt):
    videos = {"a/x.mp4": 3, "b/x.mp4": 20, "empty.mp4": 0, "ü.mp4": 9}
    data = fill(tmp_path, fmt, videos)
    cache = storage.open_cache(tmp_path)
    assert cache.video_ids == sorted(videos)
    assert cache.total_frames == sum(videos.values())
    for vid, (f, ts) in data.items():
        np.testing.assert_array_equal(cache.features(vid), f)
        np.testing.assert_array_equal(cache.timestamps(vid), ts)
    assert {v.id: v.features.shape[0] for v in cache.iter_videos()} == videos
    # a shard is plain Zarr / HDF5: readable without this project's code
    (shard,) = storage.shard_paths(tmp_path)
    if fmt == "zarr":
        g = zarr.open_group(str(shard), mode="r")
        ids, off, feats = list(g["video_ids"][:]), g["offsets"][:], g["features"][:]
    else:
        with h5py.File(shard) as g:
            ids = [s.decode() for s in g["video_ids"][:]]
            off, feats = g["offsets"][:], g["features"][:]
    i = ids.index("b/x.mp4")
    np.testing.assert_array_equal(feats[off[i]:off[i + 1]], data["b/x.mp4"][0])


def test_fingerprint_mismatch_is_refused(tmp_path):
    fill(tmp_path, "zarr", {"a.mp4": 2})
    with pytest.raises(storage.FingerprintMismatch, match="model: 'm' in the cache, 'other' now"):
        storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint={**FP, "model": "other"})
    with pytest.raises(storage.FingerprintMismatch, match="dtype"):
        storage.CacheWriter(tmp_path, dim=16, dtype="float32", fingerprint=FP)
    storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP).close()  # same: fine


def test_second_writer_is_refused_while_first_holds_the_lock(tmp_path):
    with (storage.CacheWriter(tmp_path, dim=4, dtype="float16", fingerprint=FP),
          pytest.raises(storage.CacheBusy, match=f"pid {os.getpid()}")):
        storage.CacheWriter(tmp_path, dim=4, dtype="float16", fingerprint=FP)
    storage.CacheWriter(tmp_path, dim=4, dtype="float16", fingerprint=FP).close()


def test_uncommitted_shard_is_invisible_and_cleaned(tmp_path):
    fill(tmp_path, "zarr", {"done.mp4": 4})
    w = storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP)
    sw = w.shard_writer(w.allocate_shard("hdf5"))
    sw.add("half.mp4", np.zeros((5, 16)), np.zeros(5))
    sw._flush(whole_chunks=False)  # data on disk, never committed: as after a crash
    w.close()
    assert storage.open_cache(tmp_path).video_ids == ["done.mp4"]
    assert "temporary" in storage.verify(tmp_path).notes[0]
    with storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP) as w:
        assert w.committed_ids() == {"done.mp4"}
        assert w.allocate_shard().name == "part-00001.zarr"
    assert not [p for p in (tmp_path / "shards").iterdir() if ".tmp-" in p.name]


def test_flipped_bytes_are_caught_by_reader_and_verify(tmp_path):
    data = fill(tmp_path, "hdf5", {"a.mp4": 30, "b.mp4": 30})
    (shard,) = storage.shard_paths(tmp_path)
    with h5py.File(shard, "r+") as f:
        f["features"][40, 3] = data["b.mp4"][0][10, 3] + np.float16(1)  # silent damage to b.mp4
    cache = storage.open_cache(tmp_path)
    np.testing.assert_array_equal(cache.features("a.mp4"), data["a.mp4"][0])
    with pytest.raises(CorruptShardError, match=r"b\.mp4.*checksum"):
        cache.features("b.mp4")
    rep = storage.verify(tmp_path)
    assert not rep.ok and rep.bad_shards == [shard]
    proc = run_module("storage", "verify", tmp_path, check=False)
    assert proc.returncode == 1 and shard.name in proc.stdout


def test_truncated_shard_is_named(tmp_path):
    fill(tmp_path, "hdf5", {"a.mp4": 50})
    (shard,) = storage.shard_paths(tmp_path)
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(CorruptShardError, match=shard.name):
        storage.open_cache(tmp_path)
    assert storage.verify(tmp_path).bad_shards == [shard]


def test_info_cli_and_failures(tmp_path):
    fill(tmp_path, "zarr", {"a.mp4": 3})
    with storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP) as w:
        w.record_failure("bad.mp4", "/x/bad.mp4", "not a video")
        w.record_failure("a.mp4", "/x/a.mp4", "old failure, since extracted")
    (tmp_path / "failures.jsonl").open("a").write('{"video_id": "torn')  # crash mid-line
    cache = storage.open_cache(tmp_path)
    assert list(cache.failures()) == ["bad.mp4"]
    out = json.loads(run_module("storage", "info", tmp_path, "--json").stdout)
    assert (out["videos"], out["frames"], out["dim"], out["failures"]) == (1, 3, 16, 1)
    assert out["fingerprint"] == FP


@pytest.mark.parametrize("bad", ["../x.mp4", "/etc/passwd", "a/../../b", ""])
def test_unsafe_ids_are_refused(bad):
    with pytest.raises(ValueError):
        storage.check_video_id(bad)


def test_video_id_is_relative_posix_and_valid_utf8(tmp_path):
    name = os.fsdecode(b"caf\xe9 clip.mp4")  # latin-1 bytes: not UTF-8
    assert storage.video_id(tmp_path / "sub" / name, tmp_path) == "sub/caf\\xe9 clip.mp4"
    assert storage.video_id(tmp_path / "a" / "x.mp4", tmp_path) != storage.video_id(
        tmp_path / "b" / "x.mp4", tmp_path)
