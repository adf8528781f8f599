"""`zoo export --format onnx --quantize int8`: dynamic int8 ONNX models for every exportable
modality, close to float32; refusals with exact messages; the card's int8 section."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

_SKIP = "int8 export tests need the extra: pip install 'zoo[export]'"
ort = pytest.importorskip("onnxruntime", reason=_SKIP)
onnx = pytest.importorskip("onnx", reason=_SKIP)
pytest.importorskip("onnxscript", reason=_SKIP)

import zoo  # noqa: E402
from recipes.export import (  # noqa: E402
    INT8_SECTION,
    export_model,
    int8_section,
    read_int8_section,
    write_int8_section,
)
from zoo import cli  # noqa: E402
from zoo.onnx_export import example_input, export_onnx  # noqa: E402
from zoo.quantize import (  # noqa: E402
    compare_onnx,
    onnx_forward,
    ort_session,
    quantize_onnx,
    run_onnx,
)

# tiny variants, one per modality ONNX export supports
MODELS = {
    "image": lambda: zoo.create_model("vit_nano_patch4_16", depth=2),
    "audio": lambda: zoo.create_model("ast_tiny_d6_8k", depth=1),
    "series": lambda: zoo.create_model("patchtst_tiny_l336", horizon=24, depth=1),
}


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, tuple[torch.nn.Module, Path, Path]]:
    """modality -> (model, model.onnx, model.int8.onnx)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("int8")
    try:
        result = {}
        for modality, make in MODELS.items():
            torch.manual_seed(0)
            model = make().eval()
            fp32 = export_onnx(model, out / modality / "model.onnx")
            result[modality] = model, fp32, quantize_onnx(fp32, out / modality / "model.int8.onnx")
        yield result
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("modality", list(MODELS))
def test_int8_outputs_are_close_to_float32(quantized, modality: str) -> None:
    model, fp32, int8 = quantized[modality]
    x = example_input(model, 32, seed=3)
    compared = compare_onnx(fp32, int8, x)
    assert 0 < compared["relative_diff"] < 0.1, compared   # rounded, but not far
    if modality == "series":
        assert "top1_agreement" not in compared
    else:
        assert compared["top1_agreement"] >= 0.9, compared
    # every product with a weight matrix is int8; products of activations and convolutions
    # stay float32
    graph = onnx.load(str(int8)).graph
    weights = {t.name for t in graph.initializer}
    ops = [n.op_type for n in graph.node]
    assert "MatMulInteger" in ops and "ConvInteger" not in ops
    assert not [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]


@pytest.mark.parametrize("modality", list(MODELS))
def test_int8_file_keeps_the_metadata_and_says_how_it_was_made(quantized, modality: str) -> None:
    _, fp32, int8 = quantized[modality]
    before = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    after = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert {k: after[k] for k in before if k.startswith("zoo.")} == \
        {k: v for k, v in before.items() if k.startswith("zoo.")}
    assert after["zoo.quantization"].startswith("int8 dynamic (onnxruntime")
    assert "QInt8 per channel" in after["zoo.quantization"]


def test_onnx_forward_runs_the_file_inside_any_evaluation(quantized) -> None:
    model, _, int8 = quantized["series"]
    x = example_input(model, 4, seed=1)
    want = run_onnx(ort_session(int8), x)
    with torch.no_grad():
        eager = model(x)
        with onnx_forward(model, int8):
            got = model(x)
            cut = model.forecast_with_quantiles(x, 12)[0]
        assert torch.equal(model(x), eager)          # PyTorch again after the block
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(cut.numpy(), want[:, :12])
    assert not torch.allclose(got, eager, atol=1e-6)   # it really ran the int8 file


def test_onnx_forward_refuses_what_the_graph_does_not_take(quantized) -> None:
    model, _, int8 = quantized["audio"]
    with onnx_forward(model, int8), pytest.raises(ValueError) as err:
        model(torch.zeros(2, 8000))   # a waveform: the graph takes the filterbank
    assert str(err.value) == (f"{int8} takes fbank of rank 3 ['batch', 100, 64], got shape "
                              "(2, 8000)")


def test_a_broken_int8_model_is_refused(quantized) -> None:
    model, fp32, _ = quantized["image"]
    torch.manual_seed(1)
    other = export_onnx(MODELS["image"]().eval(), fp32.parent / "other.onnx")
    with pytest.raises(RuntimeError, match=r"the quantised model is broken"):
        compare_onnx(fp32, other, example_input(model, 8))


