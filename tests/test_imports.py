"""The package graph runs one way: layers <- encoder <- front ends / heads <- models <- factory
<- package / cli, with the registry, hub and converters below the models; no import circle,
kept alive or not; every module imports on its own; zoo never imports Lightning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "zoo"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(zoo modules ``name`` imports anywhere in its code, top-level packages it imports)."""
    tree = ast.parse(MODULES[name].read_text())
    zoo_modules, packages = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from zoo.x import y": y may be a module of its own, else it lives in zoo.x
            submodules = [f"{node.module}.{a.name}" for a in node.names]
            targets = [t if t in MODULES else node.module for t in submodules]
        else:
            continue
        for target in targets:
            packages.add(target.split(".")[0])
            if target in MODULES:
                zoo_modules.add(target)
    zoo_modules.discard(name)
    return zoo_modules, packages


GRAPH = {name: _imports(name)[0] for name in MODULES}


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(GRAPH.get(node, ()))
    return False


def test_the_static_import_graph_has_no_circle():
    """Function-level imports count too: none may hide a circle."""
    circles = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                     if _reaches(b, a))
    assert circles == []


@pytest.mark.parametrize("name, allowed", [
    ("zoo.registry", ()),
    ("zoo.hub", ()),
    ("zoo.layers", ("zoo.layers",)),
    ("zoo.encoder", ("zoo.layers",)),
    ("zoo.convert", ("zoo.convert",)),
    ("zoo.frontends", ("zoo.frontends", "zoo.layers")),
    ("zoo.heads", ("zoo.layers",)),
])
def test_lower_layers_import_only_what_is_below_them(name, allowed):
    for module in (m for m in MODULES if m == name or m.startswith(name + ".")):
        outside = {t for t in GRAPH[module] if not t.startswith(tuple(allowed))} if allowed \
            else GRAPH[module]
        assert not outside, f"{module} imports {sorted(outside)}"


def test_zoo_never_imports_lightning():
    for name in MODULES:
        assert not _imports(name)[1] & {"lightning", "pytorch_lightning"}, name


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    """One interpreter; before each module, every zoo module is forgotten, so each import runs
    the package from nothing with that module first (a hidden circle fails here)."""
    script = (
        "import importlib, sys, traceback\n"
        f"names = {sorted(MODULES)!r}\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'zoo' or m.startswith('zoo.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=3))\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT.parent, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# What `pip install zoo` (no extras) brings, by import name.
CORE_PACKAGES = {"torch", "torchvision", "torchaudio", "numpy", "pandas", "safetensors",
                 "huggingface_hub", "PIL", "soundfile", "tqdm"}


def _module_level_packages(name: str) -> set[str]:
    """Top-level packages ``name`` imports when it is imported (not inside functions, and not
    under ``if TYPE_CHECKING``)."""
    packages = set()
    for node in ast.parse(MODULES[name].read_text()).body:
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            packages.add(node.module.split(".")[0])
    return packages - {"__future__", "zoo"}


def test_the_core_dependencies_are_the_declared_ones():
    """pyproject's core list and CORE_PACKAGES agree, so the next test checks the real list."""
    import importlib.metadata

    declared = {req.split(">")[0].split("=")[0].split("[")[0].strip().lower()
                for req in importlib.metadata.requires("zoo") or () if "extra ==" not in req}
    assert declared == {"pillow" if p == "PIL" else p.lower() for p in CORE_PACKAGES}


def test_importing_any_zoo_module_needs_only_the_core_install():
    """Optional packages (Lightning, matplotlib, onnx, timm, transformers, scikit-learn) are
    imported inside the functions that use them, so `pip install zoo` imports everything."""
    for name in MODULES:
        optional = {p for p in _module_level_packages(name)
                    if p not in sys.stdlib_module_names and p not in CORE_PACKAGES}
        assert not optional, f"{name} imports {sorted(optional)} when imported"


def test_a_training_command_without_the_train_extra_names_it(monkeypatch, capsys):
    from zoo.cli import main

    for loaded in [m for m in sys.modules if m == "recipes" or m.startswith("recipes.")]:
        monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, "lightning", None)     # import lightning now fails
    config = ROOT.parent / "configs" / "image" / "vit_nano_digits.yaml"
    assert main(["train", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        "zoo train: error: this command needs the 'lightning' package: pip install 'zoo[train]'")
