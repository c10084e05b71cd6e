"""The dask path: tasks a scheduler can unpickle without this project, and the lease on the cache lock."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from dask._task_spec import Task
from distributed.protocol.pickle import dumps

from extract import run
from extract.decoder import PKG_ROOT
from extract.distributed import by_value, lease_ok, on_worker
from extract.synth import write_video
from tests.testing import REPO, assert_same, index_frames, tiny

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
    assert lease_ok(root, driver.pid + 1, "another-host")  # another host's processes cannot be seen
    driver.stdin.close()
    driver.wait(timeout=60)
    assert not lease_ok(root, driver.pid, host)  # released
    killed = holder()
    assert lease_ok(root, killed.pid, host)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert not lease_ok(root, killed.pid, host)  # its pid is still in .lock, but nobody holds the lock


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
