"""Weights sources: URL downloads and their cache, the Hugging Face hub cache, safe reading,
and zoo packages."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import zoo
from tests.conftest import hf_cache_repo
from zoo import hub

pytestmark = pytest.mark.usefixtures("one_thread", "isolated_caches")

SMALL = dict(depth=2)


def _small_model(name: str = "vit_tiny_patch4_32", seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return zoo.create_model(name, **{**SMALL, **kwargs}).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, size: int = 32) -> bool:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def _save(model: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- URL downloads ------------------------------------------------------------------------------

def test_download_caches_and_reuses_without_the_source(isolated_caches, tmp_path):
    source = tmp_path / "src" / "weights.bin"
    source.parent.mkdir()
    source.write_bytes(os.urandom(3000))
    content, sha = source.read_bytes(), _sha256(source)

    path = hub.download(source.as_uri(), sha256=sha)
    assert path.parent == isolated_caches.downloads and path.read_bytes() == content
    unverified = hub.download(source.as_uri())  # no sha256: a name that cannot collide
    assert unverified != path and unverified.name.endswith("-weights.bin")

    source.unlink()  # a second call must not need the source any more
    assert hub.download(source.as_uri(), sha256=sha) == path
    assert hub.download(source.as_uri()) == unverified
    assert sorted(p.name for p in isolated_caches.downloads.iterdir()) == sorted(
        [path.name, unverified.name])


def test_wrong_checksum_leaves_nothing_in_the_cache(isolated_caches, tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"not the weights you expect" * 100)
    with pytest.raises(hub.ChecksumError, match="sha256"):
        hub.download(source.as_uri(), sha256="0" * 64)
    leftovers = list(isolated_caches.downloads.iterdir()) if isolated_caches.downloads.exists() else []
    assert leftovers == []  # neither the file nor a .part temporary


def test_corrupted_cached_file_is_fetched_again(isolated_caches, tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"abc" * 1000)
    path = hub.download(source.as_uri(), sha256=_sha256(source))
    path.write_bytes(b"tampered")
    again = hub.download(source.as_uri(), sha256=_sha256(source))
    assert again == path and again.read_bytes() == source.read_bytes()


def test_corrupted_cached_file_offline_is_refused(isolated_caches, tmp_path, monkeypatch):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"abc" * 1000)
    path = hub.download(source.as_uri(), sha256=_sha256(source))
    path.write_bytes(b"tampered")
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(hub.ChecksumError, match="sha256"):
        hub.download(source.as_uri(), sha256=_sha256(source))


def test_offline_mode_never_downloads(isolated_caches, tmp_path, monkeypatch):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"x" * 100)  # reachable, but offline mode must not fetch it
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="offline"):
        hub.download(source.as_uri())
    assert not isolated_caches.downloads.exists() or not any(isolated_caches.downloads.iterdir())


def test_create_model_from_file_url(isolated_caches, tmp_path):
    source = _small_model(seed=0)
    path = _save(source, tmp_path / "src" / "model.safetensors")
    model = zoo.create_model("vit_tiny_patch4_32", pretrained=path.as_uri(), **SMALL).eval()
    assert _same_outputs(model, source)
    assert not _same_outputs(_small_model(seed=1), source)
    cached = list(isolated_caches.downloads.iterdir())
    assert len(cached) == 1 and cached[0].read_bytes() == path.read_bytes()


# --- Hugging Face hub cache ---------------------------------------------------------------------

@pytest.fixture
def hf_offline(isolated_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return isolated_caches.hub


def test_hf_hub_plain_weights(hf_offline, tmp_path):
    torch.manual_seed(0)
    source = zoo.create_model("vit_tiny_patch4_32").eval()  # the variant as registered
    data = _save(source, tmp_path / "model.safetensors").read_bytes()
    commit = hf_cache_repo(hf_offline, "org/repo", {"model.safetensors": data})
    for spec in ("hf-hub:org/repo", f"hf-hub:org/repo@{commit}"):
        model = zoo.create_model("vit_tiny_patch4_32", pretrained=spec).eval()
        state = model.state_dict()
        assert state.keys() == source.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in source.state_dict().items())
        assert _same_outputs(model, source)


def test_hf_hub_zoo_package(hf_offline, tmp_path):
    source = _small_model("vit_tiny_patch4_32", num_classes=3)
    package = zoo.save(source, tmp_path / "pkg")
    hf_cache_repo(hf_offline, "org/pkg",
                   {f.name: f.read_bytes() for f in package.iterdir()})
    for model in (zoo.load("hf-hub:org/pkg"),
                  zoo.create_model("vit_tiny_patch4_32", pretrained="hf-hub:org/pkg")):
        # the package's own arguments (depth 2, 3 classes) win over the registry's
        assert len(model.encoder.blocks) == 2 and model.num_classes == 3
        assert _same_outputs(model.eval(), source)


def test_registered_weights_resolve_through_the_hf_cache(hf_offline, timm_vit, tmp_path):
    reference = timm_vit("vit_tiny_patch16_224")
    data = _save(reference, tmp_path / "model.safetensors").read_bytes()
    timm_config = json.dumps({"architecture": "vit_tiny_patch16_224", "num_classes": 1000})
    hf_cache_repo(hf_offline, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k",
                   {"model.safetensors": data, "config.json": timm_config.encode()})
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
    for name in ("vit_tiny_patch16_224", "vit_tiny_patch16_224.augreg_in21k_ft_in1k"):
        model = zoo.create_model(name, pretrained=True).eval()
        assert model.pretrained_cfg.hf_hub_id == "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"
        with torch.no_grad():
            diff = (model(x) - expected).abs().max().item()
        assert diff < 1e-4


def test_missing_from_the_hf_cache_offline(hf_offline):
    with pytest.raises(FileNotFoundError, match="offline"):
        zoo.create_model("vit_tiny_patch16_224", pretrained=True)
    with pytest.raises(FileNotFoundError, match="offline"):
        zoo.create_model("vit_tiny_patch4_32", pretrained="hf-hub:org/absent")


# --- safe reading -------------------------------------------------------------------------------

class _Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    state = dict(_small_model().state_dict())
    torch.save({**state, "extra": _Payload(marker)}, path)

    with pytest.raises(ValueError, match="cannot read checkpoint"):
        zoo.create_model("vit_tiny_patch4_32", pretrained=path, **SMALL)
    with pytest.raises(ValueError):
        hub.load_state_dict_file(path)
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the payload is live: unsafe loading does run it
    assert marker.exists()


def test_truncated_safetensors_names_the_file(tmp_path):
    path = _save(_small_model(), tmp_path / "broken.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=str(path).replace(".", r"\.")):
        zoo.create_model("vit_tiny_patch4_32", pretrained=path, **SMALL)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an existing file"):
        zoo.create_model("vit_tiny_patch4_32", pretrained=tmp_path / "nope.safetensors")


# --- packages -----------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    source = _small_model("vit_tiny_patch4_32", num_classes=3)
    directory = zoo.save(source, tmp_path / "pkg")
    assert {p.name for p in directory.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    config = json.loads((directory / "config.json").read_text())
    assert config["architecture"] == "vit_tiny_patch4_32"
    assert config["model_args"]["depth"] == 2 and config["model_args"]["num_classes"] == 3
    assert config["pretrained_cfg"]["architecture"] == "vit_tiny_patch4_32"
    assert config["pretrained_cfg"]["num_classes"] == 3
    assert config["pretrained_cfg"]["preprocess"]["input_size"] == [3, 32, 32]
    assert "vit_tiny_patch4_32" in (directory / "README.md").read_text()

    loaded = zoo.load(directory).eval()
    assert loaded.model_args == source.model_args
    assert loaded.pretrained_cfg == source.pretrained_cfg
    assert _same_outputs(loaded, source)
    again = zoo.create_model("vit_tiny_patch4_32", pretrained=directory).eval()
    assert _same_outputs(again, source)


def test_package_of_another_architecture_is_refused(tmp_path):
    directory = zoo.save(_small_model("vit_tiny_patch4_32"), tmp_path / "pkg")
    with pytest.raises(zoo.CheckpointMismatchError, match="vit_tiny_patch4_32"):
        zoo.create_model("vit_nano_patch4_32", pretrained=directory)


def test_save_needs_a_zoo_model(tmp_path):
    with pytest.raises(ValueError, match="pretrained_cfg"):
        zoo.save(torch.nn.Linear(2, 2), tmp_path / "pkg")
    with pytest.raises(FileNotFoundError, match="not a zoo package"):
        zoo.load(tmp_path)


@pytest.mark.parametrize("name, kwargs", [
    ("ast_tiny_d6_8k.fsdd", {}),                                 # bundled float16 weights
    ("patchtst_tiny_l336.etth1_h96", {}),
    ("patchtst_tiny_l336.etth1_h96", {"horizon": 24}),           # a new head
    ("vit_nano_patch4_16.digits", {"num_classes": 3}),           # a new classifier
])
def test_loaded_models_are_whole_float32_with_the_fresh_models_flags(name, kwargs):
    """Weights are assigned into a model built on the meta device (no init to pay for): no
    tensor may stay on meta, dtypes and requires_grad are the freshly built model's."""
    fresh = zoo.create_model(name.split(".")[0], **kwargs)
    loaded = zoo.create_model(name, pretrained=True, **kwargs)
    ours = dict(loaded.named_parameters())
    for n, p in fresh.named_parameters():
        assert not ours[n].is_meta and ours[n].dtype == p.dtype == torch.float32, n
        assert ours[n].requires_grad == p.requires_grad, n
    assert all(not b.is_meta for b in loaded.buffers())
    for (n, b), (_, fresh_b) in zip(loaded.named_buffers(), fresh.named_buffers(), strict=True):
        if "running" not in n and "num_batches" not in n:   # computed, not loaded: the same
            assert torch.equal(b, fresh_b), n
    frozen = zoo.create_model("patchtst_tiny_l336", pos_embed="sincos")
    path = _save(frozen, Path(hub.zoo_home()) / "sincos.safetensors")
    again = zoo.create_model("patchtst_tiny_l336", pos_embed="sincos", pretrained=path)
    assert not again.front_end.pos_embed.requires_grad
