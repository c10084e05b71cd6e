"""Stage one end to end: features, formats, bad input, crash + resume, fingerprint, dask, weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import storage
from extract import ExtractConfig, ExtractError, run
from extract.backbone import create_timm_model, load_backbone, state_digest
from extract.synth import write_video
from tests.testing import REPO, TINY_CLI, assert_same, index_frames, run_module, tiny

VIDEOS = {  # id -> (frames, fps)
    "a.mp4": (50, 25), "b.mp4": (40, 10), "sub/c.mp4": (60, 30), "sub/deeper/d.mkv": (30, 15),
    "sub2/c.mp4": (24, 12),  # same file name as sub/c.mp4 in another folder: a distinct id
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for vid, (n, fps) in VIDEOS.items():
        (root / vid).parent.mkdir(parents=True, exist_ok=True)
        write_video(root / vid, index_frames(n, (48, 64)), fps=fps)
    (root / "notes.txt").write_text("not a video and not named like one: ignored\n")
    return root


@pytest.fixture(scope="module")
def reference(videos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "cache"
    s = run(tiny(), videos, out)
    assert s.ok and s.done == len(VIDEOS) and s.skipped == 0, s
    return out


def test_cache_has_every_video_with_fps_timestamps(reference):
    c = storage.open_cache(reference)
    assert c.video_ids == sorted(VIDEOS)
    assert c.dim == 192 and c.dtype == "float16"
    for vid, (n, fps) in VIDEOS.items():
        want = np.arange(int((n - 1) / fps) + 1, dtype=np.float32)  # --fps 1: 0 s, 1 s, 2 s, ...
        np.testing.assert_allclose(c.timestamps(vid), want, atol=1e-3)
        assert c.features(vid).shape == (len(want), 192)
    fp = c.fingerprint
    assert fp["model"] == "vit_tiny_patch16_224" and fp["input_size"] == [3, 32, 32]
    assert fp["sampling"] == {"policy": "fps", "fps": 1.0, "max_frames": None}
    assert len(fp["weights_sha256"]) == 64 and fp["embedding_dim"] == 192
    assert c.info["provenance"]["timm"] and c.info["provenance"]["decord"]
    assert storage.verify(reference).ok


def test_features_equal_backbone_on_the_same_decoded_frames(reference, videos):
    """Stored features == model(timm's own transform(decord frames)), within float16 rounding."""
    import decord
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    model, _ = create_timm_model(tiny(), num_classes=0)
    dc = resolve_data_config({}, model=model)
    dc["input_size"] = (3, 32, 32)
    tf = create_transform(**dc)
    c = storage.open_cache(reference)
    for vid in ("a.mp4", "sub/c.mp4"):
        n, fps = VIDEOS[vid]
        vr = decord.VideoReader(str(videos / vid))
        idx = [round(k * fps) for k in range(int((n - 1) / fps) + 1)]
        frames = vr.get_batch(idx).asnumpy()
        x = torch.stack([tf(Image.fromarray(f)) for f in frames])
        with torch.inference_mode():
            ref = model(x).numpy()
        got = c.features(vid).astype(np.float32)
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)
        assert np.mean(got == ref.astype(np.float16).astype(np.float32)) > 0.99


def test_hdf5_round_trip_equals_zarr(reference, videos, tmp_path):
    out = tmp_path / "h5"
    s = run(tiny(format="hdf5"), videos, out)
    assert s.ok and s.done == len(VIDEOS)
    shards = storage.shard_paths(out)
    assert shards and all(p.suffix == ".h5" for p in shards)
    assert_same(reference, out)
    # readable without this project's code
    import h5py
    import zarr

    with h5py.File(shards[0], "r") as f:
        ids = [v.decode() if isinstance(v, bytes) else v for v in f["video_ids"][:]]
        a, b = f["offsets"][0], f["offsets"][1]
        np.testing.assert_array_equal(f["features"][a:b], storage.open_cache(out).features(ids[0]))
    z = zarr.open_group(str(storage.shard_paths(reference)[0]), mode="r")
    assert z["features"].dtype == np.float16 and z["features"].shape[1] == 192


def test_run_again_skips_finished_videos(reference, videos):
    before = {p.name for p in storage.shard_paths(reference)}
    s = run(tiny(), videos, reference)
    assert s.ok and s.skipped == len(VIDEOS) and s.done == 0 and s.frames == 0
    assert {p.name for p in storage.shard_paths(reference)} == before


def test_mismatched_fingerprint_is_refused(reference, videos):
    with pytest.raises(storage.FingerprintMismatch, match="sampling") as e:
        run(tiny(fps=2.0), videos, reference)
    assert "--out" in str(e.value)
    with pytest.raises(storage.FingerprintMismatch, match="weights_sha256"):
        run(tiny(seed=1), videos, reference)


