"""Dataset converters: PASCAL VOC XML, CD-FSOD layout and YOLO labels -> COCO JSON / reference files."""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from pathlib import Path

import pytest

from no_time_to_train.data.coco import COCO_NAMES, load_coco_json, resolve_categories
from no_time_to_train.data.convert import (
    VOC_CLASSES,
    add_convert_parser,
    cdfsod_dataset,
    cdfsod_references,
    load_class_names,
    voc_image_id,
    voc_to_coco,
    yolo_to_coco,
)
from no_time_to_train.data.sampling import read_references, write_references
from no_time_to_train.errors import InputError

VAL = Path("/work/shared/data/coco-mini/val2017")
IMG_A = VAL / "000000000139.jpg"  # 640 x 426
IMG_B = VAL / "000000000802.jpg"  # 424 x 640
IMG_C = VAL / "000000011813.jpg"  # 333 x 500


@pytest.fixture(autouse=True)
def _need_images():
    if not all(p.is_file() for p in (IMG_A, IMG_B, IMG_C)):
        pytest.fail("coco-mini val2017 images not found under /work/shared/data/coco-mini")


# ------------------------------------------------------------------------------------------------------ VOC


def _voc_xml(path: Path, objects, size=(640, 426)) -> None:
    """objects: (name, xmin, ymin, xmax, ymax, difficult)."""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for n, x1, y1, x2, y2, d in objects
    )
    sz = "" if size is None else f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>VOC</folder><filename>{path.stem}.jpg</filename>{sz}{objs}</annotation>")


