"""Model packages from training runs: ``zoo export CKPT OUT_DIR``.

A package is ``model.safetensors`` + ``config.json`` (architecture, arguments, preprocessing,
labels, metrics: everything :func:`zoo.load` needs) + ``README.md``, a model card generated
from the run: task, data, split, the data's license, metrics measured on the config's test
split by the same evaluation as ``zoo eval``, the command, the date and the training time.
``--format onnx`` adds ``model.onnx`` (see :mod:`zoo.onnx_export`), checked against PyTorch;
``--quantize int8`` also ``model.int8.onnx`` (see :mod:`zoo.quantize`), checked against
``model.onnx`` and, for a checkpoint, scored by the same evaluation (the card's "int8 (CPU
deployment)" section).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from torch import nn

import zoo
from zoo.package import package_writer, write_package
from zoo.quantize import QUANTIZE_MODES, QUANTIZED_NAME, compare_onnx, onnx_forward, quantize_onnx

if TYPE_CHECKING:   # a recipe checkpoint needs Lightning (zoo[train]); a registered model does not
    from recipes.classification import Classifier
    from recipes.forecasting import Forecaster
    from recipes.pretrain import PatchDecoderPretraining
    from recipes.speech import SpeechRecognition

logger = logging.getLogger("zoo.recipes")

FORMATS = ("package", "onnx")
INT8_SECTION = "## int8 (CPU deployment)"

DATASETS = {
    "digits": dict(
        title="scikit-learn handwritten digits (UCI Optical Recognition of Handwritten Digits)",
        split="fixed stratified split of the 1,797 8x8 images (seed 0): 1,257 train / 180 val / "
              "360 test; `zoo.data.images.digits_split_indices()`",
        license="CC BY 4.0 (UCI Machine Learning Repository)",
        task="image classification", unit="images",
    ),
    "fsdd": dict(
        title="Free Spoken Digit Dataset (FSDD), github.com/Jakobovski/free-spoken-digit-dataset "
              "at commit 26eb9aa: 3,000 8 kHz recordings of 6 speakers",
        split="standard split: takes 0-4 of each speaker and digit are the test set (300 clips), "
              "takes 5-49 the training set (2,700); `data.holdout: true` holds takes 5-9 out to "
              "validate (see the config below)",
        license="CC BY-SA 4.0",
        task="audio classification (spoken digits)", unit="clips",
    ),
    "fsdd_digits": dict(
        title="connected spoken digits: strings of 1-10 digits built from the Free Spoken Digit "
              "Dataset (FSDD, github.com/Jakobovski/free-spoken-digit-dataset at commit 26eb9aa), "
              "one speaker per string, random silences (`zoo.data.digit_strings`)",
        split="test: 1,000 strings from takes 0-4 only (seed 20261202); training strings from "
              "takes 5-49 only (10-49 with `data.holdout: true`, takes 5-9 then validate); no "
              "recording is shared between training and test strings",
        license="CC BY-SA 4.0 (FSDD)",
        task="speech recognition (connected digits, CTC)", unit="strings",
    ),
    "etth1": dict(
        title="ETTh1 (Electricity Transformer Temperature, hourly, station 1), "
              "github.com/zhouhaoyi/ETDataset at commit 1d16c8f: 7 channels",
        split="Informer / PatchTST protocol: train rows [0, 8640), validation [8640, 11520), "
              "test [11520, 14400), each window's look-back reaching back before its split; "
              "StandardScaler fitted on the training rows; MSE / MAE on standardised values "
              "over all 7 channels and every test window (no dropped last batch)",
        license="CC BY-ND 4.0",
        task="multivariate long-term forecasting", unit="windows",
    ),
    "synthetic": dict(
        title="synthetic series only (`zoo.data.synthetic`: KernelSynth-style sums and products "
              "of trend, seasonal, smooth (RBF / rational-quadratic), autoregressive and noise "
              "components, change points, level shifts, spikes, counts), generated from the "
              "seed; no real series",
        split="training, validation and test batches from three different seeds; the test "
              "loss is the pre-training loss (MSE of the mean + pinball of the quantiles, in "
              "each position's normalised units) on the test batches. Real-series accuracy: "
              "see the zero-shot evaluation",
        license="not applicable (generated)",
        task="zero-shot forecasting (pre-training)", unit="batches",
    ),
}

KIND = {"image": "A Vision Transformer", "audio": "An Audio Spectrogram Transformer",
        "series": "A PatchTST forecaster", "speech": "A CTC speech recogniser",
        "TimesFM": "A TimesFM 2.5-style patch decoder"}   # by class where a modality has several


@dataclass(frozen=True)
class SavedRun:
    """What a run's saved LightningCLI config (``config.yaml``) says about its model and data."""

    model_name: str
    pretrained: Any
    data: dict[str, Any]              # the data module's init_args
    seed: int

    @classmethod
    def read(cls, path: str | Path) -> SavedRun:
        config = yaml.safe_load(Path(path).read_text()) or {}
        try:
            model, data = config["model"]["init_args"], config["data"]["init_args"]
            return cls(model_name=model["model_name"], pretrained=model.get("pretrained", False),
                       data=data, seed=int(config.get("seed_everything") or 0))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} is not a zoo run's config (LightningCLI model / data "
                             f"init_args with a model_name): missing {err}") from err

    @property
    def dataset(self) -> str:
        return self.data["dataset"]

    @property
    def modality(self) -> str:
        return zoo.registry.get_entry(self.model_name)[0].modality


