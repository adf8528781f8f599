"""Audio datasets: decoding clips to mono waveforms, the Free Spoken Digit Dataset (FSDD) and
``AudioFolder`` trees of the user's own clips (one sub-folder per class)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import soundfile as sf
import torch

from zoo import hub
from zoo.data import data_root

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
Item = tuple[Path, int]
SILENCE_PEAK = 1e-4   # a clip whose peak is below this (-80 dBFS) is reported as silent


class AudioDecodeError(ValueError):
    """An audio file that cannot be turned into a mono waveform; the message names the file."""


def resample(waveform: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """(..., S) float waveform at ``orig_rate`` Hz -> (..., S * new_rate / orig_rate) at ``new_rate``."""
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be > 0 Hz, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return waveform
    return _resampler(int(orig_rate), int(new_rate), waveform.dtype)(waveform)


@functools.lru_cache(maxsize=16)
def _resampler(orig_rate: int, new_rate: int, dtype: torch.dtype) -> torch.nn.Module:
    """torchaudio's ``Resample`` (the filter of ``torchaudio.functional.resample``, same
    defaults): its windowed-sinc kernel is computed once per pair of rates, not per call."""
    import torchaudio.transforms as AT
    return AT.Resample(orig_rate, new_rate, dtype=dtype)


PAD_LIMIT = 1.5   # resample_clips pads a clip to at most 1.5x its length to share a call


def resample_clips(waveforms: Sequence[torch.Tensor], orig_rate: int, new_rate: int
                   ) -> list[torch.Tensor]:
    """Clips (S_i,) at ``orig_rate`` -> each at ``new_rate`` (ceil(S_i * new / orig) samples),
    as :func:`resample` gives them one by one, in a few batched calls.

    Clips of similar length (sorted; the longest of a group at most ``PAD_LIMIT`` times the
    shortest) are zero-padded into one (B, S) call: the filter sees zeros past a clip's end
    either way, so each clip's samples are its own. Grouping bounds the padding, so one long
    recording does not make every short clip as long.
    """
    if orig_rate == new_rate:
        return list(waveforms)
    order = sorted(range(len(waveforms)), key=lambda i: waveforms[i].numel())
    out: list[torch.Tensor] = [torch.empty(0)] * len(waveforms)
    start = 0
    while start < len(order):
        shortest = waveforms[order[start]].numel()
        end = start + 1
        while end < len(order) and waveforms[order[end]].numel() <= PAD_LIMIT * shortest:
            end += 1
        group = order[start:end]
        padded = torch.nn.utils.rnn.pad_sequence([waveforms[i] for i in group], batch_first=True)
        resampled = resample(padded, orig_rate, new_rate)                    # (B, S')
        for row, i in enumerate(group):
            size = -(-waveforms[i].numel() * new_rate // orig_rate)          # ceil
            out[i] = resampled[row, :size].clone()                           # not a view of B rows
        start = end
    return out


def _declared_wav_frames(path: Path) -> int | None:
    """The frames a WAV file's header declares (its data chunk's size), or None for other
    files; libsndfile reports the frames actually present, so a cut file looks whole to it."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while len(chunk := f.read(8)) == 8:
            name, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if name == b"data":
                return size // block_align if block_align else None
            body = f.read(size + size % 2)        # chunks are padded to an even size
            if name == b"fmt " and len(body) >= 14:
                block_align = int.from_bytes(body[12:14], "little") or None
    return None


