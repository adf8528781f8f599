"""Publish a trained recipe checkpoint as bundled weights with its generated model card.

    python -m recipes.publish RUN_DIR --tag digits [--half]

exports the checkpoint the run tested (``RUN_DIR/metrics.json``; best, or last when
validation was trained on) exactly as ``zoo export`` does, metrics measured afresh, then
copies its weights to ``zoo/weights/<arch>.<tag>.safetensors`` and its card to
``model_cards/<arch>.<tag>.md``, and prints the registry entry (file, sha256, metrics) to paste
next to the variant in ``zoo/models/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recipes.export import export_checkpoint
from zoo.hub import sha256_of

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "zoo" / "weights"
CARDS_DIR = Path(__file__).resolve().parent.parent / "model_cards"


def tested_checkpoint(run_dir: Path) -> Path:
    """The checkpoint the run's test figures came from."""
    run = json.loads((run_dir / "metrics.json").read_text())
    ckpt = Path(run.get("best_checkpoint") or run_dir / "checkpoints" / "best.ckpt")
    if not ckpt.is_file():   # the run directory was moved
        ckpt = run_dir / "checkpoints" / ckpt.name
    return ckpt


def publish(run_dir: Path, tag: str, half: bool = False) -> dict[str, Any]:
    """``half`` stores float16 weights (half the size); the card's metrics are measured on them."""
    with tempfile.TemporaryDirectory() as tmp:
        written = export_checkpoint(tested_checkpoint(run_dir), Path(tmp) / "package", tag=tag,
                                    half=half)
        name = written["name"]
        WEIGHTS_DIR.mkdir(exist_ok=True)
        CARDS_DIR.mkdir(exist_ok=True)
        weights = WEIGHTS_DIR / f"{name}.safetensors"
        shutil.copyfile(Path(written["package"]) / "model.safetensors", weights)
        shutil.copyfile(Path(written["package"]) / "README.md", CARDS_DIR / f"{name}.md")
        config = json.loads((Path(written["package"]) / "config.json").read_text())
    cfg = config["pretrained_cfg"]
    return dict(tag=tag, file=weights.name, sha256=sha256_of(weights), labels=cfg["labels"],
                license="apache-2.0", metrics={k: round(v, 6) for k, v in written["metrics"].items()},
                description=cfg["description"], model_args=config["model_args"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--half", action="store_true", help="store float16 weights")
    args = parser.parse_args(argv)
    print(json.dumps(publish(args.run_dir, args.tag, args.half), indent=2))


if __name__ == "__main__":
    main()
