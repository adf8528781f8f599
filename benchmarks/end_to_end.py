"""Classifying files end to end, zoo against its peers: decoding, resampling, batching and the
model, from a folder of files on disk to top-k labels, in one process with the same weights.

    python benchmarks/end_to_end.py                    # audio and images, about 11 minutes
    python benchmarks/end_to_end.py --only e2e_audio   # about 6 minutes on 2 cores

Audio (``e2e_audio``): 512 FSDD recordings (``$ZOO_DATA/fsdd``: real speech, 8 kHz, 16-bit
mono), the first 512 in name order that last at most 1 s, copied as they are into a temporary
folder: users' files seldom come at the model's rate, so both sides resample 8 -> 16 kHz. Two
random-weight classifiers, each saved as transformers saves it and read by zoo's converter
(``zoo.load(folder)``): an ``ASTForAudioClassification`` (hidden 192, 6 layers, 3 heads, 128
mel x 100 frames, strides 10) with its ``ASTFeatureExtractor``, and a
``WhisperForAudioClassification`` (hidden 192, 4 layers, 3 heads, 80 mel, a 2 s chunk: 200
frames, 100 positions) with its ``WhisperFeatureExtractor``. The peer is
``transformers.pipeline("audio-classification")`` called on all the files with a
``batch_size``. There is no ffmpeg here, so the pipeline cannot open file names itself: the
peer reads each file with soundfile in a dataset that hands the pipeline ``{"raw": array,
"sampling_rate": sr}`` dicts (the pipeline resamples and extracts features), and gets the
faster of 0 and 2 DataLoader workers. zoo: ``predict_files(model, collect_inputs([folder],
model), batch_size=...)``.

Images (``e2e_images``): 512 photo-like files (smooth random content with grain, 300-640 px
sides; JPEG, every 16th a PNG) in a temporary folder. timm ``vit_tiny_patch16_224`` (random
weights) with timm's own ``resolve_data_config`` + ``create_transform`` and a torch
``DataLoader`` over the files (PIL ``open().convert("RGB")``, as ``ImageFolder`` reads), with
the fastest of 0, 1 and 2 workers; zoo: the same weights through ``to_zoo_state_dict``, and
``predict_files``.

Before timing, every file's top-1 label is checked equal on both sides (``top1_equal``; for
images up to 1% may differ: timm resizes with PIL, zoo with torchvision's uint8 kernel, and the
two round some pixels one level apart, which can flip a near-tie of a random-weight model),
and the largest difference of the top-k probabilities is reported (``max_prob_diff``). Rows are bench.py's:
``ratio`` = the peer's seconds over zoo's (above 1: zoo is faster), ``*_per_s`` = files per
second.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from zoo.precision import PRECISIONS  # noqa: E402

NUM_FILES = 512
BATCH = 32
AUDIO_MAX_S = 1.0          # AST's 100 frames at 16 kHz cover 1.015 s: every clip one window
PEER_WORKERS = (0, 2)


# --- files ----------------------------------------------------------------------------------------

def fsdd_files(folder: Path, n: int = NUM_FILES, max_seconds: float = AUDIO_MAX_S) -> list[Path]:
    """Copy the first ``n`` FSDD recordings (name order) of at most ``max_seconds`` into
    ``folder``; returns the copies."""
    import soundfile as sf

    from zoo.data.audio import fsdd_root

    chosen = []
    for path in sorted((fsdd_root(os.environ.get("ZOO_DATA")) / "recordings").glob("*.wav")):
        info = sf.info(str(path))
        if info.frames <= max_seconds * info.samplerate:
            chosen.append(path)
        if len(chosen) == n:
            break
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} FSDD clips last at most {max_seconds} s")
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(p, folder / p.name)) for p in chosen]


def photo_files(folder: Path, n: int = NUM_FILES, seed: int = 0) -> list[Path]:
    """``n`` photo-like images (smooth colour fields plus grain, sides 300-640 px), JPEG at
    quality 90, every 16th a PNG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(300, 641, 2))
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
        image = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
        path = folder / f"img_{i:04d}.{'png' if i % 16 == 15 else 'jpg'}"
        image.save(path, quality=90) if path.suffix == ".jpg" else image.save(path)
        paths.append(path)
    return paths


def _noisy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights drawn again, large enough that random classifiers are confident (so that a
    top-1 label is decided by the input, not by a 1e-6 tie)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.uniform_(-0.1, 0.1, generator=gen)
                if "norm" in name and name.endswith("weight"):
                    p.add_(1.0)
            else:
                p.normal_(0, 1.5 / p[0].numel() ** 0.5, generator=gen)
    return model.eval()


# --- audio ------------------------------------------------------------------------------------------

