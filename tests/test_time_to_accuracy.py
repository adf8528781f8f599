"""benchmarks/time_to_accuracy.py: its windows, MSE and split equal zoo's own; its scoring of a
NeuralForecast model equals NeuralForecast's predict; its clock leaves scoring out; and the
recipe options behind the fast ETTh1 config do what they say."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import time_to_accuracy as tta

from recipes.forecasting import hold_then_decay
from zoo.data.series import ETTH1_BORDERS, SeriesWindows

ETT = Path(os.environ.get("ZOO_DATA", "")) / "ett" / "ETTh1.csv"
needs_etth1 = pytest.mark.skipif(not ETT.is_file(), reason="needs $ZOO_DATA/ett/ETTh1.csv")


@pytest.fixture(scope="module")
def splits():
    if not ETT.is_file():
        pytest.skip("needs $ZOO_DATA/ett/ETTh1.csv")
    return tta.load_splits()


def test_windows_are_zoos_windows_in_order():
    values = torch.randn(40, 3)
    history, future = tta.windows(values, 7, 5)
    reference = SeriesWindows(values, 7, 5)
    assert len(history) == len(reference) == 29 == tta.num_windows(torch.zeros(336 + 96 + 28, 1))
    for i in (0, 13, 28):
        assert torch.equal(history[i], reference[i][0]) and torch.equal(future[i], reference[i][1])
    with pytest.raises(ValueError, match="need"):
        tta.windows(values, 36, 5)


def test_mse_is_over_every_window_step_and_channel_whatever_the_batch():
    history, future = torch.randn(11, 4, 2), torch.randn(11, 3, 2)
    forecast = torch.randn(11, 3, 2)
    lookup = {h.sum().item(): f for h, f in zip(history, forecast, strict=True)}

    def model(x: torch.Tensor) -> torch.Tensor:
        return torch.stack([lookup[h.sum().item()] for h in x])

    expected = (forecast - future).double().square().mean().item()
    assert tta.test_mse(model, history, future, batch_size=4) == pytest.approx(expected, rel=1e-12)
    assert tta.test_mse(model, history, future, batch_size=100) == pytest.approx(expected, rel=1e-12)


def test_split_boundaries_are_zoos(splits):
    """NeuralForecast trains on zoo's training rows, standardised the same way; the scored
    windows are zoo's test windows (their first target is the test split's first row)."""
    frame = tta.nf_frame(splits)
    assert list(frame["unique_id"].unique()) == list(splits.columns)
    assert splits.borders["train"] == ETTH1_BORDERS["train"] == (0, 8640)
    for c, name in enumerate(splits.columns):
        rows = frame[frame["unique_id"] == name]
        assert len(rows) == 8640
        assert torch.equal(torch.as_tensor(rows["y"].to_numpy().copy()), splits.train[:, c])
        assert (rows["ds"].to_numpy() == splits.timestamps[:8640].to_numpy()).all()
    history, future = tta.windows(splits.test)
    assert splits.borders["test"] == (ETTH1_BORDERS["test"][0] - 336, ETTH1_BORDERS["test"][1])
    assert len(history) == 2785 == 2880 - 96 + 1
    assert torch.equal(future[0][0], splits.test[336])        # row 11520, the test split's first


def test_script_mse_equals_zoos_evaluation(splits):
    """The score on a (tiny) model equals the recipe's own test metric (`zoo eval`'s)."""
    import lightning as L

    from recipes.forecasting import Forecaster
    from recipes.series import SeriesDataModule

    kwargs = {"horizon": 96, "embed_dim": 8, "depth": 1, "num_heads": 2}
    torch.manual_seed(0)
    module = Forecaster(model_name="patchtst_tiny_l336", num_channels=7, model_kwargs=kwargs)
    dm = SeriesDataModule(dataset="etth1", model_name="patchtst_tiny_l336",
                          model_kwargs=kwargs, batch_size=256)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    zoo_mse = trainer.test(module, datamodule=dm, verbose=False)[0]["test/mse"]
    ours = tta.test_mse(module.model.eval(), *tta.windows(splits.test))
    assert ours == pytest.approx(zoo_mse, rel=1e-5)


def test_nf_scoring_equals_neuralforecast_predict():
    """Calling NeuralForecast's PatchTST on windows (nf_forecaster) gives what its own
    predict gives for the window after each series' last row."""
    import pandas as pd
    from neuralforecast import NeuralForecast
    from neuralforecast.models import PatchTST

    gen = torch.Generator().manual_seed(0)
    values = torch.randn(80, 2, generator=gen).cumsum(0)                   # (T, C)
    frame = pd.concat([pd.DataFrame({"unique_id": f"s{c}", "y": values[:, c].numpy(),
                                     "ds": pd.date_range("2020-01-01", periods=80, freq="h")})
                       for c in range(2)], ignore_index=True)
    model = PatchTST(h=6, input_size=24, patch_len=8, stride=4, hidden_size=8, n_heads=2,
                     encoder_layers=1, linear_hidden_size=16, max_steps=2, batch_size=2,
                     windows_batch_size=16, revin_affine=True, accelerator="cpu",
                     logger=False, enable_progress_bar=False, enable_model_summary=False)
    nf = NeuralForecast(models=[model], freq="h")
    nf.fit(df=frame)
    predicted = nf.predict().pivot(index="ds", columns="unique_id", values="PatchTST")
    module = nf.models[0].eval()
    ours = tta.nf_forecaster(module)(values[-24:].float()[None])[0]         # (H, C)
    torch.testing.assert_close(ours, torch.as_tensor(predicted[["s0", "s1"]].to_numpy(),
                                                     dtype=torch.float32), rtol=1e-5, atol=1e-5)


