"""Where PatchTST's inference time goes, zoo against transformers, and what the fast paths buy.

    python benchmarks/profile_patchtst.py              # rows (about 1 minute on 2 quiet cores)
    python benchmarks/profile_patchtst.py --profile    # plus torch.profiler tables of both

The model is bench.py's PatchTST row (ETTh1 settings: batch 128 x 7 channels, look-back 336,
41 patches of 16, d_model 16, 4 heads, 3 layers, d_ff 128), same weights and input on both
sides. Rows (bench.py's format, ratio = the peer's seconds / zoo's):

- ``patchtst_fast_paths``: zoo's inference against transformers and against zoo itself with
  its no-autograd fast paths switched off (``zoo.layers.inplace.may_overwrite`` False: no
  chunked MLP, no in-place activation or residual sums), all in ``torch.inference_mode``.
- ``patchtst_mlp``: one MLP (eval, inference mode) run in cache-sized row chunks with the
  activation in place, against the same MLP run whole, at PatchTST's width (16 -> 128 over
  36,736 tokens), a 64 -> 256 one and ViT-Tiny's (192 -> 768 over 32 x 197 tokens, which
  stays whole: the row shows why).

What the profiler shows (``--profile``): both libraries call the same fused CPU attention
kernel (``_scaled_dot_product_flash_attention_for_cpu``) on (896, 4, 41, 4) heads, about half
of either's time; the rest is the four linear layers, GELU and memory traffic. A 36,736 x 128
hidden tensor (18 MiB) is written, activated into a second one and read back per block, and the
allocator hands such buffers back to the OS between calls, so each forward also pays about 20
thousand page faults (``minor_faults_per_call``): a third of the time was spent in the kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@contextlib.contextmanager
def fast_paths_off() -> Iterator[None]:
    """zoo's eager no-autograd fast paths switched off (the code path before they existed)."""
    from zoo import encoder
    from zoo.layers import mlp

    saved = encoder.may_overwrite, mlp.may_overwrite
    encoder.may_overwrite = mlp.may_overwrite = lambda: False
    try:
        yield
    finally:
        encoder.may_overwrite, mlp.may_overwrite = saved


def _faults_per_call(fn: Callable[[], Any], calls: int = 3) -> int:
    """Minor page faults per call (freshly mapped memory), after a warm-up call."""
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // calls


def fast_path_rows(*, warmup: int, rounds: int) -> list[dict[str, Any]]:
    """zoo's PatchTST inference vs transformers and vs zoo without its fast paths."""
    import bench

    case = bench.patchtst_case()
    ours, peer = case.contenders["zoo"], case.contenders["transformers"]
    for c in (ours, peer):
        c.model.eval()
    zoo_fast, hf = bench._infer(ours), bench._infer(peer)

    def zoo_plain() -> None:
        with fast_paths_off():
            zoo_fast()

    with torch.inference_mode():
        expected = peer.output(peer.model(**peer.kwargs))
        got = ours.model(*ours.inputs())
        with fast_paths_off():
            plain = ours.model(*ours.inputs())
    diff = max((got - expected).abs().max().item(), (got - plain).abs().max().item())
    fns = {"zoo": zoo_fast, "transformers": hf, "zoo, fast paths off": zoo_plain}
    faults = {name: _faults_per_call(fn) for name, fn in fns.items()}
    seconds = bench.interleaved(fns, warmup=warmup, rounds=rounds)
    rows = bench._ratio_rows(case.name, "inference", case.batch, seconds, max_abs_diff=diff)
    for row in rows:
        row.update(minor_faults_per_call=faults[row["peer"]], zoo_minor_faults_per_call=faults["zoo"])
    return rows


def mlp_rows(*, warmup: int, rounds: int) -> list[dict[str, Any]]:
    """One MLP in eval and inference mode, chunked (zoo's path) vs whole (before)."""
    import bench

    from zoo.layers.mlp import Mlp

    rows = []
    for name, tokens, dim, hidden in (("MLP 16->128->16, 36736 tokens", 36736, 16, 128),
                                      ("MLP 64->256->64, 36736 tokens", 36736, 64, 256),
                                      ("MLP 192->768->192, 6304 tokens", 6304, 192, 768)):
        torch.manual_seed(0)
        mlp = Mlp(dim, hidden).eval()
        x = torch.randn(tokens, dim)

        def chunked(mlp: Mlp = mlp, x: torch.Tensor = x) -> torch.Tensor:
            with torch.inference_mode():
                return mlp(x)

        def whole(mlp: Mlp = mlp, x: torch.Tensor = x) -> torch.Tensor:
            with torch.inference_mode():
                return mlp.fc2(F.gelu(mlp.fc1(x)))

        diff = (chunked() - whole()).abs().max().item()
        seconds = bench.interleaved({"zoo": chunked, "whole (before)": whole},
                                    warmup=warmup, rounds=rounds, budget_s=2.0)
        rows += bench._ratio_rows(name, "inference", tokens, seconds, max_abs_diff=diff)
    return rows


ROWS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "patchtst_fast_paths": fast_path_rows, "patchtst_mlp": mlp_rows}


def profile_tables(row_limit: int = 15) -> None:
    """Top ops of one inference call of each library (self CPU time, grouped by op and shape)."""
    import bench
    from torch.profiler import ProfilerActivity, profile

    case = bench.patchtst_case()
    for name, c in case.contenders.items():
        c.model.eval()
        fn = bench._infer(c)
        for _ in range(2):
            fn()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(3):
                fn()
        print(f"--- {name}: 3 inference calls ---")
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=row_limit, max_name_column_width=48,
            max_shapes_column_width=60))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler tables")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import bench

    rows = []
    for fn in ROWS.values():
        rows += fn(warmup=args.warmup, rounds=args.rounds)
    bench.print_table(rows)
    if args.profile:
        profile_tables()
    return rows


if __name__ == "__main__":
    main()
