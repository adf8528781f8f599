"""Connected spoken digits: strings of 1-10 digits built from FSDD recordings.

A real speech-recognition task from real speech, offline: each string is one speaker saying
``n`` digits, each digit a randomly chosen take of that speaker saying it, with random silences
between the words and around the string. Transcripts are the digits separated by spaces
(``"3 1 4"``).

The generator (:class:`DigitStrings`), for string ``i`` of a set with seed ``s``, draws from
``numpy.random.default_rng([s, i])`` alone (so any string can be rebuilt on its own, in any
order, in any process):

1. a speaker, uniformly among the speakers of the split;
2. the number of digits ``n``, uniformly in [``min_digits``, ``max_digits``] (1-10);
3. ``n`` digits, each uniformly in 0-9, and for each a take of that digit by that speaker,
   uniformly among the split's takes;
4. silences: before the first word and after the last, each uniform in ``edge_ms``
   (default 50-500 ms); between words, each uniform in ``gap_ms`` (default 0-400 ms: a gap of
   0 ms joins the recordings end to end, as fluent speech does). FSDD clips keep their own
   short leading and trailing pauses; silences are digital zeros.

The split follows FSDD's standard protocol: test strings use only takes 0-4, training strings
only takes 5-49 (or 10-49 with takes 5-9 held out for validation), so no recording is shared
between training and test strings. The recordings are 8 kHz mono.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.data.audio import _FSDD_NAME, fsdd_items, load_clips

FSDD_SAMPLE_RATE = 8000
TEST_SEED = 20261202   # the published connected-digit test set: 1,000 strings of takes 0-4


@dataclass(frozen=True)
class DigitStringSpec:
    """The ranges strings are drawn from: digits per string, and silences in ms (uniform)."""

    min_digits: int = 1
    max_digits: int = 10
    gap_ms: tuple[float, float] = (0.0, 400.0)
    edge_ms: tuple[float, float] = (50.0, 500.0)

    def __post_init__(self) -> None:
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(f"need 1 <= min_digits <= max_digits, got {self.min_digits} and "
                             f"{self.max_digits}")
        for name in ("gap_ms", "edge_ms"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range 0 <= low <= high, got {(low, high)}")


class DigitStrings(Dataset):
    """``size`` connected-digit strings: item i -> (waveform (S,) float32, transcript str).

    ``clips`` are mono recordings at ``sample_rate`` Hz, ``digits`` their digit (0-9) and
    ``speakers`` their speaker; string ``i`` is rebuilt from ``(seed, i)`` alone (see the
    module docstring).
    """

    def __init__(self, clips: Sequence[torch.Tensor], digits: Sequence[int],
                 speakers: Sequence[str], *, size: int, seed: int = 0,
                 spec: DigitStringSpec | None = None, sample_rate: int = FSDD_SAMPLE_RATE) -> None:
        if not len(clips) == len(digits) == len(speakers):
            raise ValueError(f"{len(clips)} clips, {len(digits)} digits and {len(speakers)} "
                             "speakers: one of each per clip")
        if size < 1:
            raise ValueError(f"size must be >= 1 string, got {size}")
        self.clips = [c.numpy() if isinstance(c, torch.Tensor) else np.asarray(c) for c in clips]
        self.size, self.seed, self.sample_rate = size, seed, sample_rate
        self.spec = spec or DigitStringSpec()
        takes: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (digit, speaker) in enumerate(zip(digits, speakers, strict=True)):
            if not 0 <= int(digit) <= 9:
                raise ValueError(f"clip {index}: digit must be 0-9, got {digit}")
            takes[speaker][int(digit)].append(index)
        incomplete = sorted(s for s, by_digit in takes.items() if len(by_digit) < 10)
        if incomplete:
            raise ValueError(f"speaker(s) {incomplete} lack recordings of some digits; every "
                             "speaker needs all ten")
        self.speakers = sorted(takes)
        self._lengths: list[int] | None = None
        self.takes = {s: {d: np.array(ix) for d, ix in by_digit.items()} for s, by_digit in takes.items()}

    def __len__(self) -> int:
        return self.size

    def _silence(self, rng: np.random.Generator, range_ms: tuple[float, float]) -> int:
        """Samples of one silence drawn from ``range_ms``."""
        return round(float(rng.uniform(*range_ms) * self.sample_rate / 1000))

    def plan(self, index: int) -> tuple[list[int], list[int], str]:
        """String ``index``: (its clips' indices, the silences before, between and after them
        in samples, its transcript)."""
        if not 0 <= index < self.size:
            raise IndexError(f"string {index} of {self.size}")
        spec = self.spec
        rng = np.random.default_rng([self.seed, index])
        speaker = self.speakers[rng.integers(len(self.speakers))]
        count = int(rng.integers(spec.min_digits, spec.max_digits + 1))
        digits = rng.integers(0, 10, size=count)
        clips, silences = [], [self._silence(rng, spec.edge_ms)]
        for position, digit in enumerate(digits):
            options = self.takes[speaker][int(digit)]
            clips.append(int(options[rng.integers(len(options))]))
            if position < count - 1:
                silences.append(self._silence(rng, spec.gap_ms))
        silences.append(self._silence(rng, spec.edge_ms))
        return clips, silences, " ".join(str(d) for d in digits.tolist())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        clips, silences, transcript = self.plan(index)
        parts = [np.zeros(silences[0], dtype=np.float32)]
        for clip, silence in zip(clips, silences[1:], strict=True):
            parts += [self.clips[clip], np.zeros(silence, dtype=np.float32)]
        return torch.from_numpy(np.concatenate(parts)), transcript

    @property
    def lengths_for_batching(self) -> list[int]:
        """Every string's length in samples (the recipes' loaders batch similar lengths)."""
        if self._lengths is None:
            sizes = [len(c) for c in self.clips]
            self._lengths = [sum(silences) + sum(sizes[c] for c in clips)
                             for clips, silences, _ in map(self.plan, range(self.size))]
        return self._lengths


def fsdd_digit_strings(root: str | Path, split: str, *, size: int, seed: int = 0,
                       spec: DigitStringSpec | None = None) -> DigitStrings:
    """Connected-digit strings from the recordings of one FSDD split (``test``: takes 0-4,
    ``train``: 5-49, ``fit``: 10-49, ``val``: 5-9; see :func:`zoo.data.audio.fsdd_items`)."""
    items = fsdd_items(root, split)
    paths = [path for path, _ in items]
    clips, _ = load_clips(paths, sample_rate=FSDD_SAMPLE_RATE)
    speakers = []
    for path in paths:
        match = _FSDD_NAME.fullmatch(path.name)
        assert match is not None   # fsdd_items checked every name
        speakers.append(match[2])
    return DigitStrings(clips, [d for _, d in items], speakers, size=size, seed=seed, spec=spec)


def collate_strings(batch: Sequence[tuple[torch.Tensor, str]]
                    ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(waveform, transcript) pairs -> right-padded waveforms (B, S), lengths (B,), transcripts."""
    waves = [wave for wave, _ in batch]
    lengths = torch.tensor([w.numel() for w in waves])
    return torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths, [t for _, t in batch]
