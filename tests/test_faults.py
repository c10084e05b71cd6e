"""Fault injection (issue 5): crashes at every commit stage, hostile inputs, two writers at once,
disk full, untrusted files. Real videos, real shards, real SIGKILLs; the tiny random-init ViT of
tests/test_extract_cache.py. The long random-kill soak is bench/soak.py."""

import errno
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import storage
from extract import ExtractError, run
from extract.backbone import load_backbone
from tests import testing
from tests.testing import REPO, TINY_CLI, assert_same, run_module, tiny

N_VIDEOS = 4


@pytest.fixture(scope="module")
def vids(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fvideos")
    for i in range(N_VIDEOS):
        testing.good(root / f"v{i}.mp4", n=20 + 5 * i, fps=10, seed=i)
    return root


@pytest.fixture(scope="module")
def ref(vids, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fref") / "cache"
    s = run(tiny(videos_per_shard=1), vids, out)
    assert s.ok and s.done == N_VIDEOS
    return out


def faulty(fault: str, vids: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """The extract CLI with FAULT injected (see tests/faultinject.py)."""
    return run_module("tests.faultinject", "--videos", vids, "--out", out, *TINY_CLI,
                      "--videos-per-shard", "1", *extra, check=False, env={"FAULT": fault})


def assert_complete(ref: Path, out: Path) -> None:
    """Same ids, same features bit for bit, no duplicate, nothing missing, verify clean, no debris."""
    rep = storage.verify(out)
    assert rep.ok, rep.problems
    ids = [v for p in storage.shard_paths(out) for v in storage.Shard(p).video_ids]
    assert len(ids) == len(set(ids)), "a video is in two shards"
    assert_same(ref, out)
    assert not list((out / "shards").glob("*.tmp-*"))


# ---------------------------------------------------------------------------------------------
# 1. crash at any moment (the deterministic part: every stage of a shard commit)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_sigkill_at_every_commit_stage_then_resume(vids, ref, tmp_path, fmt):
    out = tmp_path / "cache"
    committed = []
    # one cache, killed four times in a row at successive commits, each at another stage
    for k, stage in ((1, "begin"), (2, "fsync"), (1, "renamed"), (2, "indexed")):
        proc = faulty(f"kill:{k}:{stage}", vids, out, "--format", fmt)
        assert proc.returncode == -9, (stage, proc.stderr)
        n = len(storage.shard_paths(out))
        committed.append(n)
        if stage in ("begin", "fsync"):
            assert list((out / "shards").glob("*.tmp-*")), "the kill should leave a half-written shard"
        if stage == "renamed":  # a whole shard, but no index entry: not committed
            assert len(list((out / "shards").glob("part-*"))) == n + 1
        rep = storage.verify(out)  # what a reader sees right after the crash is consistent
        assert rep.ok, rep.problems
        assert len(storage.open_cache(out)) == n
    # begin/fsync/renamed: that commit is lost; indexed: it survives (its entry is in place)
    assert committed == [0, 1, 1, 3], committed
    s = run(tiny(videos_per_shard=1, format=fmt), vids, out)
    assert s.ok and s.skipped == 3 and s.done == N_VIDEOS - 3
    assert_complete(ref, out)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_sigkill_before_the_entry_on_an_object_store_then_resume(vids, ref, tmp_path, fmt):
    """The object-store protocol (`local://`: objects at their final name, then the entry as one
    write), killed with a shard's data complete: invisible, cleaned by the next run, which completes."""
    url = f"local://{tmp_path / 'cache'}"
    proc = faulty("kill:2:entry", vids, url, "--format", fmt)
    assert proc.returncode == -9, proc.stderr
    orphan = tmp_path / "cache" / "shards" / f"part-00001{'.zarr' if fmt == 'zarr' else '.h5'}"
    assert orphan.exists() and not list(orphan.parent.glob("*.tmp-*"))  # written in place, no entry
    assert (tmp_path / "cache" / ".lock").exists()  # the killed holder's lock object
    assert len(storage.open_cache(url)) == 1
    rep = storage.verify(url)
    assert rep.ok and any("no index entry" in n for n in rep.notes), rep
    s = run(tiny(videos_per_shard=1, format=fmt), vids, url)  # takes over the dead holder's lock
    assert s.ok and s.skipped == 1 and s.done == N_VIDEOS - 1
    assert storage.verify(url).ok and not orphan.exists() and not (tmp_path / "cache" / ".lock").exists()
    assert_same(ref, url)


# ---------------------------------------------------------------------------------------------
# 2. hostile inputs


@pytest.mark.slow
def test_hostile_inputs_fail_alone_with_reasons(tmp_path):
    root = tmp_path / "videos"
    ok, bad = testing.make_all(root)
    out = tmp_path / "cache"
    proc = run_module("extract", "--videos", root, "--out", out, *TINY_CLI, "--videos-per-shard", "4",
                      check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr
    fails = storage.read_failures(out)
    assert set(fails) == bad, proc.stderr
    c = storage.open_cache(out)
    assert set(c.video_ids) == ok
    assert storage.verify(out).ok
    why = {k: v["reason"] for k, v in fails.items()}
    for vid, reason in why.items():
        assert vid.split("/")[-1] in reason, reason
    assert "empty file" in why["empty.mp4"]
    assert "directory" in why["dir.mp4"]
    assert "no video stream (found: audio)" in why["audio-only.mp4"]
    assert "symbolic links" in why["loop1.mp4"]
    assert "not a regular file" in why["fifo.mp4"]
    for vid in ("random.mp4", "text.mp4", "truncated.mp4"):
        assert "not a readable video" in why[vid]
    # the good ones: right frames and times
    assert len(c.timestamps("one-frame.mp4")) == 1 and len(c.timestamps("large.mp4")) == 1
    np.testing.assert_allclose(c.timestamps("good.mp4"), [0, 1, 2], atol=1e-3)
    vfr = c.timestamps("vfr.mp4")  # frames every 40 / 200 ms: the frame nearest each second
    assert len(vfr) == 4 and np.all(np.abs(vfr - np.arange(4)) <= 0.12), vfr
    assert not np.array_equal(c.features("a/same.mp4"), c.features("b/same.mp4"))
    np.testing.assert_array_equal(c.features("latin1-\\xe9\\xff.mp4"), c.features("good.mp4"))
    # a second run retries only the failures and adds nothing twice
    again = run_module("extract", "--videos", root, "--out", out, *TINY_CLI, check=False, timeout=300)
    assert again.returncode == 1 and f"{len(ok)} skipped" in again.stdout
    assert storage.verify(out).ok


@pytest.mark.slow
def test_damaged_frames_are_contained_and_reported(tmp_path):
    root = tmp_path / "videos"
    src = testing.good(root / "good.mp4", n=60)
    for s in range(3):
        testing.damaged(root / f"damaged{s}.mp4", src, seed=s)
    testing.good(root / "z-after.mp4", n=20, seed=5)
    out = tmp_path / "cache"
    proc = run_module("extract", "--videos", root, "--out", out, *TINY_CLI, "--every", "1",
                      check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr
    c = storage.open_cache(out)
    assert c.video_ids == ["good.mp4", "z-after.mp4"]  # the good videos around them, whole
    assert len(c.timestamps("good.mp4")) == 60 and len(c.timestamps("z-after.mp4")) == 20
    fails = storage.read_failures(out)
    damaged = [f"damaged{s}.mp4" for s in range(3)]
    assert sorted(fails) == damaged
    for vid in damaged:  # decord stops at the damage (fault_tol): the video fails, with the reason
        why = fails[vid]["reason"]
        assert re.search(rf"{re.escape(vid)}: decoding frames \d+-\d+ of 60 failed \(DECORDError", why), why
        assert f"failed: {vid}: " in proc.stderr
    assert storage.verify(out).ok


def test_decoder_that_undercounts_frames_falls_back_to_pyav(tmp_path, monkeypatch):
    import decord

    from extract.decode import decode_video

    path = testing.good(tmp_path / "v.mp4", n=40, fps=10)
    real = decord.VideoReader

    class Liar(real):
        def __len__(self):
            return 10  # the container holds 40

        def get_frame_timestamp(self, idx):
            return real.get_frame_timestamp(self, np.asarray(idx)[:10])

    monkeypatch.setattr(decord, "VideoReader", Liar)
    geo = {"mode": "short_side", "size": 36, "crop": (32, 32), "interp": "bicubic"}
    evs = list(decode_video(str(path), {"policy": "every", "every": 1, "max_frames": None}, geo))
    start, done = evs[0][1], evs[-1][1]
    assert start["backend"] == "pyav" and start["total_frames"] == 40
    assert any("decord reports 10 frames" in n for n in start["notes"])
    assert done["frames"] == 40 == sum(len(e[1]) for e in evs if e[0] == "frames")


def test_unreadable_file_is_reported(tmp_path, monkeypatch):
    """chmod 000 does not stop root (and this suite runs as root in CI). Not root: a real run over a
    chmod-000 file. Root: the same file is refused by the decoder's own check, with the open()
    failing as the kernel would fail it for anyone else (EACCES injected)."""
    import builtins

    from extract.decode import DecodeError, decode_video

    vids = tmp_path / "videos"
    testing.good(vids / "good.mp4", n=20)
    secret = testing.good(vids / "secret.mp4", n=20)
    os.chmod(secret, 0)
    if os.geteuid() != 0:
        out = tmp_path / "cache"
        proc = run_module("extract", "--videos", vids, "--out", out, *TINY_CLI, check=False)
        assert proc.returncode == 1, proc.stderr
        fails = storage.read_failures(out)
        assert set(fails) == {"secret.mp4"} and "Permission denied" in fails["secret.mp4"]["reason"]
        assert storage.open_cache(out).video_ids == ["good.mp4"]
        return
    real_open = builtins.open

    def deny(path, *a, **kw):
        if os.fspath(path) == str(secret):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *a, **kw)

    monkeypatch.setattr(builtins, "open", deny)
    geo = {"mode": "short_side", "size": 36, "crop": (32, 32), "interp": "bicubic"}
    with pytest.raises(DecodeError, match=r"cannot read .*secret.mp4: Permission denied"):
        list(decode_video(str(secret), {"policy": "every", "every": 1, "max_frames": None}, geo))
    monkeypatch.setattr(builtins, "open", real_open)
    assert list(decode_video(str(vids / "good.mp4"), {"policy": "every", "every": 5, "max_frames": None},
                             geo))[-1][0] == "done"


# ---------------------------------------------------------------------------------------------
# 3. concurrency


@pytest.mark.slow
def test_two_writers_at_once_one_stops_clearly(vids, ref, tmp_path):
    out = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "EXTRACT_TEST_DECODE_DELAY": "0.2"}
    cmd = [sys.executable, "-m", "extract", "--videos", str(vids), "--out", str(out), *TINY_CLI,
           "--videos-per-shard", "1"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # started together: both load the model, then race for the lock
    # The winner is paused (it keeps the lock) until the loser has given up: on a loaded machine
    # the loser's start-up may otherwise outlast the winner's whole run, and both would succeed.
    winner = _lock_holder(out, procs)
    loser = procs[1 - procs.index(winner)]
    winner.send_signal(signal.SIGSTOP)
    try:
        _, loser_err = loser.communicate(timeout=300)
    finally:
        winner.send_signal(signal.SIGCONT)
    winner_out, winner_err = winner.communicate(timeout=300)
    assert (winner.returncode, loser.returncode) == (0, 2), (winner_err, loser_err)
    # the loser names the winner, even if it asked in the moment between the winner's flock and
    # the winner writing its pid into .lock (see test_storage.py)
    assert f"is being written by pid {winner.pid};" in loser_err and "resumes" in loser_err, loser_err
    assert f"{N_VIDEOS} done" in winner_out
    assert_complete(ref, out)
    # a writer in this process is refused too while the lock is held by another process
    out = tmp_path / "cache2"
    cmd[cmd.index("--out") + 1] = str(out)
    holder = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _lock_holder(out, [holder]) is holder
        holder.send_signal(signal.SIGSTOP)
        with pytest.raises(storage.CacheBusy, match=f"pid {holder.pid};"):
            storage.CacheWriter(out, dim=192, dtype="float16", fingerprint={})
    finally:
        holder.send_signal(signal.SIGCONT)
        assert holder.wait(timeout=300) == 0


def _lock_holder(cache: Path, procs: list[subprocess.Popen]) -> subprocess.Popen:
    """The process among `procs` whose pid appears in cache/.lock (its holder writes it on taking it)."""
    by_pid = {p.pid: p for p in procs}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        m = re.fullmatch(rb"pid (\d+) host \S+", _read(cache / ".lock").strip())
        if m and int(m[1]) in by_pid:
            return by_pid[int(m[1])]
        time.sleep(0.01)
    raise AssertionError(f"no process took the lock of {cache}: {[p.poll() for p in procs]}")


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except OSError:
        return b""


# ---------------------------------------------------------------------------------------------
# 5. disk full / write errors


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["enospc:2", "enospc-append", "enospc-failures"])
def test_disk_full_stops_clearly_and_resumes(vids, tmp_path, fault):
    src = tmp_path / "videos"
    src.mkdir()
    for p in vids.iterdir():
        os.symlink(p, src / p.name)
    (src / "empty.mp4").write_bytes(b"")  # a failure to record (first in id order)
    out = tmp_path / "cache"
    proc = faulty(fault, src, out, "--max-frames", "3")
    assert proc.returncode == 2, proc.stderr
    assert "No space left on device" in proc.stderr
    assert "run the same command again to resume" in proc.stderr and "Traceback" not in proc.stderr
    rep = storage.verify(out)
    assert rep.ok, rep.problems
    n = len(storage.open_cache(out))
    assert n == {"enospc:2": 1, "enospc-append": 0, "enospc-failures": 0}[fault]
    s = run(tiny(videos_per_shard=1, max_frames=3), src, out)
    assert s.skipped == n and s.done == N_VIDEOS - n and set(s.failures) == {"empty.mp4"}
    assert not list((out / "shards").glob("*.tmp-*")) and storage.verify(out).ok
    assert len(storage.open_cache(out)) == N_VIDEOS


# ---------------------------------------------------------------------------------------------
# 6. untrusted files


def test_pickled_weights_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Evil()}, f)
    torch.save({"state_dict": {"x": Evil()}}, tmp_path / "evil2.pth")
    for p in (path, tmp_path / "evil2.pth"):
        with pytest.raises((ExtractError, pickle.UnpicklingError, RuntimeError)):
            load_backbone(tiny(weights=str(p)))
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_nothing_in_the_cache_is_pickled(vids, tmp_path, fmt):
    out = tmp_path / "cache"
    assert run(tiny(videos_per_shard=2, format=fmt), vids, out).ok
    for p in out.rglob("*"):
        if p.is_file():
            head = p.read_bytes()[:2]
            assert head[:1] != b"\x80", f"{p} looks like a pickle"
    if fmt == "zarr":
        for meta in out.rglob("zarr.json"):
            text = meta.read_text()
            assert "pickle" not in text.lower() and '"object"' not in text, meta
    else:
        import h5py

        for shard in storage.shard_paths(out):
            with h5py.File(shard, "r") as f:
                for name, ds in f.items():
                    kind = ds.dtype.kind
                    assert kind in "fiu" or (kind == "O" and h5py.check_string_dtype(ds.dtype)), name
    # plain zarr/h5py read it back without any of our code and without pickle
    assert json.loads((out / "cache.json").read_text())["format_version"] == 2
    for entry in [out / "index.json", *(out / "index").iterdir()]:
        assert isinstance(json.loads(entry.read_text()), dict), entry


@pytest.mark.parametrize("bad", ["../escape.mp4", "/abs.mp4", "a/../../b.mp4", "x\x00.mp4", ""])
def test_ids_that_escape_the_cache_are_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="video id"):
        storage.check_video_id(bad)
    w = storage.ShardWriter(tmp_path / "part-00000.zarr", dim=4)
    with pytest.raises(ValueError, match="video id"):
        w.add(bad, np.zeros((1, 4)), np.zeros(1))
    w.abort()
    with storage.CacheWriter(tmp_path / "c", dim=4, dtype="float16", fingerprint={}) as cw, \
            pytest.raises(ValueError, match="video id"):
        cw.record_failure(bad, "p", "r")
    assert not (tmp_path / "escape.mp4").exists()


