"""COCO evaluation (METHOD 6.1)."""

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from no_time_to_train.data.coco import SPLITS, CocoDataset, resolve_categories
from no_time_to_train.errors import InputError
from no_time_to_train.evaluation import STAT_NAMES, evaluate_coco, format_metrics_table, write_metrics

COCO_MINI = Path("/work/shared/data/coco-mini")
VAL_JSON = COCO_MINI / "annotations" / "instances_val2017.json"


@pytest.fixture(scope="module")
def val():
    ds = CocoDataset(VAL_JSON, COCO_MINI / "val2017")
    novel = resolve_categories(ds.categories, "coco-novel")
    return ds, [c["id"] for c in novel]


def gt_as_predictions(ds, cat_ids):
    out = []
    for a in ds.dataset["annotations"]:
        if a["category_id"] in cat_ids and not a["iscrowd"]:
            rle = dict(ds.coco.annToRLE(a))
            rle["counts"] = rle["counts"].decode("ascii")
            out.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0,
                        "bbox": list(a["bbox"]), "segmentation": rle})
    return out


def test_ground_truth_scores_perfectly(val, capsys):
    ds, ids = val
    preds = gt_as_predictions(ds, ids)
    m = evaluate_coco(VAL_JSON, preds, ids)
    assert capsys.readouterr().out == ""  # pycocotools is silenced
    for t in ("bbox", "segm"):
        assert m[t]["AP"] == pytest.approx(1.0)
        assert m[t]["AP50"] == pytest.approx(1.0) and m[t]["AP75"] == pytest.approx(1.0)
        assert m[t]["AR100"] == pytest.approx(1.0)
        assert set(m[t]) == set(STAT_NAMES) | {"per_category", "per_category_AP50", "AP50_voc07",
                                               "per_category_AP50_voc07"}
        assert m[t]["AP50_voc07"] == pytest.approx(1.0)
        assert all(v == pytest.approx(1.0) for v in m[t]["per_category_AP50"].values())
        assert list(m[t]["per_category"]) == list(SPLITS["coco-novel"])  # names, in ascending id order
        assert all(v == pytest.approx(1.0) for v in m[t]["per_category"].values())
    assert m["num_images"] == 79 and m["num_detections"] == len(preds) == 287
    assert [c["id"] for c in m["categories"]] == ids


def test_empty_predictions_score_zero(val):
    ds, ids = val
    m = evaluate_coco(ds.dataset, [], ids)
    for t in ("bbox", "segm"):
        assert m[t]["AP"] == 0.0 and m[t]["AR100"] == 0.0
        assert set(m[t]["per_category"].values()) == {0.0}
    assert m["num_detections"] == 0


def test_other_categories_are_ignored(val):
    ds, ids = val
    preds = gt_as_predictions(ds, ids)
    # detections of a base class (and of images' base-class GT) must not count
    extra = [dict(p, category_id=85) for p in preds[:20]]
    m = evaluate_coco(ds.dataset, preds + extra, ids, iou_types=("bbox",))
    assert m["num_detections"] == len(preds) and m["bbox"]["AP"] == pytest.approx(1.0)
    assert "segm" not in m
    # restricting to fewer categories drops the others from GT and results alike
    m2 = evaluate_coco(ds.dataset, preds, [1, 18], iou_types=("segm",))
    assert list(m2["segm"]["per_category"]) == ["person", "dog"] and m2["segm"]["AP"] == pytest.approx(1.0)


def tiny_gt():
    return {
        "images": [{"id": 1, "width": 100, "height": 80, "file_name": "1.jpg"},
                   {"id": 2, "width": 100, "height": 80, "file_name": "2.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30], "area": 1200, "iscrowd": 0,
             "segmentation": [[10, 10, 50, 10, 50, 40, 10, 40]]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 20, 40, 40], "area": 1600, "iscrowd": 0,
             "segmentation": [[20, 20, 60, 20, 60, 60, 20, 60]]},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }


