"""Write zoo/models/timm_vit_weights.json: for the ViT architectures zoo builds by timm's names,
timm's defaults (classes, preprocessing) and published weights with their preprocessing and
license, from timm's pretrained cfgs.

    python tools/timm_vit_weights.py        # needs timm (pip install -e ".[test]")

Only weights on the Hugging Face hub in timm's layout (the ``timm/`` organisation) are listed: zoo
reads timm's state dicts, not the original repositories' formats that timm converts on load.
Run it again after upgrading timm, and commit the JSON (zoo itself never imports timm).
"""

from __future__ import annotations

import json
from pathlib import Path

import timm
from timm.models import get_arch_pretrained_cfgs

from zoo.models.vit_families import timm_names

OUT = Path(__file__).resolve().parents[1] / "zoo" / "models" / "timm_vit_weights.json"
PREPROCESS = ("mean", "std", "interpolation", "crop_pct", "crop_mode")


def _classes_and_preprocess(cfg: dict) -> dict:
    classes = cfg.get("num_classes")
    return {"num_classes": 1000 if classes is None else int(classes),
            "preprocess": {"input_size": list(cfg["input_size"]),
                           **{k: cfg[k] for k in PREPROCESS if cfg.get(k) is not None}}}


def architecture(arch: str) -> dict:
    """timm's defaults for ``arch`` (its default weights' classes and preprocessing) and the
    weights zoo can read, the default first."""
    cfgs = [c.to_dict() for c in get_arch_pretrained_cfgs(arch).values()]
    weights = []
    for cfg in cfgs:
        hub_id = cfg.get("hf_hub_id") or ""
        if not hub_id.startswith("timm/") or cfg.get("hf_hub_filename"):
            continue   # not in timm's own hub layout
        weights.append({"tag": cfg["tag"], "hf_hub_id": hub_id, "license": cfg.get("license"),
                        **_classes_and_preprocess(cfg)})
    return {**_classes_and_preprocess(cfgs[0]), "weights": weights}


def main() -> None:
    table = {arch: architecture(arch) for arch in timm_names()}
    OUT.write_text(json.dumps(table, indent=0, sort_keys=True) + "\n")
    count = sum(len(v["weights"]) for v in table.values())
    print(f"wrote {count} weights of {len(table)} architectures to {OUT} (timm {timm.__version__})")


if __name__ == "__main__":
    main()
