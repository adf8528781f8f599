"""Time to accuracy on ETTh1, horizon 96: zoo's PatchTST recipe against NeuralForecast's PatchTST.

Both train on the same rows with the same standardisation (zoo's ETTh1 split: train rows
[0, 8640), the scaler fitted on them; test windows from row 11520 - 336 to 14400), one after the
other in this process with the same thread count. After every epoch (NeuralForecast: every
``steps_per_epoch`` optimiser steps, the steps that draw as many windows as one zoo epoch) the
clock is paused and this script scores **every test window** (2,785 windows x 7 channels) with
its own MSE code on standardised values (:func:`test_mse`); the curve is (seconds of training so
far, test MSE). Training time counts from the library's ``fit`` call and includes whatever the
recipe does besides steps (zoo's validation passes and checkpoints; NeuralForecast's window
building).

    python benchmarks/time_to_accuracy.py [--quick] [--runs zoo,zoo_fast,nf,nf_defaults]
    python benchmarks/time_to_accuracy.py --profile [CONFIG]    # where a training step goes

All four runs take about 40 minutes on the quiet 2-core machine (zoo ~8, zoo_fast ~3, nf ~12,
nf_defaults ~12, plus scoring); ``--quick`` (one epoch each) a few minutes.

Runs:

- ``zoo``: ``configs/series/patchtst_tiny_etth1.yaml`` as ``zoo train`` runs it (paper settings);
- ``zoo_fast``: ``configs/series/patchtst_tiny_etth1_fast.yaml`` (the faster recipe);
- ``nf``: NeuralForecast 3.3 ``PatchTST`` with the paper's settings mapped onto its arguments
  (:func:`nf_paper_kwargs`): 7 series in long format, channel-independent as NeuralForecast
  does it, 7 x 128 = 896 windows per step, MSE loss, lr 1e-4 with zoo's own hold-then-decay
  function as its ``LambdaLR``, no validation;
- ``nf_fast``: the same with ``zoo_fast``'s optimisation (lr 1e-3, held 1 epoch, then x 0.7 per
  epoch, 10 epochs): whether the fast recipe's gain is zoo's or the schedule's;
- ``nf_defaults``: ``PatchTST(h=96, input_size=336)`` and nothing else (MAE loss, d_model 128,
  1,024 windows per step, 5,000 steps), stopped at the ``nf`` run's wall time (650 s when
  ``nf`` is not run with it).

Scoring NeuralForecast's model with this script's code (:func:`nf_forecaster`): its
``PatchTST.forward`` maps ``insample_y`` (windows, L, 1) to (windows, H, 1), one univariate
series per window; with ``scaler_type="identity"`` (the default) ``predict`` adds nothing
around it, so a test window (L, C) is C such windows, reshaped back to (H, C).
``tests/test_time_to_accuracy.py`` checks this against ``NeuralForecast.predict``.
(``cross_validation`` could give the same windows, but refits or predicts through pandas at
every cutoff; calling the module is exact and takes seconds.)

Output: ``benchmarks/results/time_to_accuracy.json`` (the curves and rows). A row's ``ratio``
is NeuralForecast's seconds over zoo's (bench.py's convention: above 1 zoo is faster);
``time_fraction`` its inverse, zoo's seconds to NeuralForecast's final test MSE over
NeuralForecast's seconds to it (target <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from recipes.forecasting import hold_then_decay_factor  # noqa: E402
from zoo.data.series import SeriesSplits, etth1_splits  # noqa: E402

logger = logging.getLogger("zoo.benchmarks")

LOOKBACK, HORIZON = 336, 96
BATCH_WINDOWS = 128        # zoo's batch of (336, 7) windows: 128 x 7 = 896 univariate windows
CONFIGS = {"zoo": "configs/series/patchtst_tiny_etth1.yaml",
           "zoo_fast": "configs/series/patchtst_tiny_etth1_fast.yaml"}
# NeuralForecast runs: with each zoo config's optimisation (lr, schedule, epochs), and as shipped
NF_CONFIGS = {"nf": CONFIGS["zoo"], "nf_fast": CONFIGS["zoo_fast"]}
RUNS = ("zoo", "zoo_fast", "nf", "nf_fast", "nf_defaults")
EPOCHS = 25                # the paper config's budget; NeuralForecast gets the same in steps
# The defaults run's budget when the paper-settings run is not in the same invocation: that
# run's wall time on the quiet 2-core machine (issue 19: 650 s)
DEFAULTS_BUDGET_S = 650.0


# --- data and scoring (the script's own) ----------------------------------------------------

def load_splits(root: str | None = None) -> SeriesSplits:
    """zoo's ETTh1 split at look-back 336 (standardised with the training rows' scaler)."""
    return etth1_splits(LOOKBACK, root=root)


def windows(values: torch.Tensor, lookback: int = LOOKBACK,
            horizon: int = HORIZON) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sliding window of ``values`` (T, C), stride 1: history (N, L, C), future (N, H, C)
    with N = T - L - H + 1 (as :class:`zoo.data.series.SeriesWindows` orders them)."""
    if values.ndim != 2 or values.shape[0] < lookback + horizon:
        raise ValueError(f"need (T >= {lookback + horizon}, C) values, got {tuple(values.shape)}")
    w = values.unfold(0, lookback + horizon, 1).transpose(1, 2)            # (N, L + H, C)
    return w[:, :lookback], w[:, lookback:]


