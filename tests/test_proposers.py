"""The proposer role: SAM2, the SAM 3 tracker, SAM and SAM-HQ behind one interface (models/proposer.py,
models/sam.py), their loading (Hugging Face directories, Meta files), and the whole path (references, predict, CLI,
app) on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import Sam3TrackerModel, SamHQModel, SamModel

from no_time_to_train import MethodConfig, ReferenceMemory, ReferenceSegmenter
from no_time_to_train.cli import main
from no_time_to_train.errors import CheckpointError, InputError
from no_time_to_train.imageio import load_image
from no_time_to_train.models.checkpoints import load_proposer, load_sam2
from no_time_to_train.models.configs import SAM_VARIANTS, sam3_tracker_test_config, sam_config, sam_test_config
from no_time_to_train.models.proposer import Proposer, make_proposer
from no_time_to_train.models.sam import SamHQProposer, SamProposer
from no_time_to_train.models.sam2 import Sam2Segmenter, Sam3TrackerProposer
from no_time_to_train.models.sam_keys import sam_hf_to_meta, sam_meta_to_hf
from no_time_to_train.prompts import mask_from_prompt

FAMILIES = ["sam", "sam_hq"]
META_MEAN_255 = (123.675, 116.28, 103.53)  # Meta's SAM pixel_mean / pixel_std, 0-255 units
META_STD_255 = (58.395, 57.12, 57.375)


def _tiny(family: str, seed: int = 0):
    torch.manual_seed(seed)
    cls = SamHQModel if family == "sam_hq" else SamModel
    model = cls(sam_test_config(hq=family == "sam_hq")).eval()
    with torch.no_grad():  # random IoU predictions sit near 0: lift them so that proposals pass the 0.4 filter
        model.mask_decoder.iou_prediction_head.proj_out.bias.add_(1.0)
    return model


@pytest.fixture(scope="module", params=FAMILIES)
def tiny_sam(request):
    return request.param, _tiny(request.param)


@pytest.fixture(scope="module")
def ref_image(coco_mini):
    return load_image(coco_mini / "train2017" / "000000000790.jpg")


# ----------------------------------------------------------------------------------------------------- interface
def test_make_proposer_picks_the_family(tiny_sam2, tiny_sam, tiny_encoder):
    family, model = tiny_sam
    assert type(make_proposer(tiny_sam2)) is Sam2Segmenter
    proposer = make_proposer(model)
    assert type(proposer) is {"sam": SamProposer, "sam_hq": SamHQProposer}[family]
    assert isinstance(proposer, Proposer) and proposer.image_size == 1024 and proposer.decoder_width == 32
    assert proposer.describe()["model_type"] == family
    with pytest.raises(CheckpointError, match="Dinov2Model.*cannot propose masks"):
        make_proposer(tiny_encoder)


def test_normalisation_is_metas_pixel_mean_and_std(tiny_sam):
    proposer = make_proposer(tiny_sam[1])
    image = torch.rand(3, 1024, 1024)
    meta = (image * 255 - torch.tensor(META_MEAN_255).view(3, 1, 1)) / torch.tensor(META_STD_255).view(3, 1, 1)
    torch.testing.assert_close(proposer.pixels(image)[0], meta, rtol=0, atol=1e-5)


def test_sam_decode_equals_the_model_forward():
    model = _tiny("sam")
    proposer = make_proposer(model)
    image = torch.rand(3, 1024, 1024)
    points = torch.tensor([[[100.0, 200.0]], [[700.0, 50.0]], [[512.0, 512.0]]])
    labels = torch.ones(3, 1, dtype=torch.int32)
    emb = proposer.encode(image)
    logits, iou = proposer.decode(emb, points, labels)
    with torch.inference_mode():
        out = model(pixel_values=proposer.pixels(image), input_points=points[None], input_labels=labels[None])
    assert logits.shape == (3, 3, 256, 256) and iou.shape == (3, 3)
    torch.testing.assert_close(logits, out.pred_masks[0])
    torch.testing.assert_close(iou, out.iou_scores[0])
    box = torch.tensor([[100.0, 150.0, 600.0, 700.0]])
    single, single_iou = proposer.decode(emb, boxes=box, multimask=False)
    with torch.inference_mode():
        out = model(image_embeddings=emb.embedding, input_boxes=box[None], multimask_output=False)
    assert single.shape == (1, 1, 256, 256)
    torch.testing.assert_close(single, out.pred_masks[0])
    torch.testing.assert_close(single_iou, out.iou_scores[0])


def test_sam_hq_tokens_come_back_in_token_order():
    """Hand-made decoder: SAM tokens 1 and 3 draw nothing, token 2 draws; IoUs 0.9, 0.1, 0.5 (transformers would
    sort them to tokens 1, 3, 2). Tokens 1 and 3 must then be the HQ mask alone, token 2 differ, in place 2."""
    model = _tiny("sam_hq")
    dec = model.mask_decoder
    with torch.no_grad():
        for k in (1, 3):
            dec.output_hypernetworks_mlps[k].proj_out.weight.zero_()
            dec.output_hypernetworks_mlps[k].proj_out.bias.zero_()
        dec.iou_prediction_head.proj_out.weight.zero_()
        dec.iou_prediction_head.proj_out.bias.copy_(torch.tensor([0.3, 0.9, 0.1, 0.5]))
    proposer = make_proposer(model)
    emb = proposer.encode(torch.rand(3, 1024, 1024))
    points = torch.tensor([[[300.0, 400.0]], [[800.0, 100.0]]])
    logits, iou = proposer.decode(emb, points, torch.ones(2, 1))
    assert torch.equal(iou, torch.tensor([[0.9, 0.1, 0.5]] * 2))
    assert torch.equal(logits[:, 0], logits[:, 2])  # tokens 1 and 3: the HQ mask alone
    assert not torch.allclose(logits[:, 1], logits[:, 0])  # token 2: SAM's mask + the HQ mask
    # the same numbers as transformers' decoder, which returns them sorted by predicted IoU
    sparse, dense = proposer.prompt_embeddings(points, torch.ones(2, 1), None)
    with torch.inference_mode():
        ref, ref_iou = dec(emb.embedding, model.get_image_wide_positional_embeddings(), sparse, dense,
                           multimask_output=True, hq_token_only=False, intermediate_embeddings=[emb.vit_features])
    torch.testing.assert_close(logits[:, [0, 2, 1]], ref[0])
    torch.testing.assert_close(iou[:, [0, 2, 1]], ref_iou[0])


def test_sam_hq_single_mask_is_token_0_plus_hq():
    model = _tiny("sam_hq", seed=3)
    proposer = make_proposer(model)
    emb = proposer.encode(torch.rand(3, 1024, 1024))
    box = torch.tensor([[50.0, 60.0, 500.0, 900.0]])
    single, iou = proposer.decode(emb, boxes=box, multimask=False)
    with torch.inference_mode():
        out = model(image_embeddings=emb.embedding, intermediate_embeddings=[emb.vit_features],
                    input_boxes=box[None], multimask_output=False)
    assert single.shape == (1, 1, 256, 256) and iou.shape == (1, 1)
    torch.testing.assert_close(single, out.pred_masks[0])
    torch.testing.assert_close(iou, out.iou_scores[0])


def _segmenter(model, tiny_encoder, **overrides):
    return ReferenceSegmenter(sam2=model, encoder=tiny_encoder, config=MethodConfig(points_per_side=4, **overrides))


def _tiny_sam3(seed: int = 0):
    torch.manual_seed(seed)
    model = Sam3TrackerModel(sam3_tracker_test_config()).eval()
    with torch.no_grad():  # as _tiny: proposals should pass the 0.4 IoU filter (the head ends in a sigmoid)
        model.mask_decoder.iou_prediction_head.proj_out.bias.add_(3.0)
    return model


def test_sam3_tracker_shared_decoder_equals_the_models_own():
    """SAM 3 tracker: SAM2's layout, so the shared-image decoder applies; it equals the model's own forward."""
    model = _tiny_sam3()
    fast = make_proposer(model)
    plain = Sam3TrackerProposer(model, shared_image_decoder=False)
    assert type(fast) is Sam3TrackerProposer and fast.image_size == 1008 and fast.shared_image_decoder
    image = torch.rand(3, 1008, 1008)
    points = torch.tensor([[[100.0, 200.0]], [[900.0, 40.0]], [[504.0, 504.0]]])
    labels = torch.ones(3, 1, dtype=torch.int32)
    emb = fast.encode(image, add_no_memory_embedding=True)  # transformers' forward adds it
    a_logits, a_iou = fast.decode(emb, points, labels)
    b_logits, b_iou = plain.decode(emb, points, labels)
    with torch.inference_mode():
        out = model(pixel_values=fast.pixels(image), input_points=points[None], input_labels=labels[None])
    assert a_logits.shape == (3, 3, 288, 288) and a_iou.shape == (3, 3)
    torch.testing.assert_close(a_logits, b_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(a_iou, b_iou, rtol=0, atol=1e-6)
    torch.testing.assert_close(b_logits, out.pred_masks[0])
    torch.testing.assert_close(b_iou, out.iou_scores[0])


def test_sam3_tracker_normalises_with_its_processors_statistics():
    proposer = make_proposer(_tiny_sam3())
    image = torch.rand(3, 1008, 1008)
    torch.testing.assert_close(proposer.pixels(image)[0], (image - 0.5) / 0.5)


def test_sam3_tracker_whole_path_needs_its_frame_size(tiny_encoder, coco_mini, tmp_path):
    model = _tiny_sam3()
    with pytest.raises(InputError, match="SAM 3 tracker proposer takes 1008² images.*set sam_image_size=1008"):
        _segmenter(model, tiny_encoder).proposer
    seg = _segmenter(model, tiny_encoder, sam_image_size=1008)
    ref = coco_mini / "train2017" / "000000000790.jpg"
    seg.add_reference(ref, box=(150, 80, 500, 380), category="thing")
    seg.add_reference(ref, points=[(320, 211, 1)], category="other")
    det = seg.predict(coco_mini / "val2017" / "000000000139.jpg")
    assert len(det.scores) > 0 and det.masks.shape[1:] == (426, 640)
    model.save_pretrained(tmp_path / "sam3")
    assert type(load_proposer(tmp_path / "sam3")) is Sam3TrackerModel


# ----------------------------------------------------------------------------------------------------- whole path
def test_references_from_mask_box_and_click_then_predict(tiny_sam, tiny_encoder, ref_image, coco_mini):
    family, model = tiny_sam
    seg = _segmenter(model, tiny_encoder)
    h, w = ref_image.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[100:300, 200:400] = True
    seg.add_reference(ref_image, mask, category="thing")
    seg.add_reference(ref_image, box=(150, 80, 500, 380), category="thing")
    seg.add_reference(ref_image, points=[(320, 211, 1)], category="other")
    assert isinstance(seg.proposer, SamProposer if family == "sam" else SamHQProposer)
    assert seg.sam2 is seg.proposer
    rows = seg.memory.references
    assert [r.get("prompt") for r in rows] == [None, "box", "points"]
    _, box_iou = mask_from_prompt(seg.proposer, ref_image, box=(150, 80, 500, 380))
    assert rows[1]["sam2_iou"] == round(box_iou, 4)
    assert seg.memory.category_names == ["thing", "other"]
    det = seg.predict(coco_mini / "val2017" / "000000000139.jpg")
    target = load_image(coco_mini / "val2017" / "000000000139.jpg")
    assert det.masks.shape[1:] == target.shape[:2] and len(det.masks) == len(det.scores) > 0
    assert set(det.labels.tolist()) <= {0, 1}


def test_predict_uses_the_proposers_decoder(tiny_sam, tiny_encoder, coco_mini, monkeypatch):
    """predict() sends every grid point through the proposer's decode (no SAM2 specifics on the way)."""
    seg = _segmenter(tiny_sam[1], tiny_encoder)
    h, w = 422, 640
    mask = np.zeros((h, w), bool)
    mask[100:300, 200:400] = True
    seg.add_reference(coco_mini / "train2017" / "000000000790.jpg", mask, category="thing")
    calls = []
    decode = seg.proposer.decode

    def counting(emb, points=None, labels=None, boxes=None, multimask=True):
        calls.append(len(points))
        return decode(emb, points, labels, boxes, multimask)

    monkeypatch.setattr(seg.proposer, "decode", counting)
    seg.predict(coco_mini / "val2017" / "000000000139.jpg")
    assert sum(calls) == 16


