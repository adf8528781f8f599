"""timm ViT checkpoints load into zoo and give timm's logits, at the trained size and others."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.frontends.pos_embed import resample_pos_embed
from zoo.registry import get_entry

timm = pytest.importorskip("timm")
from timm.layers import resample_abs_pos_embed  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

IMAGE_MODELS = zoo.list_models(modality="image")
# zoo's own small-image variants have no timm name: timm builds them from the same kwargs
ZOO_ONLY = [n for n in IMAGE_MODELS if "_patch4_" in n]
TIMM_NAMED = [n for n in IMAGE_MODELS if n not in ZOO_ONLY]
TOL = 1e-4


def _save_safetensors(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _other_size(img: int, patch: int) -> tuple[int, int]:
    """A smaller, non-square input that is still a whole number of patches."""
    return (img * 2 // 3) // patch * patch, (img // 2) // patch * patch


def _assert_parity(reference, model, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert actual.shape == expected.shape
    # logits of a random model must not be ~0, else the tolerance below would say nothing
    assert expected.std() > 0.05, expected.std()
    diff = (actual - expected).abs().max().item()
    assert diff < TOL, f"max |zoo - timm| = {diff:.2e} at input {tuple(x.shape)}"


def _check_variant(name: str, timm_model, path: Path) -> None:
    model = zoo.create_model(name, pretrained=path).eval()
    img, patch = model.front_end.img_size[0], model.front_end.patch_size[0]
    assert model.num_classes == timm_model.num_classes
    batch = 1 if model.embed_dim >= 768 else 2
    gen = torch.Generator().manual_seed(0)
    _assert_parity(timm_model, model, torch.randn(batch, 3, img, img, generator=gen))
    _assert_parity(timm_model, model, torch.randn(batch, 3, *_other_size(img, patch), generator=gen))


@pytest.mark.parametrize("name", TIMM_NAMED)
def test_timm_named_variant_parity(name, timm_vit, tmp_path):
    reference = timm_vit(name, dynamic_img_size=True)
    path = _save_safetensors(reference, tmp_path / "model.safetensors")
    try:
        _check_variant(name, reference, path)
    finally:
        path.unlink()  # up to 1.2 GB; pytest keeps the last few tmp_path trees


@pytest.mark.parametrize("name", ZOO_ONLY)
def test_small_image_variant_parity(name, timm_vit, tmp_path):
    entry, _ = get_entry(name)
    reference = timm_vit(None, **entry.args, num_classes=entry.default_cfg.num_classes,
                         dynamic_img_size=True)
    path = _save_safetensors(reference, tmp_path / "model.safetensors")
    _check_variant(name, reference, path)


def test_every_variant_is_checked():
    assert TIMM_NAMED and ZOO_ONLY
    assert set(TIMM_NAMED) <= set(timm.list_models()), "a timm-named variant timm does not know"
    assert not set(ZOO_ONLY) & set(timm.list_models())


# --- formats and options -------------------------------------------------------------------------

SMALL = dict(depth=2)  # timm and zoo both accept it as an override of the variant


def test_pth_with_weights_only_and_wrappers(timm_vit, tmp_path):
    reference = timm_vit("vit_tiny_patch16_224", **SMALL)
    state = reference.state_dict()
    x = torch.randn(2, 3, 224, 224)
    for i, obj in enumerate([state, {"state_dict": {f"module.{k}": v for k, v in state.items()}},
                             {"model": state, "epoch": 3}]):
        path = tmp_path / f"ckpt{i}.pth"
        torch.save(obj, path)
        model = zoo.create_model("vit_tiny_patch16_224", pretrained=path, **SMALL).eval()
        _assert_parity(reference, model, x)


@pytest.mark.parametrize("timm_kwargs, zoo_kwargs", [
    (dict(global_pool="avg"), dict(global_pool="avg")),
    (dict(global_pool="avg", class_token=False), dict(global_pool="avg", class_token=False)),
    (dict(init_values=1e-5), dict(layer_scale_init=1e-5)),
], ids=["avg_fc_norm", "avg_no_class_token", "layer_scale"])
def test_timm_options_map_to_zoo_kwargs(timm_kwargs, zoo_kwargs, timm_vit, tmp_path):
    reference = timm_vit("vit_tiny_patch16_224", **SMALL, **timm_kwargs, dynamic_img_size=True)
    path = _save_safetensors(reference, tmp_path / "model.safetensors")
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=path, **SMALL, **zoo_kwargs).eval()
    _assert_parity(reference, model, torch.randn(2, 3, 224, 224))
    _assert_parity(reference, model, torch.randn(2, 3, 160, 128))
    if "layer_scale_init" in zoo_kwargs:  # the checkpoint's (noisy) gammas, not the init value
        torch.testing.assert_close(model.encoder.blocks[1].ls2.gamma, reference.blocks[1].ls2.gamma)
    # without the matching kwargs the checkpoint does not fit, and the error says where
    with pytest.raises(zoo.CheckpointMismatchError, match=r"fc_norm|ls1\.gamma|cls_token"):
        zoo.create_model("vit_tiny_patch16_224", pretrained=path, **SMALL)


def test_224_checkpoint_at_384_matches_timm(timm_vit, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # timm must read the file, never the hub
    source = timm_vit("vit_tiny_patch16_224", **SMALL)
    path = _save_safetensors(source, tmp_path / "model.safetensors")
    reference = timm.create_model("vit_tiny_patch16_224", **SMALL, img_size=384, pretrained=True,
                                  pretrained_cfg_overlay=dict(file=str(path))).eval()
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=path, **SMALL, img_size=384).eval()
    assert model.front_end.pos_embed.shape == reference.pos_embed.shape == (1, 577, 192)
    torch.testing.assert_close(model.front_end.pos_embed, reference.pos_embed, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        model.front_end.pos_embed,
        resample_abs_pos_embed(source.pos_embed, new_size=(24, 24), num_prefix_tokens=1),
        rtol=0, atol=1e-6)
    _assert_parity(reference, model, torch.randn(1, 3, 384, 384))
    assert model.pretrained_cfg.preprocess["input_size"] == (3, 384, 384)


@pytest.mark.parametrize("grids", [((14, 14), (24, 24)), ((14, 14), (9, 7)), ((8, 8), (3, 5))])
def test_resample_pos_embed_matches_timm(grids):
    old, new = grids
    table = torch.randn(1, 1 + old[0] * old[1], 32)
    ours = resample_pos_embed(table, new, old, num_prefix_tokens=1)
    theirs = resample_abs_pos_embed(table, new_size=list(new), old_size=list(old),
                                    num_prefix_tokens=1)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_new_num_classes_reinitialises_only_the_classifier(timm_vit, tmp_path):
    reference = timm_vit("vit_tiny_patch16_224", **SMALL)
    path = _save_safetensors(reference, tmp_path / "model.safetensors")
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=path, num_classes=10, **SMALL).eval()
    assert model.num_classes == 10 and model.head.fc.weight.shape == (10, 192)
    assert model.pretrained_cfg.num_classes == 10 and model.pretrained_cfg.labels is None
    converted = zoo.convert.to_zoo_state_dict(reference.state_dict())
    for key, value in model.state_dict().items():
        if key.startswith("head.fc."):
            assert key not in converted or converted[key].shape != value.shape
        else:
            assert torch.equal(value, converted[key]), key
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True),
                                   reference.forward_head(reference.forward_features(x),
                                                          pre_logits=True), rtol=0, atol=TOL)
    # a freshly initialised classifier: zero bias, small weights, nothing like the checkpoint's
    assert torch.all(model.head.fc.bias == 0) and model.head.fc.weight.abs().max() < 0.1
    # the checkpoint's own class count is the default
    assert zoo.create_model("vit_tiny_patch16_224", pretrained=path, **SMALL).num_classes == 1000


@pytest.mark.parametrize("edit, key", [
    (lambda sd: sd.update({"blocks.0.attn.extra": torch.zeros(3)}), "encoder.blocks.0.attn.extra"),
    (lambda sd: sd.pop("blocks.1.mlp.fc2.bias"), "encoder.blocks.1.mlp.fc2.bias"),
    (lambda sd: sd.update({"blocks.0.norm1.weight": torch.ones(193)}), "encoder.blocks.0.norm1.weight"),
], ids=["extra", "missing", "shape"])
def test_mismatched_checkpoint_names_the_key(edit, key, timm_vit, tmp_path):
    state = dict(timm_vit("vit_tiny_patch16_224", **SMALL).state_dict())
    edit(state)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(zoo.CheckpointMismatchError, match=key.replace(".", r"\.")):
        zoo.create_model("vit_tiny_patch16_224", pretrained=path, **SMALL)


def test_register_tokens_are_refused_by_name(timm_vit, tmp_path):
    reference = timm_vit("vit_tiny_patch16_224", **SMALL, reg_tokens=4)
    path = _save_safetensors(reference, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="reg_token"):
        zoo.create_model("vit_tiny_patch16_224", pretrained=path, **SMALL)
