"""DINOv3 ViT patch encoder: patch 16, RoPE, 4 register tokens; patch tokens after the final norm only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..transforms import IMAGENET_MEAN, IMAGENET_STD
from .encoder import PatchEncoder, register

log = logging.getLogger(__name__)

#: Input statistics of the SAT-493M (satellite) release; LVD-1689M uses ImageNet's, like DINOv2.
SAT493M_MEAN = (0.430, 0.411, 0.296)
SAT493M_STD = (0.213, 0.156, 0.143)


@register("dinov3_vit")
class Dinov3Encoder(PatchEncoder):
    """Wraps a transformers ``DINOv3ViTModel``. RoPE positions adapt to any input side that is a multiple of
    16; ``encoder_size="auto"`` gives 592 px (the paper's 37x37 grid). Input statistics: those of the
    ``preprocessor_config.json`` beside the weights (a Hugging Face directory), else the SAT-493M release's
    when the source's name says ``sat493m``, else ImageNet's."""

    family = "DINOv3"

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.mean, self.std = input_statistics(str(getattr(model.config, "_name_or_path", "") or ""))

    @staticmethod
    def _identity_key(key: str) -> bool:
        return "patch_embeddings" in key or key.startswith("norm.")


def input_statistics(source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of the RGB input in [0, 1] for DINOv3 weights loaded from ``source`` (a path or hub id)."""
    config = Path(source) / "preprocessor_config.json" if source else None
    if config is not None and config.is_file():
        try:
            data = json.loads(config.read_text())
            mean, std = tuple(float(v) for v in data["image_mean"]), tuple(float(v) for v in data["image_std"])
            if len(mean) == len(std) == 3:
                return mean, std
        except (OSError, ValueError, KeyError, TypeError):
            pass
        log.warning("%s has no usable image_mean/image_std; using the default statistics", config)
    if "sat493m" in source.lower():
        return SAT493M_MEAN, SAT493M_STD
    return IMAGENET_MEAN, IMAGENET_STD