def test_image_size_mismatch_is_one_clear_error(tiny_encoder):
    seg = _segmenter(_tiny("sam"), tiny_encoder, sam_image_size=512)
    with pytest.raises(InputError, match="SAM proposer takes 1024² images.*sam_image_size is 512"):
        seg.proposer


def test_app_session_clicks_with_sam_hq(tiny_encoder, coco_mini, tmp_path):
    from no_time_to_train.app.session import POSITIVE, Workspace

    ws = Workspace(_segmenter(_tiny("sam_hq"), tiny_encoder), workdir=tmp_path / "work")
    ref = coco_mini / "train2017" / "000000000790.jpg"
    draft = ws.new_draft(str(ref))
    ws.click(draft, 320, 211, POSITIVE)
    assert draft.mask is not None and draft.mask.any()
    assert np.array_equal(draft.mask, ws.seg.reference_mask(load_image(ref), points=[(320, 211, 1)]))


# ----------------------------------------------------------------------------------------------------- loading
def test_hf_directories_load_as_proposers(tmp_path, tiny_sam, tiny_encoder):
    family, model = tiny_sam
    model.save_pretrained(tmp_path / family)
    loaded = load_proposer(tmp_path / family)
    assert type(loaded) is type(model)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    with pytest.raises(CheckpointError, match=f"{family}.*not SAM2"):
        load_sam2(tmp_path / family)
    tiny_encoder.save_pretrained(tmp_path / "dino")
    with pytest.raises(CheckpointError, match="dinov2.*not SAM2/SAM/SAM-HQ"):
        load_proposer(tmp_path / "dino")


