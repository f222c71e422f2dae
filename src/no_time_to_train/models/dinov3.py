"""DINOv3 ViT patch encoder: patch 16, RoPE, 4 register tokens; patch tokens after the final norm only."""

from __future__ import annotations

import torch

from .encoder import PatchEncoder, register

#: Input statistics of the SAT-493M (satellite) release; LVD-1689M uses ImageNet's, like DINOv2.
SAT493M_MEAN = (0.430, 0.411, 0.296)
SAT493M_STD = (0.213, 0.156, 0.143)


@register("dinov3_vit")
class Dinov3Encoder(PatchEncoder):
    """Wraps a transformers ``DINOv3ViTModel``. RoPE positions adapt to any input side that is a multiple of
    16; ``encoder_size="auto"`` gives 592 px (the paper's 37x37 grid). Weights whose source name says
    ``sat493m`` are fed with the satellite release's statistics instead of ImageNet's."""

    family = "DINOv3"

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        if "sat493m" in str(getattr(model.config, "_name_or_path", "") or "").lower():
            self.mean, self.std = SAT493M_MEAN, SAT493M_STD

    @staticmethod
    def _identity_key(key: str) -> bool:
        return "patch_embeddings" in key or key.startswith("norm.")
