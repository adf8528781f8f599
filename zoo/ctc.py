"""CTC decoding: frame log-probabilities -> token ids, word timestamps, long-recording chunks.

Log-probabilities are (N, V) per utterance (or (B, N, V) with lengths), token 0 the blank.
:func:`greedy_decode` takes the best token per frame, merges repeats and drops blanks;
:func:`beam_search` is CTC prefix beam search (Hannun et al. 2014, no language model), which
sums the probabilities of all alignments of a prefix. :func:`token_spans` aligns a decoded
sequence to the frames (torchaudio's ``forced_align`` + ``merge_tokens``) for timestamps.
:func:`chunk_windows` and :func:`stitch` cut a long recording into overlapping windows and join
their frames back, so that memory stays bounded whatever the recording's length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

BLANK = 0
_NEG_INF = float("-inf")


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor | None = None) -> list[list[int]]:
    """(B, N, V) -> per utterance the token ids (blanks and repeats merged), over the first
    ``lengths[b]`` frames of each."""
    best = log_probs.argmax(-1).cpu()                                     # (B, N)
    if lengths is None:
        lengths = torch.full((best.shape[0],), best.shape[1])
    out: list[list[int]] = []
    for row, n in zip(best, lengths.tolist(), strict=True):
        if n == 0:
            out.append([])
            continue
        path = row[:n]
        keep = torch.ones(n, dtype=torch.bool)
        keep[1:] = path[1:] != path[:-1]
        ids = path[keep]
        out.append(ids[ids != BLANK].tolist())
    return out


def _logadd(a: float, b: float) -> float:
    if a == _NEG_INF:
        return b
    if b == _NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


def beam_search(log_probs: torch.Tensor, *, beam_width: int = 8, token_prune: float = 12.0
                ) -> list[int]:
    """CTC prefix beam search over one utterance's (N, V) log-probabilities -> token ids.

    Each prefix keeps the log-probability of its alignments ending in a blank and in its last
    token; ``beam_width`` prefixes survive each frame. Tokens more than ``token_prune`` nats
    below a frame's best are not extended (they cannot change the result at beam widths
    that matter, and skipping them keeps long recordings fast).
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be >= 1, got {beam_width}")
    if log_probs.ndim != 2:
        raise ValueError(f"expected one utterance's log-probabilities (N, V), got "
                         f"{tuple(log_probs.shape)}")
    frames = log_probs.detach().double().cpu()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG_INF)}
    for row in frames:
        lp = row.tolist()
        top = max(lp)
        candidates = [c for c, v in enumerate(lp) if c != BLANK and v > top - token_prune]
        grown: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_token) in beams.items():
            total = _logadd(p_blank, p_token)
            here = grown.setdefault(prefix, [_NEG_INF, _NEG_INF])
            here[0] = _logadd(here[0], total + lp[BLANK])
            for c in candidates:
                extended = grown.setdefault((*prefix, c), [_NEG_INF, _NEG_INF])
                if prefix and prefix[-1] == c:
                    # a repeat needs a blank between; without one the frame continues the token
                    extended[1] = _logadd(extended[1], p_blank + lp[c])
                    here[1] = _logadd(here[1], p_token + lp[c])
                else:
                    extended[1] = _logadd(extended[1], total + lp[c])
        ranked = sorted(grown.items(), key=lambda kv: _logadd(*kv[1]), reverse=True)
        beams = {prefix: (p[0], p[1]) for prefix, p in ranked[:beam_width]}
    best = max(beams.items(), key=lambda kv: _logadd(*kv[1]))[0]
    return list(best)


class TokenSpan(NamedTuple):
    """One decoded token: its id, first and last-plus-one frame, mean frame probability."""

    token: int
    start: int
    end: int
    score: float


def token_spans(log_probs: torch.Tensor, ids: Sequence[int]) -> list[TokenSpan]:
    """Align ``ids`` to one utterance's (N, V) log-probabilities (the best CTC path through
    them) and return each token's frames."""
    if not ids:
        return []
    import torchaudio.functional as AF

    targets = torch.tensor([list(ids)], dtype=torch.int32)
    emissions = log_probs.detach().float().cpu()[None]
    alignment, scores = AF.forced_align(emissions, targets, blank=BLANK)
    return [TokenSpan(int(s.token), int(s.start), int(s.end), float(s.score))
            for s in AF.merge_tokens(alignment[0], scores[0].exp(), blank=BLANK)]


class Window(NamedTuple):
    """A window of a recording: samples [start, start + length), and which of its tokens are
    kept when stitching (``keep_from`` .. ``keep_to``, in the window's own tokens)."""

    start: int
    length: int
    keep_from: int
    keep_to: int | None


def chunk_windows(num_samples: int, *, window: int, overlap: int, token_samples: int
                  ) -> list[Window]:
    """Overlapping windows covering ``num_samples`` samples.

    Windows are ``window`` samples long and start every ``window - overlap`` samples (both
    rounded down to whole tokens of ``token_samples`` samples, so that every window's tokens
    fall on the recording's token grid). Each window keeps the tokens of its middle: half the
    overlap is given to each neighbour, so every token of the recording is kept exactly once,
    from the window where it is furthest from an edge.
    """
    window -= window % token_samples
    overlap -= overlap % token_samples
    if window <= 0 or not 0 <= overlap < window:
        raise ValueError(f"need 0 <= overlap < window (in whole tokens of {token_samples} "
                         f"samples), got window {window} and overlap {overlap} samples")
    if num_samples <= window:
        return [Window(0, num_samples, 0, None)]
    step, half = window - overlap, (overlap // token_samples) // 2
    starts = list(range(0, num_samples - overlap, step))
    out = []
    for i, start in enumerate(starts):
        last = i == len(starts) - 1
        length = num_samples - start if last else window
        keep_from = 0 if i == 0 else half
        keep_to = None if last else (step // token_samples) + half
        out.append(Window(start, length, keep_from, keep_to))
    return out


def stitch(pieces: Sequence[torch.Tensor], windows: Sequence[Window]) -> torch.Tensor:
    """Join the windows' (N_i, V) log-probabilities into the recording's (N, V)."""
    return torch.cat([p[w.keep_from:w.keep_to] for p, w in zip(pieces, windows, strict=True)])
