"""Reference encoding: crop window, soft mask sampling at patch top-left pixels, weighted mean."""

import numpy as np
import pytest
import torch

from no_time_to_train import InputError, MethodConfig
from no_time_to_train.references import encode_references, prepare_reference
from no_time_to_train.transforms import context_crop_window, crop_reference, mask_box, patch_mask_weights


def test_context_crop_window_truncates_and_clips():
    # box 100x50 at (10, 20): centre (60, 45), side 120 -> [0, 120) x [-15, 105) -> clipped top
    assert context_crop_window((10, 20, 110, 70), (480, 640), 0.2) == (0, 0, 120, 105)
    # fractional bounds are truncated with int(): centre 50.5, side 13.2 -> [43.9, 57.1) -> [43, 57)
    assert context_crop_window((45, 45, 56, 56), (100, 100), 0.2) == (43, 43, 57, 57)
    # at the right/bottom border the window is cut: non-square
    assert context_crop_window((90, 90, 100, 100), (100, 100), 0.2) == (89, 89, 100, 100)


def test_mask_box_is_exclusive_extent():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert mask_box(m) == (3, 2, 9, 5)


def test_patch_weights_sample_top_left_pixels_and_stay_soft():
    torch.manual_seed(0)
    soft = torch.rand(518, 518)
    w = patch_mask_weights(soft, 37, "top-left")
    assert torch.equal(w, soft[::14, ::14].flatten())
    assert ((w > 0) & (w < 1)).any()  # weights are not binarised
    area = patch_mask_weights(soft, 37, "area")
    assert torch.allclose(area[0], soft[:14, :14].mean())


def test_crop_reference_resizes_image_bicubic_and_mask_bilinear():
    img = torch.rand(3, 40, 60)
    mask = torch.zeros(40, 60)
    mask[10:30, 20:40] = 1
    out_img, out_mask = crop_reference(img, mask, (10, 5, 50, 35), 518)
    assert out_img.shape == (3, 518, 518) and out_mask.shape == (518, 518)
    ref = torch.nn.functional.interpolate(mask[None, None, 5:35, 10:50], size=(518, 518), mode="bilinear")[0, 0]
    assert torch.equal(out_mask, ref)
    assert ((out_mask > 0) & (out_mask < 1)).any()


class FixedEncoder:
    """Stand-in encoder returning known tokens, to check the pooling formula exactly."""

    dim = 3

    def __init__(self, tokens):
        self.tokens = tokens
        self.used = 0

    def patch_tokens(self, images):
        out = self.tokens[self.used : self.used + len(images)]
        self.used += len(images)
        return out


def test_reference_vector_is_soft_weighted_mean():
    n = 37 * 37
    tokens = torch.randn(2, n, 3, dtype=torch.float64).float()
    crops = []
    cfg = MethodConfig()
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        mask = np.zeros((100, 120), bool)
        mask[20 + seed * 5 : 70, 30:90] = True
        img = rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)
        crops.append(prepare_reference(img, mask, cfg))
    vec, total = encode_references(FixedEncoder(tokens), crops, batch_size=1)
    for k in range(2):
        m = crops[k].weights
        expect = (m[:, None] * tokens[k]).sum(0) / m.sum()
        assert torch.allclose(vec[k], expect, atol=1e-5)
        assert total[k] == pytest.approx(float(m.sum()))


def test_thin_mask_missing_sample_pixels_falls_back_to_coverage():
    img = np.zeros((600, 600, 3), np.uint8)
    mask = np.zeros((600, 600), bool)
    mask[100:500, 300] = True  # 1 px wide, 400 px tall: crop side 480 -> one column in 518
    crop = prepare_reference(img, mask, MethodConfig())
    assert float(crop.weights.sum()) > 0 and torch.isfinite(crop.weights).all()


def test_box_outside_image_is_an_error():
    img = np.zeros((50, 50, 3), np.uint8)
    mask = np.ones((50, 50), bool)
    with pytest.raises(InputError, match="outside"):
        prepare_reference(img, mask, MethodConfig(), box=(200, 200, 260, 260))