# ---------------------------------------------------------------------------------------------
# 4. corruption at rest


def _flip(path: Path, at: float = 0.5, n: int = 8) -> None:
    data = bytearray(path.read_bytes())
    i = int(len(data) * at)
    for k in range(i, min(len(data), i + n)):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


def _chunk_files(shard: Path, array: str) -> list[Path]:
    return sorted(p for p in (shard / array).rglob("*") if p.is_file() and p.name != "zarr.json")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["flip-features", "truncate-features", "flip-h5", "truncate-h5"])
def test_damaged_shard_is_named_and_repair_reextracts_its_videos(vids, ref, tmp_path, damage):
    fmt = "hdf5" if damage.endswith("h5") else "zarr"
    out = tmp_path / "cache"
    assert run(tiny(videos_per_shard=2, format=fmt), vids, out).ok
    shards = storage.shard_paths(out)
    victim = shards[1]
    held = storage.Shard(victim).video_ids
    before = {p.name: p.stat().st_mtime_ns for p in shards if p != victim}
    if damage == "flip-features":
        _flip(_chunk_files(victim, "features")[0], at=0.3)
    elif damage == "truncate-features":
        f = _chunk_files(victim, "features")[0]
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "flip-h5":
        import h5py

        with h5py.File(victim, "r") as f:  # where the features lie in the file (small: contiguous)
            ds = f["features"]
            at = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
        data = bytearray(victim.read_bytes())
        for k in range(at + 16, at + 48):
            data[k] ^= 0xFF
        victim.write_bytes(bytes(data))
    else:
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    # verify names it
    v = run_module("storage", "verify", out, check=False)
    assert v.returncode == 1 and f"BAD: {victim}" in v.stdout, v.stdout
    # a reader raises a clear error, never returns garbage
    with pytest.raises(storage.CorruptShardError, match=victim.name):
        c = storage.open_cache(out)
        for vid in held:
            c.features(vid)
    # --repair: moved aside, exactly its videos extracted again, the rest untouched
    r = run_module("extract", "--videos", vids, "--out", out, *TINY_CLI, "--format", fmt, "--repair",
                   check=False)
    assert r.returncode == 0, r.stderr
    assert f"repair: {victim.name} was damaged" in r.stderr
    assert f"{len(held)} done, {N_VIDEOS - len(held)} skipped" in r.stdout
    assert (out / "quarantine" / victim.name).exists()
    assert {p.name: p.stat().st_mtime_ns for p in storage.shard_paths(out) if p.name in before} == before
    assert_complete(ref, out)


