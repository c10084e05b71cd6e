"""Decoder subprocesses: decode videos in a child process so that a crash there (decord can
segfault or abort on damaged input) becomes that video's failure, not the end of the run.

Parent side: `DecoderPool` starts `decoders` children (`python -m extract.decoder`), hands each
one video at a time, and turns what they send into a stream of events for the model loop:

    Frames(index, timestamps, pixels)   a chunk of preprocessed uint8 frames of video `index`
    Done(index, frames, info)           video `index` is complete
    Failed(index, reason)               video `index` failed; drop any of its frames seen so far

The children talk over their stdout with pickle (our own trusted child; nothing from outside is
unpickled). Their stdout is moved off fd 1 so that nothing a C library prints can corrupt it.
Backpressure: the event queue is bounded, a child blocks in write() while the model is busy.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PKG_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass
class Frames:
    index: int
    timestamps: object  # np.ndarray float32 [k]
    pixels: object  # np.ndarray uint8 [k, h, w, 3]


@dataclass
class Done:
    index: int
    frames: int
    info: dict = field(default_factory=dict)


@dataclass
class Failed:
    index: int
    reason: str


# ---------------------------------------------------------------------------------------------
# child


def _child_main() -> None:
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)  # anything printed to stdout by C code goes to stderr instead
    sys.stdout = sys.stderr
    nice = int(os.environ.get("EXTRACT_DECODER_NICE", "0") or 0)
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    import av  # noqa: F401  (import now: the parent may start us early, while it loads the model)
    import decord  # noqa: F401

    from extract.decode import DecodeError, decode_video

    # fault injection for tests: crash (SIGSEGV) on files with this name; slow down every chunk
    crash_on = os.environ.get("EXTRACT_TEST_CRASH_ON")
    delay = float(os.environ.get("EXTRACT_TEST_DECODE_DELAY", "0") or 0)
    inp = sys.stdin.buffer
    while True:
        try:
            job = pickle.load(inp)
        except EOFError:
            return
        if crash_on and os.path.basename(job["path"]) == crash_on:
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            for ev in decode_video(job["path"], job["policy"], job["geometry"], fault_tol=job["fault_tol"],
                                   backend=job.get("backend", "auto")):
                if delay:
                    time.sleep(delay)
                pickle.dump(ev, out, protocol=pickle.HIGHEST_PROTOCOL)
                if ev[0] != "frames":
                    out.flush()
            out.flush()
        except DecodeError as e:
            pickle.dump(("error", str(e)), out)
            out.flush()
        except BrokenPipeError:
            return
        except Exception as e:  # a bug or an unexpected library error: report it, keep serving
            pickle.dump(("error", f"{job['path']}: unexpected decoder error ({type(e).__name__}: {e})"), out)
            out.flush()


# ---------------------------------------------------------------------------------------------
# parent


def _signal_name(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def spawn_decoder(nice: int = 0) -> subprocess.Popen:
    """Start one decoder child; it imports its libraries at once, then waits for jobs on stdin."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (PKG_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
    env["EXTRACT_DECODER_NICE"] = str(nice)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.Popen(
        [sys.executable, "-m", "extract.decoder"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, bufsize=1 << 16,
    )


def kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


class _Slot:
    """One child process and the thread that feeds it and reads from it."""

    def __init__(self, pool: DecoderPool, n: int):
        self.pool, self.n = pool, n
        self.proc: subprocess.Popen | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.waiting_since: float | None = None
        self.timed_out = False
        self.thread = threading.Thread(target=self._run, name=f"decoder-{n}", daemon=True)

    def _start(self, proc: subprocess.Popen | None = None) -> None:
        self.proc = proc or spawn_decoder(self.pool.nice)
        self.stderr_tail.clear()
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()

    def _drain(self, proc: subprocess.Popen) -> None:
        for line in iter(proc.stderr.readline, b""):
            text = line.decode(errors="replace").strip()
            if text:
                self.stderr_tail.append(text)

    def _crash_reason(self, path: str) -> str:
        proc = self.proc
        try:
            rc = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        time.sleep(0.05)  # let the stderr drain catch the last lines
        if self.timed_out:
            why = f"decoder made no progress for {self.pool.timeout:.0f} s and was killed"
        else:
            why = f"decoder crashed ({_signal_name(rc)})"
        tail = [t for t in self.stderr_tail if t][-2:]
        detail = f"; last decoder output: {' | '.join(tail)}"[:400] if tail else ""
        return f"{path}: {why} while decoding this file{detail}"

    def _stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def _run(self) -> None:
        pool = self.pool
        try:
            while not pool.closed:
                job = pool.next_job()
                if job is None:
                    break
                index, path = job
                self._one(index, path)
        except BaseException as e:  # never leave the consumer waiting forever
            pool.put(Failed(-1, f"decoder thread error: {type(e).__name__}: {e}"))
        finally:
            self._stop()
            pool.put(None)

    def _one(self, index: int, path: str) -> None:
        pool = self.pool
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.timed_out = False
        req = {"path": path, "policy": pool.policy, "geometry": pool.geometry,
               "fault_tol": pool.fault_tol, "backend": pool.backend}
        try:
            pickle.dump(req, self.proc.stdin)
            self.proc.stdin.flush()
        except OSError:
            pool.put(Failed(index, self._crash_reason(path)))
            self.proc = None
            return
        info: dict = {}
        while True:
            self.waiting_since = time.monotonic()
            try:
                msg = pickle.load(self.proc.stdout)
            except Exception:
                self.waiting_since = None
                pool.put(Failed(index, self._crash_reason(path)))
                self.proc = None
                return
            self.waiting_since = None
            kind = msg[0]
            if kind == "frames":
                pool.put(Frames(index, msg[1], msg[2]))
            elif kind == "start":
                info = msg[1]
            elif kind == "done":
                info.update(msg[1])
                pool.put(Done(index, int(msg[1]["frames"]), info))
                return
            elif kind == "error":
                pool.put(Failed(index, msg[1]))
                return

    def check_timeout(self, now: float) -> None:
        since, proc = self.waiting_since, self.proc
        if since is not None and proc is not None and now - since > self.pool.timeout:
            self.timed_out = True
            proc.kill()


class DecoderPool:
    """Decode `jobs` [(index, path)] in `decoders` subprocesses; iterate to get events in arrival order."""

    def __init__(self, jobs: list[tuple[int, str]], *, policy: dict, geometry: dict, decoders: int = 1,
                 fault_tol: float = 0.05, timeout: float = 600.0, backend: str = "auto", nice: int = 0,
                 max_queue: int = 8, procs: list[subprocess.Popen] | None = None):
        self.jobs = collections.deque(jobs)
        self.policy, self.geometry = policy, geometry
        self.fault_tol, self.timeout, self.backend, self.nice = fault_tol, timeout, backend, nice
        self._lock = threading.Lock()
        self._q: queue.Queue = queue.Queue(maxsize=max_queue)
        self.closed = False
        n = max(1, min(decoders, len(jobs))) if jobs else 0
        self.slots = [_Slot(self, i) for i in range(n)]
        spare = list(procs or [])
        for s in self.slots:
            if spare:  # children started earlier (while the model loaded): no start-up wait
                s._start(spare.pop(0))
            s.thread.start()
        kill_all(spare)

    def next_job(self) -> tuple[int, str] | None:
        with self._lock:
            return self.jobs.popleft() if self.jobs else None

    def put(self, ev) -> None:
        while True:
            try:
                self._q.put(ev, timeout=0.5)
                return
            except queue.Full:
                if self.closed:
                    return

    def __iter__(self):
        running = len(self.slots)
        last_check = time.monotonic()
        while running:
            try:
                ev = self._q.get(timeout=1.0)
            except queue.Empty:
                ev = False
            now = time.monotonic()
            if now - last_check > 1.0:
                last_check = now
                for s in self.slots:
                    s.check_timeout(now)
            if ev is False:
                continue
            if ev is None:
                running -= 1
                continue
            yield ev

    def close(self) -> None:
        """Stop early (e.g. on an error in the consumer): kill children, let threads end."""
        self.closed = True
        with self._lock:
            self.jobs.clear()
        for s in self.slots:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.kill()
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break


if __name__ == "__main__":
    _child_main()