def dataset_facts(run: SavedRun) -> dict[str, str]:
    """What the card says about the data: title, split, license, task, unit."""
    d = run.data
    if run.dataset in DATASETS:
        return DATASETS[run.dataset]
    if run.dataset == "csv":
        fractions = d.get("fractions") or (0.7, 0.1, 0.2)
        split = (f"chronological: validation from {d['val_start']}, test from {d['test_start']}"
                 if d.get("val_start") else
                 "chronological: {:.0%} / {:.0%} / {:.0%} of the rows".format(*fractions))
        return dict(title=f"your series `{d['root']}`", split=split + "; scaler fitted on the "
                    "training rows; MSE / MAE on standardised values over every test window",
                    license="not stated (your own data)", task="forecasting", unit="windows")
    kind = "clips" if run.modality == "audio" else "images"
    return dict(title=f"your {kind} in `{d.get('root')}`, one folder per class",
                split=f"its train/ and val/ folders, or {d.get('val_fraction', 0.2):.0%} of each "
                      f"class held out for validation (seed {run.seed})",
                license="not stated (your own data)",
                task="image classification" if kind == "images" else "audio classification",
                unit=kind)


def card_metrics(tested: dict[str, float], dataset: str, modality: str) -> dict[str, float]:
    """Test metrics as the cards and the registry name them (accuracies and error rates in %)."""
    if dataset == "synthetic":   # pre-training: its own loss (real series: zero-shot)
        return {f"{dataset} test loss": tested["test/loss"]}
    if modality == "series":
        return {f"{dataset} test mse": tested["test/mse"], f"{dataset} test mae": tested["test/mae"]}
    if modality == "speech":   # error rates in %
        return {f"{dataset} test {name} (%)": 100 * tested[f"test/{name}"]
                for name in ("wer", "ser", "cer")}
    metrics = {f"{dataset} test top-1": 100 * tested["test/acc"]}
    if "test/top5" in tested:
        metrics[f"{dataset} test top-5"] = 100 * tested["test/top5"]
    return metrics


