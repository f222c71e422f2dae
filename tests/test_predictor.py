"""ReferenceSegmenter end to end on real COCO images with tiny random models."""

import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from no_time_to_train import Detections, InputError, MemoryMismatchError, ReferenceSegmenter
from no_time_to_train.matching import point_grid


@pytest.fixture(scope="module")
def train(coco_mini):
    coco = COCO(str(coco_mini / "annotations" / "instances_train2017.json"))
    return coco


def _ref(coco, coco_mini, cat_id):
    ann = coco.loadAnns(coco.getAnnIds(catIds=[cat_id], iscrowd=False))[0]
    info = coco.loadImgs(ann["image_id"])[0]
    return coco_mini / "train2017" / info["file_name"], coco.annToMask(ann).astype(bool)


@pytest.fixture
def seg(make_segmenter, train, coco_mini):
    s = make_segmenter()
    for cat_id, name in [(18, "dog"), (1, "person"), (3, "car")]:
        path, mask = _ref(train, coco_mini, cat_id)
        s.add_reference(path, mask, category=name, category_id=cat_id)
    return s


def _check_structure(dets: Detections, hw, max_det, n_cats):
    n = len(dets)
    assert n <= max_det
    assert dets.masks.shape == (n, *hw) and dets.masks.dtype == bool
    assert dets.boxes.shape == (n, 4) and dets.labels.shape == (n,)
    assert np.all(np.diff(dets.scores) <= 0)  # descending
    assert np.all((dets.scores >= 0) & (dets.scores <= 1 + 1e-6)) and np.isfinite(dets.scores).all()
    assert np.all((dets.labels >= 0) & (dets.labels < n_cats))
    for m, b in zip(dets.masks, dets.boxes):
        if m.any():
            ys, xs = np.nonzero(m)
            assert b.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_predict_on_coco_mini(seg, coco_mini):
    paths = sorted((coco_mini / "val2017").glob("*.jpg"))[:2]
    for path in paths:
        dets = seg.predict(path)
        h, w = np.asarray(__import__("PIL.Image").Image.open(path)).shape[:2]
        _check_structure(dets, (h, w), 100, 3)
        assert len(dets) > 0
        results = dets.to_coco(image_id=1)
        assert {r["category_id"] for r in results} <= {18, 1, 3}
        json.dumps(results)


def test_predict_matches_step_by_step_pipeline(seg, coco_mini):
    """predict() is exactly encode -> propose -> finish, and is deterministic."""
    from no_time_to_train.imageio import load_image

    path = sorted((coco_mini / "val2017").glob("*.jpg"))[0]
    a = seg.predict(path)
    img = load_image(path)
    emb, tokens = seg.encode_target(img)
    b = seg.finish(seg.propose(emb), tokens, seg.memory.prototypes(), img.shape[:2])
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)


def test_all_prompts_decoded_when_grid_not_multiple_of_batch(make_segmenter, monkeypatch):
    seg = make_segmenter(points_per_side=5, point_batch_size=7, iou_threshold=0.0)  # keep all: IoU is a sigmoid
    seen = []
    real = seg.sam2.decode

    def spy(emb, points, labels, **kw):
        seen.append(points[:, 0].clone())
        return real(emb, points, labels, **kw)

    monkeypatch.setattr(seg.sam2, "decode", spy)
    img = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    emb, _ = seg.encode_target(img)
    props = seg.propose(emb)
    assert [len(s) for s in seen] == [7, 7, 7, 4]
    assert torch.equal(torch.cat(seen), point_grid(5))
    assert props.logits.shape == (25, 256, 256)


def test_batch_size_does_not_change_results(make_segmenter, seg, coco_mini):
    path = sorted((coco_mini / "val2017").glob("*.jpg"))[1]
    other = make_segmenter(point_batch_size=3)
    other.memory = seg.memory
    a, b = seg.predict(path), other.predict(path)
    assert np.array_equal(a.labels, b.labels) and np.allclose(a.scores, b.scores, atol=1e-5)


def test_no_surviving_proposal_gives_zero_detections(make_segmenter, seg, coco_mini):
    strict = make_segmenter(iou_threshold=1.0)
    strict.memory = seg.memory
    dets = strict.predict(sorted((coco_mini / "val2017").glob("*.jpg"))[0])
    assert len(dets) == 0 and dets.masks.shape[0] == 0 and dets.to_coco(1) == []


def test_no_memory_embedding_flag(make_segmenter, tiny_sam2):
    seg = make_segmenter()
    img = torch.rand(3, 1024, 1024)
    with torch.no_grad():
        tiny_sam2.no_memory_embedding.fill_(0.25)
    try:
        plain = seg.sam2.encode(img, add_no_memory_embedding=False)
        added = seg.sam2.encode(img, add_no_memory_embedding=True)
        assert torch.allclose(added.embedding - plain.embedding, torch.full_like(plain.embedding, 0.25), atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(plain.high_res, added.high_res))
        # transformers' own embedding adds it: ours without the flag is the paper's (no addition)
        ref = tiny_sam2.get_image_embeddings(((img - torch.tensor([0.485, 0.456, 0.406])[:, None, None])
                                              / torch.tensor([0.229, 0.224, 0.225])[:, None, None])[None])
        assert torch.allclose(ref[-1], added.embedding, atol=1e-5)
    finally:
        with torch.no_grad():
            tiny_sam2.no_memory_embedding.zero_()


def test_memory_round_trip_through_segmenter(seg, tmp_path, make_segmenter, coco_mini):
    path = seg.save_memory(tmp_path / "mem.safetensors")
    other = make_segmenter()
    other.load_memory(path)
    assert other.categories == ["dog", "person", "car"]
    img = sorted((coco_mini / "val2017").glob("*.jpg"))[0]
    assert np.array_equal(seg.predict(img).scores, other.predict(img).scores)
    assert other.remove_category("car") == 1 and other.categories == ["dog", "person"]


def test_memory_from_another_encoder_is_refused(seg, tmp_path, tiny_sam2):
    from transformers import Dinov2Model

    from no_time_to_train.models.configs import dinov2_config

    path = seg.save_memory(tmp_path / "mem.safetensors")
    torch.manual_seed(123)
    other_encoder = Dinov2Model(dinov2_config("test-tiny")).eval()
    other = ReferenceSegmenter(sam2=tiny_sam2, encoder=other_encoder)
    other.encoder  # load
    with pytest.raises(MemoryMismatchError, match="built with encoder"):
        other.load_memory(path)


def test_bad_reference_inputs(make_segmenter, tmp_path):
    seg = make_segmenter()
    img = np.zeros((20, 30, 3), np.uint8)
    good = np.zeros((20, 30), bool)
    good[5:10, 5:10] = True
    with pytest.raises(InputError, match="does not match"):
        seg.add_reference(img, np.ones((21, 30), bool), category="x")
    with pytest.raises(InputError, match="empty"):
        seg.add_reference(img, np.zeros((20, 30), bool), category="x")
    with pytest.raises(InputError, match="category"):
        seg.add_reference(img, good, category="")
    with pytest.raises(InputError, match="not found"):
        seg.add_reference(tmp_path / "missing.jpg", good, category="x")
    with pytest.raises(InputError, match="unknown category"):
        seg.remove_category("unicorn")
    with pytest.raises(InputError, match="add references first"):
        seg.predict(img)
    assert len(seg.memory) == 0  # nothing half-added
