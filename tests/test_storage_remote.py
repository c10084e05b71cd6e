"""A cache on an fsspec URL: the same commit protocol (the index entry is the commit) on object storage.

`memory://` stands in for S3/GCS (no rename of folders, no flock); `file://` must equal a local path.
"""

import os
import socket
import subprocess
import sys
import uuid

import fsspec
import numpy as np
import pytest

import storage
from extract import run
from extract.backbone import load_backbone
from extract.distributed import lease_ok
from storage import index
from storage.location import ObjectPath, as_path
from tests.test_storage import FP
from tests.testing import assert_same, content, index_frames, run_module, tiny, write_video


@pytest.fixture
def url():
    name = f"cache-{uuid.uuid4().hex[:8]}"
    yield f"memory://{name}"
    fsspec.filesystem("memory").rm(f"/{name}", recursive=True)


def write_shard(root, fmt, videos, dim=16, commit=True):
    """Write `videos` {id: T} into one shard through the real writer; returns (data, ShardWriter)."""
    rng = np.random.default_rng(len(videos))
    data = {}
    with storage.CacheWriter(root, dim=dim, dtype="float16", fingerprint=FP) as w:
        sw = w.shard_writer(w.allocate_shard(fmt), chunk_frames=8)
        for vid, t in videos.items():
            data[vid] = (rng.standard_normal((t, dim)).astype("float16"), np.arange(t, dtype="float32"))
            sw.add(vid, *data[vid])
        if commit:
            sw.commit()
        else:
            sw._flush(whole_chunks=False)  # data written, never committed: as after a crash
        w.record_failure("bad.mp4", "/v/bad.mp4", "cannot decode")
    return data, sw


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_round_trip_through_memory_url(url, fmt, capsys):
    data = write_shard(url, fmt, {"a.mp4": 20, "b/c.mp4": 3})[0]
    data.update(write_shard(url, "zarr", {"d.mp4": 11})[0])  # a second run, a mixed cache
    assert isinstance(as_path(url), ObjectPath)
    cache = storage.open_cache(url)
    assert cache.video_ids == sorted(data)
    for vid, (f, ts) in data.items():
        np.testing.assert_array_equal(cache.features(vid), f)
        np.testing.assert_array_equal(cache.timestamps(vid), ts)
    assert [s.name for s in storage.shard_paths(url)] == [f"part-00000{'.zarr' if fmt == 'zarr' else '.h5'}",
                                                          "part-00001.zarr"]
    assert set(cache.failures()) == {"bad.mp4"}
    rep = storage.verify(url)
    assert rep.ok and rep.videos == 3 and rep.shards == 2, rep
    # the index can be rebuilt from the shards there too
    fs = fsspec.filesystem("memory")
    fs.rm(str(as_path(url).path) + "/index", recursive=True)
    fs.rm(str(as_path(url).path) + "/index.json")
    with pytest.raises(storage.CacheError, match="no index"):
        storage.open_cache(url)
    assert storage.rebuild_index(url).videos == 3
    assert storage.open_cache(url).video_ids == sorted(data)
    from storage.__main__ import main

    assert main(["info", url]) == 0 and "3 videos" in capsys.readouterr().out
    assert not fs.exists(as_path(url).path + "/.lock")  # released: the lock object is gone


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_crash_between_data_and_entry_leaves_an_invisible_shard(url, fmt, monkeypatch):
    write_shard(url, "zarr", {"done.mp4": 4})
    _, half = write_shard(url, fmt, {"half.mp4": 9}, commit=False)  # a crash mid-shard
    with monkeypatch.context() as m:  # a crash after the data is complete, before its entry
        m.setattr(storage.index, "write_entry", lambda *a: None)
        _, late = write_shard(url, fmt, {"late.mp4": 5})
    assert late.path.exists() and isinstance(late.path, ObjectPath)  # data at its final name...
    assert storage.open_cache(url).video_ids == ["done.mp4"]  # ...but not committed: invisible
    rep = storage.verify(url)
    assert rep.ok and rep.shards == 1 and any("no index entry" in n for n in rep.notes), rep
    with storage.CacheWriter(url, dim=16, dtype="float16", fingerprint=FP) as w:  # the next run
        assert w.committed_ids() == {"done.mp4"}
        assert not late.path.exists() and not half.path.exists()  # cleaned
        # never a name a straggler may hold (a half HDF5 shard never left the local temporary file)
        assert w.allocate_shard().name == ("part-00003.zarr" if fmt == "zarr" else "part-00002.zarr")
    half._backend.close()  # what the crash would have left behind locally
    assert write_shard(url, fmt, {"late.mp4": 5})[1].path.exists()
    assert storage.open_cache(url).video_ids == ["done.mp4", "late.mp4"]


