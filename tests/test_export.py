"""`zoo export` packages (weights, config, generated card) and ONNX files for every modality,
and batch prediction over folders and CSV lists."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from recipes.export import module_from_checkpoint
from zoo import cli

QUIET = ["--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1"]




@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("image") / "run"
    assert cli.main(["train", "configs/image/vit_nano_digits.yaml", f"--trainer.default_root_dir={out}",
                     "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
                     "--model.model_kwargs.depth=1", *QUIET]) == 0
    return out


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory, tone_folder) -> Path:
    out = tmp_path_factory.mktemp("audio") / "run"
    assert cli.main(["finetune", "ast_tiny_d6_8k", "--data", str(tone_folder), "--no-pretrained",
                     "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--output",
                     str(out), "--model.model_kwargs.depth=1", *QUIET]) == 0
    return out


@pytest.fixture(scope="module")
def series_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("series")
    t = np.arange(400)
    pd.DataFrame({"day": pd.date_range("2024-01-01", periods=400, freq="D"),
                  "sales": 5 + np.sin(2 * np.pi * t / 7), "visits": np.cos(t / 10)}
                 ).to_csv(root / "sales.csv", index=False)
    out = root / "run"
    assert cli.main(["finetune", "patchtst_tiny_l336", "--data", str(root / "sales.csv"),
                     "--no-pretrained", "--horizon", "7", "--time-column", "day", "--epochs", "1",
                     "--batch-size", "32", "--num-workers", "0", "--output", str(out),
                     "--model.model_kwargs.context_length=28", "--model.model_kwargs.depth=1", *QUIET]) == 0
    return out, root / "sales.csv"


def _example(model: torch.nn.Module) -> torch.Tensor:
    from zoo.onnx_export import example_input

    return example_input(model, 3, seed=5)


@pytest.mark.parametrize("modality", ["image", "audio", "series"])
def test_export_round_trips_every_modality_with_a_generated_card(
        modality, image_run, audio_run, series_run, tmp_path, run_cli):
    run = {"image": image_run, "audio": audio_run, "series": series_run[0]}[modality]
    ckpt = run / "checkpoints" / "best.ckpt"
    written = run_cli(["export", str(ckpt), str(tmp_path / "pkg"), "--format", "onnx"])
    package = Path(written["package"])
    assert {p.name for p in package.iterdir()} == {"model.safetensors", "config.json",
                                                    "README.md", "model.onnx"}
    assert written["onnx_max_abs_diff"] < 1e-4

    # the package rebuilds the very model, by zoo.load and by create_model(pretrained=DIR)
    trained = module_from_checkpoint(ckpt).model.eval()
    arch = trained.pretrained_cfg.architecture
    x = _example(trained)
    with torch.no_grad():
        want = trained(x)
        for model in (zoo.load(package), zoo.create_model(arch, pretrained=str(package))):
            torch.testing.assert_close(model.eval()(x), want, rtol=0, atol=0)
    config = json.loads((package / "config.json").read_text())
    assert config["architecture"] == arch and config["model_args"] == trained.model_args

    # the card's figures are a fresh `zoo eval` of the checkpoint
    evaluated = run_cli(["eval", str(run / "config.yaml"), "--ckpt", str(ckpt)])["metrics"]
    metrics = config["pretrained_cfg"]["metrics"]
    card = (package / "README.md").read_text()
    run_info = json.loads((run / "metrics.json").read_text())
    if modality == "series":
        assert metrics == {"csv test mse": evaluated["test/mse"], "csv test mae": evaluated["test/mae"]}
        assert f"| csv test mse | {evaluated['test/mse']:.4f} |" in card
        assert config["pretrained_cfg"]["labels"] == ["sales", "visits"]
    else:
        dataset = "digits" if modality == "image" else "audiofolder"
        assert metrics[f"{dataset} test top-1"] == pytest.approx(100 * evaluated["test/acc"])
        assert f"| {dataset} test top-1 | {100 * evaluated['test/acc']:.2f} |" in card
    for fact in (run_info["command"], run_info["date"], f"{run_info['train_time_s']:.0f} s",
                 "| data license |", "| split |", "| task |", "Measured by `zoo eval`"):
        assert fact in card, fact


def test_export_without_evaluation_claims_only_what_the_run_measured(image_run, tmp_path, run_cli):
    best = image_run / "checkpoints" / "best.ckpt"
    tested = json.loads((image_run / "metrics.json").read_text())["metrics"]
    written = run_cli(["export", str(best), str(tmp_path / "a"), "--no-eval", "--tag", "mine"])
    assert written["name"] == "vit_nano_patch4_16.mine"
    assert written["metrics"]["digits test top-1"] == pytest.approx(100 * tested["test/acc"])
    # last.ckpt was not the checkpoint the run tested: no figure is claimed for it
    written = run_cli(["export", str(image_run / "checkpoints" / "last.ckpt"), str(tmp_path / "b"),
                    "--no-eval"])
    assert written["metrics"] == {}
    assert "Not measured" in (tmp_path / "b" / "README.md").read_text()


def test_export_needs_the_runs_config(image_run, tmp_path, capsys):
    lone = tmp_path / "lone.ckpt"
    lone.write_bytes((image_run / "checkpoints" / "best.ckpt").read_bytes())
    assert cli.main(["export", str(lone), str(tmp_path / "p")]) == 2
    assert "export needs the run's config" in capsys.readouterr().err
    assert cli.main(["export", "vit_nano_patch4_16.digits", str(tmp_path / "p"), "--tag", "x"]) == 2
    assert "apply to recipe checkpoints" in capsys.readouterr().err


def test_export_a_checkpoint_as_int8_scores_the_int8_file(image_run, tmp_path, run_cli):
    """--quantize int8 adds model.int8.onnx, scored by the same evaluation as the card's
    metrics, in the card's int8 section."""
    from recipes.export import read_int8_section
    from recipes.train import evaluate
    from zoo.quantize import onnx_forward

    ckpt = image_run / "checkpoints" / "best.ckpt"
    written = run_cli(["export", str(ckpt), str(tmp_path / "pkg"), "--format", "onnx",
                    "--quantize", "int8"])
    package = Path(written["package"])
    assert (package / "model.int8.onnx").is_file() and written["int8_relative_diff"] < 0.1
    module = module_from_checkpoint(ckpt)
    with onnx_forward(module.model, package / "model.int8.onnx"):
        tested = evaluate(["--config", str(image_run / "config.yaml")], module=module)["metrics"]
    assert written["int8_metrics"]["digits test top-1"] == pytest.approx(100 * tested["test/acc"])
    printed = read_int8_section(package / "README.md")
    assert printed["digits test top-1"] == (round(written["metrics"]["digits test top-1"], 2),
                                            round(written["int8_metrics"]["digits test top-1"], 2))
    # the card's own metrics stay float32's
    assert json.loads((package / "config.json").read_text())["pretrained_cfg"]["metrics"] == \
        written["metrics"]


