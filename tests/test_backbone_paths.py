"""The newer backbones through the user's whole path, from Meta-format files: ``nttt fill-memory`` (masks from
annotations), ``nttt evaluate``, and the app's session clicking a reference. (References from boxes and clicks and
``predict`` are covered per family in test_proposers.py, test_sam3.py, test_dinov3.py, test_dinov3_convnext.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import DINOv3ConvNextModel, Sam3TrackerModel

from no_time_to_train import MethodConfig, ReferenceSegmenter
from no_time_to_train.app.session import POSITIVE, Workspace
from no_time_to_train.cli import main
from no_time_to_train.imageio import load_image
from no_time_to_train.memory import ReferenceMemory
from no_time_to_train.models.configs import dinov3_convnext_config, sam3_tracker_test_config
from no_time_to_train.models.dinov2_keys import dinov2_hf_to_meta
from no_time_to_train.models.dinov3_convnext_keys import dinov3_convnext_hf_to_meta
from no_time_to_train.models.sam2_keys import sam2_hf_to_meta
from no_time_to_train.models.sam3_keys import sam3_hf_to_meta

CATS = "person,dog"


def _sam3() -> Sam3TrackerModel:
    torch.manual_seed(0)
    model = Sam3TrackerModel(sam3_tracker_test_config()).eval()
    with torch.no_grad():
        model.shared_image_embedding.positional_embedding.copy_(model.prompt_encoder.shared_embedding.positional_embedding)
        model.mask_decoder.iou_prediction_head.proj_out.bias.add_(3.0)  # proposals pass the 0.4 IoU filter
    return model


def _sam2_file(tiny_sam2, path):
    """The (session-wide, not to be changed) tiny SAM2 as Meta's file: one prompt positional encoding."""
    sd = dict(tiny_sam2.state_dict())
    sd["shared_image_embedding.positional_embedding"] = sd["prompt_encoder.shared_embedding.positional_embedding"]
    torch.save({"model": sam2_hf_to_meta(sd)}, path)
    return path


@pytest.mark.parametrize("family", ["sam3", "dinov3_convnext"])
def test_meta_files_through_fill_memory_evaluate_and_the_app(family, tiny_sam2, tiny_encoder, coco_mini, tmp_path):
    if family == "sam3":
        proposer = _sam3()
        torch.save({"model": sam3_hf_to_meta(proposer.state_dict(), proposer.config)}, tmp_path / "sam3.pt")
        torch.save(dinov2_hf_to_meta(tiny_encoder.state_dict()), tmp_path / "dinov2.pth")
        models = ["--proposer", str(tmp_path / "sam3.pt"), "--encoder", str(tmp_path / "dinov2.pth"),
                  "--sam-image-size", "1008"]
        seg = ReferenceSegmenter(sam2=proposer, encoder=tiny_encoder,
                                 config=MethodConfig(points_per_side=4, sam_image_size=1008))
    else:
        torch.manual_seed(5)
        encoder = DINOv3ConvNextModel(dinov3_convnext_config("test-tiny")).eval()
        torch.save(dinov3_convnext_hf_to_meta(encoder.state_dict()), tmp_path / "dinov3_convnext_t.pth")
        models = ["--proposer", str(_sam2_file(tiny_sam2, tmp_path / "sam2.pt")), "--encoder",
                  str(tmp_path / "dinov3_convnext_t.pth"), "--encoder-size", "64"]
        seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=encoder, config=MethodConfig(points_per_side=4,
                                                                                     encoder_size=64))
    fast = ["--points-per-side", "4", "--device", "cpu", "--quiet"]
    ann = coco_mini / "annotations" / "instances_train2017.json"
    assert main(["sample", "--annotations", str(ann), "--categories", CATS, "--shots", "1", "--seed", "33",
                 "-o", str(tmp_path / "refs.json")]) == 0
    assert main(["fill-memory", str(tmp_path / "refs.json"), "--annotations", str(ann), "--images",
                 str(coco_mini / "train2017"), "-o", str(tmp_path / "mem.safetensors"), *models, *fast]) == 0
    memory = ReferenceMemory.load(tmp_path / "mem.safetensors")
    assert len(memory) == 2
    assert memory.encoder["model_type"] == ("dinov2" if family == "sam3" else "dinov3_convnext")
    assert main(["evaluate", "--memory", str(tmp_path / "mem.safetensors"), "--annotations",
                 str(coco_mini / "annotations" / "instances_val2017.json"), "--images", str(coco_mini / "val2017"),
                 "--categories", CATS, "--max-images", "1", "-o", str(tmp_path / "eval"), *models, *fast]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics) >= {"bbox", "segm"}

    ws = Workspace(seg, workdir=tmp_path / "work")  # the app's session: a click makes the proposer's mask
    ref = coco_mini / "train2017" / "000000000790.jpg"
    draft = ws.new_draft(str(ref))
    ws.click(draft, 320, 211, POSITIVE)
    assert draft.mask is not None and draft.mask.any()
    assert np.array_equal(draft.mask, seg.reference_mask(load_image(ref), points=[(320, 211, 1)]))
