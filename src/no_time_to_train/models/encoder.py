"""The patch-encoder role: image -> patch tokens ``(G*G, D)`` at the encoder's own input size and patch size.

Everything downstream (reference crops, mask sampling to the patch grid, mask pooling, the memory's identity
check) talks to :class:`PatchEncoder` only. Each family (:mod:`.dinov2`, :mod:`.dinov3`) is one small subclass
registered in :data:`ENCODERS` under the transformers ``model_type`` it wraps (:mod:`.dinov3_convnext` adapts a
ConvNeXt to the same contract); :func:`wrap_encoder` picks it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from ..config import SettingError
from ..errors import CheckpointError
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from .wrapper import ModelWrapper

#: Patch-grid side the input size ``"auto"`` aims at: the paper's 37x37 (518 px at patch 14, 592 px at 16).
AUTO_GRID = 37

def input_size(setting: int | str, patch_size: int, family: str = "this") -> int:
    """The encoder input side ``S`` for the ``encoder_size`` setting and an encoder's ``patch_size``.

    ``"auto"`` is ``AUTO_GRID * patch_size`` (518 for patch 14, 592 for patch 16); an integer must be a
    multiple of the patch size, else a SettingError naming ``--encoder-size``, the patch size and ``family``.
    """
    if setting == "auto":
        return AUTO_GRID * patch_size
    if int(setting) % patch_size:
        raise SettingError(
            "encoder_size",
            f"(--encoder-size) {setting} is not a multiple of the {family} encoder's patch size {patch_size}: use a "
            f"multiple of {patch_size}, e.g. {AUTO_GRID * patch_size} ({AUTO_GRID}x{AUTO_GRID} patches), or 'auto'",
        )
    return int(setting)


#: model_type -> wrapper class; filled by :func:`register`.
ENCODERS: dict[str, type[PatchEncoder]] = {}


def register(*model_types: str) -> Callable[[type[PatchEncoder]], type[PatchEncoder]]:
    """Class decorator: wrap transformers models of these ``model_type`` values with the class."""

    def add(cls: type[PatchEncoder]) -> type[PatchEncoder]:
        for t in model_types:
            ENCODERS[t] = cls
        return cls

    return add


class PatchEncoder(ModelWrapper):
    """A ViT whose last layer, after its final norm, gives ``prefix`` tokens (CLS + registers) then patch tokens.

    Input images are ``(B, 3, S, S)`` in [0, 1] with ``S`` a multiple of :attr:`patch_size`; output tokens are
    ``(B, (S / patch_size)**2, D)`` in row-major patch order. Subclasses say which weights identify the model
    (:meth:`_identity_key`) and its family name.
    """

    family = "?"
    #: Per-channel mean and std of the [0, 1] input the weights were trained with.
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self, model: torch.nn.Module):
        super().__init__(model)
        self.patch_size, self.dim, self.depth, self.num_prefix = self._geometry(model.config)
        self._fingerprint: str | None = None
        self._forward = model

    @staticmethod
    def _geometry(cfg) -> tuple[int, int, int, int]:
        """(patch size, token width D, depth, prefix tokens) of the model's config (a ViT's here)."""
        prefix = 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)
        return int(cfg.patch_size), int(cfg.hidden_size), int(cfg.num_hidden_layers), prefix

    def compile(self, **kwargs) -> None:
        """``torch.compile`` the forward pass (kwargs go to torch.compile); the weights' identity is unchanged."""
        self._forward = torch.compile(self.model, **kwargs)

    # -- geometry ------------------------------------------------------------------------------------------
    def input_size(self, setting: int | str) -> int:
        """The input side ``S`` for the ``encoder_size`` setting (see :func:`input_size`)."""
        return input_size(setting, self.patch_size, self.family)

    # -- features ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` in [0, 1] -> ``(B, (S/p)**2, D)`` float32 patch tokens after the final norm."""
        x = normalize(images.to(self.device, self.dtype), self.mean, self.std)
        out = self._forward(pixel_values=x).last_hidden_state
        return out[:, self.num_prefix :, :].float()

    # -- identity ------------------------------------------------------------------------------------------
    @staticmethod
    def _identity_key(key: str) -> bool:
        """Whether state-dict ``key`` is hashed into :meth:`fingerprint`."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """Identity of the weights: architecture plus a hash of the patch embedding and final norm.

        Reference vectors are only comparable with target features from the same encoder; memories record
        this value and refuse to mix encoders. Input statistics other than ImageNet's are part of it.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(f"{self.model.config.model_type}|{self.dim}|{self.depth}|{self.num_prefix}".encode())
            if (self.mean, self.std) != (IMAGENET_MEAN, IMAGENET_STD):
                h.update(f"mean {self.mean} std {self.std}".encode())
            sd = self.model.state_dict()
            for key in sorted(k for k in sd if self._identity_key(k)):
                h.update(key.encode())
                # rounded to bf16 so that the same weights loaded in fp32 or bf16 share one identity
                h.update(sd[key].detach().cpu().to(torch.bfloat16).float().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def describe(self) -> dict:
        """The encoder's identity as a memory records it (see ``ReferenceMemory.check_encoder``)."""
        cfg = self.model.config
        return {
            "model_type": cfg.model_type,
            "hidden_size": self.dim,
            "num_hidden_layers": self.depth,
            "num_register_tokens": self.num_prefix - 1,
            "patch_size": self.patch_size,
            "name_or_path": getattr(cfg, "_name_or_path", "") or "",
            "fingerprint": self.fingerprint(),
        }


def wrap_encoder(model: torch.nn.Module) -> PatchEncoder:
    """The :class:`PatchEncoder` for a transformers model, by its ``config.model_type``."""
    from . import dinov2, dinov3, dinov3_convnext  # noqa: F401 - each family registers itself on import (they import this module)

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = ENCODERS.get(model_type)
    if cls is None:
        raise CheckpointError(
            f"the encoder model is a {model_type or type(model).__name__!r}, not a supported patch encoder "
            f"(model types: {', '.join(sorted(ENCODERS))})"
        )
    return cls(model)
