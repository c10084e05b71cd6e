"""Helpers of the test suite (and bench/soak.py), in one place: run a module against this checkout,
the tiny backbone, cache comparison, and real videos made here with PyAV, hostile ones included.

Every input is a real file (or directory, or symlink) made inside the test's temporary folder,
never taken from outside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from extract import ExtractConfig
from extract.synth import write_video

REPO = Path(__file__).resolve().parents[1]


def run_module(module: str, *args: str, check: bool = True, timeout: float = 600,
               **kw) -> subprocess.CompletedProcess:
    """Run `python -m module args...` against this checkout (not an installed copy)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **kw.pop("env", {})}
    proc = subprocess.run([sys.executable, "-m", module, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


# ---------------------------------------------------------------------------------------------
# the tiny backbone and cache comparison

# a random-init ViT-Tiny cut to 2 blocks on 32x32 inputs: real timm code, fast to build and run;
# fp32 on every machine (`auto` depends on the CPU; tests/test_extract_precision.py covers it)
TINY = dict(model="vit_tiny_patch16_224", model_kwargs={"img_size": 32, "depth": 2}, pretrained=False,
            batch_size=8, progress=False, videos_per_shard=2, precision="fp32")
TINY_CLI = ["--model", "vit_tiny_patch16_224", "--model-kwargs", json.dumps(TINY["model_kwargs"]),
            "--no-pretrained", "--batch-size", "8", "--videos-per-shard", "2", "--no-progress",
            "--precision", "fp32"]


def tiny(**kw) -> ExtractConfig:
    return ExtractConfig(**{**TINY, **kw})


def content(cache: Path) -> dict:
    import storage

    c = storage.open_cache(cache)
    return {v: (c.features(v), c.timestamps(v)) for v in c.video_ids}


def assert_same(a: Path, b: Path, exact: bool = True) -> None:
    ca, cb = content(a), content(b)
    assert sorted(ca) == sorted(cb)
    for v in ca:
        np.testing.assert_array_equal(ca[v][1], cb[v][1])
        if exact:
            np.testing.assert_array_equal(ca[v][0], cb[v][0], err_msg=v)
        else:
            np.testing.assert_allclose(ca[v][0].astype(np.float32), cb[v][0].astype(np.float32),
                                       rtol=2e-3, atol=2e-3, err_msg=v)


# ---------------------------------------------------------------------------------------------
# frames that say which frame they are


def index_frames(n: int, size: tuple[int, int] = (64, 96)) -> Iterator[np.ndarray]:
    """Frames whose mean brightness encodes their index, so a test can tell which frame it got."""
    h, w = size
    for i in range(n):
        level = (i * 37) % 200 + 28
        yield np.full((h, w, 3), level, dtype=np.uint8)


def coded_frames(n: int, size: tuple[int, int] = (64, 96)) -> Iterator[np.ndarray]:
    """Flat frames whose red and green levels spell the frame index (15 levels apart: codec-proof)."""
    for i in range(n):
        f = np.full((*size, 3), 128, dtype=np.uint8)
        f[..., 0], f[..., 1] = (i % 16) * 15 + 10, (i // 16 % 16) * 15 + 10
        yield f


def which_frames(pix: np.ndarray) -> list[int]:
    """Recover frame indices from the red and green levels of coded_frames."""
    r = pix[..., 0].reshape(len(pix), -1).mean(1)
    g = pix[..., 1].reshape(len(pix), -1).mean(1)
    lo, hi = np.rint((r - 10) / 15), np.rint((g - 10) / 15)
    assert np.all(np.abs(lo * 15 + 10 - r) < 5) and np.all(np.abs(hi * 15 + 10 - g) < 5)
    return (hi * 16 + lo).astype(int).tolist()


# ---------------------------------------------------------------------------------------------
# hostile inputs for the fault-injection tests


SIZE = (48, 64)


def textured_frames(n: int, size=SIZE, seed: int = 0) -> Iterator[np.ndarray]:
    """Textured frames (so that damaged bytes really damage the picture), brightness = index."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 40, (*size, 3), dtype=np.uint8)
    for f in index_frames(n, size):
        yield f + noise


def good(path: Path, n: int = 30, fps: float = 10, size=SIZE, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, textured_frames(n, size, seed), fps=fps)
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
        for i, f in enumerate(textured_frames(n)):
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
        for f in textured_frames(n):
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