def load_audio(path: str | Path, *, sample_rate: int | None = None,
               channels: str = "mix") -> tuple[torch.Tensor, int]:
    """Decode an audio file to a mono float32 waveform (S,) in [-1, 1] and its rate in Hz.

    ``channels="mix"`` averages multi-channel audio, ``"error"`` refuses it. With
    ``sample_rate`` the clip is resampled to that rate when it differs from the file's. A clip
    that is silent, exceeds [-1, 1] or decodes shorter than its header says is used with a
    warning naming the file; one that cannot be decoded raises :class:`AudioDecodeError`.
    """
    if channels not in ("mix", "error"):
        raise ValueError(f"channels must be 'mix' or 'error', got {channels!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}")
    try:
        declared = _declared_wav_frames(path) or sf.info(str(path)).frames
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)   # (S, C)
    except (sf.SoundFileError, RuntimeError) as err:
        reason = getattr(err, "error_string", None) or str(err)
        raise AudioDecodeError(f"cannot decode audio file {path}: {reason}") from err
    if data.shape[0] == 0:
        raise AudioDecodeError(f"audio file {path} holds no samples")
    if 0 < data.shape[0] < declared:
        logger.warning("%s: decoded %d of the %d samples its header declares (a truncated "
                       "file?); using what was decoded", path, data.shape[0], declared)
    peak = float(abs(data).max())
    if peak > 1.0:
        logger.warning("%s: samples reach %.2f, beyond [-1, 1] (clipped or not normalised "
                       "float audio); used as they are", path, peak)
    elif peak < SILENCE_PEAK:
        logger.warning("%s: the clip is silent (peak below %.0e)", path, SILENCE_PEAK)
    waveform = torch.from_numpy(data)
    if waveform.shape[1] > 1:
        if channels == "error":
            raise AudioDecodeError(
                f"audio file {path} has {waveform.shape[1]} channels; expected mono "
                "(channels='mix' averages them)")
        logger.debug("%s: averaging %d channels to mono", path, waveform.shape[1])
    waveform = waveform.mean(dim=1)
    if not torch.isfinite(waveform).all():
        raise AudioDecodeError(f"audio file {path} holds non-finite samples (NaN or inf)")
    if sample_rate is not None and sample_rate != rate:
        logger.info("resampling %s from %d Hz to %d Hz", path, rate, sample_rate)
        waveform, rate = resample(waveform, rate, sample_rate), sample_rate
    return waveform.contiguous(), int(rate)