def num_windows(values: torch.Tensor) -> int:
    """How many (look-back, horizon) windows ``values`` (T, C) holds: T - L - H + 1."""
    return max(0, values.shape[0] - LOOKBACK - HORIZON + 1)


def test_mse(forecast: Callable[[torch.Tensor], torch.Tensor], history: torch.Tensor,
             future: torch.Tensor, batch_size: int = 512) -> float:
    """Mean squared error over every window, step and channel: ``forecast`` maps history
    (B, L, C) to (B, H, C); sums in float64, so batching changes nothing."""
    total = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, len(history), batch_size):
            err = forecast(history[start:start + batch_size]) - future[start:start + batch_size]
            total += err.double().square().sum()
    return (total / future.numel()).item()


def nf_forecaster(module: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A NeuralForecast ``PatchTST`` -> history (B, L, C) -> forecast (B, H, C): each channel a
    univariate window ``insample_y`` (B * C, L, 1) through its forward (see the module doc)."""
    def forecast(history: torch.Tensor) -> torch.Tensor:
        b, length, c = history.shape
        series = history.permute(0, 2, 1).reshape(b * c, length, 1)       # (B*C, L, 1)
        out = module.loss.domain_map(module({"insample_y": series}))      # (B*C, H, 1)
        return out.reshape(b, c, -1).transpose(1, 2)                      # (B, H, C)
    return forecast


def nf_frame(splits: SeriesSplits) -> pd.DataFrame:
    """The training rows in NeuralForecast's long format (``unique_id``, ``ds``, ``y``): one
    series per channel, the same standardised values zoo trains on."""
    lo, hi = splits.borders["train"]
    stamps = splits.timestamps[lo:hi] if splits.timestamps is not None else pd.RangeIndex(lo, hi)
    return pd.concat([pd.DataFrame({"unique_id": name, "ds": stamps, "y": splits.train[:, c].numpy()})
                      for c, name in enumerate(splits.columns)], ignore_index=True)


# --- the clock and the curve ------------------------------------------------------------------

@dataclass
class Point:
    seconds: float     # training wall time so far (scoring excluded)
    epochs: float      # epochs of zoo's training windows seen (NeuralForecast: equivalents)
    steps: int         # optimiser steps
    test_mse: float


@dataclass
class Curve:
    """Test MSE after every epoch (or every ``every_steps`` optimiser steps), the clock paused
    while scoring; asks the trainer to stop once ``budget_s`` seconds of training are spent."""

    score: Callable[[torch.nn.Module], float]
    steps_per_epoch: float
    every_steps: int | None = None          # None: at every epoch's end
    budget_s: float = math.inf
    points: list[Point] = field(default_factory=list)
    _start: float = 0.0
    _paused: float = 0.0

    def start(self) -> None:
        self._start, self._paused = time.perf_counter(), 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self._start - self._paused

    @contextmanager
    def paused(self) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - begin

    def record(self, trainer: Any, module: torch.nn.Module) -> None:
        seconds = self.elapsed()
        with self.paused():
            training = module.training
            module.eval()
            mse = self.score(module)
            module.train(training)
        step = int(trainer.global_step)
        self.points.append(Point(round(seconds, 2), round(step / self.steps_per_epoch, 3), step,
                                 round(mse, 5)))
        logger.info("  %7.1f s  epoch %6.2f  step %5d  test mse %.4f", seconds,
                    step / self.steps_per_epoch, step, mse)
        if seconds >= self.budget_s:
            trainer.should_stop = True


def recorder(curve: Curve, base: type) -> Any:
    """A Lightning callback (``base``: ``lightning.Callback``, or ``pytorch_lightning.Callback``
    for NeuralForecast) that starts the curve's clock and records its points."""
    class Recorder(base):  # type: ignore[misc, valid-type]
        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            if curve.every_steps and trainer.global_step % curve.every_steps == 0:
                curve.record(trainer, module)

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:   # after validation
            if not curve.every_steps:
                curve.record(trainer, module)

        def on_train_end(self, trainer: Any, module: Any) -> None:   # stopped between points
            if not curve.points or curve.points[-1].steps != trainer.global_step:
                curve.record(trainer, module)

    return Recorder()


# --- the runs ---------------------------------------------------------------------------------

def run_zoo(config: str, history: torch.Tensor, future: torch.Tensor, *,
            epochs: int | None = None, budget_s: float = math.inf,
            overrides: Sequence[str] = ()) -> dict[str, Any]:
    """zoo's recipe from ``config`` (as ``zoo train`` builds it, in a temporary run folder) for
    its ``max_epochs`` (or ``epochs``); the curve, and the test MSE of the checkpoint it
    selects (by validation MSE, as ``zoo train`` tests it)."""
    import lightning as L

    from recipes.cli import build

    with tempfile.TemporaryDirectory() as tmp:
        cli = build(["--config", str(HERE.parent / config), f"--trainer.default_root_dir={tmp}",
                     "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
                     *([f"--trainer.max_epochs={epochs}"] if epochs else []), *overrides])
        trainer, module, dm = cli.trainer, cli.model, cli.datamodule
        steps = math.ceil(len(dm.train_set) / dm.batch_size)
        curve = Curve(lambda m: test_mse(m.model, history, future), steps_per_epoch=steps,
                      budget_s=budget_s)
        trainer.callbacks.append(recorder(curve, L.Callback))
        curve.start()
        trainer.fit(module, datamodule=dm)
        total = curve.elapsed()
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks   # best.ckpt
                     if c.monitor and c.best_model_path), "")
        selected = None
        if best:
            from zoo.checkpoint import load_weights

            module.model.load_state_dict(load_weights(best)[0])   # safe: weights_only loading
            selected = round(test_mse(module.model.eval(), history, future), 5)
    return {"run": config, "train_s": round(total, 2), "points": [asdict(p) for p in curve.points],
            "selected_checkpoint": Path(best).name or None, "selected_checkpoint_mse": selected,
            "overrides": list(overrides)}


