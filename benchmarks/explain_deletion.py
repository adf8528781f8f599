"""Faithfulness of zoo's explanations, measured by deletion: remove the patches an explanation
ranks most relevant and see how much the output moves, against removing random patches.

For each test input, the top ``fraction`` of patches by relevance (per channel for a forecaster)
are replaced by the input's mean (:func:`zoo.explanations.delete_patches`):

- classifiers (the bundled digits ViT on the 360 test digits, the bundled FSDD AST on the 300
  test clips): the drop in the probability of the class predicted on the intact input;
- the ETTh1 forecaster: the increase of the test MSE (scaled units), on every ``--stride``-th
  test window.

``random`` deletes a random ``fraction`` of patches (the mean of ``--random-draws`` draws);
for the forecaster, ``latest patches`` deletes each channel's most recent ones (recency).
A faithful explanation moves the output much more than random deletion: the ratio column.

    python benchmarks/explain_deletion.py                 # the README's table (~1 min, 2 cores)
    python benchmarks/explain_deletion.py --fractions 0.1 0.25 0.5

Needs ``$ZOO_DATA`` with ``fsdd/recordings`` and ``ett/ETTh1.csv`` (see zoo.data).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo
from zoo.data.audio import FSDD_SAMPLE_RATE, fsdd_items, fsdd_root, load_clips
from zoo.data.images import DigitsDataset
from zoo.data.series import SeriesWindows, etth1_splits
from zoo.explanations import METHODS, delete_patches, explain, model_input

BATCH = 64


def digits_inputs(model: torch.nn.Module) -> torch.Tensor:
    pre = model.pretrained_cfg.preprocess
    return DigitsDataset("test", img_size=pre["input_size"][-1], mean=pre["mean"],
                         std=pre["std"]).images


def fsdd_inputs(model: torch.nn.Module) -> torch.Tensor:
    paths = [path for path, _ in fsdd_items(fsdd_root(), "test")]
    waves, _ = load_clips(paths, sample_rate=FSDD_SAMPLE_RATE)
    lengths = torch.tensor([w.numel() for w in waves])
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    return model.filterbank(padded, lengths=lengths)                 # (300, T, F)


def etth1_inputs(model: torch.nn.Module, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    windows = SeriesWindows(etth1_splits(model.context_length).test, model.context_length,
                            model.horizon)
    items = [windows[i] for i in range(0, len(windows), stride)]
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


def top_patches(relevance: torch.Tensor, fraction: float, per_row: bool) -> torch.Tensor:
    """Bool (B, *grid): the top ``fraction`` of each sample's patches (each channel's for a
    forecaster, ``per_row``)."""
    flat = relevance.flatten(2 if per_row else 1)
    k = max(1, round(fraction * flat.shape[-1]))
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen.scatter_(-1, flat.topk(k, dim=-1).indices, True)
    return chosen.reshape(relevance.shape)


def random_patches(shape: torch.Size, fraction: float, per_row: bool,
                   generator: torch.Generator) -> torch.Tensor:
    return top_patches(torch.rand(shape, generator=generator), fraction, per_row)


def _batches(n: int):
    return [slice(i, min(i + BATCH, n)) for i in range(0, n, BATCH)]


def classifier_drop(model, x: torch.Tensor, chooser) -> float:
    """Mean drop of the predicted class's probability when ``chooser(batch)`` patches go."""
    drops = []
    for part in _batches(len(x)):
        xb = x[part]
        with torch.inference_mode():
            probs = model(xb).softmax(-1)
        predicted = probs.argmax(-1, keepdim=True)
        deleted = delete_patches(model, xb, chooser(xb))
        with torch.inference_mode():
            after = model(deleted).softmax(-1)
        drops.append((probs.gather(1, predicted) - after.gather(1, predicted))[:, 0])
    return torch.cat(drops).mean().item()


def forecaster_increase(model, x: torch.Tensor, y: torch.Tensor, chooser) -> float:
    """Test-MSE increase when ``chooser(batch)`` patches of every channel go."""
    before, after = [], []
    for part in _batches(len(x)):
        xb, yb = x[part], y[part]
        with torch.inference_mode():
            before.append((model(xb) - yb).square().mean(dim=(1, 2)))
        deleted = delete_patches(model, xb, chooser(xb))
        with torch.inference_mode():
            after.append((model(deleted) - yb).square().mean(dim=(1, 2)))
    return (torch.cat(after).mean() - torch.cat(before).mean()).item()


def measure(name: str, model, x: torch.Tensor, y, fractions, draws: int) -> list[dict]:
    per_row = y is not None   # forecasters: a quarter of each channel's patches
    rows = []
    for fraction in fractions:
        def score(chooser) -> float:
            return forecaster_increase(model, x, y, chooser) if per_row \
                else classifier_drop(model, x, chooser)

        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        grid = tuple(axis.count for axis in model.front_end.patch_axes(tuple(x.shape)))
        # the lambdas below are called at once, inside this iteration: late binding is harmless
        random = sum(score(lambda xb: random_patches((len(xb), *grid), fraction, per_row, gen))  # noqa: B023
                     for _ in range(draws)) / draws
        rows.append(dict(model=name, fraction=fraction, method="random", effect=random,
                         ratio=1.0, seconds=time.perf_counter() - start))
        if per_row:   # the recency baseline: the latest patches of each channel
            start = time.perf_counter()
            latest = torch.arange(grid[-1]).expand(grid).float()
            effect = score(lambda xb: top_patches(latest.expand(len(xb), *grid), fraction, True))  # noqa: B023
            rows.append(dict(model=name, fraction=fraction, method="latest patches",
                             effect=effect, ratio=effect / random if random > 0 else float("nan"),
                             seconds=time.perf_counter() - start))
        for method in METHODS:
            start = time.perf_counter()
            effect = score(lambda xb: top_patches(explain(model, xb, method=method), fraction,  # noqa: B023
                                                  per_row))
            rows.append(dict(model=name, fraction=fraction, method=method, effect=effect,
                             ratio=effect / random if random > 0 else float("nan"),
                             seconds=time.perf_counter() - start))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25])
    parser.add_argument("--random-draws", type=int, default=5)
    parser.add_argument("--stride", type=int, default=8, help="every N-th ETTh1 test window")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    digits = zoo.create_model("vit_nano_patch4_16.digits", pretrained=True).eval()
    rows += measure("vit_nano_patch4_16.digits (360 test digits, prob. drop)", digits,
                    digits_inputs(digits), None, args.fractions, args.random_draws)
    fsdd = zoo.create_model("ast_tiny_d6_8k.fsdd", pretrained=True).eval()
    rows += measure("ast_tiny_d6_8k.fsdd (300 test clips, prob. drop)", fsdd,
                    model_input(fsdd, fsdd_inputs(fsdd)), None, args.fractions,
                    args.random_draws)
    etth1 = zoo.create_model("patchtst_tiny_l336.etth1_h96", pretrained=True).eval()
    x, y = etth1_inputs(etth1, args.stride)
    rows += measure(f"patchtst_tiny_l336.etth1_h96 ({len(x)} test windows, MSE increase)", etth1,
                    x, y, args.fractions, args.random_draws)
    print("| model | deleted | method | effect | vs random | time (s) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['fraction']:.0%} | {r['method']} | {r['effect']:.4f} | "
              f"{r['ratio']:.2f}x | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
