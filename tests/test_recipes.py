"""The image recipe end to end: configs, the digits run, ImageFolder fine-tuning, eval, predict."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import zoo
from recipes.cli import ConfigError
from recipes.optim import param_groups, warmup_cosine
from zoo import cli

QUIET = ["--trainer.enable_progress_bar=false"]


def _write_color_folder(root: Path, per_class: int = 10, size: int = 40) -> None:
    """Two classes any model can separate: mostly-red and mostly-blue noisy images."""
    gen = torch.Generator().manual_seed(0)
    for name, channel in (("blue", 2), ("red", 0)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.rand(size, size, 3, generator=gen) * 0.3
            pixels[..., channel] += 0.7
            Image.fromarray((pixels * 255).byte().numpy()).save(root / name / f"{i}.png")


# --- config (LightningCLI) ------------------------------------------------------------------

DIGITS = "configs/image/vit_nano_digits.yaml"


def _parsed(*args: str):
    """The resolved config of the digits recipe with ``args``, parsed but nothing made."""
    from recipes.cli import ZooCLI

    class ParseOnly(ZooCLI):
        def before_instantiate_classes(self) -> None:
            raise _Parsed(self.config)

    try:
        ParseOnly(args=["--config", DIGITS, *args], run=False,
                  parser_kwargs={"exit_on_error": False})
    except _Parsed as done:
        return done.config
    raise AssertionError("not parsed")


class _Parsed(Exception):
    def __init__(self, config) -> None:
        self.config = config


def test_config_unknown_key_names_it_and_suggests(tmp_path):
    from recipes.cli import build

    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  init_args:\n    batchsize: 8\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'data.init_args.batchsize' "
                       r"\(recipes.image.ImageDataModule takes dataset, .*\); did you mean "
                       r"'data.init_args.batch_size'\?"):
        build(["--config", DIGITS, "--config", str(bad)])
    with pytest.raises(ConfigError, match=r"^unrecognized arguments: --trainer.max_epoks=3; "
                       r"did you mean 'trainer.max_epochs'\?$"):
        build(["--config", DIGITS, "--trainer.max_epoks=3"])


def test_config_wrong_type_and_choice_name_the_key():
    from recipes.cli import build

    with pytest.raises(ConfigError, match=r"^config key 'trainer.max_epochs' must be int or "
                                          r"null, got 'ten'$"):
        build(["--config", DIGITS, "--trainer.max_epochs=ten"])
    with pytest.raises(ConfigError, match=r"^config key 'data.init_args.dataset' must be one of "
                                          r"'digits', 'imagefolder', 'shards', got 'cifar'$"):
        build(["--config", DIGITS, "--data.dataset=cifar"])


def test_config_file_and_overrides_merge():
    config = _parsed("--model.lr=3e-4", "--model.model_kwargs.drop_rate=0.2",
                     "--model.model_kwargs.depth=2", "--trainer.max_epochs=5")
    model = config.model.init_args
    assert model.lr == pytest.approx(3e-4) and config.trainer.max_epochs == 5
    # a dotted key adds to the file's mapping, typed (2, not "2")
    assert model.model_kwargs == {"drop_path_rate": 0.1, "drop_rate": 0.2, "depth": 2}
    assert model.model_name == "vit_nano_patch4_16" and model.warmup_epochs == 5
    # the model's name and variant arguments reach the data module by link
    assert config.data.init_args.model_name == "vit_nano_patch4_16"
    assert config.data.init_args.model_kwargs == model.model_kwargs
    replaced = _parsed("--model.model_kwargs={depth: 1}")      # a whole mapping replaces
    assert replaced.model.init_args.model_kwargs == {"depth": 1}


def test_a_date_override_works_as_typed():
    """Timestamps, paths and numbers need no inner quotes (the old layer read this as a
    datetime and refused it)."""
    config = _parsed("--data=recipes.series.SeriesDataModule", "--data.dataset=csv",
                     "--data.root=my data.csv", "--data.val_start=2017-06-26 00:00:00",
                     "--data.test_start=2017-10-26", "--model=recipes.forecasting.Forecaster",
                     "--model.model_name=patchtst_tiny_l336")
    data = config.data.init_args
    assert (data.val_start, data.test_start, data.root) == \
        ("2017-06-26 00:00:00", "2017-10-26", "my data.csv")


def test_missing_config_file_is_named(tmp_path):
    from recipes.cli import build

    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        build(["--config", str(tmp_path / "nope.yaml")])


def test_print_config_prints_the_resolved_config(capsys):
    import yaml

    with pytest.raises(SystemExit) as done:
        cli.main(["fit", "--config", DIGITS, "--model.lr=0.01", "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["lr"] == 0.01
    assert printed["data"]["class_path"] == "recipes.image.ImageDataModule"
    assert printed["trainer"]["max_epochs"] == 70 and printed["seed_everything"] == 0


def test_old_style_overrides_get_the_new_spelling(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", DIGITS, "trainer.max_epochs=5"])
    assert "overrides are LightningCLI flags: --trainer.max_epochs=5" in capsys.readouterr().err


# --- optimiser --------------------------------------------------------------------------------

def test_param_groups_weight_decay_and_layer_decay():
    model = zoo.create_model("vit_nano_patch4_32", depth=2)
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(by_param) == len(named)
    # matrices decay; norms, biases, positions and the class token do not
    assert by_param[id(named["encoder.blocks.0.attn.qkv.weight"])]["weight_decay"] == 0.05
    for name in ("encoder.blocks.0.norm1.weight", "encoder.blocks.0.attn.qkv.bias",
                 "front_end.pos_embed", "front_end.cls_token"):
        assert by_param[id(named[name])]["weight_decay"] == 0.0, name
    # groups: front end 0, blocks 1..2, head 3 -> lr scales 0.5^3, 0.5^2, 0.5^1, 1
    assert by_param[id(named["front_end.proj.weight"])]["lr"] == pytest.approx(1e-3 * 0.125)
    assert by_param[id(named["encoder.blocks.0.mlp.fc1.weight"])]["lr"] == pytest.approx(1e-3 * 0.25)
    assert by_param[id(named["encoder.blocks.1.mlp.fc1.weight"])]["lr"] == pytest.approx(1e-3 * 0.5)
    assert by_param[id(named["head.fc.weight"])]["lr"] == pytest.approx(1e-3)


def test_warmup_cosine_schedule_shape():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [param], "lr": 1.0}], lr=1.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=20, min_lr_ratio=0.01)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[3] < lrs[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in pairwise(lrs[4:]))
    assert lrs[-1] == pytest.approx(0.01, abs=0.01)


# --- digits: train (tiny), eval, published weights --------------------------------------------

def test_digits_train_then_eval_agree(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", DIGITS, f"--trainer.default_root_dir={out}",
                     "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
                     "--model.model_kwargs.depth=1", *QUIET])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test"] == 360 and metrics["test_split"] == "test"
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "config.yaml").is_file() and (out / "logs" / "metrics.csv").is_file()
    capsys.readouterr()
    code = cli.main(["eval", DIGITS, "--ckpt", str(out / "checkpoints" / "best.ckpt"),
                     "--model.model_kwargs.depth=1", *QUIET])
    assert code == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["test/acc"] == pytest.approx(metrics["metrics"]["test/acc"], abs=1e-6)
    # LightningCLI's own test on the same run folder: the same figure, the run's files untouched;
    # the recipe's config says depth 12, the checkpoint's hyperparameters (depth 1) win
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert cli.main(["test", "--config", DIGITS, f"--trainer.default_root_dir={out}",
                     "--ckpt_path", str(out / "checkpoints" / "best.ckpt")]) == 0
    assert f"{metrics['metrics']['test/acc']:.6f}"[:6] in capsys.readouterr().out
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    # LightningCLI's predict: one CSV row per test image, new files only
    for _ in range(2):
        assert cli.main(["predict", "--config", str(out / "config.yaml"), "--ckpt_path",
                         str(out / "checkpoints" / "best.ckpt")]) == 0
    written = sorted(out.glob("predictions-*.csv"))
    assert len(written) == 2 and written[0].read_text() == written[1].read_text()
    import csv
    with written[0].open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 360 and set(rows[0]) == {"index", "label", "predicted", "probability"}
    accuracy = sum(r["label"] == r["predicted"] for r in rows) / len(rows)
    assert accuracy == pytest.approx(metrics["metrics"]["test/acc"], abs=1e-6)


# --- ImageFolder fine-tuning, predict ---------------------------------------------------------

@pytest.fixture(scope="module")
def timm_tiny_checkpoint(tmp_path_factory) -> Path:
    """A timm vit_tiny_patch16_224 (random weights) saved as timm would ship it."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    path = tmp_path_factory.mktemp("timm") / "vit_tiny_patch16_224.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("mode", ["linear_probe", "full"])
