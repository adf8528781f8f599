"""Audio classification data: FSDD or an AudioFolder tree -> cached filterbanks -> batches,
or audio shards (:mod:`recipes.streaming`) -> filterbanks per clip as they stream.

Clips are decoded once, resampled to the model's rate, and turned into normalised log-mel
filterbanks in vectorised chunks; the (N, T, F) tensor stays in memory (FSDD: 3,000 clips,
~80 MB at 64 bins x 100 frames), so an epoch costs no decoding. Shards hold the resampled
waveforms instead; each clip's filterbank is computed when it is read. Training augmentation
(random time shift, SpecAugment) runs batched on the batch's device; mixup lives in the module.

Additive noise (``noise``, a :class:`zoo.data.noise.NoiseAugment`) has to be added to
waveforms: with it on, the training split is kept as waveforms (N, S) cut or padded to the
samples the model's window covers (FSDD: 8,120 at 8 kHz, ~88 MB) with their lengths, and each
training batch is noised, then turned into filterbanks (one batched :class:`Filterbank` call on
the batch's device), then augmented as above. Validation and test batches stay clean, cached
filterbanks, so their figures compare with runs without noise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args

import torch
from torch.utils.data import TensorDataset

from recipes.data import ModelKwargs, SplitDataModule, model_for_data
from recipes.streaming import SPLITS, expect_kind, read_shards_index, shard_splits
from zoo.data import OnError
from zoo.data.audio import audio_folder_items, fsdd_items, fsdd_root, load_clips
from zoo.data.augment import random_gain, random_time_shift, random_time_stretch, spec_augment
from zoo.data.noise import NoiseAugment
from zoo.frontends import AudioFeatureConfig, audio_features
from zoo.frontends.audio import FbankConfig

logger = logging.getLogger("zoo.recipes")

AudioDataset = Literal["fsdd", "audiofolder", "shards"]
AUDIO_DATASETS = get_args(AudioDataset)


def _padded_to_a_frame(waveforms: Sequence[torch.Tensor], config: AudioFeatureConfig,
                       names: Sequence[str] | None) -> list[torch.Tensor]:
    """Clips shorter than one frame padded with silence to one frame, logged with their names."""
    names = list(names) if names is not None else [f"clip {i}" for i in range(len(waveforms))]
    clips = []
    for wave, name in zip(waveforms, names, strict=True):
        clip = wave
        if wave.numel() < config.min_samples:
            logger.warning("%s: %d samples, shorter than one %g ms frame; padded with silence",
                           name, wave.numel(), config.frame_length_ms)
            clip = torch.nn.functional.pad(wave, (0, config.min_samples - wave.numel()))
        clips.append(clip)
    return clips


def stack_waveforms(waveforms: Sequence[torch.Tensor], config: AudioFeatureConfig, *,
                    names: Sequence[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono clips (S_i,) -> waveforms (N, S) and valid samples (N,), S = ``config.window_samples``.

    Clips are cut to the model's window (the frames past it are never seen) and zero-padded
    after it; a clip shorter than one frame counts one frame of silence as valid, as in
    :func:`compute_filterbanks`. Their features (``audio_features(config)(waves, lengths=...)``)
    equal :func:`compute_filterbanks`'s.
    """
    clips = _padded_to_a_frame(waveforms, config, names)
    if not clips:
        raise ValueError("no audio clips to stack")
    samples = config.window_samples
    cut = [clip[:samples] for clip in clips]
    waves = torch.nn.utils.rnn.pad_sequence(cut, batch_first=True)
    waves = torch.nn.functional.pad(waves, (0, samples - waves.shape[1]))
    return waves, torch.tensor([clip.numel() for clip in cut])


