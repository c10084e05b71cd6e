"""Stage one, decoding side: sampling policies, the frames actually read, preprocessing = timm's."""

import numpy as np
import pytest
import torch
from PIL import Image

from extract.decode import DecodeError, Preprocessor, decode_video, geometry, timestamp_problem
from extract.sampling import select, uniform
from tests.testing import which_frames

# a geometry that keeps a flat frame flat: its mean brightness still tells which frame it is
FLAT = {"mode": "short_side", "size": 32, "crop": (32, 32), "interp": "bilinear"}


def decoded(path, policy, backend="auto"):
    ts, pix, info = [], [], {}
    for ev in decode_video(str(path), {"max_frames": None, **policy}, FLAT, backend=backend):
        if ev[0] == "frames":
            ts.append(ev[1])
            pix.append(ev[2])
        else:
            info.update(ev[1])
    return np.concatenate(ts), np.concatenate(pix), info


def test_select_policies():
    pts = np.arange(100) / 25.0  # 4 s at 25 fps
    assert select(pts, {"policy": "fps", "fps": 1.0}).tolist() == [0, 25, 50, 75]
    # 0.5 s lies exactly between frames 12 (0.48 s) and 13 (0.52 s): ties go to the earlier frame
    assert select(pts, {"policy": "fps", "fps": 2.0}).tolist() == [0, 12, 25, 37, 50, 62, 75, 87]
    assert select(pts, {"policy": "fps", "fps": 100.0}).tolist() == list(range(100))  # no repeats
    assert select(pts, {"policy": "every", "every": 30}).tolist() == [0, 30, 60, 90]
    assert select(pts, {"policy": "num_frames", "num_frames": 4}).tolist() == [12, 37, 62, 87]
    assert select(pts, {"policy": "num_frames", "num_frames": 500}).tolist() == list(range(100))
    capped = select(pts, {"policy": "every", "every": 1, "max_frames": 10})
    assert capped.tolist() == uniform(100, 10).tolist() == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    # variable frame rate: picks by time, not by index
    vfr = np.concatenate([np.arange(50) / 50.0, 1 + np.arange(10) / 10.0])  # 50 fps then 10 fps
    assert select(vfr, {"policy": "fps", "fps": 2.0}).tolist() == [0, 25, 50, 55]
    assert select(np.zeros(0), {"policy": "fps", "fps": 1.0}).tolist() == []


@pytest.mark.parametrize("fps", [25, 10, 29.97])
def test_fps_policy_reads_the_right_frames(make_video, fps):
    n = 90
    path = make_video(f"v{fps}.mp4", frames=n, fps=fps)
    ts, pix, info = decoded(path, {"policy": "fps", "fps": 1.0})
    want = [i for i in range(0, n, 1) if any(abs(i / fps - k) < 0.5 / fps for k in range(10))]
    assert info["backend"] == "decord"
    assert which_frames(pix) == want
    np.testing.assert_allclose(ts, np.array(want) / fps, atol=1e-3)
    np.testing.assert_allclose(ts, np.arange(len(want)), atol=0.5 / fps)
    assert len(want) == {25: 4, 10: 9, 29.97: 3}[fps]  # one per whole second of (n - 1) / fps


def test_every_num_frames_and_cap(make_video):
    path = make_video("v.mp4", frames=60, fps=20)
    ts, pix, _ = decoded(path, {"policy": "every", "every": 7})
    assert which_frames(pix) == list(range(0, 60, 7))
    np.testing.assert_allclose(ts, np.arange(0, 60, 7) / 20, atol=1e-4)
    ts, pix, _ = decoded(path, {"policy": "num_frames", "num_frames": 6})
    assert which_frames(pix) == [5, 15, 25, 35, 45, 55]
    ts, pix, _ = decoded(path, {"policy": "every", "every": 1, "max_frames": 3})
    assert which_frames(pix) == [10, 30, 50]
    np.testing.assert_allclose(ts, [0.5, 1.5, 2.5], atol=1e-4)


