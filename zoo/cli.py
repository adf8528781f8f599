"""The ``zoo`` command: list, info, train, eval, finetune, predict, transcribe, forecast,
explain, export,
and LightningCLI's fit, validate and test (``zoo fit --config CFG --trainer.max_epochs=3``).

Training commands import the Lightning recipes lazily, so ``zoo list`` / ``zoo info`` stay fast
and the library itself never imports Lightning.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import zoo
from zoo.models.base import Classifier as ZooClassifier
from zoo.models.base import Forecaster as ZooForecaster
from zoo.models.base import TokenModel, require_pretrained_cfg
from zoo.precision import PRECISIONS
from zoo.registry import get_entry

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger("zoo")


def _table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def cmd_list(args: argparse.Namespace) -> int:
    names = zoo.list_models(args.pattern, modality=args.modality, pretrained=args.pretrained)
    print("\n".join(names) if names else f"no models match {args.pattern!r}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    entry, tag = get_entry(args.name)
    with torch.device("meta"):
        model = zoo.create_model(entry.name)
    params = sum(p.numel() for p in model.parameters())
    rows = [("name", entry.name), ("modality", entry.modality), ("params", f"{params / 1e6:.2f} M"),
            ("arguments", ", ".join(f"{k}={v}" for k, v in entry.args.items()))]
    cfg = entry.cfg(tag)
    rows += [(f"input {k}", str(v)) for k, v in cfg.preprocess.items()]
    if not entry.weights:
        rows.append(("weights", "none registered (train one with `zoo train`)"))
    for w in entry.weights:
        source = (w.file and f"bundled ({w.file})") or (w.hf_hub_id and f"hf-hub:{w.hf_hub_id}") or w.url
        default = " (default)" if w is entry.weights[0] else ""
        if entry.modality == "series":
            what = ("  columns", ", ".join(w.labels or ()) or "any")
        elif entry.modality == "speech":
            what = ("  vocabulary", " ".join(map(str, entry.args.get("tokens", ()))))
        else:
            kind = "features only" if w.num_classes == 0 else \
                w.labels if isinstance(w.labels, str) else "custom"
            what = ("  classes", f"{w.num_classes} ({kind})")
        rows += [(f"weights {w.tag}{default}", source or "-"), what,
                 ("  license", w.license or "not stated"), ("  sha256", w.sha256 or "not pinned")]
        rows += [(f"  {k}", str(v)) for k, v in w.metrics.items()]
    print(_table(rows))
    return 0


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum`` (argparse names the flag in its error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


def _output_file(path: str | Path, inputs: Sequence[str | Path], flag: str) -> Path:
    """An output file path that is not a folder and is none of the inputs (never replaced)."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{flag} {out} is a folder; give a file name, e.g. {out / 'result.csv'}")
    for item in map(Path, inputs):
        if out.resolve() == item.resolve():
            raise ValueError(f"{flag} {out} is the input {item}; zoo never writes over its "
                             "inputs: choose another file")
    return out


# Python argument spellings in library errors, as each command spells them
_COLUMN_TERMS = (("time_column=None", "--time-column none"), ("time_column=<name>", "--time-column NAME"),
                 ("target_columns=[...]", "--columns A,B"), ("target_columns=...", "--columns A,B"))
_FORECAST_TERMS = (*_COLUMN_TERMS, ("irregular='reindex'", "--irregular reindex"),
                   ("missing='interpolate'", "--missing interpolate"),
                   ("missing='keep'", "--missing keep"),
                   ("the missing= policy", "--missing"), ("on_error='skip'", "--on-error skip"),
                   ("horizon=", "--horizon "),
                   ("id_col=, time_col=, target_col=", "--id-column, --time-column, --target-column"))
CLI_TERMS = {
    "forecast": _FORECAST_TERMS,
    "explain": _FORECAST_TERMS,
    "finetune": (*_COLUMN_TERMS, ("irregular='reindex'", "--data.irregular=reindex"),
                 ("missing='interpolate'", "--data.missing=interpolate"),
                 ("the missing= policy", "--data.missing"), ("on_error='skip'", "--data.on_error=skip")),
}


def in_cli_terms(message: str, command: str) -> str:
    """``message`` with the library's argument spellings replaced by ``command``'s flags."""
    for python, cli in CLI_TERMS.get(command, ()):
        message = message.replace(python, cli)
    return message


def _print_result(result: dict) -> None:
    print(json.dumps(result, indent=2))


