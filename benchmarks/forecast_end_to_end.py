"""End to end: a long-format CSV of 1,000 hourly series -> 96-step forecasts in memory.

    python benchmarks/forecast_end_to_end.py                  # both rows, about 4 minutes on 2 cores
    python benchmarks/forecast_end_to_end.py --series 200 --rounds 2

The table (``unique_id, ds, y``; 600-1,000 hourly points per series, starts spread over 400
hours; daily and weekly seasons, a trend and noise; rows in file order) is written to a CSV in a
temporary folder; every contender's time runs from that file on disk to its forecasts of every
series in memory. A univariate PatchTST (hidden 128, 16 heads, 3 layers, MLP 256, context 336,
patches of 16 every 8 steps, RevIN) forecasts 96 steps, with the same weights on both sides:

- zoo vs transformers: what ``zoo forecast --long`` runs (``pandas.read_csv`` with string ids,
  :func:`zoo.forecasting.forecast_long`, batches of 64) against the code a user of
  ``PatchTSTForPrediction`` writes (``read_csv``, sort, ``groupby(...).tail(336)`` into one
  array, batches of 64, an output frame with future timestamps); zoo's PatchTST configured
  as transformers' (no patch padding, sin-cos positions, pre-norm), weights through
  :mod:`zoo.convert.hf_patchtst`.
- zoo vs NeuralForecast 3.3: ``NeuralForecast(models=[PatchTST(h=96, input_size=336)],
  freq="h")`` fitted for one step (so it can predict; not timed), then ``read_csv`` and
  ``nf.predict(df=...)``; zoo's PatchTST configured as NeuralForecast's (end padding, residual
  attention, post-norm BatchNorm, RevIN subtracting the last value), weights through
  :mod:`zoo.convert.nf_patchtst`.

Before timing, every forecast is checked against the peer's (``max_abs_diff`` over all series
and steps, with ids and timestamps required to match). ``ratio`` is zoo's throughput (series per
second) over the peer's; ``rss_peak_mib`` is the process's peak resident memory after the row
(all contenders together; a coarse figure).
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zoo.convert.hf_patchtst import convert_hf_patchtst, patchtst_args_from_hf_config
from zoo.convert.nf_patchtst import convert_nf_patchtst, patchtst_args_from_nf
from zoo.forecasting import forecast_long
from zoo.models.patchtst import PatchTST

CONTEXT, HORIZON, BATCH = 336, 96, 64
# NeuralForecast's PatchTST defaults, used on both sides of both rows
SIZES = dict(hidden=128, heads=16, layers=3, mlp=256, patch_len=16, stride=8)


def write_table(folder: Path, series: int = 1000, seed: int = 0) -> Path:
    """A long CSV (unique_id, ds, y) of ``series`` hourly series of 600-1,000 points."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(600, 1001, series)
    starts = np.datetime64("2024-01-01T00", "h") + rng.integers(0, 400, series)
    step = np.concatenate([np.arange(n) for n in lengths])
    t = step.astype(np.float64)

    def per_row(v: np.ndarray) -> np.ndarray:
        return np.repeat(v, lengths)

    level, amp = per_row(rng.uniform(10, 100, series)), per_row(rng.uniform(1, 10, series))
    y = (level + 0.01 * t + amp * np.sin(2 * np.pi * t / 24)
         + 0.5 * amp * np.sin(2 * np.pi * t / 168) + rng.normal(0, 1, len(t)))
    df = pd.DataFrame({"unique_id": per_row(np.array([f"s{i:04d}" for i in range(series)])),
                       "ds": per_row(starts) + step.astype("timedelta64[h]"), "y": y.round(4)})
    path = folder / "long.csv"
    df.to_csv(path, index=False)
    return path


def _max_abs_diff(ours: pd.DataFrame, peer: pd.DataFrame, column: str, peer_column: str) -> float:
    """Largest |difference| of the point forecasts; ids and timestamps must agree row by row."""
    peer = peer.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    if not (ours["unique_id"].astype(str).to_numpy() == peer["unique_id"].astype(str).to_numpy()).all() \
            or not (pd.to_datetime(ours["ds"]).to_numpy() == pd.to_datetime(peer["ds"]).to_numpy()).all():
        raise AssertionError("zoo's and the peer's forecasts name different series or times")
    return float(np.abs(ours[column].to_numpy() - peer[peer_column].to_numpy()).max())


# --- contenders ---------------------------------------------------------------------------------

def zoo_forecast(model: PatchTST, path: Path) -> pd.DataFrame:
    """What ``zoo forecast MODEL long.csv --long`` does before writing its CSV."""
    frame = pd.read_csv(path, dtype={"unique_id": str})
    return forecast_long(model, frame, HORIZON, alias="zoo", batch_size=BATCH)