def render_card(*, name: str, model: nn.Module, metrics: dict[str, float], run: dict[str, Any],
                run_config: SavedRun, config_text: str, num_test: int | None,
                int8_metrics: dict[str, float] | None = None) -> str:
    """The model card: what was trained on what, how it scored, how to reproduce it, and with
    ``int8_metrics`` (the same evaluation of ``model.int8.onnx``) an int8 section."""
    data = dataset_facts(run_config)
    arch, modality = model.pretrained_cfg.architecture, model.modality
    if run.get("train_time_s") is not None:
        threads = run.get("torch_threads", 1)
        trained = (f"{run['train_time_s']:.0f} s on {run.get('device', '?')} ({threads} "
                   f"thread{'s' if threads != 1 else ''}"
                   + (f", {run['world_size']} processes" if run.get("world_size", 1) > 1 else "")
                   + f"), {run.get('epochs', '?')} epochs")
    else:
        trained = "not recorded (the run did not finish)"
    origin = f"fine-tuned from `{run_config.model_name}`" if run_config.pretrained \
        else "trained from scratch"
    rows = [("architecture", f"`{arch}`"),
            ("parameters", f"{sum(p.numel() for p in model.parameters()):,}"),
            ("task", data["task"]), ("data", data["title"]), ("split", data["split"]),
            ("data license", data["license"]), ("weights license", "Apache-2.0"),
            ("training time", trained), ("date", run.get("date", "not recorded"))]
    rows += [(f"input {k}", str(v)) for k, v in model.pretrained_cfg.preprocess.items()]
    kind = KIND.get(type(model).__name__, KIND[modality])
    lines = [f"# {name}", "", f"{kind} {origin} with zoo's {modality} recipe.", "",
             "| field | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Metrics", ""]
    if metrics:
        where = f" ({num_test} {data['unit']})" if num_test else ""
        digits = 4 if modality == "series" else 2
        lines += [f"Measured by `zoo eval` on the test split{where}.", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.{digits}f} |" for k, v in metrics.items()]
    else:
        lines += ["Not measured (exported with `--no-eval`)."]
    if int8_metrics:
        lines += ["", int8_section(metrics, int8_metrics, modality=modality).rstrip()]
    command = run.get("command") or "not recorded"
    lines += ["", "## Reproduce", "", "```bash", command, "```", "",
              "The resolved config:", "", "```yaml", config_text.rstrip(), "```", "",
              "## Use", "", "```python", "import zoo",
              (f"model = zoo.load('path/to/this/directory').eval()   # or "
               f"zoo.create_model({arch!r}, pretrained='path/to/this/directory')"), "```", ""]
    return "\n".join(lines)


def metric_change(key: str, fp32: float, int8: float) -> str:
    """int8's change of metric ``key``: in points for percentages (accuracy, error rates), in
    per cent of the float32 value for errors such as MSE (positive: higher)."""
    if "top-" in key or "(%)" in key:
        return f"{round(int8 - fp32, 2) + 0.0:+.2f} points"   # + 0.0: "+0.00", not "-0.00"
    if not fp32:
        return f"{int8 - fp32:+.4g}"
    return f"{round(100 * (int8 - fp32) / fp32, 2) + 0.0:+.2f}%"


def int8_section(fp32: dict[str, float], int8: dict[str, float], *, modality: str,
                 speed: list[dict[str, Any]] | None = None, command: str | None = None,
                 machine: str | None = None) -> str:
    """The card's "int8 (CPU deployment)" section: each metric of the float32 model and of
    ``model.int8.onnx`` (the same evaluation), the change, and optionally speed rows
    (``benchmarks/quantization.py``'s: ``batch``, ``fp32_ms``, ``int8_ms``, ``ratio``)."""
    digits = 4 if modality == "series" else 2
    intro = ("`zoo export ... --format onnx --quantize int8` also writes `model.int8.onnx`: "
             "every Linear layer's weights in int8 (one scale per output channel), activations "
             "quantised per tensor at run time, for ONNX Runtime on CPUs (`zoo.quantize`). "
             "Measured by the same evaluation as the metrics above, on the same test split:")
    lines = [INT8_SECTION, "", intro, "",
             "| metric | float32 | int8 | change |", "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {fp32[k]:.{digits}f} | {int8[k]:.{digits}f} | "
              f"{metric_change(k, fp32[k], int8[k])} |" for k in int8 if k in fp32]
    if speed:
        lines += ["", "Inference speed with ONNX Runtime on CPU"
                  + (f" ({machine})" if machine else "")
                  + ", medians of interleaved rounds:", "",
                  "| batch | float32 (ms) | int8 (ms) | int8 speed-up |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['batch']} | {r['fp32_ms']:.2f} | {r['int8_ms']:.2f} | {r['ratio']:.2f}x |"
                  for r in speed]
    if command:
        lines += ["", "```bash", command, "```"]
    return "\n".join(lines) + "\n"


def write_int8_section(card: Path, section: str) -> None:
    """Put ``section`` into the card before ``## Reproduce`` (replacing an earlier one)."""
    text = card.read_text()
    if INT8_SECTION in text:
        start = text.index(INT8_SECTION)
        text = text[:start] + text[text.index("\n## ", start) + 1:]
    at = text.index("## Reproduce")
    card.write_text(text[:at] + section + "\n" + text[at:])


