"""The dask path: tasks a scheduler can unpickle without this project, the lease on the cache lock,
task sizes, and a driver that checks what workers report (a worker without the cache's file system)."""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from dask._task_spec import Task
from distributed.protocol.pickle import dumps

import extract.distributed
import storage
from extract import run
from extract.config import ExtractError
from extract.decoder import PKG_ROOT
from extract.discover import groups_of
from extract.distributed import by_value, lease_ok, on_worker, shard_task, task_size
from extract.synth import write_video
from tests.test_console import clean_console  # noqa: F401 - a fixture
from tests.testing import REPO, TINY_CLI, assert_same, index_frames, tiny

# Imported first in a subprocess: from then on, nothing of this project can be imported there.
NO_PROJECT = """
import sys

class NoProject:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"extract", "storage", "temporal", "pipeline", "tests"}:
            raise ImportError(f"no module named {name!r}: this project is not installed here")

sys.meta_path.insert(0, NoProject())
"""


def unpickle_without_project(payload: bytes, tmp_path) -> subprocess.CompletedProcess:
    code = NO_PROJECT + (
        "import json\n"
        "from distributed.protocol.pickle import loads\n"
        "task = loads(sys.stdin.buffer.read())\n"
        "print(json.dumps([task.func.__name__, task.args[0], sorted(task.args[1])]))\n"
    )
    return subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, cwd=tmp_path,
                          timeout=120)