def zoo_optimisation(config: str) -> dict[str, Any]:
    """A zoo config's ``lr``, ``hold_epochs``, ``gamma`` and ``epochs`` (``max_epochs``)."""
    import yaml

    cfg = yaml.safe_load((HERE.parent / config).read_text())
    args = cfg["model"]["init_args"]
    return {"lr": args["lr"], "hold_epochs": args["hold_epochs"], "gamma": args["gamma"],
            "epochs": cfg["trainer"]["max_epochs"]}


def nf_paper_kwargs(steps_per_epoch: int, epochs: int = EPOCHS, *, lr: float = 1e-4,
                    hold_epochs: int = 3, gamma: float = 0.9) -> dict[str, Any]:
    """The paper's ETTh1 settings (zoo's ``patchtst_tiny_etth1.yaml``) as NeuralForecast
    ``PatchTST`` arguments; ``lr``, ``hold_epochs``, ``gamma`` and ``epochs`` are the
    optimisation (the paper's by default, :func:`zoo_optimisation` gives another config's).
    Its ``revin_affine`` / ``revin_subtract_last`` default to the
    opposite of the paper's; ``batch_normalization`` is pre-norm, off (post-norm BatchNorm
    as the paper); its flatten head ignores ``fc_dropout``; Adam with no weight decay is zoo's
    AdamW with ``weight_decay: 0``."""
    from neuralforecast.losses.pytorch import MSE

    return dict(h=HORIZON, input_size=LOOKBACK, patch_len=16, stride=8, hidden_size=16,
                n_heads=4, encoder_layers=3, linear_hidden_size=128, dropout=0.3,
                fc_dropout=0.3, head_dropout=0.0, attn_dropout=0.0, revin=True,
                revin_affine=False, revin_subtract_last=False, res_attention=True,
                batch_normalization=False, activation="gelu", loss=MSE(),
                learning_rate=lr, batch_size=7, windows_batch_size=7 * BATCH_WINDOWS,
                max_steps=epochs * steps_per_epoch, scaler_type="identity", random_seed=2021,
                lr_scheduler=torch.optim.lr_scheduler.LambdaLR,
                lr_scheduler_kwargs={"lr_lambda": hold_then_decay_factor(
                    steps_per_epoch=steps_per_epoch, hold_epochs=hold_epochs, gamma=gamma)})