def compute_filterbanks(waveforms: Sequence[torch.Tensor], config: AudioFeatureConfig, *,
                        names: Sequence[str] | None = None, chunk: int = 256,
                        filterbank: torch.nn.Module | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono clips (S_i,) at ``config.sample_rate`` -> filterbanks (N, T, F) and valid frames (N,).

    Clips shorter than one frame are padded with silence, logged with the clip's name (silent
    clips are kept; :func:`zoo.data.audio.load_audio` reports them). ``filterbank``: a
    ``audio_features(config)`` to reuse (AST's filterbank or Whisper's log-mel).
    """
    filterbank = filterbank if filterbank is not None else audio_features(config)
    clips = _padded_to_a_frame(waveforms, config, names)
    features, valid = [], []
    for start in range(0, len(clips), chunk):
        part = clips[start:start + chunk]
        lengths = torch.tensor([c.numel() for c in part])
        batch = torch.nn.utils.rnn.pad_sequence(part, batch_first=True)
        with torch.no_grad():
            features.append(filterbank(batch, lengths=lengths))
        valid.append(config.num_frames(lengths).clamp(max=config.target_frames))
    if not features:
        raise ValueError("no audio clips to compute filterbanks from")
    return torch.cat(features), torch.cat(valid)


class AudioItems:
    """An audio shard record (a mono waveform at the model's rate) -> (filterbank (T, F), valid
    frames (), label ()), what the in-memory path's TensorDataset holds for the clip; with
    ``waveforms=True``, (waveform (S,), valid samples (), label ()) as :func:`stack_waveforms`
    makes them (the training split with noise augmentation)."""

    def __init__(self, config: AudioFeatureConfig, *, waveforms: bool = False) -> None:
        self.config, self.waveforms = config, waveforms
        self.filterbank = audio_features(config)

    def __call__(self, record: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        wave = torch.as_tensor(record["wave"])
        label = torch.tensor(int(record["label"]))
        if self.waveforms:
            waves, lengths = stack_waveforms([wave], self.config, names=[record["name"]])
            return waves[0], lengths[0], label
        features, valid = compute_filterbanks([wave], self.config, names=[record["name"]],
                                              filterbank=self.filterbank)
        return features[0], valid[0], label


class AudioDataModule(SplitDataModule):
    """FSDD (standard split; 300 of the training clips held out for validation), an
    AudioFolder tree, or audio shards (``dataset="shards"``, ``root`` a shards folder or URL;
    their split and sample rate, which must be the model's), as normalised filterbanks for a
    model with filterbank settings ``fbank``.

    FSDD splits: fit = takes 10-49 (2,400), val = takes 5-9 (300), test = takes 0-4 (300);
    with ``holdout=False`` training uses all of takes 5-49 (2,700, the standard training set)
    and validation still reports takes 5-9, now seen in training.
    ``on_error``: ``raise`` stops at an unreadable file (naming it), ``skip`` logs and drops it.
    ``noise``: additive-noise augmentation of the training waveforms (off by default), e.g.
    ``{kinds: [white, pink, babble], snr_db: [0, 30], p: 0.8}``; babble is drawn from the other
    clips of the batch. It runs before the filterbank augmentations and only with ``augment``.
    """

    def __init__(self, *, dataset: AudioDataset, model_name: str | None = None,
                 model_kwargs: ModelKwargs | None = None,
                 fbank: AudioFeatureConfig | None = None,
                 root: str | None = None,
                 batch_size: int = 64, num_workers: int = 0, val_fraction: float = 0.2,
                 augment: bool = True, time_shift: bool = True, freq_mask: int = 0,
                 time_mask: int = 0, num_masks: int = 1, time_stretch: float = 1.0,
                 gain_db: float = 0.0, noise: NoiseAugment | None = None,
                 on_error: OnError = "raise", holdout: bool = True, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if fbank is None:
            if model_name is None:
                raise ValueError("AudioDataModule needs model_name (the model it feeds: its "
                                 "filterbank settings) or fbank")
            fbank = model_for_data(model_name, model_kwargs, "audio").fbank_config
        if dataset not in AUDIO_DATASETS:
            raise ValueError(f"audio dataset must be one of {AUDIO_DATASETS}, got {dataset!r}")
        if dataset == "audiofolder" and not root:
            raise ValueError("the audiofolder dataset needs data.root (a folder of class sub-folders)")
        if dataset == "shards" and not root:
            raise ValueError("the shards dataset needs data.root (a shards folder or URL)")
        self.dataset, self.fbank, self.root = dataset, fbank, root
        self.val_fraction = val_fraction
        self.augment, self.time_shift = augment, time_shift
        self.freq_mask, self.time_mask, self.num_masks = freq_mask, time_mask, num_masks
        self.time_stretch, self.gain_db = time_stretch, gain_db
        if noise is not None and not isinstance(noise, NoiseAugment):
            raise ValueError(f"noise must be a NoiseAugment (kinds, snr_db, p, babble_talkers) or "
                             f"None, got {type(noise).__name__}")
        self.noise = noise if augment else None
        self._filterbanks: dict[torch.device, torch.nn.Module] = {}   # per device, noisy batches
        if not isinstance(fbank, FbankConfig) and (gain_db > 0 or time_stretch > 1):
            raise ValueError("gain_db and time_stretch work on Kaldi filterbanks normalised as "
                             f"AST's; {model_name or 'this model'} takes Whisper's log-mel: set "
                             "data.gain_db=0 and data.time_stretch=1 (noise, time shift and "
                             "SpecAugment masks work)")
        self.on_error, self.holdout, self.seed = on_error, holdout, seed

    def _items(self):
        if self.dataset == "fsdd":
            root = fsdd_root(self.root)
            self.classes = [str(d) for d in range(10)]
            train = fsdd_items(root, "fit" if self.holdout else "train")
            return train, fsdd_items(root, "val"), fsdd_items(root, "test")
        train, val, test, self.classes = audio_folder_items(
            Path(self.root).expanduser(), val_fraction=self.val_fraction, seed=self.seed)
        return train, val, test

    def _tensors(self, items: Sequence[tuple[Path, int]], *, waveforms: bool = False
                 ) -> TensorDataset:
        """(filterbanks (N, T, F), valid frames, targets), or with ``waveforms`` (waveforms
        (N, S), valid samples, targets) for noise augmentation."""
        paths = [p for p, _ in items]
        waves, kept = load_clips(paths, sample_rate=self.fbank.sample_rate, on_error=self.on_error)
        loaded = set(kept)
        self.skipped += [str(p) for i, p in enumerate(paths) if i not in loaded]
        if not waves:
            raise ValueError(f"none of the {len(paths)} audio files could be read")
        names = [str(paths[i]) for i in kept]
        make = stack_waveforms if waveforms else compute_filterbanks
        inputs, valid = make(waves, self.fbank, names=names)
        targets = torch.tensor([items[i][1] for i in kept])
        return TensorDataset(inputs, valid, targets)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.dataset == "shards":
            self._setup_shards()
            return
        train, val, test = self._items()
        self.train_set = self._tensors(train, waveforms=self.noise is not None)
        self.val_set = self._tensors(val)
        self.test_set = self._tensors(test) if test else None
        logger.info("audio data: %d train / %d val / %s test clips, filterbanks %s%s",
                    len(self.train_set), len(self.val_set),
                    len(self.test_set) if self.test_set else "no",
                    tuple(self.val_set.tensors[0].shape[1:]),
                    f"; training noise {self.noise}" if self.noise is not None else "")

    def _setup_shards(self) -> None:
        index = read_shards_index(self.root)
        expect_kind(index, self.root, ("audio",), "audio")
        if index["sample_rate"] != self.fbank.sample_rate:
            raise ValueError(
                f"the shards at {self.root} hold {index['sample_rate']} Hz audio, the model takes "
                f"{self.fbank.sample_rate} Hz: convert them again with --sample-rate "
                f"{self.fbank.sample_rate}")
        items = dict.fromkeys(SPLITS, AudioItems(self.fbank))
        if self.noise is not None:
            items["train"] = AudioItems(self.fbank, waveforms=True)
        self.train_set, self.val_set, self.test_set = shard_splits(self.root, index, items)
        self.classes, self.skipped = list(index["classes"]), list(index.get("skipped", []))
        logger.info("audio shards %s: %d train / %d val / %s test clips", self.root,
                    len(self.train_set), len(self.val_set),
                    len(self.test_set) if self.test_set else "no")

    def _filterbank(self, device: torch.device) -> torch.nn.Module:
        if device not in self._filterbanks:
            self._filterbanks[device] = audio_features(self.fbank).to(device)
        return self._filterbanks[device]

    def noisy_filterbanks(self, waves: torch.Tensor, lengths: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (B, S) with valid samples (B,) -> noisy filterbanks (B, T, F), valid frames
        (B,): ``noise`` added, then one batched filterbank on the batch's device."""
        if self.noise is not None:
            waves = self.noise(waves, lengths)
        with torch.no_grad():
            fbank = self._filterbank(waves.device)(waves, lengths=lengths)
        valid = self.fbank.num_frames(lengths.cpu()).clamp(max=self.fbank.target_frames)
        return fbank, valid

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """(fbank, valid, target) -> (fbank, target), augmented while training; a training
        batch of waveforms (B, S) (noise augmentation on) is noised and made filterbanks first."""
        inputs, valid, targets = batch
        training = self.trainer is not None and self.trainer.training
        if inputs.ndim == 2:
            if not training:
                raise RuntimeError("waveform batches (noise augmentation) are for training only")
            inputs, valid = self.noisy_filterbanks(inputs, valid)
        fbank = inputs
        if self.augment and training:
            if self.gain_db > 0:
                fbank = random_gain(fbank, valid, max_db=self.gain_db, std=self.fbank.std)
            if self.time_stretch > 1:
                pad = (0.0 - self.fbank.mean) / (2 * self.fbank.std)   # Filterbank's padding
                fbank, valid = random_time_stretch(fbank, valid, max_stretch=self.time_stretch,
                                                   pad_value=pad)
            if self.time_shift:
                fbank = random_time_shift(fbank, valid)
            fbank = spec_augment(fbank, freq_mask=self.freq_mask, time_mask=self.time_mask,
                                 num_freq_masks=self.num_masks, num_time_masks=self.num_masks)
        return fbank, targets

