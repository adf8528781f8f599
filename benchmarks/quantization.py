"""int8 and bf16 against float32 on the bundled weights: test accuracy and CPU inference speed.

For each bundled model (default: every one whose modality ONNX export supports), the model is
exported (``model.onnx``, :mod:`zoo.onnx_export`) and quantised (``model.int8.onnx``,
:mod:`zoo.quantize`: dynamic int8 on every Linear layer, ONNX Runtime), then:

- accuracy: the card's test metrics by ``zoo eval``'s code on the card's own resolved config
  (test split, as tests/test_model_cards.py evaluates the cards), for PyTorch float32, the
  float32 ONNX file and the int8 one (``zoo.quantize.onnx_forward`` runs the file inside the
  same evaluation), and PyTorch under ``bf16-mixed`` (the same evaluation inside
  :func:`zoo.precision.autocast`: bfloat16 autocast; Lightning's own ``bf16-mixed`` turns
  autocast off on CPUs);
- speed: ONNX Runtime float32 vs int8 (and PyTorch eager float32 and bf16-mixed), medians of
  interleaved rounds (``bench.interleaved``) at batch 1 and 64 on random inputs of the model's
  size, 2 threads.

    python benchmarks/quantization.py                       # all, about 4 minutes on 2 cores
    python benchmarks/quantization.py vit_nano_patch4_16.digits --no-accuracy
    python benchmarks/quantization.py --cards               # also each card's int8 section

Rows (``ROWS = {"int8": rows}``, bench.py's format): ``zoo`` is the int8 file, ``peer`` the
float32 ONNX file or PyTorch; ``ratio`` = peer seconds / int8 seconds (the speed-up). Accuracy
goes in extra keys of the rows: ``metric``, ``fp32``, ``int8``, ``change``, ``bf16``,
``bf16_change``; ``bf16_vs_pytorch_fp32`` is bf16-mixed's speed-up over eager float32. JSON to
``benchmarks/results/quantization.json``. Needs ``$ZOO_DATA`` (FSDD, ETTh1) for accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import zoo  # noqa: E402
from zoo.onnx_export import IO_NAMES, example_input, export_onnx  # noqa: E402
from zoo.precision import autocast  # noqa: E402
from zoo.quantize import QUANTIZED_NAME, onnx_forward, ort_session, quantize_onnx, run_onnx  # noqa: E402

MODELS = ("vit_nano_patch4_16.digits", "ast_tiny_d6_8k.fsdd", "patchtst_tiny_l336.etth1_h96",
          "patchtst_tiny_l512.etth1_h96")
BATCHES = (1, 64)
CARDS = ROOT / "model_cards"


def cpu_flags() -> str:
    """The x86 SIMD features that decide ONNX Runtime's int8 kernels (Linux /proc/cpuinfo)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split())
    except (OSError, IndexError):
        return platform.machine()
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return ", ".join(shown) or platform.machine()


def export_pair(model: torch.nn.Module, folder: Path) -> tuple[Path, Path]:
    """``model.onnx`` and ``model.int8.onnx`` of ``model`` in ``folder``."""
    fp32 = export_onnx(model, folder / "model.onnx")
    return fp32, quantize_onnx(fp32, folder / QUANTIZED_NAME)


