"""The synthetic pre-training recipe (recipes/pretrain.py): targets, masks, learning, `zoo train`."""

from __future__ import annotations

import json

import pytest
import torch

from recipes.pretrain import (
    PatchDecoderPretraining,
    SyntheticDataModule,
    pinball_loss,
    position_targets,
)
from recipes.train import train

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2, "head_dim": 16, "mlp_hidden": 32,
        "context_length": 128, "horizon": 64}


def test_each_position_forecasts_the_steps_after_its_patch() -> None:
    values = torch.arange(10.0)[None]                      # T = 10, patches of 2, H = 3
    observed = torch.ones(1, 10, dtype=torch.bool)
    observed[0, 5] = False
    targets, weights = position_targets(values, observed, 2, 3, 4)
    assert targets.shape == weights.shape == (1, 4, 3)
    # position n has read steps < 2 (n + 1); it forecasts 2 (n + 1) + h
    assert targets[0, 0].tolist() == [2, 3, 4] and weights[0, 0].tolist() == [1, 1, 1]
    assert targets[0, 1].tolist() == [4, 5, 6] and weights[0, 1].tolist() == [1, 0, 1]
    assert weights[0, 3].tolist() == [1, 1, 0]             # step 10 is past the series


def test_pinball_loss_by_hand() -> None:
    levels = torch.tensor([0.1, 0.9])
    loss = pinball_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([2.0]), levels)
    # 0.1 level under the target by 1: 0.1; 0.9 level over it by 1: (1 - 0.9) * 1 = 0.1
    assert loss.tolist() == pytest.approx([0.1])


def test_masks_keep_the_last_history_patch_observed() -> None:
    module = PatchDecoderPretraining(model_kwargs=TINY, prefix_mask_prob=1.0, span_mask_prob=1.0)
    torch.manual_seed(0)
    missing = module._masks(torch.zeros(512, 128 + 64))
    patch = module.model.front_end.patch_len
    assert not missing[:, 128 - patch:128].any()
    assert missing[:, 0].float().mean() > 0.8              # prefixes are masked
    assert missing[:, 128:].any()                          # spans reach into the future too


def test_pretraining_learns_a_seasonal_series() -> None:
    torch.manual_seed(0)
    module = PatchDecoderPretraining(model_kwargs=TINY, prefix_mask_prob=0.0, span_mask_prob=0.0)
    t = torch.arange(192.0)
    batch = torch.sin(2 * torch.pi * t / 24)[None] * torch.linspace(1, 3, 16)[:, None]
    missing = torch.zeros_like(batch, dtype=torch.bool)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        value, weights = module._losses(batch, missing)
        return (value * weights).sum() / weights.sum()

    first = loss().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.3 * first


def test_data_module_items_are_whole_batches_from_their_seed() -> None:
    dm = SyntheticDataModule(train_batches=2, val_batches=1, test_batches=1, series_per_batch=4,
                             length=96, seed=3)
    dm.setup("fit")
    assert dm.train_set[0].shape == (4, 96)
    again = SyntheticDataModule(train_batches=2, val_batches=1, test_batches=1,
                                series_per_batch=4, length=96, seed=3)
    again.setup("fit")
    assert torch.equal(dm.train_set[1], again.train_set[1])
    assert not torch.equal(dm.train_set[0], dm.val_set[0])   # other seeds
    with pytest.raises(ValueError, match="must all be >= 1"):
        SyntheticDataModule(train_batches=0)


def test_zoo_train_pretrains_and_tests(tmp_path) -> None:
    kwargs = json.dumps(TINY)
    result = train(["--config", "configs/series/timesfm_tiny_synthetic.yaml",
                    f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.max_epochs=1",
                    "--data.train_batches=2", "--data.val_batches=1", "--data.test_batches=1",
                    "--data.series_per_batch=8", "--data.length=192", "--data.num_workers=0",
                    f"--model.model_kwargs={kwargs}"])
    assert result["metrics"]["test/loss"] > 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    module = PatchDecoderPretraining.from_checkpoint(result["best_checkpoint"])
    history = torch.randn(2, 50, 1)
    assert module.model(history, horizon=100).shape == (2, 100, 1)


def test_zoo_finetune_trains_a_timesfm_on_the_datas_horizon(tmp_path) -> None:
    import numpy as np
    import pandas as pd

    from zoo import cli

    t = np.arange(900)
    pd.DataFrame({"day": pd.date_range("2022-01-01", periods=900, freq="D"),
                  "units": 20 + 3 * np.sin(2 * np.pi * t / 7)}).to_csv(tmp_path / "d.csv",
                                                                      index=False)
    args = cli.build_parser().parse_args([
        "finetune", "timesfm_2p5_tiny", "--data", str(tmp_path / "d.csv"), "--time-column", "day",
        "--horizon", "14", "--epochs", "1", "--no-pretrained", "--output", str(tmp_path / "run"),
        "--num-workers", "0"])
    args.overrides = ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
                      "--trainer.limit_test_batches=2"]
    result = train(cli.finetune_arguments(args))
    assert set(result["metrics"]) >= {"test/mse", "test/mae", "test/mase", "test/wql"}
