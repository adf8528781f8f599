"""Classification for any zoo classifier (images, audio): the LightningModule behind `zoo train`
and `zoo finetune` for classification tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

import zoo
from recipes.data import ModelKwargs
from recipes.fault_tolerance import NONFINITE_POLICIES, NonfinitePolicy, checked_loss
from recipes.optim import adamw_warmup_cosine
from zoo.data.augment import mixup

FinetuneMode = Literal["full", "freeze_backbone", "linear_probe"]
FINETUNE_MODES = get_args(FinetuneMode)


class Classifier(L.LightningModule):
    """Any zoo classifier trained with cross-entropy (label smoothing), AdamW, warm-up + cosine.

    ``finetune_mode``: ``full`` trains everything (optionally with layer-wise lr decay);
    ``freeze_backbone`` trains the head, the final norm and the last ``trainable_blocks``
    blocks; ``linear_probe`` trains only the final linear layer on frozen features.
    ``mixup`` > 0 mixes training inputs and their one-hot targets with a Beta(mixup, mixup)
    weight (Zhang et al. 2018); ``encoder_from`` initialises the encoder from another model
    (e.g. an image ViT for an audio model).
    """

    monitor = "val/acc"   # the validation metric that picks the best checkpoint

    def __init__(self, *, model_name: str, num_classes: int, labels: Sequence[str],
                 pretrained: Any = False, model_kwargs: ModelKwargs | None = None,
                 grad_checkpointing: bool = False, lr: float = 1e-3, min_lr: float = 1e-5,
                 weight_decay: float = 0.05, betas: Sequence[float] = (0.9, 0.999),
                 warmup_epochs: float = 1.0, label_smoothing: float = 0.1,
                 layer_decay: float | None = None, finetune_mode: FinetuneMode = "full",
                 trainable_blocks: int = 0, mixup: float = 0.0,
                 encoder_from: str | None = None,
                 nonfinite_loss: NonfinitePolicy = "raise") -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE_POLICIES}, got {nonfinite_loss!r}")
        if finetune_mode not in FINETUNE_MODES:
            raise ValueError(f"finetune_mode must be one of {FINETUNE_MODES}, got {finetune_mode!r}")
        self.save_hyperparameters()
        if mixup < 0:
            raise ValueError(f"mixup must be >= 0, got {mixup}")
        self.model = zoo.create_model(model_name, pretrained=pretrained, num_classes=num_classes,
                                      encoder_from=encoder_from, **(model_kwargs or {}))
        cfg = self.model.pretrained_cfg
        self.model.pretrained_cfg = replace(cfg, labels=tuple(labels), metrics={})
        self.model.set_grad_checkpointing(grad_checkpointing)
        self.frozen = self._freeze(finetune_mode, trainable_blocks)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_top5 = (MulticlassAccuracy(num_classes, top_k=5, average="micro")
                          if num_classes > 5 else None)

    def _freeze(self, mode: str, trainable_blocks: int) -> list[nn.Module]:
        """Freeze per ``mode``; returns the modules to keep in eval mode while training."""
        if mode == "full":
            return []
        model = self.model
        frozen: list[nn.Module] = [model.front_end]
        if mode == "linear_probe":
            frozen += [model.encoder, model.head.fc_norm]
        else:
            blocks = list(model.encoder.blocks)
            keep = max(0, min(trainable_blocks, len(blocks)))
            frozen += blocks[: len(blocks) - keep]
        for module in frozen:
            module.requires_grad_(False)
        return frozen

    def on_train_epoch_start(self) -> None:
        for module in self.frozen:  # frozen features: no dropout / drop-path noise
            module.eval()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def _step(self, batch, batch_idx: int, metric: MulticlassAccuracy, stage: str
              ) -> torch.Tensor | None:
        inputs, targets = batch
        if stage == "train" and self.hparams.mixup > 0:
            soft = F.one_hot(targets, self.hparams.num_classes).to(inputs.dtype)
            inputs, soft = mixup(inputs, soft, alpha=self.hparams.mixup)
            logits = self(inputs)
            loss = F.cross_entropy(logits, soft, label_smoothing=self.hparams.label_smoothing)
        else:
            logits = self(inputs)
            loss = self.criterion(logits, targets)
        training = stage == "train"
        if training and (loss := checked_loss(self, loss, batch_idx,
                                              self.hparams.nonfinite_loss)) is None:
            return None   # a skipped batch counts in no metric
        metric.update(logits, targets)
        # evaluation losses are averaged over processes under DDP; accuracies are torchmetrics
        # states, summed over processes when computed
        self.log(f"{stage}/loss", loss, on_step=training, on_epoch=True, prog_bar=True,
                 sync_dist=not training)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "test" and self.test_top5 is not None:
            self.test_top5.update(logits, targets)
            self.log("test/top5", self.test_top5, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, batch_idx, self.train_acc, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, batch_idx, self.val_acc, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, batch_idx, self.test_acc, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """Class probabilities (B, K) and the true classes (B,)."""
        inputs, targets = batch
        return {"probabilities": self(inputs).softmax(-1), "target": targets}

    def configure_optimizers(self):
        return adamw_warmup_cosine(self)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> Classifier:
        """Rebuild from a recipe checkpoint without re-reading the original pretrained source."""
        return rebuild_from_checkpoint(cls, path, map_location, encoder_from=None)


def rebuild_from_checkpoint(cls: type[L.LightningModule], path: str | Path,
                            map_location: str = "cpu", **overrides: Any) -> Any:
    """``cls`` built from a recipe checkpoint's hyperparameters (with ``pretrained=False`` and
    ``overrides``: no weights' source is read again) holding the checkpoint's weights."""
    ckpt = read_recipe_checkpoint(path, map_location)
    module = cls(**{**ckpt["hyper_parameters"], "pretrained": False, **overrides})
    module.load_state_dict(ckpt["state_dict"])
    return module


def read_recipe_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """A recipe checkpoint's contents, read with ``weights_only=True``; clear errors naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    if not isinstance(ckpt, dict) or "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a zoo recipe checkpoint (no hyper_parameters/state_dict)")
    return ckpt