def cmd_train(args: argparse.Namespace) -> int:
    from recipes.train import train

    resume = args.resume_from or args.resume
    _print_result(train(["--config", args.config, *args.overrides],
                        command=" ".join(["zoo", "train", args.config, *args.overrides]),
                        resume=resume, overwrite=args.overwrite))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from recipes.train import evaluate

    _print_result(evaluate(["--config", args.config, *args.overrides], args.ckpt))
    return 0


# The LightningCLI classes `zoo finetune` picks by the model's modality
FINETUNE_CLASSES = {"image": ("recipes.classification.Classifier", "recipes.image.ImageDataModule",
                              "imagefolder"),
                    "audio": ("recipes.classification.Classifier", "recipes.audio.AudioDataModule",
                              "audiofolder"),
                    "series": ("recipes.forecasting.Forecaster", "recipes.series.SeriesDataModule",
                               "csv")}


FINETUNE_LOOKBACK = 512   # the longest look-back `zoo finetune` gives a long-context model


def finetune_arguments(args: argparse.Namespace) -> list[str]:
    """`zoo finetune NAME --data DIR ...` as LightningCLI arguments (the user's own
    ``--key=value`` overrides come after them, so they win)."""
    entry, _ = get_entry(args.name)  # fail fast on a bad name
    if entry.modality not in FINETUNE_CLASSES:
        raise ValueError(f"{args.name} is a {entry.modality} model; `zoo finetune` takes folders "
                         "of classes or a CSV. Train a speech recogniser from a config: zoo train "
                         "configs/audio/ctc_tiny_d4_digits.yaml (connected digits)")
    data = Path(args.data)
    series = entry.modality == "series"
    if series and not data.is_file():
        raise FileNotFoundError(f"--data {data} is not a file (expected a CSV for a forecaster)")
    if not series and not data.is_dir():
        raise FileNotFoundError(f"--data {data} is not a directory (expected one sub-folder per class)")
    if args.img_size and entry.modality != "image":
        raise ValueError("--img-size applies to image models only")
    if not series and (args.horizon or args.columns):
        raise ValueError("--horizon and --columns apply to forecasters only")
    if series and args.mode != "full":
        raise ValueError("forecasters fine-tune in --mode full only")
    model_class, data_class, dataset = FINETUNE_CLASSES[entry.modality]
    pretrained = "false" if args.no_pretrained else (args.pretrained or "true")
    out = [] if args.config else [f"--model={model_class}", f"--data={data_class}"]
    out += [f"--model.model_name={args.name}", f"--model.pretrained={pretrained}",
            f"--model.lr={args.lr}", f"--model.warmup_epochs={args.warmup_epochs}",
            f"--model.weight_decay={args.weight_decay}",
            f"--data.dataset={dataset}", f"--data.root={data}",
            f"--data.batch_size={args.batch_size}", f"--data.num_workers={args.num_workers}",
            f"--trainer.max_epochs={args.epochs}",
            f"--trainer.default_root_dir={args.output or f'runs/finetune_{args.name}'}"]
    if series:
        # a model that decodes any horizon (TimesFM) keeps its own and trains on the data's
        # (look-back: its context, at most FINETUNE_LOOKBACK rows)
        any_horizon = getattr(entry.builder, "any_horizon", False)
        if any_horizon:
            context = int(entry.args.get("context_length", FINETUNE_LOOKBACK))
            out.append(f"--data.lookback={min(context, FINETUNE_LOOKBACK)}")
        if args.horizon:
            out.append(f"--data.horizon={args.horizon}" if any_horizon
                       else f"--model.model_kwargs.horizon={args.horizon}")
        if args.columns:
            out.append(f"--data.target_columns={json.dumps(_split_columns(args.columns))}")
        out.append(f"--data.time_column={'null' if args.time_column == 'none' else args.time_column}")
    else:
        out += [f"--model.finetune_mode={args.mode}",
                f"--model.trainable_blocks={args.trainable_blocks}"]
        if args.layer_decay is not None:
            out.append(f"--model.layer_decay={args.layer_decay}")
        if args.img_size:   # the model's input size; the data follows the model
            out.append(f"--model.model_kwargs.img_size={args.img_size}")
    return (["--config", args.config] if args.config else []) + out + list(args.overrides)


def cmd_finetune(args: argparse.Namespace) -> int:
    from recipes.train import train

    command = " ".join(["zoo", "finetune", *sys.argv[2:]]) if sys.argv[1:2] == ["finetune"] else None
    _print_result(train(finetune_arguments(args), command=command, overwrite=args.overwrite))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from recipes.export import export

    options = dict(fmt=args.format, quantize=args.quantize)
    if args.source.endswith(".ckpt"):
        options.update(evaluate=not args.no_eval, tag=args.tag, config=args.config,
                       half=args.half)
    elif args.no_eval or args.tag or args.config or args.half:
        raise ValueError("--no-eval, --tag, --config and --half apply to recipe checkpoints "
                         "(.ckpt) only")
    _print_result(export(args.source, args.out_dir, **options))
    return 0


