"""COCO-format data: category splits, the dataset reader, GT subsets, image listing."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from no_time_to_train.data.coco import (
    SPLITS,
    CocoDataset,
    gt_subset,
    list_images,
    load_coco_json,
    resolve_categories,
)
from no_time_to_train.errors import InputError

COCO_MINI = Path("/work/shared/data/coco-mini")
TRAIN_JSON = COCO_MINI / "annotations" / "instances_train2017.json"
VAL_JSON = COCO_MINI / "annotations" / "instances_val2017.json"
NOVEL_IDS = [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72]
VOC_NAMES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
             "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


@pytest.fixture(scope="module")
def train_cats():
    return load_coco_json(TRAIN_JSON)["categories"]


@pytest.fixture(scope="module")
def val_ds():
    return CocoDataset(VAL_JSON, COCO_MINI / "val2017")


# ------------------------------------------------------------------------------------------ categories

def test_coco_novel(train_cats):
    cats = resolve_categories(train_cats, "coco-novel")
    assert [c["id"] for c in cats] == NOVEL_IDS
    assert {c["name"] for c in cats} == set(SPLITS["coco-novel"])


def test_coco_all_sorted(train_cats):
    cats = resolve_categories(train_cats, "coco-all")
    assert len(cats) == 80 and [c["id"] for c in cats] == sorted(c["id"] for c in train_cats)


def test_mixed_spec_sorted_by_id(train_cats):
    cats = resolve_categories(train_cats, "person,dog,44")
    assert [(c["id"], c["name"]) for c in cats] == [(1, "person"), (18, "dog"), (44, "bottle")]
    cats = resolve_categories(train_cats, "tv, potted plant ,Person,1,dog")
    assert [c["id"] for c in cats] == [1, 18, 64, 72]


def test_unknown_category(train_cats):
    with pytest.raises(InputError, match=r"Unknown category 'dragon'.*'person'"):
        resolve_categories(train_cats, "person,dragon")
    with pytest.raises(InputError, match="Unknown category id 999"):
        resolve_categories(train_cats, "999")
    with pytest.raises(InputError, match="Empty"):
        resolve_categories(train_cats, "  ")
    with pytest.raises(InputError, match="empty item"):
        resolve_categories(train_cats, "person,,dog")


def test_voc_splits():
    voc = [{"id": i, "name": n} for i, n in enumerate(VOC_NAMES)]
    assert [c["name"] for c in resolve_categories(voc, "voc-split1")] == ["bird", "bus", "cow", "motorbike", "sofa"]
    assert [c["id"] for c in resolve_categories(voc, "voc-split2")] == [0, 4, 9, 12, 17]
    assert [c["name"] for c in resolve_categories(voc, "voc-split3")] == ["boat", "cat", "motorbike", "sheep", "sofa"]
    assert [c["id"] for c in resolve_categories(voc, "0")] == [0]  # ids may be 0-based


def test_voc_split_on_coco_is_an_error(train_cats):
    with pytest.raises(InputError, match="voc-split1.*motorbike"):
        resolve_categories(train_cats, "voc-split1")


# --------------------------------------------------------------------------------------------- dataset

def test_dataset_basics(val_ds):
    raw = json.loads(VAL_JSON.read_text())
    assert val_ds.image_ids == [im["id"] for im in raw["images"]]
    assert len(val_ds) == 79 and len(val_ds.categories) == 80
    first = val_ds.image_ids[0]
    assert val_ds.image_path(first) == COCO_MINI / "val2017" / raw["images"][0]["file_name"]
    img = val_ds.load_image(first)
    assert img.mode == "RGB" and img.size == (raw["images"][0]["width"], raw["images"][0]["height"])
    assert val_ds.category(18)["name"] == "dog"
    with pytest.raises(InputError, match="12345"):
        val_ds.image_path(12345)


def test_annotations_filters(val_ds):
    crowd = next(a for a in val_ds.dataset["annotations"] if a["iscrowd"])
    img = crowd["image_id"]
    allx = val_ds.annotations(img)
    assert crowd in allx
    assert crowd not in val_ds.annotations(img, include_crowd=False)
    only = val_ds.annotations(img, category_ids=[crowd["category_id"]])
    assert only and all(a["category_id"] == crowd["category_id"] for a in only)
    assert val_ds.annotations(img, category_ids=[]) == []


def test_ann_mask_polygon_and_rle(val_ds):
    poly = next(a for a in val_ds.dataset["annotations"] if not a["iscrowd"] and a["area"] > 1000)
    m = val_ds.ann_mask(poly)
    info = val_ds.image_info(poly["image_id"])
    assert m.dtype == np.bool_ and m.shape == (info["height"], info["width"])
    assert abs(int(m.sum()) - poly["area"]) / poly["area"] < 0.1
    x, y, w, h = poly["bbox"]
    ys, xs = np.nonzero(m)
    assert xs.min() >= int(x) - 1 and xs.max() <= x + w + 1 and ys.min() >= int(y) - 1 and ys.max() <= y + h + 1
    crowd = next(a for a in val_ds.dataset["annotations"] if a["iscrowd"])
    assert isinstance(crowd["segmentation"], dict)
    mc = val_ds.ann_mask(crowd["id"])
    counts = crowd["segmentation"]["counts"]  # uncompressed RLE: alternating 0/1 runs, column-major
    assert isinstance(counts, list)
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(bool)
    h, w = crowd["segmentation"]["size"]
    assert mc.dtype == np.bool_ and mc.shape == (h, w)
    assert np.array_equal(mc, flat.reshape(w, h).T)


def test_dataset_errors(tmp_path):
    with pytest.raises(InputError, match="nope.json.*does not exist"):
        CocoDataset(tmp_path / "nope.json", tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(InputError, match="bad.json.*not valid JSON"):
        CocoDataset(bad, tmp_path)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"foo": 1}')
    with pytest.raises(InputError, match="no 'images'"):
        CocoDataset(wrong, tmp_path)
    with pytest.raises(InputError, match="Image folder.*missing_dir"):
        CocoDataset(VAL_JSON, tmp_path / "missing_dir")


def test_missing_image_file_is_named_when_requested(tmp_path):
    data = {"images": [{"id": 1, "file_name": "ghost.jpg", "width": 10, "height": 10}],
            "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    ds = CocoDataset(path, tmp_path)  # construction does not touch image files
    with pytest.raises(InputError, match="ghost.jpg"):
        ds.image_path(1)


def _valid():
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 10, "height": 8},
                       {"id": 2, "file_name": "b.jpg", "width": 10, "height": 8}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 3], "iscrowd": 0,
                             "segmentation": [[1, 1, 5, 1, 5, 4]]},
                            {"id": 8, "image_id": 2, "category_id": 3, "bbox": [0.5, 0, 2, 2],
                             "segmentation": {"size": [8, 10], "counts": "PP3"}},
                            {"id": 9, "image_id": 2, "category_id": 3, "bbox": [0, 0, 0, 0]}],  # box only
            "categories": [{"id": 3, "name": "cat"}]}


def _break(path, change):
    data = _valid()
    change(data)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("change,message", [
    (lambda d: d["annotations"][0].pop("bbox"), r"annotation #0 \(id 7\): 'bbox' must be \[x, y, w, h\]"),
    (lambda d: d["annotations"][1].update(bbox=[0, 0, -2, 2]), r"annotation #1 \(id 8\): 'bbox' must be"),
    (lambda d: d["annotations"][1].update(bbox=[0, 0, "2", 2]), r"annotation #1 \(id 8\): 'bbox' must be"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 5, 1, 5]]), r"annotation #0 .*a polygon of"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, "x", 1, 5, 4]]), r"a polygon of 'segmentation'"),
    (lambda d: d["annotations"][0].update(segmentation=[1, 1, 5, 1, 5, 4]), r"a polygon of 'segmentation'"),
    (lambda d: d["annotations"][1].update(segmentation={"counts": "PP3"}), r"an RLE 'segmentation' must be"),
    (lambda d: d["annotations"][0].update(segmentation="mask.png"), r"must be polygons \(a list\) or an RLE"),
    (lambda d: d["images"][1].update(id="2"), r"image #1 \(id '2'\): the id must be an integer, not str"),
    (lambda d: d["annotations"][0].update(image_id="1"), r"'image_id', image id '1', is not the integer id of an image"),
    (lambda d: d["annotations"][0].update(image_id=99), r"'image_id', image id 99, is not the integer id of an image"),
    (lambda d: d["annotations"][0].update(category_id=4), r"'category_id', category id 4, is not the integer id"),
    (lambda d: d["annotations"][1].update(id=7), r"annotation #1 \(id 7\): the id is used twice"),
    (lambda d: d["images"][0].pop("file_name"), r"image #0 \(id 1\): no 'file_name'"),
    (lambda d: d["images"][0].update(height=0), r"image #0 \(id 1\): 'height' must be a positive integer"),
    (lambda d: d["categories"][0].pop("name"), r"category #0 \(id 3\): 'name' must be a non-empty string"),
    (lambda d: d["annotations"][2].update(iscrowd=2), r"'iscrowd' must be 0 or 1"),
])
def test_bad_annotation_files_are_refused_up_front(tmp_path, change, message):
    path = _break(tmp_path / "ann.json", change)
    for load in (lambda: load_coco_json(path), lambda: CocoDataset(path, tmp_path)):
        with pytest.raises(InputError, match=rf"ann\.json has \d+ invalid entr(y|ies): .*{message}"):
            load()


def test_valid_file_loads_and_problems_are_counted(tmp_path):
    assert len(CocoDataset(_break(tmp_path / "ok.json", lambda d: None), tmp_path)) == 2

    def many(d):
        for a in d["annotations"]:
            a.pop("bbox")
        d["images"][0]["id"] = "1"

    with pytest.raises(InputError, match=r"has 4 invalid entries: image #0 .*; annotation #0 .*; annotation #1 .*; \.\.\."):
        load_coco_json(_break(tmp_path / "bad.json", many))
    # a GT dict for evaluation needs no image files: file_name is not required there
    data = _valid()
    del data["images"][0]["file_name"]
    assert gt_subset(data, [3])["annotations"] == data["annotations"]


# ------------------------------------------------------------------------------------------- gt subset

def test_gt_subset():
    data = load_coco_json(VAL_JSON)
    before = copy.deepcopy(data)
    sub = gt_subset(data, [1, 18])
    assert data == before
    assert sub["images"] == data["images"]
    assert sub["annotations"] == [a for a in data["annotations"] if a["category_id"] in (1, 18)]
    assert [c["id"] for c in sub["categories"]] == [1, 18]
    with pytest.raises(InputError, match=r"\[4242\]"):
        gt_subset(data, [1, 4242])


# ------------------------------------------------------------------------------------------ list_images

def test_list_images(tmp_path):
    d = tmp_path / "imgs"
    (d / "sub").mkdir(parents=True)
    for name in ["b.jpg", "A.PNG", "c.JpEg", "d.webp", "e.tif", "notes.txt", "sub/deep.jpg"]:
        (d / name).write_bytes(b"x")
    (d / "folder.jpg").mkdir()  # a directory with an image-like name is not an image
    got = list_images([str(d)])
    assert [p.name for p in got] == ["A.PNG", "b.jpg", "c.JpEg", "d.webp", "e.tif"]
    assert list_images([str(d / "*.jpg")]) == [d / "b.jpg"]
    assert list_images([str(d / "**" / "*.jpg")]) == [d / "b.jpg", d / "sub" / "deep.jpg"]
    mixed = list_images([d / "e.tif", str(d), str(d / "sub" / "*")])
    assert mixed[0] == d / "e.tif" and mixed[-1] == d / "sub" / "deep.jpg" and len(mixed) == 6
    assert list_images(str(d / "b.jpg")) == [d / "b.jpg"]


def test_list_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="nothing_here"):
        list_images([str(tmp_path / "a.jpg"), str(tmp_path / "nothing_here")])
    with pytest.raises(InputError, match="empty.*no image files"):
        list_images([tmp_path / "empty"])
    with pytest.raises(InputError, match=r"\*\.png.*matches no image"):
        list_images([str(tmp_path / "*.png")])
    with pytest.raises(InputError, match="notes.txt.*not an image"):
        list_images([tmp_path / "notes.txt"])
    with pytest.raises(InputError, match="No image inputs"):
        list_images([])
