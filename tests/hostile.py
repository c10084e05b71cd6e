"""A factory of hostile inputs for the fault-injection tests: each entry is a real file (or
directory, or symlink) made here, never taken from outside the test's temporary folder."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipeline.synth import index_frames, write_video

SIZE = (48, 64)


def frames(n: int, size=SIZE, seed: int = 0):
    """Textured frames (so that damaged bytes really damage the picture), brightness = index."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, (*size, 3), dtype=np.uint8)
    for f in index_frames(n, size):
        yield f + noise


def good(path: Path, n: int = 30, fps: float = 10, size=SIZE, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames(n, size, seed), fps=fps)
    return path


def _h264(container, rate: int):
    s = container.add_stream("libx264", rate=rate)
    s.height, s.width = SIZE
    s.pix_fmt = "yuv420p"
    return s


def vfr(path: Path, n: int = 30) -> Path:
    """Variable frame rate: frame gaps alternate 40 ms and 200 ms (time base 1/1000)."""
    with av.open(str(path), "w") as c:
        s = _h264(c, 25)
        s.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for i, f in enumerate(frames(n)):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, Fraction(1, 1000)
            t += 40 if i % 2 == 0 else 200
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    return path


def rotated(path: Path, n: int = 20) -> Path:
    """Rotation metadata (the container's `rotate` tag) on an ordinary video."""
    with av.open(str(path), "w") as c:
        s = _h264(c, 10)
        s.metadata["rotate"] = "90"
        for f in frames(n):
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode(None))
    return path


def audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        n = int(16000 * seconds)
        data = (np.sin(np.arange(n) / 10.0) * 0.3).astype(np.float32)[None, :]
        for a in range(0, n, 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, a:a + 1024]), format="fltp",
                                            layout="mono")
            fr.sample_rate = 16000
            c.mux(s.encode(fr))
        c.mux(s.encode(None))
    return path


def damaged(path: Path, src: Path, seed: int = 0, share: float = 0.01) -> Path:
    """A copy of `src` (an mp4 written by `good`: frame data first, index at the end) with `share`
    of the bytes between 20% and 60% of the file, i.e. inside the frame data, overwritten."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    pos = rng.integers(len(data) // 5, len(data) * 3 // 5, max(1, int(len(data) * share)))
    for p in pos:
        data[p] = int(rng.integers(0, 256))
    path.write_bytes(bytes(data))
    return path


def make_all(root: Path) -> tuple[set[str], set[str]]:
    """Fill `root` with hostile inputs; returns (ids that must be extracted, ids that must fail)."""
    root.mkdir(parents=True, exist_ok=True)
    ok, bad = set(), set()
    ref = good(root / "good.mp4")
    ok.add("good.mp4")
    for d in ("a", "b"):  # the same file name in two folders: two distinct ids
        good(root / d / "same.mp4", seed=ord(d))
        ok.add(f"{d}/same.mp4")
    good(root / "with space é ü 動画.mp4", n=12)
    ok.add("with space é ü 動画.mp4")
    raw = os.path.join(os.fsencode(root), b"latin1-\xe9\xff.mp4")  # not UTF-8
    with open(raw, "wb") as f:
        f.write(ref.read_bytes())
    ok.add("latin1-\\xe9\\xff.mp4")
    good(root / "one-frame.mp4", n=1)
    ok.add("one-frame.mp4")
    good(root / "large.mp4", n=2, size=(2160, 3840))
    ok.add("large.mp4")
    vfr(root / "vfr.mp4")
    ok.add("vfr.mp4")
    rotated(root / "rotated.mp4")
    ok.add("rotated.mp4")

    (root / "empty.mp4").write_bytes(b"")
    data = ref.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (root / "random.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 20000, np.uint8).tobytes())
    (root / "text.mp4").write_text("this is a text file, not a video\n" * 50)
    (root / "dir.mp4").mkdir()
    (root / "dir.mp4" / "inner.txt").write_text("x")
    audio_only(root / "audio-only.mp4")
    os.symlink("loop2.mp4", root / "loop1.mp4")
    os.symlink("loop1.mp4", root / "loop2.mp4")
    os.symlink(".", root / "dirloop")  # a directory loop: not followed, nothing found twice
    os.mkfifo(root / "fifo.mp4")  # opening it would block forever: refused as not a regular file
    bad |= {"empty.mp4", "truncated.mp4", "random.mp4", "text.mp4", "dir.mp4", "audio-only.mp4",
            "loop1.mp4", "loop2.mp4", "fifo.mp4"}
    return ok, bad