def load_clips(paths: Sequence[str | Path], *, sample_rate: int, channels: str = "mix",
               on_error: str = "raise") -> tuple[list[torch.Tensor], list[int]]:
    """Decode ``paths`` at ``sample_rate``: (waveforms (S_i,), indices into ``paths`` that loaded).

    ``on_error="skip"`` logs a warning naming each undecodable file and leaves it out;
    ``"raise"`` re-raises its :class:`AudioDecodeError`.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    waveforms, loaded = [], []
    for i, path in enumerate(paths):
        try:
            waveform, _ = load_audio(path, sample_rate=sample_rate, channels=channels)
        except AudioDecodeError as err:
            if on_error == "raise":
                raise
            logger.warning("skipping clip %d: %s", i, err)
            continue
        waveforms.append(waveform)
        loaded.append(i)
    if len(loaded) < len(paths):
        logger.warning("skipped %d of %d audio clips", len(paths) - len(loaded), len(paths))
    return waveforms, loaded


# --- Free Spoken Digit Dataset ------------------------------------------------------------------

FSDD_LABELS = tuple(str(i) for i in range(10))
FSDD_SAMPLE_RATE = 8000
FSDD_NUM_CLIPS = 3000          # 10 digits x 6 speakers x 50 takes, at commit 26eb9aa
FSDD_COMMIT = "26eb9aa"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.zip"
# GitHub builds archive zips on demand and their bytes (timestamps, compression) are not stable,
# so the zip has no fixed sha256: the extracted content is verified instead. This is the sha256
# of the sorted lines "{file name} {sha256 of its bytes}\n" over all 3,000 recordings
# (see fsdd_content_digest), computed from a copy of commit 26eb9aa.
FSDD_RECORDINGS_SHA256 = "dbd573d7cafe79c4b49f65718115e1304e24e067fa39eff18a660dc6cb9c360f"
# take-index ranges [lo, hi) per split: the standard protocol tests on takes 0-4 and trains on
# the rest; "fit" and "val" split the training takes ("train" = "fit" + "val").
FSDD_SPLITS: dict[str, tuple[int, int | None]] = {
    "train": (5, None), "test": (0, 5), "fit": (10, None), "val": (5, 10)}
_FSDD_NAME = re.compile(r"(\d)_([^_]+)_(\d+)\.wav")


def fsdd_root(configured: str | Path | None = None, *, strict: bool = True) -> Path:
    """The FSDD folder (holding ``recordings/``): ``data_root(configured)/fsdd``, or the data
    root itself when it holds ``recordings/``. ``strict`` requires all 3,000 recordings."""
    base = data_root(configured)
    for root in (base / "fsdd", base):
        if (root / "recordings").is_dir():
            break
    else:
        raise FileNotFoundError(
            f"no FSDD recordings at {base / 'fsdd' / 'recordings'} (nor {base / 'recordings'}); "
            "set $ZOO_DATA (or the config's data root) to the folder holding fsdd/recordings/, "
            f"or fetch the dataset once with zoo.data.audio.download_fsdd('{base / 'fsdd'}')")
    if strict:
        count = sum(1 for _ in (root / "recordings").glob("*.wav"))
        if count != FSDD_NUM_CLIPS:
            raise ValueError(
                f"{root / 'recordings'} holds {count} .wav files, but a full FSDD (commit "
                f"{FSDD_COMMIT}) has {FSDD_NUM_CLIPS}; remove it and call download_fsdd again")
    return root


def fsdd_items(root: str | Path, split: str) -> list[Item]:
    """(path, digit) pairs of one FSDD split, sorted by (digit, speaker, take).

    Splits by take index: "test" 0-4 (300 clips), "train" 5-49 (2,700) = "val" 5-9 (300)
    + "fit" 10-49 (2,400).
    """
    if split not in FSDD_SPLITS:
        raise ValueError(f"split must be one of {sorted(FSDD_SPLITS)}, got {split!r}")
    lo, hi = FSDD_SPLITS[split]
    recordings = Path(root) / "recordings"
    if not recordings.is_dir():
        raise FileNotFoundError(f"{recordings} does not exist (see zoo.data.audio.fsdd_root)")
    keyed = []
    for path in recordings.glob("*.wav"):
        match = _FSDD_NAME.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path}: not an FSDD recording name ({{digit}}_{{speaker}}_{{take}}.wav)")
        digit, speaker, take = int(match[1]), match[2], int(match[3])
        if lo <= take and (hi is None or take < hi):
            keyed.append(((digit, speaker, take), path))
    return [(path, key[0]) for key, path in sorted(keyed)]


def fsdd_content_digest(recordings_dir: str | Path) -> str:
    """sha256 over the sorted lines ``"{name} {sha256(bytes)}\\n"`` of the ``*.wav`` files."""
    recordings_dir = Path(recordings_dir)
    if not recordings_dir.is_dir():
        raise FileNotFoundError(f"{recordings_dir} does not exist")
    lines = sorted(f"{p.name} {hub.sha256_of(p)}\n" for p in recordings_dir.glob("*.wav"))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _check_fsdd_content(recordings: Path, where: str) -> None:
    digest = fsdd_content_digest(recordings)
    if digest != FSDD_RECORDINGS_SHA256:
        raise hub.ChecksumError(f"{where}: FSDD content digest is {digest}, expected "
                                f"{FSDD_RECORDINGS_SHA256} (commit {FSDD_COMMIT})")


def _extract_fsdd(archive: Path, dest: Path) -> None:
    """Copy ``recordings/*.wav`` and the top-level README / LICENSE out of the GitHub archive
    (whose members sit under one ``<repo>-<commit>/`` folder) into ``dest``."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{archive} is not a zip archive ({err}); delete it and retry") from err
    with zf:
        members = zf.infolist()
        for info in members:  # refuse the whole archive before writing anything
            name = info.filename.replace("\\", "/")
            parts = PurePosixPath(name).parts
            if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
                raise ValueError(f"{archive}: refusing unsafe member {info.filename!r} "
                                 "(an absolute path or '..' would write outside the dataset folder)")
        tops = {PurePosixPath(i.filename).parts[0] for i in members if i.filename}
        strip = len(tops) == 1 and tops != {"recordings"}
        (dest / "recordings").mkdir(parents=True)
        for info in members:
            rel = PurePosixPath(info.filename).parts[int(strip):]
            wanted = (len(rel) == 2 and rel[0] == "recordings" and rel[1].lower().endswith(".wav")) \
                or (len(rel) == 1 and rel[0].upper().startswith(("README", "LICENSE")))
            if wanted and not info.is_dir():
                with zf.open(info) as src, open(dest.joinpath(*rel), "wb") as out:
                    shutil.copyfileobj(src, out)


def download_fsdd(root: str | Path) -> Path:
    """Fetch FSDD (commit 26eb9aa) into ``root/recordings`` once and return ``root``.

    The zip goes through :func:`zoo.hub.download` (cached, honours ``ZOO_OFFLINE``); it is
    extracted into a temporary folder under ``root``, its content verified against
    ``FSDD_RECORDINGS_SHA256``, then renamed into place. A mismatch raises
    :class:`zoo.hub.ChecksumError` and leaves nothing behind. An existing ``root/recordings`` is
    verified, never overwritten.
    """
    root = Path(root).expanduser()
    if (root / "recordings").is_dir():
        _check_fsdd_content(root / "recordings", f"existing {root / 'recordings'}")
        return root
    archive = hub.download(FSDD_URL, filename=f"free-spoken-digit-dataset-{FSDD_COMMIT}.zip")
    created = [p for p in (root, *root.parents) if not p.exists()]  # to remove on failure
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    try:
        _extract_fsdd(archive, tmp)
        _check_fsdd_content(tmp / "recordings",
                            f"{FSDD_URL} (cached as {archive}; delete it to download again)")
        for item in sorted(tmp.iterdir(), key=lambda p: p.name == "recordings"):  # recordings last
            os.replace(item, root / item.name)
    except BaseException:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("FSDD extracted and verified in %s", root)
    return root


# --- AudioFolder --------------------------------------------------------------------------------

def _scan_audio_folder(root: Path) -> tuple[list[str], list[Item]]:
    """(sorted class names, (path, class index) of every audio file) of ``root/<class>/...``;
    hidden files and folders (names starting with '.') are ignored."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"audio folder {root} does not exist; expected one sub-folder per class "
            f"(e.g. {root}/dog/1.wav, {root}/cat/2.wav), or train/ and val/ folders laid out so")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{root} has no class sub-folders (expected {root}/<class>/<audio file>)")
    items, empty = [], []
    for label, name in enumerate(classes):
        files = sorted(f for f in (root / name).rglob("*")
                       if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file()
                       and not any(part.startswith(".") for part in f.relative_to(root).parts))
        if not files:
            empty.append(name)
        items += [(f, label) for f in files]
    if empty:
        raise FileNotFoundError(f"{root}: class folder(s) {', '.join(empty)} hold no audio files "
                                f"({', '.join(AUDIO_SUFFIXES)})")
    return classes, items


def audio_folder_items(root: str | Path, *, val_fraction: float = 0.2, seed: int = 0
                       ) -> tuple[list[Item], list[Item], list[Item] | None, list[str]]:
    """(train, val, test or None, class names) of (path, class index) from an AudioFolder tree.

    With ``root/train`` and ``root/val`` (optionally ``root/test``) those are used as given;
    otherwise ``root`` holds one folder per class, split per class into train / val with a
    ``torch.Generator`` seeded by ``seed`` (a class with a single clip stays in train).
    """
    root = Path(root).expanduser()
    if (root / "train").is_dir() or (root / "val").is_dir():
        splits = {p: _scan_audio_folder(root / p) for p in ("train", "val", "test")
                  if p != "test" or (root / "test").is_dir()}
        classes = splits["train"][0]
        for part, (part_classes, _) in splits.items():
            if part_classes != classes:
                raise ValueError(f"{root}: train classes {classes} differ from {part} classes {part_classes}")
        test = splits["test"][1] if "test" in splits else None
        return splits["train"][1], splits["val"][1], test, classes
    classes, items = _scan_audio_folder(root)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in range(len(classes)):
        members = [item for item in items if item[1] == label]
        order = torch.randperm(len(members), generator=generator).tolist()
        n_val = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        val += [members[j] for j in order[:n_val]]
        train += [members[j] for j in order[n_val:]]
    return sorted(train, key=_by_label), sorted(val, key=_by_label), None, classes


def _by_label(item: Item) -> tuple[int, Path]:
    return item[1], item[0]