@pytest.mark.slow
def test_dask_workers_write_the_same_content(reference, videos, tmp_path):
    out = tmp_path / "dask"
    s = run(tiny(workers=2), videos, out)
    assert s.ok and s.done == len(VIDEOS), s
    assert len(storage.shard_paths(out)) == 3  # 5 videos, 2 per shard: one task per shard
    assert_same(reference, out)
    assert storage.verify(out).ok


@pytest.mark.slow
def test_bad_files_fail_alone_and_are_reported(tmp_path):
    vids = tmp_path / "videos"
    vids.mkdir()
    write_video(vids / "good1.mp4", index_frames(30, (48, 64)), fps=15)
    write_video(vids / "good 2 é.mp4", index_frames(30, (48, 64)), fps=15)
    good = (vids / "good1.mp4").read_bytes()
    (vids / "empty.mp4").write_bytes(b"")
    (vids / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (vids / "text.avi").write_text("hello, I am a text file\n" * 20)
    (vids / "truncated.mp4").write_bytes(good[:400])
    (vids / "dir.mp4").mkdir()
    (vids / "crash.mp4").write_bytes(good)  # a fine file, but the decoder dies on it (injected)
    out = tmp_path / "cache"
    proc = run_module("extract", "--videos", vids, "--out", out, *TINY_CLI, check=False,
                      env={"EXTRACT_TEST_CRASH_ON": "crash.mp4"})
    assert proc.returncode == 1, proc.stderr
    bad = {"empty.mp4", "random.mp4", "text.avi", "truncated.mp4", "dir.mp4", "crash.mp4"}
    assert f"2 done, 0 skipped (already cached), {len(bad)} failed" in proc.stdout
    fails = storage.read_failures(out)
    assert set(fails) == bad
    for vid, rec in fails.items():
        assert vid in rec["reason"] and rec["path"].endswith(vid)
    assert "empty" in fails["empty.mp4"]["reason"]
    assert "directory" in fails["dir.mp4"]["reason"]
    assert "crashed (killed by SIGSEGV)" in fails["crash.mp4"]["reason"]
    c = storage.open_cache(out)
    assert c.video_ids == ["good 2 é.mp4", "good1.mp4"]
    assert c.features("good1.mp4").shape == (2, 192)
    assert storage.verify(out).ok


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted(videos, tmp_path):
    args = ["--videos", videos, *TINY_CLI, "--videos-per-shard", "1", "--every", "3"]
    ref = tmp_path / "ref"
    assert run(tiny(videos_per_shard=1, every=3), videos, ref).ok
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO), "EXTRACT_TEST_DECODE_DELAY": "0.3"}
    proc = subprocess.Popen([sys.executable, "-m", "extract", *map(str, args), "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(storage.shard_paths(out)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_killed = len(storage.shard_paths(out))
    assert 2 <= n_killed < len(VIDEOS), "the kill should land mid-run"
    done = run(tiny(videos_per_shard=1, every=3), videos, out)  # resume (in-process: faster)
    assert done.skipped == n_killed and done.done == len(VIDEOS) - n_killed
    assert_same(ref, out)  # bit for bit, though the CLI run used other processes and batches
    assert storage.verify(out).ok
    assert not list((out / "shards").glob("*.tmp-*"))


def test_offline_pretrained_error_names_the_ways_out(monkeypatch, videos, tmp_path):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = ExtractConfig(model="vit_tiny_patch16_224.augreg_in21k", pretrained=True, progress=False)
    with pytest.raises(ExtractError) as e:
        run(cfg, videos, tmp_path / "c")
    msg = str(e.value)
    assert "vit_tiny_patch16_224.augreg_in21k" in msg
    for way in ("--weights", "--no-pretrained", "--model tf_efficientnet_lite0"):
        assert way in msg
    assert not (tmp_path / "c").exists()


def test_local_weights_safetensors_and_state_dict(tmp_path):
    from safetensors.torch import save_file

    model, _ = create_timm_model(tiny(seed=7))  # with its classifier, as a checkpoint would be
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, tmp_path / "w.safetensors")
    torch.save({"state_dict": sd}, tmp_path / "w.pth")
    a = load_backbone(tiny(weights=str(tmp_path / "w.safetensors")))
    b = load_backbone(tiny(weights=str(tmp_path / "w.pth")))
    model.reset_classifier(0)
    assert a.digest == b.digest == state_digest(model) != load_backbone(tiny()).digest
    x = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(a.embed(x), b.embed(x))
    torch.save({"x": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ExtractError, match="do not fit"):
        load_backbone(tiny(weights=str(tmp_path / "bad.pth")))


def test_config_round_trips_as_params():
    cfg = tiny(every=4, max_frames=100, format="hdf5")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert ExtractConfig.from_dict(d) == cfg
    assert cfg.sampling() == {"policy": "every", "every": 4, "max_frames": 100}
    with pytest.raises(ExtractError, match=r"unknown extract setting.*'fsp' \(did you mean 'fps'\?\)"):
        ExtractConfig.from_dict({"fsp": 2})
    with pytest.raises(ExtractError, match="not both"):
        ExtractConfig(every=2, num_frames=3)
