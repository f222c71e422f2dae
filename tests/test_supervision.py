"""``Detections.to_supervision()`` / ``from_supervision()``: the ``supervision`` extra, both ways."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from no_time_to_train.errors import InputError
from no_time_to_train.types import Detections


def _dets() -> Detections:
    masks = np.zeros((3, 20, 30), bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 10:15, 0:30] = True
    masks[2, 0:20, 25:27] = True
    boxes = np.array([[3, 2, 9, 8], [0, 10, 30, 15], [25, 0, 27, 20]], np.float32)
    return Detections(masks=masks, boxes=boxes, scores=np.array([0.9, 0.5, 0.2], np.float32),
                      labels=np.array([1, 0, 1]), category_names=["cat", "dog"])


def test_round_trip_through_supervision_keeps_everything():
    sv = pytest.importorskip("supervision", reason="the 'supervision' extra is not installed")
    ours = _dets()
    theirs = ours.to_supervision()
    assert isinstance(theirs, sv.Detections) and len(theirs) == 3
    assert np.array_equal(theirs.xyxy, ours.boxes) and np.array_equal(theirs.mask, ours.masks)
    assert theirs.class_id.tolist() == [1, 0, 1] and theirs.data["class_name"].tolist() == ["dog", "cat", "dog"]
    assert np.allclose(theirs.confidence, [0.9, 0.5, 0.2])
    back = Detections.from_supervision(theirs)
    assert back.category_names == ["cat", "dog"] and back.labels.tolist() == [1, 0, 1]
    assert np.array_equal(back.masks, ours.masks) and np.array_equal(back.boxes, ours.boxes)
    assert np.allclose(back.scores, ours.scores) and back.names == ours.names
    # supervision's own tools take it: its mask boxes (last pixel's index) are ours less one, its annotator draws it
    assert np.array_equal(sv.mask_to_xyxy(theirs.mask) + [0, 0, 1, 1], ours.boxes)
    drawn = sv.MaskAnnotator().annotate(np.zeros((20, 30, 3), np.uint8), theirs)
    assert drawn[5, 5].any() and not drawn[0, 0].any()


def test_from_supervision_sorts_names_and_refuses_box_only_results():
    sv = pytest.importorskip("supervision", reason="the 'supervision' extra is not installed")
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 5:9, 5:9] = True
    det = sv.Detections(xyxy=np.zeros((2, 4), np.float32), mask=masks, confidence=np.array([0.3, 0.8]),
                        class_id=np.array([4, 2]))
    ours = Detections.from_supervision(det)  # sorted by score; boxes from the masks; names from the ids
    assert ours.names == ["class_2", "class_4"] and ours.scores.tolist() == pytest.approx([0.8, 0.3])
    assert ours.boxes.tolist() == [[5, 5, 9, 9], [1, 1, 3, 3]]
    named = Detections.from_supervision(det, category_names=["a", "b", "c", "d", "e"])
    assert named.names == ["c", "e"] and named.category_names == ["a", "b", "c", "d", "e"]
    with pytest.raises(InputError, match="do not index the 2 category names"):
        Detections.from_supervision(det, category_names=["a", "b"])
    with pytest.raises(InputError, match="no masks"):
        Detections.from_supervision(sv.Detections(xyxy=np.zeros((1, 4), np.float32)))
    empty = Detections.from_supervision(Detections.empty((4, 5), ["x"]).to_supervision())
    assert len(empty) == 0 and empty.image_size == (4, 5)


def test_without_supervision_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)
    with pytest.raises(InputError, match=r'pip install "no-time-to-train\[supervision\]"'):
        _dets().to_supervision()
