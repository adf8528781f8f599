"""Connected spoken digits: a CTC model trained on strings vs isolated-word classifiers chained.

Scores the published connected-digit test set (:data:`zoo.data.digit_strings.TEST_SEED`: 1,000
strings of 1-10 digits from FSDD takes 0-4, never trained on) by word error rate (WER, from
torchmetrics) and string error rate (SER: strings with any error), clean and with white noise
at the given SNRs (dB, over each string's samples; a fixed seed):

- ``ctc``: a speech model (default ``ctc_tiny_d4_8k.fsdd_digits``) decodes each string whole;
- ``chained``: the published isolated-digit classifier (``ast_tiny_d6_8k.fsdd``) classifies
  the words an energy detector finds: 25 ms frames every 10 ms, a frame is speech when its
  level is within 35 dB of the string's loudest frame, pauses under 60 ms are bridged, segments
  under 80 ms dropped, each segment padded by 50 ms. This is what a user would do with a word
  classifier; words said without a pause between them merge into one segment.

    python benchmarks/connected_digits.py [--model NAME|CKPT|DIR] [--snr 20 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics.functional.text import word_error_rate

import zoo
from zoo.data.audio import fsdd_root
from zoo.data.digit_strings import TEST_SEED, fsdd_digit_strings
from zoo.data.noise import mix_at_snr, white_noise


def _load(spec: str) -> Any:
    from zoo.cli import _load_for_predict

    return _load_for_predict(spec, None).eval()


def error_rates(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """WER and SER in percent."""
    wrong = sum(h != r for h, r in zip(hypotheses, references, strict=True))
    return {"wer": 100 * float(word_error_rate(list(hypotheses), list(references))),
            "ser": 100 * wrong / len(references)}


def noisy(waves: list[torch.Tensor], snr_db: float | None, seed: int = 0) -> list[torch.Tensor]:
    """Each string with white noise at ``snr_db`` dB (None: clean)."""
    if snr_db is None:
        return waves
    generator = torch.Generator().manual_seed(seed)
    out = []
    for wave in waves:
        noise = white_noise(1, wave.numel(), generator=generator)
        out.append(mix_at_snr(wave[None], noise, snr_db)[0])
    return out


def speech_segments(wave: torch.Tensor, rate: int, *, floor_db: float = 35.0,
                    bridge_ms: float = 60.0, min_ms: float = 80.0, pad_ms: float = 50.0
                    ) -> list[tuple[int, int]]:
    """(start, end) samples of the words an energy detector finds in ``wave`` (S,)."""
    frame, hop = int(0.025 * rate), int(0.010 * rate)
    if wave.numel() < frame:
        return []
    frames = wave.unfold(0, frame, hop)
    level = 10 * torch.log10(frames.square().mean(-1) + 1e-12)
    active = (level > level.max() - floor_db).tolist()
    runs, start = [], None
    for i, on in enumerate([*active, False]):
        if on and start is None:
            start = i
        elif not on and start is not None:
            runs.append([start, i])
            start = None
    merged: list[list[int]] = []
    for run in runs:
        if merged and (run[0] - merged[-1][1]) * 10 < bridge_ms:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    pad = int(pad_ms * rate / 1000)
    return [(max(0, a * hop - pad), min(wave.numel(), (b - 1) * hop + frame + pad))
            for a, b in merged if (b - a) * 10 >= min_ms]


def chained_transcripts(classifier: Any, waves: list[torch.Tensor]) -> list[str]:
    """Each string's segments classified by an isolated-word classifier, joined by spaces."""
    rate = classifier.fbank_config.sample_rate
    texts = []
    for wave in waves:
        segments = speech_segments(wave, rate)
        if not segments:
            texts.append("")
            continue
        clips = [wave[a:b] for a, b in segments]
        batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
        with torch.inference_mode():
            fbank = classifier.front_end.filterbank(batch, lengths=torch.tensor([c.numel() for c in clips]))
            labels = classifier(fbank).argmax(-1).tolist()
        texts.append(" ".join(str(d) for d in labels))
    return texts


def ctc_transcripts(model: Any, waves: list[torch.Tensor], *, beam_width: int = 1,
                    batch_size: int = 32) -> list[str]:
    order = sorted(range(len(waves)), key=lambda i: waves[i].numel())
    texts: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        part = order[start:start + batch_size]
        clips = [waves[i] for i in part]
        batch = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
        with torch.inference_mode():
            log_probs, lengths = model(batch, torch.tensor([c.numel() for c in clips]))
        for i, text in zip(part, model.decode_log_probs(log_probs, lengths, beam_width=beam_width),
                           strict=True):
            texts[i] = text
    return [texts[i] for i in range(len(waves))]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="ctc_tiny_d4_8k.fsdd_digits")
    p.add_argument("--classifier", default="ast_tiny_d6_8k.fsdd")
    p.add_argument("--strings", type=int, default=1000)
    p.add_argument("--snr", type=float, nargs="*", default=[20.0], help="white-noise SNRs (dB)")
    p.add_argument("--beam-width", type=int, default=1)
    p.add_argument("--no-chained", action="store_true", help="skip the chained classifier")
    p.add_argument("--data-root", default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    test = fsdd_digit_strings(fsdd_root(args.data_root), "test", size=args.strings, seed=TEST_SEED)
    items = [test[i] for i in range(len(test))]
    clean, references = [w for w, _ in items], [t for _, t in items]
    model = _load(args.model)
    classifier = None if args.no_chained else zoo.create_model(args.classifier, pretrained=True).eval()
    rows = []
    for snr in [None, *args.snr]:
        waves = noisy(clean, snr)
        started = time.perf_counter()
        row = {"condition": "clean" if snr is None else f"white {snr:g} dB",
               "ctc": error_rates(ctc_transcripts(model, waves, beam_width=args.beam_width),
                                  references),
               "ctc_seconds": round(time.perf_counter() - started, 1)}
        if classifier is not None:
            row["chained"] = error_rates(chained_transcripts(classifier, waves), references)
        rows.append(row)
        chained = row.get("chained")
        print(f"{row['condition']:<14} CTC WER {row['ctc']['wer']:6.2f}%  SER {row['ctc']['ser']:6.2f}%"
              + (f"   chained classifier WER {chained['wer']:6.2f}%  SER {chained['ser']:6.2f}%"
                 if chained else ""), flush=True)
    result = {"model": args.model, "classifier": None if args.no_chained else args.classifier,
              "strings": len(items), "test_seed": TEST_SEED, "beam_width": args.beam_width,
              "rows": rows, "date": time.strftime("%Y-%m-%d")}
    if args.json:
        with open(args.json, "x") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
