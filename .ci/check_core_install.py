"""CI: `pip install zoo` without extras is a working library: it imports without Lightning,
loads bundled weights, predicts files, forecasts, and names the extra a training command needs.

Run in a fresh venv that has only the core dependencies (before the extras are installed).
"""

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from PIL import Image

for extra in ("lightning", "torchmetrics", "tensorboard", "matplotlib", "timm", "transformers",
              "sklearn", "litdata", "onnx"):
    assert importlib.util.find_spec(extra) is None, f"{extra} is installed: not a core-only venv"

import zoo  # noqa: E402

assert not [m for m in sys.modules if m.split(".")[0] in ("lightning", "torchmetrics")]
model = zoo.create_model("vit_nano_patch4_16.digits", pretrained=True).eval()
with torch.no_grad():
    assert model(torch.zeros(1, 3, 16, 16)).shape == (1, 10)


def zoo_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as tmp:
    image = Path(tmp) / "digit.png"
    Image.fromarray((np.eye(16) * 255).astype("uint8")).save(image)
    clip = Path(tmp) / "clip.wav"
    sf.write(clip, np.sin(np.arange(8000) * 0.3).astype("float32") * 0.1, 8000)
    table = Path(tmp) / "series.csv"
    rows = 400
    columns = ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(rows, 7)).cumsum(0), columns=columns)
    frame.insert(0, "date", pd.date_range("2020-01-01", periods=rows, freq="h"))
    frame.to_csv(table, index=False)
    for args in (("predict", "vit_nano_patch4_16.digits", str(image)),
                 ("predict", "ast_tiny_d6_8k.fsdd", str(clip)),
                 ("forecast", "patchtst_tiny_l336.etth1_h96", str(table),
                  "--output", str(Path(tmp) / "forecast.csv"))):
        done = zoo_cli(*args)
        assert done.returncode == 0, f"zoo {' '.join(args)} failed:\n{done.stderr}"
    done = zoo_cli("train", "configs/image/vit_nano_digits.yaml")
    assert done.returncode == 2 and "pip install 'zoo[train]'" in done.stderr, done.stderr
print("core install: imports without Lightning, loads bundled weights, predicts and forecasts; "
      "`zoo train` names zoo[train]")
