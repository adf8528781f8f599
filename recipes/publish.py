"""Publish a trained recipe checkpoint as bundled weights with a generated model card.

    python -m recipes.publish RUN_DIR --tag digits

reads ``RUN_DIR/metrics.json`` and the checkpoint it tested (``RUN_DIR/checkpoints/``), writes
``zoo/weights/<arch>.<tag>.safetensors`` and ``model_cards/<arch>.<tag>.md``, and prints the
registry entry (file, sha256, metrics) to paste next to the variant in ``zoo/models/``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from safetensors.torch import save_file

from recipes.classification import Classifier, read_recipe_checkpoint
from recipes.forecasting import Forecaster
from zoo.hub import sha256_of

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "zoo" / "weights"
CARDS_DIR = Path(__file__).resolve().parent.parent / "model_cards"

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
}

KIND = {"image": "A Vision Transformer", "audio": "An Audio Spectrogram Transformer",
        "series": "A PatchTST forecaster"}


def render_card(*, name: str, arch: str, params: int, metrics: dict[str, Any], run: dict[str, Any],
                config: str, dataset: str, preprocess: dict[str, Any], modality: str = "image") -> str:
    """The model card: what was trained on what, how it scored, how to reproduce it."""
    data = DATASETS[dataset]
    rows = [("architecture", f"`{arch}`"), ("parameters", f"{params:,}"),
            ("task", data["task"]), ("data", data["title"]), ("split", data["split"]),
            ("data license", data["license"]), ("weights license", "Apache-2.0"),
            ("training time", f"{run['train_time_s']:.0f} s on {run['device']} "
                              f"({run['torch_threads']} thread{'s' if run['torch_threads'] != 1 else ''}), "
                              f"{run['epochs']} epochs"),
            ("date", run["date"])]
    rows += [(f"input {k}", str(v)) for k, v in preprocess.items()]
    lines = [f"# {name}", "",
             f"{KIND[modality]} trained from scratch with zoo's {modality} recipe.", "",
             "| field | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "## Metrics", "", f"Measured by `zoo eval` on the {run['test_split']} split "
              f"({run['num_test']} {data['unit']}).", "", "| metric | value |", "| --- | --- |"]
    digits = 4 if modality == "series" else 2
    lines += [f"| {k} | {v:.{digits}f} |" for k, v in metrics.items()]
    lines += ["", "## Reproduce", "", "```bash", run["command"], "```", "",
              "The resolved config:", "", "```yaml", config.rstrip(), "```", "",
              "## Use", "", "```python", "import zoo",
              f"model = zoo.create_model({name!r}, pretrained=True).eval()", "```", ""]
    return "\n".join(lines)


def publish(run_dir: Path, tag: str, dataset: str, half: bool = False) -> dict[str, Any]:
    """``half`` stores float16 weights (half the size; they load into float32 models). The card
    keeps the run's figures, so check them against the stored weights (tests do)."""
    run = json.loads((run_dir / "metrics.json").read_text())
    # the checkpoint the run tested: best.ckpt, or last.ckpt when validation was trained on
    ckpt = Path(run.get("best_checkpoint") or run_dir / "checkpoints" / "best.ckpt")
    if not ckpt.is_file():
        ckpt = run_dir / "checkpoints" / ckpt.name
    hparams = read_recipe_checkpoint(ckpt)["hyper_parameters"]
    module = (Forecaster if "num_channels" in hparams else Classifier).from_checkpoint(ckpt)
    model = module.model
    arch = model.pretrained_cfg.architecture
    name = f"{arch}.{tag}"
    WEIGHTS_DIR.mkdir(exist_ok=True)
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    dtype = torch.float16 if half else None
    save_file({k: v.detach().to(dtype).contiguous() if v.is_floating_point() else v.detach()
               for k, v in model.state_dict().items()}, str(weights),
              metadata={"format": "pt", "architecture": arch})
    if model.modality == "series":
        metrics = {f"{dataset} test mse": run["metrics"]["test/mse"],
                   f"{dataset} test mae": run["metrics"]["test/mae"]}
    else:
        metrics = {f"{dataset} test top-1": 100 * run["metrics"]["test/acc"]}
    if "test/top5" in run["metrics"]:
        metrics[f"{dataset} test top-5"] = 100 * run["metrics"]["test/top5"]
    card = render_card(name=name, arch=arch, params=sum(p.numel() for p in model.parameters()),
                       metrics=metrics, run=run, config=(run_dir / "config.yaml").read_text(),
                       dataset=dataset, preprocess=dict(model.pretrained_cfg.preprocess),
                       modality=model.modality)
    CARDS_DIR.mkdir(exist_ok=True)
    (CARDS_DIR / f"{name}.md").write_text(card)
    labels = list(getattr(module.hparams, "columns", None) or model.pretrained_cfg.labels)
    return dict(tag=tag, file=weights.name, sha256=sha256_of(weights), labels=labels,
                license="apache-2.0",
                metrics={k: round(v, 4) for k, v in metrics.items()},
                model_args=module.hparams.model_kwargs)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--dataset", default="digits", choices=sorted(DATASETS))
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    args = parser.parse_args(argv)
    print(json.dumps(publish(args.run_dir, args.tag, args.dataset, args.half), indent=2))


if __name__ == "__main__":
    main()
