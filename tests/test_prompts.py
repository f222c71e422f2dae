"""Box and click references (SAM2 makes the mask) and negative references."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from no_time_to_train import InputError
from no_time_to_train.matching import classify, negative_adjusted, select_best_token, upsample_masks
from no_time_to_train.memory import ReferenceMemory
from no_time_to_train.transforms import squash_for_sam


@pytest.fixture
def image(coco_mini):
    return sorted((coco_mini / "val2017").glob("*.jpg"))[0]


def test_box_reference_uses_sam2_single_mask_output(make_segmenter, image):
    from no_time_to_train.imageio import load_image

    seg = make_segmenter()
    img = load_image(image)
    box = (100, 100, 150, 160)
    mask = seg.reference_mask(image, box=box)
    # independently: encode with no_memory_embedding, decode the box in the SAM frame, single-mask output
    sx, sy = 1024 / img.shape[1], 1024 / img.shape[0]
    emb = seg.sam2.encode(squash_for_sam(img), add_no_memory_embedding=True)
    logits, _ = seg.sam2.decode(emb, boxes=torch.tensor([[100 * sx, 100 * sy, 150 * sx, 160 * sy]]), multimask=False)
    expect = upsample_masks(logits[:, 0], img.shape[:2])[0].numpy()
    assert mask.shape == img.shape[:2] and np.array_equal(mask, expect)

    row = seg.add_reference(image, box=box, category="thing")
    rec = seg.memory.references[row]
    assert rec["prompt"] == "box" and rec["prompt_value"] == [100.0, 100.0, 150.0, 160.0]
    assert 0.0 <= rec["sam2_iou"] <= 1.0


def test_single_click_takes_best_multimask_output(make_segmenter, image):
    from no_time_to_train.imageio import load_image

    seg = make_segmenter()
    img = load_image(image)
    mask = seg.reference_mask(image, points=[(50, 60, 1)])
    sx, sy = 1024 / img.shape[1], 1024 / img.shape[0]
    emb = seg.sam2.encode(squash_for_sam(img), add_no_memory_embedding=True)
    logits, iou = seg.sam2.decode(emb, torch.tensor([[[50 * sx, 60 * sy]]]), torch.tensor([[1]]), multimask=True)
    best, _ = select_best_token(logits, iou)
    assert np.array_equal(mask, upsample_masks(best, img.shape[:2])[0].numpy())
    # clicks with a background point: accepted, stored in the memory as the prompt
    row = seg.add_reference(image, points=[(50, 60, 1), (300, 200, 0)], category="thing")
    assert seg.memory.references[row]["prompt"] == "points"


def test_bad_prompts(make_segmenter, image):
    seg = make_segmenter()
    cases = [
        (dict(box=(10, 10, 10, 50)), "no area"),
        (dict(box=(5000, 10, 5100, 50)), "outside"),
        (dict(box=(1, 2, 3)), "a box is"),
        (dict(points=[(10, 10, 2)]), "labels must be 1"),
        (dict(points=[(10, 10, 0)]), "positive point"),
        (dict(points=[(10, 9999, 1)]), "outside"),
        (dict(box=(1, 2, 30, 40), mask=np.ones((2, 2), bool)), "exactly one of mask, box or points"),
        (dict(), "exactly one of mask, box or points"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            seg.add_reference(image, category="x", **kwargs)
    assert len(seg.memory) == 0


def test_negative_adjustment_formula():
    sim = torch.tensor([[0.9, 0.5], [0.2, 0.4]])
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    neg_vec = F.normalize(torch.tensor([[0.6, 0.8], [1.0, 0.0]]), dim=1)
    neg_lab = torch.tensor([0, 0])  # both negatives belong to category 0
    out = negative_adjusted(sim, emb, neg_lab, neg_vec, temperature=0.8)
    # row 0: s_neg = max(0.6, 1.0) = 1.0 -> 0.9 * exp(-(0.1)/0.8); row 1: s_neg = 0.8 -> 0.2 * exp(-0.6/0.8)
    assert out[0, 0].item() == pytest.approx(0.9 * math.exp(-0.1 / 0.8))
    assert out[1, 0].item() == pytest.approx(0.2 * math.exp(-0.6 / 0.8))
    assert out[:, 1].tolist() == pytest.approx([0.5, 0.4])  # no negatives for category 1
    scores, labels = classify(emb, torch.eye(2), (neg_lab, neg_vec), 0.8)
    assert labels.tolist() == [0, 1]


def test_negative_references_stay_out_of_prototypes_and_lower_scores():
    mem = ReferenceMemory()
    mem.add(torch.tensor([1.0, 0.0]), 1.0, "cat")
    mem.add(torch.tensor([0.0, 1.0]), 1.0, "dog")
    plain = mem.prototypes().clone()
    mem.add(torch.tensor([0.8, 0.6]), 1.0, "cat", negative=True)
    assert torch.equal(mem.prototypes(), plain)
    assert mem.counts() == {"cat": 1, "dog": 1} and mem.counts(negative=True) == {"cat": 1, "dog": 0}
    emb = F.normalize(torch.tensor([[0.8, 0.6]]), dim=1)  # looks exactly like the negative example
    before, _ = classify(emb, mem.prototypes())
    after, label = classify(emb, mem.prototypes(), mem.negatives(), 0.8)
    assert before.item() == pytest.approx(0.8)
    # cat: 0.8 * exp(-(1.0 - 0.8)/0.8) = 0.623 > dog 0.6, still cat but lower
    assert after.item() == pytest.approx(0.8 * math.exp(-0.2 / 0.8)) and label.item() == 0


def test_negative_reference_end_to_end(make_segmenter, coco_mini):
    seg = make_segmenter()
    paths = sorted((coco_mini / "train2017").glob("*.jpg"))
    seg.add_reference(paths[0], box=(50, 50, 200, 200), category="a")
    seg.add_reference(paths[1], box=(50, 50, 200, 200), category="b")
    target = sorted((coco_mini / "val2017").glob("*.jpg"))[0]
    before = seg.predict(target)
    seg.add_reference(target, box=(0, 0, 300, 300), category="a", negative=True)
    after = seg.predict(target)
    assert len(before) and all(np.isfinite(after.scores))
    assert after.scores[after.labels == 0].sum() <= before.scores[before.labels == 0].sum() + 1e-6
