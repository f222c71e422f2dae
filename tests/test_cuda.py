"""The pipeline on a CUDA GPU (skipped without one; CI has none): same detections as on the CPU, and the
lower-precision modes really run in lower precision.

Run on a GPU machine with ``pytest tests/test_cuda.py``; ``NTTT_PARITY_DEVICE=cuda pytest tests/test_parity.py``
runs the parity test against the authors' outputs on the GPU too.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from no_time_to_train.agreement import compare_runs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VAL_IMAGES = ("000000000139.jpg", "000000022892.jpg")


def _segmenter(tiny_sam2, tiny_encoder, ref_items, device, **kwargs):
    from no_time_to_train import MethodConfig, ReferenceSegmenter

    seg = ReferenceSegmenter(sam2=copy.deepcopy(tiny_sam2), encoder=copy.deepcopy(tiny_encoder), device=device,
                             config=MethodConfig(points_per_side=8), **kwargs)
    for item in ref_items:
        seg.add_reference(**item)
    return seg


def _run(seg, coco_mini) -> list[list[dict]]:
    return [seg.predict(coco_mini / "val2017" / name).to_coco(i) for i, name in enumerate(VAL_IMAGES)]


def test_tiny_models_agree_with_the_cpu(tiny_sam2, tiny_encoder):
    sam_cpu, sam_gpu = copy.deepcopy(tiny_sam2), copy.deepcopy(tiny_sam2).cuda()
    enc_cpu, enc_gpu = copy.deepcopy(tiny_encoder), copy.deepcopy(tiny_encoder).cuda()
    g = torch.Generator().manual_seed(0)
    size = sam_cpu.config.vision_config.backbone_config.image_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    x = torch.rand(1, 3, size, size, generator=g)
    with torch.inference_mode():
        a = sam_cpu.get_image_embeddings(x)[-1]
        b = sam_gpu.get_image_embeddings(x.cuda())[-1].cpu()
        assert (a - b).abs().max().item() <= 1e-3 * max(1.0, a.abs().max().item())
        y = torch.rand(1, 3, 56, 56, generator=g)
        ta = enc_cpu(pixel_values=y).last_hidden_state
        tb = enc_gpu(pixel_values=y.cuda()).last_hidden_state.cpu()
        assert (ta - tb).abs().max().item() <= 1e-3 * max(1.0, ta.abs().max().item())


def test_predict_on_cuda_matches_the_cpu(tiny_sam2, tiny_encoder, ref_items, coco_mini):
    cpu = _run(_segmenter(tiny_sam2, tiny_encoder, ref_items, "cpu", runtime="torch"), coco_mini)
    gpu = _run(_segmenter(tiny_sam2, tiny_encoder, ref_items, "cuda", runtime="torch"), coco_mini)
    assert sum(map(len, cpu)) > 0
    agreement = compare_runs(cpu, gpu, score_tolerance=1e-3, min_iou=0.95)
    print("cpu vs cuda:", agreement)
    assert agreement["matched_fraction"] >= 0.95, agreement


@pytest.mark.parametrize("autocast", ["bf16", "fp16"])
def test_autocast_runs_the_networks_in_low_precision(tiny_sam2, tiny_encoder, ref_items, coco_mini, autocast):
    seg = _segmenter(tiny_sam2, tiny_encoder, ref_items, "cuda", runtime="torch", autocast=autocast)
    seen: set[torch.dtype] = set()
    linear = next(m for m in seg.encoder.model.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    try:
        dets = seg.predict(coco_mini / "val2017" / VAL_IMAGES[0])
    finally:
        handle.remove()
    want = torch.bfloat16 if autocast == "bf16" else torch.float16
    assert seen == {want}, seen
    assert len(dets.scores) == len(dets.masks) and np.all(np.isfinite(np.asarray(dets.scores)))
    fp32 = _run(_segmenter(tiny_sam2, tiny_encoder, ref_items, "cuda", runtime="torch"), coco_mini)[:1]
    low = [dets.to_coco(0)]
    print(f"{autocast} vs fp32 on cuda:", compare_runs(fp32, low, score_tolerance=0.02, min_iou=0.9))
