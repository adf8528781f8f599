"""Zero-shot forecasting: MASE of a forecaster on real series it never saw, against seasonal naive.

Protocol (see :mod:`zoo.data.benchmark_series` for the series, their seasons, horizons and
windows): each series' last windows of its horizon, non-overlapping, the latest ending at its
last point, each forecast from every row before it (cropped to the model's context_length;
windows with fewer than its min_context rows before them are left out and named). Per window,
MASE of the model and of the seasonal-naive forecast, both scaled by the in-sample seasonal
error of that window's history; per series the means over windows and their ratio; the
headline is the geometric mean of the ratios over series (1.0: as good as seasonal naive;
the project's target is <= 0.85). A model with quantiles also gets the mean weighted quantile
loss and the 80% interval coverage. Series are univariate: a history is (B, L, 1).

    python benchmarks/zero_shot.py MODEL                     # a registered name or a folder
    python benchmarks/zero_shot.py --baseline seasonal_naive # ratio exactly 1.0: a sanity check
    python benchmarks/zero_shot.py --baseline naive --series etth1,co2 --windows 4
    python benchmarks/zero_shot.py MODEL --card model_cards/NAME.md --json zero_shot.json

MODEL: a registered name with weights (``zoo.create_model(name, pretrained=True)``), a package
folder (``zoo.load``) or a recipe checkpoint (``.ckpt``). Needs ``statsmodels`` and
``$ZOO_DATA/ett/ETTh1.csv`` (or ``--skip-missing``). Seasonal naive over all 30 series: ~2 s on
2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo
from zoo.data.benchmark_series import (
    BASELINES,
    Baseline,
    ZeroShotResult,
    benchmark_series,
    evaluate_zero_shot,
)

TARGET_RATIO = 0.85   # the project's goal for the geometric mean of MASE ratios
CARD_HEADING = "## Zero-shot evaluation"
CARD_BEGIN = "<!-- zero-shot evaluation: begin (written by benchmarks/zero_shot.py) -->"
CARD_END = "<!-- zero-shot evaluation: end -->"


def load_model(spec: str, device: str = "cpu") -> torch.nn.Module:
    """A registered name with weights, a package folder or a recipe checkpoint (.ckpt)."""
    if spec.endswith(".ckpt"):
        # recipes need Lightning (zoo[train]): imported only for a checkpoint
        from recipes.export import module_from_checkpoint
        model = module_from_checkpoint(spec).model
    elif Path(spec).is_dir():
        model = zoo.load(spec)
    else:
        model = zoo.create_model(spec, pretrained=True)
    return model.to(device).eval()


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(result: ZeroShotResult) -> str:
    """A markdown table, one row per series."""
    head = ["series", "freq", "history", "horizon", "windows", "MASE", "MASE seasonal naive",
            "ratio", "WQL", "coverage 80%"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [f"| {s.name} | {s.freq} | {s.history} | {s.horizon} | {s.windows} | "
              f"{_fmt(s.mase)} | {_fmt(s.mase_naive)} | {_fmt(s.ratio)} | {_fmt(s.wql, 4)} | "
              f"{_fmt(s.coverage, 2)} |" for s in result.scores]
    return "\n".join(lines)


def summary(result: ZeroShotResult, *, console: bool = True) -> str:
    """The geometric-mean line, the arithmetic means and what was left out; on the console
    also the project's target and the wall time (a card keeps only what a rerun reproduces)."""
    d = result.to_dict()
    if not result.scores:
        return "no series scored; left out: " + ", ".join(
            f"{k} ({v})" for k, v in result.skipped.items())
    scored, total = len(result.scores), len(result.scores) + len(result.skipped)
    text = (f"geometric mean of MASE(model) / MASE(seasonal naive) over {scored} "
            + (f"of {total} " if scored < total else "")
            + f"series: {d['geomean_ratio']:.3f}"
            + (f" (target <= {TARGET_RATIO})" if console else "") + "; arithmetic means: "
            f"ratio {d['mean_ratio']:.3f}, MASE {d['mean_mase']:.3f}, seasonal naive "
            f"{d['mean_mase_naive']:.3f}")
    if d["mean_wql"] is not None:
        text += (f"; WQL {d['mean_wql']:.4f} (geometric mean relative to seasonal naive "
                 f"{d['geomean_wql_ratio']:.3f})")
    if d["mean_coverage"] is not None:
        text += f"; 80% coverage {d['mean_coverage']:.2f}"
    if result.skipped:
        text += "; left out: " + ", ".join(f"{k} ({v})" for k, v in result.skipped.items())
    return text + (f" ({result.seconds:.1f} s)" if console else "")


