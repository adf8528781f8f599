"""FSDP (``--trainer.strategy=fsdp``): Lightning runs it on CUDA only, so the training test runs
on a GPU machine and skips elsewhere; on CPU the refusal is a clear error before any training."""

from __future__ import annotations

import json

import pytest
import torch

from recipes.export import module_from_checkpoint
from recipes.train import train

DIGITS = "configs/image/vit_nano_digits.yaml"
SMALL = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
         "--model.model_kwargs.depth=2", "--data.augment=false",
         "--model.model_kwargs.drop_path_rate=0.0", "--trainer.enable_progress_bar=false",
         "--trainer.precision=32-true"]

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="Lightning's FSDP strategy needs CUDA (with accelerator='cpu' it refuses: 'The "
           "strategy `fsdp` requires a GPU accelerator'); run this file on a GPU machine")


def test_fsdp_on_cpu_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"The strategy `fsdp` requires a GPU accelerator"):
        train(["--config", DIGITS, *SMALL, "--trainer.strategy=fsdp",
               "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run" / "checkpoints").exists()


@needs_cuda
def test_fsdp_trains_like_one_device_and_its_checkpoint_loads(tmp_path):
    """FSDP over every GPU here: the same test accuracy as one plain GPU (1e-4: sharded
    reductions sum in another order), and its checkpoint is a whole state dict that
    loads into the plain module (as `zoo export` and `zoo predict` read it)."""
    devices = torch.cuda.device_count()
    plain = train(["--config", DIGITS, *SMALL, "--trainer.accelerator=gpu",
                   "--trainer.devices=1", f"--data.batch_size={64}",
                   f"--trainer.default_root_dir={tmp_path / 'plain'}"])
    sharded = train(["--config", DIGITS, *SMALL, "--trainer.accelerator=gpu",
                     f"--trainer.devices={devices}", "--trainer.strategy=fsdp",
                     f"--data.batch_size={64 // devices}",
                     f"--trainer.default_root_dir={tmp_path / 'fsdp'}"])
    assert sharded["world_size"] == devices
    assert sharded["metrics"]["test/acc"] == pytest.approx(plain["metrics"]["test/acc"], abs=1e-4)
    module = module_from_checkpoint(tmp_path / "fsdp" / "checkpoints" / "last.ckpt").eval()
    reference = module_from_checkpoint(tmp_path / "plain" / "checkpoints" / "last.ckpt").eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(module(x), reference(x), rtol=1e-3, atol=1e-4)
    assert json.loads((tmp_path / "fsdp" / "metrics.json").read_text())["world_size"] == devices
