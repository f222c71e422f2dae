"""Whole protocols (VOC few-shot, CD-FSOD) and pseudo masks on small fixtures built from coco-mini."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from no_time_to_train.cli import main
from no_time_to_train.protocols import markdown_table

FAST = ["--points-per-side", "4", "--device", "cpu", "--quiet"]
VOC_NAMES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
             "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
COCO_TO_VOC = {"airplane": "aeroplane", "dining table": "diningtable", "motorcycle": "motorbike",
               "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor"}


def _voc_like(coco_json: Path, n_images: int | None = None) -> dict:
    """coco-mini as a box-only VOC-style set: VOC names, 0-based ids, no masks. Couches are moved off the
    border so that 'sofa' (in every VOC split) has a valid 1-shot reference."""
    data = json.loads(coco_json.read_text())
    names = {c["id"]: COCO_TO_VOC.get(c["name"], c["name"]) for c in data["categories"]}
    ids = {n: i for i, n in enumerate(VOC_NAMES)}
    images = data["images"]
    if n_images:  # the first images showing a VOC split-1 class (bird, bus, cow, motorbike, sofa)
        split1 = {"bird", "bus", "cow", "motorbike", "sofa"}
        shown = {a["image_id"] for a in data["annotations"] if names[a["category_id"]] in split1}
        images = [im for im in images if im["id"] in shown][:n_images]
    keep = {im["id"] for im in images}
    anns = []
    for a in data["annotations"]:
        name = names[a["category_id"]]
        if name not in ids or a["image_id"] not in keep:
            continue
        x, y, w, h = a["bbox"]
        if name == "sofa" and w > 60 and h > 60:
            x, y, w, h = x + 12, y + 12, w - 24, h - 24
        anns.append({"id": a["id"], "image_id": a["image_id"], "category_id": ids[name], "bbox": [x, y, w, h],
                     "area": w * h, "iscrowd": a["iscrowd"]})
    return {"images": images, "annotations": anns,
            "categories": [{"id": i, "name": n} for i, n in enumerate(VOC_NAMES)]}


@pytest.fixture(scope="module")
def voc(tmp_path_factory, coco_mini):
    d = tmp_path_factory.mktemp("voc")
    (d / "images").mkdir()
    for sub in ("train2017", "val2017"):
        for p in (coco_mini / sub).glob("*.jpg"):
            (d / "images" / p.name).symlink_to(p)
    (d / "trainval.json").write_text(json.dumps(_voc_like(coco_mini / "annotations" / "instances_train2017.json")))
    (d / "test.json").write_text(json.dumps(_voc_like(coco_mini / "annotations" / "instances_val2017.json", 3)))
    return d


def test_markdown_table_shape_and_mean():
    values = {(1, "split1"): 0.5, (1, "split2"): 0.25, (2, "split1"): 0.1}
    table = markdown_table(values, [1, 2], ["split1", "split2"], "VOC nAP50")
    lines = table.splitlines()
    assert lines[0] == "| VOC nAP50 | split1 | split2 | mean |"
    assert lines[2] == "| 1-shot | 50.0 | 25.0 | 37.5 |"
    assert lines[3] == "| 2-shot | 10.0 | - | - |"


def test_voc_protocol_end_to_end_and_resume(voc, models, tmp_path, capsys):
    args = ["protocol", "voc", "--train-json", str(voc / "trainval.json"), "--test-json", str(voc / "test.json"),
            "--images", str(voc / "images"), "--splits", "1", "--shots", "1", "-o", str(tmp_path / "voc"),
            *models, *FAST]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| VOC nAP50 | split1 | mean |" in out and "| 1-shot |" in out
    setting = tmp_path / "voc" / "split1" / "1shot"
    refs = json.loads((setting / "refs.json").read_text())
    assert sorted(c["name"] for c in refs["categories"]) == ["bird", "bus", "cow", "motorbike", "sofa"]
    metrics = json.loads((setting / "eval" / "metrics.json").read_text())
    assert "segm" not in metrics and "AP50_voc07" in metrics["bbox"]  # box-only ground truth: bbox only
    from no_time_to_train import ReferenceMemory

    mem = ReferenceMemory.load(setting / "memory.safetensors")
    assert all(r["prompt"] == "box" for r in mem.references)  # VOC has no masks: SAM2 box prompts
    stamp = (setting / "eval" / "metrics.json").stat().st_mtime_ns
    assert main(args) == 0  # finished settings are kept, not recomputed
    assert (setting / "eval" / "metrics.json").stat().st_mtime_ns == stamp
    assert (tmp_path / "voc" / "table.md").read_text().startswith("PASCAL VOC novel classes")


def test_cdfsod_protocol(voc, models, tmp_path, capsys):
    root = tmp_path / "cdfsod" / "ArTaxOr"
    (root / "annotations").mkdir(parents=True)
    (root / "train").symlink_to(voc / "images")
    (root / "test").symlink_to(voc / "images")
    test = json.loads((voc / "test.json").read_text())
    (root / "annotations" / "test.json").write_text(json.dumps(test))
    train = json.loads((voc / "trainval.json").read_text())
    shot = {"images": [], "annotations": [], "categories": [c for c in train["categories"] if c["id"] in (2, 5)]}
    for cat in (2, 5):  # one box each of bird and bus
        a = next(a for a in train["annotations"] if a["category_id"] == cat and not a["iscrowd"])
        shot["annotations"].append(a)
        shot["images"].append(next(i for i in train["images"] if i["id"] == a["image_id"]))
    (root / "annotations" / "1_shot.json").write_text(json.dumps(shot))
    assert main(["protocol", "cdfsod", str(tmp_path / "cdfsod"), "--shots", "1", "-o", str(tmp_path / "out"),
                 *models, *FAST]) == 0
    assert "| CD-FSOD nAP | ArTaxOr | mean |" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "ArTaxOr" / "1shot" / "eval" / "metrics.json").read_text())
    assert [c["id"] for c in metrics["categories"]] == [2, 5]


def test_pseudo_masks_are_labelled(voc, models, tmp_path):
    out = tmp_path / "test_pseudo.json"
    assert main(["pseudo-masks", str(voc / "test.json"), "--images", str(voc / "images"), "-o", str(out),
                 *models, *FAST]) == 0
    data = json.loads(out.read_text())
    assert data["info"]["pseudo_masks"] is True
    assert all("segmentation" in a for a in data["annotations"] if not a["iscrowd"])
    from no_time_to_train.data.coco import CocoDataset

    ds = CocoDataset(out, voc / "images")
    a = next(a for a in data["annotations"] if not a["iscrowd"])
    assert ds.ann_mask(a).shape == (ds.image_info(a["image_id"])["height"], ds.image_info(a["image_id"])["width"])