def test_quantize_refusals(quantized, tmp_path: Path) -> None:
    _, fp32, int8 = quantized["image"]
    with pytest.raises(FileExistsError) as err:
        quantize_onnx(fp32, int8)
    assert str(err.value) == f"{int8} exists; zoo never writes over files: choose a new name"
    with pytest.raises(ValueError) as err:
        quantize_onnx(fp32, tmp_path / "m.onnx", mode="int4")
    assert str(err.value) == "quantize must be one of ('int8',), got 'int4'"
    with pytest.raises(FileNotFoundError) as err:
        quantize_onnx(tmp_path / "none.onnx", tmp_path / "m.onnx")
    assert str(err.value) == f"no ONNX file at {tmp_path / 'none.onnx'}"
    assert not list(tmp_path.iterdir())   # nothing left behind




def test_cli_exports_a_registered_model_as_int8(tmp_path: Path, run_cli, one_thread) -> None:
    out = tmp_path / "digits"
    written = run_cli(["export", "vit_nano_patch4_16.digits", str(out), "--format", "onnx",
                    "--quantize", "int8"])
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "config.json", "README.md",
                                               "model.onnx", "model.int8.onnx"}
    assert written["onnx_int8"] == str(out / "model.int8.onnx")
    assert written["int8_top1_agreement"] >= 0.9 and written["int8_relative_diff"] < 0.1
    # a package with an int8 file is still a package: exporting again replaces it whole
    again = run_cli(["export", "vit_nano_patch4_16.digits", str(out)])
    assert "onnx_int8" not in again and not (out / "model.int8.onnx").exists()


def test_cli_flag_parsing_and_refusals(tmp_path: Path, capsys) -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["export", "x", "y", "--format", "onnx", "--quantize", "int8"])
    assert args.quantize == "int8"
    assert parser.parse_args(["export", "x", "y"]).quantize is None
    out = tmp_path / "p"
    assert cli.main(["export", "vit_nano_patch4_16.digits", str(out), "--quantize", "int8"]) == 2
    assert ("--quantize int8 needs --format onnx: the quantised model is an ONNX Runtime file "
            "(model.int8.onnx); PyTorch's own dynamic quantisation (torch.ao) is deprecated"
            ) in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["export", "vit_nano_patch4_16.digits", str(out), "--format", "onnx",
                  "--quantize", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err
    assert not out.exists()


def test_speech_models_are_refused_whole(tmp_path: Path) -> None:
    out = tmp_path / "ctc"
    with pytest.raises(ValueError) as err:
        export_model("ctc_tiny_d4_8k.fsdd_digits", out, fmt="onnx", quantize="int8")
    assert str(err.value) == ("cannot export modality 'speech' of SpeechRecognizer; known "
                              "modalities: image, audio, series")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_users_int8_file_is_never_written_over(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model.int8.onnx").write_text("mine")
    with pytest.raises(FileExistsError, match="is a non-empty folder that is not a zoo package"):
        export_model("vit_nano_patch4_16.digits", out, fmt="onnx", quantize="int8")
    assert (out / "model.int8.onnx").read_text() == "mine"


def test_card_section_round_trips_and_leaves_the_metrics_alone(tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    shutil.copy(Path("model_cards") / "vit_nano_patch4_16.digits.md", card)
    before = card.read_text()
    fp32 = {"digits test top-1": 98.3333, "digits test top-5": 100.0}
    int8 = {"digits test top-1": 98.0556, "digits test top-5": 100.0}
    speed = [{"batch": 1, "fp32_ms": 2.0, "int8_ms": 1.0, "ratio": 2.0}]
    for _ in range(2):   # written twice: replaced, not repeated
        write_int8_section(card, int8_section(fp32, int8, modality="image", speed=speed,
                                              command="python benchmarks/quantization.py"))
    text = card.read_text()
    assert text.count(INT8_SECTION) == 1
    assert text.index(INT8_SECTION) < text.index("## Reproduce")
    assert "| digits test top-1 | 98.33 | 98.06 | -0.28 points |" in text
    assert "| 1 | 2.00 | 1.00 | 2.00x |" in text
    assert read_int8_section(card) == {"digits test top-1": (98.33, 98.06),
                                       "digits test top-5": (100.0, 100.0)}
    metrics = before.split("## Metrics")[1].split("\n## ")[0]
    assert metrics in text   # the Metrics section is untouched
    card.write_text(before.replace(INT8_SECTION, "## Something else"))
    assert read_int8_section(card) is None
