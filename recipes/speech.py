"""Speech recognition recipes: connected-digit strings -> batched log-mel features -> a CTC
model (:class:`zoo.models.ctc.SpeechRecognizer`), scored by word, character and string error
rate.

The data module builds the strings (:mod:`zoo.data.digit_strings`), pads each batch, adds noise
(training only, :class:`zoo.data.noise.NoiseAugment`) to the waveforms, computes the model's
normalised log-mel on the batch's device, then speeds it up or slows it down and masks it
(SpecAugment). Validation and test batches are clean.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
from torchmetrics import MeanMetric
from torchmetrics.text import CharErrorRate, WordErrorRate

import zoo
from recipes.data import ModelKwargs, SplitDataModule, model_for_data
from recipes.fault_tolerance import NONFINITE_POLICIES, NonfinitePolicy, checked_loss
from recipes.optim import adamw_warmup_cosine
from zoo.data.audio import fsdd_root
from zoo.data.augment import random_time_stretch, spec_augment
from zoo.data.digit_strings import TEST_SEED, DigitStringSpec, collate_strings, fsdd_digit_strings
from zoo.data.noise import NOISE_KINDS, NoiseAugment, NoiseKind
from zoo.frontends.audio import Filterbank
from zoo.frontends.speech import normalised_log_mel

logger = logging.getLogger("zoo.recipes")

SpeechDataset = Literal["fsdd_digits"]
SPEECH_DATASETS = get_args(SpeechDataset)


class SpeechDataModule(SplitDataModule):
    """Connected FSDD digit strings (``dataset="fsdd_digits"``) as (features (B, T, F), frames
    (B,), transcripts) for the speech model ``model_name``.

    The first ``sorted_epochs`` training epochs go through the strings shortest first
    (SortaGrad: CTC learns its first alignments on short strings); later epochs are shuffled,
    each batch of similar lengths.

    Splits by FSDD take: test strings from takes 0-4 (``test_strings`` of them, seed
    :data:`TEST_SEED`), validation from takes 5-9, training from takes 10-49 (``holdout=True``)
    or 5-49 (``holdout=False``; validation then reports strings of trained recordings). Each
    epoch sees the same ``train_strings`` strings (each rebuilt from (seed, index)), differently
    augmented.

    Augmentation (training only): ``noise_kinds`` at ``noise_snr_db`` (min, max) dB with
    probability ``noise_p`` per string (babble: other strings of the batch); a speed change up
    to ``time_stretch`` either way; ``num_masks`` frequency masks of up to ``freq_mask`` bins and
    as many time masks of up to ``time_mask`` frames.
    """

    def __init__(self, *, dataset: SpeechDataset = "fsdd_digits", model_name: str | None = None,
                 model_kwargs: ModelKwargs | None = None, root: str | None = None,
                 train_strings: int = 8000, val_strings: int = 300, test_strings: int = 1000,
                 min_digits: int = 1, max_digits: int = 10,
                 gap_ms: tuple[float, float] = (0.0, 400.0),
                 edge_ms: tuple[float, float] = (50.0, 500.0),
                 batch_size: int = 32, num_workers: int = 0, holdout: bool = True,
                 augment: bool = True, noise_kinds: Sequence[NoiseKind] = (),
                 noise_snr_db: tuple[float, float] = (5.0, 30.0), noise_p: float = 0.5,
                 time_stretch: float = 1.0, freq_mask: int = 0, time_mask: int = 0,
                 num_masks: int = 2, sorted_epochs: int = 1, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset not in SPEECH_DATASETS:
            raise ValueError(f"speech dataset must be one of {SPEECH_DATASETS}, got {dataset!r}")
        if model_name is None:
            raise ValueError("SpeechDataModule needs model_name (the model it feeds: its "
                             "filterbank settings)")
        model = model_for_data(model_name, model_kwargs, "speech")
        self.fbank = model.fbank_config
        self.filterbank = Filterbank(self.fbank)
        self.dataset, self.root, self.holdout = dataset, root, holdout
        self.sizes = {"train": train_strings, "val": val_strings, "test": test_strings}
        self.spec = DigitStringSpec(min_digits=min_digits, max_digits=max_digits,
                                    gap_ms=tuple(gap_ms), edge_ms=tuple(edge_ms))  # type: ignore[arg-type]
        self.noise = NoiseAugment(kinds=tuple(noise_kinds), snr_db=tuple(noise_snr_db),
                                  p=noise_p) if noise_kinds else None
        self.augment, self.time_stretch = augment, time_stretch
        self.freq_mask, self.time_mask, self.num_masks = freq_mask, time_mask, num_masks
        self.collate_fn = collate_strings
        self.sorted_epochs = sorted_epochs
        self.vocabulary = list(model.tokens)
        if self.fbank.sample_rate != 8000:
            raise ValueError(f"FSDD digit strings are 8 kHz; {model_name} takes "
                             f"{self.fbank.sample_rate} Hz audio")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        root = fsdd_root(self.root)
        sizes, spec = self.sizes, self.spec
        self.train_set = fsdd_digit_strings(root, "fit" if self.holdout else "train",
                                            size=sizes["train"], seed=self.seed, spec=spec)
        self.val_set = fsdd_digit_strings(root, "val", size=sizes["val"], seed=self.seed + 1,
                                          spec=spec)
        self.test_set = fsdd_digit_strings(root, "test", size=sizes["test"], seed=TEST_SEED,
                                           spec=spec)
        self.classes = self.vocabulary
        logger.info("connected digits: %d train / %d val / %d test strings", len(self.train_set),
                    len(self.val_set), len(self.test_set))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """(waveforms, samples, transcripts) -> (features, frames, transcripts), augmented
        while training."""
        waves, lengths, transcripts = batch
        training = self.augment and self.trainer is not None and self.trainer.training
        if training and self.noise is not None:
            waves = self.noise(waves, lengths)
        self.filterbank.to(waves.device)
        features, frames = normalised_log_mel(self.filterbank, waves, lengths)
        if training:
            if self.time_stretch > 1:
                features, frames = random_time_stretch(features, frames,
                                                       max_stretch=self.time_stretch, pad_value=0.0)
                features = features[:, :int(frames.max())]
            features = spec_augment(features, freq_mask=self.freq_mask, time_mask=self.time_mask,
                                    num_freq_masks=self.num_masks, num_time_masks=self.num_masks)
        return features, frames, transcripts


class SpeechRecognition(L.LightningModule):
    """Any zoo speech recogniser trained with CTC, AdamW, warm-up + cosine; validation and test
    report word / character error rate (torchmetrics) and string error rate (the share of
    utterances with any error), decoded greedily or by beam search (``beam_width`` > 1)."""

    monitor = "val/wer"

    def __init__(self, *, model_name: str, pretrained: Any = False,
                 model_kwargs: ModelKwargs | None = None, grad_checkpointing: bool = False,
                 lr: float = 1e-3, min_lr: float = 1e-5, weight_decay: float = 0.05,
                 betas: Sequence[float] = (0.9, 0.98), warmup_epochs: float = 1.0,
                 layer_decay: float | None = None, beam_width: int = 1,
                 nonfinite_loss: NonfinitePolicy = "raise") -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE_POLICIES}, got {nonfinite_loss!r}")
        if beam_width < 1:
            raise ValueError(f"beam_width must be >= 1, got {beam_width}")
        self.save_hyperparameters()
        self.model = zoo.create_model(model_name, pretrained=pretrained, **(model_kwargs or {}))
        if self.model.modality != "speech":
            raise ValueError(f"{model_name} is not a speech recogniser; `zoo list --modality "
                             "speech` shows them")
        self.model.set_grad_checkpointing(grad_checkpointing)
        self.scores = torch.nn.ModuleDict({
            f"{stage}_{name}": metric() for stage in ("val", "test")
            for name, metric in (("wer", WordErrorRate), ("cer", CharErrorRate),
                                 ("ser", MeanMetric))})

    def forward(self, features: torch.Tensor, frames: torch.Tensor | None = None):
        return self.model(features, frames)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        features, frames, transcripts = batch
        log_probs, lengths = self(features, frames)
        loss = self.model.ctc_loss(log_probs, lengths, transcripts)
        if (loss := checked_loss(self, loss, batch_idx, self.hparams.nonfinite_loss)) is None:
            return None
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=len(transcripts))
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        features, frames, transcripts = batch
        log_probs, lengths = self(features, frames)
        loss = self.model.ctc_loss(log_probs, lengths, transcripts)
        texts = self.model.decode_log_probs(log_probs, lengths, beam_width=self.hparams.beam_width)
        m = self.scores
        m[f"{stage}_wer"].update(texts, list(transcripts))
        m[f"{stage}_cer"].update(texts, list(transcripts))
        wrong = torch.tensor([float(a != b) for a, b in zip(texts, transcripts, strict=True)])
        m[f"{stage}_ser"].update(wrong)
        size = len(transcripts)
        self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        for name in ("wer", "cer", "ser"):
            self.log(f"{stage}/{name}", m[f"{stage}_{name}"], on_epoch=True,
                     prog_bar=name == "wer", batch_size=size)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, Any]:
        features, frames, transcripts = batch
        log_probs, lengths = self(features, frames)
        return {"text": self.model.decode_log_probs(log_probs, lengths,
                                                    beam_width=self.hparams.beam_width),
                "target": list(transcripts)}

    def configure_optimizers(self):
        return adamw_warmup_cosine(self)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> SpeechRecognition:
        """Rebuild from a recipe checkpoint without re-reading the original pretrained source."""
        from recipes.classification import rebuild_from_checkpoint

        return rebuild_from_checkpoint(cls, path, map_location)


__all__ = ["NOISE_KINDS", "SpeechDataModule", "SpeechRecognition"]