def run_nf(splits: SeriesSplits, history: torch.Tensor, future: torch.Tensor, *,
           kwargs: dict[str, Any], budget_s: float = math.inf) -> dict[str, Any]:
    """NeuralForecast ``PatchTST(**kwargs)`` fitted on the training rows for its
    ``max_steps`` (or ``budget_s`` seconds), scored every epoch equivalent: the steps that
    draw as many windows as one zoo epoch (8,209 x 7 univariate windows)."""
    import pytorch_lightning as pl
    from neuralforecast import NeuralForecast
    from neuralforecast.models import PatchTST

    frame = nf_frame(splits)
    per_step = kwargs.get("windows_batch_size", 1024)
    train_windows = num_windows(splits.train) * len(splits.columns)
    every = max(1, round(train_windows / per_step))
    curve = Curve(lambda m: test_mse(nf_forecaster(m), history, future),
                  steps_per_epoch=train_windows / per_step, every_steps=every, budget_s=budget_s)
    model = PatchTST(**kwargs, callbacks=[recorder(curve, pl.Callback)],
                     accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False)
    nf = NeuralForecast(models=[model], freq="h")
    curve.start()
    nf.fit(df=frame, val_size=0)
    total = curve.elapsed()
    shown = {k: (type(v).__name__ if not isinstance(v, (int, float, str, bool)) else v)
             for k, v in kwargs.items() if k != "lr_scheduler_kwargs"}
    return {"run": "neuralforecast PatchTST", "kwargs": shown, "train_s": round(total, 2),
            "steps_per_epoch": round(train_windows / per_step, 2),
            "points": [asdict(p) for p in curve.points]}


def profile_step(config: str = CONFIGS["zoo"], steps: int = 5, row_limit: int = 15) -> str:
    """torch.profiler's table (self CPU time, top ``row_limit`` ops) of ``steps`` training
    steps (forward, backward, optimiser) of ``config``'s model on one random batch."""
    from torch.profiler import ProfilerActivity, profile

    from recipes.cli import build

    with tempfile.TemporaryDirectory() as tmp:
        cli = build(["--config", str(HERE.parent / config), f"--trainer.default_root_dir={tmp}"])
    module, batch_size = cli.model.train(), cli.datamodule.batch_size
    optimizer = torch.optim.AdamW(module.parameters(), lr=module.hparams.lr)
    channels = module.hparams.num_channels
    x, y = torch.randn(batch_size, LOOKBACK, channels), torch.randn(batch_size, HORIZON, channels)

    def step() -> None:
        loss = module._loss(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=row_limit)


# --- results ----------------------------------------------------------------------------------

