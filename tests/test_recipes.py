"""The image recipe end to end: configs, the digits run, ImageFolder fine-tuning, eval, predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from recipes.config import ConfigError, load_config
from recipes.optim import param_groups, warmup_cosine
from zoo import cli
import zoo

QUIET = ["trainer.enable_progress_bar=false"]


def _write_color_folder(root: Path, per_class: int = 10, size: int = 40) -> None:
    """Two classes any model can separate: mostly-red and mostly-blue noisy images."""
    gen = torch.Generator().manual_seed(0)
    for name, channel in (("blue", 2), ("red", 0)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.rand(size, size, 3, generator=gen) * 0.3
            pixels[..., channel] += 0.7
            Image.fromarray((pixels * 255).byte().numpy()).save(root / name / f"{i}.png")


# --- config ---------------------------------------------------------------------------------

def test_config_unknown_key_names_it_and_suggests(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lrate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrate'; did you mean 'optim.lr'"):
        load_config(bad)


def test_config_wrong_type_and_choice_name_the_key():
    with pytest.raises(ConfigError, match=r"'trainer.max_epochs' must be int, got 'ten'"):
        load_config(overrides=["trainer.max_epochs=ten"])
    with pytest.raises(ConfigError, match=r"'data.dataset' must be one of"):
        load_config(overrides=["data.dataset=cifar"])


def test_config_file_and_overrides_merge():
    config = load_config("configs/image/vit_nano_digits.yaml",
                         ["optim.lr=3e-4", "model.kwargs.drop_rate=0.2"])
    assert config.optim.lr == pytest.approx(3e-4)
    assert config.model.kwargs == {"drop_path_rate": 0.1, "drop_rate": 0.2}
    assert config.model.name == "vit_nano_patch4_16"


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


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
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))
    assert lrs[-1] == pytest.approx(0.01, abs=0.01)


# --- digits: train (tiny), eval, published weights --------------------------------------------

def test_digits_train_then_eval_agree(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "configs/image/vit_nano_digits.yaml", f"output_dir={out}",
                     "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                     "model.kwargs.depth=1", *QUIET])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test"] == 360 and metrics["test_split"] == "test"
    assert (out / "checkpoints" / "best.ckpt").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "config.yaml").is_file() and (out / "logs" / "metrics.csv").is_file()
    capsys.readouterr()
    code = cli.main(["eval", "configs/image/vit_nano_digits.yaml", "--ckpt",
                     str(out / "checkpoints" / "best.ckpt"), *QUIET])
    assert code == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["metrics"]["test/acc"] == pytest.approx(metrics["metrics"]["test/acc"], abs=1e-6)


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
