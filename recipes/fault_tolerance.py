"""What lets a run survive a crash: atomic checkpoint writes, a resumable data order, the RNG
state in every checkpoint, and a guard against non-finite losses.

A run resumed from ``last.ckpt`` continues with the same weights, optimizer and scheduler
state (Lightning), the same position in the epoch's sample order (:class:`ResumableSampler`)
and the same random streams (:class:`TrainingState`), so its final weights equal those of an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger("zoo.recipes")

NonfinitePolicy = Literal["raise", "skip"]   # a NaN / Inf training loss: stop naming the step, or skip the batch
NONFINITE_POLICIES = get_args(NonfinitePolicy)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the target's directory, flushed to disk,
    then renamed over the target: a crash mid-write leaves the previous checkpoint intact.

    (Lightning's own save stages the file in the system temp directory and moves it, which is a
    copy, not an atomic rename, when that directory is on another file system.)
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)


LENGTH_POOL = 50   # batches sorted together when a sampler groups samples by length


class ResumableSampler(Sampler[int]):
    """Sample order that depends only on (seed, epoch), sharded over ranks, resumable mid-epoch.

    Each epoch's order is a permutation drawn from its own generator seeded with
    ``seed + epoch`` (or the identity without ``shuffle``); rank r of W takes every W-th index
    starting at r, so the W local batches of one step together hold the same samples as one
    global batch of W times the size in a single process. With ``pad`` (training under DDP)
    the order is padded by repeating its first indices so that every rank has the same
    number of batches. With ``lengths`` (one per sample) batches hold samples of similar
    length (see :meth:`_grouped`). ``batches_done`` counts the local batches trained in the current epoch;
    after :meth:`load_state_dict` the next epoch's iteration skips them.
    """

    def __init__(self, num_samples: int, *, batch_size: int, shuffle: bool, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, pad: bool = False,
                 lengths: Sequence[int] | None = None, sorted_epochs: int = 0) -> None:
        if num_samples < 1:
            raise ValueError("cannot sample from an empty dataset")
        if lengths is not None and len(lengths) != num_samples:
            raise ValueError(f"{len(lengths)} lengths for {num_samples} samples")
        if sorted_epochs and lengths is None:
            raise ValueError("sorted_epochs needs the samples' lengths")
        self.lengths = torch.as_tensor(lengths) if lengths is not None else None
        self.sorted_epochs = sorted_epochs
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_samples, self.batch_size, self.shuffle = num_samples, batch_size, shuffle
        self.seed, self.num_replicas, self.rank, self.pad = seed, num_replicas, rank, pad
        self.epoch = 0
        self.batches_done = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (also of a resumed one)."""
        if epoch != self.epoch:
            self.batches_done = self._skip = 0
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        if self.lengths is not None:
            order = self._grouped(order)
        if self.pad and self.num_samples % self.num_replicas:
            extra = self.num_replicas - self.num_samples % self.num_replicas
            order = torch.cat([order, order.repeat(math.ceil(extra / self.num_samples))[:extra]])
        return order[self.rank::self.num_replicas]

    def _grouped(self, order: torch.Tensor) -> torch.Tensor:
        """``order`` rearranged so that each batch holds samples of similar length (less
        padding): shuffled, it is cut into pools of :data:`LENGTH_POOL` batches, each pool sorted
        by length and cut into batches, and the batches of all pools shuffled (from the same
        (seed, epoch) generator); unshuffled, and in the first ``sorted_epochs`` epochs
        (SortaGrad, Amodei et al. 2016: short utterances first steady CTC's start), it is
        sorted by length, shortest first."""
        lengths = self.lengths[order]
        if not self.shuffle or self.epoch < self.sorted_epochs:
            return order[torch.sort(lengths, stable=True).indices]
        pool = self.batch_size * self.num_replicas * LENGTH_POOL
        pieces = [chunk[torch.sort(chunk_lengths, stable=True).indices]
                  for chunk, chunk_lengths in zip(order.split(pool), lengths.split(pool), strict=True)]
        step = self.batch_size * self.num_replicas     # one global batch
        batches = list(torch.cat(pieces).split(step))
        generator = torch.Generator().manual_seed(self.seed + self.epoch + 1_000_003)
        return torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator)])

    def __iter__(self) -> Iterator[int]:
        start, self._skip = self._skip * self.batch_size, 0
        return iter(self._order()[start:].tolist())

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.num_samples / self.num_replicas)
        return len(range(self.rank, self.num_samples, self.num_replicas))

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done,
                "num_samples": self.num_samples, "num_replicas": self.num_replicas}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if (state["num_samples"], state["num_replicas"]) != (self.num_samples, self.num_replicas):
            raise ValueError(
                f"the checkpoint's data order was over {state['num_samples']} samples on "
                f"{state['num_replicas']} process(es); this run has {self.num_samples} on "
                f"{self.num_replicas}: resume with the same data and devices")
        self.epoch, self.batches_done = state["epoch"], state["batches_done"]
        self._skip = self.batches_done


