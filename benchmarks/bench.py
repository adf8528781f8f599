"""zoo against its peers, side by side in one process: same weights, same inputs, same threads.

    python benchmarks/bench.py                      # everything, about an hour on 2 cores
    python benchmarks/bench.py --only vit,vit_small,ast,patchtst,frontend,whisper_frontend  # 6 min
    python benchmarks/bench.py --only vit,patchtst --rounds 5 --no-memory --no-epochs

Rows: ViT vs timm (``vit_tiny_patch16_224`` at batch 32, a 32x32 small-image ViT at batch 128),
AST vs transformers' ``ASTForAudioClassification`` (hidden 192, 6 layers, 3 heads, 128 mel x
100 frames, stride 10), PatchTST vs transformers' ``PatchTSTForPrediction`` (ETTh1 settings,
dropout 0.3 applied while training), and the audio front end (64 one-second 16 kHz clips to
AST-normalised filterbanks) vs ``ASTFeatureExtractor`` and a per-clip
``torchaudio.compliance.kaldi.fbank`` loop, and Whisper's log-mel front end (64 clips of 1-10 s,
and 64 of 30 s, at 16 kHz to (64, 3000, 80) log-mels) vs ``WhisperFeatureExtractor``. Each
model row is timed in inference (eval, ``torch.inference_mode``) and as a training step
(forward, loss, backward, AdamW).

Timing: after warm-up, each round times every contender once, in a rotating order; the figure
is the median over rounds (the machine is noisy, so only figures of one run are compared).
``ratio`` is zoo's throughput over the peer's: above 1, zoo is faster. Memory: the peak of live
tensor memory during a training step (after a first step has made the optimizer state), from
PyTorch's profiler; its ratio is peer over zoo (above 1, zoo needs less). The
epoch rows time one epoch of the FSDD and ETTh1 recipes, data loading and validation included
(they need ``$ZOO_DATA``). Results go to ``benchmarks/results/`` as JSON and CSV.

The end-to-end, time-to-accuracy and int8 rows live in their own scripts (``MODULE_ROWS``:
``end_to_end.py``, ``forecast_end_to_end.py``, ``time_to_accuracy.py`` (about 50 minutes),
``quantization.py``), each runnable alone; bench.py runs them with 1 warm-up and 3 rounds.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))                  # the row modules beside this script

import zoo  # noqa: E402
from zoo.convert import to_zoo_state_dict  # noqa: E402

# --- contenders -----------------------------------------------------------------------------------

@dataclass
class Contender:
    """One library's model and input for a row; ``output`` maps its result to a tensor."""

    model: torch.nn.Module
    inputs: Callable[[], tuple]
    output: Callable[[Any], torch.Tensor] = lambda out: out
    kwargs: dict = field(default_factory=dict)


@dataclass
class Case:
    name: str
    batch: int
    contenders: dict[str, Contender]        # "zoo" first, then peers
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    target: torch.Tensor


def _same_weights(zoo_model: torch.nn.Module, peer: torch.nn.Module) -> None:
    zoo_model.load_state_dict(to_zoo_state_dict(peer.state_dict()))


def vit_case(small: bool) -> Case:
    import timm

    torch.manual_seed(0)
    if small:
        name, batch, size, classes = "vit_tiny_patch4_32", 128, 32, 10
        peer = timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=4, embed_dim=192, depth=12, num_heads=3, num_classes=10)
    else:
        name, batch, size, classes = "vit_tiny_patch16_224", 32, 224, 1000
        peer = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    ours = zoo.create_model(name, num_classes=classes)
    _same_weights(ours, peer)
    x = torch.randn(batch, 3, size, size)
    return Case(f"ViT {name} b{batch}", batch,
                {"zoo": Contender(ours, lambda: (x,)), "timm": Contender(peer, lambda: (x,))},
                F.cross_entropy, torch.randint(0, classes, (batch,)))


def ast_case() -> Case:
    import transformers

    from zoo.convert.hf_ast import ast_args_from_hf_config

    torch.manual_seed(0)
    cfg = transformers.ASTConfig(hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                                 intermediate_size=768, max_length=100, num_mel_bins=128,
                                 frequency_stride=10, time_stride=10, num_labels=35)
    peer = transformers.ASTForAudioClassification(cfg)
    ours = zoo.create_model("ast_base", **ast_args_from_hf_config(cfg.to_dict()))
    _same_weights(ours, peer)
    batch = 32
    x = torch.randn(batch, 100, 128)
    return Case(f"AST 192x6, 128x100 b{batch}", batch,
                {"zoo": Contender(ours, lambda: (x,)),
                 "transformers": Contender(peer, lambda: (x,), lambda out: out.logits)},
                F.cross_entropy, torch.randint(0, 35, (batch,)))


