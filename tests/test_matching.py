"""Exact formulas of the target side on hand-made inputs."""

import math

import numpy as np

import pytest
import torch
import torch.nn.functional as F

from no_time_to_train.matching import (
    batched_nms,
    classify,
    mask_boxes_inclusive,
    mask_embeddings,
    mask_embeddings_dense,
    mask_extents,
    point_grid,
    select_best_token,
    soft_merge_decay,
    upsample_features,
    upsample_masks,
)


def test_point_grid_is_border_inclusive_and_x_major():
    pts = point_grid(32, 1024, "border")
    assert pts.shape == (1024, 2)
    axis = [0.5 + 33 * i for i in range(32)]  # linspace(0, 1023, 32) = 0, 33, ..., 1023, plus 0.5
    assert pts[0].tolist() == [0.5, 0.5]
    assert pts[1].tolist() == [0.5, 33.5]  # the first 32 points share x
    assert pts[31].tolist() == [0.5, 1023.5]
    assert pts[32].tolist() == [33.5, 0.5]
    assert pts[-1].tolist() == [1023.5, 1023.5]
    assert sorted(set(pts[:, 0].tolist())) == axis


def test_point_grid_centered_matches_sam_amg():
    pts = point_grid(4, 1024, "centered")
    assert sorted(set(pts[:, 0].tolist())) == [128.0, 384.0, 640.0, 896.0]


def test_select_best_token_among_1_to_3():
    logits = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    iou = torch.tensor([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]])
    best, best_iou = select_best_token(logits, iou)
    assert torch.equal(best[0], logits[0, 1]) and torch.equal(best[1], logits[1, 0])
    assert best_iou.tolist() == pytest.approx([0.9, 0.7])
    # restricted to tokens 1 and 3 (columns 0 and 2)
    best, best_iou = select_best_token(logits, iou, (1, 3))
    assert torch.equal(best[0], logits[0, 2]) and best_iou.tolist() == pytest.approx([0.5, 0.7])


def test_mask_embedding_equals_mean_over_upsampled_map():
    torch.manual_seed(0)
    tokens = torch.randn(37 * 37, 8)
    masks = torch.rand(5, 256, 256) > 0.7
    masks[3] = False  # empty mask -> zero vector
    fast = mask_embeddings(masks, tokens, 37)
    fmap = upsample_features(tokens, 37, 256)  # (65536, 8)
    for i in range(5):
        sel = masks[i].flatten()
        if sel.any():
            expect = F.normalize(fmap[sel].mean(0), dim=0)
            assert torch.allclose(fast[i], expect, atol=1e-5)
    assert torch.equal(fast[3], torch.zeros(8))
    assert torch.allclose(fast, mask_embeddings_dense(masks, tokens, 37), atol=1e-5)


def test_classify_clamps_cosine_and_takes_argmax():
    emb = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8], [0.0, 0.0]])
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    scores, labels = classify(emb, protos)
    assert scores.tolist() == pytest.approx([1.0, 0.0, 0.8, 0.0])
    assert labels.tolist()[0] == 0 and labels.tolist()[2] == 1


def test_inclusive_boxes_and_extents():
    m = torch.zeros(2, 6, 8, dtype=torch.bool)
    m[0, 1:3, 2:5] = True  # rows 1-2, cols 2-4
    assert mask_boxes_inclusive(m).tolist() == [[2, 1, 4, 2], [0, 0, 0, 0]]
    assert mask_extents(m).tolist() == [[2, 1, 5, 3], [0, 0, 0, 0]]


def test_nms_is_class_aware_and_keeps_score_order():
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 9]], dtype=torch.float32
    )
    scores = torch.tensor([0.8, 0.9, 0.7, 0.6, 0.95])
    labels = torch.tensor([0, 0, 1, 0, 0])
    keep = batched_nms(boxes, scores, labels, 0.5)
    # 4 (0.95) suppresses 1 (IoU 0.9*... > .5) and 0 (IoU .9); box 2 survives in its own class; 3 is disjoint
    assert keep.tolist() == [4, 2, 3]


def test_nms_threshold_is_strict():
    boxes = torch.tensor([[0, 0, 2, 1], [1, 0, 3, 1]], dtype=torch.float32)  # IoU = 1/3
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 1 / 3)
    assert keep.tolist() == [0, 1]


def _unit(*v):
    return F.normalize(torch.tensor(v, dtype=torch.float32), dim=0)


def test_soft_merge_nested_same_features_goes_to_zero():
    m = torch.zeros(2, 10, 10, dtype=torch.bool)
    m[0, :8, :8] = True  # big mask ranked first
    m[1, 2:4, 2:4] = True  # fully inside, identical feature
    emb = torch.stack([_unit(1, 0), _unit(1, 0)])
    f = soft_merge_decay(m, emb, torch.tensor([0, 0]))
    assert f.tolist() == pytest.approx([1.0, 0.0])


def test_soft_merge_orthogonal_features_no_decay():
    m = torch.zeros(2, 10, 10, dtype=torch.bool)
    m[0, :8, :8] = True
    m[1, 2:4, 2:4] = True
    emb = torch.stack([_unit(1, 0), _unit(0, 1)])
    assert soft_merge_decay(m, emb, torch.tensor([0, 0])).tolist() == pytest.approx([1.0, 1.0])