def hf_audio_folders(root: Path) -> dict[str, Path]:
    """The two random-weight HF audio classifiers and their feature extractors, saved."""
    import transformers

    labels = {i: str(i) for i in range(10)}
    ast = transformers.ASTConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                                 intermediate_size=768, max_length=100, num_mel_bins=128,
                                 frequency_stride=10, time_stride=10, id2label=labels,
                                 label2id={v: k for k, v in labels.items()})
    whisper = transformers.WhisperConfig(
        d_model=192, encoder_layers=4, encoder_attention_heads=3, encoder_ffn_dim=768,
        decoder_layers=1, decoder_attention_heads=3, decoder_ffn_dim=64, vocab_size=64,
        max_source_positions=100, max_target_positions=8, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, decoder_start_token_id=1, classifier_proj_size=64, id2label=labels,
        label2id={v: k for k, v in labels.items()})
    made = {
        "AST": (transformers.ASTForAudioClassification(ast),
                transformers.ASTFeatureExtractor(sampling_rate=16000, num_mel_bins=128,
                                                 max_length=100)),
        "Whisper": (transformers.WhisperForAudioClassification(whisper),
                    transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=2)),
    }
    folders = {}
    for seed, (name, (model, extractor)) in enumerate(made.items()):
        torch.manual_seed(seed)
        folders[name] = root / name
        _noisy(model, seed).save_pretrained(folders[name])
        extractor.save_pretrained(folders[name])
    return folders


class SoundfileClips(torch.utils.data.Dataset):
    """Files -> the pipeline's ``{"raw": (S,) float32, "sampling_rate": Hz}`` (no ffmpeg here)."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import soundfile as sf

        data, rate = sf.read(str(self.paths[i]), dtype="float32")
        return {"raw": data, "sampling_rate": rate}


def audio_rows(*, warmup: int = 0, rounds: int = 3) -> list[dict[str, Any]]:
    import transformers

    import zoo
    from zoo.predict import collect_inputs, predict_files

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = fsdd_files(Path(tmp) / "clips")
        for name, folder in hf_audio_folders(Path(tmp) / "models").items():
            ours = zoo.load(folder).eval()
            # transformers' bf16: the pipeline's own dtype (bf16 weights, inputs cast to
            # them); an autocast around the call would also make its resampling bf16
            pipes = {p: transformers.pipeline("audio-classification", model=str(folder),
                                              device="cpu", dtype=dtype)
                     for p, dtype in (("32-true", torch.float32),
                                      ("bf16-mixed", torch.bfloat16))}

            def zoo_side(precision: str, ours: Any = ours) -> list[dict[str, Any]]:
                paths = collect_inputs([files[0].parent], ours)
                return predict_files(ours, paths, batch_size=BATCH, progress=False,
                                     precision=precision)

            def peer_side(workers: int, precision: str, pipes: Any = pipes
                          ) -> list[list[dict[str, Any]]]:
                return list(pipes[precision](SoundfileClips(files), batch_size=BATCH,
                                             num_workers=workers, top_k=5))

            rows += _compare(f"{name} 192, {NUM_FILES} FSDD wavs 8 kHz -> 16 kHz, b{BATCH}",
                             "transformers pipeline (soundfile dicts)", zoo_side, peer_side,
                             files, warmup=warmup, rounds=rounds, peer_workers=PEER_WORKERS)
    return rows


# --- images -----------------------------------------------------------------------------------------

class PILFiles(torch.utils.data.Dataset):
    """Image files -> ``transform(PIL RGB image)``, read as torchvision's ``ImageFolder`` does."""

    def __init__(self, paths: list[Path], transform: Callable) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with open(self.paths[i], "rb") as f:
            return self.transform(Image.open(f).convert("RGB"))