def gt_rle(i):
    """The exact RLE of tiny_gt's annotation #i, as a JSON-able dict."""
    ann = tiny_gt()["annotations"][i]
    rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], 80, 100))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def box_rle(x, y, w, h, H=80, W=100):
    m = np.zeros((H, W), np.uint8, order="F")
    m[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(m)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def test_half_right_and_category_without_gt():
    preds = [
        {"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 40, 30], "segmentation": gt_rle(0)},
        {"image_id": 2, "category_id": 1, "score": 0.8, "bbox": [70, 50, 20, 20], "segmentation": box_rle(70, 50, 20, 20)},
        {"image_id": 2, "category_id": 2, "score": 0.7, "bbox": [20, 20, 40, 40], "segmentation": gt_rle(1)},
    ]
    m = evaluate_coco(tiny_gt(), preds, [1, 2])
    # one of two GT found with the top-scored detection: precision 1 up to recall 0.5, then 0 -> AP = 51/101
    assert m["bbox"]["AP"] == pytest.approx(51 / 101)
    assert m["bbox"]["per_category"] == {"a": pytest.approx(51 / 101), "b": None}
    # VOC07 11-point: precision 1 at recall 0, .1, ..., .5 and 0 at .6 ... 1 -> 6/11
    assert m["bbox"]["AP50_voc07"] == pytest.approx(6 / 11)
    assert m["bbox"]["per_category_AP50_voc07"] == {"a": pytest.approx(6 / 11), "b": None}
    assert m["bbox"]["APs"] is None and m["bbox"]["APl"] is None  # no small/large GT: COCOeval's -1 -> None
    assert m["bbox"]["APm"] == pytest.approx(51 / 101)
    table = format_metrics_table(m)
    assert "| AP " in table and "50.5" in table and "| b " in table and " - " in table


def test_bbox_only_results_and_segm_only_results():
    gt = tiny_gt()
    boxes = [{"image_id": 1, "category_id": 1, "score": 1.0, "bbox": [10, 10, 40, 30]},
             {"image_id": 2, "category_id": 1, "score": 1.0, "bbox": [20, 20, 40, 40]}]
    assert evaluate_coco(gt, boxes, [1], iou_types=("bbox",))["bbox"]["AP"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="segmentation"):
        evaluate_coco(gt, boxes, [1])
    masks = [{"image_id": 1, "category_id": 1, "score": 1.0, "segmentation": gt_rle(0)},
             {"image_id": 2, "category_id": 1, "score": 1.0, "segmentation": gt_rle(1)}]
    m = evaluate_coco(gt, masks, [1])
    assert m["segm"]["AP"] == pytest.approx(1.0) and m["bbox"]["AP"] > 0.5
    mixed = [boxes[0] | {"segmentation": gt_rle(0)}, masks[1]]
    assert evaluate_coco(gt, mixed, [1])["segm"]["AP"] == pytest.approx(1.0)


def test_results_from_file_and_errors(tmp_path):
    gt = tiny_gt()
    path = tmp_path / "res.json"
    path.write_text(json.dumps([{"image_id": 1, "category_id": 1, "score": 1.0, "bbox": [10, 10, 40, 30]}]))
    m = evaluate_coco(gt, path, [1], iou_types=["bbox"])
    assert m["bbox"]["AP"] == pytest.approx(51 / 101)
    with pytest.raises(InputError, match="image_id 7"):
        evaluate_coco(gt, [{"image_id": 7, "category_id": 1, "score": 1.0, "bbox": [0, 0, 1, 1]}], [1], ["bbox"])
    with pytest.raises(InputError, match="score"):
        evaluate_coco(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}], [1], ["bbox"])
    with pytest.raises(InputError, match="iou_types"):
        evaluate_coco(gt, [], [1], iou_types=("keypoints",))
    with pytest.raises(InputError, match=r"\[9\]"):
        evaluate_coco(gt, [], [1, 9])
    with pytest.raises(InputError, match="does not exist"):
        evaluate_coco(gt, tmp_path / "none.json", [1])


def test_verbose_prints(capsys):
    evaluate_coco(tiny_gt(), [], [1], iou_types=("bbox",), verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_write_metrics_and_table(tmp_path):
    m = evaluate_coco(tiny_gt(), [], [1, 2])
    m["bbox"]["per_category"]["nan"] = float("nan")
    path = write_metrics(tmp_path / "out" / "metrics.json", m)
    back = json.loads(path.read_text())
    assert back["bbox"]["per_category"] == {"a": 0.0, "b": None, "nan": None}
    assert back["segm"]["AP"] == 0.0 and back["num_images"] == 2
    table = format_metrics_table(back)
    lines = table.splitlines()
    assert lines[0] == "2 images, 0 detections, 2 categories"
    assert lines[2].split("|")[1:4] == [" metric ", "   bbox ", "   segm "]
    assert "| AP     |    0.0 |    0.0 |" in table


def test_evaluation_refuses_memory_categories_that_would_score_as_another_class(tmp_path):
    from types import SimpleNamespace

    import torch

    from no_time_to_train import InputError, ReferenceMemory
    from no_time_to_train.data.coco import CocoDataset
    from no_time_to_train.pipeline import check_memory_categories, evaluate_dataset

    gt = {"images": [{"id": 1, "file_name": "a.jpg", "height": 4, "width": 4}], "annotations": [],
          "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "bicycle"}, {"id": 3, "name": "car"}]}
    dataset = CocoDataset(gt, tmp_path)
    mem = ReferenceMemory()
    mem.add(torch.ones(4), 1.0, "person", 1)
    mem.add(torch.ones(4), 1.0, "my bike")  # no dataset id: automatic id 2, bicycle's id in this dataset
    check_memory_categories(mem, dataset, [1])
    with pytest.raises(InputError, match="'my bike' was added without a dataset id and got the automatic id 2, "
                                         "which is 'bicycle'"):
        evaluate_dataset(SimpleNamespace(memory=mem), dataset, [1, 2], tmp_path / "out", None, signature={})
    assert not (tmp_path / "out").exists()
    other = ReferenceMemory()
    other.add(torch.ones(4), 1.0, "dog", 3)
    with pytest.raises(InputError, match="category id 3 is 'dog' in the memory but 'car' in the annotation dict"):
        check_memory_categories(other, dataset, [3])
