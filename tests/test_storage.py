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


def test_a_refused_writer_names_the_holder_even_before_it_wrote_its_pid(tmp_path, monkeypatch):
    """The window test_faults' two-writers test once hit: the winner holds the flock, and `.lock`
    still says nothing (or names a writer that was killed) until it writes its own pid."""
    import fcntl
    import subprocess
    import sys
    import threading

    import storage.lock

    root = tmp_path / "cache"
    root.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    (root / ".lock").write_text(f"pid {gone.stdout.strip()}")  # a killed writer's, never released
    fd = os.open(root / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the new holder: locked, its pid not written yet
    late = threading.Timer(0.3, lambda: os.pwrite(fd, f"pid {os.getpid()}  ".encode(), 0))
    late.start()
    try:
        with pytest.raises(storage.CacheBusy, match=f"being written by pid {os.getpid()};"):
            storage.CacheWriter(root, dim=4, dtype="float16", fingerprint={})
        os.ftruncate(fd, 0)  # a holder that never says who it is: named as such, after a short wait
        monkeypatch.setattr(storage.lock, "HOLDER_WAIT", 0.2)
        with pytest.raises(storage.CacheBusy, match="being written by another process;"):
            storage.CacheWriter(root, dim=4, dtype="float16", fingerprint={})
    finally:
        late.join()
        os.close(fd)
    with storage.CacheWriter(root, dim=4, dtype="float16", fingerprint={}):
        assert (root / ".lock").read_text() == f"pid {os.getpid()}"
    assert (root / ".lock").read_text() == ""  # released: no pid left to mislead the next reader


def test_settings_helpers_refuse_unknown_keys_and_read_optional_types():
    from dataclasses import dataclass

    from storage.settings import check_keys, field_types

    @dataclass
    class Opts:
        frames: int | None = None
        rate: float = 1.0
        name: str = "x"
        tags: tuple[str, ...] = ()

    assert field_types(Opts) == {"frames": (int, type(None)), "rate": (float,), "name": (str,),
                                 "tags": (tuple,)}
    check_keys(Opts, {"frames": 3}, "option(s)")
    with pytest.raises(KeyError, match=r"unknown option\(s\): 'frame' \(did you mean 'frames'\?\), 'zz'; "
                                       "known: frames, rate, name, tags"):
        check_keys(Opts, {"frame": 3, "zz": 1}, "option(s)", KeyError)


def test_write_json_replaces_the_file_whole(tmp_path):
    from storage.files import write_json

    path = tmp_path / "sub" / "m.json"
    write_json(path, {"b": 1, "a": [1.5]})
    assert path.read_text() == '{\n  "b": 1,\n  "a": [\n    1.5\n  ]\n}\n'
    write_json(path, {"b": 2, "a": 0}, sort_keys=True)
    assert json.loads(path.read_text()) == {"a": 0, "b": 2} and path.read_text().index('"a"') < 10
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temporary file left


def test_one_device_choice_for_both_stages():
    import torch

    from extract import ExtractConfig, ExtractError
    from storage.device import DeviceError, is_device_name, pick_device
    from temporal import Config, ConfigError

    for name in ("auto", "cpu", "cuda", "cuda:1"):
        assert is_device_name(name)
        assert ExtractConfig(device=name).device == Config(device=name).device == name
    for name in ("gpu", "cuda:", "cuda:x", "CPU", 0):
        assert not is_device_name(name)
    with pytest.raises(ExtractError, match="cuda:N"):
        ExtractConfig(device="gpu")
    with pytest.raises(ConfigError, match="cuda:N"):
        Config(device="gpu")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert pick_device("cuda:0") == torch.device("cuda:0")
    else:
        with pytest.raises(DeviceError, match="no CUDA device"):
            pick_device("cuda:1")
    with pytest.raises(DeviceError, match="got 'gpu'"):
        pick_device("gpu")
