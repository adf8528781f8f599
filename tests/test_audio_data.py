"""Audio data: decoding clips, the Free Spoken Digit Dataset (real copy and an offline fake
download) and AudioFolder trees."""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from zoo import hub
from zoo.data import audio
from zoo.data.audio import AudioDecodeError, audio_folder_items, load_audio, load_clips

pytestmark = pytest.mark.usefixtures("one_thread")


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write(path: Path, data: np.ndarray, rate: int = 8000, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, **kwargs)
    return path


# --- decoding -----------------------------------------------------------------------------------

def test_load_audio_mono(tmp_path):
    tone = _sine(440, 8000, 0.25)
    wave, rate = load_audio(_write(tmp_path / "a.wav", tone))   # 16-bit PCM on disk
    assert rate == 8000 and wave.shape == (2000,) and wave.dtype == torch.float32
    assert torch.allclose(wave, torch.from_numpy(tone), atol=1 / 2 ** 14)


def test_load_audio_mixes_stereo(tmp_path, caplog):
    left, right = _sine(440, 8000, 0.1), _sine(1000, 8000, 0.1, amp=0.2)
    path = _write(tmp_path / "st.flac", np.stack([left, right], 1))
    with caplog.at_level(logging.DEBUG, logger="zoo.data.audio"):
        wave, _ = load_audio(path)
    assert wave.shape == (800,)
    assert torch.allclose(wave, torch.from_numpy((left + right) / 2), atol=1 / 2 ** 13)
    assert f"{path}: averaging 2 channels to mono" in caplog.text


def test_load_audio_refuses_stereo_on_request(tmp_path):
    path = _write(tmp_path / "st.wav", np.zeros((100, 2), np.float32))
    with pytest.raises(AudioDecodeError, match=re.escape(f"audio file {path} has 2 channels; expected mono")):
        load_audio(path, channels="error")
    with pytest.raises(ValueError, match="channels must be 'mix' or 'error', got 'left'"):
        load_audio(path, channels="left")


def test_load_audio_resamples_and_keeps_the_pitch(tmp_path, caplog):
    path = _write(tmp_path / "a.wav", _sine(440, 8000, 0.5))
    with caplog.at_level(logging.INFO, logger="zoo.data.audio"):
        wave, rate = load_audio(path, sample_rate=16000)
    assert rate == 16000 and wave.shape == (8000,)
    assert f"resampling {path} from 8000 Hz to 16000 Hz" in caplog.text
    spectrum = torch.fft.rfft(wave).abs()                  # 2 Hz bins over 0.5 s
    assert spectrum.argmax().item() * 2 == 440
    assert spectrum[spectrum.shape[0] // 2:].max() < 0.01 * spectrum.max()  # nothing above 4 kHz
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zoo.data.audio"):
        same, rate = load_audio(path, sample_rate=8000)
    assert rate == 8000 and same.shape == (4000,) and "resampling" not in caplog.text


def test_resample_works_on_batches_and_checks_rates():
    x = torch.randn(2, 3, 400)
    assert audio.resample(x, 8000, 16000).shape == (2, 3, 800)
    assert audio.resample(x, 8000, 8000) is x
    with pytest.raises(ValueError, match=re.escape("sample rates must be > 0 Hz, got 0 -> 16000")):
        audio.resample(x, 0, 16000)


def test_load_audio_empty_corrupt_nonfinite_missing(tmp_path):
    empty = _write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32))
    with pytest.raises(AudioDecodeError, match=re.escape(f"audio file {empty} holds no samples")):
        load_audio(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(os.urandom(2000))
    with pytest.raises(AudioDecodeError, match=re.escape(f"cannot decode audio file {corrupt}: ")):
        load_audio(corrupt)
    nan = _write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match=re.escape(f"audio file {nan} holds non-finite samples")):
        load_audio(nan)
    with pytest.raises(FileNotFoundError, match=re.escape(f"no audio file at {tmp_path / 'absent.wav'}")):
        load_audio(tmp_path / "absent.wav")


