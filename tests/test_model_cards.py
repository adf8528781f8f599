"""Every published weight's model card against a fresh evaluation of the bundled weights, run
as `zoo eval` runs it, on the data and split the card names (its own resolved config)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
import yaml

import zoo
from recipes.export import card_metrics
from recipes.train import evaluate

CARDS = sorted(Path("model_cards").glob("*.md"))
NEEDS_DATA = {"fsdd": "fsdd/recordings", "fsdd_digits": "fsdd/recordings", "etth1": "ett/ETTh1.csv"}


def _card(path: Path) -> tuple[str, dict[str, str], dict]:
    text = path.read_text()
    name = text.splitlines()[0].removeprefix("# ").strip()
    section = text[text.index("## Metrics"):text.index("## Reproduce")]
    metrics = dict(re.findall(r"^\| ([^|]+?) \| ([0-9.]+) \|$", section, flags=re.M))
    config = yaml.safe_load(text.split("```yaml", 1)[1].split("```", 1)[0])
    return name, metrics, config


def test_every_published_weight_has_a_card():
    published = set(zoo.list_models(pretrained=True))
    bundled = {n for n in published if zoo.registry.get_entry(n)[0].cfg(n.partition(".")[2]).file}
    assert bundled == {p.stem for p in CARDS}


@pytest.mark.slow
@pytest.mark.parametrize("card", CARDS, ids=[p.stem for p in CARDS])
def test_card_metrics_match_a_fresh_evaluation(card, tmp_path, one_thread):
    name, printed, config = _card(card)
    dataset = config["data"]["init_args"]["dataset"]
    if dataset in NEEDS_DATA:
        root = Path(os.environ.get("ZOO_DATA", "")) / NEEDS_DATA[dataset]
        if not os.environ.get("ZOO_DATA") or not root.exists():
            pytest.skip(f"{dataset} not found: set ZOO_DATA to the folder holding {NEEDS_DATA[dataset]}")
    config["model"]["init_args"].update(model_name=name, pretrained=True)
    config["trainer"]["default_root_dir"] = str(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = evaluate(["--config", str(tmp_path / "config.yaml")])
    model = zoo.create_model(name, pretrained=True)
    measured = card_metrics(result["metrics"], dataset, model.modality)
    assert set(measured) == set(printed), (measured, printed)
    for key, text in printed.items():   # equal at the card's printed precision
        decimals = len(text.partition(".")[2])
        assert round(measured[key], decimals) == pytest.approx(float(text), abs=10 ** -decimals / 2 + 1e-9), key
    registered = model.pretrained_cfg.metrics
    for key, value in registered.items():
        assert value == pytest.approx(measured[key], abs=1e-4), key
    headline = next(iter(printed.values()))
    assert headline in Path("README.md").read_text(), f"README does not show {name}'s {headline}"


def _reproduce_script():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce"] = module   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("card", CARDS, ids=[p.stem for p in CARDS])
def test_reproduce_script_reads_every_card(card):
    """benchmarks/reproduce.py retrains each card's command: it must find the command (a
    config that exists), the card's figures and a tolerance for each."""
    reproduce = _reproduce_script()
    parsed = reproduce.read_card(card)
    name, printed, _ = _card(card)
    assert parsed.name == name and parsed.command[0] == "train"
    assert Path(parsed.config).is_file()
    assert parsed.metrics == {k: float(v) for k, v in printed.items()} and parsed.metrics
    assert set(parsed.metrics) <= set(reproduce.TOLERANCE)
    assert parsed.train_seconds and parsed.train_seconds > 0


def _benchmark(name: str):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NOISE_CARDS = [p for p in CARDS if "## Noise robustness" in p.read_text()]


@pytest.mark.slow
@pytest.mark.parametrize("card", NOISE_CARDS, ids=[p.stem for p in NOISE_CARDS])
def test_card_noise_table_matches_a_fresh_evaluation(card, one_thread):
    """The card's noise robustness table is what benchmarks/noise_robustness.py gives today
    on the bundled weights (same seed, same protocol)."""
    root = Path(os.environ.get("ZOO_DATA", "")) / "fsdd" / "recordings"
    if not os.environ.get("ZOO_DATA") or not root.exists():
        pytest.skip("FSDD not found: set ZOO_DATA to the folder holding fsdd/recordings")
    noise = _benchmark("noise_robustness")
    printed = noise.read_card_section(card)
    kinds = list(printed)
    snrs = [float(c.removesuffix(" dB")) for c in printed[kinds[0]] if c != "clean"]
    result = noise.evaluate(card.stem, kinds=kinds, snrs=snrs)
    for kind, row in printed.items():
        assert row["clean"] == pytest.approx(round(result["clean"], 2), abs=1e-9)
        for column, value in row.items():
            if column != "clean":
                got = result["noisy"][kind][f"{float(column.removesuffix(' dB')):g}"]
                assert round(got, 2) == pytest.approx(value, abs=1e-9), (kind, column)


INT8_CARDS = [p for p in CARDS if "## int8 (CPU deployment)" in p.read_text()]


@pytest.mark.slow
@pytest.mark.parametrize("card", INT8_CARDS, ids=[p.stem for p in INT8_CARDS])
def test_card_int8_table_matches_a_fresh_evaluation(card, tmp_path, one_thread):
    """The card's int8 table (float32 and int8 test metrics) is what
    benchmarks/quantization.py measures today on the bundled weights (speed is not checked:
    it depends on the machine)."""
    from recipes.export import read_int8_section

    _, printed_metrics, config = _card(card)
    dataset = config["data"]["init_args"]["dataset"]
    if dataset in NEEDS_DATA:
        root = Path(os.environ.get("ZOO_DATA", "")) / NEEDS_DATA[dataset]
        if not os.environ.get("ZOO_DATA") or not root.exists():
            pytest.skip(f"{dataset} not found: set ZOO_DATA to the folder holding {NEEDS_DATA[dataset]}")
    quantization = _benchmark("quantization")
    model = zoo.create_model(card.stem, pretrained=True).eval()
    paths = quantization.export_pair(model, tmp_path)
    measured = quantization.accuracy(card.stem, paths, tmp_path)
    printed = read_int8_section(card)
    assert printed and set(printed) <= set(measured["onnx_int8"]), (printed, measured)
    for key, (fp32, int8) in printed.items():
        assert float(printed_metrics[key]) == fp32, key   # the float32 column is the card's
        decimals = 4 if model.modality == "series" else 2
        assert round(measured["onnx_int8"][key], decimals) == pytest.approx(int8, abs=1e-9), key
