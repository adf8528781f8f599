"""GPU rows, ready to run in one call on a CUDA machine: ViT-B/16 training throughput and model
FLOPs utilisation (MFU) in bf16, and zoo's kernel ratios against timm / transformers on the GPU.

    python benchmarks/gpu.py                    # on a CUDA machine, about 4 minutes on one H200
    python benchmarks/gpu.py --smoke --kernels patchtst   # anywhere (CPU): checks the script

MFU = the model's FLOPs per training step (forward and backward, counted once by
``torch.utils.flop_counter.FlopCounterMode`` on the real shapes) / (median step time x the
accelerator's dense bf16 peak). Peaks (dense, no sparsity) come from ``PEAK_BF16_TFLOPS`` by device
name, or ``--peak-tflops``. The ViT-B/16 step runs under bf16 autocast with fused AdamW, through
``torch.compile`` (``--no-compile`` for eager), batch 256 at 224 px. The kernel ratios reuse
``bench.py``'s rows (same weights, same inputs) moved to the GPU under bf16 autocast, each timed
function ending in ``torch.cuda.synchronize()``. Results go to ``benchmarks/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench  # noqa: E402

import zoo  # noqa: E402

# Dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, SXM parts, no sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The device's dense bf16 peak: ``override``, else by the CUDA device's name; None on CPU."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    raise SystemExit(f"no bf16 peak known for {name!r}: pass --peak-tflops")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of ``step`` (matrix multiplications and attention, as PyTorch counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def vit_training_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      device: torch.device) -> Callable[[], torch.Tensor]:
    """One bf16-autocast training step (forward, cross-entropy, backward, AdamW)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss
    return step


def mfu_rows(device: torch.device, *, smoke: bool, compile_model: bool, steps: int,
             peak: float | None) -> list[dict[str, Any]]:
    """Training throughput and MFU of ViT-B/16 (zoo and timm, same weights and batch)."""
    import timm

    name, batch, size = ("vit_tiny_patch16_224", 4, 64) if smoke else ("vit_base_patch16_224", 256,
                                                                        224)
    torch.manual_seed(0)
    peer = timm.create_model(name, pretrained=False, img_size=size).to(device)
    ours = zoo.create_model(name, img_size=size).to(device)
    bench._same_weights(ours, peer)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, 1000, (batch,), device=device)
    rows = []
    for lib, model in (("zoo", ours), ("timm", peer)):
        model.train()
        flops = step_flops(vit_training_step(model, images, labels, device))
        runnable = torch.compile(model) if compile_model else model
        step = vit_training_step(runnable, images, labels, device)
        start = time.perf_counter()
        for _ in range(3):                       # compilation and cuDNN / cuBLAS autotuning
            step()
        synchronize(device)
        warmup_s = time.perf_counter() - start
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        achieved = flops / seconds / 1e12
        rows.append({"case": f"{name} train step bf16, batch {batch}",
                     "library": lib, "compiled": compile_model,
                     "images_per_s": round(batch / seconds, 1),
                     "step_ms": round(seconds * 1e3, 2), "tflop_per_step": round(flops / 1e12, 3),
                     "achieved_tflops": round(achieved, 1),
                     "mfu": round(achieved / peak, 3) if peak else None,
                     "warmup_s": round(warmup_s, 1)})
    return rows


def kernel_rows(device: torch.device, names: list[str], *, warmup: int, rounds: int
                ) -> list[dict[str, Any]]:
    """bench.py's model rows on ``device`` under bf16 autocast: zoo's throughput / the peer's."""
    rows = []
    for name in names:
        case = bench.CASES[name]()
        case.target = case.target.to(device)
        for c in case.contenders.values():
            c.model.to(device)
            inputs, kwargs = c.inputs(), c.kwargs
            moved = tuple(x.to(device) for x in inputs)
            c.inputs = lambda moved=moved: moved      # type: ignore[misc]
            c.kwargs = {k: v.to(device) if torch.is_tensor(v) else v for k, v in kwargs.items()}
        for mode in ("inference", "train step"):
            fns = {}
            for lib, c in case.contenders.items():
                c.model.train(mode != "inference")
                fn = bench._infer(c) if mode == "inference" else bench._train(c, case.loss,
                                                                               case.target)
                fns[lib] = _autocast_synced(fn, device)
            seconds = bench.interleaved(fns, warmup=warmup, rounds=rounds)
            rows += bench._ratio_rows(f"{case.name} ({name})", f"{mode}, bf16 autocast",
                                      case.batch, seconds)
    return rows


def _autocast_synced(fn: Callable[[], Any], device: torch.device) -> Callable[[], None]:
    def run() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            fn()
        synchronize(device)
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes, runs anywhere (CPU): checks the script, not the GPU")
    parser.add_argument("--no-compile", action="store_true", help="time eager ViT-B/16 steps")
    parser.add_argument("--steps", type=int, default=20, help="timed ViT-B/16 training steps")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the accelerator's dense bf16 peak (default: by device name)")
    parser.add_argument("--kernels", default=",".join(bench.CASES),
                        help="bench.py's model rows to time on the device ('' for none)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "gpu.json")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --smoke")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    info = {**bench.machine(), "device": torch.cuda.get_device_name(device)
            if device.type == "cuda" else "cpu (smoke)"}
    print(f"zoo gpu bench {info}")
    peak = peak_tflops(device, args.peak_tflops)
    mfu = mfu_rows(device, smoke=args.smoke, compile_model=not args.no_compile and not args.smoke,
                   steps=2 if args.smoke else args.steps, peak=peak)
    bench.print_table(mfu)
    names = [n for n in args.kernels.split(",") if n]
    unknown = set(names) - set(bench.CASES)
    if unknown:
        parser.error(f"unknown --kernels {sorted(unknown)}; choose from {list(bench.CASES)}")
    kernels = kernel_rows(device, names, warmup=1 if args.smoke else 3,
                          rounds=1 if args.smoke else 10)
    bench.print_table(kernels)
    result = {"machine": info, "peak_bf16_tflops": peak, "mfu": mfu, "kernels": kernels}
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results -> {args.out}")
    return result


if __name__ == "__main__":
    main()
