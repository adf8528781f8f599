"""Speech recognition: connected-digit strings, the speech front end, CTC decoding and
timestamps, long recordings in windows, bad input, and the recipe end to end (tiny model)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import zoo
from recipes.fault_tolerance import ResumableSampler
from zoo.ctc import beam_search, chunk_windows, greedy_decode, stitch, token_spans
from zoo.data.digit_strings import DigitStrings, DigitStringSpec
from zoo.models.ctc import SpeechRecognizer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(embed_dim=32, depth=1, num_heads=2, stem_channels=8)


@pytest.fixture(scope="module")
def fsdd_root() -> Path:
    root = Path(os.environ.get("ZOO_DATA", "/nonexistent")) / "fsdd"
    if not (root / "recordings").is_dir():
        pytest.skip("FSDD not found: set ZOO_DATA to a folder holding fsdd/recordings (CI does)")
    return root


def _tiny(**kwargs) -> SpeechRecognizer:
    torch.manual_seed(0)
    return zoo.create_model("ctc_tiny_d4_8k", **{**TINY, **kwargs})


def _fake_corpus(speakers=("a", "b"), takes=2, samples=(800, 1600)):
    """Clips whose samples encode (speaker, digit, take), so strings can be traced back."""
    clips, digits, who = [], [], []
    rng = np.random.default_rng(0)
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            for take in range(takes):
                n = int(rng.integers(*samples))
                clips.append(torch.full((n,), float(1 + 100 * s + 10 * digit + take)))
                digits.append(digit)
                who.append(speaker)
    return clips, digits, who


# --- connected-digit strings ----------------------------------------------------------------------

def test_digit_strings_are_reproducible_and_follow_the_spec():
    clips, digits, speakers = _fake_corpus()
    spec = DigitStringSpec(min_digits=2, max_digits=4, gap_ms=(100.0, 100.0), edge_ms=(0.0, 0.0))
    strings = DigitStrings(clips, digits, speakers, size=50, seed=3, spec=spec, sample_rate=8000)
    again = DigitStrings(clips, digits, speakers, size=50, seed=3, spec=spec, sample_rate=8000)
    other = DigitStrings(clips, digits, speakers, size=50, seed=4, spec=spec, sample_rate=8000)
    assert strings.lengths_for_batching == [strings[i][0].numel() for i in range(50)]
    differs = 0
    for i in range(50):
        wave, text = strings[i]
        assert torch.equal(wave, again[i][0]) and text == again[i][1]
        differs += text != other[i][1]
        words = text.split(" ")
        assert 2 <= len(words) <= 4 and all(w in "0123456789" for w in words)
        # every word is one recording of that digit by one speaker, 800 samples (100 ms) apart
        values = wave.numpy()
        runs = [v for j, v in enumerate(values) if v != 0 and (j == 0 or values[j - 1] != v)]
        assert [(int(v) - 1) % 100 // 10 for v in runs] == [int(w) for w in words]
        assert len({(int(v) - 1) // 100 for v in runs}) == 1
        assert np.count_nonzero(values == 0) == 800 * (len(words) - 1)
    assert differs > 25


def test_digit_strings_refuse_bad_specs_and_corpora():
    clips, digits, speakers = _fake_corpus()
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        DigitStringSpec(min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="gap_ms must be a range"):
        DigitStringSpec(gap_ms=(5.0, 1.0))
    with pytest.raises(ValueError, match=r"speaker\(s\) \['a'\] lack recordings"):
        DigitStrings(clips[1 * 2:], digits[2:], speakers[2:], size=4)
    with pytest.raises(ValueError, match="one of each per clip"):
        DigitStrings(clips, digits[:-1], speakers, size=4)
    strings = DigitStrings(clips, digits, speakers, size=4)
    with pytest.raises(IndexError):
        strings[4]


def test_fsdd_strings_keep_test_and_training_takes_apart(fsdd_root):
    from zoo.data.digit_strings import fsdd_digit_strings

    test = fsdd_digit_strings(fsdd_root, "test", size=20, seed=0)
    train = fsdd_digit_strings(fsdd_root, "train", size=20, seed=0)
    test_clips = {c.tobytes() for c in test.clips}
    assert len(test.clips) == 300 and len(train.clips) == 2700
    assert not test_clips & {c.tobytes() for c in train.clips}
    wave, text = test[0]
    assert wave.dtype == torch.float32 and wave.ndim == 1 and text


def test_sampler_groups_lengths_and_keeps_every_sample():
    lengths = torch.randint(1, 1000, (500,)).tolist()
    sampler = ResumableSampler(500, batch_size=10, shuffle=True, seed=1, lengths=lengths)
    order = list(sampler)
    assert sorted(order) == list(range(500))
    batches = [order[i:i + 10] for i in range(0, 500, 10)]
    spread = np.mean([np.ptp([lengths[i] for i in b]) for b in batches])
    plain = list(ResumableSampler(500, batch_size=10, shuffle=True, seed=1))
    plain_spread = np.mean([np.ptp([lengths[i] for i in plain[i:i + 10]]) for i in range(0, 500, 10)])
    assert spread < plain_spread / 4
    sampler.set_epoch(1)
    assert list(sampler) != order                        # another epoch, another order
    evaluation = list(ResumableSampler(500, batch_size=10, shuffle=False, lengths=lengths))
    assert [lengths[i] for i in evaluation] == sorted(lengths)
    sortagrad = ResumableSampler(500, batch_size=10, shuffle=True, lengths=lengths, sorted_epochs=1)
    assert [lengths[i] for i in sortagrad] == sorted(lengths)     # epoch 0: shortest first
    sortagrad.set_epoch(1)
    assert [lengths[i] for i in sortagrad] != sorted(lengths)
    with pytest.raises(ValueError, match="sorted_epochs needs the samples' lengths"):
        ResumableSampler(500, batch_size=10, shuffle=True, sorted_epochs=1)


# --- decoding -------------------------------------------------------------------------------------

def _log_probs(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows).clamp_min(1e-9).log()


def test_greedy_merges_repeats_and_drops_blanks():
    # frames: 1 1 _ 1 2 2 _  (blank = 0) -> 1 1 2
    path = [1, 1, 0, 1, 2, 2, 0]
    probs = torch.full((1, 7, 3), 0.05)
    probs[0, torch.arange(7), torch.tensor(path)] = 0.9
    assert greedy_decode(probs.log()) == [[1, 1, 2]]
    assert greedy_decode(probs.log(), torch.tensor([3])) == [[1]]


def test_beam_search_sums_alignments_where_greedy_cannot():
    # Each frame's best is the blank (greedy: nothing), but "1" over two frames has
    # 0.4*0.4 + 0.4*0.6 + 0.6*0.4 = 0.64 > 0.36 for the empty string.
    lp = _log_probs([[0.6, 0.4], [0.6, 0.4]])
    assert greedy_decode(lp[None]) == [[]]
    assert beam_search(lp, beam_width=4) == [1]
    # on peaked frames it agrees with greedy
    rows = torch.full((6, 4), 0.02)
    rows[torch.arange(6), torch.tensor([3, 0, 3, 3, 0, 1])] = 0.94
    assert beam_search(rows.log(), beam_width=3) == greedy_decode(rows.log()[None])[0] == [3, 3, 1]
    with pytest.raises(ValueError, match="beam_width must be >= 1"):
        beam_search(lp, beam_width=0)


def test_token_spans_place_tokens_on_their_frames():
    rows = torch.full((8, 3), 0.01)
    rows[torch.arange(8), torch.tensor([0, 1, 1, 0, 0, 2, 2, 0])] = 0.98
    spans = token_spans(rows.log(), [1, 2])
    assert [(s.token, s.start, s.end) for s in spans] == [(1, 1, 3), (2, 5, 7)]
    assert all(0.9 < s.score <= 1 for s in spans)
    assert token_spans(rows.log(), []) == []


def test_chunk_windows_keep_every_token_once():
    windows = chunk_windows(10_000, window=1_000, overlap=200, token_samples=40)
    assert windows[0].start == 0 and windows[-1].start + windows[-1].length == 10_000
    kept = []
    for w in windows:
        tokens = torch.arange(w.start // 40, w.start // 40 + math.ceil(w.length / 40))
        kept.append(tokens[w.keep_from:w.keep_to])
    joined = torch.cat(kept)
    assert torch.equal(joined, torch.arange(250))
    pieces = [torch.arange(w.length // 40 + (w.length % 40 > 0))[:, None].float() + w.start // 40
              for w in windows]
    assert torch.equal(stitch(pieces, windows)[:, 0], torch.arange(250).float())
    assert chunk_windows(500, window=1_000, overlap=200, token_samples=40) == \
        [(0, 500, 0, None)]
    with pytest.raises(ValueError, match="overlap < window"):
        chunk_windows(5_000, window=1_000, overlap=1_000, token_samples=40)


# --- the model ------------------------------------------------------------------------------------

def test_padded_batch_gives_each_clip_its_own_output():
    model = _tiny().eval()
    waves = torch.randn(3, 8000) * 0.1
    lengths = torch.tensor([8000, 5000, 2600])
    with torch.no_grad():
        log_probs, tokens = model(waves, lengths)
        # 98 frames, padded to 128 (FRAME_BUCKET): 32 tokens, of which each clip's are valid
        assert log_probs.shape == (3, 32, 11) and tokens.tolist() == [25, 16, 8]
        for i, n in enumerate(lengths.tolist()):
            alone, count = model(waves[i:i + 1, :n])
            assert int(count) == tokens[i]
            torch.testing.assert_close(alone[0, :count], log_probs[i, :tokens[i]], atol=1e-5,
                                       rtol=1e-5)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(3, 32), atol=1e-5)


def test_vocabulary_encode_decode_and_errors():
    model = _tiny()
    assert model.encode("3 1 4") == [4, 2, 5] and model.decode([4, 2, 5]) == "3 1 4"
    with pytest.raises(ValueError, match=r"holds \['x'\], outside the model's vocabulary"):
        model.encode("3 x")
    chars = _tiny(tokens=list("ab "), separator="")
    assert chars.encode("ab a") == [1, 2, 3, 1] and chars.decode([2, 3, 1]) == "b a"
    with pytest.raises(ValueError, match="tokens must be unique"):
        _tiny(tokens=["1", "1"])
    with pytest.raises(ValueError, match="may not contain the separator"):
        _tiny(tokens=["a b"])
    with pytest.raises(ValueError, match="takes tokens=, not num_classes="):
        zoo.create_model("ctc_tiny_d4_8k", num_classes=3)


def test_transcribe_takes_lists_batches_and_other_rates():
    model = _tiny()
    waves = [torch.randn(6000) * 0.1, torch.randn(3000) * 0.1]
    texts = model.transcribe(waves)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    assert model.transcribe(padded, lengths=torch.tensor([6000, 3000])) == texts
    assert model.transcribe(waves[0]) == texts[:1]
    upsampled = model.transcribe([torch.randn(12000) * 0.1], sample_rate=16000)
    assert len(upsampled) == 1
    detailed = model.transcribe(waves, timestamps=True)
    for item, text in zip(detailed, texts, strict=True):
        assert item.text == text and len(item.words) == len(text.split())
        assert all(0 <= w.start < w.end <= 0.75 + 0.04 for w in item.words)
    assert model.training     # transcribe leaves the mode it found


def test_transcribe_refuses_bad_input():
    model = _tiny()
    with pytest.raises(ValueError, match=r"recording\(s\) \[1\] are shorter than one 25 ms frame"):
        model.transcribe([torch.randn(4000), torch.randn(100)])
    with pytest.raises(ValueError, match="not 1-D waveforms; mix stereo down"):
        model.transcribe([torch.randn(2, 4000)])
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.transcribe([torch.full((4000,), float("nan"))])
    with pytest.raises(ValueError, match="no recordings"):
        model.transcribe([])
    with pytest.raises(ValueError, match="do not fit a batch"):
        model.transcribe(torch.randn(2, 4000), lengths=torch.tensor([4000, 5000]))
    with pytest.raises(ValueError, match="expected waveforms"):
        model.transcribe(torch.randn(1, 2, 4000))


def test_long_recording_runs_in_bounded_windows():
    model = _tiny(chunk_seconds=4.0, chunk_overlap_seconds=1.0)
    seen = []
    forward = model.forward

    def spy(x, lengths=None, sample_rate=None):
        seen.append(tuple(x.shape))
        return forward(x, lengths, sample_rate)

    model.forward = spy
    ten_minutes = torch.randn(10 * 60 * 8000) * 0.05
    [transcript] = model.transcribe([ten_minutes], timestamps=True, batch_size=8)
    assert len(seen) == math.ceil(200 / 8)          # 600 s in 3 s steps: 200 windows
    assert max(b for b, _ in seen) <= 8 and max(s for _, s in seen) <= 4 * 8000
    assert all(w.end <= 600.04 for w in transcript.words)


# --- recipe, CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def speech_run(tmp_path_factory, fsdd_root):
    from recipes.train import train

    run = tmp_path_factory.mktemp("speech") / "run"
    args = ["--config", "configs/audio/ctc_tiny_d4_digits.yaml",
            f"--trainer.default_root_dir={run}", "--trainer.max_epochs=1",
            "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
            f"--data.root={fsdd_root.parent}", "--data.train_strings=64", "--data.val_strings=8",
            "--data.test_strings=16", "--data.batch_size=16", "--data.max_digits=3"]
    args += [f"--model.model_kwargs.{k}={v}" for k, v in TINY.items()]
    started = time.perf_counter()
    result = train(args, overwrite=True)
    result["wall_s"] = time.perf_counter() - started
    return run, result


def test_recipe_trains_tests_and_transcribes(speech_run, tmp_path, capsys):
    from zoo.cli import main

    run, result = speech_run
    metrics = result["metrics"]
    assert set(metrics) >= {"test/wer", "test/cer", "test/ser", "test/loss"}
    assert result["num_test"] == 16 and 0 <= metrics["test/ser"] <= 1
    # the training time counts training once (testing a checkpoint restores its saved time)
    assert 0 < result["train_time_s"] < result["wall_s"]
    ckpt = run / "checkpoints" / "last.ckpt"
    wav = tmp_path / "three.wav"
    sf.write(wav, (np.random.default_rng(0).standard_normal(8000) * 0.05).astype("float32"), 8000)
    assert main(["transcribe", str(ckpt), str(wav), "--timestamps"]) == 0
    out = tmp_path / "out.csv"
    assert main(["transcribe", str(ckpt), str(wav), str(wav), "--output", str(out)]) == 0
    assert out.read_text().splitlines()[0] == "path,text,duration_s,words,error"
    before = out.read_text()
    assert main(["transcribe", str(ckpt), str(wav), "--output", str(out)]) == 2
    assert "exists; zoo never writes over a file" in capsys.readouterr().err
    assert out.read_text() == before


def test_cli_transcribe_handles_bad_files(speech_run, tmp_path, capsys):
    from zoo.cli import main

    ckpt = speech_run[0] / "checkpoints" / "last.ckpt"
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(50, dtype="float32"), 8000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF0000WAVEnot audio")
    assert main(["transcribe", str(ckpt), str(short)]) == 2
    assert "short.wav: 50 samples at 8000 Hz is shorter than one 25 ms frame" in \
        capsys.readouterr().err
    out = tmp_path / "skipped.csv"
    assert main(["transcribe", str(ckpt), str(short), str(corrupt), "--on-error", "skip",
                 "--output", str(out)]) == 0
    rows = out.read_text().splitlines()[1:]
    assert len(rows) == 2 and all(row.split(",")[-1] for row in rows)
    assert main(["transcribe", "vit_nano_patch4_16.digits", str(short)]) == 2
    assert "does not recognise speech" in capsys.readouterr().err


def test_finetune_names_the_speech_recipe(tmp_path, capsys):
    from zoo.cli import main

    assert main(["finetune", "ctc_tiny_d4_8k", "--data", str(tmp_path)]) == 2
    assert "zoo train configs/audio/ctc_tiny_d4_digits.yaml" in capsys.readouterr().err


def test_cli_transcribe_mixes_resamples_and_reports(speech_run, tmp_path, capsys):
    """Stereo at another rate is mixed down and resampled; a silent file gives an empty text
    (with load_audio's warning); an empty file is refused in one sentence naming it."""
    from zoo.cli import main

    ckpt = speech_run[0] / "checkpoints" / "last.ckpt"
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, (np.random.default_rng(1).standard_normal((16000, 2)) * 0.05).astype("float32"),
             16000)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(8000, dtype="float32"), 8000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype="float32"), 8000)
    out = tmp_path / "out.csv"
    assert main(["transcribe", str(ckpt), str(stereo), str(silent), str(empty), "--on-error",
                 "skip", "--output", str(out)]) == 0
    rows = out.read_text().splitlines()[1:]
    assert rows[0].startswith(str(stereo)) and rows[0].split(",")[2] == "1.000"   # 1 s, mono 8 kHz
    assert rows[1].startswith(str(silent)) and not rows[1].split(",")[-1]          # no error
    assert rows[2].startswith(str(empty)) and "empty.wav" in rows[2].split(",", 4)[-1]
