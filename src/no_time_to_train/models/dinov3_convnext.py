"""DINOv3 ConvNeXt as a patch encoder: its stride-32 feature map, resampled to a patch-16 grid.

A ConvNeXt has no patches. As Meta's own dense-feature path does for these models (``get_intermediate_layers``
with ``patch_size=16``), its last feature map is resized to the grid of a ViT-16 of the same input: an input of
side ``S`` (a multiple of 16; ``"auto"`` gives 592 and the paper's 37x37 grid) yields a ``floor(S/32)`` map,
bilinearly resampled to ``S/16`` per side. The tokens are the model's final output: the map after its final
LayerNorm (Meta's ``x_norm_patchtokens``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..transforms import normalize
from .dinov3 import input_statistics
from .encoder import PatchEncoder, register

#: Total stride of a ConvNeXt: a 4x4 stem, then three 2x downsamplings.
STRIDE = 32
#: The ViT patch size whose grid the feature map is resampled to (Meta's choice for the DINOv3 ConvNeXts).
GRID_PATCH = 16


@register("dinov3_convnext")
class Dinov3ConvNextEncoder(PatchEncoder):
    """Wraps a transformers ``DINOv3ConvNextModel``: tokens ``(B, (S/16)**2, C_last)``; input statistics as for
    the DINOv3 ViTs (the LVD-1689M release uses ImageNet's)."""

    family = "DINOv3 ConvNeXt"

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.mean, self.std = input_statistics(str(getattr(model.config, "_name_or_path", "") or ""))

    @staticmethod
    def _geometry(cfg) -> tuple[int, int, int, int]:
        return GRID_PATCH, int(cfg.hidden_sizes[-1]), int(sum(cfg.depths)), 1  # prefix: the pooled token

    @torch.inference_mode()
    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` in [0, 1] -> ``(B, (S/16)**2, C)`` float32: the final-norm map, resampled."""
        b, _, s, _ = images.shape
        x = normalize(images.to(self.device, self.dtype), self.mean, self.std)
        tokens = self._forward(pixel_values=x).last_hidden_state[:, self.num_prefix:, :].float()
        side = s // STRIDE
        fmap = tokens.transpose(1, 2).reshape(b, -1, side, side)
        grid = s // GRID_PATCH
        fmap = F.interpolate(fmap, size=(grid, grid), mode="bilinear", align_corners=False, antialias=True)
        return fmap.flatten(2).transpose(1, 2)

    @staticmethod
    def _identity_key(key: str) -> bool:
        return key.startswith(("model.stages.0.downsample_layers.", "layer_norm."))
