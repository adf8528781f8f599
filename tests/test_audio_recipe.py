"""The audio recipe end to end: AudioFolder fine-tuning on generated audio, predict, bad files,
and the FSDD config (the published weights: tests/test_model_cards.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import soundfile as sf
import torch

import zoo
from recipes.cli import ConfigError
from zoo import cli

QUIET = ["--trainer.enable_progress_bar=false"]
FSDD_CONFIG = "configs/audio/ast_tiny_d6_fsdd.yaml"


def test_audio_folder_finetune_predict_end_to_end(tmp_path, tone_folder, tone, capsys):
    out = tmp_path / "ft"
    code = cli.main(["finetune", "ast_tiny_d6_8k", "--data", str(tone_folder), "--no-pretrained",
                     "--epochs", "6", "--lr", "2e-3", "--batch-size", "4", "--num-workers", "0",
                     "--warmup-epochs", "1", "--output", str(out), "--model.model_kwargs.depth=1",
                     "--model.model_kwargs.global_pool=avg", *QUIET])  # avg pooling learns in few steps
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["test_split"] == "val" and result["num_test"] == 4 and result["num_train"] == 12
    assert result["metrics"]["test/acc"] == 1.0
    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["labels"] == ["high", "low"]

    capsys.readouterr()
    clip = tmp_path / "probe.wav"
    sf.write(clip, tone(300.0, 0.5, 22050, seed=99).numpy(), 22050)   # another rate: resampled
    assert cli.main(["predict", str(out / "checkpoints" / "best.ckpt"), str(clip), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(clip) and lines[1].split()[0] == "low"


def test_audio_finetune_from_an_image_encoder(tmp_path, tone_folder, timm_vit):
    """The AST recipe from the command line: the encoder comes from an image ViT checkpoint."""
    from safetensors.torch import save_file

    vit = timm_vit(None, embed_dim=192, depth=1, num_heads=3, img_size=32, patch_size=16)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    out = tmp_path / "ft"
    code = cli.main(["finetune", "ast_tiny_d6_8k", "--data", str(tone_folder), "--no-pretrained",
                     "--epochs", "1", "--batch-size", "4", "--num-workers", "0",
                     "--output", str(out), "--model.model_kwargs.depth=1", f"--model.encoder_from={path}",
                     *QUIET])
    assert code == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["encoder_from"] == str(path)
    # one epoch moved the weights, but they started from the image model's (not random init)
    tuned = ckpt["state_dict"]["model.encoder.blocks.0.mlp.fc1.weight"]
    assert (tuned - vit.blocks[0].mlp.fc1.weight).abs().max() < 0.05


def test_corrupt_file_stops_with_its_name_or_is_skipped(tmp_path, caplog, write_tones):
    data = tmp_path / "d"
    write_tones(data, per_class=3)
    (data / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    args = ["finetune", "ast_tiny_d6_8k", "--data", str(data), "--no-pretrained", "--epochs", "1",
            "--batch-size", "4", "--num-workers", "0", "--output", str(tmp_path / "o"),
            "--model.model_kwargs.depth=1", *QUIET]
    assert cli.main(args) == 2
    with caplog.at_level("WARNING"):
        assert cli.main([*args, "--data.on_error=skip"]) == 0
    assert "broken.wav" in caplog.text


def test_predict_bad_audio_names_the_file(tmp_path, capsys):
    package = zoo.save(zoo.create_model("ast_tiny_d6_8k", depth=1), tmp_path / "pkg")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert cli.main(["predict", str(package), str(bad)]) == 2
    assert f"cannot decode audio file {bad}" in capsys.readouterr().err
    short = tmp_path / "short.wav"
    sf.write(short, torch.zeros(100).numpy(), 8000)
    assert cli.main(["predict", str(package), str(short)]) == 2
    assert "short.wav: 100 samples at 8000 Hz is shorter than one 25 ms frame" in capsys.readouterr().err


def test_audio_config_checks_choices_and_the_model_data_pairing():
    from recipes.cli import build

    with pytest.raises(ConfigError, match=r"config key 'data.init_args.on_error' must be one of "
                                          r"'raise', 'skip', got 'ignore'"):
        build(["--config", FSDD_CONFIG, "--data.on_error=ignore"])
    with pytest.raises(ConfigError, match=r"config key 'data.init_args.dataset' must be one of "
                                          r"'fsdd', 'audiofolder', 'shards', got 'digits'"):
        build(["--config", FSDD_CONFIG, "--data.dataset=digits"])
    with pytest.raises(ValueError, match=r"vit_nano_patch4_16 is an image model; this audio data "
                                         r"module feeds audio models only"):
        build(["--config", FSDD_CONFIG, "--model.model_name=vit_nano_patch4_16"])


# --- FSDD (real data) -------------------------------------------------------------------------

needs_fsdd = pytest.mark.skipif(
    not (Path(os.environ.get("ZOO_DATA", "/nonexistent")) / "fsdd" / "recordings").is_dir(),
    reason="FSDD not found: set ZOO_DATA to a folder holding fsdd/recordings (CI does)")


@needs_fsdd
def test_fsdd_train_then_eval_agree(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", FSDD_CONFIG, f"--trainer.default_root_dir={out}", "--trainer.max_epochs=1",
                     "--trainer.limit_train_batches=2", "--model.model_kwargs.depth=1", *QUIET])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test"] == 300 and metrics["num_train"] == 2700   # holdout: false
    assert metrics["best_checkpoint"].endswith("last.ckpt")
    capsys.readouterr()
    assert cli.main(["eval", FSDD_CONFIG, "--ckpt", metrics["best_checkpoint"], *QUIET]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["test/acc"] == pytest.approx(metrics["metrics"]["test/acc"], abs=1e-6)



@needs_fsdd
def test_fsdd_holdout_switch():
    from recipes.audio import AudioDataModule
    from zoo.frontends.audio import FbankConfig

    config = FbankConfig(sample_rate=8000, num_mel_bins=64, target_frames=100)
    held = AudioDataModule(dataset="fsdd", fbank=config)
    held.setup()
    full = AudioDataModule(dataset="fsdd", fbank=config, holdout=False)
    full.setup()
    assert len(held.train_set) == 2400 and len(full.train_set) == 2700
    assert len(held.val_set) == len(full.val_set) == len(full.test_set) == 300
    # without the holdout, the validation clips are among the training clips
    train = full.train_set.tensors[0]
    assert any(torch.equal(train[i], full.val_set.tensors[0][0]) for i in range(len(train)))


# --- additive-noise augmentation ---------------------------------------------------------------

def _noise_module(root, **kwargs):
    from recipes.audio import AudioDataModule
    from zoo.frontends.audio import FbankConfig

    fbank = FbankConfig(sample_rate=8000, num_mel_bins=32, target_frames=40)
    return AudioDataModule(dataset="audiofolder", root=str(root), fbank=fbank, batch_size=4,
                           time_shift=False, **kwargs)


def test_noise_augmentation_is_off_by_default(tone_folder):
    module = _noise_module(tone_folder)
    module.setup()
    assert module.noise is None and module.train_set.tensors[0].ndim == 3   # cached filterbanks
    from zoo.data.noise import NoiseAugment
    unaugmented = _noise_module(tone_folder, augment=False, noise=NoiseAugment())
    assert unaugmented.noise is None                 # augment: false switches every augmentation off
    with pytest.raises(ValueError, match=r"noise must be a NoiseAugment \(kinds, snr_db, p, "
                                         r"babble_talkers\) or None, got dict"):
        _noise_module(tone_folder, noise={"kinds": ["white"]})


def test_noisy_training_batches_are_filterbanks_of_the_noised_waveforms(tone_folder):
    from types import SimpleNamespace

    from zoo.data.noise import NoiseAugment
    from zoo.frontends.audio import Filterbank

    noise = NoiseAugment(kinds=("white", "babble"), snr_db=(5.0, 15.0), p=1.0)
    module, clean = _noise_module(tone_folder, noise=noise), _noise_module(tone_folder)
    module.setup(), clean.setup()
    waves, lengths, targets = module.train_set.tensors
    assert waves.shape == (12, module.fbank.window_samples) == (12, 200 + 39 * 80)
    assert torch.equal(targets, clean.train_set.tensors[2])
    padding = torch.arange(waves.shape[1])[None] >= lengths[:, None]
    assert lengths.max() == waves.shape[1] and not waves[padding].any()   # cut / zero-padded
    # validation and test stay the cached, clean filterbanks
    for split in ("val_set", "test_set"):
        got, want = getattr(module, split), getattr(clean, split)
        assert (got is None) == (want is None)
        if got is not None:
            assert all(torch.equal(a, b) for a, b in zip(got.tensors, want.tensors, strict=True))
    # without noise, the waveforms give the cached filterbanks and valid frames
    module.noise = None
    fbank, valid = module.noisy_filterbanks(waves, lengths)
    torch.testing.assert_close(fbank, clean.train_set.tensors[0], rtol=0, atol=1e-5)
    assert torch.equal(valid, clean.train_set.tensors[1])
    # while training: noise on the waveforms (the global RNG, seeded), then the filterbank
    module.noise = noise
    module.trainer = SimpleNamespace(training=True)
    torch.manual_seed(0)
    noisy, labels = module.on_after_batch_transfer((waves[:4], lengths[:4], targets[:4]), 0)
    torch.manual_seed(0)
    want = Filterbank(module.fbank)(noise(waves[:4], lengths[:4]), lengths=lengths[:4])
    assert torch.equal(noisy, want) and torch.equal(labels, targets[:4])
    assert (noisy - clean.train_set.tensors[0][:4]).abs().amax(dim=(1, 2)).min() > 0.1
    with pytest.raises(RuntimeError, match="waveform batches"):
        module.trainer = SimpleNamespace(training=False)
        module.on_after_batch_transfer((waves[:4], lengths[:4], targets[:4]), 0)


def test_noise_augmentation_from_shards(tmp_path, tone_folder, one_thread):   # litdata forks
    from types import SimpleNamespace

    from recipes.audio import AudioDataModule
    from recipes.streaming import convert_audio_folder
    from zoo.data.noise import NoiseAugment
    from zoo.frontends.audio import FbankConfig

    convert_audio_folder(tone_folder, tmp_path / "shards", sample_rate=8000)
    fbank = FbankConfig(sample_rate=8000, num_mel_bins=32, target_frames=40)
    module = AudioDataModule(dataset="shards", root=str(tmp_path / "shards"), fbank=fbank,
                             batch_size=4, noise=NoiseAugment(kinds=("pink",)))
    memory = _noise_module(tone_folder, noise=NoiseAugment(kinds=("pink",)))
    module.setup(), memory.setup()
    batches = list(module.train_dataloader())
    waves = torch.cat([b[0] for b in batches])
    lengths = torch.cat([b[1] for b in batches])
    assert waves.shape == (12, fbank.window_samples)
    assert sorted(lengths.tolist()) == sorted(memory.train_set.tensors[1].tolist())
    val = next(iter(module.val_dataloader()))
    assert val[0].ndim == 3                                           # clean filterbanks
    module.trainer = SimpleNamespace(training=True)
    noisy, _ = module.on_after_batch_transfer(batches[0], 0)
    assert noisy.shape == (4, 40, 32)


def test_noise_settings_from_the_command_line(tmp_path, tone_folder):
    out = tmp_path / "ft"
    code = cli.main(["finetune", "ast_tiny_d6_8k", "--data", str(tone_folder), "--no-pretrained",
                     "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--output", str(out),
                     "--model.model_kwargs.depth=1",
                     "--data.noise={kinds: [white, babble], snr_db: [10, 20], p: 0.5}", *QUIET])
    assert code == 0
    import yaml
    saved = yaml.safe_load((out / "config.yaml").read_text())["data"]["init_args"]["noise"]
    assert saved == {"kinds": ["white", "babble"], "snr_db": [10.0, 20.0], "p": 0.5,
                     "babble_talkers": [1, 3]}
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got 2.0"):
        from recipes.cli import build
        build(["--config", FSDD_CONFIG, "--data.noise.p=2"])


def test_stacked_waveforms_give_the_cached_filterbanks(caplog):
    from recipes.audio import compute_filterbanks, stack_waveforms
    from zoo.frontends.audio import FbankConfig, Filterbank

    config = FbankConfig(sample_rate=8000, num_mel_bins=64, target_frames=100)
    gen = torch.Generator().manual_seed(0)
    clips = [0.1 * torch.randn(n, generator=gen) for n in (100, 3000, 8120, 10000)]
    with caplog.at_level("WARNING"):
        waves, lengths = stack_waveforms(clips, config, names=["a.wav", "b.wav", "c.wav", "d.wav"])
    assert "a.wav: 100 samples, shorter than one 25 ms frame; padded with silence" in caplog.text
    assert waves.shape == (4, 8120) and lengths.tolist() == [200, 3000, 8120, 8120]
    assert torch.equal(waves[3], clips[3][:8120]) and not waves[1, 3000:].any()
    cached, valid = compute_filterbanks(clips, config)
    fbank = Filterbank(config)(waves, lengths=lengths)
    torch.testing.assert_close(fbank, cached, rtol=0, atol=1e-5)
    assert torch.equal(config.num_frames(lengths).clamp(max=100), valid)
    with pytest.raises(ValueError, match="no audio clips to stack"):
        stack_waveforms([], config)
