"""Every file the library writes has the mode the umask asks for (0644 under umask 022), never mkstemp's 0600."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from no_time_to_train import Detections, ReferenceMemory
from no_time_to_train.data.convert import yolo_to_coco
from no_time_to_train.data.sampling import write_references, write_references_pickle
from no_time_to_train.evaluation import write_metrics
from no_time_to_train.resultstore import ResultStore, write_atomic, write_json_atomic
from no_time_to_train.visualize import save_instance_png


def _memory() -> ReferenceMemory:
    mem = ReferenceMemory(encoder={"model_type": "dinov2", "hidden_size": 4, "fingerprint": "abc"})
    mem.add(torch.tensor([1.0, 0, 0, 0]), 3.0, "dog", 18, image="a.jpg")
    return mem


def _yolo(tmp: Path, coco_mini: Path) -> Path:
    images, labels = tmp / "ds" / "images", tmp / "ds" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    shutil.copy(coco_mini / "val2017" / "000000000139.jpg", images / "a.jpg")
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    yolo_to_coco(images, labels, ["dog"], tmp / "yolo.json")
    return tmp / "yolo.json"


def _store(tmp: Path) -> Path:
    store = ResultStore(tmp / "parts")
    store.check_signature({"a": 1})
    store.append("k", v=1)
    store.close()
    return tmp / "parts" / "run.json"


WRITERS = {
    "memory.save": lambda tmp, _: _memory().save(tmp / "m.safetensors"),
    "write_json_atomic": lambda tmp, _: write_json_atomic(tmp / "r.json", [1]),
    "write_atomic bytes": lambda tmp, _: write_atomic(tmp / "b.bin", b"\x00\x01"),
    "convert yolo": lambda tmp, coco: _yolo(tmp, coco),
    "result store": lambda tmp, _: _store(tmp),
    "references json": lambda tmp, _: write_references(tmp / "refs.json", {18: [{"image_id": 1, "annotation_id": 2,
                                                                                   "category_id": 18}]}),
    "references pickle": lambda tmp, _: write_references_pickle(tmp / "refs.pkl", {18: []}),
    "metrics": lambda tmp, _: write_metrics(tmp / "metrics.json", {"AP": 0.5}),
    "instance png": lambda tmp, _: save_instance_png(
        Detections(np.ones((1, 4, 5), bool), np.array([[0, 0, 5, 4]], float), np.array([0.9]), np.array([0]),
                   ["dog"]), tmp / "mask.png"),
}


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_written_files_honour_the_umask(writer, umask, tmp_path, coco_mini):
    path = Path(WRITERS[writer](tmp_path, coco_mini))
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert not list(path.parent.glob("*.tmp"))  # no temporary file left behind
