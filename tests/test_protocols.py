"""Whole protocols (VOC few-shot, CD-FSOD) and pseudo masks on small fixtures built from coco-mini."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from no_time_to_train import InputError

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


def test_cdfsod_protocol_evaluates_every_test_category(voc, models, tmp_path, capsys, caplog):
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
    # all 20 categories of test.json count, as the authors evaluate, not only bird and bus
    assert [c["id"] for c in metrics["categories"]] == list(range(20))
    assert "have no reference" in caplog.text and "[0, 1, 3, 4, 6," in caplog.text


CDFSOD_SHOT = [  # (ann id, image id, category id, bbox): the hand-made 5-shot file of test_convert
    (21, 12, 2, (40, 30, 120, 100)), (11, 10, 1, (60, 50, 150, 120)), (12, 11, 1, (30, 40, 100, 90)),
    (22, 12, 2, (200, 150, 80, 90)), (13, 11, 1, (150, 120, 60, 70)), (23, 10, 2, (250, 60, 110, 140))]
#: cdfsod_references' K = 5 slots per class for it (seed 42; derivation in test_convert)
CDFSOD_SLOTS = {2: [21, 21, 23, 21, 21], 1: [11, 12, 12, 11, 11]}


@pytest.fixture
def cdfsod(tmp_path, coco_mini):
    """A CD-FSOD tree on coco-mini: 5_shot.json = CDFSOD_SHOT on three train images; test.json = one val image
    with a box of class 1 and one of class 3, which has no reference."""
    root = tmp_path / "cdfsod"
    ds = root / "ArTaxOr"
    (ds / "annotations").mkdir(parents=True)
    (ds / "train").symlink_to(coco_mini / "train2017")
    (ds / "test").symlink_to(coco_mini / "val2017")
    cats = [{"id": 1, "name": "Araneae"}, {"id": 2, "name": "Coleoptera"}, {"id": 3, "name": "Diptera"}]
    train = json.loads((coco_mini / "annotations" / "instances_train2017.json").read_text())["images"]
    images = [{**im, "id": i} for i, im in zip((10, 11, 12), train)]
    anns = [{"id": a, "image_id": i, "category_id": c, "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0}
            for a, i, c, b in CDFSOD_SHOT]
    (ds / "annotations" / "5_shot.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": cats[:2]}))
    val = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())["images"][0]
    test = [{"id": 1, "image_id": val["id"], "category_id": 1, "bbox": [10, 10, 100, 80], "area": 8000, "iscrowd": 0},
            {"id": 2, "image_id": val["id"], "category_id": 3, "bbox": [150, 90, 60, 60], "area": 3600, "iscrowd": 0}]
    (ds / "annotations" / "test.json").write_text(json.dumps({"images": [val], "annotations": test,
                                                              "categories": cats}))
    return root


def test_cdfsod_convert_and_protocol_build_the_same_k_slot_memory(cdfsod, models, tmp_path):
    import torch

    from no_time_to_train import ReferenceMemory

    ds = cdfsod / "ArTaxOr"
    assert main(["convert", "cdfsod", str(cdfsod), "--shots", "5", "-o", str(tmp_path / "refs")]) == 0
    assert main(["fill-memory", str(tmp_path / "refs" / "ArTaxOr" / "refs_5shot.json"), "--annotations",
                 str(ds / "annotations" / "5_shot.json"), "--images", str(ds / "train"), "--reference-masks",
                 "from-boxes", "-o", str(tmp_path / "convert.safetensors"), *models, *FAST]) == 0
    assert main(["protocol", "cdfsod", str(cdfsod), "--shots", "5", "-o", str(tmp_path / "out"), *models, *FAST]) == 0
    converted = ReferenceMemory.load(tmp_path / "convert.safetensors")
    mem = ReferenceMemory.load(tmp_path / "out" / "ArTaxOr" / "5shot" / "memory.safetensors")
    assert [r["annotation_id"] for r in mem.references] == CDFSOD_SLOTS[2] + CDFSOD_SLOTS[1]
    assert converted.references == mem.references and torch.equal(converted.vectors, mem.vectors)
    assert torch.equal(converted.prototypes(), mem.prototypes())
    # the prototype is the mean over the K slots, duplicates included (not over distinct annotations)
    vec = {r["annotation_id"]: mem.vectors[i] for i, r in enumerate(mem.references)}
    assert all(torch.equal(vec[r["annotation_id"]], mem.vectors[i]) for i, r in enumerate(mem.references))
    assert mem.category_ids == [1, 2]
    slots = torch.stack([torch.stack([vec[a] for a in CDFSOD_SLOTS[c]]).mean(0) for c in (1, 2)])
    distinct = torch.stack([torch.stack([vec[a] for a in sorted(set(CDFSOD_SLOTS[c]))]).mean(0) for c in (1, 2)])
    expect = torch.nn.functional.normalize(slots, dim=1)
    assert torch.allclose(mem.prototypes(), expect, atol=1e-6)
    assert not torch.allclose(mem.prototypes(), torch.nn.functional.normalize(distinct, dim=1), atol=1e-4)
    metrics = json.loads((tmp_path / "out" / "ArTaxOr" / "5shot" / "eval" / "metrics.json").read_text())
    assert [c["id"] for c in metrics["categories"]] == [1, 2, 3]  # Diptera has no reference but counts
    assert metrics["bbox"]["per_category"]["Diptera"] == 0.0


@pytest.fixture
def empty_sam2_masks(monkeypatch):
    """SAM2 whose every mask comes out empty (all logits -10)."""
    import torch

    from no_time_to_train.models.sam2 import Sam2Segmenter

    decode = Sam2Segmenter.decode

    def empty(self, *args, **kwargs):
        logits, iou = decode(self, *args, **kwargs)
        return torch.full_like(logits, -10.0), iou

    monkeypatch.setattr(Sam2Segmenter, "decode", empty)


def test_box_rectangle_mask_is_the_clipped_filled_box():
    from no_time_to_train.prompts import box_rectangle_mask

    expect = np.zeros((8, 10), bool)
    expect[3:8, 2:6] = True  # x 2..6, y 3..8: 4 x 5 pixels
    assert np.array_equal(box_rectangle_mask((2, 3, 6, 8), (8, 10)), expect)
    expect = np.zeros((8, 10), bool)
    expect[:3, :3] = True  # (-3, -2)..(3, 3) clipped to the image
    assert np.array_equal(box_rectangle_mask((-3, -2, 3, 3), (8, 10)), expect)


def test_empty_box_mask_falls_back_to_the_box(empty_sam2_masks, make_segmenter, coco_mini):
    from no_time_to_train.imageio import load_image
    from no_time_to_train.prompts import box_rectangle_mask, mask_from_box, mask_from_prompt

    seg = make_segmenter()
    image = load_image(sorted((coco_mini / "train2017").glob("*.jpg"))[0])
    mask, fell_back = mask_from_box(seg.sam2, image, (30, 40, 130, 120))
    assert fell_back and np.array_equal(mask, box_rectangle_mask((30, 40, 130, 120), image.shape[:2]))
    assert mask.sum() == 100 * 80
    with pytest.raises(InputError, match="found no object"):  # interactive prompts still say so
        mask_from_prompt(seg.sam2, image, box=(30, 40, 130, 120))


def test_fill_memory_from_boxes_survives_empty_masks(empty_sam2_masks, cdfsod, models, make_segmenter, tmp_path,
                                                      caplog):
    import torch

    from no_time_to_train import ReferenceMemory
    from no_time_to_train.prompts import box_rectangle_mask

    ds = cdfsod / "ArTaxOr"
    assert main(["convert", "cdfsod", str(cdfsod), "--shots", "5", "-o", str(tmp_path / "refs")]) == 0
    assert main(["fill-memory", str(tmp_path / "refs" / "ArTaxOr" / "refs_5shot.json"), "--annotations",
                 str(ds / "annotations" / "5_shot.json"), "--images", str(ds / "train"), "--reference-masks",
                 "from-boxes", "-o", str(tmp_path / "m.safetensors"), *models, *FAST]) == 0
    assert "4 of 4 reference boxes got an empty SAM2 mask and use the filled box rectangle" in caplog.text
    mem = ReferenceMemory.load(tmp_path / "m.safetensors")
    assert len(mem) == 10 and all(r["mask"] == "box-rectangle" for r in mem.references)
    # the row of annotation 21 is the reference encoded with the filled box as its mask
    shot = json.loads((ds / "annotations" / "5_shot.json").read_text())
    im = next(i for i in shot["images"] if i["id"] == 12)
    x, y, w, h = CDFSOD_SHOT[0][3]
    rect = box_rectangle_mask((x, y, x + w, y + h), (im["height"], im["width"]))
    vec, _, _ = make_segmenter().encode_references(
        [{"image": ds / "train" / im["file_name"], "mask": rect, "category": "c", "crop_box": (x, y, x + w, y + h)}])
    assert torch.allclose(mem.vectors[0], vec[0], atol=1e-5)


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


def test_pseudo_masks_fall_back_to_boxes(empty_sam2_masks, voc, models, tmp_path, caplog):
    from no_time_to_train.prompts import box_rectangle_mask
    from no_time_to_train.types import encode_rle

    out = tmp_path / "test_pseudo.json"
    assert main(["pseudo-masks", str(voc / "test.json"), "--images", str(voc / "images"), "-o", str(out),
                 *models, *FAST]) == 0
    data = json.loads(out.read_text())
    boxed = [a for a in data["annotations"] if not a["iscrowd"]]
    assert data["info"]["pseudo_masks_box_fallbacks"] == len(boxed) > 0
    assert f"{len(boxed)} of {len(boxed)} boxes got an empty SAM2 mask" in caplog.text
    sizes = {im["id"]: (im["height"], im["width"]) for im in data["images"]}
    for a in boxed:
        x, y, w, h = a["bbox"]
        assert a["segmentation"] == encode_rle(box_rectangle_mask((x, y, x + w, y + h), sizes[a["image_id"]]))
