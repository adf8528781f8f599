"""Peak memory and step time of one PatchTST training step as the look-back grows.

Each configuration runs in a fresh subprocess so that its peak resident memory (ru_maxrss) is
its own. Usage:

    python benchmarks/series_memory.py [--model patchtst_base_l512] [--batch 32] [--channels 7]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STEP = r'''
import json, resource, sys, time, torch, zoo
name, lookback, batch, channels = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ckpt = sys.argv[5] == "1"
torch.manual_seed(0)
model = zoo.create_model(name, context_length=lookback, num_channels=channels, **json.loads(sys.argv[6]))
model.set_grad_checkpointing(ckpt)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
x, y = torch.randn(batch, lookback, channels), torch.randn(batch, model.horizon, channels)
times = []
for _ in range(3):
    start = time.perf_counter()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - start)
print(json.dumps({"model": name, "lookback": lookback, "tokens": model.front_end.num_patches,
                  "sequences": batch * channels, "grad_checkpointing": ckpt,
                  "step_s": round(min(times[1:]), 3),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
'''


def torch_threads() -> int:
    import torch
    return torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="patchtst_tiny_l336")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--channels", type=int, default=7)
    parser.add_argument("--lookbacks", default="336,512,1024,2048")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--kwargs", default="{}", help='model overrides as JSON, e.g. '
                        '\'{"residual_attention": false}\'')
    args = parser.parse_args()
    print(f"{args.model} {args.kwargs} batch {args.batch} x {args.channels} channels, "
          f"grad checkpointing {args.grad_checkpointing}, {torch_threads()} threads")
    print(f"{'look-back':>9} {'tokens':>6} {'seqs':>5} {'step s':>7} {'peak RSS MiB':>12}")
    for lookback in (int(v) for v in args.lookbacks.split(",")):
        out = subprocess.run([sys.executable, "-c", STEP, args.model, str(lookback), str(args.batch),
                              str(args.channels), "1" if args.grad_checkpointing else "0",
                              args.kwargs],
                             capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"{row['lookback']:>9} {row['tokens']:>6} {row['sequences']:>5} {row['step_s']:>7} "
              f"{row['peak_rss_mib']:>12}")


if __name__ == "__main__":
    main()
