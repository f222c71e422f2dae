"""The optimised prediction path against a plain reference path, and the opt-in fast modes on tiny models.

The reference path is written out plainly here: transformers' own mask decoder in one batch, pooling over the
materialised upsampled feature map (``mask_embeddings_dense``), greedy NMS and soft merging with per-box and
per-mask Python loops, and one interpolation per surviving mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from no_time_to_train import MethodConfig, ReferenceMemory, ReferenceSegmenter
from no_time_to_train.imageio import load_image
from no_time_to_train.matching import batched_nms, guided_points, mask_embeddings_dense, point_grid, soft_merge_decay
from no_time_to_train.models.sam2 import Sam2Segmenter
from no_time_to_train.predictor import Proposals
from no_time_to_train.transforms import resize_for_encoder, squash_for_sam


# -- plain reference implementations ---------------------------------------------------------------------
def plain_box(mask: torch.Tensor) -> list[float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if len(xs) == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def plain_iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float("nan")


def plain_nms(boxes: list[list[float]], scores: list[float], labels: list[int], threshold: float) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])  # Python's sort is stable
    keep: list[int] = []
    for i in order:
        if all(labels[i] != labels[k] or not plain_iou(boxes[i], boxes[k]) > threshold for k in keep):
            keep.append(i)
    return keep


def plain_soft_merge(masks: torch.Tensor, emb: torch.Tensor, labels: torch.Tensor, exponent: float) -> torch.Tensor:
    out = []
    for i in range(len(masks)):
        area = int(masks[i].sum())
        ios = 0.0
        for j in range(i):
            if labels[j] != labels[i] or area == 0:
                continue
            inter = int((masks[i] & masks[j]).sum())
            ios = max(ios, inter / area * max(0.0, float(emb[i] @ emb[j])))
        out.append(max(0.0, 1.0 - ios) ** exponent)
    return torch.tensor(out)


def plain_finish(logits, iou, tokens, prototypes, image_size, cfg: MethodConfig):
    """Scoring, NMS, upsampling, soft merging and top-k, one proposal / pair / mask at a time."""
    masks_lr = logits > cfg.mask_threshold
    emb = mask_embeddings_dense(masks_lr, tokens, cfg.encoder_size // 14)
    sim = (emb @ prototypes.T).clamp(min=0)
    scores, labels = sim.max(dim=1)
    boxes = [plain_box(m) for m in masks_lr]
    keep = plain_nms(boxes, iou.tolist(), labels.tolist(), cfg.nms_threshold)[: cfg.max_pre_merge]
    keep = [k for k in keep if scores[k] > 0]
    masks = torch.stack([F.interpolate(logits[k][None, None], size=image_size, mode="bilinear",
                                       align_corners=False)[0, 0] > cfg.mask_threshold for k in keep])
    decay = plain_soft_merge(masks, emb[keep], labels[keep], cfg.merge_exponent)
    final = scores[keep] * decay
    order = sorted(range(len(keep)), key=lambda i: -float(final[i]))[: cfg.max_detections]
    return masks[order], final[order], labels[keep][order]


def blob_proposals(n: int, size: int = 256, seed: int = 0) -> Proposals:
    """Elliptic blobs of varied size and place, as SAM2-like low-res logits, with random predicted IoUs."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = torch.rand(n, 2, generator=g) * size
    r = 3 + torch.rand(n, 2, generator=g) * 50
    d = ((xx - c[:, 0, None, None]) / r[:, 0, None, None]) ** 2 + ((yy - c[:, 1, None, None]) / r[:, 1, None, None]) ** 2
    return Proposals((1 - d) * 8, 0.4 + 0.6 * torch.rand(n, generator=g))


# -- fixtures (ref_items: conftest.py) -----------------------------------------------------------------------
@pytest.fixture
def seg(make_segmenter, ref_items):
    s = make_segmenter(points_per_side=6, iou_threshold=0.0)  # keep every proposal: more work for NMS/merging
    s.add_references(ref_items)
    return s


# -- the mask decoder ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("official_width", [False, True])
def test_shared_image_decoder_equals_transformers_decoder(tiny_sam2, official_width):
    """The shared-image decoder gives transformers' outputs (also at the official decoder width, 256)."""
    model = tiny_sam2
    if official_width:
        from transformers import Sam2Model

        from no_time_to_train.models.configs import sam2_config

        torch.manual_seed(3)
        model = Sam2Model(sam2_config("test-tiny")).eval()  # tiny trunk, official 256-wide neck and decoder
    fast, plain = Sam2Segmenter(model), Sam2Segmenter(model, shared_image_decoder=False)
    torch.manual_seed(0)
    emb = fast.encode(torch.rand(3, 1024, 1024))
    pts = point_grid(4)[:5, None]
    labels = torch.ones(5, 1, dtype=torch.int32)
    a_logits, a_iou = fast.decode(emb, pts, labels)
    b_logits, b_iou = plain.decode(emb, pts, labels)
    assert a_logits.shape == b_logits.shape == (5, 3, 256, 256) and a_iou.shape == (5, 3)
    assert (a_logits - b_logits).abs().max() <= 1e-5 and (a_iou - b_iou).abs().max() <= 1e-6
    # one prompt alone gives what it gives inside a batch
    one_logits, _ = fast.decode(emb, pts[2:3], labels[2:3])
    assert (one_logits[0] - a_logits[2]).abs().max() <= 1e-5


