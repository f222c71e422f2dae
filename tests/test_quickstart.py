"""`make demo` / examples/quickstart.py: weights passed through, and offline one fast message naming both models."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from no_time_to_train.errors import CheckpointError
from no_time_to_train.models import checkpoints

ROOT = Path(__file__).resolve().parents[1]
SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"


@pytest.fixture(scope="module")
def quickstart():
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples" / "quickstart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _never(*args, **kwargs):
    raise AssertionError("nothing may be loaded, downloaded or probed")


def test_demo_offline_stops_at_once_naming_both_models(quickstart, offline_empty_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoints, "_hub_reachable", _never)
    monkeypatch.setattr(checkpoints, "_hub_model_type", _never)
    monkeypatch.setattr(quickstart, "ReferenceSegmenter", _never)
    monkeypatch.setattr(quickstart, "CocoDataset", _never)
    with pytest.raises(CheckpointError) as err:
        quickstart.main(["--out", str(tmp_path / "demo")])
    msg = str(err.value)
    for part in ("facebook/sam2-hiera-large", "facebook/dinov2-large", SAM2_URL, DINOV2_URL, "make demo SAM2="):
        assert part in msg
    assert "ENCODER=" in msg and not (tmp_path / "demo").exists()


def test_demo_takes_weight_paths(quickstart, tmp_path):
    args = quickstart.parse_args(["--sam2", "w/sam2_hiera_large.pt", "--encoder", "w/dinov2.pth", "--device", "cuda"])
    assert (args.sam2, args.encoder, args.device) == ("w/sam2_hiera_large.pt", "w/dinov2.pth", "cuda")
    with pytest.raises(CheckpointError) as err:  # the paths given are the ones checked
        quickstart.check_weights(args)
    assert "w/sam2_hiera_large.pt" in str(err.value) and "w/dinov2.pth" in str(err.value)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("variables, expected", [
    (["SAM2=/w/sam2_hiera_large.pt", "ENCODER=/w/dino v2.pth"],
     'examples/quickstart.py --sam2 "/w/sam2_hiera_large.pt" --encoder "/w/dino v2.pth"'),
    (["DEVICE=cuda"], 'examples/quickstart.py --device "cuda"'),
    ([], "examples/quickstart.py"),
])
def test_make_demo_passes_weights(variables, expected):
    # under `make test` the outer make's variables would make this one print "Entering directory" lines
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run(["make", "--no-print-directory", "-n", "demo", *variables], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1].endswith(expected)