def image_rows(*, warmup: int = 0, rounds: int = 3) -> list[dict[str, Any]]:
    import timm
    from timm.data import create_transform, resolve_data_config

    import zoo
    from zoo.convert import to_zoo_state_dict
    from zoo.data.images import resolve_labels
    from zoo.precision import autocast
    from zoo.predict import collect_inputs, predict_files

    torch.manual_seed(0)
    peer = _noisy(timm.create_model("vit_tiny_patch16_224", pretrained=False), 0)
    ours = zoo.create_model("vit_tiny_patch16_224").eval()
    ours.load_state_dict(to_zoo_state_dict(peer.state_dict()))
    labels = resolve_labels(ours.pretrained_cfg.labels, ours.num_classes)
    transform = create_transform(**resolve_data_config({}, model=peer))
    with tempfile.TemporaryDirectory() as tmp:
        files = photo_files(Path(tmp) / "photos")

        def zoo_side(precision: str) -> list[dict[str, Any]]:
            paths = collect_inputs([files[0].parent], ours)
            return predict_files(ours, paths, batch_size=BATCH, progress=False,
                                 precision=precision)

        def peer_side(workers: int, precision: str) -> list[list[dict[str, Any]]]:
            loader = torch.utils.data.DataLoader(PILFiles(files, transform), batch_size=BATCH,
                                                 num_workers=workers)
            out = []
            with torch.inference_mode():
                for batch in loader:
                    with autocast(precision):
                        logits = peer(batch)
                    top = logits.float().softmax(-1).topk(5)
                    out += [[{"label": labels[j], "score": p} for p, j in zip(ps, js, strict=True)]
                            for ps, js in zip(top.values.tolist(), top.indices.tolist(),
                                              strict=True)]
            return out

        return _compare(f"ViT vit_tiny_patch16_224, {NUM_FILES} JPEG/PNG 300-640 px, b{BATCH}",
                        "timm transform + DataLoader", zoo_side, peer_side, files,
                        warmup=warmup, rounds=rounds, peer_workers=(0, 1, 2),
                        allowed_mismatches=NUM_FILES // 100)


# --- comparing and timing -------------------------------------------------------------------------

def _agreement(case: str, ours: list[dict[str, Any]], theirs: list[list[dict[str, Any]]],
               files: list[Path], allowed_mismatches: int) -> dict[str, Any]:
    """Top-1 agreement and the largest top-k probability difference of the two sides; an
    AssertionError past ``allowed_mismatches`` differing files."""
    mismatched = [p.name for p, a, b in zip(files, ours, theirs, strict=True)
                  if a["label"] != b[0]["label"]]
    diff = max(abs(pa - b["score"]) for a, bs in zip(ours, theirs, strict=True)
               for (_, pa), b in zip(a["top_k"], bs, strict=True))
    if len(mismatched) > allowed_mismatches:
        raise AssertionError(f"{case}: top-1 differs on {len(mismatched)} files, e.g. "
                             f"{mismatched[:5]} (max prob diff {diff:.2e})")
    return {"top1_equal": f"{len(files) - len(mismatched)}/{len(files)}",
            "max_prob_diff": float(f"{diff:.2e}")}


def _compare(case: str, peer_name: str, zoo_side: Callable[[str], list[dict[str, Any]]],
             peer_side: Callable[[int, str], list[list[dict[str, Any]]]], files: list[Path], *,
             warmup: int, rounds: int, peer_workers: tuple[int, ...],
             allowed_mismatches: int = 0) -> list[dict[str, Any]]:
    """Both sides at float32 (``32-true``) and at bf16 (zoo: ``bf16-mixed``, bfloat16
    autocast; the peer: its own bf16, see the callers): check top-1 labels agree on every file
    (but ``allowed_mismatches``), pick the peer's fastest worker count at float32 (one timed
    call each), then time the four interleaved. Rows: float32 vs float32, bf16 vs bf16 (like
    for like) and zoo's bf16 vs the peer's float32 (what switching zoo's flag gives a user of
    the peer). bfloat16 moves probabilities by ~1e-2, which flips the near ties of these
    random-weight models (a 1,000-class ViT on random photos especially), so rows involving
    bf16 only fail past 10% of files differing; what bf16 costs in accuracy is measured on
    the bundled weights (benchmarks/quantization.py)."""
    import time

    from bench import _ratio_rows, interleaved

    ours = {p: zoo_side(p) for p in PRECISIONS}
    assert [Path(r["path"]).name for r in ours["32-true"]] == [p.name for p in files], \
        "zoo's row order"
    peer_seconds = {}
    for workers in peer_workers:
        start = time.perf_counter()
        theirs = peer_side(workers, "32-true")
        peer_seconds[workers] = time.perf_counter() - start
    best = min(peer_seconds, key=peer_seconds.__getitem__)
    theirs_bf16 = peer_side(best, "bf16-mixed")
    loose = len(files) // 10
    checks = {("32-true", "32-true"): _agreement(case, ours["32-true"], theirs, files,
                                                 allowed_mismatches),
              ("bf16-mixed", "bf16-mixed"): _agreement(case, ours["bf16-mixed"], theirs_bf16,
                                                       files, loose),
              ("bf16-mixed", "32-true"): _agreement(case, ours["bf16-mixed"], theirs, files,
                                                    loose)}
    seconds = interleaved({f"zoo {p}": (lambda p=p: zoo_side(p)) for p in PRECISIONS}
                          | {f"peer {p}": (lambda p=p: peer_side(best, p)) for p in PRECISIONS},
                          warmup=warmup, rounds=rounds, budget_s=0.0)
    rows = []
    for (mine, peer), agreement in checks.items():
        label = f"{case}, {mine}" if mine == peer else f"{case}, zoo {mine} vs peer {peer}"
        rows += _ratio_rows(label, "files -> top-5", len(files),
                            {"zoo": seconds[f"zoo {mine}"],
                             f"{peer_name} {peer}": seconds[f"peer {peer}"]},
                            **agreement, peer_workers=best, zoo_workers=_zoo_workers())
    return rows


def _zoo_workers() -> int:
    from zoo.predict import default_workers

    return default_workers()


ROWS: dict[str, Callable[..., list[dict[str, Any]]]] = {"e2e_audio": audio_rows,
                                                         "e2e_images": image_rows}


def main(argv: list[str] | None = None) -> None:
    import argparse
    import logging

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ROWS), help=", ".join(ROWS))
    parser.add_argument("--warmup", type=int, default=0,
                        help="untimed rounds (the agreement check and the peer's worker "
                        "choice already run each side once)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    from bench import print_table

    for name in args.only.split(","):
        print_table(ROWS[name.strip()](warmup=args.warmup, rounds=args.rounds))


if __name__ == "__main__":
    main()