def _voc_tree(tmp_path: Path, same_2012_image: bool = True) -> Path:
    devkit = tmp_path / "VOCdevkit"
    v07, v12 = devkit / "VOC2007", devkit / "VOC2012"
    _voc_xml(v07 / "Annotations" / "000005.xml", [("dog", 10, 20, 110, 220, 1)], size=(640, 426))
    _voc_xml(v07 / "Annotations" / "000007.xml",
             [("cat", 1, 1, 50, 60, 0), ("person", 100, 50, 300, 400, 0)], size=(424, 640))
    _voc_xml(v12 / "Annotations" / "000005.xml", [("tvmonitor", 5, 6, 7, 9, 0)], size=None)  # size from JPEG
    for d in (v07, v12):
        (d / "JPEGImages").mkdir(parents=True)
        (d / "ImageSets" / "Main").mkdir(parents=True)
    shutil.copy(IMG_A, v07 / "JPEGImages" / "000005.jpg")
    shutil.copy(IMG_B, v07 / "JPEGImages" / "000007.jpg")
    shutil.copy(IMG_A if same_2012_image else IMG_C, v12 / "JPEGImages" / "000005.jpg")
    (v07 / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n000007\n\n")
    (v12 / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n")
    (v07 / "ImageSets" / "Main" / "test.txt").write_text("000007\n")
    return devkit


def test_voc_to_coco_exact_output(tmp_path):
    devkit = _voc_tree(tmp_path)
    out, flat = tmp_path / "voc0712_trainval.json", tmp_path / "allimages"
    data = voc_to_coco(devkit, [("2007", "trainval"), ("2012", "trainval")], out, images_dir=flat)

    assert data["categories"] == [{"id": i, "name": n, "supercategory": "none"} for i, n in enumerate(VOC_CLASSES)]
    assert [c["id"] for c in data["categories"]][:3] == [0, 1, 2] and VOC_CLASSES[14] == "person"
    assert data["images"] == [
        {"id": 20070000000005, "file_name": "000005.jpg", "width": 640, "height": 426},
        {"id": 20070000000007, "file_name": "000007.jpg", "width": 424, "height": 640},
        {"id": 20120000000005, "file_name": "000005.jpg", "width": 640, "height": 426},  # from the JPEG
    ]
    assert data["annotations"] == [
        {"id": 1, "image_id": 20070000000005, "category_id": 11, "bbox": [9.0, 19.0, 100.0, 200.0],
         "area": 20000.0, "iscrowd": 1},
        {"id": 2, "image_id": 20070000000007, "category_id": 7, "bbox": [0.0, 0.0, 49.0, 59.0],
         "area": 2891.0, "iscrowd": 0},
        {"id": 3, "image_id": 20070000000007, "category_id": 14, "bbox": [99.0, 49.0, 200.0, 350.0],
         "area": 70000.0, "iscrowd": 0},
        {"id": 4, "image_id": 20120000000005, "category_id": 19, "bbox": [4.0, 5.0, 2.0, 3.0],
         "area": 6.0, "iscrowd": 0},
    ]
    assert all("segmentation" not in a for a in data["annotations"])
    assert load_coco_json(out) == data
    # flattened image folder: one file per name, links to the VOC JPEGs
    assert sorted(p.name for p in flat.iterdir()) == ["000005.jpg", "000007.jpg"]
    assert (flat / "000007.jpg").read_bytes() == IMG_B.read_bytes()
    assert (flat / "000005.jpg").read_bytes() == IMG_A.read_bytes()
    # the VOC split names of coco.SPLITS resolve against the converted categories (0-based ids)
    assert [c["id"] for c in resolve_categories(data["categories"], "voc-split1")] == [2, 5, 9, 13, 17]
    # re-running into the same folder is fine (same files)
    voc_to_coco(devkit, [("2007", "trainval"), ("2012", "trainval")], out, images_dir=flat)


def test_voc_root_forms_and_copy(tmp_path):
    devkit = _voc_tree(tmp_path)
    a = voc_to_coco(tmp_path, [("2007", "test")], None)  # the parent of VOCdevkit
    b = voc_to_coco(devkit / "VOC2007", ("2007", "test"), None, images_dir=tmp_path / "flat", copy=True)
    assert a == b and [im["id"] for im in a["images"]] == [20070000000007]
    assert not (tmp_path / "flat" / "000007.jpg").is_symlink()
    assert voc_image_id("2012", "2008_000002") == 20122008000002
    assert voc_image_id(2007, "abc") is None


def test_voc_non_numeric_ids_are_numbered(tmp_path):
    d = tmp_path / "VOCdevkit" / "VOC2007"
    _voc_xml(d / "Annotations" / "img_a.xml", [("cow", 2, 2, 4, 4, 0)])
    _voc_xml(d / "Annotations" / "000003.xml", [])
    (d / "ImageSets" / "Main").mkdir(parents=True)
    (d / "ImageSets" / "Main" / "val.txt").write_text("img_a\n000003\n")
    data = voc_to_coco(tmp_path / "VOCdevkit", [("2007", "val")], None)
    assert [(im["id"], im["file_name"]) for im in data["images"]] == [(1, "img_a.jpg"), (2, "000003.jpg")]
    assert data["annotations"][0]["category_id"] == 9


def test_voc_errors(tmp_path):
    devkit = _voc_tree(tmp_path, same_2012_image=False)
    sets = [("2007", "trainval"), ("2012", "trainval")]
    with pytest.raises(InputError, match="000005.jpg"):  # same name, different pictures
        voc_to_coco(devkit, sets, None, images_dir=tmp_path / "flat")
    with pytest.raises(InputError, match="train.txt"):
        voc_to_coco(devkit, [("2007", "train")], None)
    with pytest.raises(InputError, match="VOC2010"):
        voc_to_coco(devkit, [("2010", "trainval")], None)
    with pytest.raises(InputError, match="listed twice"):
        voc_to_coco(devkit, [("2007", "trainval"), ("2007", "test")], None)
    # an existing different file in the flat folder is never overwritten
    flat = tmp_path / "flat2"
    flat.mkdir()
    (flat / "000007.jpg").write_bytes(b"not the same")
    with pytest.raises(InputError, match="Refusing to overwrite"):
        voc_to_coco(devkit, [("2007", "test")], None, images_dir=flat)
    assert (flat / "000007.jpg").read_bytes() == b"not the same"
    # unknown class and broken box, naming the XML file
    _voc_xml(devkit / "VOC2007" / "Annotations" / "000007.xml", [("unicorn", 1, 1, 5, 5, 0)])
    with pytest.raises(InputError, match=r"000007\.xml.*unicorn"):
        voc_to_coco(devkit, [("2007", "test")], None)
    _voc_xml(devkit / "VOC2007" / "Annotations" / "000007.xml", [("cat", 10, 1, 5, 5, 0)])
    with pytest.raises(InputError, match=r"000007\.xml.*invalid box"):
        voc_to_coco(devkit, [("2007", "test")], None)
    (devkit / "VOC2007" / "Annotations" / "000007.xml").unlink()
    with pytest.raises(InputError, match=r"000007\.xml.*does not exist"):
        voc_to_coco(devkit, [("2007", "test")], None)


# -------------------------------------------------------------------------------------------------- CD-FSOD


def _shot_json(path: Path, anns, cats=((1, "Araneae"), (2, "Coleoptera"))) -> None:
    """anns: (ann_id, image_id, category_id, bbox)."""
    images = [{"id": i, "file_name": f"img{i}.jpg", "width": 640, "height": 480} for i in (10, 11, 12)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "images": images,
        "annotations": [{"id": a, "image_id": i, "category_id": c, "bbox": list(b), "area": b[2] * b[3],
                         "iscrowd": 0} for a, i, c, b in anns],
        "categories": [{"id": i, "name": n} for i, n in cats],
    }))


