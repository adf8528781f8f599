"""Bytes: where weights come from, where they are cached, how they are read safely.

Sources: a file, a directory written by :func:`zoo.save`, an ``http(s)://`` or ``file://`` URL
(downloaded once into ``$ZOO_HOME/downloads``, default ``~/.cache/zoo``, and verified by
sha256 when one is known), or ``hf-hub:org/repo[@revision]`` (through huggingface_hub's own
cache). ``ZOO_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` reads caches only and never touches the
network. Tensors are read with safetensors, or ``torch.load(weights_only=True)``: nothing is
ever unpickled into code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
CONFIG_FILE = "config.json"
_BUNDLED_DIR = Path(__file__).parent / "weights"


class ChecksumError(RuntimeError):
    """A downloaded or cached file whose sha256 is not the expected one."""


class NoNetworkError(FileNotFoundError):
    """Weights that are not in the cache while their server cannot be reached."""


_NO_NETWORK_HINT = "set ZOO_OFFLINE=1 to skip the lookup"
_PROBE_TTL_S = 60.0
_probes: dict[str, tuple[float, bool]] = {}   # host:port -> (time, reachable)


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the server of ``url`` accepts a connection within ``timeout`` seconds.

    huggingface_hub retries a failed request five times with back-off (about 50 s with no
    network), so zoo asks once, quickly, before it starts a download. Name resolution and
    connection run in a helper thread, so a missing DNS server cannot stall the caller past
    ``timeout``; the answer is remembered for a minute per server.
    """
    parts = urllib.parse.urlparse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    key = f"{host}:{port}"
    now = time.monotonic()
    if key in _probes and now - _probes[key][0] < _PROBE_TTL_S:
        return _probes[key][1]
    answer: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    _probes[key] = (now, bool(answer and answer[0]))
    return _probes[key][1]


def zoo_home() -> Path:
    """Root of zoo's cache: ``$ZOO_HOME`` or ``~/.cache/zoo``."""
    return Path(os.environ.get("ZOO_HOME") or Path.home() / ".cache" / "zoo")


