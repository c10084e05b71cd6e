"""Compute precision, memory layout and torch.compile of the backbone: choice, fidelity, fingerprint."""

import dataclasses

import numpy as np
import pytest
import torch

import storage
from extract import ExtractConfig, ExtractError, run
from extract.backbone import fidelity, load_backbone, native_precisions, pick_precision
from extract.batcher import decoder_count, usable_cores
from extract.decode import decode_video
from extract.distributed import worker_rank
from extract.synth import write_video
from pipeline.demo import DemoConfig, Segment, render
from storage.device import pick_device
from tests.testing import TINY_CLI, run_module, tiny

LITE0 = "tf_efficientnet_lite0"


def cpu_flags() -> set[str]:
    with open("/proc/cpuinfo") as f:
        return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())


def test_native_precisions_match_the_cpu_flags():
    flags = cpu_flags()
    if not flags:
        pytest.skip("no x86 flags line in /proc/cpuinfo")
    native = native_precisions(torch.device("cpu"))
    assert ("bf16" in native) == bool({"avx512_bf16", "amx_bf16"} & flags)
    assert ("fp16" in native) == bool({"avx512_fp16", "amx_fp16"} & flags)


@pytest.mark.parametrize(("caps", "vit", "lite0"), [
    ({}, "fp32", "fp32"),  # no native reduced precision: fp32
    ({"avx512_bf16": True}, "bf16", "fp32"),  # depthwise convs in bf16 fall below the bar: fp32
    ({"amx_bf16": True, "avx512_fp16": True}, "bf16", "fp16"),  # depthwise convs: fp16 keeps 3 more bits
    ({"avx512_fp16": True}, "fp16", "fp16"),
])
def test_auto_precision_follows_the_hardware_and_the_model(monkeypatch, caps, vit, lite0):
    import timm

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    cpu = torch.device("cpu")
    models = {"vit": timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1),
              "lite0": timm.create_model(LITE0)}
    assert pick_precision("auto", cpu, models["vit"]) == vit
    assert pick_precision("auto", cpu, models["lite0"]) == lite0
    for asked in ("fp32", "bf16", "fp16"):  # an explicit choice is kept
        assert pick_precision(asked, cpu, models["lite0"]) == asked
    with pytest.raises(ExtractError, match="precision"):
        ExtractConfig(precision="int8")


def test_workers_spread_over_gpus_and_decoders_follow_the_device(monkeypatch):
    assert worker_rank() is None  # not in a dask worker
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert [pick_device("cuda", r) for r in range(4)] == [torch.device("cuda", i) for i in (0, 1, 2, 0)]
    assert pick_device("cuda:2", 0) == torch.device("cuda:2")  # an explicit GPU stays
    assert pick_device("auto").type == "cuda"
    cfg = ExtractConfig()
    assert decoder_count(cfg, torch.device("cpu")) == 1
    assert decoder_count(cfg, torch.device("cuda")) == max(1, usable_cores() - 1)
    assert decoder_count(ExtractConfig(decoders=3), torch.device("cpu")) == 3


@pytest.fixture(scope="module")
def photo_frames(tmp_path_factory):
    """Real photos (scikit-image) panned in an H.264 video, decoded and preprocessed for lite0."""
    path = tmp_path_factory.mktemp("photos") / "photos.mp4"
    names = ("cat", "coffee", "rocket", "astronaut", "grass", "brick", "coins", "text")
    cfg = DemoConfig(fps=4, width=320, height=240)
    write_video(path, render([Segment(n, 2.0) for n in names], cfg, np.random.default_rng(0)), fps=cfg.fps)
    bb = load_backbone(ExtractConfig(model=LITE0, precision="fp32"))
    policy = {"policy": "every", "every": 4, "max_frames": None}  # two frames of each photo
    pix = np.concatenate([ev[2] for ev in decode_video(str(path), policy, bb.geometry) if ev[0] == "frames"])
    return bb, torch.from_numpy(pix)


