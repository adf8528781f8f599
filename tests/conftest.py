"""Shared fixtures: isolated weight caches and randomly filled timm ViTs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest
import torch


@pytest.fixture
def isolated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Point zoo's and huggingface_hub's caches into tmp_path and switch offline mode off."""
    home, hub = tmp_path / "zoo_home", tmp_path / "hub"
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.delenv("ZOO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return SimpleNamespace(home=home, downloads=home / "downloads", hub=hub)


def fill_with_noise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with noise: weights ~ U(-0.04, 0.04), norm scales ~ 1 +/- 0.2,
    so that no bias is 0 and no norm is the identity (a dropped or swapped one would show)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 0.2 if param.ndim == 1 else 0.04
            param.uniform_(-scale, scale, generator=gen)
            if param.ndim == 1 and "norm" in name and name.endswith("weight"):
                param.add_(1.0)
    return model.eval()


@pytest.fixture
def timm_vit():
    """Factory: ``timm_vit(name, seed=0, **kwargs)`` -> a timm model filled with noise, in eval
    mode (``name=None`` builds timm's ``VisionTransformer(**kwargs)`` directly).

    Built on the meta device and filled directly: timm's own init would only be overwritten,
    and it costs seconds per large model on two CPU cores.
    """
    timm = pytest.importorskip("timm")

    def make(name: Optional[str], *, seed: int = 0, **kwargs) -> torch.nn.Module:
        with torch.device("meta"):
            if name is None:  # a shape timm has no name for: its VisionTransformer class as is
                model = timm.models.vision_transformer.VisionTransformer(**kwargs)
            else:
                model = timm.create_model(name, pretrained=False, **kwargs)
        assert not list(model.buffers()), "a meta-built model's buffers would be garbage"
        return fill_with_noise(model.to_empty(device="cpu"), seed)

    return make


@pytest.fixture
def one_thread():
    """Run torch on one thread: these tests use small tensors, where a second intra-op thread
    costs more than it gains, and on a busy two-core machine it can be 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
