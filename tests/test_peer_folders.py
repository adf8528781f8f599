"""``zoo.load`` reads peers' own folders, recognised from their ``config.json``: timm's hub layout,
HF ``save_pretrained`` folders of ``ASTForAudioClassification`` and ``PatchTSTForPrediction``,
locally and behind ``hf-hub:`` (an offline cache laid out as huggingface_hub writes it), and
gives the peers' outputs. The README's DINOv2 / SigLIP / CLIP examples run from such a cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from tests.conftest import fill_with_noise, hf_cache_repo, timm_model

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def offline_hub(isolated_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return isolated_caches.hub


# --- timm's hub layout ------------------------------------------------------------------------------

@pytest.mark.parametrize("safetensors", [True, False], ids=["safetensors", "pytorch_model.bin"])
def test_a_timm_folder_loads_by_its_config(tmp_path, offline_hub, safetensors):
    reference = timm_model("vit_small_patch14_reg4_dinov2.lvd142m", depth=2, img_size=70,
                           num_classes=4)
    folder = tmp_path / "timm_folder"
    timm.models.save_for_hf(reference, str(folder), safe_serialization=safetensors)
    x = torch.randn(2, 3, 70, 70)
    for source in (folder, "hf-hub:someone/dinov2-finetuned"):
        if str(source).startswith("hf-hub:"):
            hf_cache_repo(offline_hub, "someone/dinov2-finetuned", _folder_files(folder))
        model = zoo.load(source).eval()
        assert len(model.encoder.blocks) == 2 and model.num_classes == 4
        # the registered tag's cfg: timm's hub id, preprocessing and license
        assert model.pretrained_cfg.name == "vit_small_patch14_reg4_dinov2.lvd142m"
        assert model.pretrained_cfg.preprocess["input_size"] == (3, 70, 70)
        assert model.pretrained_cfg.license == "apache-2.0"
        with torch.no_grad():
            assert (model(x) - reference(x)).abs().max().item() < 1e-4


def test_a_timm_folder_of_another_architecture_is_named(tmp_path):
    folder = tmp_path / "siglip"
    timm.models.save_for_hf(timm_model("vit_base_patch16_siglip_224", depth=1, img_size=32),
                            str(folder), safe_serialization=True)
    with pytest.raises(zoo.CheckpointMismatchError,
                       match=r"holds a 'vit_base_patch16_siglip_224' model \(timm checkpoint\)"):
        zoo.create_model("vit_base_patch16_224", pretrained=folder, depth=1)
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["mystery_option"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="timm model_args 'mystery_option' has no zoo equivalent"):
        zoo.load(folder)
    config["architecture"] = "vit_relpos_base_patch16_224"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(zoo.UnsupportedModelError, match="relative position bias"):
        zoo.load(folder)


@pytest.mark.parametrize("name", ["vit_small_patch14_reg4_dinov2.lvd142m",
                                  "vit_base_patch16_siglip_224.v2_webli",
                                  "vit_base_patch32_clip_224.openai"])
def test_readme_flagship_names_load_their_registered_weights_offline(name, offline_hub, tmp_path):
    """create_model(name, pretrained=True) reads timm's hub repo for the tag (here: a local cache
    holding random weights in timm's layout) and gives timm's features."""
    arch = name.split(".")[0]
    reference = timm_model(arch, num_classes=0)
    folder = tmp_path / "repo"
    timm.models.save_for_hf(reference, str(folder), safe_serialization=True)
    hf_cache_repo(offline_hub, f"timm/{name}", _folder_files(folder))
    model = zoo.create_model(name, pretrained=True).eval()
    assert model.pretrained_cfg.hf_hub_id == f"timm/{name}" and model.num_classes == 0
    x = torch.randn(1, *model.pretrained_cfg.preprocess["input_size"])
    with torch.no_grad():
        assert (model(x) - reference(x)).abs().max().item() < 1e-4


# --- transformers' AST and PatchTST folders ------------------------------------------------------

def _hf_ast_folder(folder: Path) -> torch.nn.Module:
    config = transformers.ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=128, max_length=100, num_mel_bins=64,
                                    frequency_stride=12, time_stride=12, num_labels=3,
                                    id2label={0: "dog", 1: "rain", 2: "speech"},
                                    label2id={"dog": 0, "rain": 1, "speech": 2})
    model = fill_with_noise(transformers.ASTForAudioClassification(config))
    model.save_pretrained(folder)
    transformers.ASTFeatureExtractor(num_mel_bins=64, max_length=100, mean=-3.5, std=2.5) \
        .save_pretrained(folder)
    return model


def test_an_hf_ast_folder_loads_with_its_labels_and_feature_extractor(tmp_path, offline_hub):
    folder = tmp_path / "ast"
    hf = _hf_ast_folder(folder)
    extractor = transformers.ASTFeatureExtractor.from_pretrained(folder)
    wave = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    features = extractor(list(wave.numpy()), sampling_rate=16000, return_tensors="pt").input_values
    hf_cache_repo(offline_hub, "someone/ast-small", _folder_files(folder))
    for source in (folder, "hf-hub:someone/ast-small"):
        model = zoo.load(source).eval()
        assert model.pretrained_cfg.labels == ("dog", "rain", "speech")
        assert (model.fbank_config.mean, model.fbank_config.std) == (-3.5, 2.5)
        with torch.no_grad():
            expected = hf(features).logits
            assert (model(features) - expected).abs().max().item() < 1e-4   # the same features
            assert (model(wave) - expected).abs().max().item() < 1e-3       # waveforms in


def test_an_hf_patchtst_folder_loads_and_forecasts_as_transformers(tmp_path, offline_hub):
    config = transformers.PatchTSTConfig(num_input_channels=3, context_length=37, patch_length=8,
                                         patch_stride=4, prediction_length=5, d_model=16,
                                         num_attention_heads=2, num_hidden_layers=2, ffn_dim=32)
    hf = fill_with_noise(transformers.PatchTSTForPrediction(config))
    folder = tmp_path / "patchtst"
    hf.save_pretrained(folder)
    hf_cache_repo(offline_hub, "someone/patchtst", _folder_files(folder))
    x = torch.randn(4, 37, 3).cumsum(1) + 2.0
    for source in (folder, "hf-hub:someone/patchtst"):
        model = zoo.load(source).eval()
        assert (model.context_length, model.horizon) == (37, 5)
        with torch.no_grad():
            expected = hf(past_values=x).prediction_outputs
            assert (model(x) - expected).abs().max().item() < 1e-4


def test_folders_zoo_cannot_read_get_a_clear_error(tmp_path):
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "bert" / "model.safetensors"))
    with pytest.raises(ValueError, match="model_type='bert'"):
        zoo.load(tmp_path / "bert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        zoo.load(tmp_path / "empty")
