"""Whole inputs, or a clear word: images of every bit depth and mode, truncated files and
decompression bombs, long / silent / clipped / truncated audio; ``on_error`` means the same for
prediction and training data, and skipped files are counted."""

from __future__ import annotations

import json
import logging
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from PIL import Image

import zoo
from tests.conftest import make_tone
from zoo import cli
from zoo.data.audio import load_audio
from zoo.data.images import ImageDecodeError, load_image
from zoo.predict import audio_windows, collect_inputs, predict_files

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1"]


# --- images -----------------------------------------------------------------------------------------

def test_a_16_bit_grayscale_png_keeps_its_range(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    rgb = np.asarray(load_image(tmp_path / "g16.png"))
    assert rgb.shape == (64, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
    expected = np.round(ramp / 257.0)
    assert np.abs(rgb[..., 0] - expected).max() <= 1                     # not clipped to white
    assert (np.asarray(Image.open(tmp_path / "g16.png").convert("RGB")) == 255).mean() > 0.9


def test_palette_cmyk_alpha_and_exif_rotation_come_out_as_rgb(tmp_path):
    base = Image.fromarray(np.random.RandomState(0).randint(0, 255, (20, 30, 3), dtype=np.uint8))
    palette = base.convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png")
    base.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    Image.fromarray(np.full((20, 30, 2), 128, np.uint8), "LA").save(tmp_path / "la.png")
    for name in ("p.png", "cmyk.jpg", "la.png"):
        image = load_image(tmp_path / name)
        assert image.mode == "RGB" and image.size == (30, 20), name
    cmyk = np.asarray(load_image(tmp_path / "cmyk.jpg"), dtype=float)
    assert np.abs(cmyk - np.asarray(base, dtype=float)).mean() < 8      # colours, not inverted
    exif = Image.Exif()
    exif[0x0112] = 6                                                     # rotate 90 degrees
    base.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "rotated.jpg").size == (20, 30)         # upright: portrait


def test_truncated_images_and_decompression_bombs_are_named(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    noisy = Image.fromarray(np.random.RandomState(1).randint(0, 255, (64, 64, 3), dtype=np.uint8))
    noisy.save(tmp_path / "noisy.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "noisy.png").read_bytes()[:-400])
    with pytest.raises(ImageDecodeError, match=r"cannot read image .*cut\.png"):
        load_image(tmp_path / "cut.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageDecodeError, match=r"cannot read image .*text\.png"):
        load_image(tmp_path / "text.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)                # 64 x 64 > 1000
    with pytest.raises(ImageDecodeError, match=r"whole\.png is over the safety limit of 1,000 "
                                               r"pixels \(a possible decompression bomb\)"):
        load_image(tmp_path / "whole.png")
    assert data == (tmp_path / "whole.png").read_bytes()


def test_predict_skips_a_bomb_and_a_truncated_file_and_keeps_the_rest(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (16, 16), "white").save(folder / "good.png")
    Image.new("RGB", (40, 40), "white").save(folder / "huge.png")
    noisy = Image.fromarray(np.random.RandomState(1).randint(0, 255, (30, 30, 3), dtype=np.uint8))
    noisy.save(tmp_path / "noisy.png")
    (folder / "cut.png").write_bytes((tmp_path / "noisy.png").read_bytes()[:-300])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)                # 16 x 16 fits, 40 x 40 not
    out = tmp_path / "results.csv"
    assert cli.main(["predict", "vit_nano_patch4_16.digits", str(folder), "--output", str(out),
                     "--on-error", "skip"]) == 0
    assert "2 unreadable files skipped" in capsys.readouterr().out
    rows = out.read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("path,label")
    by_name = {Path(r.split(",")[0]).name: r for r in rows[1:]}
    assert by_name["good.png"].split(",")[1] in "0123456789"
    assert "decompression bomb" in by_name["huge.png"] and "cannot read image" in by_name["cut.png"]
    with pytest.raises(ImageDecodeError, match=r"cut\.png"):             # raise: the first bad one
        predict_files(zoo.create_model("vit_nano_patch4_16.digits", pretrained=True),
                      sorted(folder.iterdir()), progress=False)


def _color_folder(root: Path, per_class: int = 6) -> Path:
    gen = torch.Generator().manual_seed(0)
    for name, channel in (("blue", 2), ("red", 0)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.rand(20, 20, 3, generator=gen) * 0.3
            pixels[..., channel] += 0.7
            Image.fromarray((pixels * 255).byte().numpy()).save(root / name / f"{i}.png")
    return root


def test_finetuning_on_an_image_folder_names_a_truncated_file_or_skips_and_counts_it(tmp_path, capsys):
    data = _color_folder(tmp_path / "images")
    whole = (data / "red" / "0.png").read_bytes()
    (data / "red" / "0.png").write_bytes(whole[: len(whole) // 2])
    args = ["finetune", "vit_tiny_patch4_32", "--data", str(data), "--no-pretrained", "--epochs", "1",
            "--batch-size", "4", "--num-workers", "0", "--model.model_kwargs.depth=1", *QUIET]
    capsys.readouterr()
    assert cli.main([*args, "--output", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "cannot read image" in err and "red/0.png" in err and "--data.on_error=skip" in err
    assert cli.main([*args, "--output", str(tmp_path / "b"), "--data.on_error=skip"]) == 0
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["skipped_files"] == [str(data / "red" / "0.png")]
    assert metrics["num_train"] + metrics["num_test"] == 11


# --- audio ------------------------------------------------------------------------------------------

def test_audio_windows_cover_a_long_clip_every_half_window():
    config = zoo.create_model("ast_tiny_d6_8k").fbank_config        # 1.0 s windows at 8 kHz
    size = config.frame_length + (config.target_frames - 1) * config.frame_shift
    assert audio_windows(torch.zeros(size // 2), config) == [(0, size // 2)]
    windows = audio_windows(torch.zeros(10 * 8000), config)
    assert windows[0] == (0, size) and windows[-1] == (80000 - size, 80000)
    assert all(b - a == size for a, b in windows)
    assert all(w2[0] - w1[0] <= size // 2 for w1, w2 in pairwise(windows))


def test_a_long_clip_is_judged_by_its_most_confident_window(tmp_path):
    """A 10 s clip: the row is the window whose top probability is highest, with its place."""
    model = zoo.create_model("ast_tiny_d6_8k.fsdd", pretrained=True).eval()
    wave = torch.zeros(80000)
    wave[52000:60000] = make_tone(440.0, 1.0, 8000, seed=0)          # something at 6.5-7.5 s
    sf.write(tmp_path / "long.wav", wave.numpy(), 8000)
    (row,) = predict_files(model, [tmp_path / "long.wav"], top_k=3, progress=False)
    assert row["duration"] == pytest.approx(10.0)
    config = model.fbank_config
    start, end = row["window"]
    size = config.frame_length + (config.target_frames - 1) * config.frame_shift   # 1.015 s
    assert 0 <= start < end <= 10.0 and end - start == pytest.approx(size / 8000)
    with torch.no_grad():   # the same thing by hand: every window's top probability
        clips = [wave[a:b] for a, b in audio_windows(wave, config)]
        probs = model(model.filterbank(torch.stack(clips))).softmax(-1)
    best = int(probs.max(-1).values.argmax())
    assert start == pytest.approx(audio_windows(wave, config)[best][0] / 8000)
    assert row["probability"] == pytest.approx(probs[best].max().item(), rel=1e-5)


def test_silent_clipped_and_truncated_audio_are_reported_by_name(tmp_path, caplog):
    sf.write(tmp_path / "silent.wav", np.zeros(8000, np.float32), 8000)
    sf.write(tmp_path / "loud.wav", np.full(8000, 1.5, np.float32), 8000, subtype="FLOAT")
    sf.write(tmp_path / "whole.wav", make_tone(300.0, 1.0, 8000, seed=0).numpy(), 8000)
    data = (tmp_path / "whole.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        load_audio(tmp_path / "silent.wav")
        wave, _ = load_audio(tmp_path / "loud.wav")
        cut, _ = load_audio(tmp_path / "cut.wav")
    text = caplog.text
    assert "silent.wav: the clip is silent" in text
    assert "loud.wav: samples reach 1.50, beyond [-1, 1]" in text and float(wave.max()) == 1.5
    assert "cut.wav: decoded" in text and "a truncated file?" in text and 0 < cut.numel() < 8000
    assert len(collect_inputs([tmp_path], zoo.create_model("ast_tiny_d6_8k"))) == 4


# --- CSV values ---------------------------------------------------------------------------------------

def test_a_non_numeric_csv_value_is_named_or_read_as_missing(tmp_path, caplog, capsys):
    from zoo.data.series import SeriesDataError, read_series

    t = np.arange(400)
    frame = pd.DataFrame({"day": pd.date_range("2024-01-01", periods=400, freq="D"),
                          "units": (5 + np.sin(t)).astype(object)})
    frame.loc[9, "units"] = "twelve"
    path = tmp_path / "sales.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(SeriesDataError, match=r"non-numeric column\(s\) 'units' \(e.g. 'twelve' at "
                                              r"line 11\).*on_error='skip'"):
        read_series(path, time_column="day")
    with caplog.at_level(logging.WARNING):
        values = read_series(path, time_column="day", on_error="skip", missing="interpolate")
    assert "column 'units': 1 non-numeric value(s) (e.g. 'twelve' at line 11) read as missing" in caplog.text
    assert np.isfinite(values["units"]).all() and len(values) == 400
    capsys.readouterr()
    assert cli.main(["forecast", "patchtst_tiny_l336.etth1_h96", str(path), "--time-column", "day"]) == 2
    assert "--on-error skip to read such values as missing" in capsys.readouterr().err


def test_a_long_waveform_given_to_the_model_directly_says_how_much_it_sees(caplog):
    model = zoo.create_model("ast_tiny_d6_8k", depth=1).eval()
    with caplog.at_level(logging.WARNING), torch.no_grad():
        model(torch.zeros(1, 8000))                        # fits: nothing to say
        assert caplog.text == ""
        model(torch.zeros(1, 80000))
    assert "a 10.00 s waveform: the model sees its first 1.015 s (100 frames)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model.train()(torch.zeros(1, 80000))                # training crops on purpose
    assert caplog.text == ""