def test_nf_paper_schedule_is_zoos():
    """NeuralForecast gets zoo's hold-then-decay lr, step for step."""
    import lightning as L
    from neuralforecast.models import PatchTST

    kwargs = tta.nf_paper_kwargs(steps_per_epoch=3, epochs=8)
    assert kwargs["max_steps"] == 24 and kwargs["windows_batch_size"] == 896
    nf_model = PatchTST(**kwargs, accelerator="cpu", logger=False)
    config = nf_model.configure_optimizers()
    nf_opt, nf_sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    layer = torch.nn.Linear(2, 2)
    zoo_opt = torch.optim.AdamW(layer.parameters(), lr=1e-4)
    zoo_sched = hold_then_decay(zoo_opt, steps_per_epoch=3, hold_epochs=3, gamma=0.9)
    seen = []
    for _ in range(24):
        seen.append((nf_opt.param_groups[0]["lr"], zoo_opt.param_groups[0]["lr"]))
        for opt, sched in ((nf_opt, nf_sched), (zoo_opt, zoo_sched)):
            opt.step()
            sched.step()
    assert [a for a, _ in seen] == pytest.approx([b for _, b in seen], rel=1e-12)
    assert seen[8][0] == pytest.approx(1e-4) and seen[9][0] == pytest.approx(0.9e-4)
    del L


def test_nf_fast_gets_the_fast_configs_optimisation():
    fast = tta.zoo_optimisation(tta.CONFIGS["zoo_fast"])
    assert fast == {"lr": 1e-3, "hold_epochs": 1, "gamma": 0.7, "epochs": 10}
    assert tta.zoo_optimisation(tta.CONFIGS["zoo"]) == {"lr": 1e-4, "hold_epochs": 3,
                                                       "gamma": 0.9, "epochs": 25}
    kwargs = tta.nf_paper_kwargs(steps_per_epoch=64, **fast)
    assert kwargs["learning_rate"] == 1e-3 and kwargs["max_steps"] == 640
    factor = kwargs["lr_scheduler_kwargs"]["lr_lambda"]
    assert [factor(s) for s in (63, 64, 128)] == pytest.approx([1.0, 0.7, 0.49])


class _Trainer:
    global_step = 0
    should_stop = False


