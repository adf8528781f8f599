"""Names, tags and pretrained cfgs: lookup errors that help, filters, duplicate protection."""

from __future__ import annotations

import json

import pytest

import zoo
from zoo import registry
from zoo.models import VisionTransformer
from zoo.registry import get_entry

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(depth=1, embed_dim=64, num_heads=2)


def _use_scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry._REGISTRY


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry that tests may add to without leaking names into other tests."""
    return _use_scratch_registry(monkeypatch)


def test_unknown_name_suggests_close_names():
    with pytest.raises(zoo.ModelNotFoundError, match=r"Did you mean: vit_tiny_patch16_224\b"):
        zoo.create_model("vit_tiny_patch16_22")
    with pytest.raises(zoo.ModelNotFoundError, match="vit_small_patch16_384"):
        zoo.create_model("vit_smal_patch16_384")
    with pytest.raises(zoo.ModelNotFoundError) as info:
        zoo.create_model("resnet50")
    assert "Did you mean" not in str(info.value) and "list_models" in str(info.value)
    assert issubclass(zoo.ModelNotFoundError, ValueError)


def test_unknown_tag_lists_available_tags():
    with pytest.raises(zoo.ModelNotFoundError,
                       match=r"no pretrained tag 'nope'; available: "
                             r"augreg2_in21k_ft_in1k, augreg_in21k_ft_in1k"):
        zoo.create_model("vit_base_patch16_224.nope")
    with pytest.raises(zoo.ModelNotFoundError, match="available: none"):
        zoo.create_model("vit_tiny_patch4_32.anything")


def test_list_models_pattern_and_modality():
    all_names = zoo.list_models()
    assert all_names == sorted(all_names) and len(set(all_names)) == len(all_names)
    assert zoo.list_models("vit_tiny_*") == ["vit_tiny_patch16_224", "vit_tiny_patch16_384",
                                             "vit_tiny_patch16_dinov3_qkvb", "vit_tiny_patch4_32"]
    assert zoo.list_models("*_patch4_*") == ["vit_nano_patch4_16", "vit_nano_patch4_32",
                                             "vit_small_patch4_32", "vit_tiny_patch4_32"]
    assert zoo.list_models("no_such_*") == []
    image = zoo.list_models(modality="image")
    assert "vit_base_patch16_224" in image and set(image) <= set(all_names)
    assert all(registry.get_entry(n)[0].modality == "image" for n in image)
    for modality in registry.MODALITIES:
        assert all(registry.get_entry(n)[0].modality == modality
                   for n in zoo.list_models(modality=modality))
    with pytest.raises(ValueError, match="modality must be one of"):
        zoo.list_models(modality="video")


def test_list_models_pretrained():
    weights = zoo.list_models(pretrained=True)
    assert "vit_tiny_patch16_224.augreg_in21k_ft_in1k" in weights
    assert all("." in n for n in weights)
    # of the small-image variants only the digits model ships weights (bundled in the package)
    assert [n for n in weights if "_patch4_" in n] == ["vit_nano_patch4_16.digits"]
    assert zoo.list_models("vit_base_patch16_224", pretrained=True) == sorted(
        f"vit_base_patch16_224.{tag}" for tag in (
            "augreg2_in21k_ft_in1k", "augreg_in21k_ft_in1k", "orig_in21k_ft_in1k", "augreg_in1k",
            "orig_in21k", "augreg_in21k", "sam_in1k", "bamboo", "dino", "mae"))
    assert get_entry("vit_base_patch16_224")[0].cfg().tag == "augreg2_in21k_ft_in1k"   # timm's default
    assert zoo.list_models("*augreg2*", pretrained=True) == [
        "vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit_base_patch8_224.augreg2_in21k_ft_in1k"]
    assert zoo.list_models("vit_tiny_patch4_32", pretrained=True) == []
    # every weight name resolves, and the architecture part is a registered model
    for name in weights:
        entry, tag = registry.get_entry(name)
        assert entry.name in zoo.list_models() and entry.cfg(tag).has_weights


def test_duplicate_registration_raises(scratch_registry):
    with pytest.raises(ValueError, match="'vit_tiny_patch16_224' is already registered"):
        zoo.register_model("vit_tiny_patch16_224", modality="image", builder=VisionTransformer,
                           args={}, preprocess={}, num_classes=10)
    entry = zoo.register_model("vit_test_only", modality="image", builder=VisionTransformer,
                               args=dict(img_size=32, patch_size=4, **SMALL), preprocess={},
                               num_classes=5)
    assert scratch_registry["vit_test_only"] is entry
    assert zoo.create_model("vit_test_only").num_classes == 5
    with pytest.raises(ValueError, match="already registered"):
        zoo.register_model("vit_test_only", modality="image", builder=VisionTransformer,
                           args={}, preprocess={}, num_classes=5)


def test_registration_validates_modality_and_tags(scratch_registry):
    common = dict(builder=VisionTransformer, args={}, preprocess={}, num_classes=2)
    with pytest.raises(ValueError, match="modality must be one of"):
        zoo.register_model("x_video", modality="video", **common)
    with pytest.raises(ValueError, match="tags must be unique"):
        zoo.register_model("x_dup_tags", modality="image", weights=[{"tag": "a"}, {"tag": "a"}],
                           **common)
    assert "x_video" not in scratch_registry and "x_dup_tags" not in scratch_registry


def test_scratch_registry_does_not_leak():
    """A name registered into the scratch registry is listed while it is in use, and gone from
    the real one afterwards (self-contained: no reliance on another test having run first)."""
    before = zoo.list_models()
    assert "vit_leak_probe" not in before
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            scratch = _use_scratch_registry(monkeypatch)
            entry = zoo.register_model("vit_leak_probe", modality="image",
                                       builder=VisionTransformer, args={}, preprocess={},
                                       num_classes=2)
            assert scratch["vit_leak_probe"] is entry and "vit_leak_probe" in zoo.list_models()
        assert "vit_leak_probe" not in zoo.list_models()
        assert zoo.list_models() == before
        with pytest.raises(zoo.ModelNotFoundError):
            get_entry("vit_leak_probe")
    finally:   # should the scratch copy ever leak, keep the probe out of later tests
        registry._REGISTRY.pop("vit_leak_probe", None)


def test_pretrained_true_without_weights():
    with pytest.raises(zoo.ModelNotFoundError, match="no pretrained weights registered"):
        zoo.create_model("vit_tiny_patch4_32", pretrained=True)


def test_pretrained_cfg_of_a_weighted_variant():
    model = zoo.create_model("vit_tiny_patch16_224", **SMALL)
    cfg = model.pretrained_cfg
    assert isinstance(cfg, zoo.PretrainedCfg)
    assert cfg.name == "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert cfg.hf_hub_id == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    assert cfg.license == "apache-2.0" and cfg.num_classes == 1000 and cfg.labels == "imagenet-1k"
    assert cfg.preprocess["input_size"] == (3, 224, 224)
    assert cfg.preprocess["mean"] == (0.5, 0.5, 0.5) and cfg.preprocess["std"] == (0.5, 0.5, 0.5)
    assert cfg.preprocess["interpolation"] == "bicubic" and cfg.preprocess["crop_pct"] == 0.9
    assert not cfg.metrics   # random weights claim no published figure ...
    assert zoo.registry.get_entry("vit_tiny_patch16_224")[0].cfg().metrics   # the weights do
    assert zoo.create_model("vit_nano_patch4_16", pretrained=True).pretrained_cfg.metrics

    tagged = zoo.create_model("vit_base_patch16_224.augreg_in21k_ft_in1k", **SMALL).pretrained_cfg
    assert tagged.hf_hub_id == "timm/vit_base_patch16_224.augreg_in21k_ft_in1k"
    default = zoo.create_model("vit_base_patch16_224", **SMALL).pretrained_cfg
    assert default.tag == "augreg2_in21k_ft_in1k"  # the first entry is the default


def test_pretrained_cfg_follows_overrides():
    cfg = zoo.create_model("vit_tiny_patch16_224", img_size=384, **SMALL).pretrained_cfg
    assert cfg.preprocess["input_size"] == (3, 384, 384)
    assert cfg.preprocess["mean"] == (0.5, 0.5, 0.5)
    cfg = zoo.create_model("vit_tiny_patch16_224", img_size=(160, 192), **SMALL).pretrained_cfg
    assert cfg.preprocess["input_size"] == (3, 160, 192)
    # another class count: the cfg no longer claims ImageNet labels or ImageNet metrics
    cfg = zoo.create_model("vit_tiny_patch16_224", num_classes=10, **SMALL).pretrained_cfg
    assert cfg.num_classes == 10 and cfg.labels is None and not cfg.metrics
    assert cfg.hf_hub_id == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"


def test_pretrained_cfg_of_a_small_image_variant():
    model = zoo.create_model("vit_tiny_patch4_32", **SMALL)
    cfg = model.pretrained_cfg
    assert model.num_classes == 10 and cfg.num_classes == 10
    assert cfg.preprocess["input_size"] == (3, 32, 32) and cfg.preprocess["mean"] == (0.5,) * 3
    assert cfg.license is None and cfg.hf_hub_id is None and not cfg.has_weights
    assert cfg.name == "vit_tiny_patch4_32"


def test_bundled_weights_cfg():
    cfg = zoo.create_model("vit_nano_patch4_16", **SMALL).pretrained_cfg
    assert cfg.name == "vit_nano_patch4_16.digits" and cfg.has_weights
    assert cfg.file and len(cfg.sha256) == 64 and cfg.labels == tuple("0123456789")


def test_pretrained_cfg_dict_round_trip():
    cfg = zoo.create_model("vit_small_patch16_384", **SMALL).pretrained_cfg
    assert zoo.PretrainedCfg.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