def _load_for_predict(spec: str, pretrained: str | None) -> TokenModel:
    path = Path(spec)
    if path.suffix == ".ckpt":
        from recipes.export import module_from_checkpoint

        return module_from_checkpoint(path).model
    if path.is_dir():
        return zoo.load(path)
    return zoo.create_model(spec, pretrained=pretrained or True)


def cmd_predict(args: argparse.Namespace) -> int:
    from zoo.predict import collect_inputs, predict_files, write_predictions

    if args.output:
        _output_file(args.output, args.inputs, "--output")
    model = _load_for_predict(args.model, args.pretrained).eval()
    if not isinstance(model, ZooClassifier):
        raise ValueError(f"{args.model} is a forecaster: use `zoo forecast {args.model} DATA.csv`")
    paths = collect_inputs(args.inputs, model)
    rows = predict_files(model, paths, batch_size=args.batch_size, top_k=args.top_k,
                         on_error=args.on_error, progress=args.output is not None,
                         num_workers=args.workers, precision=args.precision)
    if args.output:
        write_predictions(rows, args.output)
        skipped = sum(1 for r in rows if r.get("error"))
        print(f"{len(rows) - skipped} predictions -> {args.output}"
              + (f" ({skipped} unreadable files skipped, see its error column)" if skipped else ""))
        return 0
    for row in rows:
        print(row["path"])
        if row.get("error"):
            print(f"  error: {row['error']}")
        if row.get("window"):
            (a, b), duration = row["window"], row["duration"]
            print(f"  (the most confident window, {a:.2f}-{b:.2f} s of {duration:.2f} s)")
        for label, p in row.get("top_k") or []:
            print(f"  {label:<30} {100 * p:6.2f}%")
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from zoo.models.ctc import CTCModel
    from zoo.predict import collect_inputs, transcribe_files, write_transcripts

    if args.output:
        output = _output_file(args.output, args.inputs, "--output")
        if output.exists():
            raise ValueError(f"--output {output} exists; zoo never writes over a file: choose "
                             "another name")
    model = _load_for_predict(args.model, args.pretrained).eval()
    if not isinstance(model, CTCModel):
        raise ValueError(f"{args.model} does not recognise speech; `zoo list --modality speech` "
                         "shows the models that do")
    paths = collect_inputs(args.inputs, model)
    rows = transcribe_files(model, paths, beam_width=args.beam_width, timestamps=args.timestamps,
                            batch_size=args.batch_size, on_error=args.on_error,
                            progress=args.output is not None or len(paths) > 1)
    if args.output:
        write_transcripts(rows, args.output)
        skipped = sum(1 for r in rows if r.get("error"))
        print(f"{len(rows) - skipped} transcripts -> {args.output}"
              + (f" ({skipped} unreadable files skipped, see its error column)" if skipped else ""))
        return 0
    for row in rows:
        if row.get("error"):
            print(f"{row['path']}\terror: {row['error']}")
            continue
        print(f"{row['path']}\t{row['text']}" if len(rows) > 1 else row["text"])
        for word in row.get("words") or []:
            print(f"  {word.start:7.2f} {word.end:7.2f}  {word.text}")
    return 0


def _split_columns(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _read_series(args: argparse.Namespace, path: str | Path) -> pd.DataFrame:
    """The CSV at ``path`` read as the series options (``_add_series_options``) say."""
    from zoo.data.series import read_series

    return read_series(path, time_column=None if args.time_column == "none" else args.time_column,
                       target_columns=_split_columns(args.columns), missing=args.missing,
                       irregular=args.irregular, on_error=args.on_error)


ON_ERROR_HELP = "a non-numeric value: stop naming it, or read it as missing"


def _add_series_options(p: argparse.ArgumentParser, what: str = "",
                        on_error_help: str = ON_ERROR_HELP) -> None:
    """How a series CSV is read: --time-column, --columns, --missing, --irregular, --on-error."""
    p.add_argument("--time-column", default="date", help=f"{what}timestamp column, or 'none'")
    p.add_argument("--columns", default=None, help=f"{what}comma-separated columns to forecast "
                   "(default: every column but the time column)")
    p.add_argument("--missing", default="error", choices=("error", "interpolate", "keep"),
                   help="empty cells: refuse, fill linearly in time, or keep them for a model "
                   "that masks missing values (TimesFM)")
    p.add_argument("--irregular", default="error", choices=("error", "reindex"))
    p.add_argument("--on-error", default="raise", choices=("raise", "skip"), help=on_error_help)


# a CSV with exactly these columns is read as a long table (one row per series and timestamp)
LONG_COLUMNS = ("unique_id", "ds", "y")
MAX_PRINTED_SERIES = 20


def _levels(text: str | None) -> list[float] | None:
    """--levels "80,95" -> [80.0, 95.0]; None keeps the model's default."""
    if text is None:
        return None
    try:
        levels = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--levels takes percentages separated by commas (e.g. 80,95), got "
                         f"{text!r}") from None
    if (bad := [v for v in levels if not 0 < v < 100]):
        raise ValueError(f"--levels are percentages in (0, 100), got {bad[0]:g}")
    return levels


