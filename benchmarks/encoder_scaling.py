"""How one training step of the shared encoder grows with the number of tokens, with full and
with block-local (windowed) attention.

Each configuration runs in a fresh process, so that its peak resident memory is its own.

    python benchmarks/encoder_scaling.py [--tokens 256,512,1024,2048,4096] [--window 256]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

STEP = r'''
import json, resource, sys, time, torch
from zoo.encoder import BlockConfig, Encoder, EncoderConfig
tokens, window, batch, dim, depth, heads, threads = (int(v) for v in sys.argv[1:8])
torch.set_num_threads(threads)
torch.manual_seed(0)
enc = Encoder(EncoderConfig(depth=depth, block=BlockConfig(embed_dim=dim, num_heads=heads,
                                                           attn_window=window or None)))
opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)
x = torch.randn(batch, tokens, dim)
def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
times = []
before = rss_mib()           # the first step's growth: activations, gradients, AdamW state
for i in range(3):
    start = time.perf_counter()
    enc(x).square().mean().backward()
    opt.step(); opt.zero_grad(set_to_none=True)
    times.append(time.perf_counter() - start)
    if i == 0:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"tokens": tokens, "window": window, "step_s": round(min(times[1:]), 3),
                  "step_mib": round(peak - before), "peak_rss_mib": round(peak)}))
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="256,512,1024,2048,4096")
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"encoder {args.dim} wide, {args.depth} blocks, {args.heads} heads, batch "
          f"{args.batch}, {args.threads} threads; step = forward + backward + AdamW")
    print(f"{'tokens':>6} {'attention':>12} {'step s':>7} {'step MiB':>9} {'peak RSS MiB':>12}")
    for tokens in (int(t) for t in args.tokens.split(",")):
        for window in (0, args.window):
            if window and window >= tokens:
                continue
            out = subprocess.run(
                [sys.executable, "-c", STEP, str(tokens), str(window), str(args.batch),
                 str(args.dim), str(args.depth), str(args.heads), str(args.threads)],
                capture_output=True, text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            kind = f"window {window}" if window else "full"
            print(f"{row['tokens']:>6} {kind:>12} {row['step_s']:>7} {row['step_mib']:>9} "
                  f"{row['peak_rss_mib']:>12}")


if __name__ == "__main__":
    main()
