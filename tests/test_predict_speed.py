"""zoo.predict's fast path (whole batches read in DataLoader workers, clips resampled a few
per call, top-k for a batch at once) gives the rows of the slow one: each file read alone by
:class:`FileReader` and classified alone, for any worker count and batch size, with
unreadable files skipped in workers, long clips in windows, and rows in input order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import zoo
from tests.conftest import fill_with_noise, make_tone
from zoo.data.audio import resample, resample_clips
from zoo.data.images import ImageDecodeError
from zoo.predict import FileReader, audio_windows, batch_inputs, predict_files

SETTINGS = [dict(num_workers=0, batch_size=1), dict(num_workers=2, batch_size=2),
            dict(num_workers=2, batch_size=3), dict(num_workers=0, batch_size=32)]


def slow_rows(model: Any, paths: list[Path], top_k: int = 3) -> list[dict[str, Any]]:
    """The reference: one file at a time, resampled alone, each window its own batch row."""
    read = FileReader(model)
    labels = [str(i) for i in range(model.num_classes)]
    rate = read.config.sample_rate if read.audio else 1
    rows = []
    for path in paths:
        try:
            inputs, spans = read(path)
        except (ValueError, FileNotFoundError) as err:
            rows.append({"path": str(path), "error": str(err)})
            continue
        with torch.no_grad():
            probs = model(batch_inputs(model, inputs, read.audio)).softmax(-1)
        best = int(probs.max(-1).values.argmax())
        top = probs[best].topk(top_k)
        ranked = [(labels[j], p) for p, j in zip(top.values.tolist(), top.indices.tolist(),
                                                  strict=True)]
        row = {"path": str(path), "label": ranked[0][0], "probability": ranked[0][1],
               "top_k": ranked, "error": None}
        if len(inputs) > 1:
            row.update(window=(spans[best][0] / rate, spans[best][1] / rate),
                       duration=spans[-1][1] / rate)
        rows.append(row)
    return rows


def assert_same_rows(ours: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [r["path"] for r in ours] == [r["path"] for r in expected]
    for a, b in zip(ours, expected, strict=True):
        assert a.keys() == b.keys(), a["path"]
        assert a.get("error") == b.get("error")
        assert a.get("window") == b.get("window") and a.get("duration") == b.get("duration")
        if "top_k" in b:
            assert [label for label, _ in a["top_k"]] == [label for label, _ in b["top_k"]]
            np.testing.assert_allclose([p for _, p in a["top_k"]], [p for _, p in b["top_k"]],
                                       rtol=0, atol=2e-5)


@pytest.fixture(scope="module")
def ast_model():
    """A one-block random AST at 8 kHz (1.015 s windows), confident enough to rank."""
    torch.manual_seed(0)
    model = zoo.create_model("ast_tiny_d6_8k", depth=1)
    return fill_with_noise(model, seed=1)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Clips at three rates, stereo, a 3.3 s one (5 windows), one under a frame, a corrupt one,
    a missing one and one listed twice."""
    root = tmp_path_factory.mktemp("clips")
    specs = [("a.wav", 8000, 0.6, 1), ("b.wav", 16000, 0.9, 1), ("c.flac", 44100, 0.3, 1),
             ("stereo.wav", 16000, 0.8, 2), ("long.wav", 8000, 3.3, 1), ("d.wav", 22050, 1.0, 1),
             ("tiny.wav", 8000, 0.01, 1), ("e.wav", 16000, 0.5, 1)]
    paths = []
    for i, (name, rate, seconds, channels) in enumerate(specs):
        wave = make_tone(300.0 + 150 * i, seconds, rate, seed=i).numpy() * 0.5
        wave = wave + 0.05 * np.random.default_rng(i).standard_normal(wave.shape[0])
        sf.write(root / name, np.stack([wave] * channels, 1) if channels > 1 else wave, rate)
        paths.append(root / name)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return [*paths[:3], root / "broken.wav", *paths[3:6], root / "missing.wav", paths[6],
            paths[0], paths[7]]


@pytest.fixture(scope="module")
def ast_expected(ast_model, clips) -> list[dict[str, Any]]:
    expected = slow_rows(ast_model, clips)
    assert [Path(r["path"]).name for r in expected if r.get("error")] == \
        ["broken.wav", "missing.wav", "tiny.wav"]
    assert sum("window" in r for r in expected) == 1          # long.wav, by windows
    return expected


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_audio_rows_equal_reading_each_file_alone(ast_model, clips, ast_expected, setting):
    rows = predict_files(ast_model, clips, top_k=3, on_error="skip", progress=False, **setting)
    assert_same_rows(rows, ast_expected)