def test_load_clips_skip_or_raise(tmp_path, caplog):
    good = _write(tmp_path / "good.wav", _sine(300, 8000, 0.1))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file" * 10)
    other = _write(tmp_path / "other.wav", _sine(300, 16000, 0.1), rate=16000)
    with caplog.at_level(logging.WARNING, logger="zoo.data.audio"):
        waves, loaded = load_clips([good, bad, other], sample_rate=8000, on_error="skip")
    assert loaded == [0, 2] and [w.shape for w in waves] == [(800,), (800,)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"cannot decode audio file {bad}: " in m for m in warnings)
    assert "skipped 1 of 3 audio clips" in warnings
    with pytest.raises(AudioDecodeError, match=re.escape(f"cannot decode audio file {bad}: ")):
        load_clips([good, bad], sample_rate=8000)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        load_clips([good], sample_rate=8000, on_error="ignore")


# --- FSDD: the real copy ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_fsdd() -> Path:
    root = os.environ.get("ZOO_DATA")
    if not root:
        pytest.skip("ZOO_DATA not set: point it at the folder holding fsdd/recordings/")
    return audio.fsdd_root(root)


def test_real_fsdd_splits(real_fsdd):
    splits = {s: audio.fsdd_items(real_fsdd, s) for s in ("train", "test", "fit", "val")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 2700, "test": 300, "fit": 2400, "val": 300}
    assert sorted(splits["fit"] + splits["val"]) == sorted(splits["train"])
    assert not {p for p, _ in splits["train"]} & {p for p, _ in splits["test"]}
    for split, (lo, hi) in {"test": (0, 4), "val": (5, 9), "fit": (10, 49)}.items():
        takes = {int(p.stem.split("_")[2]) for p, _ in splits[split]}
        assert min(takes) == lo and max(takes) == hi
    for items in splits.values():
        assert all(label == int(path.name[0]) for path, label in items)
        assert sorted({label for _, label in items}) == list(range(10))
    wave, rate = load_audio(splits["test"][0][0], channels="error")
    assert rate == audio.FSDD_SAMPLE_RATE and wave.ndim == 1 and 0 < wave.abs().max() <= 1


def test_real_fsdd_content_digest(real_fsdd):
    assert audio.fsdd_content_digest(real_fsdd / "recordings") == audio.FSDD_RECORDINGS_SHA256


# --- FSDD: layout checks and an offline download ------------------------------------------------

def _fake_recordings(directory: Path, takes: int = 2) -> dict[str, bytes]:
    for digit in (0, 1):
        for take in range(takes):
            _write(directory / f"{digit}_ann_{take}.wav", _sine(200 + 100 * digit + take, 8000, 0.05))
    return {p.name: p.read_bytes() for p in directory.iterdir()}


def test_fsdd_root_layouts_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"no FSDD recordings at {tmp_path / 'fsdd' / 'recordings'} "
            f"(nor {tmp_path / 'recordings'}); set $ZOO_DATA")):
        audio.fsdd_root(tmp_path)
    _fake_recordings(tmp_path / "fsdd" / "recordings", takes=6)
    with pytest.raises(ValueError, match=re.escape(
            f"{tmp_path / 'fsdd' / 'recordings'} holds 12 .wav files, "
            "but a full FSDD (commit 26eb9aa) has 3000")):
        audio.fsdd_root(tmp_path)
    root = audio.fsdd_root(tmp_path, strict=False)
    assert root == tmp_path / "fsdd"
    assert audio.fsdd_root(root, strict=False) == root      # a root holding recordings/ directly
    assert [(p.name, y) for p, y in audio.fsdd_items(root, "test")] == [
        (f"{d}_ann_{t}.wav", d) for d in (0, 1) for t in range(5)]
    assert [p.name for p, _ in audio.fsdd_items(root, "train")] == ["0_ann_5.wav", "1_ann_5.wav"]
    assert audio.fsdd_items(root, "fit") == []
    with pytest.raises(ValueError, match=re.escape(
            "split must be one of ['fit', 'test', 'train', 'val'], got 'dev'")):
        audio.fsdd_items(root, "dev")
    stray = _write(root / "recordings" / "noise.wav", np.zeros(10, np.float32))
    with pytest.raises(ValueError, match=re.escape(f"{stray}: not an FSDD recording name")):
        audio.fsdd_items(root, "test")


