"""DINOv3 ConvNeXt as the patch encoder: Meta-format loading, shape inference, the resampled token grid, the path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import DINOv3ConvNextModel

from no_time_to_train import MemoryMismatchError, MethodConfig, ReferenceSegmenter
from no_time_to_train.config import SettingError
from no_time_to_train.errors import CheckpointError
from no_time_to_train.models.checkpoints import load_encoder
from no_time_to_train.models.configs import DINOV3_CONVNEXT_VARIANTS, dinov3_convnext_config
from no_time_to_train.models.dinov3_convnext import Dinov3ConvNextEncoder
from no_time_to_train.models.dinov3_convnext_keys import (
    dinov3_convnext_hf_to_meta,
    dinov3_convnext_meta_to_hf,
    infer_dinov3_convnext_config,
)
from no_time_to_train.models.encoder import wrap_encoder
from no_time_to_train.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize


@pytest.fixture(scope="module")
def tiny_convnext() -> DINOv3ConvNextModel:
    torch.manual_seed(5)
    model = DINOv3ConvNextModel(dinov3_convnext_config("test-tiny")).eval()
    with torch.no_grad():  # random layer scales and biases, so that a dropped or swapped one shows
        for name, p in model.named_parameters():
            if name.endswith(("bias", "gamma")):
                p.normal_()
    return model


def test_meta_file_round_trip(tiny_convnext, tmp_path):
    meta = dinov3_convnext_hf_to_meta(tiny_convnext.state_dict())
    # Meta's layout (dinov3/models/convnext.py): the stem and downsamplings apart from the stages, final `norm`
    assert meta["downsample_layers.0.0.weight"].shape == (8, 3, 4, 4)  # stem conv
    assert meta["downsample_layers.1.1.weight"].shape == (16, 8, 2, 2)  # LayerNorm then strided conv
    assert meta["stages.2.1.pwconv1.weight"].shape == (96, 24) and meta["stages.2.1.gamma"].shape == (24,)
    assert meta["norm.weight"].shape == (32,) and len(meta) == len(tiny_convnext.state_dict())
    torch.save(meta, tmp_path / "dinov3_convnext_tiny_pretrain_lvd1689m-0000.pth")
    loaded = load_encoder(tmp_path / "dinov3_convnext_tiny_pretrain_lvd1689m-0000.pth")
    assert isinstance(loaded, DINOv3ConvNextModel)
    assert (loaded.config.depths, loaded.config.hidden_sizes) == ([1, 1, 2, 1], [8, 16, 24, 32])
    x = torch.rand(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x).last_hidden_state, tiny_convnext(pixel_values=x).last_hidden_state)


@pytest.mark.parametrize("variant", [v for v in DINOV3_CONVNEXT_VARIANTS if v != "test-tiny"])
def test_official_sizes_inferred_from_shapes(variant):
    config = dinov3_convnext_config(variant)
    with torch.device("meta"):
        hf = DINOv3ConvNextModel(config).state_dict()
    meta = dinov3_convnext_hf_to_meta(hf)
    depths, widths = DINOV3_CONVNEXT_VARIANTS[variant]
    assert f"stages.2.{depths[2] - 1}.dwconv.weight" in meta and meta["norm.weight"].shape == (widths[-1],)
    inferred = infer_dinov3_convnext_config(meta)
    assert (tuple(inferred.depths), tuple(inferred.hidden_sizes)) == (depths, widths)
    assert set(dinov3_convnext_meta_to_hf(meta)[1]) == set(hf)


def test_tokens_are_the_final_map_resampled_to_a_patch16_grid(tiny_convnext):
    enc = wrap_encoder(tiny_convnext)
    assert type(enc) is Dinov3ConvNextEncoder and enc.patch_size == 16 and enc.dim == 32 and enc.num_prefix == 1
    assert enc.input_size("auto") == 592 and enc.describe()["num_hidden_layers"] == 5
    assert (enc.mean, enc.std) == (IMAGENET_MEAN, IMAGENET_STD)  # the LVD-1689M release's statistics
    with pytest.raises(SettingError, match="not a multiple of the DINOv3 ConvNeXt encoder's patch size 16"):
        enc.input_size(600)
    images = torch.rand(2, 3, 96, 96)
    tokens = enc.patch_tokens(images)
    assert tokens.shape == (2, 6 * 6, 32)
    with torch.no_grad():  # by hand: final-norm tokens on the 3x3 (96/32) map, resampled to 6x6 (96/16)
        out = tiny_convnext(pixel_values=normalize(images, IMAGENET_MEAN, IMAGENET_STD)).last_hidden_state[:, 1:]
    fmap = out.transpose(1, 2).reshape(2, 32, 3, 3)
    expected = F.interpolate(fmap, size=(6, 6), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(tokens, expected.flatten(2).transpose(1, 2))
    assert enc.patch_tokens(torch.rand(1, 3, 80, 80)).shape == (1, 5 * 5, 32)  # 80/32 floors to a 2x2 map


def test_reference_predict_and_memory_with_convnext(tiny_sam2, tiny_encoder, tiny_convnext, coco_mini, tmp_path):
    cfg = MethodConfig(points_per_side=4, encoder_size=64)
    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_convnext, config=cfg)
    ref = coco_mini / "train2017" / "000000000790.jpg"
    seg.add_reference(ref, box=(150, 80, 500, 380), category="thing")
    seg.add_reference(ref, points=[(320, 211, 1)], category="other")
    assert seg.memory.vectors.shape == (2, 32)
    img = sorted((coco_mini / "val2017").glob("*.jpg"))[0]
    dets = seg.predict(img)
    assert len(dets) > 0 and np.all(np.diff(dets.scores) <= 0)
    saved = seg.save_memory(tmp_path / "mem.safetensors")
    v2 = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=MethodConfig(points_per_side=4), memory=saved)
    with pytest.raises(MemoryMismatchError, match=r"dinov3_convnext.*dim 32.*current encoder is.*dinov2"):
        v2.encoder

    tiny_convnext.save_pretrained(tmp_path / "cnx")  # a Hugging Face directory gives the same reference vectors
    from_dir = ReferenceSegmenter(sam2=tiny_sam2, encoder=str(tmp_path / "cnx"), config=cfg)
    from_dir.add_reference(ref, box=(150, 80, 500, 380), category="thing")
    torch.testing.assert_close(from_dir.memory.vectors[0], seg.memory.vectors[0])


def test_truncated_convnext_file_names_the_missing_weight(tiny_convnext, tmp_path):
    meta = dinov3_convnext_hf_to_meta(tiny_convnext.state_dict())
    del meta["stages.3.0.gamma"]
    torch.save(meta, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"missing 1 weight\(s\): stages\.3\.0\.gamma"):
        load_encoder(tmp_path / "cut.pth")
    meta = dinov3_convnext_hf_to_meta(tiny_convnext.state_dict())
    meta["head.weight"] = torch.zeros(2)
    torch.save(meta, tmp_path / "head.pth")
    with pytest.raises(CheckpointError, match=r"DINOv3 ConvNeXt checkpoint has 1 key\(s\) that match no DINOv3 ConvNeXt weight: head\.weight"):
        load_encoder(tmp_path / "head.pth")
