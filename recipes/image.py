"""Image classification data: scikit-learn digits or an ImageFolder tree, as the model expects
them (the LightningModule is ``recipes.classification.Classifier``)."""

from __future__ import annotations

from typing import Any, Optional


from recipes.data import SplitDataModule
from zoo.data import data_root
from zoo.data.images import (DigitsDataset, eval_transform, image_folder_splits, preprocess_settings,
                             random_affine, train_transform)

class ImageDataModule(SplitDataModule):
    """Digits (bundled) or an ImageFolder tree, preprocessed as the model expects.

    ``preprocess`` comes from the model's pretrained cfg (mean, std, interpolation, crop_pct);
    ``img_size`` is the side of the square images fed to the model. ``on_error``: an
    unreadable image stops the run naming it (``raise``) or is left out and counted (``skip``).
    """

    def __init__(self, *, dataset: str, img_size: int, preprocess: dict[str, Any],
                 root: Optional[str] = None, batch_size: int = 64, num_workers: int = 0,
                 val_fraction: float = 0.2, augment: bool = True, on_error: str = "raise",
                 seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset not in ("digits", "imagefolder"):
            raise ValueError(f"dataset must be 'digits' or 'imagefolder', got {dataset!r}")
        if dataset == "imagefolder" and not root:
            raise ValueError("the imagefolder dataset needs data.root (a folder of class sub-folders)")
        self.dataset, self.img_size, self.root = dataset, img_size, root
        self.preprocess = preprocess
        self.val_fraction, self.augment, self.seed = val_fraction, augment, seed
        self.on_error = on_error

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
        settings = preprocess_settings(self.preprocess)
        eval_tf = eval_transform(self.img_size, **settings)
        train_tf = (train_transform(self.img_size, interpolation=settings["interpolation"], **norm)
                    if self.augment else eval_tf)
        root = data_root(self.root)
        self.train_set, self.val_set, self.test_set, self.classes = image_folder_splits(
            root, train_tf=train_tf, eval_tf=eval_tf, val_fraction=self.val_fraction, seed=self.seed,
            on_error=self.on_error)
        views = {id(d): d for d in (self.train_set, self.val_set, self.test_set) if d is not None}
        for view in views.values():   # a Subset of a checked folder, or the folder itself
            folder = getattr(view, "dataset", view)
            self.skipped += [s for s in getattr(folder, "skipped", []) if s not in self.skipped]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Digits augmentation, batched on the batch's device (training only)."""
        if self.dataset == "digits" and self.augment and self.trainer is not None \
                and self.trainer.training:
            images, targets = batch
            batch = random_affine(images, fill=self.train_set.background), targets
        return batch
