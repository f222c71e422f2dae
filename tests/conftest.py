"""Shared fixtures: tiny randomly-initialised SAM2 and DINOv2 models, the coco-mini data, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NTTT_RUNTIME", "torch")  # "auto" means torch in the tests; tests/test_export.py tests the others

COCO_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco-mini"


@pytest.fixture(scope="session")
def coco_mini() -> Path:
    if not COCO_MINI.is_dir():
        pytest.fail(f"coco-mini not found at {COCO_MINI}; the repository expects ../shared beside it")
    return COCO_MINI


@pytest.fixture(scope="session")
def tiny_sam2():
    from transformers import Sam2Model

    from no_time_to_train.models.configs import sam2_test_config

    torch.manual_seed(0)
    return Sam2Model(sam2_test_config()).eval()


@pytest.fixture(scope="session")
def tiny_encoder():
    from transformers import Dinov2Model

    from no_time_to_train.models.configs import dinov2_config

    torch.manual_seed(1)
    return Dinov2Model(dinov2_config("test-tiny")).eval()


@pytest.fixture
def make_segmenter(tiny_sam2, tiny_encoder):
    """Factory for a ReferenceSegmenter on the tiny models with a small prompt grid (fast on CPU)."""
    from no_time_to_train import MethodConfig, ReferenceSegmenter

    def make(**overrides):
        cfg = MethodConfig(**{"points_per_side": 4, **overrides})
        return ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=cfg)

    return make


@pytest.fixture(scope="session")
def models(tmp_path_factory, tiny_sam2, tiny_encoder):
    """The tiny models saved as Hugging Face directories, as CLI arguments ``--sam2 DIR --encoder DIR``."""
    d = tmp_path_factory.mktemp("models")
    tiny_sam2.save_pretrained(d / "sam2")
    tiny_encoder.save_pretrained(d / "dino")
    return ["--sam2", str(d / "sam2"), "--encoder", str(d / "dino")]


@pytest.fixture
def offline_empty_cache(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1 and an empty Hugging Face cache (tmp_path/hub)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ref_items(coco_mini):
    """One coco-mini train annotation each of dog, person and car, as ``add_reference`` keyword dicts."""
    from pycocotools.coco import COCO

    coco = COCO(str(coco_mini / "annotations" / "instances_train2017.json"))
    items = []
    for cat_id, name in [(18, "dog"), (1, "person"), (3, "car")]:
        ann = coco.loadAnns(coco.getAnnIds(catIds=[cat_id], iscrowd=False))[0]
        info = coco.loadImgs(ann["image_id"])[0]
        items.append(dict(image=coco_mini / "train2017" / info["file_name"], mask=coco.annToMask(ann).astype(bool),
                          category=name, category_id=cat_id))
    return items
