"""Runs that survive real work: atomic checkpoints, kill -9 and resume, NaN guards, DDP."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recipes.cli import ConfigError, build
from recipes.fault_tolerance import AtomicCheckpointIO, ResumableSampler, resumable_loader
from recipes.train import resume_checkpoint, train

REPO = Path(__file__).resolve().parent.parent
DIGITS = "configs/image/vit_nano_digits.yaml"
# 2 epochs of 20 steps (1,257 digits, batch 64), with augmentation and drop-path: every random
# stream a resume has to get right
SMALL = ["--trainer.max_epochs=2", "--model.model_kwargs.depth=2", "--model.warmup_epochs=1",
         "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=5"]


# --- the data order -----------------------------------------------------------------------------

def _batches(sampler: ResumableSampler) -> list[list[int]]:
    order = list(sampler)
    return [order[i:i + sampler.batch_size] for i in range(0, len(order), sampler.batch_size)]


def test_order_depends_on_seed_and_epoch_only():
    a = ResumableSampler(50, batch_size=8, shuffle=True, seed=3)
    b = ResumableSampler(50, batch_size=8, shuffle=True, seed=3)
    torch.manual_seed(0)
    first = list(a)
    torch.manual_seed(1)                      # the global RNG plays no part
    assert list(b) == first and sorted(first) == list(range(50))
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
    assert list(ResumableSampler(5, batch_size=2, shuffle=False)) == [0, 1, 2, 3, 4]


def test_rank_shards_make_up_the_single_process_global_batches():
    single = ResumableSampler(64, batch_size=16, shuffle=True, seed=0)
    ranks = [ResumableSampler(64, batch_size=8, shuffle=True, seed=0, num_replicas=2, rank=r,
                              pad=True) for r in range(2)]
    for global_batch, *local in zip(_batches(single), *map(_batches, ranks), strict=True):
        assert sorted(global_batch) == sorted(itertools.chain.from_iterable(local))


def test_training_shards_are_padded_to_equal_length_evaluation_shards_are_not():
    train = [ResumableSampler(7, batch_size=2, shuffle=True, num_replicas=3, rank=r, pad=True)
             for r in range(3)]
    assert [len(list(s)) for s in train] == [3, 3, 3] == [len(s) for s in train]
    assert set(itertools.chain.from_iterable(train)) == set(range(7))
    evaluation = [ResumableSampler(7, batch_size=2, shuffle=False, num_replicas=3, rank=r)
                  for r in range(3)]
    assert sorted(itertools.chain.from_iterable(evaluation)) == list(range(7))   # no repeats
    assert [len(s) for s in evaluation] == [3, 2, 2]


def test_a_restored_sampler_skips_the_batches_already_trained():
    sampler = ResumableSampler(40, batch_size=4, shuffle=True, seed=5)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.batches_done = 3
    state = sampler.state_dict()
    resumed = ResumableSampler(40, batch_size=4, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)                      # Lightning sets the (same) epoch again
    assert list(resumed) == full[12:]
    assert list(resumed) == full              # the skip applies to the resumed epoch only
    resumed.set_epoch(3)
    assert resumed.batches_done == 0
    with pytest.raises(ValueError, match=r"over 40 samples on 1 process.*this run has 41"):
        ResumableSampler(41, batch_size=4, shuffle=True).load_state_dict(state)


def test_making_an_iterator_draws_nothing_from_the_global_rng():
    loader = resumable_loader(torch.utils.data.TensorDataset(torch.arange(10)), batch_size=3,
                              shuffle=True, seed=0)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(loader)
    assert torch.equal(torch.get_rng_state(), before)


# --- atomic checkpoint writes -----------------------------------------------------------------

def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)
    assert torch.load(path, weights_only=True) == {"step": 1}

    def torch_save_that_dies_halfway(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", torch_save_that_dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]   # no temp file left


# --- kill -9 and resume ---------------------------------------------------------------------

def _zoo_train(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "zoo.cli", "train", DIGITS, f"--trainer.default_root_dir={out}",
           *SMALL, *extra]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, output[-3000:]
    return output


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["state_dict"]


@pytest.mark.slow
def test_sigkill_midway_then_resume_equals_an_uninterrupted_run(tmp_path):
    steady, crashed = tmp_path / "steady", tmp_path / "crashed"
    every = "--trainer.checkpoint_every_n_steps=3"
    reference = _zoo_train(steady, every)
    victim = _zoo_train(crashed, every)
    last = crashed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not last.exists():                  # kill once a mid-epoch checkpoint is on disk
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    time.sleep(0.5)                           # and a little further on: a few steps are lost
    assert victim.poll() is None, "the run ended before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert 0 < killed_at < 40 and killed_at % 20 != 0     # mid-epoch, not the end of one
    assert not (crashed / "metrics.json").exists()

    output = _finish(_zoo_train(crashed, every, "--resume"))
    _finish(reference)
    assert f"resuming from {last}" in output or "Restored all states" in output
    resumed, uninterrupted = _weights(crashed), _weights(steady)
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        torch.testing.assert_close(resumed[name], uninterrupted[name], rtol=0, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
    a = json.loads((crashed / "metrics.json").read_text())
    b = json.loads((steady / "metrics.json").read_text())
    assert a["metrics"] == b["metrics"] and a["resumed_from"] == str(last)
    assert a["epochs"] == b["epochs"] == 2


def test_resume_refuses_a_changed_config_and_starts_afresh_without_a_checkpoint(tmp_path,
                                                                               one_thread):
    out = tmp_path / "run"
    assert resume_checkpoint(out, True) is None        # nothing to resume: a fresh start
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*nope\.ckpt"):
        resume_checkpoint(out, tmp_path / "nope.ckpt")
    first = ["--config", DIGITS, f"--trainer.default_root_dir={out}", *SMALL,
             "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
             "--trainer.limit_val_batches=1"]
    train(first)
    assert resume_checkpoint(out, True) == out / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"config differs from the run's in "
                       r"'model.init_args.lr' \(0.002 -> 0.1\); only trainer.max_epochs"):
        train([*first, "--model.lr=0.1", "--trainer.max_epochs=2"], resume=True)
    longer = train([*first, "--trainer.max_epochs=2"], resume=True)   # more epochs: allowed
    assert longer["epochs"] == 2 and longer["resumed_from"] == str(out / "checkpoints" / "last.ckpt")


def test_last_checkpoint_is_the_latest_epoch_even_when_the_best_is_older(tmp_path, one_thread):
    """A crash resumes from the latest epoch: last.ckpt is rewritten at every epoch's end, not
    only when best.ckpt improves (Lightning 2.6's save_last). A learning rate of ~0 keeps the
    validation accuracy flat, so the best stays at epoch 0."""
    result = train(["--config", DIGITS, *SMALL, "--trainer.max_epochs=3",
                    "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                    "--model.lr=1e-12", "--model.min_lr=1e-13",
                    f"--trainer.default_root_dir={tmp_path}"])
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6)
    assert (best["epoch"], best["global_step"]) == (0, 2)
    assert Path(result["best_checkpoint"]).name == "best.ckpt"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


# --- non-finite losses ------------------------------------------------------------------------

def _poison(monkeypatch, at_step: int) -> None:
    """Make the training loss NaN at one step."""
    from recipes.classification import Classifier

    original = Classifier.forward

    def forward(self, inputs):
        logits = original(self, inputs)
        if self.training and self.global_step == at_step:
            logits = logits * float("nan")
        return logits

    monkeypatch.setattr(Classifier, "forward", forward)


def test_a_nan_loss_stops_the_run_naming_the_step(tmp_path, monkeypatch, one_thread):
    _poison(monkeypatch, at_step=2)
    with pytest.raises(FloatingPointError, match=r"training loss is nan at step 2 \(epoch 0, "
                                                 r"batch 2\).*model.nonfinite_loss=skip"):
        train(["--config", DIGITS, f"--trainer.default_root_dir={tmp_path}", *SMALL,
               "--trainer.max_epochs=1", "--trainer.limit_train_batches=4"])


def test_a_nan_loss_can_skip_its_batch(tmp_path, monkeypatch, one_thread, caplog):
    _poison(monkeypatch, at_step=2)
    result = train(["--config", DIGITS, f"--trainer.default_root_dir={tmp_path}", *SMALL,
                    "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
                    "--model.nonfinite_loss=skip"])
    assert "training loss is nan at step 2 (epoch 0, batch 2); batch skipped" in caplog.text
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    # a NaN gradient applied once would have made every weight NaN
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    import csv
    with open(tmp_path / "logs" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["train/skipped_batches"]) for r in rows if r.get("train/skipped_batches")] == [1.0]
    assert result["metrics"]["test/acc"] > 0


def test_trainer_settings_are_checked():
    with pytest.raises(ValueError, match=r"invalid strategy name: `strategy='horovod'`"):
        build(["--config", DIGITS, "--trainer.strategy=horovod"])
    with pytest.raises(ConfigError, match=r"config key 'model.init_args.nonfinite_loss' must be "
                                          r"one of 'raise', 'skip', got 'ignore'"):
        build(["--config", DIGITS, "--model.nonfinite_loss=ignore"])
    with pytest.raises(ConfigError, match=r"trainer.accumulate_grad_batches must be >= 1"):
        build(["--config", DIGITS, "--trainer.accumulate_grad_batches=0"])
    with pytest.raises(ConfigError, match=r"trainer.early_stopping_patience needs validation, "
                                          r"but trainer.limit_val_batches is 0"):
        build(["--config", DIGITS, "--trainer.limit_val_batches=0",
               "--trainer.early_stopping_patience=3"])
    with pytest.raises(ConfigError, match=r"trainer.checkpoint_every_n_steps must be >= 1"):
        build(["--config", DIGITS, "--trainer.checkpoint_every_n_steps=0"])


def test_without_validation_the_last_weights_are_tested(tmp_path, one_thread):
    result = train(["--config", DIGITS, *SMALL, "--trainer.max_epochs=1",
                    "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}"])
    assert Path(result["best_checkpoint"]).name == "last.ckpt"
    assert not (tmp_path / "checkpoints" / "best.ckpt").exists()


# --- DDP -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    # no augmentation and no drop-path: each process draws its own random numbers, so only a
    # deterministic recipe can match exactly; 12 full global batches of 64 (no partial batch)
    same = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=12", "--data.augment=false",
            "--model.model_kwargs.drop_path_rate=0.0", "--trainer.accelerator=cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    _finish(_zoo_train(one, *same, "--data.batch_size=64", "--trainer.devices=1"))
    output = _finish(_zoo_train(two, *same, "--data.batch_size=32", "--trainer.devices=2",
                                "--trainer.strategy=ddp"))
    assert "distributed_backend=gloo" in output and "All distributed processes registered" in output
    a = json.loads((one / "metrics.json").read_text())
    b = json.loads((two / "metrics.json").read_text())
    assert b["world_size"] == 2 and a["world_size"] == 1
    assert b["metrics"]["test/acc"] == pytest.approx(a["metrics"]["test/acc"], abs=1e-6)
    val = [json.loads(json.dumps(_val_metric(run))) for run in (one, two)]
    assert val[0] == pytest.approx(val[1], abs=1e-6)
    for name, tensor in _weights(one).items():
        torch.testing.assert_close(_weights(two)[name], tensor, rtol=1e-4, atol=1e-5)
    # checkpoints and metrics are written once, by rank 0
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def _val_metric(run: Path) -> float:
    import csv

    with open(run / "logs" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/acc")]
    return float(rows[-1]["val/acc"])