def _cdfsod_tree(root: Path, folder: str = "ArTaxOr") -> Path:
    ds = root / folder
    (ds / "train").mkdir(parents=True)
    (ds / "test").mkdir()
    ann = ds / "annotations"
    # 1-shot: class 2 on image 10; class 1 twice on image 11 (two instances of the class in one image)
    _shot_json(ann / "1_shot.json", [(5, 10, 2, (1, 2, 30, 40)), (7, 11, 1, (50, 60, 70, 80)),
                                     (8, 11, 1, (5, 5, 10, 10))])
    _shot_json(ann / "5_shot.json", [(1, 10, 1, (1, 1, 2, 2)), (2, 12, 2, (3, 3, 4, 4))])
    _shot_json(ann / "10_shot.json", [(1, 10, 1, (1, 1, 2, 2)), (2, 12, 2, (3, 3, 4, 4))])
    _shot_json(ann / "test.json", [(1, 12, 2, (3, 3, 4, 4))])
    return ds


def test_cdfsod_discovery(tmp_path):
    ds = _cdfsod_tree(tmp_path, "artaxor")  # any case
    (tmp_path / "unrelated").mkdir()
    found = cdfsod_dataset(tmp_path)
    assert list(found) == ["ArTaxOr"]
    d = found["ArTaxOr"]
    assert d == {
        "name": "ArTaxOr", "root": ds, "test_json": ds / "annotations" / "test.json", "test_images": ds / "test",
        "shots": {1: ds / "annotations" / "1_shot.json", 5: ds / "annotations" / "5_shot.json",
                  10: ds / "annotations" / "10_shot.json"},
        "train_images": ds / "train",
    }
    assert cdfsod_dataset(ds) == found  # the dataset folder itself
    assert list(cdfsod_dataset(tmp_path, names=["ARTAXOR"])) == ["ArTaxOr"]
    with pytest.raises(InputError, match="DIOR"):
        cdfsod_dataset(tmp_path, names=["DIOR"])
    with pytest.raises(InputError, match="No CD-FSOD dataset"):
        cdfsod_dataset(tmp_path / "unrelated")