def test_finetune_image_folder_end_to_end(tmp_path, timm_tiny_checkpoint, mode, capsys):
    data = tmp_path / "colors"
    _write_color_folder(data)
    out = tmp_path / f"ft_{mode}"
    extra = ["--layer-decay", "0.75"] if mode == "full" else []
    code = cli.main(["finetune", "vit_tiny_patch16_224", "--data", str(data), "--mode", mode,
                     "--pretrained", str(timm_tiny_checkpoint), "--img-size", "32",
                     "--epochs", "4", "--lr", "5e-3", "--batch-size", "8", "--num-workers", "0",
                     "--output", str(out), *extra, *QUIET])
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["test_split"] == "val" and result["num_test"] == 4
    assert result["metrics"]["test/acc"] == 1.0

    ckpt = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["labels"] == ["blue", "red"]
    tuned = ckpt["state_dict"]
    source = load_file(str(timm_tiny_checkpoint))
    same_patch_embed = torch.equal(tuned["model.front_end.proj.weight"], source["patch_embed.proj.weight"])
    same_block = torch.equal(tuned["model.encoder.blocks.0.mlp.fc1.weight"], source["blocks.0.mlp.fc1.weight"])
    assert same_patch_embed == same_block == (mode == "linear_probe")

    capsys.readouterr()
    image = data / "red" / "0.png"
    assert cli.main(["predict", str(out / "checkpoints" / "best.ckpt"), str(image), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image) and lines[1].split()[0] == "red"


def test_finetune_missing_data_dir_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["finetune", "vit_tiny_patch16_224", "--data", str(tmp_path / "absent")])
    assert code == 2
    assert "absent is not a directory" in capsys.readouterr().err