def read_int8_section(card: Path) -> dict[str, tuple[float, float]] | None:
    """A card's int8 metrics ({metric: (float32, int8)}), or None if it has no such section."""
    text = card.read_text()
    if INT8_SECTION not in text:
        return None
    part = text.split(INT8_SECTION, 1)[1].split("\n## ", 1)[0]
    part = part.split("| metric |", 1)[1].split("\n\n", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines()[2:]]
    return {row[0]: (float(row[1]), float(row[2])) for row in rows if len(row) == 4}


def run_dir_of(ckpt: Path) -> Path:
    """A run directory holds checkpoints/CKPT, config.yaml and metrics.json."""
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def module_from_checkpoint(ckpt: str | Path
                           ) -> Classifier | Forecaster | SpeechRecognition | PatchDecoderPretraining:
    """The recipe module of checkpoint ``ckpt``, picked by its model's kind."""
    from recipes.classification import Classifier, read_recipe_checkpoint
    from recipes.forecasting import Forecaster
    from recipes.speech import SpeechRecognition

    hparams = read_recipe_checkpoint(ckpt)["hyper_parameters"]
    if "prefix_mask_prob" in hparams:
        from recipes.pretrain import PatchDecoderPretraining
        return PatchDecoderPretraining.from_checkpoint(ckpt)
    if "num_channels" in hparams:
        return Forecaster.from_checkpoint(ckpt)
    if "num_classes" in hparams:
        return Classifier.from_checkpoint(ckpt)
    return SpeechRecognition.from_checkpoint(ckpt)


def export_checkpoint(ckpt: str | Path, out_dir: str | Path, *,
                      fmt: str = "package", evaluate: bool = True, tag: str | None = None,
                      config: str | Path | None = None,
                      half: bool = False, quantize: str | None = None) -> dict[str, Any]:
    """Write the model of recipe checkpoint ``ckpt`` as a package in ``out_dir``.

    ``config`` defaults to the run directory's ``config.yaml``. With ``evaluate`` the card's
    metrics are measured now on the config's test split (as ``zoo eval`` does); without it they
    come from the run's ``metrics.json`` if that tested this very checkpoint, else none are
    claimed. ``tag`` names the weights (``arch.tag``; default: the dataset, plus the horizon
    for forecasters). ``half`` stores float16 weights (they load into float32 models); the
    metrics are then measured on those rounded weights. ``quantize="int8"`` (with
    ``fmt="onnx"``) adds ``model.int8.onnx``; with ``evaluate`` it is scored too, and the card
    gets an int8 section. Returns the paths written and the metrics.
    """
    from recipes.train import evaluate as evaluate_ckpt

    check_options(fmt, quantize)
    ckpt = Path(ckpt)
    run_dir = run_dir_of(ckpt)
    config_path = Path(config) if config else run_dir / "config.yaml"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config at {config_path}: export needs the run's config "
                                "(pass --config CONFIG for a checkpoint outside its run directory)")
    recipe = SavedRun.read(config_path)
    module = module_from_checkpoint(ckpt)
    model = module.model
    if half:   # what is measured is what ships
        with torch.no_grad():
            for tensor in model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half())
    run = json.loads((run_dir / "metrics.json").read_text()) \
        if (run_dir / "metrics.json").is_file() else {}
    if evaluate:
        result = evaluate_ckpt(["--config", str(config_path)], module=module)
        tested, num_test = result["metrics"], result["num_test"]
    elif half:
        raise ValueError("half=True changes the weights: their metrics must be measured (evaluate)")
    elif Path(run.get("best_checkpoint") or "").resolve() == ckpt.resolve():
        tested, num_test = run["metrics"], run.get("num_test")
    else:
        tested, num_test = {}, None
    dataset = recipe.dataset
    metrics = card_metrics(tested, dataset, model.modality) if tested else {}
    if tag is None:
        tag = f"{dataset}_h{model.horizon}" if "columns" in module.hparams else dataset
    labels = tuple(module.hparams.columns) if "columns" in module.hparams \
        else model.pretrained_cfg.labels
    data = dataset_facts(recipe)
    model.pretrained_cfg = replace(
        model.pretrained_cfg, tag=tag, metrics=metrics, labels=labels, license="apache-2.0",
        file=None, hf_hub_id=None, url=None, sha256=None,
        description=f"{data['task']}: {data['title']}")
    name = model.pretrained_cfg.name
    out_dir = Path(out_dir)
    written: dict[str, Any] = {"name": name, "package": str(out_dir), "metrics": metrics}
    with package_writer(out_dir) as staging:   # the whole package appears at once, or nothing
        if fmt == "onnx":
            written.update(export_onnx_file(model, staging / "model.onnx", out_dir / "model.onnx",
                                            quantize=quantize))
        int8_metrics = None
        if quantize and evaluate:   # the deployed file, scored by the same evaluation
            with onnx_forward(model, staging / QUANTIZED_NAME):
                tested8 = evaluate_ckpt(["--config", str(config_path)], module=module)["metrics"]
            int8_metrics = card_metrics(tested8, dataset, model.modality)
            written["int8_metrics"] = int8_metrics
        card = render_card(name=name, model=model, metrics=metrics, run=run, run_config=recipe,
                           config_text=config_path.read_text(), num_test=num_test,
                           int8_metrics=int8_metrics)
        write_package(model, staging, card=card)
        if half:
            half_precision_copy(staging / "model.safetensors", staging / "model.safetensors")
    return written