def test_whisper_rows_equal_reading_each_file_alone(clips):
    torch.manual_seed(0)
    model = fill_with_noise(zoo.create_model("whisper_tiny", target_frames=100, num_classes=4,
                                             depth=1, embed_dim=64, num_heads=2), seed=2)
    good = [p for p in clips if p.name in ("a.wav", "c.flac", "long.wav", "e.wav")]
    expected = slow_rows(model, good)
    assert "window" in expected[2]                           # 3.3 s in 1 s chunks
    assert_same_rows(predict_files(model, good, batch_size=2, top_k=3, num_workers=2,
                                   progress=False), expected)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """JPEGs, an EXIF-rotated one, a palette PNG with transparency, a 16-bit PNG, a truncated
    file and an oversized one (the decompression-bomb limit is lowered in the test)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        pixels = rng.integers(0, 256, (20 + 3 * i, 30 - 2 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.jpg", quality=90)
        paths.append(root / f"{i}.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6                                          # rotate 90 degrees
    Image.fromarray(rng.integers(0, 256, (18, 30, 3), dtype=np.uint8)).save(
        root / "rotated.jpg", exif=exif)
    palette = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).convert("P")
    palette.info["transparency"] = 0
    palette.save(root / "palette.png")
    Image.fromarray(rng.integers(0, 65536, (20, 20), dtype=np.uint16)).save(root / "g16.png")
    (root / "cut.jpg").write_bytes((root / "0.jpg").read_bytes()[:200])
    Image.new("RGB", (60, 60), "white").save(root / "huge.png")
    return [*paths[:2], root / "rotated.jpg", root / "cut.jpg", root / "palette.png",
            *paths[2:4], root / "huge.png", root / "g16.png", paths[4]]


@pytest.fixture(scope="module")
def digits_model():
    return zoo.create_model("vit_nano_patch4_16.digits", pretrained=True).eval()


@pytest.fixture(scope="module")
def bomb_limit():
    """PIL's decompression-bomb limit lowered: 60 x 60 is over it, the other images not."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
        yield


@pytest.fixture(scope="module")
def image_expected(digits_model, images, bomb_limit) -> list[dict[str, Any]]:
    expected = slow_rows(digits_model, images)
    errors = {Path(r["path"]).name: r["error"] for r in expected if r.get("error")}
    assert errors.keys() == {"cut.jpg", "huge.png"} and "decompression bomb" in errors["huge.png"]
    return expected


@pytest.mark.parametrize("setting", SETTINGS, ids=str)
def test_image_rows_equal_reading_each_file_alone(digits_model, images, image_expected,
                                                   bomb_limit, setting):
    rows = predict_files(digits_model, images, top_k=3, on_error="skip", progress=False,
                         **setting)
    assert_same_rows(rows, image_expected)


@pytest.mark.parametrize("workers", [0, 2])
def test_raise_names_the_first_unreadable_file_in_input_order(digits_model, images, workers):
    with pytest.raises(ImageDecodeError, match=r"cut\.jpg"):
        predict_files(digits_model, images, batch_size=2, num_workers=workers, progress=False)


def test_a_file_listed_twice_gets_two_rows(ast_model, clips):
    twice = [clips[0], clips[1], clips[0]]
    rows = predict_files(ast_model, twice, batch_size=3, num_workers=0, progress=False)
    assert [r["path"] for r in rows] == list(map(str, twice)) and rows[0] == rows[2]


def test_no_files_no_rows_and_bad_worker_counts_are_named(ast_model):
    assert predict_files(ast_model, [], progress=False) == []
    with pytest.raises(ValueError, match="num_workers must be >= 0"):
        predict_files(ast_model, [], num_workers=-1, progress=False)


def test_batched_resampling_equals_resampling_each_clip():
    gen = torch.Generator().manual_seed(0)
    lengths = [1, 200, 7999, 8000, 12001, 40000, 333]          # three length groups
    waves = [torch.randn(n, generator=gen) for n in lengths]
    for orig, new in ((8000, 16000), (48000, 16000), (16000, 8000), (16000, 16000)):
        for ours, alone in zip(resample_clips(waves, orig, new),
                               [resample(w, orig, new) for w in waves], strict=True):
            assert ours.shape == alone.shape
            torch.testing.assert_close(ours, alone, rtol=0, atol=2e-6)


def test_long_clip_windows_keep_their_place_when_batched_with_others(ast_model, clips):
    """A long clip's windows stay its own when short clips share the batch."""
    long_clip = next(p for p in clips if p.name == "long.wav")
    alone = predict_files(ast_model, [long_clip], num_workers=0, progress=False)[0]
    mixed = predict_files(ast_model, [clips[0], long_clip, clips[1]], batch_size=3,
                          num_workers=0, progress=False)[1]
    assert mixed["window"] == alone["window"] and mixed["duration"] == pytest.approx(3.3)
    wave = torch.from_numpy(sf.read(long_clip, dtype="float32")[0])
    assert len(audio_windows(wave, ast_model.fbank_config)) == 6


def test_the_cached_resampler_equals_torchaudios_function():
    """resample keeps one torchaudio Resample (its kernel) per pair of rates: same samples."""
    import torchaudio.functional as AF

    wave = torch.randn(2, 4001, generator=torch.Generator().manual_seed(1))
    for orig, new in ((8000, 16000), (44100, 16000)):
        for x in (wave, wave[0], wave.double()):
            assert torch.equal(resample(x, orig, new), AF.resample(x, orig, new))