def is_offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("ZOO_OFFLINE", "HF_HUB_OFFLINE"))


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, sha256: str | None) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the given sha256 (None: no check)."""
    if sha256 and (actual := sha256_of(path)) != sha256.lower():
        raise ChecksumError(f"{path}: sha256 is {actual}, expected {sha256}")


def download(url: str, *, sha256: str | None = None, filename: str | None = None,
             cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Fetch ``url`` into the cache once and return the cached path.

    A cached file is reused when its sha256 matches (or none is given). A new download goes
    to a temporary file in the cache directory, is verified, then renamed into place, so an
    interrupted or corrupt download never shows up as a cached file.
    """
    cache_dir = Path(cache_dir or zoo_home() / "downloads")
    name = filename or Path(urllib.parse.urlparse(url).path).name or "download"
    if sha256 is None:  # different URLs with the same basename must not collide
        name = f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    target = cache_dir / name
    if target.exists():
        try:
            verify(target, sha256)
            return target
        except ChecksumError as err:
            if is_offline():
                raise
            logger.warning("%s; downloading it again", err)
            target.unlink()
    if is_offline():
        raise FileNotFoundError(f"offline mode: {url} is not in the cache ({target})")
    if urllib.parse.urlparse(url).scheme != "file" and not reachable(url):
        raise NoNetworkError(f"no network (cannot reach {urllib.parse.urlparse(url).hostname}) "
                             f"and {url} is not in the cache ({target}); {_NO_NETWORK_HINT}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s -> %s", url, target)
    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress and total:
                    logger.info("%s: %.0f%%", name, 100 * done / total)
        if sha256 and digest.hexdigest() != sha256.lower():
            raise ChecksumError(
                f"download of {url}: sha256 is {digest.hexdigest()}, expected {sha256}; "
                "the partial file was deleted"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def hf_hub_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """A file from a Hugging Face hub repo through huggingface_hub's cache (offline-aware).

    Without network, a cached file is still used; a file that is not cached fails at once
    (:class:`NoNetworkError`) instead of after huggingface_hub's retries.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    offline = is_offline()
    no_network = not offline and not reachable(constants.ENDPOINT)
    cache_dir = os.environ.get("HF_HUB_CACHE")
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=offline or no_network))
    except (LocalEntryNotFoundError, EntryNotFoundError) as err:
        if no_network and isinstance(err, LocalEntryNotFoundError):
            host = urllib.parse.urlparse(constants.ENDPOINT).hostname
            raise NoNetworkError(
                f"no network (cannot reach {host}) and hf-hub:{repo_id} ({filename}) is not in "
                f"the cache ({cache_dir or constants.HF_HUB_CACHE}); {_NO_NETWORK_HINT}") from err
        where = "in the local cache (offline mode)" if offline else "on the hub"
        raise FileNotFoundError(f"hf-hub:{repo_id}: no {filename} {where}") from err


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from .safetensors, or .pth/.pt/.bin/.ckpt with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, not a checkpoint, or a pickle asking for code
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"cannot read checkpoint {path}: it is not a .safetensors file or a PyTorch "
            f"checkpoint zoo can read safely ({type(err).__name__}: {first})") from err


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a clear error naming the file."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return value


def bundled_file(name: str, sha256: str | None = None) -> Path:
    """A weights file shipped inside the package, verified by sha256 when given."""
    path = _BUNDLED_DIR / name
    verify(path, sha256)
    return path


def _fetch_dir(directory: Path) -> tuple[Path, Path | None]:
    config = directory / CONFIG_FILE
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name, config if config.is_file() else None
    raise FileNotFoundError(f"{directory} holds none of {', '.join(WEIGHT_FILES)}")


def _fetch_hf_hub(spec: str, sha256: str | None = None) -> tuple[Path, Path | None]:
    repo_id, _, revision = spec.partition("@")
    last_err: Exception | None = None
    for name in WEIGHT_FILES:
        try:
            path = hf_hub_file(repo_id, name, revision or None)
        except NoNetworkError:
            raise
        except FileNotFoundError as err:
            last_err = err
            continue
        verify(path, sha256)
        return path, optional_file(f"hf-hub:{spec}", CONFIG_FILE)
    where = " in the local cache (offline mode)" if is_offline() else ""
    raise FileNotFoundError(
        f"hf-hub:{spec}: found none of {', '.join(WEIGHT_FILES)}{where}") from last_err


def optional_file(source: str | Path, filename: str) -> Path | None:
    """``filename`` of a directory or of ``hf-hub:org/repo[@revision]`` (a local path), or
    None where there is no such file (or, without network, none in the cache)."""
    text = str(source)
    if not text.startswith("hf-hub:"):
        path = Path(text).expanduser() / filename
        return path if path.is_file() else None
    repo_id, _, revision = text[len("hf-hub:"):].partition("@")
    try:
        return hf_hub_file(repo_id, filename, revision or None)
    except FileNotFoundError:
        return None


def fetch(source: str | Path, *, sha256: str | None = None
          ) -> tuple[Path, Path | None]:
    """Resolve a weights source to local files: (weights file, its ``config.json`` or None).

    ``source`` is a file, a directory holding ``model.safetensors`` / ``pytorch_model.bin``
    (and maybe ``config.json``), an ``http(s)://`` / ``file://`` URL (downloaded once into the
    cache), or ``hf-hub:org/repo[@revision]`` (through huggingface_hub's cache).
    """
    text = str(source)
    if text.startswith("hf-hub:"):
        return _fetch_hf_hub(text[len("hf-hub:"):], sha256)
    if urllib.parse.urlparse(text).scheme in ("http", "https", "file"):
        return download(text, sha256=sha256), None
    path = Path(text).expanduser()
    if path.is_dir():
        return _fetch_dir(path)
    if not path.exists():
        raise FileNotFoundError(
            f"pretrained={text!r} is not an existing file or directory, a URL or an hf-hub: id"
        )
    verify(path, sha256)
    return path, None
