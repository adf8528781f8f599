"""Image classification data: scikit-learn digits, an ImageFolder tree, or either as litdata
shards (:mod:`recipes.streaming`), as the model expects them (the LightningModule is
``recipes.classification.Classifier``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

import zoo
from recipes.data import ModelKwargs, SplitDataModule, check_modality
from recipes.streaming import SPLITS, decode_image, expect_kind, read_shards_index, shard_splits
from zoo.data import OnError, data_root
from zoo.data.images import (
    DigitsDataset,
    eval_transform,
    image_folder_splits,
    preprocess_settings,
    random_affine,
    train_transform,
)

ImageDataset = Literal["digits", "imagefolder", "shards"]
IMAGE_DATASETS = get_args(ImageDataset)


class DigitsItems:
    """A digits shard record (8x8 integers 0..16) -> (image (3, S, S), label), computed as
    :class:`zoo.data.images.DigitsDataset` computes its items; ``background`` as there."""

    def __init__(self, *, img_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.img_size = img_size
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        self.background = float(((0 - self.mean) / self.std).mean())

    def __call__(self, record: dict[str, Any]) -> tuple[torch.Tensor, int]:
        pixels = torch.as_tensor(record["pixels"], dtype=torch.float32)[None, None] / 16.0
        pixels = F.interpolate(pixels, size=(self.img_size, self.img_size), mode="bilinear",
                               align_corners=False).repeat(1, 3, 1, 1)     # (1, 3, S, S)
        return ((pixels - self.mean) / self.std)[0], int(record["label"])


class ImageItems:
    """An image shard record (encoded bytes) -> (``transform(image)``, label), as an ImageFolder
    item with the same transform."""

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, record: dict[str, Any]) -> tuple[Any, int]:
        return self.transform(decode_image(record["image"])), int(record["label"])


class ImageDataModule(SplitDataModule):
    """Digits (bundled), an ImageFolder tree, or shards of either (``dataset="shards"``,
    ``root`` a shards folder or URL; the split is the shards'), preprocessed as the model
    expects.

    ``preprocess`` comes from the model's pretrained cfg (mean, std, interpolation, crop_pct);
    ``img_size`` is the side of the square images fed to the model. ``on_error``: an
    unreadable image stops the run naming it (``raise``) or is left out and counted (``skip``).
    """

    def __init__(self, *, dataset: ImageDataset, model_name: str | None = None,
                 model_kwargs: ModelKwargs | None = None, img_size: int | None = None,
                 preprocess: dict[str, Any] | None = None, root: str | None = None,
                 batch_size: int = 64, num_workers: int = 0, val_fraction: float = 0.2,
                 augment: bool = True, on_error: OnError = "raise", seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if preprocess is None or img_size is None:
            if model_name is None:
                raise ValueError("ImageDataModule needs model_name (the model it feeds: its "
                                 "input size and normalisation), or img_size and preprocess")
            check_modality(model_name, "image")
            entry, tag = zoo.registry.get_entry(model_name)
            preprocess = preprocess or dict(entry.cfg(tag).preprocess)
            size = int((model_kwargs or {}).get("img_size") or preprocess["input_size"][-1])
            if img_size is not None and img_size != size:
                raise ValueError(f"data img_size={img_size} differs from the model's input size "
                                 f"{size}; set the model's instead (model_kwargs: "
                                 f"{{img_size: {img_size}}})")
            img_size = size
        if dataset not in IMAGE_DATASETS:
            raise ValueError(f"dataset must be one of {IMAGE_DATASETS}, got {dataset!r}")
        if dataset == "imagefolder" and not root:
            raise ValueError("the imagefolder dataset needs data.root (a folder of class sub-folders)")
        if dataset == "shards" and not root:
            raise ValueError("the shards dataset needs data.root (a shards folder or URL)")
        self.dataset, self.img_size, self.root = dataset, img_size, root
        self.preprocess = preprocess
        self.val_fraction, self.augment, self.seed = val_fraction, augment, seed
        self.on_error = on_error
        self.kind = "digits" if dataset == "digits" else "images"   # shards: set by setup
        self.background = 0.0    # digits: the normalised empty pixel, augmentation's fill

    def _folder_transforms(self) -> tuple[Callable, Callable]:
        """(train, eval) transforms of decoded images."""
        settings = preprocess_settings(self.preprocess)
        eval_tf = eval_transform(self.img_size, **settings)
        if not self.augment:
            return eval_tf, eval_tf
        return train_transform(self.img_size, interpolation=settings["interpolation"],
                               mean=settings["mean"], std=settings["std"]), eval_tf

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        norm = dict(mean=self.preprocess["mean"], std=self.preprocess["std"])
        if self.dataset == "shards":
            self._setup_shards(norm)
            return
        if self.dataset == "digits":
            self.train_set = DigitsDataset("train", img_size=self.img_size, **norm)
            self.val_set = DigitsDataset("val", img_size=self.img_size, **norm)
            self.test_set = DigitsDataset("test", img_size=self.img_size, **norm)
            self.classes, self.background = self.train_set.classes, self.train_set.background
            return
        train_tf, eval_tf = self._folder_transforms()
        root = data_root(self.root)
        self.train_set, self.val_set, self.test_set, self.classes = image_folder_splits(
            root, train_tf=train_tf, eval_tf=eval_tf, val_fraction=self.val_fraction, seed=self.seed,
            on_error=self.on_error)
        views = {id(d): d for d in (self.train_set, self.val_set, self.test_set) if d is not None}
        for view in views.values():   # a Subset of a checked folder, or the folder itself
            folder = getattr(view, "dataset", view)
            self.skipped += [s for s in getattr(folder, "skipped", []) if s not in self.skipped]

    def _setup_shards(self, norm: dict[str, Any]) -> None:
        index = read_shards_index(self.root)
        self.kind = expect_kind(index, self.root, ("digits", "images"), "image")
        if self.kind == "digits":
            items = DigitsItems(img_size=self.img_size, **norm)
            transforms = dict.fromkeys(SPLITS, items)
            self.background = items.background
        else:
            train_tf, eval_tf = self._folder_transforms()
            transforms = {"train": ImageItems(train_tf), "val": ImageItems(eval_tf),
                          "test": ImageItems(eval_tf)}
        self.train_set, self.val_set, self.test_set = shard_splits(self.root, index, transforms)
        self.classes, self.skipped = list(index["classes"]), list(index.get("skipped", []))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Digits augmentation, batched on the batch's device (training only)."""
        if self.kind == "digits" and self.augment and self.trainer is not None \
                and self.trainer.training:
            images, targets = batch
            batch = random_affine(images, fill=self.background), targets
        return batch