def _fake_zip(path: Path, recordings: dict[str, bytes],
              extra: dict[str, bytes] | None = None) -> Path:
    top = "free-spoken-digit-dataset-26eb9aa0123456789"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{top}/", b"")
        zf.writestr(f"{top}/README.md", b"# FSDD\nCC BY-SA 4.0\n")
        zf.writestr(f"{top}/utils/spectrogramer.py", b"print('not kept')\n")
        zf.writestr(f"{top}/recordings/notes.txt", b"not kept either\n")
        for name, data in recordings.items():
            zf.writestr(f"{top}/recordings/{name}", data)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


@pytest.fixture
def fake_fsdd(tmp_path, monkeypatch, isolated_caches):
    recordings = _fake_recordings(tmp_path / "src")
    zip_path = _fake_zip(tmp_path / "fsdd.zip", recordings)
    monkeypatch.setattr(audio, "FSDD_URL", zip_path.as_uri())
    monkeypatch.setattr(audio, "FSDD_RECORDINGS_SHA256", audio.fsdd_content_digest(tmp_path / "src"))
    return zip_path, recordings


def test_download_fsdd_extracts_and_verifies(fake_fsdd, tmp_path):
    zip_path, recordings = fake_fsdd
    root = audio.download_fsdd(tmp_path / "data" / "fsdd")
    assert root == tmp_path / "data" / "fsdd"
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "recordings"]
    assert {p.name: p.read_bytes() for p in (root / "recordings").iterdir()} == recordings
    zip_path.unlink()                  # present and verified: no second download
    assert audio.download_fsdd(root) == root
    assert audio.fsdd_root(tmp_path / "data", strict=False) == root


def test_download_fsdd_digest_mismatch_leaves_no_tree(fake_fsdd, tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "FSDD_RECORDINGS_SHA256", "0" * 64)
    with pytest.raises(hub.ChecksumError, match=re.escape(f"{audio.FSDD_URL} (cached as ")):
        audio.download_fsdd(tmp_path / "fsdd")
    assert not (tmp_path / "fsdd").exists()
    existing = tmp_path / "mine"         # a tree that was there before is reported, never deleted
    _fake_recordings(existing / "recordings", takes=1)
    with pytest.raises(hub.ChecksumError,
                       match=re.escape(f"existing {existing / 'recordings'}: FSDD content digest")):
        audio.download_fsdd(existing)
    assert len(list((existing / "recordings").iterdir())) == 2


@pytest.mark.parametrize("member", ["../evil.wav", "/tmp/evil.wav", "top/recordings/../../../evil.wav"])
def test_download_fsdd_refuses_path_traversal(fake_fsdd, tmp_path, monkeypatch, member):
    _, recordings = fake_fsdd
    evil = _fake_zip(tmp_path / "evil.zip", recordings, extra={member: b"gotcha"})
    monkeypatch.setattr(audio, "FSDD_URL", evil.as_uri())
    with pytest.raises(ValueError, match=re.escape(f"refusing unsafe member {member!r}")):
        audio.download_fsdd(tmp_path / "a" / "fsdd")
    assert not (tmp_path / "a").exists() and not (tmp_path / "evil.wav").exists()


