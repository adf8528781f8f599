"""AST models: parity with HF transformers on the same weights, image -> audio transfer, and
the generic checks over every registered audio variant (shrunk)."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

import zoo
from tests.conftest import fill_with_noise, hf_cache_repo
from zoo.checkpoint import CheckpointMismatchError
from zoo.convert import to_zoo_state_dict
from zoo.convert.hf_ast import ast_args_from_hf_config, convert_hf_ast

pytestmark = pytest.mark.usefixtures("one_thread")

AUDIO_MODELS = zoo.list_models(modality="audio")
TINY = dict(depth=2, embed_dim=64, num_heads=2)


def _hf_ast(seed: int = 0, **config):
    transformers = pytest.importorskip("transformers")
    defaults = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, max_length=100, num_mel_bins=128, num_labels=7)
    cfg = transformers.ASTConfig(**{**defaults, **config})
    torch.manual_seed(seed)
    return fill_with_noise(transformers.ASTForAudioClassification(cfg), seed), cfg


def _to_v4_layout(state_dict: dict) -> dict:
    """transformers 5.x keys -> the 4.x layout that the hub checkpoints (MIT/ast-*) use."""
    subs = [(r"\.layers\.(\d+)\.attention\.q_proj", r".encoder.layer.\1.attention.attention.query"),
            (r"\.layers\.(\d+)\.attention\.k_proj", r".encoder.layer.\1.attention.attention.key"),
            (r"\.layers\.(\d+)\.attention\.v_proj", r".encoder.layer.\1.attention.attention.value"),
            (r"\.layers\.(\d+)\.attention\.o_proj", r".encoder.layer.\1.attention.output.dense"),
            (r"\.layers\.(\d+)\.mlp\.fc1", r".encoder.layer.\1.intermediate.dense"),
            (r"\.layers\.(\d+)\.mlp\.fc2", r".encoder.layer.\1.output.dense"),
            (r"\.layers\.(\d+)\.", r".encoder.layer.\1.")]
    out = {}
    for source_key, value in state_dict.items():
        key = source_key
        for pattern, repl in subs:
            key, n = re.subn(pattern, repl, key)
            if n:
                break
        out[key] = value
    return out


HF_CONFIGS = [
    dict(),                                                    # 12 x 9 grid, stride 10
    dict(frequency_stride=16, time_stride=16, max_length=128),  # no overlap
    dict(num_mel_bins=64, max_length=64, frequency_stride=8, time_stride=12, qkv_bias=False),
]


@pytest.mark.parametrize("config", HF_CONFIGS, ids=["ast", "no_overlap", "64bins_nobias"])
@pytest.mark.parametrize("layout", ["transformers5", "hub_v4"])
def test_hf_ast_parity_same_logits(tmp_path, config, layout):
    hf, cfg = _hf_ast(**config)
    state = hf.state_dict()
    if layout == "hub_v4":
        state = _to_v4_layout(state)
        assert any(".encoder.layer.0.attention.attention.query.weight" in k for k in state)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = zoo.create_model("ast_base", pretrained=str(path),
                             **ast_args_from_hf_config(cfg.to_dict())).eval()
    assert model.num_classes == 7
    x = torch.randn(3, cfg.max_length, cfg.num_mel_bins, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(x).logits
        ours = model(x)
        hidden = hf.audio_spectrogram_transformer(x).last_hidden_state
    assert (ours - ref).abs().max().item() < 1e-4
    torch.testing.assert_close(model.forward_features(x), hidden, atol=1e-4, rtol=0)


def test_hf_ast_end_to_end_from_waveform_matches_extractor_plus_model():
    transformers = pytest.importorskip("transformers")
    hf, cfg = _hf_ast()
    extractor = transformers.ASTFeatureExtractor(max_length=cfg.max_length)
    model = zoo.create_model("ast_base", **ast_args_from_hf_config(cfg.to_dict())).eval()
    model.load_state_dict(convert_hf_ast(hf.state_dict()))
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    inputs = extractor(list(wave.numpy()), sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        ref = hf(inputs).logits
        ours = model(wave)                                 # waveform in, fbank inside
    assert (ours - ref).abs().max().item() < 1e-3


def test_hf_ast_unknown_key_is_named():
    hf, _ = _hf_ast()
    state = dict(hf.state_dict())
    state["audio_spectrogram_transformer.layers.0.attention.q_norm.weight"] = torch.ones(64)
    with pytest.raises(ValueError, match=r"key zoo does not know: 'audio_spectrogram_transformer"
                                         r"\.layers\.0\.attention\.q_norm\.weight'"):
        to_zoo_state_dict(state)


def test_hf_ast_into_the_wrong_variant_names_the_shapes(tmp_path):
    hf, _ = _hf_ast()
    path = tmp_path / "ast.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(path))
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches: front_end\.cls_token"):
        zoo.create_model("ast_tiny", pretrained=str(path), target_frames=100)


# --- image -> audio transfer ------------------------------------------------------------------

def test_encoder_from_image_vit_model():
    torch.manual_seed(0)
    vit = zoo.create_model("vit_tiny_patch16_224", depth=2)
    ast = zoo.create_model("ast_tiny", num_classes=10, depth=2, target_frames=100, encoder_from=vit)
    for (name, a), b in zip(ast.encoder.state_dict().items(), vit.encoder.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    torch.testing.assert_close(ast.front_end.proj.weight,
                               vit.front_end.proj.weight.sum(dim=1, keepdim=True))
    assert torch.equal(ast.front_end.cls_token, vit.front_end.cls_token)
    assert torch.equal(ast.front_end.dist_token, vit.front_end.cls_token)
    assert ast.front_end.pos_embed.shape == (1, 2 + 12 * 9, 192)
    # the class position is kept; the 14 x 14 grid is resampled to 12 x 9
    assert torch.equal(ast.front_end.pos_embed[:, :2], vit.front_end.pos_embed[:, :1].expand(-1, 2, -1))
    grid = vit.front_end.pos_embed[:, 1:].reshape(14, 14, 192)
    assert (ast.front_end.pos_embed[0, 2:].reshape(12, 9, 192).mean() - grid.mean()).abs() < 0.01
    assert ast(torch.randn(2, 8000) * 0.1).shape == (2, 10)


def test_encoder_from_a_timm_checkpoint_file(tmp_path, timm_vit):
    timm_model = timm_vit("vit_tiny_patch16_224", depth=2)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    ast = zoo.create_model("ast_tiny", num_classes=5, depth=2, target_frames=128,
                           encoder_from=str(path))
    assert torch.equal(ast.encoder.blocks[1].attn.qkv.weight, timm_model.blocks[1].attn.qkv.weight)
    assert torch.equal(ast.encoder.norm.weight, timm_model.norm.weight)


def test_encoder_from_mismatched_width_is_a_clear_error():
    vit = zoo.create_model("vit_small_patch16_224", depth=2)
    with pytest.raises(ValueError, match="image encoder does not fit this audio model"):
        zoo.create_model("ast_tiny", depth=2, target_frames=100, encoder_from=vit)


def test_encoder_from_and_pretrained_together_are_refused(tmp_path):
    vit = zoo.create_model("vit_tiny_patch16_224", depth=2)
    with pytest.raises(ValueError, match="either pretrained= or encoder_from="):
        zoo.create_model("ast_tiny", pretrained=str(tmp_path), encoder_from=vit)


# --- every registered audio variant, shrunk ---------------------------------------------------

def _build(name: str, **kwargs):
    """A shrunk variant with a classifier (encoder-only weights, such as Whisper's, register
    no classes: 0 would return pooled features)."""
    torch.manual_seed(0)
    return zoo.create_model(name, **{**TINY, "target_frames": 64, "num_classes": 3, **kwargs}).eval()


@pytest.mark.parametrize("name", AUDIO_MODELS)
def test_audio_model_forward_waveform_and_fbank(name):
    model = _build(name)
    c = model.fbank_config
    wave = torch.randn(2, c.sample_rate // 2, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        from_wave = model(wave)
        from_fbank = model(model.filterbank(wave))
    assert from_wave.shape == (2, model.num_classes) and torch.isfinite(from_wave).all()
    torch.testing.assert_close(from_wave, from_fbank)
    assert model.pretrained_cfg.preprocess["sample_rate"] == c.sample_rate


@pytest.mark.parametrize("name", AUDIO_MODELS)
def test_audio_model_gradients_reach_every_parameter(name):
    model = _build(name).train()
    fbank = torch.randn(2, 64, model.fbank_config.num_mel_bins)
    model(fbank).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


@pytest.mark.parametrize("pool", ["prefix_avg", "token", "avg"])
def test_fused_and_manual_attention_agree_and_pools(pool):
    model = _build("ast_tiny", global_pool=pool)
    x = torch.randn(2, 64, 128)
    with torch.no_grad():
        fused = model(x)
        model.encoder.set_fused_attention(False)
        manual = model(x)
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=1e-5)


def test_state_dict_round_trip_and_other_length(tmp_path):
    model = _build("ast_tiny")
    zoo.save(model, tmp_path / "pkg")
    again = zoo.load(tmp_path / "pkg").eval()
    x = torch.randn(1, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(x), again(x))
    assert again.pretrained_cfg.preprocess["target_frames"] == 64
    # the same weights into a model for longer clips: positions resampled along time
    longer = zoo.create_model("ast_tiny", pretrained=str(tmp_path / "pkg"), target_frames=128)
    assert longer.front_end.grid_size == (12, 12)
    with torch.no_grad():
        assert longer(torch.randn(1, 128, 128)).shape == (1, model.num_classes)


def test_hf_ast_from_an_hf_hub_repo_offline(isolated_caches, monkeypatch, tmp_path):
    """A hub repo as MIT publishes AST (HF config.json + 4.x-layout weights), read offline."""
    import json

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf, cfg = _hf_ast(seed=3)
    weights = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in _to_v4_layout(hf.state_dict()).items()}, str(weights))
    hf_cache_repo(isolated_caches.hub, "mit/ast-tiny-test", {
        "model.safetensors": weights.read_bytes(),
        "config.json": json.dumps(cfg.to_dict()).encode()})
    model = zoo.create_model("ast_base", pretrained="hf-hub:mit/ast-tiny-test",
                             **ast_args_from_hf_config(cfg.to_dict())).eval()
    x = torch.randn(2, cfg.max_length, cfg.num_mel_bins)
    with torch.no_grad():
        assert (model(x) - hf(x).logits).abs().max().item() < 1e-4
