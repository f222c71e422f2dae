"""DINOv2 patch features: last block, final LayerNorm, patch tokens only (no CLS, no registers)."""

from __future__ import annotations

import hashlib

import torch

from ..transforms import normalize
from .wrapper import ModelWrapper


class PatchEncoder(ModelWrapper):
    """Wraps a transformers ``Dinov2Model`` / ``Dinov2WithRegistersModel``.

    Input images are ``(B, 3, S, S)`` in [0, 1] with ``S`` a multiple of the patch size (518 in the method,
    where transformers matches the official model exactly). Output tokens are ``(B, (S/14)**2, D)`` in
    row-major patch order.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        cfg = model.config
        self.patch_size = int(cfg.patch_size)
        self.dim = int(cfg.hidden_size)
        self.num_prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        self._fingerprint: str | None = None
        self._forward = model

    def compile(self, **kwargs) -> None:
        """``torch.compile`` the forward pass (kwargs go to torch.compile); the weights' identity is unchanged."""
        self._forward = torch.compile(self.model, **kwargs)

    @torch.inference_mode()
    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` in [0, 1] -> ``(B, N, D)`` float32 patch tokens after the final LayerNorm."""
        x = normalize(images.to(self.device, self.dtype))
        out = self._forward(pixel_values=x).last_hidden_state
        return out[:, self.num_prefix :, :].float()

    def fingerprint(self) -> str:
        """Identity of the weights: architecture plus a hash of the patch embedding and final norm.

        Reference vectors are only comparable with target features from the same encoder; memories record
        this value and refuse to mix encoders.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            cfg = self.model.config
            h.update(f"{cfg.model_type}|{cfg.hidden_size}|{cfg.num_hidden_layers}|{self.num_prefix}".encode())
            sd = self.model.state_dict()
            for key in sorted(k for k in sd if "patch_embeddings" in k or k.startswith("layernorm")):
                h.update(key.encode())
                # rounded to bf16 so that the same weights loaded in fp32 or bf16 share one identity
                h.update(sd[key].detach().cpu().to(torch.bfloat16).float().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict:
        cfg = self.model.config
        return {
            "model_type": cfg.model_type,
            "hidden_size": int(cfg.hidden_size),
            "num_hidden_layers": int(cfg.num_hidden_layers),
            "num_register_tokens": self.num_prefix - 1,
            "patch_size": self.patch_size,
            "name_or_path": getattr(cfg, "_name_or_path", "") or "",
            "fingerprint": self.fingerprint(),
        }