def test_download_fsdd_offline_needs_the_cache(fake_fsdd, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"offline mode: .* is not in the cache"):
        audio.download_fsdd(tmp_path / "fsdd")
    assert not (tmp_path / "fsdd").exists()


# --- AudioFolder --------------------------------------------------------------------------------

def _tree(root: Path, files: list[str]) -> Path:
    for name in files:        # items are only listed, never decoded: empty files will do
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def test_audio_folder_single_folder_split(tmp_path):
    root = _tree(tmp_path / "clips", [f"dog/{i}.wav" for i in range(4)] + ["dog/deep/4.FLAC"]
                 + [f"cat/{i}.ogg" for i in range(5)] + ["owl/0.wav", "owl/notes.txt",
                                                         "owl/.1.wav", ".cache/x.wav"])
    train, val, test, classes = audio_folder_items(root, val_fraction=0.2, seed=0)
    assert classes == ["cat", "dog", "owl"] and test is None
    assert [sum(y == c for _, y in val) for c in range(3)] == [1, 1, 0]   # a lone clip stays in train
    assert sorted(train + val) == sorted(
        [(root / f"cat/{i}.ogg", 0) for i in range(5)] + [(root / f"dog/{i}.wav", 1) for i in range(4)]
        + [(root / "dog/deep/4.FLAC", 1), (root / "owl/0.wav", 2)])
    assert all(p.parent.name == classes[y] or p.parent.parent.name == classes[y] for p, y in train + val)
    assert audio_folder_items(root, val_fraction=0.2, seed=0)[:2] == (train, val)
    with pytest.raises(ValueError, match=re.escape("val_fraction must be in (0, 1), got 1.0")):
        audio_folder_items(root, val_fraction=1.0)


def test_audio_folder_given_splits(tmp_path):
    root = _tree(tmp_path, ["train/a/0.wav", "train/a/1.wav", "train/b/0.wav", "val/a/2.wav", "val/b/1.wav"])
    train, val, test, classes = audio_folder_items(root)
    assert classes == ["a", "b"] and test is None
    assert train == [(root / "train/a/0.wav", 0), (root / "train/a/1.wav", 0), (root / "train/b/0.wav", 1)]
    assert val == [(root / "val/a/2.wav", 0), (root / "val/b/1.wav", 1)]
    _tree(root, ["test/a/9.wav", "test/b/9.wav"])
    assert audio_folder_items(root)[2] == [(root / "test/a/9.wav", 0), (root / "test/b/9.wav", 1)]
    _tree(root, ["test/c/9.wav"])
    with pytest.raises(ValueError, match=re.escape(
            f"{root}: train classes ['a', 'b'] differ from test classes ['a', 'b', 'c']")):
        audio_folder_items(root)


def test_audio_folder_errors(tmp_path):
    absent = tmp_path / "absent"
    with pytest.raises(FileNotFoundError, match=re.escape(f"audio folder {absent} does not exist")):
        audio_folder_items(absent)
    flat = _tree(tmp_path / "flat", ["0.wav"])
    with pytest.raises(FileNotFoundError, match=re.escape(f"{flat} has no class sub-folders")):
        audio_folder_items(flat)
    root = _tree(tmp_path / "r", ["a/0.wav", "b/0.mp4", "c/x.txt"])
    with pytest.raises(FileNotFoundError, match=re.escape(
            f"{root}: class folder(s) b, c hold no audio files (.wav, .flac, .ogg)")):
        audio_folder_items(root)
    only_val = _tree(tmp_path / "v", ["val/a/0.wav"])
    with pytest.raises(FileNotFoundError,
                       match=re.escape(f"audio folder {only_val / 'train'} does not exist")):
        audio_folder_items(only_val)
    mismatch = _tree(tmp_path / "m", ["train/a/0.wav", "val/b/0.wav"])
    with pytest.raises(ValueError, match=re.escape("train classes ['a'] differ from val classes ['b']")):
        audio_folder_items(mismatch)
