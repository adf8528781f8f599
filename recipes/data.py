"""The loader plumbing every data module shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from litdata import StreamingDataLoader
from torch import nn
from torch.utils.data import DataLoader, Dataset

from recipes.fault_tolerance import resumable_loader
from recipes.streaming import ShardSplit

# A model's variant arguments (``depth: 2``, ``drop_path_rate: 0.1``): typed so that a dotted
# override (``--model.model_kwargs.depth=2``) arrives as a number, not the string "2".
ModelKwargs = dict[str, bool | int | float | str | list | dict | None]


def check_modality(model_name: str, modality: str) -> None:
    """A data module of ``modality`` (image, audio, series) feeds only models of that kind."""
    import zoo

    kind = zoo.registry.get_entry(model_name)[0].modality
    if kind != modality:
        raise ValueError(f"{model_name} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} model; "
                         f"this {modality} data module feeds {modality} models only (pick the "
                         f"data module of its kind, or a {modality} model)")


def model_for_data(model_name: str, model_kwargs: ModelKwargs | None, modality: str) -> nn.Module:
    """The model a data module of ``modality`` feeds, built on the meta device: its input size,
    normalisation, filterbank, look-back and horizon, without weights or time."""
    import zoo

    check_modality(model_name, modality)
    with torch.device("meta"):
        return zoo.create_model(model_name, **(model_kwargs or {}))


class SplitDataModule(L.LightningDataModule):
    """A data module whose ``setup`` fills ``train_set`` / ``val_set`` / ``test_set`` (or None:
    the validation split is then also the test split) and ``classes``.

    Loaders draw their order from (``seed``, epoch) alone and shard it over the trainer's
    processes (see :class:`recipes.fault_tolerance.ResumableSampler`): a resumed run continues
    where it stopped, and a DDP run sees the same global batches as a single process with the
    same global batch size. ``batch_size`` is per process.

    Splits held as litdata shards (:class:`recipes.streaming.ShardSplit`) get litdata's loader
    instead: it shards by rank and keeps its position itself, so the shards are not sharded a
    second time here; that position travels in checkpoints as this data module's state.
    """

    def __init__(self, *, batch_size: int, num_workers: int, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.train_set = self.val_set = self.test_set = None
        self._classes: list[str] | None = None    # read by setup
        self.skipped: list[str] = []     # unreadable input files left out (data.on_error=skip)
        self._train_loader: DataLoader | None = None
        self._loader_state: dict[str, Any] | None = None   # restored, not yet applied
        self.collate_fn: Callable[[list], Any] | None = None  # None: PyTorch's default
        self.sorted_epochs = 0   # training epochs in length order (datasets with lengths)

    @property
    def classes(self) -> list[str]:
        """The class names (a forecaster's data: its columns). Reading them reads the data
        (``setup``) if that has not happened yet: the recipes' CLI links them to the model."""
        if self._classes is None:
            self.setup("fit")
        return self._classes if self._classes is not None else []

    @classes.setter
    def classes(self, names: Sequence[str]) -> None:
        self._classes = list(names)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def _loader(self, dataset: Dataset | ShardSplit, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        if isinstance(dataset, ShardSplit):
            return dataset.loader(batch_size=self.batch_size, shuffle=shuffle, seed=self.seed,
                                  num_workers=self.num_workers, world_size=world)
        return resumable_loader(dataset, batch_size=self.batch_size, shuffle=shuffle,
                                seed=self.seed, num_workers=self.num_workers,
                                num_replicas=world, rank=rank, collate_fn=self.collate_fn,
                                lengths=getattr(dataset, "lengths_for_batching", None),
                                sorted_epochs=self.sorted_epochs)

    def train_dataloader(self) -> DataLoader:
        self._train_loader = self._loader(self.train_set, shuffle=True)
        self._apply_loader_state()
        return self._train_loader

    # Lightning restores a stateful loader itself only when it makes the training loader after
    # restoring the loops; a module whose configure_optimizers reads
    # trainer.estimated_stepping_batches (Classifier, Forecaster) makes it before, and the
    # restored position would be dropped. The data module's state is restored before either.
    def state_dict(self) -> dict[str, Any]:
        """The shards' training loader position (nothing for in-memory splits: their
        position is :class:`recipes.fault_tolerance.ResumableSampler`'s)."""
        if isinstance(self._train_loader, StreamingDataLoader):
            return {"train_loader": self._train_loader.state_dict()}
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._loader_state = state.get("train_loader")
        self._apply_loader_state()

    def _apply_loader_state(self) -> None:
        if self._loader_state is None or self._train_loader is None:
            return
        if not isinstance(self._train_loader, StreamingDataLoader):
            raise RuntimeError("the checkpoint holds a position in litdata shards, but this run's "
                               "training data is not shards: resume with the same data")
        self._train_loader.load_state_dict(self._loader_state)
        self._loader_state = None

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set if self.test_set is not None else self.val_set, False)

    def predict_dataloader(self) -> DataLoader:
        """``zoo predict --config``: the test split (the validation split if there is none)."""
        return self.test_dataloader()