def card_section(result: ZeroShotResult, command: str) -> str:
    """The model card's section: the protocol in a sentence, the table, the summary, the command."""
    intro = ("MASE on real series the model never saw (zero-shot), against the seasonal-naive "
             "forecast scaled by the same in-sample seasonal error; each series' last "
             "non-overlapping windows of its horizon, each forecast from everything before it "
             "(series, seasons, horizons and windows: `zoo/data/benchmark_series.py`), by "
             "`benchmarks/zero_shot.py`:")
    return "\n".join([CARD_HEADING, "", intro, "", table(result), "",
                      summary(result, console=False), "",
                      "```bash", command, "```"])


def write_card_section(card: Path, section: str) -> None:
    """Put ``section`` between the zero-shot markers of ``card``, replacing what is there (or
    an unmarked ``## Zero-shot evaluation`` section); a new one goes before ``## Reproduce``,
    else at the end. Written atomically: a reader never sees half a card."""
    text = card.read_text()
    block = f"{CARD_BEGIN}\n{section.rstrip()}\n{CARD_END}\n"
    if CARD_BEGIN in text and CARD_END in text:
        start = text.index(CARD_BEGIN)
        stop = text.index(CARD_END, start) + len(CARD_END)
        text = text[:start] + block + text[stop:].removeprefix("\n")
    elif CARD_HEADING in text:
        start = text.index(CARD_HEADING)
        stop = text.find("\n## ", start + len(CARD_HEADING))
        text = text[:start] + block + ("" if stop < 0 else "\n" + text[stop + 1:])
    elif "## Reproduce" in text:
        at = text.index("## Reproduce")
        text = text[:at] + block + "\n" + text[at:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    fd, tmp = tempfile.mkstemp(dir=card.parent, prefix=f".{card.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, card)
    finally:
        Path(tmp).unlink(missing_ok=True)


def command_line(argv: Sequence[str]) -> str:
    """The command that reproduces a run, without its output options (--card, --json)."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--card", "--json"):
            skip = True
        elif not arg.startswith(("--card=", "--json=")):
            args.append(arg)
    return " ".join(["python benchmarks/zero_shot.py", *args])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="registered name with weights, package folder "
                        "or .ckpt (or use --baseline)")
    parser.add_argument("--baseline", choices=BASELINES, help="score a simple baseline instead "
                        "(seasonal_naive gives a ratio of exactly 1.0)")
    parser.add_argument("--windows", type=int, help="windows per series (default: each "
                        "series' own, the last 20%% of it)")
    parser.add_argument("--series", help="comma-separated series or group names (default: all)")
    parser.add_argument("--root", help="data root holding ett/ETTh1.csv (default: $ZOO_DATA)")
    parser.add_argument("--skip-missing", action="store_true", help="leave out series whose "
                        "data are not there (no statsmodels, no ETTh1) instead of failing")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--card", type=Path, help="also write the table into this model card "
                        f"(a '{CARD_HEADING}' section between markers, replaced on every run)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    args = parser.parse_args(argv)
    if (args.model is None) == (args.baseline is None):
        parser.error("give either MODEL or --baseline")
    names = [n.strip() for n in args.series.split(",") if n.strip()] if args.series else None
    series = benchmark_series(names, root=args.root, skip_missing=args.skip_missing)
    model: Callable[..., torch.Tensor] = (Baseline(args.baseline) if args.baseline
                                          else load_model(args.model, args.device))
    result = evaluate_zero_shot(model, series, windows=args.windows, batch_size=args.batch_size)
    label = f"baseline {args.baseline}" if args.baseline else args.model
    print(f"{label}: zero-shot MASE on {len(series)} real series")
    print(table(result))
    print(summary(result))
    if args.json is not None:
        args.json.write_text(json.dumps({"model": label, **result.to_dict()}, indent=2) + "\n")
    if args.card is not None:
        argv = list(argv if argv is not None else sys.argv[1:])
        write_card_section(args.card, card_section(result, command_line(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