def patchtst_case() -> Case:
    import transformers

    from zoo.convert.hf_patchtst import patchtst_args_from_hf_config
    from zoo.models.patchtst import PatchTST

    torch.manual_seed(0)
    cfg = transformers.PatchTSTConfig(
        num_input_channels=7, context_length=336, patch_length=16, patch_stride=8,
        prediction_length=96, d_model=16, num_attention_heads=4, num_hidden_layers=3,
        ffn_dim=128, dropout=0.3, positional_dropout=0.3, ff_dropout=0.3,
        attention_dropout=0.0, path_dropout=0.0, head_dropout=0.0, scaling="std",
        do_mask_input=False)
    peer = transformers.PatchTSTForPrediction(cfg)
    ours = PatchTST(**patchtst_args_from_hf_config(cfg.to_dict()))
    _same_weights(ours, peer)
    batch = 128
    x = torch.randn(batch, 336, 7).cumsum(1)
    return Case(f"PatchTST ETTh1 b{batch}x7", batch,
                {"zoo": Contender(ours, lambda: (x,)),
                 "transformers": Contender(peer, lambda: (), lambda out: out.prediction_outputs,
                                           kwargs={"past_values": x})},
                F.mse_loss, torch.randn(batch, 96, 7))


CASES = {"vit": lambda: vit_case(small=False), "vit_small": lambda: vit_case(small=True),
         "ast": ast_case, "patchtst": patchtst_case}


# --- timing ---------------------------------------------------------------------------------------

