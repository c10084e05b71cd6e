import pytest

from extract.synth import write_video
from tests.testing import coded_frames


@pytest.fixture
def make_video(tmp_path):
    """make_video(name, frames=50, fps=25, size=(64, 96)) -> a real H.264 mp4 of `coded_frames`."""

    def make(name: str = "v.mp4", frames: int = 50, fps: float = 25, size=(64, 96), **kw):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, coded_frames(frames, size), fps=fps, **kw)
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
