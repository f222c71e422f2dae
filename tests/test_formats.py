"""Dataset writers (``formats/``): hand-made masks in, files the consumers read out (no models)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

cv2 = pytest.importorskip("cv2", reason="the 'label' extra (opencv-python-headless) is not installed")

from no_time_to_train.errors import InputError  # noqa: E402
from no_time_to_train.formats import (  # noqa: E402
    Instance,
    LabeledImage,
    WriteOptions,
    assign_splits,
    check_dataset_root,
    unique_names,
    write_dataset,
)
from no_time_to_train.formats.cvat import cvat_rle  # noqa: E402
from no_time_to_train.formats.polygons import mask_to_parts, single_ring  # noqa: E402
from no_time_to_train.types import decode_rle, encode_rle  # noqa: E402

H, W = 60, 80
CATEGORIES = [{"id": 3, "name": "ring"}, {"id": 7, "name": "blob"}]


def ring_and_blob() -> np.ndarray:
    """A 30x30 square with a 10x10 hole, plus a separate 4x6 blob: two parts, one hole."""
    m = np.zeros((H, W), bool)
    m[5:35, 5:35] = True
    m[15:25, 15:25] = False
    m[40:44, 60:66] = True
    return m


def blob(y0=10, x0=50, h=12, w=20) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y0 + h, x0:x0 + w] = True
    return m


def fill_like_ultralytics(ring: np.ndarray) -> np.ndarray:
    """Ultralytics' polygon2mask: cv2.fillPoly of the int32 pixel coordinates."""
    out = np.zeros((H, W), np.uint8)
    cv2.fillPoly(out, [ring.astype(np.int32)], 1)
    return out.astype(bool)


@pytest.fixture
def images(tmp_path):
    paths = []
    for k in range(3):
        p = tmp_path / "src" / f"img{k}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 40 * k, np.uint8)).save(p)
        paths.append(p)
    return [
        LabeledImage("img0.png", W, H, [Instance("ring", encode_rle(ring_and_blob()), 0.9),
                                        Instance("blob", encode_rle(blob()), 0.6)], path=paths[0]),
        LabeledImage("img1.png", W, H, [Instance("blob", encode_rle(blob(30, 10)), None, review="added")],
                     path=paths[1]),
        LabeledImage("img2.png", W, H, [], path=paths[2]),
    ]


# -- polygons --------------------------------------------------------------------------------------------
def test_parts_keep_holes_and_parts_in_the_continuous_pixel_frame():
    parts = mask_to_parts(ring_and_blob(), tolerance=0)
    assert len(parts) == 2 and len(parts[0].holes) == 1 and parts[1].holes == []
    assert {tuple(p) for p in parts[0].outer} == {(5.5, 5.5), (5.5, 34.5), (34.5, 34.5), (34.5, 5.5)}
    assert {tuple(p) for p in parts[1].outer} == {(60.5, 40.5), (60.5, 43.5), (65.5, 43.5), (65.5, 40.5)}

    def signed(r):
        return 0.5 * float(np.dot(r[:, 0], np.roll(r[:, 1], -1)) - np.dot(np.roll(r[:, 0], -1), r[:, 1]))

    assert signed(parts[0].outer) > 0 and signed(parts[0].holes[0]) < 0  # holes turn the other way
    assert mask_to_parts(np.zeros((H, W), bool)) == []
    single_pixel = np.zeros((H, W), bool)
    single_pixel[3, 3] = True
    assert mask_to_parts(single_pixel) == []  # too small to be a polygon


def test_single_ring_fills_back_to_the_mask_with_its_hole_and_both_parts():
    mask = ring_and_blob()
    ring = single_ring(mask_to_parts(mask, tolerance=0))
    filled = fill_like_ultralytics(ring)
    assert not filled[20, 20] and filled[10, 10] and filled[42, 62]  # hole empty, both parts filled
    assert not (mask & ~filled).any()
    ys, xs = np.nonzero(filled & ~mask)  # only the bridge between the parts: a one-pixel line across the gap
    assert len(xs) == 25 and len(set(xs)) == 25 and set(xs) == set(range(35, 60))
    assert single_ring([]) is None


