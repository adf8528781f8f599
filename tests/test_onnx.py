"""ONNX export: every modality exports with a dynamic batch axis and matches PyTorch."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

_SKIP = "ONNX export tests need the extra: pip install 'zoo[export]'"
pytest.importorskip("onnxruntime", reason=_SKIP)
onnx = pytest.importorskip("onnx", reason=_SKIP)
pytest.importorskip("onnxscript", reason=_SKIP)

import zoo  # noqa: E402
from zoo.onnx_export import IO_NAMES, check_onnx, example_input, export_onnx  # noqa: E402

# Tiny variants: 2 blocks where the depth does not matter to what is tested (export time
# grows with depth); PatchTST keeps 3 so residual attention crosses more than one block.
MODELS = {
    "image": lambda: zoo.create_model("vit_nano_patch4_16", depth=2),
    "audio": lambda: zoo.create_model("ast_tiny_d6_8k", depth=2),
    "series": lambda: zoo.create_model("patchtst_tiny_l336", horizon=24),  # residual attention,
}                                                                          # nan_policy="raise"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[torch.nn.Module, Path]]:
    """modality -> (model, its ONNX file), exported once at batch 2 from training mode."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("onnx")
    try:
        result = {}
        for modality, make in MODELS.items():
            torch.manual_seed(0)
            model = make().train()
            result[modality] = model, export_onnx(model, out / f"{modality}.onnx", batch_size=2)
        yield result
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("modality", list(MODELS))
def test_matches_pytorch_at_other_batch_sizes(exported, modality: str) -> None:
    model, path = exported[modality]
    assert model.training, "export must restore the model's training mode"
    for batch in (3, 1):
        assert check_onnx(model, path, example_input(model, batch, seed=batch)) < 1e-4


@pytest.mark.parametrize("modality", list(MODELS))
def test_graph_io_and_metadata(exported, modality: str) -> None:
    model, path = exported[modality]
    proto = onnx.load(str(path))
    external = onnx.TensorProto.EXTERNAL
    assert not [t.name for t in proto.graph.initializer if t.data_location == external]
    in_name, in_layout, out_name, out_layout = IO_NAMES[modality]
    (graph_in,), (graph_out,) = proto.graph.input, proto.graph.output
    assert (graph_in.name, graph_out.name) == (in_name, out_name)
    in_dims = [d.dim_param or d.dim_value for d in graph_in.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == list(example_input(model, 1).shape[1:])
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["zoo.architecture"] == model.pretrained_cfg.architecture
    assert meta["zoo.modality"] == modality
    assert meta["zoo.input_name"] == in_name and meta["zoo.input_layout"].startswith(in_layout)
    assert meta["zoo.output_name"] == out_name and meta["zoo.output_layout"] == out_layout
    preprocess = json.loads(meta["zoo.preprocess"])
    assert preprocess == json.loads(json.dumps(dict(model.pretrained_cfg.preprocess)))


# One name per block / position / head kind the image families add (tiny: 2 blocks, 32 wide)
FAMILIES = ["vit_small_patch14_reg4_dinov2",     # registers, positions for patches only
            "vit_base_patch16_siglip_224",       # attention-pool head
            "vit_base_patch16_xp_224",           # parallel blocks, RMSNorm, q/k norms, input norm
            "vit_small_patch16_18x2_224",        # parallel branches
            "vit_base_patch16_rpn_224",          # res-post-norm blocks
            "vit_small_patch16_rope_mixed_224",  # learned rotary frequencies, one table per block
            "vit_small_plus_patch16_dinov3",     # centred rotary positions, SwiGLU
            "vit_pe_core_tiny_patch16_384"]      # rotary on a reference grid, pool over all tokens


@pytest.mark.parametrize("name", FAMILIES)
def test_every_image_family_exports_and_matches(name: str, tmp_path: Path, one_thread) -> None:
    patch = zoo.registry.get_entry(name)[0].args["patch_size"]
    torch.manual_seed(0)
    model = zoo.create_model(name, depth=2, embed_dim=32, num_heads=2, mlp_hidden=None,
                             img_size=3 * patch, num_classes=5)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    for batch in (1, 3):
        assert check_onnx(model, path, example_input(model, batch, seed=batch)) < 1e-4


def test_audio_input_is_the_models_filterbank(exported) -> None:
    """The documented deployment path: waveform -> model.filterbank in PyTorch -> ONNX."""
    model, path = exported["audio"]
    rate = model.fbank_config.sample_rate
    wave = torch.randn(3, rate // 2, generator=torch.Generator().manual_seed(0)) * 0.1  # 0.5 s
    fbank = model.filterbank(wave)
    assert fbank.shape == (3, model.fbank_config.target_frames, model.fbank_config.num_mel_bins)
    assert check_onnx(model, path, fbank) < 1e-4


def test_series_nan_mask_policy(tmp_path: Path, one_thread) -> None:
    torch.manual_seed(0)
    model = zoo.create_model("patchtst_tiny_l336", horizon=24, depth=2, nan_policy="mask")
    path = export_onnx(model, tmp_path / "mask.onnx")
    x = example_input(model, 3)
    x[0, :50, 2] = float("nan")
    x[2, 100:120] = float("nan")
    assert check_onnx(model, path, x) < 1e-4  # NaN in the input, none in either forecast


def test_check_onnx_reports_a_mismatch(exported) -> None:
    model, path = exported["image"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.head.fc.bias.add_(1.0)
    with pytest.raises(RuntimeError, match="differs"):
        check_onnx(other, path, example_input(model, 2))


def test_bad_models_are_refused(exported, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="zoo model"):
        export_onnx(torch.nn.Linear(4, 2), tmp_path / "linear.onnx")
    model, path = exported["image"]
    with pytest.raises(ValueError, match="zoo model"):
        check_onnx(torch.nn.Linear(4, 2), path, torch.zeros(1, 4))
    text = copy.deepcopy(model)
    text.modality = "text"
    with pytest.raises(ValueError, match="modality 'text'"):
        export_onnx(text, tmp_path / "text.onnx")
    with pytest.raises(ValueError, match="batch_size"):
        export_onnx(model, tmp_path / "zero.onnx", batch_size=0)


def test_missing_extras_name_the_install(exported, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model, path = exported["image"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"running ONNX models needs the 'onnxruntime' package: "
                                          r"pip install 'zoo\[export\]'"):
        check_onnx(model, path, example_input(model, 1))
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match=r"zoo\[export\]"):
        export_onnx(model, tmp_path / "x.onnx")