@pytest.mark.slow  # a real ViT in four precisions: about 9 s; CI runs it
def test_reduced_precision_fidelity_on_real_decoded_frames(photo_frames):
    """lite0 with its ImageNet weights: each precision against fp32 on the same decoded frames."""
    bb32, pix = photo_frames
    assert len(pix) == 16
    ref = bb32.embed(pix)
    got = {}
    for p in ("bf16", "fp16"):
        bb = dataclasses.replace(bb32, precision=p)
        got[p] = fidelity(bb.embed(pix), ref)
    # bf16's 8-bit mantissa in the depthwise filters: close, but below the 0.999 bar
    assert got["bf16"]["cos_median"] > 0.995 and got["bf16"]["cos_min"] > 0.98, got
    assert got["fp16"]["cos_median"] > 0.9999 and got["fp16"]["cos_min"] > 0.999, got
    # what `auto` picks on this machine meets the bar (fp32 where nothing reduced is native)
    auto = pick_precision("auto", bb32.device, bb32.model)
    f = fidelity(dataclasses.replace(bb32, precision=auto).embed(pix), ref)
    assert f["cos_median"] >= 0.999 and f["cos_min"] >= 0.99, (auto, f)


def test_channels_last_equals_nchw(photo_frames):
    bb, pix = photo_frames
    assert bb.channels_last and bb.model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    nchw = bb.model.to(memory_format=torch.contiguous_format)
    try:
        assert bb.model.conv_stem.weight.is_contiguous()
        a = dataclasses.replace(bb, channels_last=False).embed(pix)
    finally:
        bb.model.to(memory_format=torch.channels_last)
    assert nchw is bb.model
    torch.testing.assert_close(bb.embed(pix), a, rtol=1e-4, atol=1e-4)  # other kernels, same features
    vit = load_backbone(tiny())
    assert not vit.channels_last  # one conv (the patch embedding) does not make a model convolutional


@pytest.mark.slow  # three extractions and a CLI run: ~5 s
def test_precision_is_in_the_fingerprint_and_a_cache_never_mixes(tmp_path, make_video, one_thread):
    vids = tmp_path / "v"
    for k in range(2):
        make_video(f"v/{k}.mp4", frames=40, fps=10, size=(48, 64))
    out = tmp_path / "cache"
    s = run(tiny(), vids, out)  # fp32
    assert s.ok and storage.open_cache(out).fingerprint["compute"] == "float32"  # as before --precision
    assert "while extracting, fp32)" in s.line()
    with pytest.raises(storage.FingerprintMismatch, match="compute: 'float32' in the cache, "
                                                          "'bfloat16-autocast' now"):
        run(tiny(precision="bf16"), vids, out)
    proc = run_module("extract", "--videos", vids, "--out", out, *TINY_CLI, "--precision", "fp16",
                      check=False)  # the last --precision wins
    assert proc.returncode == 2 and "--precision fp32 | bf16 | fp16" in proc.stderr, proc.stderr
    # the same videos in bf16, in a cache of their own: close to fp32
    out16 = tmp_path / "bf16"
    assert run(tiny(precision="bf16"), vids, out16).ok
    a, b = storage.open_cache(out), storage.open_cache(out16)
    assert b.fingerprint["compute"] == "bfloat16-autocast"
    for vid in a.video_ids:
        f = fidelity(torch.from_numpy(b.features(vid)), torch.from_numpy(a.features(vid)))
        assert f["cos_min"] > 0.99, (vid, f)


def test_float16_overflow_is_an_error_not_a_cache_of_inf(one_thread):
    bb = load_backbone(tiny(precision="fp16"))
    with torch.no_grad():
        bb.model.patch_embed.proj.weight.mul_(1e6)  # activations past float16's 65504
    with pytest.raises(ExtractError, match="float16"):
        bb.embed(torch.full((2, 32, 32, 3), 255, dtype=torch.uint8))


@pytest.mark.slow
def test_compiled_backbone_matches_eager(tmp_path, make_video, one_thread):
    eager = load_backbone(tiny())
    compiled = load_backbone(tiny(compile=True))
    assert compiled.compile_seconds > 0 and eager.compile_seconds == 0
    pix = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(compiled.embed(pix), eager.embed(pix), rtol=1e-4, atol=1e-4)
    make_video("v/a.mp4", frames=40, fps=10, size=(48, 64))
    s = run(tiny(compile=True), tmp_path / "v", tmp_path / "cache", backbone=compiled)
    assert s.ok and s.frames == 4 and f"compiled in {compiled.compile_seconds:.1f} s" in s.line()
    assert storage.open_cache(tmp_path / "cache").info["provenance"]["compiled"] is True
