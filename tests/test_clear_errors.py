"""Errors in the user's language: the command line names its own flags, a checkpoint of another
task or another kind of file says so, unknown arguments are listed with the valid ones, and no
network means a clear answer in seconds, not a minute of retries."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import zoo
from zoo import cli, hub

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1"]


def _error(argv: list[str], capsys) -> str:
    """The error the command line prints for ``argv`` (exit status 2)."""
    capsys.readouterr()
    assert cli.main(argv) == 2
    return capsys.readouterr().err


def test_the_command_line_names_its_flags_not_python_arguments(tmp_path, capsys):
    t = np.arange(400)
    data = tmp_path / "sales.csv"
    pd.DataFrame({"day": pd.date_range("2024-01-01", periods=400, freq="D"),
                  "units": 5 + np.sin(t)}).to_csv(data, index=False)
    err = _error(["forecast", "patchtst_tiny_l336.etth1_h96", str(data)], capsys)   # no 'date'
    assert "no time column 'date'" in err and "--time-column NAME" in err
    assert "--time-column none" in err and "time_column=" not in err
    err = _error(["forecast", "patchtst_tiny_l336.etth1_h96", str(data), "--time-column", "day",
                  "--columns", "unit"], capsys)
    assert "did you mean 'units'" in err and "--columns A,B" in err


@pytest.mark.parametrize("argv, message", [
    (["predict", "vit_nano_patch4_16.digits", "x.png", "--top-k", "0"], "argument --top-k: must be >= 1, got 0"),
    (["forecast", "patchtst_tiny_l336", "x.csv", "--horizon", "0"], "argument --horizon: must be >= 1, got 0"),
    (["finetune", "vit_tiny_patch4_32", "--data", ".", "--epochs", "two"],
     "argument --epochs: expected a whole number, got 'two'"),
])
def test_counts_are_checked_by_flag(argv, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert message in capsys.readouterr().err


def test_a_checkpoint_of_another_task_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "configs/image/vit_nano_digits.yaml", f"--trainer.default_root_dir={run}",
                     "--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--model.model_kwargs.depth=1",
                     *QUIET]) == 0
    err = _error(["eval", "configs/series/patchtst_tiny_etth1.yaml", "--ckpt",
                  str(run / "checkpoints" / "last.ckpt")], capsys)
    assert ("holds a model for image classification (vit_nano_patch4_16), but the config is for "
            "forecasting") in err


def test_unknown_model_arguments_are_named_with_the_valid_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"unknown argument\(s\) 'depht' for vit_tiny_patch4_32 "
                                         r"\(VisionTransformer\); did you mean 'depth'\? Valid: "
                                         r"img_size, patch_size"):
        zoo.create_model("vit_tiny_patch4_32", depht=2)
    err = _error(["train", "configs/image/vit_nano_digits.yaml", f"--trainer.default_root_dir={tmp_path / 'r'}",
                  "--model.model_kwargs.drop_rte=0.1", *QUIET], capsys)
    assert "unknown argument(s) 'drop_rte'" in err and "did you mean 'drop_rate'" in err


def test_weights_that_are_not_weights_get_one_clear_sentence(tmp_path):
    model = zoo.create_model("vit_tiny_patch4_32", depth=1)
    ints = {k: (v * 100).to(torch.int64) for k, v in model.state_dict().items()}
    save_file(ints, str(tmp_path / "ints.safetensors"))
    with pytest.raises(zoo.CheckpointMismatchError, match=r"holds integer tensors where "
                                                          r"VisionTransformer has floating-point"):
        zoo.create_model("vit_tiny_patch4_32", depth=1, pretrained=tmp_path / "ints.safetensors")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    with pytest.raises(ValueError, match=r"photo\.png: it is not a \.safetensors file or a "
                                         r"PyTorch checkpoint zoo can read safely"):
        zoo.create_model("vit_tiny_patch4_32", pretrained=tmp_path / "photo.png")
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match=r"meta\.pt: checkpoint does not hold a mapping of names "
                                         r"to tensors"):
        zoo.create_model("vit_tiny_patch4_32", pretrained=tmp_path / "meta.pt")


# --- no network ---------------------------------------------------------------------------------------

@pytest.fixture
def no_network(isolated_caches, monkeypatch):
    """The hub and downloads point at a closed local port: connecting is refused at once."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hub, "_probes", {})
    return isolated_caches


def test_no_network_and_not_cached_fails_in_seconds_naming_the_fix(no_network):
    start = time.monotonic()
    with pytest.raises(hub.NoNetworkError, match=r"no network \(cannot reach 127\.0\.0\.1\) and "
                                                 r"hf-hub:timm/vit_tiny_patch16_224\.augreg_in21k_ft_in1k "
                                                 r".* is not in the cache .*set ZOO_OFFLINE=1 to skip"):
        zoo.create_model("vit_tiny_patch16_224", pretrained=True)
    with pytest.raises(hub.NoNetworkError, match=r"no network .* http://127\.0\.0\.1:9/w\.safetensors is "
                                                 r"not in the cache"):
        zoo.create_model("vit_tiny_patch4_32", pretrained="http://127.0.0.1:9/w.safetensors")
    assert time.monotonic() - start < 15


def test_cached_weights_load_without_network_and_without_offline_mode(no_network, tmp_path):
    from tests.conftest import hf_cache_repo

    model = zoo.create_model("vit_tiny_patch4_32", depth=1)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    hf_cache_repo(no_network.hub, "someone/tiny", {
        "model.safetensors": (tmp_path / "m.safetensors").read_bytes()})
    loaded = zoo.create_model("vit_tiny_patch4_32", depth=1, pretrained="hf-hub:someone/tiny")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values(), strict=True))