def test_damaged_shard_on_memory_url_costs_its_videos_and_is_quarantined(url):
    good = write_shard(url, "zarr", {"a.mp4": 6})[0]
    write_shard(url, "zarr", {"b.mp4": 6})
    bad = as_path(url) / "shards" / "part-00001.zarr"
    chunk = bad / "features" / "c" / "0" / "0"
    chunk.fs.pipe_file(chunk.path, b"\x00" * len(chunk.read_bytes()))  # damaged in the store
    cache = storage.open_cache(url)
    np.testing.assert_array_equal(cache.features("a.mp4"), good["a.mp4"][0])
    with pytest.raises(storage.CorruptShardError, match=r"part-00001\.zarr.*--repair"):
        cache.features("b.mp4")
    rep = storage.verify(url)
    assert not rep.ok and rep.bad_shards == [bad]
    with storage.CacheWriter(url, dim=16, dtype="float16", fingerprint=FP):
        assert storage.quarantine(url, rep.bad_shards) == {"part-00001.zarr": ["b.mp4"]}
    assert not bad.exists() and (as_path(url) / "quarantine" / "part-00001.zarr" / "zarr.json").exists()
    assert storage.open_cache(url).video_ids == ["a.mp4"] and storage.verify(url).ok


def test_lock_object_refuses_a_second_writer_and_a_dead_holder_is_taken_over(url):
    lock = as_path(url) / storage.cache.LOCK
    with storage.CacheWriter(url, dim=4, dtype="float16", fingerprint=FP):
        me, host = os.getpid(), socket.gethostname()
        # the dask lease: a worker on any machine can check that its driver still holds the lock
        assert storage.lock.held_by(url, me) and lease_ok(as_path(url), me, host)
        assert not lease_ok(as_path(url), me, "another-machine") and not lease_ok(as_path(url), 1, host)
        with pytest.raises(storage.CacheBusy, match=r"pid \d+"):
            storage.CacheWriter(url, dim=4, dtype="float16", fingerprint=FP)
    assert not lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lock.fs.pipe_file(lock.path, f"pid {dead} host {host}".encode())  # left by a killed run here
    storage.CacheWriter(url, dim=4, dtype="float16", fingerprint=FP).close()
    lock.fs.pipe_file(lock.path, b"pid 1 host another-machine")  # cannot be checked from here
    with pytest.raises(storage.CacheBusy, match=r"another-machine.*delete memory://.*/\.lock"):
        storage.CacheWriter(url, dim=4, dtype="float16", fingerprint=FP)


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("rvideos")
    for i, n in enumerate((30, 20)):
        write_video(root / f"v{i}.mp4", index_frames(n, (48, 64)), fps=10)
    return root


@pytest.mark.slow  # four extractions; the fast tier has the storage-level tests above
def test_extract_to_memory_and_file_urls_equals_a_local_path(two_videos, tmp_path, url):
    bb = load_backbone(tiny())  # one model for the four runs (the fast tier)
    local = tmp_path / "local"
    assert run(tiny(), two_videos, local, backbone=bb).ok
    s = run(tiny(format="hdf5"), two_videos, url, backbone=bb)
    assert s.ok and s.done == 2 and storage.verify(url).ok
    assert_same(local, url)
    assert run(tiny(format="hdf5"), two_videos, url, backbone=bb).skipped == 2  # resumed from the URL's index
    furl = f"file://{tmp_path / 'viafile'}"
    assert run(tiny(), two_videos, furl, backbone=bb).ok
    assert_same(local, tmp_path / "viafile")  # file:// is that local folder
    strip = {"provenance"}  # host/device/libraries: the same here, but not what is compared
    assert ({k: {f: v for f, v in e.items() if f not in strip} for k, e in index.load(local).items()}
            == {k: {f: v for f, v in e.items() if f not in strip} for k, e in index.load(furl).items()})
    assert sorted(content(furl)) == ["v0.mp4", "v1.mp4"]


@pytest.mark.slow
def test_cli_accepts_a_file_url(two_videos, tmp_path):
    out = tmp_path / "cli"
    from tests.testing import TINY_CLI

    run_module("extract", "--videos", two_videos, "--out", f"file://{out}", *TINY_CLI)
    assert sorted(storage.open_cache(out).video_ids) == ["v0.mp4", "v1.mp4"]
    assert "ok" in run_module("storage", "verify", f"file://{out}").stdout
