"""Does every published weight still come out of its command? Retrain each from its card, on
today's code, and compare with the card.

For every card in ``model_cards/`` (or the NAMEs given): run the training command the card
names (``## Reproduce``) into a new run directory, evaluate the checkpoint the run tested as
``zoo eval`` does, and print the card's figure, the reproduced one, their difference, the
tolerance for that metric and the training wall time. Exit status 1 when a figure falls
outside its tolerance.

    python benchmarks/reproduce.py --quick                 # cards whose training took < 5 min
    python benchmarks/reproduce.py                         # all (about 1 hour on 2 CPU cores)
    python benchmarks/reproduce.py vit_nano_patch4_16.digits --seeds 0 1 2   # seed spread

A script for people to run before a release or after a change to training code, not a CI
test. Needs ``$ZOO_DATA`` for the FSDD and ETTh1 cards. Runs go to
``runs/reproduce/NAME-card-TIME`` (``NAME-seedS-TIME`` with ``--seeds``; never into an
existing folder).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARDS = ROOT / "model_cards"
QUICK_SECONDS = 300

# How far a reproduced figure may sit from its card: the seed-to-seed spread of the same
# command (max - min over three seeds; at least one test item or the card's last digit),
# measured on the 2-core CPU machine on 2026-12-01
# (see README "Results"). A run on other hardware or thread counts follows a different
# floating-point path, which moves a figure about as much as another seed does.
TOLERANCE = {
    "digits test top-1": 1.67,     # seeds 0 / 1 / 2: 98.33 / 98.61 / 96.94 (%)
    "digits test top-5": 0.28,     # 100 / 100 / 100: no spread; one of 360 images
    "fsdd test top-1": 0.34,       # 99.33 / 99.33 / 99.33 (298 of 300 each): one of 300 clips
    "fsdd test top-5": 0.34,       # 100 / 100 / 100: one of 300 clips
    # seeds 0 (card) / 1, 2026-12-02: WER 0.036 / 0.250, CER 0.039 / 0.216, SER 0.2 / 1.4 (%)
    "fsdd_digits test wer (%)": 0.22,
    "fsdd_digits test cer (%)": 0.18,
    "fsdd_digits test ser (%)": 1.2,
    "etth1 test mse": 0.0009,      # L=336, seeds 2021 (card) / 0 / 1: 0.3781 / 0.3786 / 0.3777
    "etth1 test mae": 0.0001,      # 0.4006 / 0.4006 / 0.4007 (the cards' last digit)
    # one seed only (2026, 2026-12-02, 2,663 s): the spread over seeds is NOT measured yet;
    # 0.1 (about 4% of 2.74) is a stated guess until a second seed is trained
    "synthetic test loss": 0.1,
}


@dataclass
class Card:
    name: str
    path: Path
    command: list[str]                       # the argv after "zoo"
    metrics: dict[str, float]
    train_seconds: float | None
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> str:
        return self.command[1]

    @property
    def overrides(self) -> list[str]:
        return self.command[2:]


def read_card(path: Path) -> Card:
    """The name, training command, metrics and training time a model card states."""
    text = path.read_text()
    name = text.splitlines()[0].lstrip("# ").strip()
    facts = dict(re.findall(r"^\| ([^|]+?) \| ([^|]*?) \|$", text.split("## Metrics")[0], re.M))
    metrics_part = text.split("## Metrics", 1)[1].split("## Reproduce", 1)[0]
    metrics = {k: float(v) for k, v in re.findall(r"^\| ([^|]+?) \| (-?\d[\d.]*) \|$", metrics_part,
                                                   re.M)}
    block = text.split("## Reproduce", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    command = shlex.split(block.strip().splitlines()[0])
    if command[:2] != ["zoo", "train"] or len(command) < 3:
        raise ValueError(f"{path}: the Reproduce command is not `zoo train CONFIG ...`: {block!r}")
    seconds = re.match(r"([\d.]+) s", facts.get("training time", ""))
    return Card(name=name, path=path, command=command[1:], metrics=metrics,
                train_seconds=float(seconds[1]) if seconds else None, facts=facts)


def all_cards() -> list[Card]:
    return [read_card(p) for p in sorted(CARDS.glob("*.md"))]


def _zoo(argv: list[str]) -> str:
    """Run ``zoo ARGV`` in a fresh interpreter from the repository root; its stdout."""
    done = subprocess.run([sys.executable, "-m", "zoo.cli", *argv], cwd=ROOT, text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"zoo {' '.join(argv)} failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return done.stdout


def _json_tail(stdout: str) -> dict:
    """The JSON object ``zoo train`` / ``zoo eval`` print last."""
    return json.loads(stdout[stdout.rindex("\n{") + 1:] if "\n{" in stdout else stdout)


def reproduce(card: Card, seed: int | None, runs_dir: Path) -> dict:
    """Train ``card``'s command (with ``--seed_everything`` when given) and evaluate what it
    tested."""
    from recipes.export import SavedRun, card_metrics

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = runs_dir / f"{card.name}-{'card' if seed is None else f'seed{seed}'}-{stamp}"
    if run_dir.resolve().is_relative_to(ROOT):   # as a card shows it: runs/reproduce/...
        run_dir = run_dir.resolve().relative_to(ROOT)
    overrides = [*card.overrides, f"--trainer.default_root_dir={run_dir}"]
    if seed is not None:
        overrides.append(f"--seed_everything={seed}")
    start = time.perf_counter()
    trained = _json_tail(_zoo(["train", card.config, *overrides]))
    wall = time.perf_counter() - start
    ckpt = trained["best_checkpoint"]
    tested = _json_tail(_zoo(["eval", card.config, "--ckpt", ckpt, *overrides]))["metrics"]
    run = SavedRun.read(ROOT / run_dir / "config.yaml")
    return dict(name=card.name, seed=seed, run_dir=str(run_dir), wall_s=wall,
                train_s=trained.get("train_time_s"), epochs=trained.get("epochs"),
                metrics=card_metrics(tested, run.dataset, run.modality))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="weights to reproduce (default: every card)")
    parser.add_argument("--quick", action="store_true",
                        help=f"only cards whose training took under {QUICK_SECONDS} s")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="train with these seeds instead of the card's (measures spread)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "reproduce")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    cards = all_cards()
    known = {c.name for c in cards}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"no card for {unknown}; cards: {sorted(known)}")
    cards = [c for c in cards if not args.names or c.name in args.names]
    if args.quick:
        cards = [c for c in cards if c.train_seconds is not None
                 and c.train_seconds < QUICK_SECONDS]
    missing = sorted({m for c in cards for m in c.metrics} - set(TOLERANCE))
    if missing:
        parser.error(f"no tolerance stated for {missing}")
    failed = False
    print("| weights | seed | metric | card | reproduced | difference | tolerance | within | "
          "training wall time |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for card in cards:
        for seed in args.seeds or [None]:
            result = reproduce(card, seed, args.runs_dir)
            for metric, expected in card.metrics.items():
                got = result["metrics"][metric]
                within = abs(got - expected) <= TOLERANCE[metric] + 1e-9
                failed |= not within
                print(f"| {card.name} | {'card' if seed is None else seed} | {metric} | "
                      f"{expected:g} | {got:.4f} | {got - expected:+.4f} | "
                      f"{TOLERANCE[metric]:g} | {'yes' if within else 'NO'} | "
                      f"{result['wall_s']:.0f} s ({result['epochs']} epochs) |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
