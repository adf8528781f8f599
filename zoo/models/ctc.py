"""Speech recognition with CTC: speech front end + shared encoder + CTC head.

Waveforms -> Kaldi log-mel -> a 4x subsampling convolutional stem (one token per 40 ms) ->
the shared pre-norm Transformer encoder with rotary positions -> per-token log-probabilities
over a vocabulary and the blank (Graves et al. 2006). ``transcribe`` decodes them greedily or by
prefix beam search (:mod:`zoo.ctc`), cuts long recordings into overlapping windows, and gives
per-word timestamps from the CTC alignment.

The vocabulary is a list of tokens joined by ``separator`` into text: words (``separator=" "``,
the connected-digits model's ``"0"`` .. ``"9"``) or characters (``separator=""``, with ``" "``
as a token of its own).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from zoo.ctc import Window, beam_search, chunk_windows, greedy_decode, stitch, token_spans
from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.frontends.audio import FbankConfig
from zoo.frontends.speech import SUBSAMPLING, SpeechFrontEnd
from zoo.heads import CTCHead
from zoo.models.base import TokenModel
from zoo.registry import register_model

logger = logging.getLogger(__name__)

DIGIT_TOKENS = tuple(str(d) for d in range(10))


class Word(NamedTuple):
    """A recognised word, its start and end in seconds and its mean frame probability."""

    text: str
    start: float
    end: float
    score: float


class Transcript(NamedTuple):
    """A recording's text and its words with timestamps."""

    text: str
    words: list[Word]


