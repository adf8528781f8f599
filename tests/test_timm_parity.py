"""timm's ViT families by timm's names: every name matches timm's logits, at the trained size and
others; what zoo does not build is refused by name with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from zoo.checkpoint import load_state_dict
from zoo.convert import to_zoo_state_dict
from zoo.layers.pos_embed import resample_pos_embed
from zoo.models.vit_families import timm_names
from zoo.registry import get_entry, refused_models

timm = pytest.importorskip("timm")
from timm.layers import resample_abs_pos_embed  # noqa: E402

from tests.conftest import timm_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TIMM_NAMES = timm_names()                       # zoo architectures named as timm names them
ZOO_ONLY = [n for n in zoo.list_models(modality="image") if "_patch4_" in n]
TOL = 1e-4
# One name per family at its full depth and registered input size: the block maths over every
# layer, positions at the real grid, the real head. The depth-2 test covers every name.
FULL_DEPTH = [
    "vit_tiny_patch16_224",                 # original / AugReg
    "deit3_small_patch16_224",              # layer scale, positions for patches only
    "vit_small_patch16_18x2_224",           # parallel branches
    "vit_medium_patch16_gap_240",           # average pooling, no class token
    "vit_wee_patch16_reg1_gap_256",         # registers
    "vit_pwee_patch16_reg1_gap_256",        # ViT-22B parallel blocks
    "vit_xsmall_patch16_clip_224",          # CLIP (norm before the blocks)
    "vit_base_patch16_siglip_224",          # SigLIP attention pooling
    "vit_small_patch14_reg4_dinov2",        # DINOv2 with registers at 518 px
    "vit_small_patch16_rope_224",           # axial rotary positions
    "vit_small_patch16_rope_mixed_ape_224",  # learned rotary frequencies + absolute positions
    "vit_medium_patch16_rope_reg1_gap_256",  # rotary on a reference grid
    "vit_small_patch16_dinov3",             # centred rotary positions, half layout
    "vit_pe_core_tiny_patch16_384",         # Perception Encoder
]


def _save_safetensors(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _assert_parity(reference, model, x: torch.Tensor) -> None:
    with torch.no_grad():
        expected, actual = reference(x), model(x)
    assert actual.shape == expected.shape
    # logits of a random model must not be ~0, else the tolerance below would say nothing
    assert expected.std() > 0.05, expected.std()
    diff = (actual - expected).abs().max().item()
    assert diff < TOL, f"max |zoo - timm| = {diff:.2e} at input {tuple(x.shape)}"


def _zoo_from_timm(name: str, reference: torch.nn.Module, **kwargs) -> torch.nn.Module:
    model = zoo.create_model(name, **kwargs).eval()
    state = model.adapt_state_dict(to_zoo_state_dict(reference.state_dict()))
    load_state_dict(model, state, source=f"timm {name}")
    return model


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_name_matches_timm(name):
    """Every name at depth 2 (1 for the 4096-wide ViT-7B) on a 4 x 4 patch grid, 7 classes:
    the key map and the block maths, at the trained grid and a non-square other one."""
    patch = get_entry(name)[0].args["patch_size"]
    depth = 1 if get_entry(name)[0].args["embed_dim"] >= 4096 else 2
    kwargs = dict(depth=depth, img_size=4 * patch, num_classes=7)
    reference = timm_model(name, dynamic_img_size=True, **kwargs)
    model = _zoo_from_timm(name, reference, **kwargs)
    gen = torch.Generator().manual_seed(0)
    _assert_parity(reference, model, torch.randn(2, 3, 4 * patch, 4 * patch, generator=gen))
    _assert_parity(reference, model, torch.randn(1, 3, 3 * patch, 5 * patch, generator=gen))


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_registered_configuration_has_timm_shapes(name):
    """The registered name at full size, built on the meta device (no memory, no time):
    every tensor of timm's model, converted, has zoo's name and shape; defaults agree."""
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
        model = zoo.create_model(name)
    theirs = {k: tuple(v.shape) for k, v in to_zoo_state_dict(reference.state_dict()).items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert theirs == ours
    default = timm.models.get_pretrained_cfg(name)
    assert model.pretrained_cfg.preprocess["input_size"] == tuple(default.input_size)
    assert model.num_classes == reference.num_classes


@pytest.mark.parametrize("name", FULL_DEPTH)
def test_full_depth_parity(name, tmp_path):
    reference = timm_model(name, dynamic_img_size=True)
    path = _save_safetensors(reference, tmp_path / "model.safetensors")
    model = zoo.create_model(name, pretrained=path).eval()
    img, patch = model.front_end.img_size[0], model.front_end.patch_size[0]
    gen = torch.Generator().manual_seed(0)
    if model.num_classes == 0:   # features only (DINOv2): compare the pooled features
        reference.reset_classifier(5)
        model.reset_classifier(5)
        model.head.fc.load_state_dict(reference.head.state_dict())
    _assert_parity(reference, model, torch.randn(1, 3, img, img, generator=gen))
    _assert_parity(reference, model, torch.randn(1, 3, img - 2 * patch, img, generator=gen))


def test_zoo_only_variants_have_timm_shapes(timm_vit, tmp_path):
    for name in ZOO_ONLY:  # zoo's small-image variants: timm builds them from the same kwargs
        entry, _ = get_entry(name)
        reference = timm_vit(None, **entry.args, num_classes=entry.default_cfg.num_classes,
                             dynamic_img_size=True)
        model = zoo.create_model(name, pretrained=_save_safetensors(reference, tmp_path / "m.safetensors"))
        img = entry.args["img_size"]
        _assert_parity(reference, model.eval(), torch.randn(2, 3, img, img))


def test_coverage_of_timm_vit_names():
    """>= 150 of timm's vit_* architectures are built (each checked above); every other one
    is refused by name with a reason, so the list of what remains is complete."""
    theirs = set(timm.list_models("vit_*"))
    built, refused = theirs & set(TIMM_NAMES), theirs & set(refused_models())
    print(f"zoo builds {len(built)} of timm's {len(theirs)} vit_* architectures")
    assert len(built) >= 150
    assert built | refused == theirs, sorted(theirs - built - refused)
    assert set(TIMM_NAMES) <= set(timm.list_models()), "a timm-named variant timm does not know"
    assert not set(ZOO_ONLY) & set(timm.list_models())


@pytest.mark.parametrize("name, reason", [
    ("vit_relpos_base_patch16_224", "relative position bias is not supported"),
    ("vit_base_r50_s16_224", "CNN"),
    ("vit_dwee_patch16_reg1_gap_256", "differential attention"),
    ("vit_base_patch16_sapiens2", "grouped-query attention"),
    ("deit_base_distilled_patch16_224", "distillation"),
])
def test_unbuilt_timm_architectures_are_refused_by_name(name, reason):
    with pytest.raises(zoo.UnsupportedModelError, match=rf"{name}.*not built by zoo: .*{reason}"):
        zoo.create_model(name)
    assert isinstance(zoo.UnsupportedModelError("x"), zoo.ModelNotFoundError)


@pytest.mark.parametrize("name, feature", [
    ("vit_relpos_small_patch16_224", "relative position bias"),
    ("deit_tiny_distilled_patch16_224", "distillation token"),
    ("vit_dwee_patch16_reg1_gap_256", "differential attention"),
])
def test_checkpoints_of_unbuilt_architectures_are_refused_whole(name, feature, tmp_path):
    state = timm_model(name, depth=1).state_dict()
    with pytest.raises(ValueError, match=feature):
        to_zoo_state_dict(state)
    path = _save_safetensors(timm_model(name, depth=1), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=feature):   # never loaded partially
        zoo.create_model("vit_small_patch16_224", pretrained=path, depth=1)


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


@pytest.mark.parametrize("name", ["vit_base_patch16_224.augreg2_in21k_ft_in1k",      # crop 0.9
                                  "vit_small_patch14_reg4_dinov2.lvd142m",           # 518, ImageNet stats
                                  "vit_base_patch16_clip_384.openai_ft_in1k"])       # squash
def test_weights_carry_timms_evaluation_preprocessing(name):
    """A tag's cfg gives timm's own eval transform (resize, crop mode, mean / std): on a
    non-square image the pixels agree up to resampling rounding (PIL vs torch kernels)."""
    import numpy as np
    from PIL import Image

    from zoo.data.images import eval_transform, preprocess_settings

    image = Image.fromarray((np.random.RandomState(0).rand(300, 200, 3) * 255).astype("uint8"))
    _, _, tag = name.partition(".")
    cfg = get_entry(name)[0].cfg(tag)
    ours = eval_transform(cfg.preprocess["input_size"][-1], **preprocess_settings(cfg.preprocess))
    with torch.device("meta"):
        reference = timm.create_model(name, pretrained=False)
    theirs = timm.data.create_transform(**timm.data.resolve_data_config(model=reference))
    a, b = ours(image), theirs(image)
    assert a.shape == b.shape == (3, *cfg.preprocess["input_size"][1:])
    assert (a - b).abs().mean().item() < 1e-3