def interleaved(fns: dict[str, Callable[[], Any]], *, warmup: int, rounds: int,
                budget_s: float = 4.0, max_rounds: int = 60) -> dict[str, float]:
    """Median seconds per call of each function, timed in rotating order within each round.

    At least ``rounds`` rounds; fast functions get more, up to ``budget_s`` seconds of timing
    per function (at most ``max_rounds``), since their medians are the noisiest.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    slowest = max(_time_once(f) for f in fns.values())
    rounds = max(rounds, min(max_rounds, int(budget_s / max(slowest, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _infer(c: Contender) -> Callable[[], Any]:
    def run() -> None:
        with torch.inference_mode():
            c.output(c.model(*c.inputs(), **c.kwargs))
    return run


def _train(c: Contender, loss_fn: Callable, target: torch.Tensor) -> Callable[[], Any]:
    opt = torch.optim.AdamW(c.model.parameters(), lr=1e-4)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(c.output(c.model(*c.inputs(), **c.kwargs)), target)
        loss.backward()
        opt.step()
    return run


def check_outputs(case: Case) -> float:
    """Largest difference between zoo's and each peer's eval output on the same input."""
    outs = []
    for c in case.contenders.values():
        c.model.eval()
        with torch.inference_mode():
            outs.append(c.output(c.model(*c.inputs(), **c.kwargs)).float())
    return max((o - outs[0]).abs().max().item() for o in outs[1:])


def compiled_for_inference(c: Contender) -> Contender:
    """zoo's model through ``torch.compile`` with inductor's freezing (weights folded in as
    constants, pre-packed for the CPU's GEMM, elementwise ops fused); compiled on first use."""
    model = torch.compile(c.model.eval(), options={"freezing": True})
    return Contender(model, c.inputs, c.output, c.kwargs)


def time_case(case: Case, *, warmup: int, rounds: int,
              compile_inference: bool = False) -> list[dict[str, Any]]:
    rows = []
    diff = check_outputs(case)
    for mode in ("inference", "train step"):
        fns = {}
        for lib, c in case.contenders.items():
            c.model.train(mode != "inference")
            fns[lib] = _infer(c) if mode == "inference" else _train(c, case.loss, case.target)
        seconds = interleaved(fns, warmup=warmup, rounds=rounds)
        rows += _ratio_rows(case.name, mode, case.batch, seconds, max_abs_diff=diff)
        if compile_inference and mode == "inference":
            compiled = compiled_for_inference(case.contenders["zoo"])
            start = time.perf_counter()
            _infer(compiled)()
            compile_s = round(time.perf_counter() - start, 1)
            with torch.inference_mode():
                zoo_c = case.contenders["zoo"]
                c_diff = (compiled.output(compiled.model(*compiled.inputs(), **compiled.kwargs))
                          - zoo_c.output(zoo_c.model(*zoo_c.inputs(), **zoo_c.kwargs))).abs().max()
            fns = {"zoo": _infer(compiled), **{k: v for k, v in fns.items() if k != "zoo"}}
            seconds = interleaved(fns, warmup=warmup, rounds=rounds)
            rows += _ratio_rows(case.name, "inference, zoo compiled", case.batch, seconds,
                                max_abs_diff=round(float(c_diff), 7), compile_s=compile_s)
    return rows


def _ratio_rows(name: str, mode: str, batch: int, seconds: dict[str, float],
                **extra: Any) -> list[dict[str, Any]]:
    ours = seconds["zoo"]
    return [{"case": name, "mode": mode, "peer": lib, "zoo_per_s": round(batch / ours, 2),
             "peer_per_s": round(batch / s, 2), "ratio": round(s / ours, 3), **extra}
            for lib, s in seconds.items() if lib != "zoo"]


# --- the audio front end ----------------------------------------------------------------------

def frontend_rows(*, warmup: int, rounds: int) -> list[dict[str, Any]]:
    """64 one-second 16 kHz clips -> AST-normalised (64, 1024, 128) filterbanks."""
    import numpy as np
    import torchaudio
    import transformers

    from zoo.frontends.audio import FbankConfig, Filterbank

    g = torch.Generator().manual_seed(0)
    clips = [0.3 * torch.randn(16000, generator=g) for _ in range(64)]
    waves = torch.stack(clips)
    numpy_clips = [c.numpy() for c in clips]
    extractor = transformers.ASTFeatureExtractor()      # 16 kHz, 128 mel, 1024 frames, AST stats
    ours = Filterbank(FbankConfig(sample_rate=16000, num_mel_bins=128, target_frames=1024,
                                  mean=extractor.mean, std=extractor.std))

    def zoo_fbank() -> torch.Tensor:
        with torch.inference_mode():
            return ours(waves)

    def hf_fbank() -> torch.Tensor:
        return torch.from_numpy(extractor(numpy_clips, sampling_rate=16000,
                                          return_tensors="np")["input_values"])

    def kaldi_loop() -> torch.Tensor:
        out = []
        for clip in clips:
            fbank = torchaudio.compliance.kaldi.fbank(
                clip[None] - clip.mean(), htk_compat=True, sample_frequency=16000,
                use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
                frame_shift=10)
            fbank = F.pad(fbank, (0, 0, 0, 1024 - fbank.shape[0]))
            out.append((fbank - extractor.mean) / (2 * extractor.std))
        return torch.stack(out)

    diff = float(np.abs(zoo_fbank().numpy() - hf_fbank().numpy()).max())
    seconds = interleaved({"zoo": zoo_fbank, "ASTFeatureExtractor": hf_fbank,
                           "kaldi.fbank loop": kaldi_loop}, warmup=warmup, rounds=rounds)
    return _ratio_rows("audio front end, 64 x 1 s at 16 kHz", "inference", 64, seconds,
                       max_abs_diff=diff)


def whisper_frontend_rows(*, warmup: int, rounds: int) -> list[dict[str, Any]]:
    """64 clips of 16 kHz audio -> Whisper log-mels (64, 3000, 80): clips of 1-10 s (uniform
    lengths, the realistic case: zoo transforms only the frames that touch a clip) and of 30 s
    (every frame), from a list of clips as each library takes them."""
    import numpy as np
    import transformers

    from zoo.frontends.whisper import WhisperLogMel

    extractor = transformers.WhisperFeatureExtractor()      # 16 kHz, 80 mel, 30 s chunks
    ours = WhisperLogMel()
    g = torch.Generator().manual_seed(0)
    rows = []
    for name, lengths in (
            ("whisper log-mel, 64 x 1-10 s at 16 kHz",
             torch.randint(16000, 160001, (64,), generator=g).tolist()),
            ("whisper log-mel, 64 x 30 s at 16 kHz", [480000] * 64)):
        clips = [0.3 * torch.randn(n, generator=g) for n in lengths]
        numpy_clips = [c.numpy() for c in clips]
        sizes = torch.tensor(lengths)

        def zoo_log_mel(clips: list[torch.Tensor] = clips,
                        sizes: torch.Tensor = sizes) -> torch.Tensor:
            with torch.inference_mode():
                waves = torch.nn.utils.rnn.pad_sequence(clips, batch_first=True)
                return ours(waves, lengths=sizes)

        def hf_log_mel(numpy_clips: list[np.ndarray] = numpy_clips) -> torch.Tensor:
            return extractor(numpy_clips, sampling_rate=16000,
                             return_tensors="pt")["input_features"]

        diff = float((zoo_log_mel() - hf_log_mel().transpose(1, 2)).abs().max())
        seconds = interleaved({"zoo": zoo_log_mel, "WhisperFeatureExtractor": hf_log_mel},
                              warmup=warmup, rounds=rounds)
        rows += _ratio_rows(name, "inference", 64, seconds, max_abs_diff=diff)
    return rows


FRONTENDS = {"frontend": frontend_rows, "whisper_frontend": whisper_frontend_rows}

# Rows that live in their own scripts (each also runs alone): row name -> module in benchmarks/.
# Imported on use: they pull in heavier peers (NeuralForecast, ONNX Runtime).
MODULE_ROWS = {"e2e_audio": "end_to_end", "e2e_images": "end_to_end",
               "e2e_forecast": "forecast_end_to_end", "int8": "quantization",
               "time_to_accuracy": "time_to_accuracy"}


def module_rows(name: str, *, warmup: int, rounds: int) -> list[dict[str, Any]]:
    import importlib

    rows: list[dict[str, Any]] = importlib.import_module(MODULE_ROWS[name]).ROWS[name](
        warmup=warmup, rounds=rounds)
    return rows


# --- peak memory of a training step ----------------------------------------------------------------

def step_peak_mib(step: Callable[[], Any]) -> float:
    """Peak of live tensor memory during one training step, in MiB above what was live before
    it: PyTorch's profiler records every allocation and free; their running sum peaks here.
    (Deterministic, unlike the process's resident set, which the allocator's caching blurs.)"""
    from torch.profiler import ProfilerActivity, profile

    step()                                   # optimizer state exists from here on
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    changes = sorted((e.time_range.start, e.cpu_memory_usage if e.name == "[memory]"
                      else e.self_cpu_memory_usage) for e in prof.events())
    live = peak = 0
    for _, size in changes:
        live += size
        peak = max(peak, live)
    return round(peak / 2 ** 20, 1)


def memory_rows(names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        case = CASES[name]()
        peaks = {}
        for lib, c in case.contenders.items():
            c.model.train()
            peaks[lib] = step_peak_mib(_train(c, case.loss, case.target))
        rows += [{"case": case.name, "peer": lib, "zoo_step_peak_mib": peaks["zoo"],
                  "peer_step_peak_mib": mib, "ratio": round(mib / peaks["zoo"], 3)}
                 for lib, mib in peaks.items() if lib != "zoo"]
    return rows


# --- one epoch of each recipe, data loading included ------------------------------------------------

def epoch_rows() -> list[dict[str, Any]]:
    import os
    import tempfile

    from recipes.cli import build

    rows = []
    for config_file, data in (("configs/audio/ast_tiny_d6_fsdd.yaml", "fsdd"),
                              ("configs/series/patchtst_tiny_etth1.yaml", "ett")):
        if not (Path(os.environ.get("ZOO_DATA", "")) / data).exists():
            print(f"skipped the {config_file} epoch: set ZOO_DATA to the folder holding {data}/")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()   # data setup: reading the data and making the model
            cli = build(["--config", str(HERE.parent / config_file),
                         f"--trainer.default_root_dir={tmp}", "--trainer.max_epochs=1",
                         "--trainer.enable_progress_bar=false",
                         "--trainer.enable_model_summary=false"])
            setup = time.perf_counter() - start
            dm = cli.datamodule
            start = time.perf_counter()
            cli.trainer.fit(cli.model, datamodule=dm)
            epoch = time.perf_counter() - start
        rows.append({"recipe": config_file, "data_setup_s": round(setup, 1),
                     "epoch_s": round(epoch, 1), "train_samples": len(dm.train_set),
                     "val_samples": len(dm.val_set)})
    return rows


# --- main -------------------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    import os

    return {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine()}


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join([*CASES, *FRONTENDS, *MODULE_ROWS]),
                        help="comma-separated: " + ", ".join([*CASES, *FRONTENDS, *MODULE_ROWS]))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--no-epochs", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time zoo's inference through "
                        "torch.compile with freezing (adds 15-45 s of compilation per model)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(only) - set(CASES) - set(FRONTENDS) - set(MODULE_ROWS)
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; "
                     f"choose from {[*CASES, *FRONTENDS, *MODULE_ROWS]}")
    info = machine()
    print(f"zoo bench {info}")
    speed = []
    for name in only:
        if name in FRONTENDS:
            rows = FRONTENDS[name](warmup=args.warmup, rounds=args.rounds)
        elif name in MODULE_ROWS:
            rows = module_rows(name, warmup=1, rounds=3)      # long rows: fewer rounds
        else:
            rows = time_case(CASES[name](), warmup=args.warmup, rounds=args.rounds,
                             compile_inference=args.compile)
        print_table(rows)
        speed += rows
    memory = [] if args.no_memory else memory_rows([n for n in only if n in CASES])
    print_table(memory)
    epochs = [] if args.no_epochs else epoch_rows()
    print_table(epochs)
    result = {"machine": info, "speed": speed, "memory": memory, "epochs": epochs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    with open(args.out / "bench.csv", "w", newline="") as f:
        fields = list(dict.fromkeys(k for row in speed for k in row)) or ["case"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(speed)
    print(f"results -> {args.out / 'bench.json'}, {args.out / 'bench.csv'}")
    return result


if __name__ == "__main__":
    main()