# -- the whole pipeline ----------------------------------------------------------------------------------------
def test_optimised_predict_equals_plain_reference_path(seg, coco_mini, tiny_sam2):
    path = sorted((coco_mini / "val2017").glob("*.jpg"))[3]
    dets = seg.predict(path)

    cfg = seg.config
    img = load_image(path)
    t_sam = squash_for_sam(img, cfg.sam_image_size)
    plain_sam = Sam2Segmenter(tiny_sam2, shared_image_decoder=False)
    emb = plain_sam.encode(t_sam)
    tokens = seg.encoder.patch_tokens(resize_for_encoder(t_sam, cfg.encoder_size)[None])[0]
    pts = point_grid(cfg.points_per_side, cfg.sam_image_size)
    logits, iou = plain_sam.decode(emb, pts[:, None], torch.ones(len(pts), 1, dtype=torch.int32))  # one batch
    best = iou.argmax(dim=1)
    logits, iou = logits[torch.arange(len(best)), best], iou[torch.arange(len(best)), best]
    keep = iou > cfg.iou_threshold
    masks, scores, labels = plain_finish(logits[keep], iou[keep], tokens, seg.memory.prototypes(), img.shape[:2], cfg)

    assert len(dets) == len(scores) > 0
    assert np.array_equal(dets.labels, labels.numpy())
    assert np.allclose(dets.scores, scores.numpy(), atol=1e-5)
    assert np.array_equal(dets.masks, masks.numpy())


def test_select_and_merge_equal_plain_reference_on_many_survivors():
    """Scoring/NMS/merging with hundreds of overlapping proposals of several classes (the costly case)."""
    torch.manual_seed(0)
    memory = ReferenceMemory()
    for name in ("a", "b", "c"):
        memory.add(torch.randn(16), 1.0, name)
    cfg = MethodConfig(max_detections=30, pre_merge_factor=4)  # cap 120 survivors: the cap is exercised too
    seg = ReferenceSegmenter(config=cfg, memory=memory)
    props = blob_proposals(220)
    tokens = torch.randn(37 * 37, 16)
    prototypes = memory.prototypes()
    cand = seg.select(props, tokens, prototypes)
    assert 80 < len(cand.scores) <= cfg.max_pre_merge  # many survivors (the cap, then scores <= 0 dropped)
    assert len(torch.unique(cand.labels)) == 3
    dets = seg.merge(cand, (120, 150))
    masks, scores, labels = plain_finish(props.logits, props.iou, tokens, prototypes, (120, 150), cfg)
    assert np.array_equal(dets.labels, labels.numpy())
    assert np.allclose(dets.scores, scores.numpy(), atol=1e-5)
    assert np.array_equal(dets.masks, masks.numpy())
    assert (dets.scores < scores.new_tensor(1.0).item()).any()  # the decay did act


def test_nms_equals_plain_greedy_nms():
    g = torch.Generator().manual_seed(1)
    n = 400
    xy = torch.randint(0, 200, (n, 2), generator=g).float()
    wh = torch.randint(0, 40, (n, 2), generator=g).float()  # includes zero-area boxes (never suppressed)
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.randint(0, 50, (n,), generator=g).float() / 50  # many ties: broken by index
    labels = torch.randint(0, 4, (n,), generator=g)
    keep = batched_nms(boxes, scores, labels, 0.5)
    ref = plain_nms(boxes.tolist(), scores.tolist(), labels.tolist(), 0.5)
    assert keep.tolist() == ref
    assert 0 < len(ref) < n


def test_soft_merge_equals_naive_per_mask_loop():
    g = torch.Generator().manual_seed(2)
    props = blob_proposals(60, size=64, seed=3)
    masks = F.interpolate(props.logits[:, None], size=(90, 70), mode="bilinear")[:, 0] > 0
    emb = F.normalize(torch.randn(60, 8, generator=g) + 1.0, dim=1)
    labels = torch.randint(0, 3, (60,), generator=g)
    masks[5] = False  # an empty mask keeps its score
    fast = soft_merge_decay(masks, emb, labels, 0.5)
    ref = plain_soft_merge(masks, emb, labels, 0.5)
    assert torch.allclose(fast, ref.float(), atol=1e-6)
    assert fast[5] == 1.0 and (fast < 1).sum() > 10