@pytest.mark.slow
def test_damaged_shard_without_repair_says_what_to_do(vids, tmp_path):
    out = tmp_path / "cache"
    assert run(tiny(videos_per_shard=2), vids, out).ok
    victim, other = storage.shard_paths(out)[:2]
    (victim / "offsets" / "zarr.json").write_text("{ not json")  # its own metadata: verify reads it
    f = _chunk_files(victim, "features")[0]
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    c = storage.open_cache(out)
    for vid in storage.Shard(other).video_ids:  # the other shards are readable
        assert c.features(vid).shape[0] > 0
    for vid in c.entries[0]["ids"]:
        with pytest.raises(storage.CorruptShardError, match=rf"{victim.name}.*--repair"):
            c.features(vid)
    info = run_module("storage", "info", out, check=False)
    assert info.returncode == 0 and f"{N_VIDEOS} videos" in info.stdout and "Traceback" not in info.stderr
    v = run_module("storage", "verify", out, check=False)
    assert v.returncode == 1 and f"BAD: {victim}" in v.stdout and "Traceback" not in v.stderr


@pytest.mark.slow
def test_random_kill_soak_small():
    """bench/soak.py at CI size: random-time kills and one kill inside a commit, then resume."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "soak.py"), "--trials", "3", "--videos", "3",
                           "--seed", "1"], capture_output=True, text=True, timeout=600)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0 and res["ok"], res
    assert len(res["log"]) == 3 and all(t["rc"] in (-9, 0) for t in res["log"])  # killed, or done first
    assert any(t["kill"].startswith("kill:") for t in res["log"])