def test_cdfsod_missing_parts(tmp_path):
    ds = _cdfsod_tree(tmp_path)
    (ds / "annotations" / "10_shot.json").unlink()
    with pytest.raises(InputError, match=r"ArTaxOr.*10_shot\.json"):
        cdfsod_dataset(tmp_path)
    assert list(cdfsod_dataset(tmp_path, shots=(1, 5))["ArTaxOr"]["shots"]) == [1, 5]
    (ds / "annotations" / "test.json").unlink()
    shutil.rmtree(ds / "test")
    with pytest.raises(InputError, match=r"test\.json.*test/"):
        cdfsod_dataset(tmp_path, shots=(1,))


def _ids(refs) -> dict[int, list[int]]:
    return {cid: [r["annotation_id"] for r in items] for cid, items in refs.items()}


def test_cdfsod_references_are_the_authors_k_slots(tmp_path):
    """METHOD 6.3 on a hand-made 5-shot file. JSON order: 21 (class 2, image 12), 11 (1, img 10), 12 (1, img 11),
    22 (2, img 12), 13 (1, img 11), 23 (2, img 10). Classes in first-appearance order: 2, then 1.
    Class 2: image 12 has 21, 22 -> [21, 21]; image 10 -> [23]. Class 1: [11], image 11 -> [12, 12].
    Padding to K=5 with random.Random(42): class 2 first, choices over [21, 21, 23] with random() = 0.639 -> 1,
    0.025 -> 0 (both 21); then class 1 over [11, 12, 12] with 0.275 -> 0, 0.223 -> 0 (both 11)."""
    shot = tmp_path / "5_shot.json"
    _shot_json(shot, [(21, 12, 2, (1, 1, 40, 40)), (11, 10, 1, (2, 2, 40, 40)), (12, 11, 1, (3, 3, 40, 40)),
                      (22, 12, 2, (4, 4, 40, 40)), (13, 11, 1, (5, 5, 40, 40)), (23, 10, 2, (6, 6, 40, 40))])
    refs = cdfsod_references(shot)  # K = 5 from the file name
    assert list(refs) == [2, 1]
    assert _ids(refs) == {2: [21, 21, 23, 21, 21], 1: [11, 12, 12, 11, 11]}
    assert refs[2][0] == {"category_id": 2, "category_name": "Coleoptera", "image_id": 12, "annotation_id": 21,
                          "file_name": "img12.jpg", "bbox": [1.0, 1.0, 40.0, 40.0]}
    assert refs.shots == 5 and refs.meta["seed"] == 42 and refs.meta["annotations"] == str(shot)
    assert refs.meta["padded"] == {"2": 2, "1": 2} and refs.meta["overfull"] == {}
    # seed 0: random() = 0.844, 0.758 -> 2, 2 (class 2: 23, 23); 0.421, 0.259 -> 1, 0 (class 1: 12, 11)
    assert _ids(cdfsod_references(shot, 5, seed=0)) == {2: [21, 21, 23, 23, 23], 1: [11, 12, 12, 12, 11]}
    path = write_references(tmp_path / "refs.json", refs)
    assert _ids(read_references(path, coco=shot)) == _ids(refs)


def test_cdfsod_class_over_k_keeps_all_its_references(tmp_path):
    ds = _cdfsod_tree(tmp_path)
    shot = ds / "annotations" / "1_shot.json"  # class 1 has two boxes on image 11: two slots > K = 1
    with pytest.warns(UserWarning, match=r"more than K=1 .*'Araneae' \(2\).*all of them are kept"):
        refs = cdfsod_references(shot, 1)
    assert _ids(refs) == {2: [5], 1: [7, 7]}  # the first box, twice; box 8 is never read (as the authors)
    assert refs.meta["overfull"] == {"1": 2} and refs.meta["padded"] == {} and refs.shots == 1
    path = write_references(tmp_path / "refs.json", refs)
    back = read_references(path, coco=shot)
    assert back.shots == 1 and _ids(back) == {2: [5], 1: [7, 7]}
    # an over-full class must be declared, with its exact count
    with pytest.raises(InputError, match=r"exactly K >= 1 references.*\{2: 1, 1: 2\}"):
        write_references(tmp_path / "bad.json", refs, {"shots": 1})
    with pytest.raises(InputError, match="over-full classes"):
        write_references(tmp_path / "bad.json", refs, {"shots": 1, "overfull": {"1": 3}})