def hf_forecast(model: torch.nn.Module, path: Path) -> pd.DataFrame:
    """A transformers user's code: the last 336 values of every series, batched."""
    df = pd.read_csv(path, parse_dates=["ds"]).sort_values(["unique_id", "ds"])
    tail = df.groupby("unique_id", sort=True).tail(CONTEXT)
    ids = tail["unique_id"].to_numpy()[::CONTEXT]
    past = torch.tensor(tail["y"].to_numpy(np.float32).reshape(-1, CONTEXT, 1))
    with torch.inference_mode():
        out = torch.cat([model(past_values=past[i:i + BATCH]).prediction_outputs
                         for i in range(0, len(past), BATCH)])                 # (S, H, 1)
    last = tail["ds"].to_numpy()[CONTEXT - 1::CONTEXT]
    ds = last[:, None] + np.arange(1, HORIZON + 1).astype("timedelta64[h]")
    return pd.DataFrame({"unique_id": np.repeat(ids, HORIZON), "ds": ds.ravel(),
                         "PatchTST": out[..., 0].numpy().ravel()})


def _quiet() -> None:
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric",
                 "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def hf_pair() -> tuple[torch.nn.Module, PatchTST]:
    """transformers' ``PatchTSTForPrediction`` (random weights) and zoo's copy of it."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.PatchTSTConfig(
        num_input_channels=1, context_length=CONTEXT, prediction_length=HORIZON,
        patch_length=SIZES["patch_len"], patch_stride=SIZES["stride"], d_model=SIZES["hidden"],
        num_attention_heads=SIZES["heads"], num_hidden_layers=SIZES["layers"],
        ffn_dim=SIZES["mlp"], scaling="std", do_mask_input=False)
    peer = transformers.PatchTSTForPrediction(cfg).eval()
    ours = PatchTST(**patchtst_args_from_hf_config(cfg.to_dict())).eval()
    ours.load_state_dict(convert_hf_patchtst(peer.state_dict()))
    return peer, ours


def nf_pair(path: Path) -> tuple[Any, PatchTST]:
    """NeuralForecast's PatchTST fitted one step on the table, and zoo's copy of it."""
    from neuralforecast import NeuralForecast
    from neuralforecast.models import PatchTST as NFPatchTST

    _quiet()
    model = NFPatchTST(h=HORIZON, input_size=CONTEXT, hidden_size=SIZES["hidden"],
                       n_heads=SIZES["heads"], encoder_layers=SIZES["layers"],
                       linear_hidden_size=SIZES["mlp"], patch_len=SIZES["patch_len"],
                       stride=SIZES["stride"], max_steps=1, batch_size=BATCH,
                       accelerator="cpu", logger=False, enable_progress_bar=False,
                       enable_model_summary=False)
    nf = NeuralForecast(models=[model], freq="h")
    nf.fit(df=pd.read_csv(path, parse_dates=["ds"]))
    fitted = nf.models[0]
    ours = PatchTST(**patchtst_args_from_nf(fitted.hparams)).eval()
    ours.load_state_dict(convert_nf_patchtst(fitted.state_dict()))
    return nf, ours


def nf_forecast(nf: Any, path: Path) -> pd.DataFrame:
    return nf.predict(df=pd.read_csv(path, parse_dates=["ds"]))


# --- rows ---------------------------------------------------------------------------------------

def _row(name: str, peer: str, path: Path, fns: dict[str, Callable[[], pd.DataFrame]],
         peer_column: str, series: int, *, warmup: int, rounds: int) -> list[dict[str, Any]]:
    import bench

    diff = _max_abs_diff(fns["zoo"](), fns[peer](), "zoo", peer_column)
    seconds = bench.interleaved(fns, warmup=warmup, rounds=rounds, budget_s=0.0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return bench._ratio_rows(name, "csv->forecast", series, seconds, max_abs_diff=diff,
                             zoo_s=round(seconds["zoo"], 3), peer_s=round(seconds[peer], 3),
                             rss_peak_mib=round(rss), threads=torch.get_num_threads())


def forecast_rows(*, warmup: int = 1, rounds: int = 3, series: int = 1000,
                  peers: tuple[str, ...] = ("transformers", "neuralforecast")
                  ) -> list[dict[str, Any]]:
    """One row per peer: seconds from the CSV to forecasts of ``series`` series (medians of
    ``rounds`` interleaved rounds after ``warmup``), outputs checked equal first."""
    rows: list[dict[str, Any]] = []
    name = f"long CSV {series} series x {HORIZON} steps, PatchTST L{CONTEXT}"
    with tempfile.TemporaryDirectory() as folder:
        path = write_table(Path(folder), series)
        if "transformers" in peers:
            hf, ours = hf_pair()
            rows += _row(name, "transformers", path,
                         {"zoo": lambda: zoo_forecast(ours, path),
                          "transformers": lambda: hf_forecast(hf, path)},
                         "PatchTST", series, warmup=warmup, rounds=rounds)
        if "neuralforecast" in peers:
            nf, ours_nf = nf_pair(path)
            rows += _row(name, "neuralforecast", path,
                         {"zoo": lambda: zoo_forecast(ours_nf, path),
                          "neuralforecast": lambda: nf_forecast(nf, path)},
                         "PatchTST", series, warmup=warmup, rounds=rounds)
    return rows


ROWS: dict[str, Callable[..., list[dict[str, Any]]]] = {"e2e_forecast": forecast_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peers", default="transformers,neuralforecast")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in forecast_rows(warmup=args.warmup, rounds=args.rounds, series=args.series,
                             peers=tuple(args.peers.split(","))):
        print(row)


if __name__ == "__main__":
    main()