@pytest.mark.parametrize("variant", ["test-tiny", *SAM_VARIANTS])
@pytest.mark.parametrize("hq", [False, True])
def test_meta_keys_and_architecture_of_every_official_size(variant, hq):
    """Renamed to Meta's names and back, every SAM / SAM-HQ size gives the same keys and the same config."""
    config = sam_test_config(hq) if variant == "test-tiny" else sam_config(variant, hq)
    with torch.device("meta"):
        model = (SamHQModel if hq else SamModel)(config)
    meta = sam_hf_to_meta(model.state_dict())
    assert ("mask_decoder.hf_token.weight" in meta) == hq and "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in meta
    inferred, hf = sam_meta_to_hf(meta)
    assert type(inferred) is type(config) and set(hf) == set(model.state_dict())
    for part in ("vision_config", "prompt_encoder_config", "mask_decoder_config"):
        want, got = getattr(config, part).to_dict(), getattr(inferred, part).to_dict()
        assert {k: v for k, v in got.items() if k in want} == want, part


def test_meta_file_round_trip(tmp_path, tiny_sam):
    """A tiny model written in Meta's layout (the inverse key map) loads back equal, with equal outputs."""
    family, model = tiny_sam
    path = tmp_path / ("sam_hq_vit_tiny.pth" if family == "sam_hq" else "sam_vit_tiny.pth")
    torch.save(sam_hf_to_meta(model.state_dict()), path)
    loaded = load_proposer(path)
    assert type(loaded) is type(model)
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    a, b = make_proposer(model), make_proposer(loaded)
    image, points = torch.rand(3, 1024, 1024), torch.tensor([[[200.0, 300.0]]])
    out_a = a.decode(a.encode(image), points, torch.ones(1, 1))
    out_b = b.decode(b.encode(image), points, torch.ones(1, 1))
    assert torch.equal(out_a[0], out_b[0]) and torch.equal(out_a[1], out_b[1])