def test_cdfsod_references_errors(tmp_path):
    _shot_json(tmp_path / "bad.json", [(1, 10, 1, (1, 1, 2, 2))])  # Coleoptera has no annotation
    with pytest.raises(InputError, match="Coleoptera"):
        cdfsod_references(tmp_path / "bad.json", 1)
    _shot_json(tmp_path / "bad2.json", [(1, 99, 1, (1, 1, 2, 2))])
    with pytest.raises(InputError, match="image id 99"):
        cdfsod_references(tmp_path / "bad2.json", 1)
    _shot_json(tmp_path / "shots.json", [(1, 10, 1, (1, 1, 2, 2)), (2, 10, 2, (1, 1, 2, 2))])
    with pytest.raises(InputError, match=r"shots\.json.*pass shots"):
        cdfsod_references(tmp_path / "shots.json")


def test_cdfsod_cli(tmp_path, capsys):
    _cdfsod_tree(tmp_path / "data")
    parser = _parser()
    args = parser.parse_args(["convert", "cdfsod", str(tmp_path / "data"), "-o", str(tmp_path / "refs"),
                              "--shots", "1", "5"])
    with pytest.warns(UserWarning, match="more than K=1"):
        assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "ArTaxOr" in out and str(tmp_path / "data" / "ArTaxOr" / "annotations" / "test.json") in out
    assert sorted(p.name for p in (tmp_path / "refs" / "ArTaxOr").iterdir()) == ["refs_1shot.json", "refs_5shot.json"]
    doc = json.loads((tmp_path / "refs" / "ArTaxOr" / "refs_1shot.json").read_text())
    assert doc["format"] == "nttt-references/1" and doc["shots"] == 1 and doc["overfull"] == {"1": 2}
    assert doc["annotations"].endswith("1_shot.json") and doc["dataset"] == "ArTaxOr"
    assert [r["annotation_id"] for r in doc["references"]] == [5, 7, 7]  # what cdfsod_references gives


# ----------------------------------------------------------------------------------------------------- YOLO


def _yolo_tree(tmp_path: Path) -> tuple[Path, Path]:
    images, labels = tmp_path / "ds" / "images" / "train", tmp_path / "ds" / "labels" / "train"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    shutil.copy(IMG_A, images / "a.jpg")  # 640 x 426
    shutil.copy(IMG_B, images / "b.jpg")  # 424 x 640
    shutil.copy(IMG_C, images / "c.jpg")  # no label file
    (labels / "a.txt").write_text("0 0.5 0.5 0.25 0.5\n1 0.1 0.2 0.3 0.2 0.3 0.6 0.1 0.6\n")
    (labels / "b.txt").write_text("\n1 0 0 1 0 0 1\n")
    return images, labels


