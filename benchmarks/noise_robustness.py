"""Noise robustness of an audio classifier: FSDD test accuracy, clean and with additive noise.

Protocol (fixed by ``--seed``; see :mod:`zoo.data.noise` for the definitions):

- clips: FSDD's test split (takes 0-4 of every speaker and digit, 300 clips), decoded and
  resampled to the model's rate; each clip keeps its own length (no padding counts as signal).
- noise, drawn once per kind from one ``torch.Generator`` seeded with ``--seed`` and rescaled
  for every SNR (the same noise at 20, 10 and 5 dB):
  ``white``: Gaussian white noise; ``pink`` / ``brown``: 1/f and 1/f^2 power spectra;
  ``babble``: the sum of ``--talkers`` (default 3) test clips of OTHER speakers than the clip's
  (any digit), each at unit RMS, looped from a random offset over the clip's length.
- SNR: 10 log10(P_clip / P_noise), both mean squares over the clip's samples (pauses included);
  the noise covers the clip's samples only.
- each noisy clip becomes the model's filterbank as ``zoo eval`` makes it (clips longer than
  the model's window are cut there), and top-1 accuracy is counted over the 300 clips.

    python benchmarks/noise_robustness.py                              # the bundled FSDD model
    python benchmarks/noise_robustness.py runs/ast_tiny_d6_fsdd/checkpoints/last.ckpt --json
    python benchmarks/noise_robustness.py PACKAGE_DIR --kinds white pink babble --snr 20 10 5 0

MODEL: a registered name with weights (``ast_tiny_d6_8k.fsdd``), a package folder
(``zoo.save``) or a recipe checkpoint (``.ckpt``). Needs ``$ZOO_DATA`` with ``fsdd/recordings``
(or ``--root``). About 30 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import zoo
from recipes.audio import compute_filterbanks
from zoo.data.audio import fsdd_items, fsdd_root, load_clips
from zoo.data.noise import COLOUR_EXPONENTS, NOISE_KINDS, babble, coloured_noise, mix_at_snr
from zoo.frontends.audio import FbankConfig

BATCH = 100


def load_classifier(spec: str) -> torch.nn.Module:
    """A registered name with weights, a package folder, or a recipe checkpoint (.ckpt)."""
    path = Path(spec)
    if path.suffix == ".ckpt":
        from recipes.export import module_from_checkpoint

        return module_from_checkpoint(path).model.eval()
    if path.is_dir():
        return zoo.load(path).eval()
    return zoo.create_model(spec, pretrained=True).eval()


def fbank_config(model: torch.nn.Module) -> FbankConfig:
    config = getattr(getattr(model, "front_end", None), "fbank_config", None)
    if not isinstance(config, FbankConfig):
        raise ValueError(f"{type(model).__name__} has no filterbank front end "
                         "(front_end.fbank_config): this benchmark takes audio classifiers")
    return config


def test_clips(root: str | None, sample_rate: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """FSDD's test clips: waveforms (N, S_max) right-padded with zeros, lengths (N,),
    digits (N,) and speaker indices (N,)."""
    items = fsdd_items(fsdd_root(root), "test")
    waves, kept = load_clips([p for p, _ in items], sample_rate=sample_rate)
    if len(kept) != len(items):
        raise ValueError(f"only {len(kept)} of the {len(items)} FSDD test clips could be read")
    speakers = sorted({p.stem.split("_")[1] for p, _ in items})
    speaker = torch.tensor([speakers.index(p.stem.split("_")[1]) for p, _ in items])
    lengths = torch.tensor([w.numel() for w in waves])
    padded = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    return padded, lengths, torch.tensor([d for _, d in items]), speaker


def draw_noise(kind: str, waves: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor, *,
               talkers: int, generator: torch.Generator) -> torch.Tensor:
    """Unit-RMS noise (N, S_max) of ``kind`` for every clip (babble: other speakers' clips)."""
    batch, samples = waves.shape
    if kind == "babble":
        others = speaker[:, None] != speaker[None, :]                             # (N, N)
        return babble(waves, lengths, batch, samples, talkers=talkers, allowed=others,
                      generator=generator)
    return coloured_noise(batch, samples, exponent=COLOUR_EXPONENTS[kind], generator=generator)


@torch.no_grad()
def accuracy(model: torch.nn.Module, config: FbankConfig, waves: torch.Tensor,
             lengths: torch.Tensor, digits: torch.Tensor) -> float:
    """Top-1 accuracy (%) of ``model`` on the clips ``waves[i, :lengths[i]]``."""
    clips = [w[:n] for w, n in zip(waves, lengths.tolist(), strict=True)]
    features, _ = compute_filterbanks(clips, config)
    predictions = torch.cat([model(features[i:i + BATCH]).argmax(-1)
                             for i in range(0, len(features), BATCH)])
    return 100.0 * (predictions == digits).float().mean().item()


def evaluate(spec: str, *, root: str | None = None, kinds: Sequence[str] = ("white", "babble"),
             snrs: Sequence[float] = (20.0, 10.0, 5.0), talkers: int = 3, seed: int = 0
             ) -> dict:
    """{"model", "protocol", "clean": acc, "noisy": {kind: {snr: acc}}, "seconds"} (acc in %)."""
    unknown = [k for k in kinds if k not in NOISE_KINDS]
    if unknown:
        raise ValueError(f"noise kinds must be among {NOISE_KINDS}, got {unknown}")
    start = time.perf_counter()
    model = load_classifier(spec)
    config = fbank_config(model)
    waves, lengths, digits, speaker = test_clips(root, config.sample_rate)
    generator = torch.Generator().manual_seed(seed)
    result: dict = {"model": spec, "clips": len(digits),
                    "protocol": {"seed": seed, "talkers": talkers,
                                 "snr": "10 log10(P_clip / P_noise) over the clip's samples",
                                 "babble": "other speakers' test clips"},
                    "clean": accuracy(model, config, waves, lengths, digits), "noisy": {}}
    for kind in kinds:
        noise = draw_noise(kind, waves, lengths, speaker, talkers=talkers, generator=generator)
        result["noisy"][kind] = {
            f"{snr:g}": accuracy(model, config, mix_at_snr(waves, noise, snr, lengths), lengths,
                                 digits)
            for snr in snrs}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def table(result: dict) -> str:
    snrs = list(next(iter(result["noisy"].values()), {}))
    head = ["noise", "clean", *(f"{s} dB" for s in snrs)]
    rows = [[kind, f"{result['clean']:.2f}", *(f"{accs[s]:.2f}" for s in snrs)]
            for kind, accs in result["noisy"].items()] or [["none", f"{result['clean']:.2f}"]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


CARD_SECTION = "## Noise robustness"


def card_section(result: dict, command: str) -> str:
    """The model card's section: the protocol in a sentence, the table, the command."""
    protocol = result["protocol"]
    intro = (f"Top-1 accuracy (%) on the {result['clips']} FSDD test clips, clean and with noise "
             "added at each SNR (dB, signal and noise power over the clip's samples; seed "
             f"{protocol['seed']}; babble: {protocol['talkers']} other speakers' test clips), by "
             "`benchmarks/noise_robustness.py`:")
    return "\n".join([CARD_SECTION, "", intro, "", table(result), "", "```bash", command, "```", ""])


def write_card_section(card: Path, section: str) -> None:
    """Put ``section`` into the card before ``## Reproduce`` (replacing an earlier one)."""
    text = card.read_text()
    if CARD_SECTION in text:
        start = text.index(CARD_SECTION)
        text = text[:start] + text[text.index("## ", start + len(CARD_SECTION)):]
    at = text.index("## Reproduce")
    card.write_text(text[:at] + section + "\n" + text[at:])


def read_card_section(card: Path) -> dict[str, dict[str, float]] | None:
    """The noise table of a card ({row: {column: accuracy}}), or None if it has none."""
    text = card.read_text()
    if CARD_SECTION not in text:
        return None
    part = text.split(CARD_SECTION, 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines()
            if line.startswith("|") and "---" not in line]
    head, body = rows[0], rows[1:]
    return {row[0]: {h: float(v) for h, v in zip(head[1:], row[1:], strict=True)} for row in body}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default="ast_tiny_d6_8k.fsdd",
                        help="registered name with weights, package folder or .ckpt")
    parser.add_argument("--root", help="data root holding fsdd/recordings (default: $ZOO_DATA)")
    parser.add_argument("--kinds", nargs="+", default=["white", "babble"], choices=NOISE_KINDS)
    parser.add_argument("--snr", nargs="+", type=float, default=[20.0, 10.0, 5.0],
                        help="SNRs in dB (default: 20 10 5)")
    parser.add_argument("--talkers", type=int, default=3, help="babble talkers (default: 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--card", type=Path, help="also write the table into this model card "
                        "(a '## Noise robustness' section before '## Reproduce')")
    args = parser.parse_args(argv)
    result = evaluate(args.model, root=args.root, kinds=args.kinds, snrs=args.snr,
                      talkers=args.talkers, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['model']}: top-1 accuracy (%) on the {result['clips']} FSDD test clips, "
              f"seed {args.seed}, babble of {args.talkers} other speakers' clips "
              f"({result['seconds']:.0f} s)")
        print(table(result))
    if args.card is not None:
        command = "python benchmarks/noise_robustness.py " + " ".join(
            a for a in (argv if argv is not None else sys.argv[1:]) if a != "--json")
        command = command.split(" --card")[0]
        write_card_section(args.card, card_section(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