def test_curve_pauses_its_clock_while_scoring_and_stops_at_its_budget(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(tta.time, "perf_counter", lambda: now[0])

    def score(module: torch.nn.Module) -> float:
        assert not module.training          # scored in eval mode, then put back
        now[0] += 100.0                     # scoring takes 100 s: not training time
        return 0.5

    curve = tta.Curve(score, steps_per_epoch=10, budget_s=25.0)
    module, trainer = torch.nn.Dropout(), _Trainer()
    curve.start()
    for step in (10, 20, 30):
        now[0] += 10.0                      # 10 s of training per epoch
        trainer.global_step = step
        curve.record(trainer, module)
        assert module.training
    assert [(p.seconds, p.epochs, p.steps) for p in curve.points] == [
        (10.0, 1.0, 10), (20.0, 2.0, 20), (30.0, 3.0, 30)]
    assert trainer.should_stop and curve.elapsed() == 30.0


def test_first_reaching_and_rows():
    points = [{"seconds": s, "epochs": e, "test_mse": m}
              for s, e, m in ((10, 1, 0.5), (20, 2, 0.39), (30, 3, 0.37), (40, 4, 0.38))]
    assert tta.first_reaching(points, 0.38)["seconds"] == 30
    assert tta.first_reaching(points, 0.3) is None
    nf = {"points": [{"seconds": 30, "epochs": 1, "test_mse": 0.40},
                     {"seconds": 60, "epochs": 2, "test_mse": 0.38}], "train_s": 61}
    row = tta.compare({"points": points, "train_s": 41}, nf, case="c", mode="m")
    assert row["ratio"] == 2.0 and row["time_fraction"] == 0.5 and row["target_mse"] == 0.38
    assert row["peer"] == "neuralforecast" and row["zoo_s"] == 30 and row["peer_s"] == 60
    assert math.isclose(row["zoo_per_s"], 1 / 30, rel_tol=1e-3)


def _synthetic_splits(rows: int = 500, channels: int = 2):
    import pandas as pd

    from zoo.data.series import SeriesSplits, StandardScaler

    gen = torch.Generator().manual_seed(0)
    values = torch.randn(rows, channels, generator=gen).cumsum(0) / 10           # (T, C)
    return SeriesSplits(train=values, val=values, test=values, columns=("a", "b"),
                        scaler=StandardScaler(torch.zeros(channels), torch.ones(channels)),
                        timestamps=pd.date_range("2020-01-01", periods=rows, freq="h"),
                        borders={"train": (0, rows)})


def test_run_nf_scores_every_epoch_equivalent():
    """The NeuralForecast run: points every round(windows / windows per step) steps, and at
    the end; the last point is the trained model's score by the script's own code."""
    splits = _synthetic_splits()                   # 500 - 336 - 96 + 1 = 69 windows per series
    history, future = tta.windows(splits.test[-450:])
    kwargs = dict(h=96, input_size=336, hidden_size=4, n_heads=1, encoder_layers=1,
                  linear_hidden_size=8, windows_batch_size=46, batch_size=2, max_steps=7)
    run = tta.run_nf(splits, history, future, kwargs=kwargs)
    assert [p["steps"] for p in run["points"]] == [3, 6, 7]                # 138 / 46 = 3 steps
    assert [p["epochs"] for p in run["points"]] == [1.0, 2.0, pytest.approx(7 / 3, abs=1e-3)]
    assert all(math.isfinite(p["test_mse"]) for p in run["points"]) and run["train_s"] > 0
    assert run["points"][0]["seconds"] < run["points"][-1]["seconds"] <= run["train_s"]


def test_run_zoo_records_its_recipe(splits):
    """The zoo run: a point at every epoch's end, scored on the windows given, and the test
    MSE of the checkpoint the recipe selects."""
    history, future = tta.windows(splits.test[:336 + 96 + 31])                # 32 windows
    tiny = "{horizon: 96, embed_dim: 8, depth: 1, num_heads: 2}"
    overrides = [f"--model.init_args.model_kwargs={tiny}", "--trainer.limit_train_batches=2",
                 "--trainer.limit_val_batches=1", "--trainer.logger=false"]
    run = tta.run_zoo(tta.CONFIGS["zoo"], history, future, epochs=2, overrides=overrides)
    assert [p["steps"] for p in run["points"]] == [2, 4]
    assert all(math.isfinite(p["test_mse"]) for p in run["points"])
    assert run["selected_checkpoint"] == "best.ckpt"        # by validation, not last.ckpt
    assert math.isfinite(run["selected_checkpoint_mse"])


def test_rows_compare_every_zoo_run_with_every_neuralforecast_run(monkeypatch, tmp_path):
    """The wiring of ``rows``: the defaults run gets the paper-settings run's wall time as its
    budget, every (zoo, NeuralForecast) pair makes a row, and the JSON holds curves and rows."""
    import json

    budgets = []

    def curve(*mses: float) -> list[dict]:
        return [{"seconds": 10.0 * (i + 1), "epochs": i + 1.0, "steps": i + 1, "test_mse": m}
                for i, m in enumerate(mses)]

    def fake_zoo(config, history, future, **kwargs):
        return {"run": config, "train_s": 31.0, "points": curve(0.40, 0.37, 0.36)}

    def fake_nf(splits, history, future, *, kwargs, budget_s=math.inf):
        budgets.append(budget_s)
        return {"run": "nf", "train_s": 100.0, "points": curve(*([0.45] * 9 + [0.38]))}

    monkeypatch.setattr(tta, "load_splits", _synthetic_splits)
    monkeypatch.setattr(tta, "run_zoo", fake_zoo)
    monkeypatch.setattr(tta, "run_nf", fake_nf)
    table = tta.rows(quick=True, out=tmp_path)
    assert budgets == [math.inf, math.inf, 100.0]
    assert [r["mode"] for r in table] == [
        "zoo vs nf paper settings", "zoo vs nf with zoo_fast's optimisation", "zoo vs nf defaults",
        "zoo_fast vs nf paper settings", "zoo_fast vs nf with zoo_fast's optimisation",
        "zoo_fast vs nf defaults"]
    assert table[0]["zoo_s"] == 20.0 and table[0]["peer_s"] == 100.0 and table[0]["ratio"] == 5.0
    saved = json.loads((tmp_path / "time_to_accuracy.json").read_text())
    assert saved["rows"] == table and set(saved["runs"]) == set(tta.RUNS)


def test_fast_config_changes_the_optimisation_only():
    """patchtst_tiny_etth1_fast.yaml keeps the paper config's model, data and split: it
    differs in the schedule and the epoch budget alone."""
    import yaml

    from recipes.cli import flatten

    root = Path(__file__).resolve().parent.parent
    paper, fast = (flatten(yaml.safe_load((root / tta.CONFIGS[k]).read_text()))
                   for k in ("zoo", "zoo_fast"))
    changed = {k for k in paper.keys() | fast.keys() if paper.get(k) != fast.get(k)}
    assert changed == {"trainer.default_root_dir", "trainer.max_epochs",
                       "trainer.early_stopping_patience", "model.init_args.lr",
                       "model.init_args.hold_epochs", "model.init_args.gamma"}
    assert fast["model.init_args.lr"] == 1e-3 and fast["trainer.max_epochs"] == 10
