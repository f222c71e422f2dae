"""DINOv2 patch encoder: last block, final LayerNorm, patch tokens only (no CLS, no registers)."""

from __future__ import annotations

from .encoder import PatchEncoder, register


@register("dinov2", "dinov2_with_registers")
class Dinov2Encoder(PatchEncoder):
    """Wraps a transformers ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (patch 14; 518 px in the method,
    where transformers matches the official model exactly)."""

    family = "DINOv2"

    @staticmethod
    def _identity_key(key: str) -> bool:
        return "patch_embeddings" in key or key.startswith("layernorm")
