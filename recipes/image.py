"""Image classification: the LightningModule and LightningDataModule behind `zoo train` /
`zoo finetune` for images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

import zoo
from recipes.optim import param_groups, warmup_cosine
from zoo.data import data_root
from zoo.data.images import (DigitsDataset, eval_transform, image_folder_splits,
                             random_affine, train_transform)

FINETUNE_MODES = ("full", "freeze_backbone", "linear_probe")


class ImageDataModule(L.LightningDataModule):
    """Digits (bundled) or an ImageFolder tree, preprocessed as the model expects.

    ``preprocess`` comes from the model's pretrained cfg (mean, std, interpolation, crop_pct);
    ``img_size`` is the side of the square images fed to the model.
    """

    def __init__(self, *, dataset: str, img_size: int, preprocess: dict[str, Any],
                 root: Optional[str] = None, batch_size: int = 64, num_workers: int = 0,
                 val_fraction: float = 0.2, augment: bool = True, seed: int = 0) -> None:
        super().__init__()
        if dataset not in ("digits", "imagefolder"):
            raise ValueError(f"dataset must be 'digits' or 'imagefolder', got {dataset!r}")
        if dataset == "imagefolder" and not root:
            raise ValueError("the imagefolder dataset needs data.root (a folder of class sub-folders)")
        self.dataset, self.img_size, self.root = dataset, img_size, root
        self.preprocess = preprocess
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_fraction, self.augment, self.seed = val_fraction, augment, seed
        self.train_set = self.val_set = self.test_set = None
        self.classes: list[str] = []

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is not None:
            return
        norm = dict(mean=self.preprocess["mean"], std=self.preprocess["std"])
        if self.dataset == "digits":
            self.train_set = DigitsDataset("train", img_size=self.img_size, **norm)
            self.val_set = DigitsDataset("val", img_size=self.img_size, **norm)
            self.test_set = DigitsDataset("test", img_size=self.img_size, **norm)
            self.classes = self.train_set.classes
            return
        interp = self.preprocess.get("interpolation", "bicubic")
        eval_tf = eval_transform(self.img_size, interpolation=interp,
                                 crop_pct=self.preprocess.get("crop_pct", 1.0), **norm)
        train_tf = (train_transform(self.img_size, interpolation=interp, **norm)
                    if self.augment else eval_tf)
        root = data_root(self.root)
        self.train_set, self.val_set, self.test_set, self.classes = image_folder_splits(
            root, train_tf=train_tf, eval_tf=eval_tf, val_fraction=self.val_fraction, seed=self.seed)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Digits augmentation, batched on the batch's device (training only)."""
        if self.dataset == "digits" and self.augment and self.trainer is not None \
                and self.trainer.training:
            images, targets = batch
            batch = random_affine(images, fill=self.train_set.background), targets
        return batch

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set if self.test_set is not None else self.val_set, False)


class ImageClassifier(L.LightningModule):
    """Any zoo image model trained with cross-entropy (label smoothing), AdamW, warm-up + cosine.

    ``finetune_mode``: ``full`` trains everything (optionally with layer-wise lr decay);
    ``freeze_backbone`` trains the head, the final norm and the last ``trainable_blocks``
    blocks; ``linear_probe`` trains only the final linear layer on frozen features.
    """

    def __init__(self, *, model_name: str, num_classes: int, labels: Sequence[str],
                 pretrained: Any = False, model_kwargs: Optional[dict] = None,
                 grad_checkpointing: bool = False, lr: float = 1e-3, min_lr: float = 1e-5,
                 weight_decay: float = 0.05, betas: Sequence[float] = (0.9, 0.999),
                 warmup_epochs: float = 1.0, label_smoothing: float = 0.1,
                 layer_decay: Optional[float] = None, finetune_mode: str = "full",
                 trainable_blocks: int = 0) -> None:
        super().__init__()
        if finetune_mode not in FINETUNE_MODES:
            raise ValueError(f"finetune_mode must be one of {FINETUNE_MODES}, got {finetune_mode!r}")
        self.save_hyperparameters()
        self.model = zoo.create_model(model_name, pretrained=pretrained, num_classes=num_classes,
                                      **(model_kwargs or {}))
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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _step(self, batch, metric: MulticlassAccuracy, stage: str) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.criterion(logits, targets)
        metric.update(logits, targets)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "test" and self.test_top5 is not None:
            self.test_top5.update(logits, targets)
            self.log("test/top5", self.test_top5, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, self.train_acc, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.val_acc, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, self.test_acc, "test")

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self.model, lr=hp.lr, weight_decay=hp.weight_decay,
                              layer_decay=hp.layer_decay)
        fused = torch.cuda.is_available() and next(self.parameters()).is_cuda
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=fused or None)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        scheduler = warmup_cosine(optimizer, warmup_steps=int(hp.warmup_epochs * steps_per_epoch),
                                  total_steps=total, min_lr_ratio=hp.min_lr / hp.lr)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> "ImageClassifier":
        """Rebuild from a recipe checkpoint without re-reading the original pretrained source."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path}")
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:
            raise ValueError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
        if "hyper_parameters" not in ckpt or "state_dict" not in ckpt:
            raise ValueError(f"{path} is not a zoo recipe checkpoint (no hyper_parameters/state_dict)")
        hparams = {**ckpt["hyper_parameters"], "pretrained": False}
        module = cls(**hparams)
        module.load_state_dict(ckpt["state_dict"])
        return module