def test_meta_file_errors_name_the_problem(tmp_path, tiny_sam):
    family, model = tiny_sam
    meta = sam_hf_to_meta(model.state_dict())
    path = tmp_path / "sam_vit_l.pth"
    torch.save(meta, path)
    with pytest.raises(CheckpointError, match="not a SAM2 checkpoint.*Meta SAM"):
        load_sam2(path)
    missing = dict(meta)
    del missing["mask_decoder.iou_token.weight"]
    torch.save(missing, path)
    with pytest.raises(CheckpointError, match="required key 'mask_decoder.iou_token.weight' is missing"):
        load_proposer(path)
    missing = dict(meta)
    del missing["image_encoder.neck.1.bias"]
    torch.save(missing, path)
    with pytest.raises(CheckpointError, match="missing 1 weight.*image_encoder.neck.1.bias"):
        load_proposer(path)
    torch.save({**meta, "mask_decoder.extra.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="match no SAM weight: mask_decoder.extra.weight"):
        load_proposer(path)
    torch.save({"cls_token": torch.zeros(1, 1, 8), "patch_embed.proj.weight": torch.zeros(8, 3, 14, 14),
                "blocks.0.attn.qkv.weight": torch.zeros(24, 8)}, path)
    with pytest.raises(CheckpointError, match="not a SAM2 checkpoint: it looks like a Meta DINOv2 checkpoint"):
        load_proposer(path)


def test_cli_fill_memory_from_boxes_and_evaluate_with_a_sam_directory(coco_mini, tmp_path, tiny_encoder):
    _tiny("sam").save_pretrained(tmp_path / "sam")
    tiny_encoder.save_pretrained(tmp_path / "dino")
    models = ["--proposer", str(tmp_path / "sam"), "--encoder", str(tmp_path / "dino")]
    fast = ["--points-per-side", "4", "--device", "cpu", "--quiet"]
    ann = coco_mini / "annotations" / "instances_train2017.json"
    cats = "person,dog"
    assert main(["sample", "--annotations", str(ann), "--categories", cats, "--shots", "1", "--seed", "33",
                 "-o", str(tmp_path / "refs.json")]) == 0
    assert main(["fill-memory", str(tmp_path / "refs.json"), "--annotations", str(ann), "--images",
                 str(coco_mini / "train2017"), "-o", str(tmp_path / "mem.safetensors"), "--reference-masks",
                 "from-boxes", *models, *fast]) == 0
    assert main(["evaluate", "--memory", str(tmp_path / "mem.safetensors"), "--annotations",
                 str(coco_mini / "annotations" / "instances_val2017.json"), "--images", str(coco_mini / "val2017"),
                 "--categories", cats, "--max-images", "2", "-o", str(tmp_path / "eval"), *models, *fast]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert len(metrics["segm"]["per_category"]) == 2
    mem = ReferenceMemory.load(tmp_path / "mem.safetensors")
    assert len(mem) == 2 and all(r["prompt"] == "box" for r in mem.references)