def test_yolo_to_coco_exact(tmp_path):
    images, labels = _yolo_tree(tmp_path)
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text("path: ds\ntrain: images/train\nnames:\n  0: cat\n  1: dog\n")
    out = tmp_path / "yolo.json"
    data = yolo_to_coco(images, labels, yaml_file, out)
    assert load_coco_json(out) == data
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert data["images"] == [
        {"id": 1, "file_name": "a.jpg", "width": 640, "height": 426},
        {"id": 2, "file_name": "b.jpg", "width": 424, "height": 640},
        {"id": 3, "file_name": "c.jpg", "width": 333, "height": 500},
    ]
    a1, a2, b1 = data["annotations"]
    assert a1 == {"id": 1, "image_id": 1, "category_id": 1, "bbox": [240.0, 106.5, 160.0, 213.0],
                  "area": 34080.0, "iscrowd": 0}
    assert a2["category_id"] == 2 and a2["image_id"] == 1 and a2["iscrowd"] == 0
    assert a2["segmentation"] == [[64.0, 85.2, 192.0, 85.2, 192.0, 255.6, 64.0, 255.6]]
    assert a2["bbox"] == pytest.approx([64.0, 85.2, 128.0, 170.4])
    assert a2["area"] == pytest.approx(128.0 * 170.4)
    assert b1 == {"id": 3, "image_id": 2, "category_id": 2, "bbox": [0.0, 0.0, 424.0, 640.0],
                  "area": 135680.0, "iscrowd": 0, "segmentation": [[0.0, 0.0, 424.0, 0.0, 0.0, 640.0]]}

    # zero-based ids, names from a list, a classes.txt and the default labels folder (images -> labels)
    z = yolo_to_coco(images, None, ["cat", "dog"], None, zero_based=True)
    assert z["categories"] == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]
    assert [a["category_id"] for a in z["annotations"]] == [0, 1, 1]
    assert [a["bbox"] for a in z["annotations"]] == [a["bbox"] for a in data["annotations"]]
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    assert load_class_names(tmp_path / "classes.txt") == {0: "cat", 1: "dog"}
    assert load_class_names(yaml_file) == {0: "cat", 1: "dog"}
    (tmp_path / "list.yaml").write_text("nc: 2\nnames: [cat, dog]\n")
    assert yolo_to_coco(images, labels, tmp_path / "list.yaml", None)["categories"] == data["categories"]


def test_yolo_malformed(tmp_path):
    images, labels = _yolo_tree(tmp_path)
    (labels / "b.txt").write_text("1 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.2\n")
    with pytest.raises(InputError, match=r"Label file .*b\.txt.*line 2: 4 values"):
        yolo_to_coco(images, labels, ["cat", "dog"], None)
    (labels / "b.txt").write_text("2 0.5 0.5 0.1 0.1\n")
    with pytest.raises(InputError, match=r"b\.txt.*line 1.*class '2'"):
        yolo_to_coco(images, labels, ["cat", "dog"], None)
    (labels / "b.txt").write_text("0 0.5 x 0.1 0.1\n")
    with pytest.raises(InputError, match=r"b\.txt.*line 1.*not a list of numbers"):
        yolo_to_coco(images, labels, ["cat", "dog"], None)
    (labels / "b.txt").write_text("0 0.5 0.5 1.7 0.1\n")
    with pytest.raises(InputError, match=r"b\.txt.*line 1.*normalised"):
        yolo_to_coco(images, labels, ["cat", "dog"], None)
    (tmp_path / "bad.yaml").write_text("nc: 2\n")
    with pytest.raises(InputError, match="names"):
        yolo_to_coco(images, labels, tmp_path / "bad.yaml", None)
    with pytest.raises(InputError, match="Label folder"):
        yolo_to_coco(images, tmp_path / "nope", ["cat", "dog"], None)


def test_coco_names_are_the_80_coco_categories_in_id_order(coco_mini):
    cats = load_coco_json(coco_mini / "annotations" / "instances_val2017.json")["categories"]
    assert COCO_NAMES == tuple(c["name"] for c in sorted(cats, key=lambda c: c["id"])) and len(COCO_NAMES) == 80


