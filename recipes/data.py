"""The loader plumbing every data module shares."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from recipes.fault_tolerance import resumable_loader


class SplitDataModule(L.LightningDataModule):
    """A data module whose ``setup`` fills ``train_set`` / ``val_set`` / ``test_set`` (or None:
    the validation split is then also the test split) and ``classes``.

    Loaders draw their order from (``seed``, epoch) alone and shard it over the trainer's
    processes (see :class:`recipes.fault_tolerance.ResumableSampler`): a resumed run continues
    where it stopped, and a DDP run sees the same global batches as a single process with the
    same global batch size. ``batch_size`` is per process.
    """

    def __init__(self, *, batch_size: int, num_workers: int, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set = self.val_set = self.test_set = None
        self.classes: list[str] = []
        self.skipped: list[str] = []     # unreadable input files left out (data.on_error=skip)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return resumable_loader(dataset, batch_size=self.batch_size, shuffle=shuffle,
                                seed=self.seed, num_workers=self.num_workers,
                                num_replicas=world, rank=rank)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set if self.test_set is not None else self.val_set, False)
