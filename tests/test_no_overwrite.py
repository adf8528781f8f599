"""Nothing the user made is lost: run directories, packages and output files are never written
over; a package appears whole or not at all."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from recipes.cli import ConfigError, claim_run_dir
from recipes.train import train
from zoo import cli
from zoo.package import PACKAGE_FILES

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1"]
TRAIN = ["configs/image/vit_nano_digits.yaml", "--trainer.max_epochs=1",
         "--trainer.limit_train_batches=2", "--model.model_kwargs.depth=1", *QUIET]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "digits"
    assert cli.main(["train", TRAIN[0], f"--trainer.default_root_dir={out}", *TRAIN[1:]]) == 0
    return out


# --- run directories --------------------------------------------------------------------------

def test_training_into_a_finished_run_is_refused_and_changes_nothing(finished_run, capsys):
    before = _snapshot(finished_run)
    capsys.readouterr()
    assert cli.main(["train", TRAIN[0], f"--trainer.default_root_dir={finished_run}", *TRAIN[1:],
                     "--seed_everything=7"]) == 2
    err = capsys.readouterr().err
    assert (f"trainer.default_root_dir {finished_run} already holds a finished run; nothing was "
            "changed") in err
    assert "`zoo train CONFIG --resume` (or `zoo fit ... --ckpt_path last`) continues it" in err
    assert _snapshot(finished_run) == before
    # LightningCLI's own fit refuses it too, before anything is made
    assert cli.main(["fit", "--config", TRAIN[0], f"--trainer.default_root_dir={finished_run}",
                     *TRAIN[1:]]) == 2
    assert _snapshot(finished_run) == before


def test_overwrite_moves_the_earlier_run_aside_whole(tmp_path, finished_run):
    run = tmp_path / "digits"
    run.mkdir()
    for name, data in _snapshot(finished_run).items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    before = _snapshot(run)
    moved = claim_run_dir(run, resume=False, overwrite=True)
    assert not run.exists() and moved.name.startswith("digits.replaced-")
    assert _snapshot(moved) == before        # config, checkpoints, metrics and logs together
    assert claim_run_dir(moved, resume=True, overwrite=False) is None   # resuming is allowed
    with pytest.raises(ConfigError, match="--resume continues the run in its folder, --overwrite "
                                          "replaces it: pass one of them"):
        train(["--config", TRAIN[0]], resume=True, overwrite=True)


def test_a_folder_that_is_not_a_run_is_never_used(tmp_path, capsys):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("my work")
    capsys.readouterr()
    assert cli.main(["train", TRAIN[0], f"--trainer.default_root_dir={mine}", *TRAIN[1:],
                     "--overwrite"]) == 2
    assert "is a non-empty folder that is not a zoo run (it holds chapter1.tex)" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["chapter1.tex"]
    assert claim_run_dir(tmp_path / "new", resume=False, overwrite=False) is None


def test_resume_with_nothing_to_resume_says_so(tmp_path, caplog):
    from recipes.train import resume_checkpoint

    with caplog.at_level("WARNING"):
        assert resume_checkpoint(tmp_path / "fresh", True) is None
    assert "--resume: no checkpoint in" in caplog.text and "starting afresh" in caplog.text


# --- packages -------------------------------------------------------------------------------------

def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return zoo.create_model("vit_tiny_patch4_32", depth=1, embed_dim=32, num_heads=2)


def test_save_refuses_a_users_folder_and_leaves_it_alone(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "README.md").write_text("my project")
    (folder / "config.json").write_text('{"mine": true}')
    with pytest.raises(FileExistsError, match=r"is a non-empty folder that is not a zoo package "
                                              r"\(README.md, config.json\)"):
        zoo.save(_model(), folder)
    assert (folder / "README.md").read_text() == "my project"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json"]
    extra = tmp_path / "package"
    zoo.save(_model(), extra)
    (extra / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds files a zoo package does not \(notes.txt\)"):
        zoo.save(_model(1), extra)
    with pytest.raises(FileExistsError, match="is a file"):
        zoo.save(_model(), extra / "notes.txt")


def test_save_replaces_a_package_whole_and_a_failure_changes_nothing(tmp_path, monkeypatch):
    target = tmp_path / "pkg"
    zoo.save(_model(0), target)
    first = _snapshot(target)
    zoo.save(_model(1), target)
    second = _snapshot(target)
    assert second.keys() == first.keys() and second != first
    import zoo.package as package

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(package, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        zoo.save(_model(2), target)
    assert _snapshot(target) == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]     # no staging folder left


def test_two_saves_to_one_folder_never_mix(tmp_path):
    target = tmp_path / "pkg"
    models = [_model(seed) for seed in range(4)]
    errors: list[Exception] = []

    def save(model):
        try:
            zoo.save(model, target)
        except Exception as err:   # noqa: BLE001 - collected and checked below
            errors.append(err)

    threads = [threading.Thread(target=save, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    loaded = zoo.load(target)
    state = loaded.state_dict()
    matches = [all(torch.equal(state[k], m.state_dict()[k]) for k in state) for m in models]
    assert sum(matches) == 1                  # exactly one writer's weights, whole
    assert sorted(p.name for p in target.iterdir()) == sorted(PACKAGE_FILES[:3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


def test_export_refuses_a_users_folder(finished_run, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("a,b\n")
    capsys.readouterr()
    ckpt = finished_run / "checkpoints" / "last.ckpt"
    assert cli.main(["export", str(ckpt), str(mine), "--no-eval"]) == 2
    assert "not a zoo package" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["data.csv"]


# --- output files never replace inputs --------------------------------------------------------------

@pytest.fixture
def series_csv(tmp_path) -> Path:
    t = np.arange(400)
    path = tmp_path / "data.csv"
    pd.DataFrame({"day": pd.date_range("2024-01-01", periods=400, freq="D"),
                  "sales": 5 + np.sin(2 * np.pi * t / 7)}).to_csv(path, index=False)
    return path


def test_forecast_never_writes_over_its_input(series_csv, tmp_path, capsys):
    before = series_csv.read_bytes()
    base = ["forecast", "patchtst_tiny_l336.etth1_h96", str(series_csv), "--time-column", "day"]
    for extra, message in ((["--output", str(series_csv)], "--output"),
                           (["--plot", str(series_csv)], "--plot")):
        capsys.readouterr()
        assert cli.main(base[:5] + extra) == 2
        err = capsys.readouterr().err
        assert f"{message} {series_csv} is the input {series_csv}; zoo never writes over its inputs" in err
    capsys.readouterr()
    same = str(tmp_path / "f.csv")                       # the plot would replace the forecast
    assert cli.main([*base[:5], "--output", same, "--plot", same]) == 2
    assert "--plot" in capsys.readouterr().err and not (tmp_path / "f.csv").exists()
    assert cli.main([*base[:5], "--output", str(tmp_path)]) == 2
    assert f"--output {tmp_path} is a folder; give a file name" in capsys.readouterr().err
    assert series_csv.read_bytes() == before


def test_predict_never_writes_over_an_input_list(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (16, 16), "red").save(tmp_path / "a.png")
    listing = tmp_path / "inputs.csv"
    listing.write_text("path\na.png\n")
    capsys.readouterr()
    assert cli.main(["predict", "vit_nano_patch4_16.digits", str(listing), "--output", str(listing)]) == 2
    assert "--output" in capsys.readouterr().err and listing.read_text() == "path\na.png\n"
    assert cli.main(["predict", "vit_nano_patch4_16.digits", str(listing), "--output",
                     str(tmp_path / "out.csv")]) == 0
    assert (tmp_path / "out.csv").read_text().startswith("path,label,probability,top_k,window_s,error")
