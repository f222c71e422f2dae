"""The paper's settings pinned: every ``MethodConfig`` default METHOD.md specifies, the strict comparisons, the
greedy NMS chain and the interpolation of every resize. A change to any of them fails here first."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from no_time_to_train import MethodConfig
from no_time_to_train.matching import batched_nms, mask_boxes_inclusive, point_grid, upsample_masks
from no_time_to_train.transforms import crop_reference, patch_mask_weights, resize_for_encoder, squash_for_sam

# METHOD.md section, then the value; every field of MethodConfig is listed, so a new setting must be pinned too.
PAPER = {
    "context_ratio": 0.2,                # 3.1: square crop side = 1.2 * max(w, h)
    "encoder_size": 518,                 # 3.1 / 5.1: DINOv2 input, 37x37 patches of 14 px
    "ref_mask_sampling": "top-left",     # 3.2: nearest 518 -> 37 picks each patch's top-left pixel
    "prototype": "instance-mean",        # 4: normalise(mean of per-instance vectors)
    "sam_image_size": 1024,              # 5.1: targets squashed to 1024x1024
    "points_per_side": 32,               # 5.3: 1024 prompts
    "point_grid": "border",              # 5.3: linspace(0, 1023, 32) + 0.5, borders included
    "point_batch_size": "auto",          # never changes results (the paper's 256 is reachable)
    "prompt_mode": "grid",               # 5.3: every grid point is a prompt
    "guided_points": 256,                # only used by the opt-in "guided" mode
    "multimask_tokens": (1, 2, 3),       # 5.3: best predicted IoU among tokens 1-3 (token 0 ignored)
    "iou_threshold": 0.4,                # 5.3: keep predicted IoU strictly > 0.4
    "mask_threshold": 0.0,               # 5.4: logit strictly > 0
    "add_no_memory_embedding": False,    # 5.3 / 11.1: the paper does not add no_mem_embed
    "nms_threshold": 0.5,                # 5.5
    "nms_rank_by": "predicted_iou",      # 5.5 / 11.3: NMS ranked by SAM2's predicted IoU
    "max_detections": 100,               # 5.8: top-100
    "pre_merge_factor": 8,               # 5.5: 8 x 100 = 800 survivors before merging
    "merge_exponent": 0.5,               # 5.7: score * (1 - IoS * cos) ** 0.5
    "soft_merge": True,                  # 5.7: always on
    "mask_upsampling": "direct",         # 5.6 / 11.9: one bilinear 256 -> (H, W)
    "box_convention": "inclusive",       # 5.6 / 11.7: COCO w = x_max - x_min, 1 px short
    "score_threshold": None,             # 5.8: no score threshold
    "negative_temperature": 0.8,         # 3.3: the authors' sigma (negatives are off unless given)
}


def test_every_default_is_the_papers():
    cfg = MethodConfig()
    fields = {f: getattr(cfg, f) for f in cfg.to_dict()}
    assert set(fields) == set(PAPER), "a MethodConfig field was added or removed: pin its paper value here"
    assert fields == PAPER
    assert cfg.max_pre_merge == 800


def test_point_grid_is_32_border_inclusive():
    pts = point_grid(MethodConfig().points_per_side, MethodConfig().sam_image_size, MethodConfig().point_grid)
    assert pts.shape == (1024, 2)
    assert sorted(set(pts[:, 0].tolist())) == [0.5 + 33 * i for i in range(32)]


def test_iou_filter_is_strict(make_segmenter):
    """A proposal whose predicted IoU equals the threshold (in float32, as the model gives it) is dropped."""
    seg = make_segmenter(points_per_side=2, iou_threshold=0.4, multimask_tokens=(1,), point_batch_size=3)
    ious = torch.tensor([0.4, np.nextafter(np.float32(0.4), np.float32(1)), 0.39, 0.9], dtype=torch.float32)

    class Decoder:  # stand-in for SAM2 (tokens 1-3): 4 prompts in batches of 3 and 1, one IoU each on token 1
        done = 0

        def decode(self, emb, pts, labels):
            n = len(pts)
            iou = torch.zeros(n, 3)
            iou[:, 0] = ious[self.done : self.done + n]
            self.done += n
            return torch.zeros(n, 3, 8, 8), iou

    seg._sam2 = Decoder()
    kept = seg.propose(emb=None)
    assert kept.iou.tolist() == [ious[1].item(), ious[3].item()]


def test_mask_threshold_is_strict():
    logits = torch.tensor([[[0.0, 1e-6], [-1e-6, 0.0]]])
    assert mask_boxes_inclusive(logits > MethodConfig().mask_threshold).tolist() == [[1, 0, 1, 0]]
    assert upsample_masks(logits, (2, 2)).tolist() == [[[False, True], [False, False]]]


def test_greedy_nms_chain():
    """A suppresses B (IoU 70/130), B would suppress C, but B is gone, so C (IoU 40/160 with A) stays."""
    boxes = torch.tensor([[0, 0, 10, 10], [3, 0, 13, 10], [6, 0, 16, 10]], dtype=torch.float32)
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long),
                       MethodConfig().nms_threshold)
    assert keep.tolist() == [0, 2]


def _image(h=37, w=53, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_target_squash_is_pil_bicubic_with_antialias():
    img = _image(300, 170)
    out = squash_for_sam(img, 64)
    want = np.asarray(Image.fromarray(img).resize((64, 64), Image.BICUBIC), dtype=np.float32) / 255
    assert torch.equal(out, torch.from_numpy(want).permute(2, 0, 1))
    other = np.asarray(Image.fromarray(img).resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255
    assert not torch.allclose(out, torch.from_numpy(other).permute(2, 0, 1), atol=1e-3)


def test_encoder_resize_is_torch_bicubic_without_antialias():
    x = torch.rand(3, 1024, 1024)
    out = resize_for_encoder(x, 518)
    assert torch.equal(out, F.interpolate(x[None], size=(518, 518), mode="bicubic", align_corners=False)[0])
    antialiased = F.interpolate(x[None], size=(518, 518), mode="bicubic", align_corners=False, antialias=True)[0]
    assert (out - antialiased).abs().max() > 1e-2  # the difference the paper's numbers depend on


def test_reference_crop_is_bicubic_without_antialias_and_mask_bilinear():
    img = torch.rand(3, 900, 700)
    mask = torch.zeros(900, 700)
    mask[100:800, 50:650] = 1
    window = (20, 30, 690, 880)
    out_img, out_mask = crop_reference(img, mask, window, 518)
    crop = img[None, :, 30:880, 20:690]
    assert torch.equal(out_img, F.interpolate(crop, size=(518, 518), mode="bicubic", align_corners=False)[0])
    aa = F.interpolate(crop, size=(518, 518), mode="bicubic", align_corners=False, antialias=True)[0]
    assert (out_img - aa).abs().max() > 1e-2
    bilinear = F.interpolate(mask[None, None, 30:880, 20:690], size=(518, 518), mode="bilinear", align_corners=False)
    assert torch.equal(out_mask, bilinear[0, 0])
    # the soft mask is then sampled at each patch's top-left pixel (nearest), not averaged
    assert torch.equal(patch_mask_weights(out_mask, 37, MethodConfig().ref_mask_sampling), out_mask[::14, ::14].flatten())


def test_final_masks_are_one_bilinear_upsample():
    logits = torch.randn(3, 256, 256)
    out = upsample_masks(logits, (480, 640), MethodConfig().mask_threshold, MethodConfig().mask_upsampling)
    want = F.interpolate(logits[:, None], size=(480, 640), mode="bilinear", align_corners=False)[:, 0] > 0
    assert torch.equal(out, want)
