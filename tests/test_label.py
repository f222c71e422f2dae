"""``nttt label``: the CLI and the label job end to end on the tiny models (every format, resume, errors)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

pytest.importorskip("cv2", reason="the 'label' extra (opencv-python-headless) is not installed")

from no_time_to_train import cli  # noqa: E402
from no_time_to_train.imageio import load_image  # noqa: E402


@pytest.fixture(scope="module")
def memory(tmp_path_factory, tiny_sam2, tiny_encoder, coco_mini):
    from no_time_to_train import MethodConfig, ReferenceSegmenter

    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=MethodConfig(points_per_side=4))
    ref = coco_mini / "train2017" / "000000000790.jpg"
    h, w = load_image(ref).shape[:2]
    for name, (y0, x0) in (("cat", (100, 200)), ("dog", (10, 10))):
        mask = np.zeros((h, w), bool)
        mask[y0:y0 + 150, x0:x0 + 150] = True
        seg.add_reference(ref, mask, category=name)
    return seg.save_memory(tmp_path_factory.mktemp("mem") / "memory.safetensors")


@pytest.fixture
def folder(tmp_path, coco_mini):
    d = tmp_path / "images"
    d.mkdir()
    for name in ("000000000139.jpg", "000000000802.jpg", "000000011813.jpg"):
        shutil.copy(coco_mini / "val2017" / name, d / name)
    return d


def _label(models, *args):
    return cli.main(["label", *args, *models, "--device", "cpu", "--points-per-side", "4", "--quiet"])


def test_label_writes_every_format_and_reruns_without_the_models(models, memory, folder, tmp_path, capsys,
                                                                  monkeypatch):
    from pycocotools.coco import COCO

    out = tmp_path / "ds"
    assert _label(models, str(folder), "--memory", str(memory), "-o", str(out), "--format", "coco", "yolo",
                  "--format", "labelstudio,cvat", "--min-score", "0", "--val-fraction", "0.34") == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["category", "id", "instances", "images"]
    assert {"cat", "dog", "total"} <= {line.split()[0] for line in printed.splitlines()[1:4]}
    for fmt in ("coco", "yolo", "labelstudio", "cvat"):
        assert f"{fmt}: {out / fmt}" in printed
    coco = COCO(str(out / "coco" / "annotations.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["cat", "dog"]
    assert sorted(im["file_name"] for im in coco.imgs.values()) == sorted(p.name for p in folder.iterdir())
    n = len(coco.anns)
    assert n > 0 and all(0 <= a["score"] <= 1 for a in coco.anns.values())
    summary = json.loads((out / "summary.json").read_text())
    assert sum(c["instances"] for c in summary["categories"]) == n
    data = yaml.safe_load((out / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "cat", 1: "dog"} and data["val"] == "images/val"
    assert len(list((out / "yolo" / "labels" / "val").glob("*.txt"))) == 1
    assert len(json.loads((out / "labelstudio" / "tasks.json").read_text())) == 3
    assert (out / "cvat" / "annotations.xml").is_file()

    # a rerun with other filters and formats rewrites the dataset from the kept detections: no model runs
    from no_time_to_train.predictor import ReferenceSegmenter

    def never(*a, **k):
        raise AssertionError("the models must not run again")

    monkeypatch.setattr(ReferenceSegmenter, "predict", never)
    assert _label(models, str(folder), "--memory", str(memory), "-o", str(out), "--format", "coco",
                  "--min-score", "1.01") == 0
    assert COCO(str(out / "coco" / "annotations.json")).anns == {}
    assert json.loads((out / "summary.json").read_text())["formats"] == {"coco": str(out / "coco")}


def test_label_refuses_bad_input_before_the_models_load(models, memory, folder, tmp_path, capsys, monkeypatch):
    from no_time_to_train import predictor

    def never(*a, **k):
        raise AssertionError("no model may be loaded")

    monkeypatch.setattr(predictor, "ReferenceSegmenter", never)
    base = [str(folder), "--memory", str(memory)]
    assert _label(models, *base, "-o", str(tmp_path / "a"), "--format", "coco,voc") == 2
    assert "nttt label: error: unknown dataset format 'voc'; choose from coco, yolo, labelstudio, cvat" in \
        capsys.readouterr().err
    other = tmp_path / "someone-elses"
    (other / "annotations").mkdir(parents=True)
    assert _label(models, *base, "-o", str(other)) == 2
    assert f"the dataset output {other} already holds other files (annotations)" in capsys.readouterr().err

    from no_time_to_train.memory import ReferenceMemory

    mem = ReferenceMemory.load(memory)
    mem.categories[0]["name"] = "n01440764"
    for r in mem.references:
        r["category"] = {"cat": "n01440764"}.get(r["category"], r["category"])
    bad = mem.save(tmp_path / "imagenet.safetensors")
    assert _label(models, str(folder), "--memory", str(bad), "-o", str(tmp_path / "b"), "--format", "yolo") == 2
    assert "ImageNet class code" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["label", str(folder), "--memory", str(memory), "-o", str(tmp_path / "c"), "--min-score", "-1"])
    assert "argument --min-score: must be >= 0" in capsys.readouterr().err