def test_soft_merge_disjoint_and_other_class_and_only_earlier():
    m = torch.zeros(3, 10, 10, dtype=torch.bool)
    m[0, :5, :5] = True
    m[1, 5:, 5:] = True  # disjoint from 0
    m[2, :5, :5] = True  # identical to 0 but another class
    emb = torch.stack([_unit(1, 0)] * 3)
    assert soft_merge_decay(m, emb, torch.tensor([0, 0, 1])).tolist() == pytest.approx([1, 1, 1])
    # a small mask ranked FIRST does not decay the big one containing it (only earlier masks count)
    m2 = torch.zeros(2, 10, 10, dtype=torch.bool)
    m2[0, 2:4, 2:4] = True
    m2[1, :8, :8] = True
    assert soft_merge_decay(m2, torch.stack([_unit(1, 0)] * 2), torch.tensor([0, 0])).tolist()[1] == pytest.approx(
        math.sqrt(1 - 4 / 64)
    )


def test_soft_merge_partial_overlap_formula():
    m = torch.zeros(3, 10, 10, dtype=torch.bool)
    m[0, :, :5] = True  # 50 px
    m[1, :, 3:] = True  # 70 px; overlap with 0: 20 px
    m[2, :, 4:6] = True  # 20 px; overlap with 0: 10, with 1: 20
    emb = torch.stack([_unit(1, 0), _unit(0.6, 0.8), _unit(0, 1)])
    f = soft_merge_decay(m, emb, torch.tensor([0, 0, 0]))
    ios1 = 20 / 70 * 0.6
    ios2 = max(10 / 20 * 0.0, 20 / 20 * 0.8)
    assert f.tolist() == pytest.approx([1.0, math.sqrt(1 - ios1), math.sqrt(1 - ios2)], abs=1e-6)


def test_soft_merge_exponent_and_empty_mask():
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[0] = True  # second mask empty
    f = soft_merge_decay(m, torch.stack([_unit(1, 0)] * 2), torch.tensor([0, 0]), exponent=1.0)
    assert f.tolist() == [1.0, 1.0] and torch.isfinite(f).all()


def test_upsample_masks_direct_is_one_bilinear_resize():
    torch.manual_seed(0)
    logits = torch.randn(3, 16, 16)
    out = upsample_masks(logits, (37, 23), chunk=2)
    expect = F.interpolate(logits[:, None], size=(37, 23), mode="bilinear", align_corners=False)[:, 0] > 0
    assert out.dtype == torch.bool and torch.equal(out, expect)


def _candidate_logits(n=7, low=16, seed=0):
    torch.manual_seed(seed)
    return torch.randn(n, low, low) * 3 + 1  # overlapping blobs, some pixels near the threshold


@pytest.mark.parametrize("mode", ["direct", "sam"])
def test_packed_masks_hold_the_same_bits_as_dense_ones(mode):
    from no_time_to_train.matching import PackedMasks

    logits = _candidate_logits()
    dense = upsample_masks(logits, (37, 23), mode=mode)  # 851 pixels: not a multiple of 8
    assert torch.equal(upsample_masks(logits, (37, 23), mode=mode, chunk=1), dense)
    packed = PackedMasks.upsample(logits, (37, 23), mode=mode, chunk=2)
    assert packed.shape == (7, 37, 23) and packed.bits.shape == (7, 107) and packed.bits.dtype == torch.uint8
    order = torch.tensor([4, 0, 6, 2])
    assert torch.equal(packed[order], dense[order])
    flat = dense.flatten(1)
    assert torch.equal(packed.columns(order, 16, 851), flat[order, 16:851])
    assert torch.equal(packed.columns(order, 0, 5), flat[order, :5])


def test_soft_merge_decay_is_the_same_for_packed_masks_and_any_chunk():
    from no_time_to_train.matching import PackedMasks

    logits = _candidate_logits(n=9, seed=3)
    emb = F.normalize(torch.randn(9, 5).abs(), dim=1)
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 2, 0, 1])
    dense = upsample_masks(logits, (37, 23))
    expect = soft_merge_decay(dense, emb, labels)
    assert (expect < 1).sum() >= 3  # the masks do overlap: the comparison is not vacuous
    assert torch.equal(soft_merge_decay(dense, emb, labels, chunk=8), expect)
    assert torch.equal(soft_merge_decay(PackedMasks.upsample(logits, (37, 23), chunk=1), emb, labels, chunk=16), expect)


def test_merge_in_packed_chunks_is_bit_identical_to_the_dense_path(monkeypatch):
    from no_time_to_train import ReferenceSegmenter
    from no_time_to_train.matching import PackedMasks
    from no_time_to_train.predictor import Candidates

    seg = ReferenceSegmenter(sam2=None, encoder=None)  # merge needs no model
    for name in ("a", "b", "c"):
        seg.memory.add_category(name)
    logits = _candidate_logits(n=12, seed=5)
    torch.manual_seed(6)
    cand = Candidates(logits, torch.rand(12), torch.randint(0, 3, (12,)), F.normalize(torch.randn(12, 5), dim=1))
    seg.config = seg.config.replace(max_detections=8)
    dense = seg.merge(cand, (41, 29))
    monkeypatch.setattr("no_time_to_train.matching.DENSE_MASK_BYTES", 0)  # force the packed path...
    monkeypatch.setattr("no_time_to_train.matching.WORK_BYTES", 1)  # ...one mask at a time
    made = []
    real = PackedMasks.upsample.__func__
    monkeypatch.setattr(PackedMasks, "upsample", classmethod(lambda cls, *a, **k: made.append(1) or real(cls, *a, **k)))
    packed = seg.merge(cand, (41, 29))
    assert made and len(dense) == len(packed) == 8
    for key in ("masks", "boxes", "scores", "labels"):
        assert np.array_equal(getattr(dense, key), getattr(packed, key)), key