def card_config(name: str, root_dir: Path) -> Path:
    """The card's resolved config with the bundled weights, written into ``root_dir``."""
    text = (CARDS / f"{name}.md").read_text()
    config = yaml.safe_load(text.split("```yaml", 1)[1].split("```", 1)[0])
    config["model"]["init_args"].update(model_name=name, pretrained=True)
    config["trainer"]["default_root_dir"] = str(root_dir)
    config["trainer"]["enable_progress_bar"] = False
    path = root_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def accuracy(name: str, paths: tuple[Path, Path], root_dir: Path) -> dict[str, dict[str, float]]:
    """The card's metrics ({backend: {metric: value}}) for PyTorch, ONNX fp32 and ONNX int8,
    and PyTorch at bf16-mixed (``pytorch_bf16``)."""
    from recipes.cli import build
    from recipes.export import card_metrics
    from recipes.train import evaluate

    args = ["--config", str(card_config(name, root_dir))]
    module = build(args).model.eval()
    dataset = yaml.safe_load(Path(args[1]).read_text())["data"]["init_args"]["dataset"]
    out = {}
    for backend, path in (("pytorch", None), ("onnx_fp32", paths[0]), ("onnx_int8", paths[1])):
        if path is None:
            tested = evaluate(args, module=module)["metrics"]
        else:
            with onnx_forward(module.model, path):
                tested = evaluate(args, module=module)["metrics"]
        out[backend] = card_metrics(tested, dataset, module.model.modality)
    # zoo's autocast around the evaluation: Lightning's own bf16-mixed turns autocast off on
    # a CPU ("CUDA is not available ... Disabling autocast") and would score float32
    with autocast("bf16-mixed"):
        tested = evaluate(args, module=module)["metrics"]
    out["pytorch_bf16"] = card_metrics(tested, dataset, module.model.modality)
    return out


def speed(model: torch.nn.Module, paths: tuple[Path, Path], batch: int, *, warmup: int,
          rounds: int) -> dict[str, float]:
    """Median seconds per call: int8 ONNX (``zoo``), float32 ONNX, PyTorch eager float32 and
    bf16-mixed."""
    from bench import interleaved

    x = example_input(model, batch, seed=batch)
    array = x.numpy()
    fp32, int8 = ort_session(paths[0]), ort_session(paths[1])

    def eager(precision: str) -> torch.Tensor:
        with torch.inference_mode(), autocast(precision):
            return model(x)

    return interleaved({"zoo": lambda: run_onnx(int8, array),
                        "onnxruntime fp32": lambda: run_onnx(fp32, array),
                        "pytorch fp32": lambda: eager("32-true"),
                        "pytorch bf16-mixed": lambda: eager("bf16-mixed")},
                       warmup=warmup, rounds=rounds, budget_s=3.0)


def model_rows(name: str, *, warmup: int, rounds: int, with_accuracy: bool = True
               ) -> list[dict[str, Any]]:
    """Speed rows of ``name`` at :data:`BATCHES`, each carrying the accuracy comparison."""
    from bench import _ratio_rows

    model = zoo.create_model(name, pretrained=True).eval()
    with tempfile.TemporaryDirectory() as tmp:
        paths = export_pair(model, Path(tmp))
        sizes = {"fp32_mb": round(paths[0].stat().st_size / 2**20, 2),
                 "int8_mb": round(paths[1].stat().st_size / 2**20, 2)}
        metrics = accuracy(name, paths, Path(tmp)) if with_accuracy else {}
        print(f"{name}: {json.dumps(metrics)}", flush=True)
        rows = []
        for batch in BATCHES:
            seconds = speed(model, paths, batch, warmup=warmup, rounds=rounds)
            rows += [{**row, "batch": batch, **sizes}
                     for row in _ratio_rows(name, "inference int8", batch, seconds)]
    for row in rows:
        row["accuracy"] = metrics
    return rows


def rows(*, warmup: int, rounds: int, names: tuple[str, ...] = MODELS,
         with_accuracy: bool = True) -> list[dict[str, Any]]:
    """bench.py's entry: the rows of every model in ``names``."""
    out = []
    for name in names:
        out += model_rows(name, warmup=warmup, rounds=rounds, with_accuracy=with_accuracy)
    return out


ROWS = {"int8": rows}


