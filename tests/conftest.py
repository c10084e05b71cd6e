import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.synth import index_frames, write_video

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


@pytest.fixture
def make_video(tmp_path):
    """make_video(name, frames=50, fps=25, size=(64, 96)) -> path of a real H.264 mp4."""

    def make(name: str = "v.mp4", frames: int = 50, fps: float = 25, size=(64, 96), **kw) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, index_frames(frames, size), fps=fps, **kw)
        return path

    return make


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine: a second intra-op thread only adds contention."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
