"""Shared fixtures: isolated weight caches, randomly filled timm ViTs, generated audio."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch


def hf_cache_repo(hub_dir: Path, repo_id: str, files: dict[str, bytes]) -> str:
    """Lay ``files`` out as huggingface_hub caches a download of ``repo_id`` at ``main``:
    blobs named by content hash, a snapshot of symlinks, and refs/main naming the commit."""
    repo = hub_dir / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / commit).mkdir(parents=True)
    for name, data in files.items():
        blob = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / blob).write_bytes(data)
        (repo / "snapshots" / commit / name).symlink_to(Path("..") / ".." / "blobs" / blob)
    return commit


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


def timm_model(name: str | None, *, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A timm model filled with noise, in eval mode (``name=None`` builds timm's
    ``VisionTransformer(**kwargs)`` directly).

    Built on the meta device and filled directly: timm's own init would only be overwritten,
    and it costs seconds per large model on two CPU cores. Non-persistent buffers (rotary
    caches) are computed by their modules' own ``init_non_persistent_buffers``.
    """
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        if name is None:  # a shape timm has no name for: its VisionTransformer class as is
            model = timm.models.vision_transformer.VisionTransformer(**kwargs)
        else:
            model = timm.create_model(name, pretrained=False, **kwargs)
    model = model.to_empty(device="cpu")
    for module in model.modules():
        if list(module.buffers(recurse=False)):
            assert hasattr(module, "init_non_persistent_buffers"), \
                f"{type(module).__name__}'s meta-built buffers would be garbage"
            module.init_non_persistent_buffers()
    return fill_with_noise(model, seed)


@pytest.fixture
def timm_vit():
    """Factory: ``timm_vit(name, seed=0, **kwargs)`` -> :func:`timm_model`."""
    return timm_model


@pytest.fixture
def run_cli(capsys):
    """``run_cli(argv)``: ``zoo`` with ``argv``, which must succeed; its JSON output as a dict."""
    import json

    from zoo import cli

    def run(argv: list[str]) -> dict:
        capsys.readouterr()
        code = cli.main(argv)
        captured = capsys.readouterr()
        assert code == 0, captured.err[-2000:]
        return json.loads(captured.out)
    return run


@pytest.fixture
def one_thread():
    """Run torch on one thread: these tests use small tensors, where a second intra-op thread
    costs more than it gains, and on a busy two-core machine it can be 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tone(freq: float, seconds: float, rate: int, seed: int) -> torch.Tensor:
    """A mono tone (S,) near ``freq`` Hz (+0-5%, by seed) with a little noise."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    return 0.5 * torch.sin(2 * math.pi * freq * (1 + 0.05 * torch.rand(1, generator=gen)) * t) \
        + 0.02 * torch.randn(t.shape, generator=gen)


def write_tone_folder(root: Path, per_class: int = 8, rate: int = 16000) -> Path:
    """Two classes any model separates: low (300 Hz) and high (2 kHz) tones, 16 kHz stereo
    .wav and mono .flac mixed, so loading resamples and mixes down."""
    import soundfile as sf

    for label, freq in (("high", 2000.0), ("low", 300.0)):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            wave = make_tone(freq, 0.3 + 0.05 * i, rate, seed=i).numpy()
            if i % 2:
                sf.write(root / label / f"{i}.flac", wave, rate)
            else:
                sf.write(root / label / f"{i}.wav", torch.tensor(wave)[:, None].repeat(1, 2).numpy(), rate)
    return root


@pytest.fixture
def write_tones():
    """Factory: ``write_tones(root, per_class=8)`` -> a tone folder (see :func:`write_tone_folder`)."""
    return write_tone_folder


@pytest.fixture
def tone():
    """Factory: ``tone(freq, seconds, rate, seed)`` -> a mono waveform (S,)."""
    return make_tone


@pytest.fixture(scope="module")
def tone_folder(tmp_path_factory) -> Path:
    """Low / high tone clips, 8 per class (see :func:`write_tone_folder`)."""
    return write_tone_folder(tmp_path_factory.mktemp("tones"))