def _is_long(args: argparse.Namespace, data: Path) -> bool:
    """--long, or a CSV whose columns are exactly the long-table ones (said on stdout)."""
    if args.long or not data.is_file():
        return args.long
    import pandas as pd

    try:
        header = [str(c) for c in pd.read_csv(data, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return False
    expected = (args.id_column, args.time_column or "ds", args.target_column)
    if sorted(header) != sorted(expected):
        return False
    print(f"{data} has exactly the columns {', '.join(expected)}: reading it as a long table "
          "(one row per series and timestamp; --long says so explicitly)")
    return True


def _refuse_existing(paths: Sequence[Path | bool], overwrite: bool) -> None:
    for path in paths:
        if isinstance(path, Path) and path.exists() and not overwrite:
            raise ValueError(f"{path} exists; zoo never writes over a file: choose another "
                             "--output / --plot, or pass --overwrite")


def _print_backtest(summary: pd.DataFrame, windows: int, horizon: int) -> None:
    """A backtest summary, one line per column or series (the first MAX_PRINTED_SERIES)."""
    from zoo.forecasting import format_backtest

    lines = format_backtest(summary).splitlines()
    print(f"backtest, the last {windows} windows of {horizon} steps (season "
          f"{summary.attrs['season'] or 'per series'}):")
    print("\n".join(lines[:MAX_PRINTED_SERIES]))
    if len(lines) > MAX_PRINTED_SERIES:
        print(f"... and {len(lines) - MAX_PRINTED_SERIES} more series; mean over all: MASE "
              f"{summary['mase'].mean():.2f} vs seasonal naive "
              f"{summary['seasonal_naive_mase'].mean():.2f}")


def _time_index(frame: pd.DataFrame, args: argparse.Namespace) -> pd.DatetimeIndex | None:
    """The timestamps of a long table's first series (its frequency sets the default horizon);
    None when they are not dates (errors about them come with the forecast)."""
    import pandas as pd

    try:
        first = frame[args.id_column].iloc[0]
        times = frame.loc[frame[args.id_column] == first, args.time_column]
        return pd.DatetimeIndex(pd.to_datetime(times).sort_values())
    except (KeyError, IndexError, ValueError, TypeError):
        return None


def cmd_forecast(args: argparse.Namespace) -> int:
    import pandas as pd

    from zoo import forecasting as fc

    data = Path(args.data)
    output = _output_file(args.output or data.with_name(data.stem + "_forecast.csv"),
                          [args.data], "--output")
    # The default plot needs matplotlib (zoo[plot]); an explicit --plot without it is an error.
    drawable = args.plot is not None or importlib.util.find_spec("matplotlib") is not None
    plot = drawable and _output_file(args.plot or output.with_suffix(".png"), [args.data, output],
                                     "--plot")
    levels = _levels(args.levels)
    long = _is_long(args, data)
    if long and args.columns:
        raise ValueError("--columns picks the columns of a wide table; a long table's values "
                         f"are its --target-column ({args.target_column})")
    args.time_column = args.time_column or ("ds" if long else "date")
    model = _load_for_predict(args.model, args.pretrained).eval()
    if not isinstance(model, ZooForecaster):
        raise ValueError(f"{args.model} is not a forecaster; `zoo list --modality series` shows them")
    if long:
        if not data.is_file():
            raise FileNotFoundError(f"no series file at {data}")
        try:
            frame = pd.read_csv(data, dtype={args.id_column: str})     # ids as written ("007")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"{data}: cannot read as CSV: {err}") from err
    else:
        frame = _read_series(args, data)
    horizon = fc.check_horizon(model, args.horizon, _time_index(frame, args) if long else frame.index)
    reported = fc.resolve_levels(model, levels)
    level = 80 if 80 in reported else (reported[0] if reported else None)   # for --backtest
    _refuse_existing([output, plot], args.overwrite)
    options = dict(id_col=args.id_column, time_col=args.time_column,
                   target_col=args.target_column, missing=args.missing, on_error=args.on_error)
    summary = None                     # the backtest runs first: its errors leave no files
    if args.backtest and long:
        _, summary = fc.backtest_long(model, frame, args.backtest, horizon, season=args.season,
                                      level=level, **options)
    elif args.backtest:
        _, summary = fc.backtest(model, frame, args.backtest, horizon, args.season, level=level)
    if long:
        forecast = fc.forecast_long(model, frame, horizon, levels=levels, **options)
        rows = f"{forecast[args.id_column].nunique()} series x {horizon} steps"
    else:
        forecast = fc.forecast_frame(model, frame, horizon, levels=levels)
        rows = f"{len(forecast)} steps x {len(frame.columns)} columns"
    wanted = _split_columns(args.plot_columns)      # checked before anything is written
    have = [str(i) for i in dict.fromkeys(forecast[args.id_column])] if long else \
        [str(c) for c in frame.columns]
    if plot and wanted and (unknown := [w for w in wanted if w not in have]):
        raise ValueError(f"--plot-columns: no {'series' if long else 'column'} {unknown} (the "
                         f"forecast has {have[:10]}{' ...' if len(have) > 10 else ''})")
    output.parent.mkdir(parents=True, exist_ok=True)
    if long:
        forecast.to_csv(output, index=False)
    else:
        forecast.to_csv(output, index_label=frame.index.name or "step")
    if plot:
        title = f"{args.model}: {horizon}-step forecast"
        if long:
            fc.plot_long(frame, forecast, plot, ids=wanted,
                         id_col=args.id_column, time_col=args.time_column,
                         target_col=args.target_column, title=title)
        else:
            fc.plot_forecast(frame, forecast, plot, columns=wanted,
                             title=title)
    bands = [c for c in forecast.columns if "-lo-" in str(c) or "-hi-" in str(c)]
    print(f"forecast of {rows} -> {output}" + (f" (with {len(bands)} interval columns)" if bands
                                               else "") +
          f"\nplot -> {plot or 'none (matplotlib is not installed: pip install zoo[plot])'}")
    if summary is not None:
        _print_backtest(summary, args.backtest, horizon)
    return 0


def _explain_target(text: str | None, model: TokenModel) -> int | str | None:
    """--target: a forecaster's horizon step; a classifier's label, or its index."""
    if text is None:
        return None
    if isinstance(model, ZooForecaster):
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--target for a forecaster is a horizon step (0-based), got "
                             f"{text!r}") from None
    from zoo.data.images import resolve_labels

    assert isinstance(model, ZooClassifier)
    labels = resolve_labels(require_pretrained_cfg(model, "--target").labels, model.num_classes)
    if text in labels:
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--target {text!r} is neither a label of this model ("
                         f"{', '.join(labels[:10])}{', ...' if len(labels) > 10 else ''}) "
                         "nor a class index") from None


def cmd_explain(args: argparse.Namespace) -> int:
    from zoo.explanation_pictures import explain_files, explain_series

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--output {out_dir} is a file; give a folder for the pictures")
    model = _load_for_predict(args.model, args.pretrained).eval()
    target = _explain_target(args.target, model)
    name = Path(args.model).name if Path(args.model).exists() else args.model
    options = dict(method=args.method, target=target, overwrite=args.overwrite, name=name)
    if isinstance(model, ZooForecaster):
        if len(args.inputs) != 1 or Path(args.inputs[0]).suffix.lower() != ".csv":
            raise ValueError("a forecaster explains one CSV of series (time column + numeric "
                             f"columns), got {' '.join(args.inputs)}")
        data = Path(args.inputs[0])
        frame = _read_series(args, data)
        pictures = [explain_series(model, frame, out_dir / f"{data.stem}.png", **options)]
    else:
        from zoo.predict import collect_inputs

        if args.columns or args.time_column != "date" or args.missing != "error" \
                or args.irregular != "error":
            raise ValueError("--columns, --time-column, --missing and --irregular apply to "
                             "forecasters only")
        assert isinstance(model, ZooClassifier)
        paths = collect_inputs(args.inputs, model)
        pictures = explain_files(model, paths, out_dir, progress=len(paths) > 1,
                                 on_error=args.on_error, **options)
        skipped = len(paths) - len(pictures)
        if skipped:
            print(f"{skipped} unreadable file(s) skipped (see the warnings above)")
    print(f"picture -> {pictures[0]}" if len(pictures) == 1
          else f"{len(pictures)} pictures -> {out_dir}")
    return 0 if pictures else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="zoo: a multimodal Transformer model zoo")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'vit_*'")
    p.add_argument("--modality", choices=zoo.registry.MODALITIES)
    p.add_argument("--pretrained", action="store_true", help="list weights (arch.tag) instead")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="describe a model: params, input, weights, metrics")
    p.add_argument("name")
    p.set_defaults(func=cmd_info)

    for name, what in (("fit", "fit"), ("validate", "validate"), ("test", "test")):
        sub.add_parser(name, add_help=False, help=f"LightningCLI: {what} from a config "
                       f"(zoo {name} --config CFG [--trainer.max_epochs=3 ...]; zoo {name} --help)")

    sub.add_parser("shards", add_help=False, help="convert an image or audio folder, a folder of "
                   "CSVs or the digits to litdata shards the recipes stream (--data.dataset=shards "
                   "--data.root=DIR or s3://...); zoo shards --help")

    p = sub.add_parser("train", help="fit from a LightningCLI config, then test the best "
                       "checkpoint (metrics.json); overrides as --trainer.max_epochs=5")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's "
                   "last.ckpt (weights, optimizer, schedule, data position, RNG), if it has one")
    p.add_argument("--resume-from", default=None, metavar="CKPT",
                   help="continue from this checkpoint instead")
    p.add_argument("--overwrite", action="store_true", help="the run folder "
                   "(trainer.default_root_dir) holds an earlier run: move it aside (to "
                   "DIR.replaced-TIME) and start afresh")
    p.set_defaults(func=cmd_train, overrides=[])

    p = sub.add_parser("eval", help="evaluate a recipe checkpoint on a config's test split")
    p.add_argument("config")
    p.add_argument("--ckpt", required=True)
    p.set_defaults(func=cmd_eval, overrides=[])

    p = sub.add_parser("finetune", help="fine-tune on your own image or audio folder, or a "
                       "forecaster on your CSV")
    p.add_argument("name", help="registered model name, e.g. vit_tiny_patch16_224, "
                   "ast_tiny_d6_8k or patchtst_tiny_l336")
    p.add_argument("--data", required=True, help="folder with one sub-folder per class of images "
                   "or .wav/.flac/.ogg clips (or train/ and val/ folders laid out so); for a "
                   "forecaster, a CSV (time column + numeric columns), split 70/10/20 in time")
    p.add_argument("--horizon", type=_count(1), default=None, help="forecaster: steps to forecast "
                   "(default: the model's; another value trains a new head)")
    p.add_argument("--columns", default=None, help="forecaster: comma-separated columns "
                   "(default: all but the time column)")
    p.add_argument("--time-column", default="date", help="forecaster: timestamp column, or 'none'")
    p.add_argument("--mode", default="full", choices=("full", "freeze_backbone", "linear_probe"))
    p.add_argument("--trainable-blocks", type=_count(0), default=0,
                   help="freeze_backbone: how many of the last blocks to train")
    p.add_argument("--pretrained", help="weights: a path, URL or hf-hub:org/repo "
                   "(default: the registry's weights)")
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights")
    p.add_argument("--epochs", type=_count(1), default=10)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--layer-decay", type=float, default=None, help="e.g. 0.75 (full mode)")
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=_count(1), default=32)
    p.add_argument("--num-workers", type=_count(0), default=2)
    p.add_argument("--img-size", type=_count(1), default=None, help="default: the model's input size")
    p.add_argument("--config", default=None, help="a LightningCLI config to start from; "
                   "any --key=value after the flags overrides it (e.g. --data.freq_mask=10)")
    p.add_argument("--output", default=None, help="run directory (default runs/finetune_NAME)")
    p.add_argument("--overwrite", action="store_true", help="the run directory holds an earlier "
                   "run: move it aside (to RUN_DIR.replaced-TIME) and start afresh")
    p.set_defaults(func=cmd_finetune, overrides=[])

    p = sub.add_parser("predict", help="top-k labels for images or audio clips (with --config "
                       "CFG --ckpt_path CKPT: LightningCLI's predict over the config's test split)")
    p.add_argument("model", help="registered name, a zoo package directory or a recipe .ckpt")
    p.add_argument("inputs", nargs="+", help="image files, or audio files (.wav, .flac, .ogg) "
                   "for an audio model; folders (searched recursively); CSV files with a "
                   "'path' column")
    p.add_argument("--pretrained", help="weights for a registered name (default: its own)")
    p.add_argument("--top-k", type=_count(1), default=5)
    p.add_argument("--output", default=None, help="write a results CSV (path, label, "
                   "probability, top_k, error) instead of printing; shows a progress bar")
    p.add_argument("--batch-size", type=_count(1), default=32)
    p.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                   help="an unreadable file: stop naming it, or skip it (noted in the CSV)")
    p.add_argument("--workers", type=_count(0), default=None, help="processes that read and "
                   "preprocess files while the model runs (default: the CPUs PyTorch's threads leave "
                   "free, at most 4; 0: none)")
    p.add_argument("--precision", default="32-true", choices=PRECISIONS, help="bf16-mixed: "
                   "bfloat16 autocast, about 1.5-2x faster on CPUs with AVX512-BF16 / AMX, "
                   "probabilities within about 1e-2 of float32's")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("transcribe", help="speech to text for audio files (a speech model)")
    p.add_argument("model", help="registered speech model, a zoo package directory or a recipe .ckpt")
    p.add_argument("inputs", nargs="+", help="audio files (.wav, .flac, .ogg), folders (searched "
                   "recursively), CSV files with a 'path' column")
    p.add_argument("--pretrained", help="weights for a registered name (default: its own)")
    p.add_argument("--timestamps", action="store_true", help="also print / write each word's "
                   "start and end (s)")
    p.add_argument("--beam-width", type=_count(1), default=1, help="CTC prefix beam search "
                   "width (1: greedy)")
    p.add_argument("--output", default=None, help="write a CSV (path, text, duration_s, words, "
                   "error) instead of printing; never replaces a file")
    p.add_argument("--batch-size", type=_count(1), default=16, help="windows of a long "
                   "recording run at once")
    p.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                   help="an unreadable file: stop naming it, or skip it (noted in the CSV)")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("forecast", help="forecast a CSV's columns (or a long table's series); "
                       "writes a CSV and a PNG plot; --backtest scores it against seasonal naive")
    p.add_argument("model", help="registered forecaster, a zoo package directory or a recipe .ckpt")
    p.add_argument("data", help="CSV with a time column and numeric columns, oldest row first; "
                   "or a long table (--long): a row per series and timestamp")
    p.add_argument("--horizon", type=_count(1), default=None, help="steps to forecast (default: "
                   "the model's; at most its longest)")
    _add_series_options(p)
    p.set_defaults(time_column=None)       # "date" for a wide table, "ds" for a long one
    p.add_argument("--long", action="store_true", help="DATA is a long table (--id-column, "
                   "--time-column, --target-column; default unique_id, ds, y: a CSV with exactly "
                   "these columns is read so without --long); gaps in a series' time grid are "
                   "missing values")
    p.add_argument("--id-column", default=LONG_COLUMNS[0], help="long table: the series id column")
    p.add_argument("--target-column", default=LONG_COLUMNS[2], help="long table: the value column")
    p.add_argument("--levels", default=None, help="prediction intervals in %%, e.g. 80,95 "
                   "(models with quantiles; default 80): columns COL-lo-80, COL-hi-80")
    p.add_argument("--backtest", type=_count(1), default=None, metavar="N", help="also score the "
                   "last N windows of --horizon steps, each forecast from the rows before it: "
                   "MASE against seasonal naive, interval coverage")
    p.add_argument("--season", type=_count(1), default=None, help="--backtest: season length "
                   "in steps (default from the time step: hourly 24, daily 7, monthly 12, ...; "
                   "1 without timestamps)")
    p.add_argument("--output", default=None, help="forecast CSV (default DATA_forecast.csv)")
    p.add_argument("--plot", default=None, help="plot file (default: the output with .png)")
    p.add_argument("--plot-columns", default=None, help="comma-separated columns to plot "
                   "(default: all forecast columns; a long table: series ids, default the "
                   "first 6)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing forecast CSV "
                   "or plot")
    p.add_argument("--pretrained", help="weights for a registered name (default: its own)")
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("explain", help="pictures of the input patches a prediction or a "
                       "forecast rests on (attention rollout, gradient-weighted)")
    p.add_argument("model", help="registered name, a zoo package directory or a recipe .ckpt")
    p.add_argument("inputs", nargs="+", help="a classifier: image or audio files, folders "
                   "(searched recursively), CSV files with a 'path' column; a forecaster: one CSV "
                   "of series (its last look-back is explained)")
    p.add_argument("--output", required=True, help="folder for the PNGs (one per input, named "
                   "after it; existing files are never replaced without --overwrite)")
    p.add_argument("--method", default="grad_rollout", choices=("grad_rollout", "rollout", "raw"))
    p.add_argument("--target", default=None, help="classifier: the label (or class index) to "
                   "explain (default: the predicted one); forecaster: one horizon step, 0-based "
                   "(default: the whole forecast); grad_rollout only")
    p.add_argument("--overwrite", action="store_true", help="replace existing pictures")
    p.add_argument("--pretrained", help="weights for a registered name (default: its own)")
    _add_series_options(p, "forecaster: ", on_error_help="a classifier's unreadable file, a "
                        "forecaster's non-numeric value: stop naming it, or skip it (read the "
                        "value as missing)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("export", help="package a model: weights, config.json and a model card "
                       "generated from its run (metrics measured afresh); --format onnx adds "
                       "model.onnx")
    p.add_argument("source", help="a recipe checkpoint (.ckpt; its run directory's config.yaml "
                   "and metrics.json describe it), a registered name or a package directory")
    p.add_argument("out_dir", help="the package directory to write")
    p.add_argument("--format", default="package", choices=("package", "onnx"))
    p.add_argument("--no-eval", action="store_true", help="do not evaluate; the card takes the "
                   "run's own test figures for this checkpoint, if it has them")
    p.add_argument("--tag", default=None, help="weights tag (name arch.TAG); default: the dataset")
    p.add_argument("--config", default=None, help="the run's config (default: RUN_DIR/config.yaml)")
    p.add_argument("--half", action="store_true", help="store float16 weights (measured as such)")
    p.add_argument("--quantize", default=None, choices=("int8",), help="with --format onnx: "
                   "also model.int8.onnx, int8 Linear weights for ONNX Runtime on CPU, compared "
                   "with model.onnx (a checkpoint's card adds its int8 metrics)")
    p.set_defaults(func=cmd_export)
    return parser


