"""Every distinct image-model configuration, shrunk (depth 2, width 64) but with its own patch and
image size: output shapes, gradients, state dicts, resampling, heads, errors.

Names that differ only in sizes (width, depth, heads, MLP width, input size) share a
configuration; the smallest input size of each stands for it here. Every name is checked
against timm in ``test_timm_parity.py``.
"""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.layers.pos_embed import resample_pos_embed
from zoo.registry import get_entry

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE_ARGS = ("img_size", "embed_dim", "depth", "num_heads", "mlp_ratio", "mlp_hidden")


def _distinct_configurations(names: list[str]) -> list[str]:
    """One name per configuration (arguments other than sizes), the smallest input size."""
    chosen: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (get_entry(n)[0].args["img_size"], n)):
        args = {k: v for k, v in get_entry(name)[0].args.items() if k not in SIZE_ARGS}
        chosen.setdefault(repr(sorted(args.items())), name)
    return sorted(chosen.values())


IMAGE_MODELS = _distinct_configurations(zoo.list_models(modality="image"))
TINY = dict(depth=2, embed_dim=64, num_heads=2, mlp_hidden=None, num_classes=5)


def _build(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return zoo.create_model(name, **{**TINY, **kwargs}).eval()


def _sizes(model) -> tuple[int, int, int]:
    """(image side, patch side, channels) of a square-trained model."""
    fe = model.front_end
    assert fe.img_size[0] == fe.img_size[1] and fe.patch_size[0] == fe.patch_size[1]
    return fe.img_size[0], fe.patch_size[0], fe.in_chans


def _images(model, batch: int = 2, size=None, seed: int = 0) -> torch.Tensor:
    img, _, chans = _sizes(model)
    h, w = (img, img) if size is None else size
    return torch.randn(batch, chans, h, w, generator=torch.Generator().manual_seed(seed))


def test_every_image_model_has_a_representative():
    every = zoo.list_models(modality="image")
    assert "vit_nano_patch4_16" in IMAGE_MODELS and len(IMAGE_MODELS) < len(every)
    covered = {repr(sorted((k, v) for k, v in get_entry(n)[0].args.items() if k not in SIZE_ARGS))
               for n in IMAGE_MODELS}
    assert all(repr(sorted((k, v) for k, v in get_entry(n)[0].args.items() if k not in SIZE_ARGS))
               in covered for n in every)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_build_keeps_the_variant_geometry(name):
    model = _build(name)
    args = get_entry(name)[0].args
    assert model.front_end.img_size == (args["img_size"],) * 2
    assert model.front_end.patch_size == (args["patch_size"],) * 2
    assert model.embed_dim == 64 and len(model.encoder.blocks) == 2
    assert model.num_classes == 5
    assert zoo.create_model(name, depth=1, embed_dim=64, num_heads=2, mlp_hidden=None).num_classes \
        == get_entry(name)[0].default_cfg.num_classes


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_forward_shape_finite_and_features(name):
    model = _build(name)
    img, patch, _ = _sizes(model)
    x = _images(model)
    with torch.no_grad():
        logits = model(x)
        tokens = model.forward_features(x)
        pooled = model.forward_head(tokens, pre_logits=True)
    assert logits.shape == (2, model.num_classes)
    assert torch.isfinite(logits).all()
    n = model.front_end.num_prefix_tokens + (img // patch) ** 2
    assert tokens.shape == (2, n, 64)
    assert pooled.shape == (2, 64)
    torch.testing.assert_close(model.forward_head(tokens), logits, rtol=0, atol=0)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_gradient_reaches_every_parameter(name):
    model = _build(name).train()
    x = _images(model)
    out = model(x)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    no_grad = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert no_grad == []


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_state_dict_round_trip(name):
    source, target = _build(name, seed=0), _build(name, seed=1)
    x = _images(source)
    with torch.no_grad():
        expected = source(x)
        assert not torch.allclose(target(x), expected), "two seeds gave the same model"
        target.load_state_dict(source.state_dict())
        torch.testing.assert_close(target(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_resampling_is_a_no_op_on_the_same_grid(name):
    model = _build(name)
    fe = model.front_end
    table = fe.pos_embed
    if table is not None:   # rotary-only models have no table
        same = resample_pos_embed(table, fe.grid_size, fe.grid_size,
                                  num_prefix_tokens=fe._table_prefix)
        assert torch.equal(same, table)
        assert torch.equal(fe.position_table(fe.grid_size), table)
    state = model.state_dict()
    adapted = model.adapt_state_dict(state)
    assert adapted.keys() == state.keys()
    assert all(adapted[k] is state[k] for k in state)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_other_input_sizes_resample_positions(name):
    model = _build(name)
    img, patch, _ = _sizes(model)
    fe = model.front_end
    for h, w in ((img + patch, img + patch), (img - patch, img + 2 * patch)):
        x = _images(model, size=(h, w))
        with torch.no_grad():
            logits = model(x)
            tokens = model.forward_features(x)
        assert logits.shape == (2, model.num_classes) and torch.isfinite(logits).all()
        grid = (h // patch, w // patch)
        assert tokens.shape == (2, fe.num_prefix_tokens + grid[0] * grid[1], 64)
        if fe.pos_embed is not None:
            table = fe.position_table(grid)
            assert table.shape == (1, fe._table_prefix + grid[0] * grid[1], 64)
            # prefix rows (class token) are never interpolated
            torch.testing.assert_close(table[:, : fe._table_prefix],
                                       fe.pos_embed[:, : fe._table_prefix], rtol=0, atol=0)
        if fe.rope is not None:   # rotary tables follow the input's own grid
            rope = fe.rope_table(x)
            tables = rope if isinstance(rope, list) else [rope]
            assert all(t.sin.shape[-2] == tokens.shape[1] for t in tables)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_reset_classifier_to_pooled_features(name):
    model = _build(name)
    x = _images(model)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        features = model(x)
    assert model.num_classes == 0 and model.model_args["num_classes"] == 0
    assert features.shape == (2, 64)
    torch.testing.assert_close(features, pooled, rtol=0, atol=0)
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_no_weight_decay_and_layer_groups(name):
    model = _build(name)
    params = dict(model.named_parameters())
    skip = model.no_weight_decay()
    special = {f"front_end.{n}" for n in ("pos_embed", "cls_token", "reg_token", "rope.freqs")}
    assert skip == special & params.keys() and skip
    groups = {n: model.layer_id(n) for n in params}
    assert set(groups.values()) == set(range(model.num_layer_groups))
    assert model.num_layer_groups == len(model.encoder.blocks) + 2
    assert groups["front_end.proj.weight"] == 0
    for param_name, group in groups.items():
        if param_name.startswith("encoder.blocks."):
            assert group == int(param_name.split(".")[2]) + 1, param_name
    assert groups["head.fc.weight"] == model.num_layer_groups - 1


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_bad_inputs_raise_helpful_errors(name):
    model = _build(name)
    img, patch, chans = _sizes(model)
    with pytest.raises(ValueError, match=rf"expected {chans}-channel images.*got 1 channels"):
        model(torch.randn(1, 1, img, img))
    with pytest.raises(ValueError, match=rf"not divisible by the patch size {patch}x{patch}"):
        model(torch.randn(1, chans, img + 1, img))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, C, H, W\)"):
        model(torch.randn(chans, img, img))


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_configuration_is_explained_on_its_patch_grid(name):
    """Gradient rollout through every block kind, pool (token, avg, map), rope and register
    configuration: one relevance per patch, finite, not all zero."""
    model = _build(name)
    relevance = zoo.explain(model, _images(model))
    assert relevance.shape == (2, *model.front_end.grid_size)
    assert torch.isfinite(relevance).all() and (relevance >= 0).all() and relevance.sum() > 0


def test_global_pool_avg_and_no_class_token():
    model = _build("vit_tiny_patch4_32", global_pool="avg", class_token=False)
    assert model.front_end.num_prefix_tokens == 0
    assert "front_end.cls_token" not in dict(model.named_parameters())
    assert "head.fc_norm.weight" in model.state_dict()
    assert not any(k.startswith("encoder.norm.") for k in model.state_dict())
    x = _images(model)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (2, 64, 64)
        expected = model.head.fc(model.head.fc_norm(tokens.mean(dim=1)))
        torch.testing.assert_close(model(x), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="needs a class token"):
        _build("vit_tiny_patch4_32", global_pool="token", class_token=False)


def test_attention_maps_cover_every_block():
    model = _build("vit_nano_patch4_16")
    x = _images(model)
    maps = model.get_attention_maps(x)
    n = 1 + (16 // 4) ** 2
    assert [m.shape for m in maps] == [(2, 2, n, n)] * 2
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 2, n))


# --- torch.compile: the optional fast path gives the eager outputs ---------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name,kwargs,shape", [
    ("vit_nano_patch4_16", dict(depth=2), (3, 3, 16, 16)),
    ("patchtst_tiny_l336", dict(context_length=64, horizon=8, depth=2), (3, 64, 7)),
])
def test_compiled_inference_matches_eager(name, kwargs, shape):
    """What benchmarks/bench.py --compile times: inductor with frozen weights, same outputs."""
    torch.manual_seed(0)
    model = zoo.create_model(name, **kwargs).eval()
    x = torch.randn(shape).cumsum(1) if model.modality == "series" else torch.randn(shape)
    compiled = torch.compile(model, options={"freezing": True})
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