class CTCModel(TokenModel):
    """What every CTC speech model offers once its parts exist: the vocabulary (``encode`` /
    ``decode``), ``forward`` -> (log-probabilities (B, N, V + 1), tokens per clip (B,)), the
    CTC loss, decoding and :meth:`transcribe`. Subclasses build the front end and say how
    waveforms become tokens (:meth:`forward_tokens`), the model's ``sample_rate`` and
    ``fbank_config`` (``min_samples``, ``frame_length_ms``) and ``token_samples`` (samples per
    token). ``chunk_seconds`` / ``chunk_overlap_seconds`` in ``model_args``: the windows
    :meth:`transcribe` cuts longer recordings into.
    """

    head: CTCHead

    modality = "speech"

    def __init__(self, front_end: Any, encoder: Encoder, head: CTCHead,
                 model_args: dict[str, Any], *, tokens: Sequence[str], separator: str) -> None:
        chunk, overlap = model_args["chunk_seconds"], model_args["chunk_overlap_seconds"]
        if not 0 <= overlap < chunk:
            raise ValueError(f"need 0 <= chunk_overlap_seconds < chunk_seconds, got "
                             f"{overlap} and {chunk}")
        super().__init__(front_end, encoder, head, model_args=model_args)
        self.tokens, self.separator = tuple(tokens), separator
        self._index = {token: i + 1 for i, token in enumerate(self.tokens)}

    @property
    def sample_rate(self) -> int:
        return self.fbank_config.sample_rate

    @property
    def fbank_config(self) -> Any:
        raise NotImplementedError

    @property
    def token_samples(self) -> int:
        raise NotImplementedError

    def forward_tokens(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                       sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _encode(self, tokens: torch.Tensor, token_lengths: torch.Tensor,
                rope: Any = None) -> torch.Tensor:
        """The encoder over tokens (B, N, D), the padding past each clip's tokens masked."""
        n = tokens.shape[1]
        mask = None
        if bool((token_lengths < n).any()):   # key padding: (B, 1, 1, N), True = attend
            mask = (torch.arange(n)[None, :] < token_lengths[:, None]).to(tokens.device)[:, None, None]
        return self.encoder(tokens, mask, rope)

    # --- text <-> token ids -----------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """A transcript -> token ids (1..V); a word or character outside the vocabulary raises."""
        pieces = text.split() if self.separator == " " else \
            (text.split(self.separator) if self.separator else list(text))
        unknown = sorted({p for p in pieces if p not in self._index})
        if unknown:
            raise ValueError(f"transcript {text!r} holds {unknown}, outside the model's "
                             f"vocabulary {list(self.tokens)}")
        return [self._index[p] for p in pieces]

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids (1..V) -> text."""
        return self.separator.join(self.tokens[i - 1] for i in ids)

    # --- the network ----------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                         sample_rate: int | None = None) -> torch.Tensor:
        """Waveforms (B, S) or filterbanks (B, T, F) -> encoder tokens (B, N, D) (padding
        tokens included; :meth:`forward_tokens` also says how many are each clip's)."""
        return self.forward_tokens(x, lengths, sample_rate)[0]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, token_lengths = self.forward_tokens(x, lengths, sample_rate)
        return self.head(tokens), token_lengths

    def ctc_loss(self, log_probs: torch.Tensor, token_lengths: torch.Tensor,
                 transcripts: Sequence[str]) -> torch.Tensor:
        """Mean CTC loss (per target token, as PyTorch's ``reduction="mean"``) of a batch."""
        targets = [torch.tensor(self.encode(t), dtype=torch.long) for t in transcripts]
        target_lengths = torch.tensor([len(t) for t in targets])
        flat = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)
        return F.ctc_loss(log_probs.transpose(0, 1), flat.to(log_probs.device),
                          token_lengths.to(log_probs.device), target_lengths.to(log_probs.device),
                          blank=0, zero_infinity=True)

    # --- recognition ------------------------------------------------------------------------------

    def decode_log_probs(self, log_probs: torch.Tensor, lengths: torch.Tensor | None = None, *,
                         beam_width: int = 1) -> list[str]:
        """(B, N, V + 1) -> texts: greedy (``beam_width=1``) or prefix beam search."""
        if beam_width <= 1:
            return [self.decode(ids) for ids in greedy_decode(log_probs, lengths)]
        if lengths is None:
            lengths = torch.full((log_probs.shape[0],), log_probs.shape[1])
        return [self.decode(beam_search(lp[:n], beam_width=beam_width))
                for lp, n in zip(log_probs, lengths.tolist(), strict=True)]

    @torch.inference_mode()
    def transcribe(self, waveforms: torch.Tensor | Sequence[torch.Tensor],
                   sample_rate: int | None = None, lengths: torch.Tensor | None = None, *,
                   beam_width: int = 1, timestamps: bool = False, batch_size: int = 16,
                   progress: Any = None) -> list[str] | list[Transcript]:
        """Recognise speech: 1-D waveforms (a list, or one (S,) tensor) or a right-padded
        batch (B, S) with ``lengths`` -> one text per recording (with ``timestamps``, a
        :class:`Transcript` with per-word times in seconds).

        Recordings at another ``sample_rate`` (Hz) are resampled to the model's. Recordings
        longer than ``chunk_seconds`` are cut into windows that overlap by
        ``chunk_overlap_seconds``, run ``batch_size`` windows at a time, and stitched: memory
        stays bounded for any length. ``progress``: a callable taking the number of windows
        done (e.g. a tqdm bar's ``update``).
        """
        clips = _as_clips(waveforms, lengths)
        rate = self.sample_rate
        if sample_rate is not None and sample_rate != rate:
            import torchaudio.functional as AF

            clips = [AF.resample(c.float(), sample_rate, rate) for c in clips]
        c = self.fbank_config
        short = [i for i, clip in enumerate(clips) if clip.numel() < c.min_samples]
        if short:
            raise ValueError(f"recording(s) {short} are shorter than one {c.frame_length_ms:g} ms "
                             f"frame ({c.min_samples} samples at {c.sample_rate} Hz); pad them "
                             "with silence or drop them")
        token_samples = self.token_samples
        args = self.model_args
        plans = [chunk_windows(c.numel(), window=int(args["chunk_seconds"] * rate),
                               overlap=int(args["chunk_overlap_seconds"] * rate),
                               token_samples=token_samples) for c in clips]
        jobs = [(i, j) for i, plan in enumerate(plans) for j in range(len(plan))]
        jobs.sort(key=lambda job: -plans[job[0]][job[1]].length)   # similar lengths batch together
        pieces: dict[tuple[int, int], torch.Tensor] = {}
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            for start in range(0, len(jobs), batch_size):
                part = jobs[start:start + batch_size]
                windows: list[Window] = [plans[i][j] for i, j in part]
                batch = torch.nn.utils.rnn.pad_sequence(
                    [clips[i][w.start:w.start + w.length] for (i, _), w in zip(part, windows, strict=True)],
                    batch_first=True).float().to(device)
                log_probs, token_lengths = self(batch, torch.tensor([w.length for w in windows]))
                for job, lp, n in zip(part, log_probs.cpu(), token_lengths.tolist(), strict=True):
                    pieces[job] = lp[:n]
                if progress is not None:
                    progress(len(part))
        finally:
            self.train(was_training)
        out: list[Any] = []
        for i, plan in enumerate(plans):
            log_probs = stitch([pieces[(i, j)] for j in range(len(plan))], plan)
            text = self.decode_log_probs(log_probs[None], beam_width=beam_width)[0]
            out.append(Transcript(text, self._words(log_probs, text)) if timestamps else text)
        return out

    def _words(self, log_probs: torch.Tensor, text: str) -> list[Word]:
        """Each word of ``text`` with its start / end (s) from the CTC alignment."""
        ids = self.encode(text)
        spans = token_spans(log_probs, ids)
        seconds = self.token_samples / self.sample_rate
        if self.separator:       # every token is a word
            return [Word(self.tokens[s.token - 1], s.start * seconds, s.end * seconds, s.score)
                    for s in spans]
        words: list[Word] = []
        current: list[Any] = []
        for span in [*spans, None]:
            if span is None or self.tokens[span.token - 1].isspace():
                if current:
                    words.append(Word("".join(self.tokens[s.token - 1] for s in current),
                                      current[0].start * seconds, current[-1].end * seconds,
                                      sum(s.score for s in current) / len(current)))
                current = []
            else:
                current.append(span)
        return words


class SpeechRecognizer(CTCModel):
    """Waveforms (B, S) at ``sample_rate`` Hz [+ samples per clip], or normalised filterbanks
    (B, T, num_mel_bins) [+ frames per clip] -> (log-probabilities (B, N, V + 1), tokens per
    clip (B,)), N = ceil(T / 4); index 0 is the CTC blank, index i the vocabulary's token i - 1.
    Kaldi log-mel, the 4x convolutional stem (:class:`SpeechFrontEnd`), rotary positions.
    """

    front_end: SpeechFrontEnd

    def __init__(self, *, tokens: Sequence[str] = DIGIT_TOKENS, separator: str = " ",
                 sample_rate: int = 16000, num_mel_bins: int = 80, mean: float = 0.0,
                 std: float = 1.0, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                 stem_channels: int = 64, conv_pos_kernel: int = 0, embed_dim: int = 256,
                 depth: int = 12,
                 num_heads: int = 4, mlp_ratio: float = 4.0, norm_eps: float = 1e-6,
                 drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 chunk_seconds: float = 8.0, chunk_overlap_seconds: float = 1.0) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        args["tokens"] = list(tokens)
        vocabulary, separator = check_vocabulary(tokens, separator)
        fbank = FbankConfig(sample_rate=sample_rate, num_mel_bins=num_mel_bins, mean=mean,
                            std=std, frame_length_ms=frame_length_ms,
                            frame_shift_ms=frame_shift_ms)
        front_end = SpeechFrontEnd(fbank=fbank, embed_dim=embed_dim,
                                   head_dim=embed_dim // num_heads, stem_channels=stem_channels,
                                   conv_pos_kernel=conv_pos_kernel)
        block = BlockConfig(embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                            norm_eps=norm_eps, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate)
        encoder = Encoder(EncoderConfig(block=block, depth=depth, drop_path=drop_path_rate))
        head = CTCHead(embed_dim, len(vocabulary), drop=drop_rate)
        super().__init__(front_end, encoder, head, args, tokens=vocabulary, separator=separator)

    @property
    def fbank_config(self) -> FbankConfig:
        return self.front_end.fbank_config

    @property
    def token_samples(self) -> int:
        """Samples per token: 4 frame shifts (320 at 8 kHz, 40 ms)."""
        return SUBSAMPLING * self.fbank_config.frame_shift

    def forward_tokens(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                       sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (B, S) or filterbanks (B, T, F) -> encoder tokens (B, N, D) and tokens per
        clip (B,). ``lengths``: valid samples (waveforms) or frames (filterbanks) per clip."""
        if x.ndim == 2:
            x, lengths = self.front_end.features(x, lengths, sample_rate=sample_rate)
        elif sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError("sample_rate applies to waveforms; a filterbank cannot be resampled")
        tokens, token_lengths = self.front_end(x, lengths)
        rope = self.front_end.rope_for(tokens.shape[1], tokens.device)
        return self._encode(tokens, token_lengths, rope), token_lengths

    def input_spec(self) -> dict[str, Any]:
        c = self.fbank_config
        return {"sample_rate": c.sample_rate, "num_mel_bins": c.num_mel_bins,
                "frame_length_ms": c.frame_length_ms, "frame_shift_ms": c.frame_shift_ms,
                "mean": c.mean, "std": c.std, "tokens": list(self.tokens),
                "separator": repr(self.separator)}   # shown in cards: ' ' is visible


def check_vocabulary(tokens: Sequence[str], separator: str) -> tuple[tuple[str, ...], str]:
    tokens = tuple(tokens)
    if not tokens or any(not isinstance(t, str) or not t for t in tokens):
        raise ValueError(f"tokens must be a non-empty list of non-empty strings, got {list(tokens)}")
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"tokens must be unique, got {list(tokens)}")
    if separator and any(separator in t or (separator == " " and any(ch.isspace() for ch in t))
                         for t in tokens):
        raise ValueError(f"tokens may not contain the separator {separator!r}")
    if not separator and any(len(t) != 1 for t in tokens):
        raise ValueError("with separator='' every token is one character")
    return tokens, separator


def _as_clips(waveforms: torch.Tensor | Sequence[torch.Tensor],
              lengths: torch.Tensor | None) -> list[torch.Tensor]:
    """1-D waveforms, whatever form they came in."""
    if isinstance(waveforms, torch.Tensor):
        if waveforms.ndim == 1:
            if lengths is not None:
                raise ValueError("lengths go with a padded batch (B, S), not one waveform (S,)")
            return [waveforms]
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms (S,), a padded batch (B, S) or a list of 1-D "
                             f"waveforms, got shape {tuple(waveforms.shape)}")
        if lengths is None:
            return list(waveforms)
        if lengths.shape != (waveforms.shape[0],) or bool((lengths > waveforms.shape[1]).any()):
            raise ValueError(f"lengths {lengths.tolist()} do not fit a batch of shape "
                             f"{tuple(waveforms.shape)}")
        return [w[:n] for w, n in zip(waveforms, lengths.tolist(), strict=True)]
    if lengths is not None:
        raise ValueError("lengths go with a padded batch (B, S), not a list of waveforms")
    clips = list(waveforms)
    bad = [i for i, c in enumerate(clips) if not isinstance(c, torch.Tensor) or c.ndim != 1]
    if bad:
        raise ValueError(f"recording(s) {bad} are not 1-D waveforms; mix stereo down with "
                         "x.mean(dim=0)")
    if not clips:
        raise ValueError("no recordings to transcribe")
    return clips


# --- named variants --------------------------------------------------------------------------------

def _preprocess(**fbank: Any) -> dict[str, Any]:
    c = FbankConfig(**fbank)
    return {"sample_rate": c.sample_rate, "num_mel_bins": c.num_mel_bins,
            "frame_length_ms": c.frame_length_ms, "frame_shift_ms": c.frame_shift_ms,
            "mean": c.mean, "std": c.std}


# The architecture as its arguments set it.
register_model("ctc_transformer", modality="speech", builder=SpeechRecognizer, args={},
               preprocess=_preprocess(num_mel_bins=80, mean=0.0, std=1.0), num_classes=0)

# Connected digits at 8 kHz (FSDD's rate): 64 mel bins with FSDD's log-mel statistics, 192
# wide, 4 blocks (6 were slower to leave CTC's all-blank start and no better in the budget),
# convolutional positions over 15 tokens (600 ms) besides rotary; 10 word tokens "0".."9".
_DIGITS_8K = dict(sample_rate=8000, num_mel_bins=64, mean=-6.7716, std=3.9049)
register_model(
    "ctc_tiny_d4_8k", modality="speech", builder=SpeechRecognizer,
    args=dict(tokens=list(DIGIT_TOKENS), separator=" ", embed_dim=192, depth=4, num_heads=3,
              conv_pos_kernel=15, **_DIGITS_8K),
    preprocess=_preprocess(**_DIGITS_8K), num_classes=0,
    weights=[dict(  # configs/audio/ctc_tiny_d4_digits.yaml, stored as float16 (4.1 MB); model_cards/
        tag="fsdd_digits", file="ctc_tiny_d4_8k.fsdd_digits.safetensors",
        sha256="68d22b9878eefc5a16c89a86dcfb948f5f05eb85ab9878eef86ebecd78e87122",
        license="apache-2.0",
        metrics={"fsdd_digits test wer (%)": 0.0357, "fsdd_digits test ser (%)": 0.2,
                 "fsdd_digits test cer (%)": 0.0392},
        description="Connected spoken digits (strings of 1-10 FSDD digits), from scratch.",
    )],
)