def test_image_folder_with_empty_class_is_named(tmp_path):
    from zoo.data.images import image_folder_splits

    _write_color_folder(tmp_path / "d", per_class=2)
    (tmp_path / "d" / "green").mkdir()
    with pytest.raises(FileNotFoundError, match="green hold no images"):
        image_folder_splits(tmp_path / "d", train_tf=None, eval_tf=None)


def test_cli_unknown_model_suggests(capsys):
    assert cli.main(["info", "vit_tiny_patch16_22"]) == 2
    assert "Did you mean: vit_tiny_patch16_224" in capsys.readouterr().err


def test_cli_list_and_info(capsys):
    assert cli.main(["list", "vit_*_patch4_*"]) == 0
    listed = capsys.readouterr().out.split()
    assert "vit_tiny_patch4_32" in listed and "vit_base_patch16_224" not in listed
    assert cli.main(["info", "vit_base_patch16_224"]) == 0
    info = capsys.readouterr().out
    assert "86.57 M" in info and "hf-hub:timm/vit_base_patch16_224.augreg2_in21k_ft_in1k" in info


def test_predict_unreadable_image_names_it(tmp_path, capsys):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    assert cli.main(["predict", "vit_nano_patch4_16.digits", str(bad)]) == 2
    assert "not_an_image.png" in capsys.readouterr().err
