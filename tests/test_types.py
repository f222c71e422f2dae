"""Detections, COCO export, box convention, RLE and config round trips."""

import json

import numpy as np
import pytest

from no_time_to_train import Detections, InputError, MethodConfig
from no_time_to_train.types import coco_box, decode_rle, encode_rle


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    m = rng.random((31, 17)) > 0.5
    rle = encode_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [31, 17]
    json.dumps(rle)
    assert np.array_equal(decode_rle(rle), m)


def test_box_conventions():
    assert coco_box((2, 1, 5, 3), "inclusive") == [2, 1, 2, 1]  # pixels 2..4 x 1..2: w = 4 - 2
    assert coco_box((2, 1, 5, 3), "exclusive") == [2, 1, 3, 2]
    assert coco_box((0, 0, 0, 0)) == [0, 0, 0, 0]


def _dets():
    masks = np.zeros((2, 4, 5), bool)
    masks[0, 1:3, 1:4] = True
    masks[1, 0, 0] = True
    return Detections(masks, np.array([[1, 1, 4, 3], [0, 0, 1, 1]], np.float32), np.array([0.9, 0.2], np.float32),
                      np.array([1, 0]), ["cat", "dog"], [17, 18])


def test_to_coco_uses_memory_ids_and_paper_boxes():
    out = _dets().to_coco(image_id=7)
    assert [r["category_id"] for r in out] == [18, 17]
    assert out[0]["bbox"] == [1, 1, 2, 1] and out[0]["score"] == pytest.approx(0.9)
    assert np.array_equal(decode_rle(out[0]["segmentation"]), _dets().masks[0])
    assert [r["category_id"] for r in _dets().to_coco(1, {"cat": 5, "dog": 6})] == [6, 5]
    assert [r["category_id"] for r in _dets().to_coco(1, [5, 6])] == [6, 5]
    with pytest.raises(InputError, match="no category id given for dog"):
        _dets().to_coco(1, {"cat": 5})


def test_selection_and_filter():
    d = _dets()
    assert len(d.filter(0.5)) == 1 and d.filter(0.5).names == ["dog"]
    assert d[np.array([1])].labels.tolist() == [0]
    assert len(Detections.empty((4, 5), ["a"])) == 0


def test_config_round_trip_and_validation(tmp_path):
    cfg = MethodConfig(points_per_side=16)
    assert MethodConfig.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "c.yaml").write_text("method:\n  nms_threshold: 0.6\n  point_grid: centered\n")
    assert MethodConfig.from_file(tmp_path / "c.yaml").nms_threshold == 0.6
    assert cfg.with_overrides(["iou-threshold=0.5"]).iou_threshold == 0.5
    with pytest.raises(InputError, match="unknown setting"):
        MethodConfig.from_dict({"nms_thr": 0.5})
    with pytest.raises(InputError, match="point_grid"):
        MethodConfig(point_grid="random")
    assert MethodConfig().max_pre_merge == 800


def test_to_coco_never_switches_ids_when_some_categories_lack_one():
    d = _dets()
    d.category_ids = [17, None]  # "dog" has no id
    with pytest.raises(InputError, match="categories dog have no category id while the others have dataset ids"):
        d.to_coco(1)
    assert [r["category_id"] for r in d.to_coco(1, {"cat": 5, "dog": 6})] == [6, 5]
    d.category_ids = [None, None]  # no ids at all: label indices
    assert [r["category_id"] for r in d.to_coco(1)] == [1, 0]


def test_repr_is_short_and_summarises():
    n = 12
    dets = Detections(masks=np.ones((n, 480, 640), bool), boxes=np.zeros((n, 4)),
                      scores=np.linspace(0.91, 0.12, n), labels=np.array([1] * 8 + [0] * 4),
                      category_names=["cat", "dog", "bird"])
    assert repr(dets) == "Detections(n=12, image_size=(480, 640), categories={dog: 8, cat: 4}, scores=0.91..0.12)"
    assert repr(Detections.empty((4, 5), ["dog"])) == "Detections(n=0, image_size=(4, 5))"
    many = Detections(masks=np.ones((10, 2, 2), bool), boxes=np.zeros((10, 4)), scores=np.full(10, 0.5),
                      labels=np.arange(10), category_names=[f"c{i}" for i in range(10)])
    assert "c7: 1, ... 2 more}" in repr(many) and len(repr(many)) < 150
