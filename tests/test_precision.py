"""Inference precision (zoo.precision): bf16-mixed prediction against float32 on real data,
the float32 default unchanged, and the errors and warnings of bad or slow settings."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
from zoo import precision
from zoo.data.audio import fsdd_items, fsdd_root
from zoo.predict import predict_files


@pytest.fixture(scope="module")
def fsdd_test() -> list[tuple[Path, int]]:
    root = os.environ.get("ZOO_DATA")
    if not root:
        pytest.skip("ZOO_DATA not set: point it at the folder holding fsdd/recordings/")
    return fsdd_items(fsdd_root(root), "test")


@pytest.fixture
def quiet_bf16():
    """bf16-mixed without the emulation warning (CPUs without native bf16 still compute it)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no native bfloat16.*")
        yield


def test_bf16_mixed_keeps_the_bundled_fsdd_model_accurate(fsdd_test, quiet_bf16):
    """All 300 FSDD test recordings through the bundled AST: bf16-mixed labels agree with
    float32's on all but at most 2 files, accuracy within 0.7 points, probabilities within 0.05."""
    model = zoo.create_model("ast_tiny_d6_8k.fsdd", pretrained=True).eval()
    paths, digits = [p for p, _ in fsdd_test], [d for _, d in fsdd_test]
    rows = {p: predict_files(model, paths, batch_size=64, progress=False, num_workers=0,
                             precision=p) for p in precision.PRECISIONS}
    labels = {p: [int(r["label"]) for r in rows[p]] for p in rows}
    accuracy = {p: np.mean(np.array(labels[p]) == digits) for p in labels}
    assert accuracy["32-true"] >= 0.98                       # the card's 99.3% (sanity)
    assert sum(a != b for a, b in zip(labels["32-true"], labels["bf16-mixed"], strict=True)) <= 2
    assert abs(accuracy["bf16-mixed"] - accuracy["32-true"]) <= 0.007
    diff = max(abs(a["probability"] - b["probability"])
               for a, b in zip(rows["32-true"], rows["bf16-mixed"], strict=True))
    assert 0 < diff < 0.05                 # bf16 really ran (float32 would give exactly 0)


def test_float32_default_is_untouched():
    """``32-true`` adds no context: the model's outputs are bit-equal to a plain call."""
    torch.manual_seed(0)
    model = zoo.create_model("vit_nano_patch4_16", num_classes=10).eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.inference_mode():
        plain = model(x)
        with precision.autocast("32-true"):
            assert torch.equal(model(x), plain)
            assert not torch.is_autocast_enabled("cpu")


def test_bf16_mixed_runs_matrix_products_in_bfloat16(quiet_bf16):
    model = torch.nn.Linear(8, 4)
    with torch.inference_mode(), precision.autocast("bf16-mixed"):
        out = model(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16
    assert model.weight.dtype == torch.float32               # the weights stay float32


def test_unknown_precision_is_named(tmp_path):
    model = zoo.create_model("vit_nano_patch4_16.digits", pretrained=True)
    with pytest.raises(ValueError, match=r"precision must be one of 32-true, bf16-mixed, "
                                         r"got 'fp16'"):
        predict_files(model, [tmp_path / "x.png"], precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.autocast("16-mixed")


def test_emulated_bf16_warns(monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda device="cpu": False)
    with pytest.warns(UserWarning, match=r"this CPU has no native bfloat16 instructions .* "
                                         r"runs slower than 32-true"):
        precision.autocast("bf16-mixed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        precision.autocast("32-true")                         # float32 never warns


def test_native_bf16_answers_for_devices():
    assert precision.native_bf16("meta") is False
    if not torch.cuda.is_available():
        assert precision.native_bf16("cuda") is False
    assert isinstance(precision.native_bf16("cpu"), bool)


def test_cli_predict_takes_a_precision(tmp_path, capsys, quiet_bf16):
    from PIL import Image

    from zoo.cli import main

    image = tmp_path / "seven.png"
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(image)
    assert main(["predict", "vit_nano_patch4_16.digits", str(image), "--precision",
                 "bf16-mixed", "--top-k", "2", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == str(image) and out.count("%") == 2
    with pytest.raises(SystemExit):
        main(["predict", "vit_nano_patch4_16.digits", str(image), "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_forecast_long_under_bf16_autocast_stays_close(quiet_bf16):
    """The README's ``with zoo.precision.autocast("bf16-mixed"): forecast_long(...)``: the
    bundled ETTh1 PatchTST on 8 smooth hourly series, forecasts within 2% of float32's
    spread and not equal to them (bf16 really ran), in float64 columns."""
    import pandas as pd

    from zoo.forecasting import forecast_long

    model = zoo.create_model("patchtst_tiny_l336.etth1_h96", pretrained=True).eval()
    t = np.arange(400)
    df = pd.concat([pd.DataFrame({"unique_id": f"s{i}", "ds": pd.date_range(
        "2024-01-01", periods=400, freq="h"), "y": 10 + i + np.sin(2 * np.pi * t / 24)
        + 0.01 * t}) for i in range(8)])
    full = forecast_long(model, df, 24, alias="zoo")
    with precision.autocast("bf16-mixed"):
        half = forecast_long(model, df, 24, alias="zoo")
    assert half["zoo"].dtype == np.float64 and len(half) == 8 * 24
    diff = (half["zoo"] - full["zoo"]).abs().max()
    assert 0 < diff < 0.02 * full["zoo"].std()
