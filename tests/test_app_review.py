"""The app's review loop (``app/session.py``): reject / accept / add a missed object, re-segment, export."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from no_time_to_train.app.session import ACCEPT, ADD, POSITIVE, REJECT, Workspace, _match
from no_time_to_train.errors import InputError
from no_time_to_train.types import Detections


@pytest.fixture
def reviewed(make_segmenter, tmp_path, coco_mini):
    """A workspace with one reference of 'thing', two segmented images."""
    ws = Workspace(make_segmenter(), workdir=tmp_path / "work")
    draft = ws.new_draft(str(coco_mini / "train2017" / "000000000790.jpg"))
    ws.click(draft, 320, 211, POSITIVE)
    ws.add_reference(draft, "thing")
    ws.segment([str(coco_mini / "val2017" / "000000000139.jpg"), str(coco_mini / "val2017" / "000000000802.jpg")])
    assert [len(r.detections) for r in ws.results] == [1, 1]  # the tiny random models find one object each
    return ws


def _pixel_of(dets: Detections, i: int) -> tuple[int, int]:
    """A pixel ``(x, y)`` inside mask ``i`` and no better-scoring mask."""
    better = dets.masks[dets.scores > dets.scores[i]].any(axis=0) if len(dets) else False
    ys, xs = np.nonzero(dets.masks[i] & ~better)
    return int(xs[len(xs) // 2]), int(ys[len(ys) // 2])


def test_reject_and_accept_make_references_and_change_what_is_shown(reviewed):
    ws = reviewed
    d = ws.results[0].detections
    x, y = _pixel_of(d, 0)
    assert ws.detection_at(0, x, y, min_score=-1) == 0
    n, version = len(ws.memory), ws.version
    msg = ws.review(0, x, y, REJECT, min_score=-1)
    assert msg.startswith("rejected thing") and "negative reference of 'thing'" in msg
    ref = ws.memory.references[-1]
    assert len(ws.memory) == n + 1 and ref["negative"] is True and ref["prompt"] == "review-reject"
    assert ref["image"] == ws.results[0].name and ws.memory.counts(negative=True)["thing"] == 1
    assert ws.results[0].decisions == {0: "rejected"} and ws.version == version + 1 and ws.stale
    assert ws.detection_at(0, x, y, min_score=-1) is None  # a rejected detection is no longer shown
    assert [c for _, c in ws.gallery()][-1] == "thing #2 (negative)"

    x, y = _pixel_of(ws.results[1].detections, 0)
    assert ws.review(1, x, y, ACCEPT, min_score=-1).startswith("accepted thing")
    assert ws.memory.counts() == {"thing": 2} and ws.results[1].decisions == {0: "accepted"}
    with pytest.raises(InputError, match="no shown detection under that click"):
        ws.review(1, x, y, REJECT, min_score=2.0)  # nothing scores above 2: nothing is shown
    with pytest.raises(InputError, match="unknown review action"):
        ws.review(0, x, y, "delete")
    with pytest.raises(InputError, match="select a segmented image"):
        ws.review(5, x, y, ACCEPT)
    summary = ws.review_summary(min_score=-1)
    assert "0 kept (0 accepted), 1 rejected, 0 added" in summary and "1 kept (1 accepted), 0 rejected" in summary


def test_add_a_missed_object_from_a_click_then_resegment_shows_the_changes(reviewed):
    ws = reviewed
    r = ws.results[1]
    with pytest.raises(InputError, match="name the category"):
        ws.review(1, 100, 120, ADD, category=" ")
    msg = ws.review(1, 100, 120, ADD, category="widget")
    assert msg.startswith("added a 'widget' at (100, 120)")
    assert np.array_equal(r.added[0].mask, ws.seg.reference_mask(r.image, points=[(100.0, 120.0, 1)]))
    assert ws.categories == ["thing", "widget"] and ws.memory.references[-1]["prompt"] == "review-add"

    old = {k: res.detections for k, res in enumerate(ws.results)}
    seen = []
    changes = ws.resegment(progress=lambda f, t: seen.append(f))
    assert seen[-1] == 1.0 and not ws.stale
    for k, res in enumerate(ws.results):
        fresh = ws.seg.predict(res.image)  # the updated memory (now with 'widget') made the new results
        assert np.array_equal(res.detections.scores, fresh.scores) and res.detections.names == fresh.names
        matched = _match(old[k], fresh, 0.5)
        assert changes[k] == {"image": res.name, "added": len(fresh) - len(matched),
                              "removed": len(old[k]) - len(matched)}
    assert ws.results[1].added[0].category == "widget"  # the reviewer's objects stay
    view = ws.review_view(1, min_score=-1)
    assert view.shape == r.image.shape and (view == (40, 210, 70)).all(axis=-1).any()  # the added one, outlined
    assert "last re-segment: +" in ws.review_summary()


def test_match_pairs_same_category_masks_by_iou():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :5, :5] = True
    masks[1, 5:, 5:] = True
    masks[2, :5, 5:] = True
    old = Detections(masks[:2], np.zeros((2, 4)), np.array([0.9, 0.8]), np.array([0, 0]), ["a", "b"])
    shifted = masks[[1, 0, 2]].copy()
    shifted[1, 5, :5] = True  # IoU 25/30 with old 0
    new = Detections(shifted, np.zeros((3, 4)), np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]), ["a", "b"])
    assert _match(old, new, 0.5) == {0: 1, 1: 0}
    relabelled = Detections(shifted, np.zeros((3, 4)), np.array([0.9, 0.8, 0.7]), np.array([1, 1, 1]), ["a", "b"])
    assert _match(old, relabelled, 0.5) == {}  # another category never matches
    assert _match(old, new, 0.9) == {1: 0}


def test_export_reviewed_images_as_a_dataset(reviewed):
    from pycocotools.coco import COCO

    pytest.importorskip("cv2", reason="the 'label' extra (opencv-python-headless) is not installed")
    ws = reviewed
    d = ws.results[0].detections
    ws.review(0, *_pixel_of(d, 0), REJECT, min_score=-1)
    ws.review(1, *_pixel_of(ws.results[1].detections, 0), ACCEPT, min_score=-1)
    ws.review(1, 100, 120, ADD, category="widget")
    images = ws.reviewed_images(min_score=-1)
    assert [im.name for im in images] == ["000000000139.jpg", "000000000802.jpg"] and all(im.reviewed for im in images)
    assert images[0].instances == []  # the rejected detection is left out
    accepted, added = images[1].instances
    assert (accepted.category, accepted.review) == ("thing", "accepted")
    assert accepted.score == pytest.approx(float(ws.results[1].detections.scores[0]))
    assert (added.category, added.score, added.review) == ("widget", None, "added")

    path = ws.export_dataset(["coco", "yolo", "labelstudio"], min_score=-1)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        assert {"coco/annotations.json", "yolo/data.yaml", "labelstudio/tasks.json", "summary.json",
                "coco/images/000000000139.jpg", "yolo/labels/train/000000000802.txt"} <= names
        zf.extractall(ws.workdir / "unzipped")
    coco = COCO(str(ws.workdir / "unzipped" / "coco" / "annotations.json"))
    assert len(coco.anns) == sum(len(im.instances) for im in images)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["thing", "widget"]
    tasks = json.loads((ws.workdir / "unzipped" / "labelstudio" / "tasks.json").read_text())
    assert all("annotations" in t and "predictions" not in t for t in tasks)  # reviewed: ground truth