# -- decoder batch size ----------------------------------------------------------------------------------------
def test_auto_batch_is_default_and_paper_batch_is_reachable(make_segmenter, monkeypatch):
    from no_time_to_train.resources import CPU_BATCH_CAP, auto_point_batch_size

    assert MethodConfig().point_batch_size == "auto"
    seg = make_segmenter(points_per_side=20)  # 400 prompts
    assert 1 <= auto_point_batch_size(seg.sam2, torch.device("cpu")) <= CPU_BATCH_CAP
    sizes = []

    def spy(emb, points, labels, **kw):  # records the batches; no decoding needed
        sizes.append(len(points))
        return torch.zeros(len(points), 3, 256, 256), torch.zeros(len(points), 3)

    monkeypatch.setattr(seg.sam2, "decode", spy)
    emb, _ = seg.encode_target(np.zeros((40, 50, 3), np.uint8))
    seg.propose(emb)
    auto = sizes[0]
    assert sizes == [auto] * (400 // auto) + ([400 % auto] if 400 % auto else [])
    sizes.clear()
    seg.config = seg.config.replace(point_batch_size=256)  # the paper's value
    seg.propose(emb)
    assert sizes == [256, 144]


# -- fast modes --------------------------------------------------------------------------------------------------
def test_guided_points_sit_on_the_most_similar_patches():
    tokens = torch.zeros(4 * 4, 2)
    tokens[:, 1] = 1.0
    tokens[5] = torch.tensor([1.0, 0.0])  # row 1, col 1: the only patch like the prototype
    tokens[14] = torch.tensor([1.0, 0.2])  # row 3, col 2: the second best
    pts = guided_points(tokens, torch.tensor([[1.0, 0.0]]), 2, image_size=1024)
    assert pts.tolist() == [[384.0, 384.0], [640.0, 896.0]]  # (x, y) patch centres, row-major order
    assert guided_points(tokens, torch.tensor([[1.0, 0.0]]), 100).shape == (16, 2)


@pytest.mark.parametrize(
    "kwargs, overrides",
    [
        (dict(autocast="bf16"), {}),
        (dict(attn_implementation="eager"), {}),
        (dict(attn_implementation="sdpa"), {}),
        (dict(compile={"backend": "eager"}), {}),
        ({}, dict(prompt_mode="guided", guided_points=12)),
        ({}, dict(points_per_side=3, point_batch_size=1024)),
    ],
    ids=["bf16", "eager", "sdpa", "compile", "guided", "pps3-batch1024"],
)
def test_fast_modes_run_on_tiny_models(kwargs, overrides, ref_items, coco_mini):
    from transformers import Dinov2Model, Sam2Model

    from no_time_to_train.models.configs import dinov2_config, sam2_test_config

    torch.manual_seed(0)  # own models: modes such as the attention implementation change them
    sam2, encoder = Sam2Model(sam2_test_config()).eval(), Dinov2Model(dinov2_config("test-tiny")).eval()
    seg = ReferenceSegmenter(sam2=sam2, encoder=encoder, config=MethodConfig(**{"points_per_side": 4, **overrides}), **kwargs)
    seg.add_references(ref_items[:2])
    path = sorted((coco_mini / "val2017").glob("*.jpg"))[0]
    dets = seg.predict(path)
    h, w = load_image(path).shape[:2]
    assert dets.masks.shape[1:] == (h, w) and len(dets) > 0
    assert np.isfinite(dets.scores).all() and np.all(np.diff(dets.scores) <= 0)
    if "guided" in overrides.values():
        prompts = seg.prompt_points(seg.encode_target(load_image(path))[1], seg.memory.prototypes())
        assert prompts.shape == (12, 2)


def test_fp32_modes_keep_the_faithful_outputs(make_segmenter, ref_items, coco_mini, tiny_sam2, tiny_encoder):
    """Attention backend and decoder batch do not change fp32 results beyond float rounding."""
    seg = make_segmenter(iou_threshold=0.0)  # keep every proposal
    seg.add_references(ref_items)
    path = sorted((coco_mini / "val2017").glob("*.jpg"))[1]
    a = seg.predict(path)
    other = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, memory=seg.memory,
                               config=seg.config.replace(point_batch_size=5), attn_implementation="eager")
    try:
        b = other.predict(path)
    finally:
        for m in (tiny_sam2, tiny_encoder):
            m.set_attn_implementation("sdpa")
    assert np.array_equal(a.labels, b.labels) and np.allclose(a.scores, b.scores, atol=1e-5)
    assert np.mean([np.logical_xor(x, y).mean() for x, y in zip(a.masks, b.masks)]) < 1e-3


def test_models_from_the_same_source_are_loaded_once(tmp_path, tiny_sam2, tiny_encoder):
    tiny_sam2.save_pretrained(tmp_path / "sam2")
    tiny_encoder.save_pretrained(tmp_path / "dino")
    a = ReferenceSegmenter(sam2=tmp_path / "sam2", encoder=tmp_path / "dino")
    b = ReferenceSegmenter(sam2=str(tmp_path / "sam2"), encoder=tmp_path / "dino")
    assert a.sam2.model is b.sam2.model and a.encoder.model is b.encoder.model
    c = ReferenceSegmenter(sam2=tmp_path / "sam2", dtype="bfloat16")
    assert c.sam2.model is not a.sam2.model and c.sam2.dtype == torch.bfloat16
