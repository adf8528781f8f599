"""Whisper: the log-mel front end against transformers' WhisperFeatureExtractor, HF Whisper
checkpoints (classifier, encoder-decoder, hub ids) loading with the same outputs from the same
16 kHz waveforms, clear errors, the registered sizes, and short-clip models.

Tolerances: the log-mel matches the extractor to 1e-5 (float32 rounding; about 1.2e-7 seen);
logits and encoder tokens of the converted models match transformers' to 1e-4 (about 1e-6
seen), in eval mode.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

import zoo
from tests.conftest import fill_with_noise, hf_cache_repo
from zoo.convert import to_zoo_state_dict
from zoo.convert.hf_whisper import whisper_args_from_hf_config
from zoo.frontends.whisper import WhisperLogMel, WhisperMelConfig, whisper_sinusoids
from zoo.registry import get_entry

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

MEL_TOL = 1e-5
LOGIT_TOL = 1e-4
TINY = dict(depth=2, embed_dim=64, num_heads=2)
# a clip under one 25 ms frame, 1 s, an odd length, one whose last frame reads the chunk's
# reflected end (within n_fft / 2 of 30 s), exactly 30 s, and one longer than 30 s (cut)
LENGTHS = [100, 16000, 37123, 479_960, 480_000, 500_000]


def _clips(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.3 * torch.randn(n, generator=g) for n in lengths]


def _batch(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    wave = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
    return wave, torch.tensor([len(c) for c in clips])


def _extract(extractor, clips: list[torch.Tensor]) -> torch.Tensor:
    """transformers' log-mel, time-major (B, T, F) like zoo's."""
    out = extractor([c.numpy() for c in clips], sampling_rate=16000, return_tensors="pt")
    return out.input_features.transpose(1, 2)


# --- the log-mel front end --------------------------------------------------------------------

@pytest.mark.parametrize("bins", [80, 128])
def test_log_mel_matches_the_feature_extractor(bins):
    extractor = transformers.WhisperFeatureExtractor(feature_size=bins)
    clips = _clips(LENGTHS)
    expected = _extract(extractor, clips)
    log_mel = WhisperLogMel(WhisperMelConfig(num_mel_bins=bins))
    wave, lengths = _batch(clips)
    with torch.inference_mode():
        batched = log_mel(wave, lengths=lengths)
        alone = torch.cat([log_mel(c[None]) for c in clips[:3]])
    assert batched.shape == expected.shape == (len(clips), 3000, bins)
    assert (batched - expected).abs().max().item() < MEL_TOL
    assert (alone - expected[:3]).abs().max().item() < MEL_TOL
    torch.testing.assert_close(log_mel.mel_filters, torch.from_numpy(extractor.mel_filters).float(),
                               rtol=0, atol=1e-8)


def test_log_mel_of_silence_and_frames_counted_as_the_extractor_masks():
    extractor = transformers.WhisperFeatureExtractor()
    clips = [torch.zeros(3000), *_clips([1, 161, 16000, 479_999])]
    log_mel = WhisperLogMel()
    wave, lengths = _batch(clips)
    ours = log_mel(wave, lengths=lengths)
    assert (ours - _extract(extractor, clips)).abs().max().item() < MEL_TOL
    assert torch.allclose(ours[0], torch.tensor(-1.5))        # (log10(1e-10) + 4) / 4
    mask = extractor([c.numpy() for c in clips], sampling_rate=16000,
                     return_attention_mask=True).attention_mask
    assert log_mel.num_frames(lengths).tolist() == mask.sum(-1).tolist()
    assert log_mel.num_frames(16000) == 100 and log_mel.num_frames(10 ** 6) == 3000


def test_log_mel_lengths_make_padding_silent_and_gradients_flow():
    clips = _clips([8000, 3000])
    wave, lengths = _batch(clips)
    noisy = wave.clone()
    noisy[1, 3000:] = 1.0                                    # junk past clip 1's end
    log_mel = WhisperLogMel(WhisperMelConfig(target_frames=100))
    torch.testing.assert_close(log_mel(noisy, lengths=lengths), log_mel(wave), rtol=0, atol=0)
    leaf = wave.clone().requires_grad_(True)
    log_mel(leaf, lengths=lengths).sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


# --- HF checkpoints -----------------------------------------------------------------------------

def _hf_config(**overrides):
    return transformers.WhisperConfig(**{
        **dict(d_model=64, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=128,
               decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64,
               max_target_positions=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
               decoder_start_token_id=1, classifier_proj_size=32, num_labels=5),
        **overrides})


def _hf(cls: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return fill_with_noise(getattr(transformers, cls)(_hf_config(**overrides)), seed)


@pytest.fixture(scope="module")
def hf_classifier(tmp_path_factory):
    """A random-weight WhisperForAudioClassification (30 s, 80 bins) saved as HF saves it."""
    hf = _hf("WhisperForAudioClassification")
    folder = tmp_path_factory.mktemp("hf_whisper")
    hf.save_pretrained(folder)
    extractor = transformers.WhisperFeatureExtractor()
    extractor.save_pretrained(folder)
    return hf, extractor, folder


def test_hf_classifier_folder_gives_transformers_logits_from_waveforms(hf_classifier):
    hf, extractor, folder = hf_classifier
    model = zoo.load(folder).eval()
    assert type(model).__name__ == "WhisperEncoderClassifier" and model.num_classes == 5
    assert model.pretrained_cfg.labels == tuple(f"LABEL_{i}" for i in range(5))
    assert model.pretrained_cfg.preprocess["target_frames"] == 3000
    clips = _clips([16000, 40000, 5000, 480_000], seed=1)
    features = _extract(extractor, clips)
    with torch.no_grad():
        expected = hf(features.transpose(1, 2)).logits
        hidden = hf.encoder(features.transpose(1, 2)).last_hidden_state
        ours = model(_batch(clips)[0])                  # waveforms in, zero-padded: silence
        tokens = model.forward_features(features)
    diff = (ours - expected).abs().max().item()
    assert diff < LOGIT_TOL, diff
    assert (tokens - hidden).abs().max().item() < LOGIT_TOL
    assert torch.equal(model.front_end.pos_embed, hf.encoder.embed_positions.weight)


def test_a_zero_key_bias_is_inert(hf_classifier):
    """zoo's fused QKV carries a key bias Whisper lacks: any value gives the same outputs."""
    model = zoo.load(hf_classifier[2]).eval()
    x = torch.randn(2, 3000, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(x)
        for block in model.encoder.blocks:
            block.attn.qkv.bias[64:128].normal_()         # the key third
        torch.testing.assert_close(model(x), before, rtol=0, atol=1e-5)


def test_short_chunk_128_bins_folder_reads_the_preprocessor(tmp_path):
    """A 2 s chunk (200 frames, 100 positions) and 128 bins: settings come from the folder."""
    hf = _hf("WhisperForAudioClassification", seed=2, num_mel_bins=128, max_source_positions=100)
    extractor = transformers.WhisperFeatureExtractor(feature_size=128, chunk_length=2)
    hf.save_pretrained(tmp_path)
    extractor.save_pretrained(tmp_path)
    model = zoo.load(tmp_path).eval()
    assert model.fbank_config.target_frames == 200 and model.fbank_config.num_mel_bins == 128
    clips = _clips([12000, 32000, 40000], seed=3)
    with torch.no_grad():
        expected = hf(_extract(extractor, clips).transpose(1, 2)).logits
        assert (model(_batch(clips)[0]) - expected).abs().max().item() < LOGIT_TOL


def test_encoder_decoder_checkpoints_drop_the_decoder(tmp_path):
    hf = _hf("WhisperForConditionalGeneration", seed=4)
    state = to_zoo_state_dict(hf.state_dict())            # model.encoder.* / model.decoder.*
    assert state and all(k.startswith(("front_end.", "encoder.")) for k in state)
    assert torch.equal(state["encoder.blocks.1.attn.qkv.bias"][64:128], torch.zeros(64))
    hf.save_pretrained(tmp_path)
    args = whisper_args_from_hf_config(hf.config.to_dict())
    assert "num_classes" not in args                      # no classifier to size
    features = torch.randn(2, 3000, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = hf.model.encoder(features.transpose(1, 2)).last_hidden_state
        features_only = zoo.load(tmp_path).eval()         # the checkpoint's 0 classes
        assert features_only.num_classes == 0
        pooled = features_only(features)
        torch.testing.assert_close(pooled, hidden.mean(dim=1), rtol=0, atol=LOGIT_TOL)
        classifier = zoo.load(tmp_path, num_classes=3).eval()   # new projector + classifier
        assert classifier(features).shape == (2, 3)
        assert (classifier.forward_features(features) - hidden).abs().max() < LOGIT_TOL
    plain = _hf("WhisperModel", seed=5).state_dict()       # encoder.* / decoder.*
    assert not any(k.startswith("decoder") for k in to_zoo_state_dict(plain))


def test_registered_name_fetches_the_openai_hub_repo(isolated_caches, monkeypatch, tmp_path):
    """whisper_tiny, pretrained=True reads openai/whisper-tiny (a tiny stand-in in the cache)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = _hf("WhisperForConditionalGeneration", seed=6, encoder_ffn_dim=256)
    hf.save_pretrained(tmp_path)
    hf_cache_repo(isolated_caches.hub, "openai/whisper-tiny", {
        name: (tmp_path / name).read_bytes() for name in ("model.safetensors", "config.json")})
    model = zoo.create_model("whisper_tiny", pretrained=True, num_classes=4, **TINY).eval()
    assert model.pretrained_cfg.hf_hub_id == "openai/whisper-tiny" and model.num_classes == 4
    features = zoo.create_model("whisper_tiny", pretrained=True, **TINY).eval()
    assert features.num_classes == 0                  # no classifier in a speech recogniser
    x = torch.randn(1, 3000, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = hf.model.encoder(x.transpose(1, 2)).last_hidden_state
        assert (model.forward_features(x) - hidden).abs().max() < LOGIT_TOL
        assert torch.isfinite(model(x)).all() and features(x).shape == (1, 64)


def test_unknown_key_and_weighted_layer_sum_are_refused(tmp_path):
    state = dict(_hf("WhisperForAudioClassification").state_dict())
    state["encoder.layers.0.self_attn.q_norm.weight"] = torch.ones(64)
    with pytest.raises(ValueError, match=re.escape("key zoo does not know: "
                                                   "'encoder.layers.0.self_attn.q_norm.weight'")):
        to_zoo_state_dict(state)
    with pytest.raises(ValueError, match="use_weighted_layer_sum"):
        whisper_args_from_hf_config(_hf_config(use_weighted_layer_sum=True).to_dict())
    weighted = _hf("WhisperForAudioClassification", use_weighted_layer_sum=True).state_dict()
    save_file({k: v.contiguous() for k, v in weighted.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ValueError, match="use_weighted_layer_sum"):
        zoo.create_model("whisper", pretrained=str(tmp_path / "w.safetensors"))


# --- errors ---------------------------------------------------------------------------------------

def test_bad_inputs_get_one_clear_sentence():
    model = zoo.create_model("whisper_tiny", target_frames=200, **TINY).eval()
    with pytest.raises(ValueError, match=r"expected a waveform \(B, S\) or a log-mel \(B, T, 80\), "
                                         r"got shape \(16000,\)"):
        model(torch.zeros(16000))
    with pytest.raises(ValueError, match=r"got shape \(1, 2, 16000\); mix multi-channel audio "
                                         r"\(B, C, S\) down with x.mean\(dim=1\)"):
        model(torch.zeros(1, 2, 16000))
    with pytest.raises(ValueError, match=r"log-mel \(B, T, 80\), got shape \(1, 200, 128\)"):
        model(torch.zeros(1, 200, 128))
    with pytest.raises(ValueError, match=r"expected mono waveforms \(B, S\), got shape \(16000,\)"):
        WhisperLogMel()(torch.zeros(16000))
    wave = torch.zeros(1, 1000)
    wave[0, 10] = float("nan")
    with pytest.raises(ValueError, match="waveform holds NaN or Inf samples"):
        model(wave)
    with pytest.raises(ValueError, match="3002-frame log-mel makes 1501 tokens, more than the "
                                         "model's 1500 positions"):
        model(torch.zeros(1, 3002, 80))
    with pytest.raises(ValueError, match="a log-mel cannot be resampled"):
        model(torch.zeros(1, 200, 80), sample_rate=8000)
    with pytest.raises(ValueError, match=r"lengths must lie in 0..1000"):
        WhisperLogMel()(torch.zeros(2, 1000), lengths=torch.tensor([10, 2000]))
    with pytest.raises(ValueError, match="more than the 1500 positions"):
        zoo.create_model("whisper_tiny", target_frames=3002, **TINY)


# --- the registered sizes -------------------------------------------------------------------------

# name: (width, layers, heads, mel bins, hub repo of the default weights)
SIZES = {
    "whisper_tiny": (384, 4, 6, 80, "openai/whisper-tiny"),
    "whisper_base": (512, 6, 8, 80, "openai/whisper-base"),
    "whisper_small": (768, 12, 12, 80, "openai/whisper-small"),
    "whisper_medium": (1024, 24, 16, 80, "openai/whisper-medium"),
    "whisper_large": (1280, 32, 20, 80, "openai/whisper-large"),
    "whisper_large_v2": (1280, 32, 20, 80, "openai/whisper-large-v2"),
    "whisper_large_v3": (1280, 32, 20, 128, "openai/whisper-large-v3"),
    "whisper_large_v3_turbo": (1280, 32, 20, 128, "openai/whisper-large-v3-turbo"),
}


def test_every_whisper_name_is_in_the_table():
    ctc = {f"{name}_ctc" for name in SIZES}
    assert set(zoo.list_models("whisper*")) == {"whisper", *SIZES, *ctc}
    assert set(zoo.list_models("whisper*", modality="audio")) == {"whisper", *SIZES}
    assert set(zoo.list_models("whisper*", modality="speech")) == ctc
    for name in ctc:   # the same OpenAI encoders, under a CTC head
        assert get_entry(name)[0].args == get_entry(name.removesuffix("_ctc"))[0].args
        assert [w.hf_hub_id for w in get_entry(name)[0].weights] == \
            [w.hf_hub_id for w in get_entry(name.removesuffix("_ctc"))[0].weights]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_registered_size_builds_on_meta_with_openais_encoder_shape(name):
    width, depth, heads, bins, repo = SIZES[name]
    entry, _ = get_entry(name)
    cfg = entry.cfg()
    assert (cfg.hf_hub_id, cfg.license) == (repo, "apache-2.0")
    assert cfg.preprocess["num_mel_bins"] == bins
    with torch.device("meta"):
        model = zoo.create_model(name)
    assert model.embed_dim == width and len(model.encoder.blocks) == depth
    assert model.encoder.blocks[0].attn.num_heads == heads
    assert model.front_end.conv1.weight.shape == (width, bins, 3)
    assert model.front_end.pos_embed.shape == (1500, width)
    assert model.encoder.blocks[0].mlp.fc1.weight.shape == (4 * width, width)
    # transformers' encoder parameters, plus the (inert) key bias zoo's fused QKV carries
    per_layer = 12 * width ** 2 + 12 * width
    hf_count = bins * width * 3 + width + 3 * width ** 2 + width + depth * per_layer + 2 * width
    encoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("head."))
    assert encoder == hf_count + depth * width
    if name in ("whisper_tiny", "whisper_base", "whisper_small", "whisper_medium"):
        assert entry.cfg("openai_en").hf_hub_id == f"{repo}.en"


# --- short clips, the generic audio checks, explanations ------------------------------------------

def test_fewer_frames_than_30_s_train_and_predict():
    model = zoo.create_model("whisper_tiny", target_frames=1000, num_classes=3, **TINY)
    wave = 0.1 * torch.randn(2, 16000 * 4, generator=torch.Generator().manual_seed(0))
    assert model.filterbank(wave).shape == (2, 1000, 80)       # 10 s chunk
    assert model.forward_features(wave).shape == (2, 500, 64)
    tokens = model.front_end.num_tokens(torch.tensor([16000, 160000, 16001]))
    assert tokens.tolist() == [50, 500, 51]
    logits = model(torch.randn(2, 601, 80))                    # any length: 301 tokens
    (logits.sum() + model(wave).sum()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []
    assert not any("pos_embed" in n for n, _ in model.named_parameters())   # fixed, not learned


@pytest.mark.parametrize("name", ["whisper_tiny", "whisper_large_v3"])
def test_waveform_and_its_log_mel_agree_and_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model(name, target_frames=64, num_classes=2, **TINY).eval()
    wave = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        from_wave = model(wave)
        torch.testing.assert_close(from_wave, model(model.filterbank(wave)))
        assert model.forward_head(model.forward_features(wave), pre_logits=True).shape == (2, 256)
    zoo.save(model, tmp_path / "pkg")
    again = zoo.load(tmp_path / "pkg").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(wave), from_wave, rtol=0, atol=0)
    assert again.pretrained_cfg.preprocess["target_frames"] == 64


def test_explain_on_log_mels_and_waveforms():
    torch.manual_seed(0)
    model = zoo.create_model("whisper_tiny", target_frames=64, num_classes=3, **TINY)
    mel = torch.randn(2, 64, 80, generator=torch.Generator().manual_seed(1))
    assert zoo.explain(model, mel).shape == (2, 32)
    assert zoo.explain(model, 0.1 * torch.randn(2, 8000)).shape == (2, 32)


def test_sinusoids_are_transformers_table():
    from transformers.models.whisper.modeling_whisper import sinusoids

    torch.testing.assert_close(whisper_sinusoids(1500, 64), sinusoids(1500, 64), rtol=0, atol=1e-6)
    hf = transformers.WhisperForAudioClassification(_hf_config())
    fresh = zoo.create_model("whisper", **whisper_args_from_hf_config(hf.config.to_dict()))
    torch.testing.assert_close(fresh.front_end.pos_embed, hf.encoder.embed_positions.weight,
                               rtol=0, atol=1e-6)


def test_hf_config_json_maps_to_zoo_arguments():
    config = json.loads(_hf_config(num_mel_bins=128, dropout=0.1).to_json_string())
    args = whisper_args_from_hf_config(config)
    assert args == dict(embed_dim=64, depth=2, num_heads=2, mlp_hidden=128, act="gelu",
                        num_mel_bins=128, max_positions=1500, target_frames=3000, proj_dim=32,
                        pos_drop_rate=0.1, proj_drop_rate=0.1, attn_drop_rate=0.0, num_classes=5)


def test_whisper_finetunes_on_an_audio_folder_and_predicts(tmp_path, tone_folder, tone, capsys):
    """`zoo finetune whisper_tiny --data DIR`, shrunk: Whisper's log-mel feeds the recipe's data
    module (1-s chunks here), and `zoo predict` reads the checkpoint back."""
    import json

    import soundfile as sf

    from zoo import cli

    out = tmp_path / "ft"
    code = cli.main(["finetune", "whisper_tiny", "--data", str(tone_folder), "--no-pretrained",
                     "--epochs", "6", "--lr", "2e-3", "--batch-size", "4", "--num-workers", "0",
                     "--warmup-epochs", "1", "--output", str(out),
                     "--model.model_kwargs.embed_dim=32", "--model.model_kwargs.depth=1",
                     "--model.model_kwargs.num_heads=2", "--model.model_kwargs.target_frames=100",
                     "--trainer.enable_progress_bar=false"])
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["test/acc"] == 1.0 and result["num_train"] == 12
    capsys.readouterr()
    clip = tmp_path / "probe.wav"
    sf.write(clip, tone(300.0, 0.5, 22050, seed=99).numpy(), 22050)
    assert cli.main(["predict", str(out / "checkpoints" / "best.ckpt"), str(clip), "--top-k", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[0] == "low"
    with pytest.raises(ValueError, match="gain_db and time_stretch work on Kaldi filterbanks"):
        from recipes.audio import AudioDataModule
        AudioDataModule(dataset="audiofolder", root=str(tone_folder), model_name="whisper_tiny",
                        gain_db=6.0)


def test_whisper_ctc_reads_an_openai_style_checkpoint_and_transcribes(tmp_path):
    """`whisper_tiny_ctc` shrunk to the checkpoint's shape: the encoder tokens are
    transformers' encoder outputs, the CTC head is new, each clip's output is the same alone
    and in a padded batch, and transcribe / timestamps run on it."""
    hf = _hf("WhisperForConditionalGeneration", seed=6)
    hf.save_pretrained(tmp_path)
    model = zoo.create_model("whisper_tiny_ctc", pretrained=str(tmp_path), embed_dim=64,
                             depth=2, num_heads=2, mlp_hidden=128, tokens=list("ab "),
                             separator="").eval()
    assert type(model).__name__ == "WhisperCTC" and model.head.vocab_size == 3
    clips = _clips([16000, 40000, 5000], seed=2)
    extractor = transformers.WhisperFeatureExtractor()
    with torch.no_grad():
        hidden = hf.model.encoder(_extract(extractor, clips).transpose(1, 2)).last_hidden_state
        waves, lengths = _batch(clips)
        log_probs, tokens = model(waves, lengths)
        assert (model.forward_features(waves, lengths) - hidden).abs().max() < LOGIT_TOL
        assert log_probs.shape == (3, 1500, 4) and tokens.tolist() == [50, 125, 16]
        alone, count = model(clips[2][None])
        torch.testing.assert_close(alone[0, :count], log_probs[2, :16], atol=1e-5, rtol=1e-5)
    texts = model.transcribe(clips, sample_rate=16000, timestamps=True)
    assert len(texts) == 3 and all(set(t.text) <= set("ab ") for t in texts)
    with pytest.raises(ValueError, match="chunk_seconds \\(40\\) must fit the model's 30 s chunk"):
        zoo.create_model("whisper_tiny_ctc", chunk_seconds=40.0, **TINY)