def test_yolo_class_names_default_to_dataset_file_else_coco(tmp_path):
    images, labels = _yolo_tree(tmp_path)
    with pytest.warns(UserWarning, match="80 COCO names.*--classes"):
        data = yolo_to_coco(images, None, None, None)
    assert data["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(COCO_NAMES)]
    assert [a["category_id"] for a in data["annotations"]] == [1, 2, 2]  # person, bicycle, bicycle

    # a data.yaml at the dataset root (above images/train) wins over the COCO names, without a warning
    (tmp_path / "ds" / "data.yaml").write_text("path: .\ntrain: images/train\nnames: [cat, dog]\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = yolo_to_coco(images, None, None, None)
    assert data["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    # a classes.txt in the label folder comes first, and is not taken for a label file
    (labels / "classes.txt").write_text("fox\nhen\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = yolo_to_coco(images, None, None, None)
    assert [c["name"] for c in data["categories"]] == ["fox", "hen"]


def test_yolo_no_label_matches_an_image(tmp_path):
    images, labels = _yolo_tree(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(InputError) as err:
        yolo_to_coco(images, other, ["cat", "dog"], None)
    msg = str(err.value)
    assert str(images) in msg and str(other / "a.txt") in msg and "'x.txt'" in msg and "--labels" in msg
    (other / "x.txt").unlink()
    with pytest.raises(InputError, match="None of the 3 images.*holds no .txt files"):
        yolo_to_coco(images, other, ["cat", "dog"], None)


def test_yolo_warns_about_label_files_without_image(tmp_path):
    images, labels = _yolo_tree(tmp_path)
    (labels / "d.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    (labels / "sub").mkdir()
    (labels / "sub" / "e.txt").write_text("")
    with pytest.warns(UserWarning, match=r"2 label file\(s\) in .* have no image .*'d\.txt', 'sub/e\.txt'"):
        data = yolo_to_coco(images, labels, ["cat", "dog"], None)
    assert len(data["annotations"]) == 3  # the others are converted as before


def test_yolo_underivable_labels_folder_names_the_flag(tmp_path):
    (tmp_path / "pics").mkdir()
    shutil.copy(IMG_A, tmp_path / "pics" / "a.jpg")
    with pytest.raises(InputError, match=r"pass --labels \(Python: labels_dir=\)"):
        yolo_to_coco(tmp_path / "pics", None, ["cat"], None)


# ------------------------------------------------------------------------------------------------------ CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nttt")
    sub = parser.add_subparsers(dest="command", required=True)
    add_convert_parser(sub)
    return parser


def test_convert_parser_voc(tmp_path, capsys):
    devkit = _voc_tree(tmp_path)
    args = _parser().parse_args(["convert", "voc", str(devkit), "--sets", "2007:trainval", "2012/trainval",
                                 "-o", str(tmp_path / "out.json"), "--images-dir", str(tmp_path / "all")])
    assert args.command == "convert" and args.convert_format == "voc"
    assert args.sets == [("2007", "trainval"), ("2012", "trainval")]
    assert args.voc_root == devkit and args.images_dir == tmp_path / "all" and not args.copy
    assert args.func(args) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("voc: 3 images, 4 annotations (1 difficult)") and "\n" not in line
    with pytest.raises(SystemExit):
        _parser().parse_args(["convert", "voc", str(devkit), "--sets", "trainval", "-o", "x.json"])


def test_convert_parser_yolo(tmp_path, capsys):
    images, labels = _yolo_tree(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    args = _parser().parse_args(["convert", "yolo", str(images), "--labels", str(labels), "--classes",
                                 str(tmp_path / "classes.txt"), "-o", str(tmp_path / "y.json"), "--zero-based"])
    assert args.func(args) == 0
    assert "3 images, 3 annotations (2 polygons), 2 categories" in capsys.readouterr().out
    assert load_coco_json(tmp_path / "y.json")["categories"][0] == {"id": 0, "name": "cat"}
    # --classes is optional: a data.yaml of the dataset, else the COCO names
    args = _parser().parse_args(["convert", "yolo", str(images), "-o", str(tmp_path / "z.json")])
    with pytest.warns(UserWarning, match="80 COCO names"):
        assert args.func(args) == 0
    assert "80 categories" in capsys.readouterr().out