# -- COCO ------------------------------------------------------------------------------------------------
def test_coco_dataset_loads_in_pycocotools_with_polygons_rle_for_holes_and_scores(images, tmp_path):
    from pycocotools.coco import COCO

    summary = write_dataset(images, CATEGORIES, tmp_path / "ds", ["coco"], WriteOptions(polygon_tolerance=0))
    path = tmp_path / "ds" / "coco" / "annotations.json"
    coco = COCO(str(path))
    assert sorted(coco.getCatIds()) == [3, 7] and coco.loadCats(3)[0]["name"] == "ring"
    assert [coco.imgs[i]["file_name"] for i in sorted(coco.imgs)] == ["img0.png", "img1.png", "img2.png"]
    assert (tmp_path / "ds" / "coco" / "images" / "img0.png").resolve() == images[0].path.resolve()
    anns = coco.loadAnns(sorted(coco.anns))
    assert [a["category_id"] for a in anns] == [3, 7, 7] and [a["iscrowd"] for a in anns] == [0, 0, 0]
    ring, box, added = anns
    assert isinstance(ring["segmentation"], dict)  # a hole: RLE, pixel-exact
    assert np.array_equal(coco.annToMask(ring).astype(bool), ring_and_blob())
    assert isinstance(box["segmentation"], list) and len(box["segmentation"]) == 1  # no hole: a polygon
    iou = (coco.annToMask(box).astype(bool) & blob()).sum() / (coco.annToMask(box).astype(bool) | blob()).sum()
    assert iou > 0.85  # the polygon runs through the boundary pixels' centres: pycocotools loses half a pixel
    assert box["bbox"] == [50.0, 10.0, 20.0, 12.0] and ring["area"] == float(ring_and_blob().sum())
    assert box["score"] == 0.6 and box["attributes"] == {"score": 0.6}
    assert "score" not in added and added["attributes"] == {"review": "added"}
    assert summary.instances == {"ring": 1, "blob": 2} and summary.images_with == {"ring": 1, "blob": 2}
    assert summary.images == 3 and "blob" in summary.table()
    assert json.loads((tmp_path / "ds" / "summary.json").read_text())["written_by"] == "nttt label"


def test_coco_multi_part_object_is_several_polygons_and_rle_mode_is_exact(tmp_path):
    two = blob() | blob(40, 5, 8, 8)
    img = LabeledImage("a.png", W, H, [Instance("blob", encode_rle(two), 0.8)], pixels=np.zeros((H, W, 3), np.uint8))
    write_dataset([img], CATEGORIES, tmp_path / "p", ["coco"])
    seg = json.loads((tmp_path / "p" / "coco" / "annotations.json").read_text())["annotations"][0]["segmentation"]
    assert isinstance(seg, list) and len(seg) == 2 and all(len(p) >= 6 for p in seg)
    assert Image.open(tmp_path / "p" / "coco" / "images" / "a.png").size == (W, H)  # pixels saved
    write_dataset([img], CATEGORIES, tmp_path / "r", ["coco"], WriteOptions(mask_format="rle"))
    seg = json.loads((tmp_path / "r" / "coco" / "annotations.json").read_text())["annotations"][0]["segmentation"]
    assert np.array_equal(decode_rle(seg), two)


# -- YOLO ------------------------------------------------------------------------------------------------
def test_yolo_follows_the_ultralytics_segment_format(images, tmp_path):
    assign_splits(images, 0.34, seed=0)
    assert sorted(im.split for im in images) == ["train", "train", "val"]
    write_dataset(images, CATEGORIES, tmp_path / "ds", ["yolo"], WriteOptions(polygon_tolerance=0))
    root = tmp_path / "ds" / "yolo"
    doc = yaml.safe_load((root / "data.yaml").read_text())
    assert doc == {"path": str(root.resolve()), "train": "images/train", "val": "images/val",
                   "names": {0: "ring", 1: "blob"}}
    for im in images:
        assert (root / "images" / im.split / im.name).exists()
        lines = (root / "labels" / im.split / (Path(im.name).stem + ".txt")).read_text().splitlines()
        assert len(lines) == len(im.instances)  # one line per object; an image without any: an empty file
        for line, inst in zip(lines, im.instances):
            tok = line.split()
            assert tok[0] == str(["ring", "blob"].index(inst.category))
            xy = np.array([float(t) for t in tok[1:]])
            assert len(xy) % 2 == 0 and len(xy) >= 6 and xy.min() >= 0 and xy.max() <= 1
            assert all(len(t.split(".")[1]) == 6 for t in tok[1:])
            ring = xy.reshape(-1, 2) * [W, H]
            mask = decode_rle(inst.rle)
            filled = fill_like_ultralytics(ring)  # Ultralytics' fill gives the mask back (+ the parts' bridge)
            assert not (mask & ~filled).any() and (filled & ~mask).sum() <= 25