# Packages that only the training extras bring: recipe commands name the install when one is missing.
TRAIN_PACKAGES = ("lightning", "torchmetrics", "tensorboard", "litdata", "jsonargparse", "yaml",
                  "sklearn")


def missing_extra(err: ImportError) -> str | None:
    """What to install for a missing optional package, or None for any other ImportError."""
    name = (err.name or "").split(".")[0]
    if isinstance(err, ModuleNotFoundError) and name in TRAIN_PACKAGES:
        return f"this command needs the '{name}' package: pip install 'zoo[train]'"
    return str(err) if "pip install 'zoo[" in str(err) else None


# LightningCLI's own subcommands: `zoo fit --config CFG --trainer.max_epochs=3` (recipes/cli.py);
# `zoo predict --config CFG --ckpt_path CKPT` is LightningCLI's predict, `zoo predict MODEL FILES`
# zoo's own file prediction
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test")


def _report(command: str, err: BaseException) -> int:
    """One line on stderr for an error the user can fix; exit status 2."""
    if isinstance(err, ImportError):
        install = missing_extra(err)
        if install is None:
            raise err
        message = install
    else:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    print(f"zoo {command}: error: {in_cli_terms(str(message), command)}", file=sys.stderr)
    return 2


def _legacy_overrides(extra: Sequence[str]) -> list[str]:
    """``trainer.max_epochs=5`` given the old way (not a flag, not a flag's value)."""
    legacy, previous = [], ""
    for item in extra:
        takes_value = previous.startswith("--") and "=" not in previous
        if not item.startswith("-") and "=" in item.split(" ")[0] and not takes_value:
            legacy.append(item)
        previous = item
    return legacy


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lightning_predict = argv[:1] == ["predict"] and any(
        a in ("-c", "--config") or a.startswith("--config=") for a in argv[1:])
    if argv[:1] and (argv[0] in LIGHTNING_SUBCOMMANDS or lightning_predict):
        try:
            from recipes.cli import main as lightning_main

            lightning_main(argv)
        except (ValueError, FileNotFoundError, FileExistsError, ImportError) as err:
            return _report(argv[0], err)
        return 0
    if argv[:1] == ["shards"]:      # recipes.streaming has its own parser
        try:
            from recipes.streaming import main as shards_main
        except ImportError as err:
            return _report("shards", err)
        return shards_main(argv[1:], prog="zoo shards")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not hasattr(args, "overrides"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    legacy = _legacy_overrides(extra)
    if legacy:
        parser.error(f"overrides are LightningCLI flags: --{legacy[0]} (not {legacy[0]}); "
                     f"`zoo fit --config CONFIG --print_config` lists every key")
    if extra:
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError, ImportError) as err:
        return _report(args.command, err)


if __name__ == "__main__":
    sys.exit(main())