def test_export_a_registered_model_as_onnx(tmp_path, run_cli):
    written = run_cli(["export", "vit_nano_patch4_16.digits", str(tmp_path / "digits"),
                    "--format", "onnx"])
    assert written["metrics"]["digits test top-1"] > 97 and written["onnx_max_abs_diff"] < 1e-4
    loaded = zoo.load(tmp_path / "digits")
    assert loaded.pretrained_cfg.name == "vit_nano_patch4_16.digits"


def test_batch_predict_over_a_folder_and_a_csv_list_writes_results(tmp_path, capsys, write_tones):
    from PIL import Image

    from zoo.data.images import DigitsDataset

    data = DigitsDataset("test", img_size=8, mean=(0.0,) * 3, std=(1.0,) * 3)
    folder = tmp_path / "digits" / "nested"
    folder.mkdir(parents=True)
    for i in range(40):
        pixels = (data.images[i, 0] * 255).clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:02d}_{int(data.targets[i])}.png")
    (folder / "notes.txt").write_text("not an image")         # ignored: not an image suffix
    broken = tmp_path / "broken.png"
    broken.write_text("not a png")
    pd.DataFrame({"path": ["digits/nested/00_" + f"{int(data.targets[0])}.png", "broken.png"]}
                 ).to_csv(tmp_path / "list.csv", index=False)

    out = tmp_path / "results.csv"
    capsys.readouterr()
    assert cli.main(["predict", "vit_nano_patch4_16.digits", str(tmp_path / "digits"),
                     str(tmp_path / "list.csv"), "--output", str(out), "--batch-size", "16",
                     "--on-error", "skip", "--top-k", "3"]) == 0
    assert "41 predictions" in capsys.readouterr().out
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 42 and rows[-1]["path"] == str(broken) and "cannot read image" in rows[-1]["error"]
    correct = [r["label"] == Path(r["path"]).stem.split("_")[1] for r in rows[:40]]
    assert sum(correct) >= 36                                  # the published weights: ~98%
    assert all(len(r["top_k"].split(";")) == 3 for r in rows[:41])
    assert cli.main(["predict", "vit_nano_patch4_16.digits", str(tmp_path / "list.csv")]) == 2
    assert f"cannot read image {broken}" in capsys.readouterr().err

    clips = write_tones(tmp_path / "tones", per_class=2)
    package = zoo.save(zoo.create_model("ast_tiny_d6_8k", depth=1, num_classes=2), tmp_path / "ast")
    assert cli.main(["predict", str(package), str(clips), "--output", str(tmp_path / "a.csv")]) == 0
    with open(tmp_path / "a.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 4