def first_reaching(points: Sequence[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first point of a curve at or below ``target`` test MSE (None if it never gets there)."""
    return next((p for p in points if p["test_mse"] <= target + 1e-12), None)


def compare(zoo_run: dict[str, Any], nf_run: dict[str, Any], *, case: str, mode: str) -> dict[str, Any]:
    """A bench.py row: zoo's seconds to NeuralForecast's final test MSE against NeuralForecast's
    seconds to it (its first point at that MSE)."""
    import bench

    target = nf_run["points"][-1]["test_mse"]
    peer = first_reaching(nf_run["points"], target)
    ours = first_reaching(zoo_run["points"], target)
    assert peer is not None
    extra = {"target_mse": target, "peer_s": peer["seconds"], "peer_epochs": peer["epochs"],
             "zoo_s": ours and ours["seconds"], "zoo_epochs": ours and ours["epochs"],
             "zoo_final_mse": zoo_run["points"][-1]["test_mse"],
             "zoo_selected_mse": zoo_run.get("selected_checkpoint_mse"),
             "peer_total_s": nf_run["train_s"], "zoo_total_s": zoo_run["train_s"]}
    if ours is None:   # never reached: no ratio
        return {"case": case, "mode": mode, "peer": "neuralforecast", "zoo_per_s": None,
                "peer_per_s": round(1 / peer["seconds"], 6), "ratio": None,
                "time_fraction": None, **extra}
    row = bench._ratio_rows(case, mode, 1, {"zoo": ours["seconds"], "neuralforecast": peer["seconds"]},
                            time_fraction=round(ours["seconds"] / peer["seconds"], 3), **extra)[0]
    row["zoo_per_s"], row["peer_per_s"] = (round(1 / ours["seconds"], 6),
                                           round(1 / peer["seconds"], 6))
    return row


def rows(*, warmup: int = 0, rounds: int = 0, quick: bool = False,
         runs: Sequence[str] = RUNS, zoo_overrides: Sequence[str] = (),
         out: Path | None = HERE / "results") -> list[dict[str, Any]]:
    """Train every run in ``runs`` and compare each zoo run with each NeuralForecast run
    (``warmup`` / ``rounds`` are bench.py's; one training run has neither). ``quick``: one
    epoch each (and a few steps of the defaults), for a smoke test."""
    unknown = set(runs) - set(RUNS)
    if unknown:
        raise ValueError(f"unknown runs {sorted(unknown)}; choose from {RUNS}")
    torch.set_num_threads(int(os.environ.get("ZOO_BENCH_THREADS", torch.get_num_threads())))
    splits = load_splits()
    history, future = windows(splits.test)
    logger.info("ETTh1: %d training rows, %d test windows, %d threads", len(splits.train),
                len(history), torch.get_num_threads())
    done: dict[str, dict[str, Any]] = {}
    nf_steps = round(num_windows(splits.train) / BATCH_WINDOWS)   # 8,209 / 128 -> 64
    for name in runs:
        logger.info("%s:", name)
        if name in CONFIGS:
            done[name] = run_zoo(CONFIGS[name], history, future, epochs=1 if quick else None,
                                 overrides=zoo_overrides)
        elif name in NF_CONFIGS:
            optimisation = zoo_optimisation(NF_CONFIGS[name])
            if quick:
                optimisation["epochs"] = 1
            done[name] = run_nf(splits, history, future,
                                kwargs=nf_paper_kwargs(nf_steps, **optimisation))
        else:   # out of the box, for as long as the paper-settings run took (5,000 steps at most)
            budget = done["nf"]["train_s"] if "nf" in done else DEFAULTS_BUDGET_S
            kwargs: dict[str, Any] = {"h": HORIZON, "input_size": LOOKBACK}
            done[name] = run_nf(splits, history, future, budget_s=budget,
                                kwargs={**kwargs, "max_steps": 8} if quick else kwargs)
    peers = {"nf": "nf paper settings", "nf_fast": "nf with zoo_fast's optimisation",
             "nf_defaults": "nf defaults"}
    table = [compare(done[z], done[n], case="etth1_h96 time to accuracy", mode=f"{z} vs {peers[n]}")
             for z in runs if z in CONFIGS for n in runs if n in peers]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "time_to_accuracy.json").write_text(json.dumps(
            {"date": time.strftime("%Y-%m-%d"), "threads": torch.get_num_threads(),
             "torch": torch.__version__, "quick": quick, "rows": table, "runs": done},
            indent=2) + "\n")
    return table


ROWS: dict[str, Callable[..., list[dict[str, Any]]]] = {"time_to_accuracy": rows}


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one epoch each: a smoke run")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated: " + ", ".join(RUNS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--zoo-override", action="append", default=[],
                        help="a LightningCLI override for the zoo runs (repeatable), e.g. "
                        "--zoo-override=--model.init_args.lr=3e-4")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--profile", metavar="CONFIG", nargs="?", const=CONFIGS["zoo"],
                        help="instead: torch.profiler's table of 5 training steps of CONFIG "
                        f"(default {CONFIGS['zoo']})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    if args.profile:
        print(profile_step(args.profile))
        return []
    os.environ["ZOO_BENCH_THREADS"] = str(args.threads)
    table = rows(quick=args.quick, runs=[r.strip() for r in args.runs.split(",") if r.strip()],
                 zoo_overrides=args.zoo_override, out=args.out)
    print(json.dumps(table, indent=2))
    return table


if __name__ == "__main__":
    main()