def summary(result_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per model, metric and batch: fp32 vs int8 metric, change, speed-ups."""
    from recipes.export import metric_change

    lines = []
    for row in result_rows:
        if row["peer"] != "onnxruntime fp32":
            continue
        eager, bf16 = (next(r for r in result_rows if r["case"] == row["case"]
                            and r["batch"] == row["batch"] and r["peer"] == peer)
                       for peer in ("pytorch fp32", "pytorch bf16-mixed"))
        acc = row["accuracy"]
        for metric in acc.get("onnx_int8", {None: None}):
            line = {"model": row["case"], "batch": row["batch"],
                    "int8_vs_ort_fp32": row["ratio"], "int8_vs_pytorch_fp32": eager["ratio"],
                    "bf16_vs_pytorch_fp32": round(eager["ratio"] / bf16["ratio"], 3)}
            if metric is not None:
                fp32, int8 = acc["pytorch"][metric], acc["onnx_int8"][metric]
                half = acc["pytorch_bf16"][metric]
                line.update(metric=metric, fp32=round(fp32, 4), onnx_fp32=round(
                    acc["onnx_fp32"][metric], 4), int8=round(int8, 4),
                    change=metric_change(metric, fp32, int8), bf16=round(half, 4),
                    bf16_change=metric_change(metric, fp32, half))
            lines.append(line)
    return lines


def write_cards(result_rows: list[dict[str, Any]], machine: str, command: str) -> list[Path]:
    """Each measured model's card gets (or has replaced) its "int8 (CPU deployment)" section."""
    from recipes.export import int8_section, write_int8_section

    written = []
    for name in dict.fromkeys(r["case"] for r in result_rows):
        mine = [r for r in result_rows if r["case"] == name and r["peer"] == "onnxruntime fp32"]
        acc = mine[0]["accuracy"]
        if not acc:
            raise ValueError("--cards needs the accuracy (drop --no-accuracy)")
        model = zoo.create_model(name, pretrained=True)
        timing = [{"batch": r["batch"], "fp32_ms": 1000 * r["batch"] / r["peer_per_s"],
                   "int8_ms": 1000 * r["batch"] / r["zoo_per_s"], "ratio": r["ratio"]}
                  for r in mine]
        section = int8_section(acc["pytorch"], acc["onnx_int8"], modality=model.modality,
                               speed=timing, command=command, machine=machine)
        card = CARDS / f"{name}.md"
        write_int8_section(card, section)
        written.append(card)
    return written


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"bundled models (default: {', '.join(MODELS)})")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--no-accuracy", action="store_true", help="speed only (no data needed)")
    parser.add_argument("--cards", action="store_true",
                        help="write each model's card section '## int8 (CPU deployment)'")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import bench

    names = tuple(args.names) or MODELS
    for name in names:
        modality = zoo.registry.get_entry(name)[0].modality
        if modality not in IO_NAMES:
            parser.error(f"{name}: ONNX export does not support modality {modality!r}")
    info = {**bench.machine(), "cpu_flags": cpu_flags()}
    start = time.perf_counter()
    result_rows = rows(warmup=args.warmup, rounds=args.rounds, names=names,
                       with_accuracy=not args.no_accuracy)
    bench.print_table([{k: v for k, v in r.items() if k != "accuracy"} for r in result_rows])
    lines = summary(result_rows)
    bench.print_table(lines)
    result = {"machine": info, "summary": lines, "rows": result_rows,
              "seconds": round(time.perf_counter() - start, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quantization.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"results -> {args.out / 'quantization.json'} ({result['seconds']:.0f} s)")
    if args.cards:
        threads = f"{args.threads} thread{'s' if args.threads != 1 else ''}"
        machine = (f"{info['cpus']} CPUs ({info['cpu_flags']}), {threads}, "
                   f"onnxruntime {_ort_version()}, {info['date']}")
        shown = [a for a in (argv if argv is not None else sys.argv[1:])
                 if a not in args.names and not a.startswith("--out")]
        command = " ".join(["python benchmarks/quantization.py", *shown])
        for card in write_cards(result_rows, machine, command):
            print(f"card section -> {card}")
    return result


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


if __name__ == "__main__":
    main()
