"""Audio classification data: FSDD or an AudioFolder tree -> cached filterbanks -> batches,
or audio shards (:mod:`recipes.streaming`) -> filterbanks per clip as they stream.

Clips are decoded once, resampled to the model's rate, and turned into normalised log-mel
filterbanks in vectorised chunks; the (N, T, F) tensor stays in memory (FSDD: 3,000 clips,
~80 MB at 64 bins x 100 frames), so an epoch costs no decoding. Shards hold the resampled
waveforms instead; each clip's filterbank is computed when it is read. Training augmentation
(random time shift, SpecAugment) runs batched on the batch's device; mixup lives in the module.
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
from zoo.frontends.audio import FbankConfig, Filterbank

logger = logging.getLogger("zoo.recipes")

AudioDataset = Literal["fsdd", "audiofolder", "shards"]
AUDIO_DATASETS = get_args(AudioDataset)


def compute_filterbanks(waveforms: Sequence[torch.Tensor], config: FbankConfig, *,
                        names: Sequence[str] | None = None, chunk: int = 256,
                        filterbank: Filterbank | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono clips (S_i,) at ``config.sample_rate`` -> filterbanks (N, T, F) and valid frames (N,).

    Clips shorter than one frame are padded with silence, logged with the clip's name (silent
    clips are kept; :func:`zoo.data.audio.load_audio` reports them). ``filterbank``: a
    ``Filterbank(config)`` to reuse.
    """
    filterbank = filterbank if filterbank is not None else Filterbank(config)
    names = list(names) if names is not None else [f"clip {i}" for i in range(len(waveforms))]
    clips = []
    for wave, name in zip(waveforms, names, strict=True):
        clip = wave
        if wave.numel() < config.frame_length:
            logger.warning("%s: %d samples, shorter than one %g ms frame; padded with silence",
                           name, wave.numel(), config.frame_length_ms)
            clip = torch.nn.functional.pad(wave, (0, config.frame_length - wave.numel()))
        clips.append(clip)
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
    frames (), label ()), what the in-memory path's TensorDataset holds for the clip."""

    def __init__(self, config: FbankConfig) -> None:
        self.config, self.filterbank = config, Filterbank(config)

    def __call__(self, record: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        wave = torch.as_tensor(record["wave"])
        features, valid = compute_filterbanks([wave], self.config, names=[record["name"]],
                                              filterbank=self.filterbank)
        return features[0], valid[0], torch.tensor(int(record["label"]))


class AudioDataModule(SplitDataModule):
    """FSDD (standard split; 300 of the training clips held out for validation), an
    AudioFolder tree, or audio shards (``dataset="shards"``, ``root`` a shards folder or URL;
    their split and sample rate, which must be the model's), as normalised filterbanks for a
    model with filterbank settings ``fbank``.

    FSDD splits: fit = takes 10-49 (2,400), val = takes 5-9 (300), test = takes 0-4 (300);
    with ``holdout=False`` training uses all of takes 5-49 (2,700, the standard training set)
    and validation still reports takes 5-9, now seen in training.
    ``on_error``: ``raise`` stops at an unreadable file (naming it), ``skip`` logs and drops it.
    """

    def __init__(self, *, dataset: AudioDataset, model_name: str | None = None,
                 model_kwargs: ModelKwargs | None = None, fbank: FbankConfig | None = None,
                 root: str | None = None,
                 batch_size: int = 64, num_workers: int = 0, val_fraction: float = 0.2,
                 augment: bool = True, time_shift: bool = True, freq_mask: int = 0,
                 time_mask: int = 0, num_masks: int = 1, time_stretch: float = 1.0,
                 gain_db: float = 0.0, on_error: OnError = "raise", holdout: bool = True,
                 seed: int = 0) -> None:
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

    def _tensors(self, items: Sequence[tuple[Path, int]]) -> TensorDataset:
        paths = [p for p, _ in items]
        waves, kept = load_clips(paths, sample_rate=self.fbank.sample_rate, on_error=self.on_error)
        loaded = set(kept)
        self.skipped += [str(p) for i, p in enumerate(paths) if i not in loaded]
        if not waves:
            raise ValueError(f"none of the {len(paths)} audio files could be read")
        features, valid = compute_filterbanks(waves, self.fbank, names=[str(paths[i]) for i in kept])
        targets = torch.tensor([items[i][1] for i in kept])
        return TensorDataset(features, valid, targets)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        if self.dataset == "shards":
            self._setup_shards()
            return
        train, val, test = self._items()
        self.train_set = self._tensors(train)
        self.val_set = self._tensors(val)
        self.test_set = self._tensors(test) if test else None
        logger.info("audio data: %d train / %d val / %s test clips, filterbanks %s",
                    len(self.train_set), len(self.val_set),
                    len(self.test_set) if self.test_set else "no",
                    tuple(self.train_set.tensors[0].shape[1:]))

    def _setup_shards(self) -> None:
        index = read_shards_index(self.root)
        expect_kind(index, self.root, ("audio",), "audio")
        if index["sample_rate"] != self.fbank.sample_rate:
            raise ValueError(
                f"the shards at {self.root} hold {index['sample_rate']} Hz audio, the model takes "
                f"{self.fbank.sample_rate} Hz: convert them again with --sample-rate "
                f"{self.fbank.sample_rate}")
        items = AudioItems(self.fbank)
        self.train_set, self.val_set, self.test_set = shard_splits(
            self.root, index, dict.fromkeys(SPLITS, items))
        self.classes, self.skipped = list(index["classes"]), list(index.get("skipped", []))
        logger.info("audio shards %s: %d train / %d val / %s test clips", self.root,
                    len(self.train_set), len(self.val_set),
                    len(self.test_set) if self.test_set else "no")

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """(fbank, valid, target) -> (fbank, target), augmented while training."""
        fbank, valid, targets = batch
        if self.augment and self.trainer is not None and self.trainer.training:
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

