import json
import os
import socket

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


def test_uncommitted_shard_is_invisible_and_cleaned(tmp_path, monkeypatch):
    fill(tmp_path, "zarr", {"done.mp4": 4})
    w = storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP)
    sw = w.shard_writer(w.allocate_shard("hdf5"))
    sw.add("half.mp4", np.zeros((5, 16)), np.zeros(5))
    sw._flush(whole_chunks=False)  # data on disk, never committed: as after a crash
    late = w.shard_writer(w.allocate_shard("zarr"))
    late.add("late.mp4", np.zeros((5, 16)), np.zeros(5))
    with monkeypatch.context() as m:  # as a crash after the rename, before the index entry
        m.setattr(storage.index, "write_entry", lambda *a: None)
        late.commit()
    w.close()
    assert late.path.exists() and storage.open_cache(tmp_path).video_ids == ["done.mp4"]
    rep = storage.verify(tmp_path)
    assert rep.ok and any("temporary" in n for n in rep.notes)
    assert any("no index entry" in n for n in rep.notes)
    with storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP) as w:
        assert w.committed_ids() == {"done.mp4"}
        # never a name seen before (00001 temporary, 00002 uncommitted): a straggler cannot write into it
        assert w.allocate_shard().name == "part-00003.zarr"
    assert not [p for p in (tmp_path / "shards").iterdir() if ".tmp-" in p.name]
    assert not late.path.exists()


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


def test_damaged_shard_costs_only_its_videos(tmp_path):
    data = fill(tmp_path, "hdf5", {"a.mp4": 50})
    data.update(fill(tmp_path, "hdf5", {"b.mp4": 20}))
    shard = storage.shard_paths(tmp_path)[0]
    shard.write_bytes(shard.read_bytes()[:1000])
    cache = storage.open_cache(tmp_path)  # the index is enough to open
    assert cache.video_ids == ["a.mp4", "b.mp4"]
    with pytest.raises(CorruptShardError, match=rf"{shard.name}.*--repair"):
        cache.features("a.mp4")
    np.testing.assert_array_equal(cache.features("b.mp4"), data["b.mp4"][0])
    assert storage.verify(tmp_path).bad_shards == [shard]
    info = run_module("storage", "info", tmp_path)
    assert "2 videos" in info.stdout and "Traceback" not in info.stderr


def test_errors_of_the_machine_are_not_called_damage(tmp_path):
    """Too many open files is not a damaged shard: the OSError comes through as it is."""
    import resource

    for i in range(4):
        fill(tmp_path, "hdf5", {f"v{i}.mp4": 3})
    cache = storage.open_cache(tmp_path)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # the limit caps descriptor numbers, and a new file takes the lowest free one: earlier tests
    # (dask, decoders) leave gaps, so counting open descriptors is not enough. Room for one file.
    in_use = {int(fd) for fd in os.listdir("/proc/self/fd")}
    lowest_free = next(fd for fd in range(len(in_use) + 1) if fd not in in_use)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free + 1, hard))
    try:
        with pytest.raises(OSError) as e:
            for i in range(4):
                cache.features(f"v{i}.mp4")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not isinstance(e.value, CorruptShardError) and "24" in str(e.value), e.value
    cache.close()
    assert storage.verify(tmp_path).ok


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_open_reads_the_index_and_keeps_few_files_open(tmp_path, fmt):
    videos = {f"v{i:02d}.mp4": 5 + i for i in range(12)}
    for vid, t in videos.items():
        fill(tmp_path, fmt, {vid: t})
    fds = len(os.listdir("/proc/self/fd"))
    cache = storage.open_cache(tmp_path, max_open=3)
    assert len(os.listdir("/proc/self/fd")) == fds  # open touched no shard
    assert {v: cache.num_frames(v) for v in cache} == videos
    for vid in videos:
        assert len(cache.features(vid)) == videos[vid]
        assert len(os.listdir("/proc/self/fd")) <= fds + 3
    cache.close()
    assert len(os.listdir("/proc/self/fd")) == fds


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_xarray_reads_a_shard_with_named_dims(tmp_path, fmt):
    xr = pytest.importorskip("xarray")
    data = fill(tmp_path, fmt, {"a.mp4": 3, "b.mp4": 20})
    (shard,) = storage.shard_paths(tmp_path)
    ds = xr.open_zarr(shard) if fmt == "zarr" else xr.open_dataset(shard)
    assert ds["features"].dims == ("frame", "feature")
    assert ds["timestamps"].dims == ("frame",)
    assert ds["video_ids"].dims == ds["checksums"].dims == ("video",)
    assert ds.sizes["frame"] == 23 and ds.sizes["feature"] == 16 and ds.sizes["video"] == 2
    off = ds["offsets"].values
    np.testing.assert_array_equal(ds["features"].values[off[1]:off[2]], data["b.mp4"][0])
    assert list(ds["video_ids"].values) == ["a.mp4", "b.mp4"]
    ds.close()