def test_yolo_output_converts_back_to_the_same_polygons(images, tmp_path):
    from no_time_to_train.data.convert import yolo_to_coco

    assign_splits(images, 0.0)
    write_dataset(images, CATEGORIES, tmp_path / "ds", ["yolo"], WriteOptions(polygon_tolerance=0))
    root = tmp_path / "ds" / "yolo"
    back = yolo_to_coco(root / "images" / "train", None, None, None, zero_based=True)
    assert [c["name"] for c in back["categories"]] == ["ring", "blob"]  # names found in data.yaml
    by_file = {im["id"]: im["file_name"] for im in back["images"]}
    got = [(by_file[a["image_id"]], a["category_id"], np.array(a["segmentation"][0])) for a in back["annotations"]]
    want = [(im.name, ["ring", "blob"].index(i.category), single_ring(mask_to_parts(decode_rle(i.rle), 0)).reshape(-1))
            for im in images for i in im.instances]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    for (_, _, a), (_, _, b) in zip(got, want):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-3


# -- Label Studio ----------------------------------------------------------------------------------------
def test_labelstudio_tasks_follow_the_import_schema(images, tmp_path):
    images[1].reviewed = True
    write_dataset(images, CATEGORIES, tmp_path / "ds", ["labelstudio"], WriteOptions(image_url_prefix="/img/"))
    root = tmp_path / "ds" / "labelstudio"
    config = ET.fromstring((root / "config.xml").read_text())
    image_tag, poly = config.find("Image"), config.find("PolygonLabels")
    assert image_tag.get("name") == "image" and image_tag.get("value") == "$image"
    assert poly.get("name") == "label" and poly.get("toName") == "image"
    assert [lab.get("value") for lab in poly.findall("Label")] == ["ring", "blob"]
    tasks = json.loads((root / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == ["/img/img0.png", "/img/img1.png", "/img/img2.png"]
    pred = tasks[0]["predictions"][0]
    assert pred["model_version"].startswith("no-time-to-train") and pred["score"] == pytest.approx(0.75)
    ids = []
    for region in pred["result"]:
        assert region["from_name"] == "label" and region["to_name"] == "image"
        assert region["type"] == "polygonlabels" and region["original_width"] == W and region["original_height"] == H
        pts = np.array(region["value"]["points"])
        assert pts.shape[1] == 2 and len(pts) >= 3 and pts.min() >= 0 and pts.max() <= 100
        assert region["value"]["polygonlabels"][0] in ("ring", "blob") and 0 <= region["score"] <= 1
        ids.append(region["id"])
    assert len(set(ids)) == len(ids) == 2
    assert "predictions" not in tasks[1] and tasks[1]["annotations"][0]["result"][0]["value"]["polygonlabels"] == ["blob"]
    assert tasks[2]["predictions"][0]["result"] == []
    default = write_dataset(images, CATEGORIES, tmp_path / "d2", ["labelstudio"]).folders["labelstudio"]
    url = json.loads((Path(default) / "tasks.json").read_text())[0]["data"]["image"]
    assert url.startswith("/data/local-files/?d=") and url.endswith("/labelstudio/images/img0.png")


# -- CVAT ------------------------------------------------------------------------------------------------
def _decode_cvat(el, height, width) -> np.ndarray:
    runs = [int(v) for v in el.get("rle").split(",")]
    left, top, w, h = (int(el.get(k)) for k in ("left", "top", "width", "height"))
    values = np.concatenate([np.full(n, k % 2, bool) for k, n in enumerate(runs)])
    out = np.zeros((height, width), bool)
    out[top:top + h, left:left + w] = values.reshape(h, w)
    return out


def test_cvat_rle_runs_start_with_background():
    m = np.zeros((5, 6), bool)
    m[1, 1:3] = True
    m[2, 2] = True
    runs, box = cvat_rle(m)
    assert box == (1, 1, 2, 2) and runs == [0, 2, 1, 1]


def test_cvat_xml_masks_and_polygons(images, tmp_path):
    write_dataset(images, CATEGORIES, tmp_path / "ds", ["cvat"], WriteOptions(polygon_tolerance=0))
    root = tmp_path / "ds" / "cvat"
    doc = ET.parse(root / "annotations.xml").getroot()
    assert doc.findtext("version") == "1.1" and doc.findtext("meta/task/mode") == "annotation"
    assert [lab.findtext("name") for lab in doc.findall("meta/task/labels/label")] == ["ring", "blob"]
    assert [json.loads((root / "labels.json").read_text())[i]["name"] for i in (0, 1)] == ["ring", "blob"]
    imgs = doc.findall("image")
    assert [(i.get("id"), i.get("name"), i.get("width"), i.get("height")) for i in imgs] == \
        [(str(k), f"img{k}.png", str(W), str(H)) for k in range(3)]
    mask_el = imgs[0].find("mask")  # the object with a hole
    assert mask_el.get("label") == "ring" and mask_el.find("attribute[@name='score']").text == "0.9000"
    assert np.array_equal(_decode_cvat(mask_el, H, W), ring_and_blob())
    poly = imgs[0].find("polygon")
    pts = [tuple(map(float, p.split(","))) for p in poly.get("points").split(";")]
    assert poly.get("label") == "blob" and len(pts) == 4 and poly.get("source") == "auto"
    assert imgs[1].find("polygon").get("source") == "manual"  # drawn by a reviewer
    write_dataset(images, CATEGORIES, tmp_path / "r", ["cvat"], WriteOptions(mask_format="rle"))
    masks = ET.parse(tmp_path / "r" / "cvat" / "annotations.xml").getroot().findall("image/mask")
    assert len(masks) == 3 and np.array_equal(_decode_cvat(masks[1], H, W), blob())


# -- errors and reruns -----------------------------------------------------------------------------------
def test_bad_input_gets_one_clear_error(images, tmp_path):
    with pytest.raises(InputError, match="unknown dataset format 'voc'; choose from coco, yolo, labelstudio, cvat"):
        write_dataset(images, CATEGORIES, tmp_path / "a", ["coco", "voc"])
    with pytest.raises(InputError, match="ImageNet class code"):
        write_dataset(images, [{"id": 1, "name": "n01440764"}], tmp_path / "b", ["yolo"])
    write_dataset([], [{"id": 1, "name": "n01440764"}], tmp_path / "b", ["coco"])  # fine outside YOLO
    with pytest.raises(InputError, match="control characters"):
        write_dataset(images, [{"id": 1, "name": "a\nb"}], tmp_path / "c", ["coco"])
    with pytest.raises(InputError, match="validation fraction"):
        assign_splits(images, 1.0)
    with pytest.raises(InputError, match="not among the dataset's"):
        write_dataset(images, CATEGORIES[:1], tmp_path / "d", ["coco"])
    other = tmp_path / "other"
    (other / "coco").mkdir(parents=True)
    (other / "train.txt").write_text("x")
    with pytest.raises(InputError, match="already holds other files .*coco, train.txt.* nttt label did not write"):
        check_dataset_root(other)
    (other / "train.txt").unlink()
    with pytest.raises(InputError, match="already holds other files"):
        check_dataset_root(other)  # a format folder without a run's mark
    check_dataset_root(tmp_path / "new")
    check_dataset_root(tmp_path / "b")  # an earlier write_dataset


def test_a_rewrite_replaces_each_format_folder_whole(images, tmp_path):
    assign_splits(images, 0.0)
    write_dataset(images, CATEGORIES, tmp_path / "ds", ["yolo", "coco"])
    write_dataset(images[:1], CATEGORIES, tmp_path / "ds", ["yolo"])
    assert sorted(p.name for p in (tmp_path / "ds" / "yolo" / "labels" / "train").iterdir()) == ["img0.txt"]
    assert not list(tmp_path.glob("ds/.*.partial"))
    assert unique_names([Path("a/x.jpg"), Path("b/x.jpg"), Path("c/y.jpg")]) == ["000000_x.jpg", "000001_x.jpg",
                                                                                  "y.jpg"]