def test_a_task_unpickles_where_the_project_cannot_be_imported(tmp_path):
    """The scheduler unpickles every task (dask.distributed serializes the graph with pickle, falling
    back to cloudpickle): the task must not name a function of this project by reference."""
    kw = {"cfg_dict": tiny().to_dict(), "items": [("/v/a.mp4", "a.mp4")], "shard_path": "/c/shards/x",
          "driver_pid": 1, "driver_host": "h", "share": 1}
    proc = unpickle_without_project(dumps(Task("k", by_value(on_worker), PKG_ROOT, kw)), tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads(proc.stdout) == ["on_worker", PKG_ROOT, sorted(kw)]
    # the same function by reference is what the scheduler could not load
    proc = unpickle_without_project(dumps(Task("k", on_worker, PKG_ROOT, kw)), tmp_path)
    assert proc.returncode != 0 and b"this project is not installed here" in proc.stderr


def test_lease_follows_the_driver_holding_the_cache_lock(tmp_path):
    host = socket.gethostname()
    root = tmp_path / "cache"
    hold = ("import sys, storage\n"
            "w = storage.CacheWriter(sys.argv[1], dim=4, dtype='float16', fingerprint={})\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n"
            "w.close()\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def holder() -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", hold, str(root)], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "locked"
        return p

    driver = holder()
    assert lease_ok(root, driver.pid, host)
    assert not lease_ok(root, os.getpid(), host)  # not the process that holds it
    assert not lease_ok(root, driver.pid, "another-host")  # .lock names this host as the holder's
    driver.stdin.close()
    driver.wait(timeout=60)
    assert not lease_ok(root, driver.pid, host)  # released
    killed = holder()
    assert lease_ok(root, killed.pid, host)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert not lease_ok(root, killed.pid, host)  # its pid is still in .lock, but nobody holds the lock


def test_the_lease_of_a_driver_on_another_host_is_its_record_in_the_lock_file(tmp_path):
    """Another host's flock and processes cannot be seen: the lock file must name that very driver."""
    root = tmp_path / "cache"
    root.mkdir()
    assert not lease_ok(root, 123, "far-host")  # no lock file at all (e.g. not the driver's file system)
    (root / ".lock").write_text("pid 123 host far-host")
    assert lease_ok(root, 123, "far-host")
    assert not lease_ok(root, 124, "far-host") and not lease_ok(root, 123, "other-host")
    (root / ".lock").write_text("pid 77 host far-host")  # another run took the lock since
    assert not lease_ok(root, 123, "far-host")
    (root / ".lock").write_text("")  # released
    assert not lease_ok(root, 123, "far-host")


def test_tasks_are_smaller_than_a_shard_when_workers_outnumber_the_shards():
    assert len(groups_of(list(range(10)), task_size(10, 16, 4))) >= 4
    assert task_size(10, 16, 4) == 3 and task_size(100, 16, 4) == 16 and task_size(3, 32, 8) == 1
    assert task_size(0, 16, 4) == 1 and task_size(5, 2, 0) == 2


def test_a_worker_that_cannot_see_the_cache_says_so_without_extracting(tmp_path):
    shard = tmp_path / "elsewhere" / "shards" / "part-00000.zarr"
    res = shard_task({"bogus": "config never read"}, [("/v/a.mp4", "a.mp4")], str(shard), 1, "h", 1)
    assert set(res) == {"unshared", "host"} and res["host"] == socket.gethostname()
    assert str(tmp_path / "elsewhere" / "cache.json") in res["unshared"]
    assert socket.gethostname() in res["unshared"]


@pytest.mark.slow
def test_a_scheduler_without_the_project_runs_the_extraction(tmp_path):
    """`--scheduler ADDR`: a real `dask scheduler` that cannot import this project, one real worker."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, n in enumerate((20, 30, 12)):
        write_video(videos / f"v{i}.mp4", index_frames(n, (48, 64)), fps=10)
    ref = tmp_path / "ref"
    assert run(tiny(), videos, ref).ok
    sched_file = tmp_path / "scheduler.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    scheduler = subprocess.Popen(
        [sys.executable, "-c", NO_PROJECT + "from distributed.cli.dask_scheduler import main\nmain()\n",
         "--scheduler-file", str(sched_file), "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    worker = None
    try:
        deadline = time.monotonic() + 120
        while not sched_file.exists() and time.monotonic() < deadline and scheduler.poll() is None:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
             "--no-dashboard"], env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out = tmp_path / "cache"
        s = run(tiny(scheduler=address), videos, out)
        assert s.ok and s.done == 3, s
        assert_same(ref, out)
    finally:
        for p in (worker, scheduler):
            if p is not None:
                p.terminate()
                p.wait(timeout=60)
    assert "this project is not installed here" not in scheduler.stderr.read()


def _videos(tmp_path, lengths=(20, 30, 12)):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i, n in enumerate(lengths):
        write_video(videos / f"v{i}.mp4", index_frames(n, (48, 64)), fps=10)
    return videos


@pytest.mark.slow
def test_few_videos_are_spread_over_the_workers_and_the_dashboard_is_reported(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="extract")
    videos = _videos(tmp_path)
    out = tmp_path / "cache"
    s = run(tiny(workers=2, videos_per_shard=32), videos, out)
    assert s.ok and s.done == 3, s
    assert len(s.shards) == len(storage.shard_paths(out)) == 2  # 3 videos, 2 workers: 2 + 1, not one task
    assert storage.verify(out).ok
    err = caplog.text
    try:
        import bokeh  # noqa: F401

        assert "dashboard at http" in err, err
    except ImportError:
        assert "no dashboard (it needs bokeh" in err, err


def _worker_disk(monkeypatch, tmp_path, harm):
    """Let `harm(shard path)` act on each shard a worker reports, before the driver looks at it."""
    real = extract.distributed.shard_results

    def results(plan):
        for g, res in real(plan):
            if res.get("committed"):
                harm(plan.shards[g])
            yield g, res

    monkeypatch.setattr(extract.distributed, "shard_results", results)


@pytest.mark.slow
@pytest.mark.usefixtures("clean_console")  # main() sets up logging: restored after
def test_a_shard_the_driver_cannot_find_fails_the_run_naming_the_worker_and_the_path(
        tmp_path, monkeypatch, capfd):
    """A worker with its own disk at the cache's path: its shard and index entry are not where the
    driver looks. Simulated by moving them away as the worker reports them."""
    videos = _videos(tmp_path)
    out = tmp_path / "cache"

    def elsewhere(shard):
        cache = shard.parent.parent
        away = tmp_path / "worker-disk" / cache.name
        away.mkdir(parents=True, exist_ok=True)
        os.replace(shard, away / shard.name)
        entry = storage.index.entry_path(cache, shard.name)
        os.replace(entry, away / entry.name)

    _worker_disk(monkeypatch, tmp_path, elsewhere)
    with pytest.raises(ExtractError) as e:
        run(tiny(workers=1), videos, out)
    msg = str(e.value)
    assert "do not share the cache's file system" in msg and socket.gethostname() in msg, msg
    assert str(out / "shards" / "part-00000.zarr") in msg and "--out" in msg, msg
    # part-00000 (v0, v1) is not counted; part-00001 (v2) may have been committed before the stop
    assert set(storage.open_cache(out).video_ids) <= {"v2.mp4"}
    # the command line exits non-zero with that message
    from extract.__main__ import main

    args = ["--videos", str(videos), "--out", str(tmp_path / "cli"), "--workers", "1", *TINY_CLI]
    capfd.readouterr()
    assert main(args) == 2
    assert "do not share the cache's file system" in capfd.readouterr().err


@pytest.mark.slow
def test_a_damaged_shard_a_worker_reports_is_not_counted(tmp_path, monkeypatch):
    videos = _videos(tmp_path)
    out = tmp_path / "cache"

    def damage(shard):
        for chunk in (shard / "features" / "c").rglob("*"):
            if chunk.is_file():
                chunk.write_bytes(b"\0" * chunk.stat().st_size)

    _worker_disk(monkeypatch, tmp_path, damage)
    s = run(tiny(workers=1), videos, out)
    assert not s.ok and s.done == 0 and s.failed == 3, s
    assert all("fails verification" in r and "quarantine" in r for r in s.failures.values()), s.failures
    assert storage.open_cache(out).video_ids == [] and (out / "quarantine" / "part-00000.zarr").exists()
    monkeypatch.undo()
    s = run(tiny(workers=1), videos, out)  # the next run extracts them again
    assert s.ok and s.done == 3 and storage.verify(out).ok