def resumable_loader(dataset: Dataset, *, batch_size: int, shuffle: bool, seed: int,
                     num_workers: int = 0, num_replicas: int = 1, rank: int = 0,
                     collate_fn: Callable[[list], Any] | None = None,
                     lengths: Sequence[int] | None = None, sorted_epochs: int = 0) -> DataLoader:
    """A loader whose order depends on (seed, epoch) only; the training split pads its shards
    so that all ranks step together, evaluation splits never repeat a sample."""
    sampler = ResumableSampler(len(dataset), batch_size=batch_size, shuffle=shuffle, seed=seed,
                               num_replicas=num_replicas, rank=rank, pad=shuffle,
                               lengths=lengths, sorted_epochs=sorted_epochs if shuffle else 0)
    # the loader's own generator: making an iterator must not draw from the global RNG
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn,
                      num_workers=num_workers, persistent_workers=num_workers > 0,
                      pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(seed))


def rng_state() -> dict[str, Any]:
    """Every global RNG's state, as tensors and plain values (readable with weights_only)."""
    # the legacy global NumPy state is what a resumed run must replay (user code may draw from it)
    kind, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],  # noqa: NPY002
                         n["has_gauss"], n["gauss"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingState(L.Callback):
    """Keeps what Lightning's checkpoints leave out: the random number generators' states (so
    dropout and augmentation continue exactly), the training data position
    (:class:`ResumableSampler`'s epoch and trained batches) and the training time summed over
    interruptions. Restored at the start of training, before the first batch is drawn."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self.train_time_s = 0.0
        self._started: float | None = None

    @staticmethod
    def _sampler(trainer: L.Trainer) -> ResumableSampler | None:
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        return sampler if isinstance(sampler, ResumableSampler) else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:   # resumed: continue the saved data order and streams
            sampler = self._sampler(trainer)
            if self._pending.get("sampler") is not None:
                if sampler is None:
                    raise RuntimeError("the checkpoint holds a data position but this run's "
                                       "training loader has no ResumableSampler")
                sampler.load_state_dict(self._pending["sampler"])
            set_rng_state(self._pending["rng"])
            self._pending = None
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        # runs before ModelCheckpoint's hook (Lightning calls checkpoint callbacks last)
        if (sampler := self._sampler(trainer)) is not None:
            sampler.batches_done += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # training is over: later test / predict runs (which restore a checkpoint's state,
        # with its own training time) must neither add to it nor replace it
        self._final = self.elapsed()

    _final: float | None = None

    def elapsed(self) -> float:
        """Training seconds so far, including those before any resume."""
        if self._final is not None:
            return self._final
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.train_time_s + running

    def state_dict(self) -> dict[str, Any]:
        sampler = self._sampler(self._trainer) if self._trainer is not None else None
        return {"rng": rng_state(), "train_time_s": self.elapsed(),
                "sampler": sampler.state_dict() if sampler is not None else None}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    _trainer: L.Trainer | None = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state
        self.train_time_s = float(state.get("train_time_s", 0.0))


def checked_loss(module: L.LightningModule, loss: torch.Tensor, batch_idx: int,
                 policy: str) -> torch.Tensor | None:
    """``loss`` if it is finite; otherwise raise naming the step (``policy="raise"``) or
    return None, which makes Lightning skip the optimizer step (``"skip"``). Under DDP the
    ranks agree first, so that all of them skip the same step."""
    finite = bool(torch.isfinite(loss))
    trainer = module.trainer
    if policy == "skip" and trainer is not None and trainer.world_size > 1:
        finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
    if finite:
        return loss
    where = (f"step {module.global_step} (epoch {module.current_epoch}, batch {batch_idx})")
    if policy == "skip":
        logger.warning("training loss is %s at %s; batch skipped", loss.item(), where)
        module.log("train/skipped_batches", 1.0, reduce_fx="sum", on_step=False, on_epoch=True)
        return None
    raise FloatingPointError(
        f"training loss is {loss.item()} at {where}; lower --model.lr, check the data, or pass "
        "--model.nonfinite_loss=skip to skip such batches")