def test_pyav_fallback_reads_the_same_frames(make_video):
    path = make_video("v.mp4", frames=75, fps=25)
    for policy in ({"policy": "fps", "fps": 1.0}, {"policy": "num_frames", "num_frames": 5}):
        ts_d, pix_d, _ = decoded(path, policy, backend="decord")
        ts_p, pix_p, info = decoded(path, policy, backend="pyav")
        assert info["backend"] == "pyav"
        assert which_frames(pix_d) == which_frames(pix_p)
        np.testing.assert_allclose(ts_d, ts_p, atol=1e-4)


def test_long_video_reads_in_bounded_chunks(make_video):
    path = make_video("long.mp4", frames=300, fps=25, size=(64, 96))
    sizes = [len(ev[2]) for ev in decode_video(str(path), {"policy": "every", "every": 1, "max_frames": None},
                                               FLAT, chunk_bytes=64 * 96 * 3 * 10) if ev[0] == "frames"]
    assert sum(sizes) == 300 and max(sizes) == 10


def test_unusable_timestamps_detected():
    assert timestamp_problem(np.arange(10) / 25, 25, 0.4) == ""
    bad = np.r_[np.full(5, -3e17), np.arange(5) / 25]
    assert "span" in timestamp_problem(bad, 25, 0.4)
    assert "repeated" in timestamp_problem(np.zeros(5), 25, 0.2)


@pytest.mark.parametrize("content", [b"", b"not a video at all\n" * 50, bytes(range(256)) * 40])
def test_bad_files_raise_decode_error_naming_the_file(tmp_path, content):
    p = tmp_path / "x.mp4"
    p.write_bytes(content)
    with pytest.raises(DecodeError, match=r"x\.mp4"):
        list(decode_video(str(p), {"policy": "fps", "fps": 1.0}, FLAT))


def test_truncated_and_directory(tmp_path, make_video):
    good = make_video("g.mp4", frames=50)
    data = good.read_bytes()
    (tmp_path / "t.mp4").write_bytes(data[: len(data) // 3])
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(DecodeError, match="directory"):
        list(decode_video(str(tmp_path / "d.mp4"), {"policy": "fps", "fps": 1.0}, FLAT))
    # PyAV writes the index (moov) at the end of an mp4: the first third holds no index at all
    with pytest.raises(DecodeError, match=r"t\.mp4 is not a readable video \(InvalidDataError"):
        decoded(tmp_path / "t.mp4", {"policy": "every", "every": 1})


CONFIGS = [
    {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.9, "crop_mode": "center",
     "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    {"input_size": (3, 64, 64), "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
     "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
    {"input_size": (3, 48, 80), "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "squash",
     "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.3, 0.4)},
    {"input_size": (3, 64, 64), "interpolation": "bicubic", "crop_pct": 0.95, "crop_mode": "border",
     "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['crop_mode']}-{c['input_size'][1]}")
@pytest.mark.parametrize("shape", [(144, 176), (272, 640), (300, 200)])
def test_preprocessing_equals_timm_transform(cfg, shape):
    """uint8 resize+crop here, then to-float+normalise next to the model == timm's own transform."""
    from timm.data import create_transform

    from extract.backbone import Backbone

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    geo = geometry(cfg)
    assert geo["mode"] == {"center": "short_side", "squash": "squash", "border": "timm"}[cfg["crop_mode"]]
    ours = Preprocessor(geo)(frame)
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    bb = Backbone(None, "", torch.device("cpu"), cfg, geo, mean, std, 0, "", "", "fp32", False, None)
    x = bb.normalize(torch.from_numpy(ours.copy())[None])[0]
    ref = create_transform(**cfg)(Image.fromarray(frame))
    assert x.shape == ref.shape
    assert torch.equal(x, ref)
