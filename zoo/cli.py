"""The ``zoo`` command: list, info, train, eval, finetune, predict, forecast, explain, export.

Training commands import the Lightning recipes lazily, so ``zoo list`` / ``zoo info`` stay fast
and the library itself never imports Lightning.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

import zoo
from zoo.registry import get_entry

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
        source = w.file and f"bundled ({w.file})" or w.hf_hub_id and f"hf-hub:{w.hf_hub_id}" or w.url
        default = " (default)" if w is entry.weights[0] else ""
        if entry.modality == "series":
            what = ("  columns", ", ".join(w.labels or ()) or "any")
        else:
            kind = "features only" if w.num_classes == 0 else \
                w.labels if isinstance(w.labels, str) else "custom"
            what = ("  classes", f"{w.num_classes} ({kind})")
        rows += [(f"weights {w.tag}{default}", source or "-"), what,
                 ("  license", w.license or "not stated"), ("  sha256", w.sha256 or "not pinned")]
        rows += [(f"  {k}", str(v)) for k, v in w.metrics.items()]
    print(_table(rows))
    return 0


def _count(minimum: int):
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


def _output_file(path: Union[str, Path], inputs: Sequence[Union[str, Path]], flag: str) -> Path:
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
_FORECAST_TERMS = _COLUMN_TERMS + (("irregular='reindex'", "--irregular reindex"),
                                  ("missing='interpolate'", "--missing interpolate"),
                                  ("the missing= policy", "--missing"),
                                  ("on_error='skip'", "--on-error skip"))
CLI_TERMS = {
    "forecast": _FORECAST_TERMS,
    "explain": _FORECAST_TERMS,
    "finetune": _COLUMN_TERMS + (("irregular='reindex'", "data.irregular=reindex"),
                                 ("missing='interpolate'", "data.missing=interpolate"),
                                 ("the missing= policy", "data.missing"),
                                 ("on_error='skip'", "data.on_error=skip")),
}


def in_cli_terms(message: str, command: str) -> str:
    """``message`` with the library's argument spellings replaced by ``command``'s flags."""
    for python, cli in CLI_TERMS.get(command, ()):
        message = message.replace(python, cli)
    return message


def _print_result(result: dict) -> None:
    print(json.dumps(result, indent=2))


def cmd_train(args: argparse.Namespace) -> int:
    from recipes.config import load_config
    from recipes.train import train

    config = load_config(args.config, args.overrides)
    resume = args.resume_from or args.resume
    _print_result(train(config, command=" ".join(["zoo", "train", args.config, *args.overrides]),
                        resume=resume, overwrite=args.overwrite))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from recipes.config import load_config
    from recipes.train import evaluate

    _print_result(evaluate(load_config(args.config, args.overrides), args.ckpt))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from recipes.config import load_config
    from recipes.train import train

    entry, _ = get_entry(args.name)  # fail fast on a bad name
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
    pretrained = False if args.no_pretrained else (args.pretrained or True)
    common = dict(output_dir=args.output or f"runs/finetune_{args.name}",
                  optim=dict(lr=args.lr, warmup_epochs=args.warmup_epochs,
                             weight_decay=args.weight_decay),
                  trainer=dict(max_epochs=args.epochs))
    if series:
        sections = dict(
            task="forecasting",
            model=dict(name=args.name, pretrained=pretrained,
                       kwargs={"horizon": args.horizon} if args.horizon else {}),
            data=dict(dataset="csv", root=str(data), batch_size=args.batch_size,
                      num_workers=args.num_workers, target_columns=_split_columns(args.columns),
                      time_column=None if args.time_column == "none" else args.time_column),
            **common)
    else:
        audio = entry.modality == "audio"
        common["optim"]["layer_decay"] = args.layer_decay
        sections = dict(
            task="audio_classification" if audio else "image_classification",
            model=dict(name=args.name, pretrained=pretrained),
            data=dict(dataset="audiofolder" if audio else "imagefolder", root=str(data),
                      batch_size=args.batch_size, num_workers=args.num_workers,
                      **({"img_size": args.img_size} if args.img_size else {})),
            finetune=dict(mode=args.mode, trainable_blocks=args.trainable_blocks),
            **common)
    config = load_config(args.config, args.overrides, **sections)
    command = " ".join(["zoo", "finetune", *sys.argv[2:]]) if sys.argv[1:2] == ["finetune"] else None
    _print_result(train(config, command=command, overwrite=args.overwrite))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from recipes.export import export

    options = dict(fmt=args.format)
    if args.source.endswith(".ckpt"):
        options.update(evaluate=not args.no_eval, tag=args.tag, config=args.config,
                       half=args.half)
    elif args.no_eval or args.tag or args.config or args.half:
        raise ValueError("--no-eval, --tag, --config and --half apply to recipe checkpoints "
                         "(.ckpt) only")
    _print_result(export(args.source, args.out_dir, **options))
    return 0


def _load_for_predict(spec: str, pretrained: Optional[str]) -> torch.nn.Module:
    path = Path(spec)
    if path.suffix == ".ckpt":
        from recipes.classification import Classifier, read_recipe_checkpoint
        from recipes.forecasting import Forecaster

        hparams = read_recipe_checkpoint(path)["hyper_parameters"]
        module = Forecaster if "num_channels" in hparams else Classifier
        return module.from_checkpoint(path).model
    if path.is_dir():
        return zoo.load(path)
    return zoo.create_model(spec, pretrained=pretrained or True)


def cmd_predict(args: argparse.Namespace) -> int:
    from zoo.predict import collect_inputs, predict_files, write_predictions

    if args.output:
        _output_file(args.output, args.inputs, "--output")
    model = _load_for_predict(args.model, args.pretrained).eval()
    if getattr(model, "modality", "") == "series":
        raise ValueError(f"{args.model} is a forecaster: use `zoo forecast {args.model} DATA.csv`")
    paths = collect_inputs(args.inputs, model)
    rows = predict_files(model, paths, batch_size=args.batch_size, top_k=args.top_k,
                         on_error=args.on_error, progress=args.output is not None)
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


def _split_columns(text: Optional[str]) -> Optional[list[str]]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else None


def _read_series(args: argparse.Namespace, path: Union[str, Path]):
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
    p.add_argument("--missing", default="error", choices=("error", "interpolate"))
    p.add_argument("--irregular", default="error", choices=("error", "reindex"))
    p.add_argument("--on-error", default="raise", choices=("raise", "skip"), help=on_error_help)


def cmd_forecast(args: argparse.Namespace) -> int:
    from zoo.forecasting import forecast_frame, plot_forecast

    output = _output_file(args.output or Path(args.data).with_name(Path(args.data).stem + "_forecast.csv"),
                          [args.data], "--output")
    plot = _output_file(args.plot or output.with_suffix(".png"), [args.data, output], "--plot")
    model = _load_for_predict(args.model, args.pretrained).eval()
    if getattr(model, "modality", "") != "series":
        raise ValueError(f"{args.model} is not a forecaster; `zoo list --modality series` shows them")
    frame = _read_series(args, args.data)
    forecast = forecast_frame(model, frame, horizon=args.horizon)
    output.parent.mkdir(parents=True, exist_ok=True)
    forecast.to_csv(output, index_label=frame.index.name or "step")
    plot_forecast(frame, forecast, plot, columns=_split_columns(args.plot_columns),
                  title=f"{args.model}: {len(forecast)}-step forecast")
    print(f"forecast of {len(forecast)} steps x {forecast.shape[1]} columns -> {output}\n"
          f"plot -> {plot}")
    return 0


def _explain_target(text: Optional[str], model: torch.nn.Module):
    """--target: a forecaster's horizon step; a classifier's label, or its index."""
    if text is None:
        return None
    if getattr(model, "modality", "") == "series":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"--target for a forecaster is a horizon step (0-based), got "
                             f"{text!r}") from None
    from zoo.data.images import resolve_labels

    labels = resolve_labels(model.pretrained_cfg.labels, model.num_classes)
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
    if getattr(model, "modality", "") == "series":
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

    p = sub.add_parser("train", help="train from a YAML config")
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--resume", action="store_true", help="continue from the run directory's "
                   "last.ckpt (weights, optimizer, schedule, data position, RNG), if it has one")
    p.add_argument("--resume-from", default=None, metavar="CKPT",
                   help="continue from this checkpoint instead")
    p.add_argument("--overwrite", action="store_true", help="the config's output_dir holds an "
                   "earlier run: move it aside (to OUTPUT_DIR.replaced-TIME) and start afresh")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a recipe checkpoint on a config's test split")
    p.add_argument("config")
    p.add_argument("--ckpt", required=True)
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=cmd_eval)

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
    p.add_argument("--config", default=None, help="a YAML config to start from")
    p.add_argument("--output", default=None, help="run directory (default runs/finetune_NAME)")
    p.add_argument("--overwrite", action="store_true", help="the run directory holds an earlier "
                   "run: move it aside (to RUN_DIR.replaced-TIME) and start afresh")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("predict", help="top-k labels for images or audio clips")
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
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("forecast", help="forecast a CSV's columns; writes a CSV and a PNG plot")
    p.add_argument("model", help="registered forecaster, a zoo package directory or a recipe .ckpt")
    p.add_argument("data", help="CSV with a time column and numeric columns, oldest row first")
    p.add_argument("--horizon", type=_count(1), default=None, help="steps to forecast (default: the "
                   "model's; shorter cuts its forecast)")
    _add_series_options(p)
    p.add_argument("--output", default=None, help="forecast CSV (default DATA_forecast.csv)")
    p.add_argument("--plot", default=None, help="plot file (default: the output with .png)")
    p.add_argument("--plot-columns", default=None, help="comma-separated columns to plot "
                   "(default: all forecast columns)")
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
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot put positional overrides after options (`eval CONFIG --ckpt X a.b=1`)
    stray = [item for item in extra if "=" not in item or item.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"zoo {args.command}: error: {in_cli_terms(str(message), args.command)}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