def test_small_hdf5_shards_are_no_larger_than_zarr(tmp_path):
    def size(p):
        return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())

    rng = np.random.default_rng(0)
    for frames in (38, 300, 1024):  # up to one writer buffer; beyond it see bench/cache_scale.py
        sizes = {}
        for fmt in ("zarr", "hdf5"):
            with storage.CacheWriter(tmp_path / f"{fmt}{frames}", dim=768, dtype="float16",
                                     fingerprint=FP) as w:
                sw = w.shard_writer(w.allocate_shard(fmt))
                for k in range(2):
                    f = rng.standard_normal((frames // 2, 768)).astype("float16")
                    sw.add(f"v{k}.mp4", f, np.arange(frames // 2, dtype="float32"))
                sizes[fmt] = size(sw.commit())
        assert sizes["hdf5"] <= 1.1 * sizes["zarr"], (frames, sizes)


def test_index_is_rebuilt_from_the_shards(tmp_path):
    import shutil

    data = fill(tmp_path, "zarr", {"a.mp4": 3, "b.mp4": 4})
    data.update(fill(tmp_path, "hdf5", {"c.mp4": 5}))
    shutil.rmtree(tmp_path / "index")
    (tmp_path / "index.json").unlink()
    (tmp_path / "cache.json").unlink()
    with pytest.raises(storage.CacheError, match="--rebuild-index"):
        storage.open_cache(tmp_path)
    assert not storage.verify(tmp_path).ok
    proc = run_module("storage", "verify", "--rebuild-index", tmp_path)
    assert "3 videos" in proc.stdout
    cache = storage.open_cache(tmp_path)
    assert cache.fingerprint == FP and cache.video_ids == ["a.mp4", "b.mp4", "c.mp4"]
    for vid, (f, _) in data.items():
        np.testing.assert_array_equal(cache.features(vid), f)
    assert storage.verify(tmp_path).ok


def test_cache_of_an_older_format_names_the_rebuild(tmp_path):
    fill(tmp_path, "zarr", {"a.mp4": 3})
    info = json.loads((tmp_path / "cache.json").read_text())
    (tmp_path / "cache.json").write_text(json.dumps({**info, "format_version": 1}))
    group = next(tmp_path.glob("shards/*.zarr")) / "zarr.json"  # older shards had no consolidated copy
    meta = json.loads(group.read_text())
    assert meta.pop("consolidated_metadata")
    group.write_text(json.dumps(meta))
    for call in (lambda: storage.open_cache(tmp_path),
                 lambda: storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP)):
        with pytest.raises(storage.CacheError, match=r"older version.*--rebuild-index"):
            call()
    storage.rebuild_index(tmp_path)
    cache = storage.open_cache(tmp_path)
    assert cache.video_ids == ["a.mp4"] and cache.features("a.mp4").shape == (3, 16)


def test_each_shard_carries_its_fingerprint(tmp_path):
    fill(tmp_path, "zarr", {"a.mp4": 3})
    (shard,) = storage.shard_paths(tmp_path)
    assert zarr.open_group(str(shard), mode="r").attrs["fingerprint"] == FP
    (tmp_path / "cache.json").unlink()
    other = {**FP, "fps": 2.0}
    # cache.json lost: the shards still refuse features made with other settings
    with pytest.raises(storage.FingerprintMismatch, match=r"fps: 1\.0 in the cache, 2\.0 now"):
        storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=other)
    storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP).close()  # restores it
    assert json.loads((tmp_path / "cache.json").read_text())["fingerprint"] == FP
    # a producer with other settings is refused at commit (a worker that loaded another model)
    with storage.CacheWriter(tmp_path, dim=16, dtype="float16", fingerprint=FP) as w:
        sw = storage.ShardWriter(w.allocate_shard("hdf5"), 16, fingerprint=other)
        sw.add("b.mp4", np.zeros((2, 16)), np.zeros(2))
        with pytest.raises(storage.FingerprintMismatch, match="fps"):
            sw.commit()
        sw.abort()
    assert storage.open_cache(tmp_path).video_ids == ["a.mp4"]


def test_verify_reports_a_foreign_shard_even_without_cache_json(tmp_path):
    import shutil

    fill(tmp_path / "c", "zarr", {"a.mp4": 3})
    other = tmp_path / "other"
    with storage.CacheWriter(other, dim=16, dtype="float16", fingerprint={**FP, "fps": 2.0}) as w:
        sw = w.shard_writer(w.allocate_shard("zarr"))
        sw.add("b.mp4", np.zeros((2, 16)), np.zeros(2))
        sw.commit()
    # smuggled in behind the writer's back: the shard and its index entry
    shutil.copytree(other / "shards" / "part-00000.zarr", tmp_path / "c" / "shards" / "part-00001.zarr")
    entry = json.loads((other / "index" / "part-00000.zarr.json").read_text())
    (tmp_path / "c" / "index" / "part-00001.zarr.json").write_text(
        json.dumps({**entry, "shard": "part-00001.zarr"}))
    rep = storage.verify(tmp_path / "c")
    assert not rep.ok and any("fps" in p and "part-00001" in p for p in rep.problems), rep.problems
    (tmp_path / "c" / "cache.json").unlink()
    rep = storage.verify(tmp_path / "c")
    assert any("different settings" in p for p in rep.problems), rep.problems


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
        assert (root / ".lock").read_text() == f"pid {os.getpid()} host {socket.gethostname()}"
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
    from temporal import ConfigError, as_config

    for name in ("auto", "cpu", "cuda", "cuda:1"):
        assert is_device_name(name)
        assert ExtractConfig(device=name).device == as_config(device=name).device == name
    for name in ("gpu", "cuda:", "cuda:x", "CPU", 0):
        assert not is_device_name(name)
    with pytest.raises(ExtractError, match="cuda:N"):
        ExtractConfig(device="gpu")
    with pytest.raises(ConfigError, match="cuda:N"):
        as_config(device="gpu")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert pick_device("cuda:0") == torch.device("cuda:0")
    else:
        with pytest.raises(DeviceError, match="no CUDA device"):
            pick_device("cuda:1")
    with pytest.raises(DeviceError, match="got 'gpu'"):
        pick_device("gpu")
