"""ETTh1 test MSE / MAE of forecasters under two protocols: every test window (zoo's, as
`zoo eval` reports), and the official PatchTST code's, whose test loader (batch 128,
``drop_last=True``) leaves out the last partial batch, which is how the paper's Table 3 was made.

    python benchmarks/etth1_protocols.py runs/*/checkpoints/best.ckpt patchtst_tiny_l336.etth1_h96

Needs ``$ZOO_DATA/ett/ETTh1.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo
from zoo.data.series import SeriesWindows, etth1_splits

PAPER_BATCH = 128


def load(spec: str) -> torch.nn.Module:
    if spec.endswith(".ckpt"):
        from recipes.export import module_from_checkpoint
        return module_from_checkpoint(spec).model
    return zoo.create_model(spec, pretrained=True)


def scores(model: torch.nn.Module) -> dict[str, float]:
    """MSE / MAE over all windows and over the first floor(N / 128) * 128 windows."""
    L, H = model.context_length, model.horizon
    windows = SeriesWindows(etth1_splits(L).test, L, H)
    n = len(windows)
    kept = n // PAPER_BATCH * PAPER_BATCH
    errors = []
    with torch.inference_mode():
        for start in range(0, n, 512):
            idx = range(start, min(start + 512, n))
            x = torch.stack([windows[i][0] for i in idx])
            y = torch.stack([windows[i][1] for i in idx])
            errors.append(model.eval()(x) - y)
    err = torch.cat(errors)                                    # (N, H, C)
    return {"windows": n, "mse": err.square().mean().item(), "mae": err.abs().mean().item(),
            "paper_windows": kept, "paper_mse": err[:kept].square().mean().item(),
            "paper_mae": err[:kept].abs().mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="recipe checkpoints (.ckpt) or weight names")
    args = parser.parse_args()
    print(f"{'model':<58} {'L':>4} {'H':>4} {'every window (N)':>26} {'last batch dropped (N)':>28}")
    for spec in args.models:
        model = load(spec)
        s = scores(model)
        print(f"{spec:<58} {model.context_length:>4} {model.horizon:>4} "
              f"{s['mse']:.4f} / {s['mae']:.4f} ({s['windows']:>4})       "
              f"{s['paper_mse']:.4f} / {s['paper_mae']:.4f} ({s['paper_windows']:>4})")


if __name__ == "__main__":
    main()
