"""Backbone names and weights the way timm takes them: hf-hub:ORG/NAME from a local Hugging Face
cache made here (offline), --weights through timm's pretrained-config overlay, did-you-mean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models._hub import save_for_hf

import storage
from extract import ExtractConfig, ExtractError
from extract.backbone import create_timm_model, describe_weights, load_backbone, state_digest
from tests.testing import run_module, tiny

HUB_NAME = "hf-hub:timm/test_vit.cache_made_here"


def make_hub_cache(hf_home: Path, repo: str = "timm/test_vit.cache_made_here",
                   seed: int = 5) -> torch.nn.Module:
    """A timm model saved as the hub holds it (config.json + model.safetensors), laid out as
    huggingface_hub caches a download: hub/models--ORG--NAME/{refs/main, snapshots/COMMIT/...}."""
    torch.manual_seed(seed)
    model = timm.create_model("test_vit", pretrained=False)
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    save_for_hf(model, str(folder / "snapshots" / commit), safe_serialization=True)
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    return model.eval()


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """HF_HOME in tmp_path with one model cached, and HF_HUB_OFFLINE=1 (in this process too)."""
    import huggingface_hub.constants as hf

    home = tmp_path / "hf_home"
    model = make_hub_cache(home)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return home, model


def test_hub_name_loads_from_the_local_cache_offline(offline_hub):
    _, saved = offline_hub
    bb = load_backbone(ExtractConfig(model=HUB_NAME, precision="fp32", progress=False))
    saved.reset_classifier(0)
    assert bb.digest == state_digest(saved)
    assert bb.source == "timm pretrained (Hugging Face hub)"
    assert bb.fingerprint(ExtractConfig(model=HUB_NAME))["model"] == HUB_NAME
    x = torch.randint(0, 256, (2, *bb.input_size, 3), dtype=torch.uint8)
    assert torch.allclose(bb.embed(x), saved(bb.normalize(x)), atol=1e-5)
    # a hub name the cache does not hold: a clear error with the ways out, not a hang
    with pytest.raises(ExtractError, match=r"(?s)not in the local Hugging Face cache.*--weights"):
        create_timm_model(ExtractConfig(model="hf-hub:timm/test_vit.not_cached"))


def test_unknown_model_gets_a_did_you_mean():
    with pytest.raises(ExtractError, match=r"unknown timm model 'vit_tiny_patch16_244'.*did you mean "
                                           r"'vit_tiny_patch16_224'"):
        create_timm_model(ExtractConfig(model="vit_tiny_patch16_244", pretrained=False))
    with pytest.raises(ExtractError, match="hf-hub:timm/foo/bar"):  # a repo id without its source prefix
        create_timm_model(ExtractConfig(model="timm/foo/bar", pretrained=False))


def test_weights_file_goes_through_timms_checkpoint_filter(tmp_path):
    """ViT weights trained at 32x32 (a 2x2 grid of patches) load into the same ViT at 64x64: timm's
    checkpoint filter resamples the position embedding, which a plain load_state_dict refuses."""
    from safetensors.torch import save_file
    from timm.layers import resample_abs_pos_embed

    small, _ = create_timm_model(tiny(seed=3))
    save_file({k: v.contiguous() for k, v in small.state_dict().items()}, tmp_path / "w.safetensors")
    big = tiny(weights=str(tmp_path / "w.safetensors"), model_kwargs={"img_size": 64, "depth": 2})
    model, source = create_timm_model(big)
    assert source == {"kind": "file", "path": big.weights, "how": "timm checkpoint filter"}
    assert model.pos_embed.shape[1] == 1 + 16 != small.pos_embed.shape[1]
    expect = resample_abs_pos_embed(small.pos_embed, (4, 4), num_prefix_tokens=1)
    torch.testing.assert_close(model.pos_embed, expect)
    torch.testing.assert_close(model.blocks[1].mlp.fc2.weight, small.blocks[1].mlp.fc2.weight)
    # a checkpoint without the classifier: timm's strict load refuses it, our by-name mapping takes it
    save_file({k: v.contiguous() for k, v in small.state_dict().items() if not k.startswith("head.")},
              tmp_path / "headless.safetensors")
    _, source = create_timm_model(tiny(weights=str(tmp_path / "headless.safetensors")))
    assert source["how"] == "by name" and describe_weights(source).endswith("(by name)")


@pytest.mark.slow
def test_cli_extracts_with_a_hub_name_offline(tmp_path, make_video):
    """The real command line, in a fresh process whose only hub is HF_HOME in tmp_path."""
    home = tmp_path / "hf_home"
    saved = make_hub_cache(home)
    videos = tmp_path / "videos"
    for i in range(2):
        make_video(f"videos/v{i}.mp4", frames=20, fps=10)
    out = tmp_path / "cache"
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    proc = run_module("extract", "--videos", videos, "--out", out, "--model", HUB_NAME, "--fps", "2",
                      "--precision", "fp32", "--no-progress", env=env)
    assert "2 videos: 2 done" in proc.stdout
    cache = storage.open_cache(out)
    assert sorted(cache.video_ids) == ["v0.mp4", "v1.mp4"]
    assert cache.fingerprint["model"] == HUB_NAME and cache.dim == saved.num_features
    saved.reset_classifier(0)
    assert cache.fingerprint["weights_sha256"] == state_digest(saved)
    info = json.loads(run_module("storage", "info", out, "--json").stdout)
    assert info["provenance"]["weights_source"] == "timm pretrained (Hugging Face hub)"
    bad = run_module("extract", "--videos", videos, "--out", tmp_path / "c2", "--model",
                     "hf-hub:timm/not_cached_here", "--no-progress", env=env, check=False)
    assert bad.returncode == 2 and "not in the local Hugging Face cache" in bad.stderr