def check_options(fmt: str, quantize: str | None) -> None:
    """Refuse an unknown format, or ``quantize`` without ONNX."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if quantize is not None and fmt != "onnx":
        raise ValueError(f"--quantize {quantize} needs --format onnx: the quantised model is an "
                         "ONNX Runtime file (model.int8.onnx); PyTorch's own dynamic "
                         "quantisation (torch.ao) is deprecated")


QUANTIZE_CHECK_BATCH = 32   # rows of the example input the int8 model is compared on


def export_onnx_file(model: nn.Module, path: Path, final: Path, *,
                     quantize: str | None = None) -> dict[str, Any]:
    """``model.onnx`` at ``path`` (a package being written, to end up at ``final``), checked
    against PyTorch at another batch size when onnxruntime is installed; with ``quantize``
    also ``model.int8.onnx`` beside it, compared with ``model.onnx`` on a random batch
    (``int8_max_abs_diff``, ``int8_relative_diff``, classifiers' ``int8_top1_agreement``)."""
    from zoo.onnx_export import check_onnx, example_input, export_onnx

    export_onnx(model, path)
    result: dict[str, Any] = {"onnx": str(final)}
    try:
        result["onnx_max_abs_diff"] = check_onnx(model, path, example_input(model, 3, seed=1))
    except ImportError:
        if quantize:
            raise
        logger.warning("onnxruntime is not installed: %s was not checked against PyTorch", path)
    if quantize:
        quantized = quantize_onnx(path, path.with_name(QUANTIZED_NAME), mode=quantize)
        compared = compare_onnx(path, quantized,
                                example_input(model, QUANTIZE_CHECK_BATCH, seed=2))
        result[f"onnx_{quantize}"] = str(final.with_name(QUANTIZED_NAME))
        result.update({f"{quantize}_{k}": v for k, v in compared.items()})
    return result


def export_model(spec: str, out_dir: str | Path, *, fmt: str = "package",
                 quantize: str | None = None) -> dict[str, Any]:
    """Re-package a registered model (``arch.tag``) or a package directory as it is
    (``quantize="int8"``, with ``fmt="onnx"``: plus ``model.int8.onnx``, compared with
    ``model.onnx`` but not scored: the card keeps the float32 metrics)."""
    check_options(fmt, quantize)
    path = Path(spec)
    model = zoo.load(path) if path.is_dir() else zoo.create_model(spec, pretrained=True)
    out_dir = Path(out_dir)
    written = {"name": model.pretrained_cfg.name, "package": str(out_dir),
               "metrics": dict(model.pretrained_cfg.metrics)}
    with package_writer(out_dir) as staging:
        write_package(model.eval(), staging)
        if fmt == "onnx":
            written.update(export_onnx_file(model, staging / "model.onnx", out_dir / "model.onnx",
                                            quantize=quantize))
    return written


def export(source: str, out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """``zoo export``: a recipe checkpoint (``.ckpt``, see :func:`export_checkpoint`) or a
    registered name / package directory (``fmt`` and ``quantize`` only, see
    :func:`export_model`)."""
    if source.endswith(".ckpt"):
        return export_checkpoint(source, out_dir, **options)
    return export_model(source, out_dir, **options)


def half_precision_copy(src: Path, dst: Path) -> None:
    """``src`` safetensors with floating tensors stored as float16 (they load into float32)."""
    import os
    import tempfile

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".safetensors")
    os.close(fd)
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v
               for k, v in tensors.items()}, tmp, metadata={"format": "pt"})
    os.replace(tmp, dst)
