"""Key map between Meta's DINOv2 checkpoints and transformers' ``Dinov2Model`` / ``Dinov2WithRegistersModel``.

Meta's files (``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``) are plain state dicts. :func:`dinov2_meta_to_hf`
renames them to transformers' names (splitting the fused ``qkv`` and SwiGLU ``w12`` projections) and infers
the config from tensor shapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import partial

import torch
from transformers import Dinov2Config, Dinov2WithRegistersConfig

from ..errors import CheckpointError
from .configs import DINOV2_VARIANTS, dinov2_config_for
from .keymap import KeyMap, fused, hf_to_meta, meta_to_hf, required

#: A tensor that shape inference needs; a missing one means the file is not DINOv2.
_get = partial(required, family="DINOv2")

_BLOCK = r"^blocks\.(\d+)\."
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")

# One-to-one renames as (Meta, transformers) key templates, Meta keys as after :func:`flatten_chunks`.
_KEYS = KeyMap(
    [
        ("{token}", "embeddings.{token}"),
        ("pos_embed", "embeddings.position_embeddings"),
        ("patch_embed.proj.{wb}", "embeddings.patch_embeddings.projection.{wb}"),
        ("blocks.{i}.{norm}.{wb}", "encoder.layer.{i}.{norm}.{wb}"),
        ("blocks.{i}.attn.proj.{wb}", "encoder.layer.{i}.attention.o_proj.{wb}"),
        ("blocks.{i}.ls{n}.gamma", "encoder.layer.{i}.layer_scale{n}.lambda1"),
        ("blocks.{i}.mlp.{fc}.{wb}", "encoder.layer.{i}.mlp.{fc}.{wb}"),
        ("blocks.{i}.mlp.w3.{wb}", "encoder.layer.{i}.mlp.down_proj.{wb}"),
        ("norm.{wb}", "layernorm.{wb}"),
    ],
    fields={"token": r"cls_token|mask_token|register_tokens", "norm": r"norm1|norm2", "n": r"[12]", "fc": r"fc1|fc2"},
)


_FUSED = (
    fused("blocks.{i}.attn.qkv.{wb}", "encoder.layer.{i}.attention.{part}.{wb}", ("q_proj", "k_proj", "v_proj")),
    fused("blocks.{i}.mlp.w12.{wb}", "encoder.layer.{i}.mlp.{part}.{wb}", ("gate_proj", "up_proj")),
)


def flatten_chunks(state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``blocks.{chunk}.{i}.x`` (Meta's block-chunked models) -> ``blocks.{i}.x``; other dicts unchanged."""
    if not any(_CHUNKED.match(k) for k in state_dict):
        return state_dict
    return {_CHUNKED.sub(r"blocks.\1.", k): v for k, v in state_dict.items()}


def dinov2_meta_keys_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Meta DINOv2 state dict to transformers keys; unknown keys raise CheckpointError."""
    return meta_to_hf(flatten_chunks(state_dict), _KEYS, _FUSED, "DINOv2")


def dinov2_hf_to_meta(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers DINOv2 state dict to Meta's key names (fusing q/k/v into ``qkv``, gate/up into ``w12``)."""
    return hf_to_meta(state_dict, _KEYS, _FUSED, "DINOv2")


def _swiglu_hidden(hidden: int, ratio: float) -> int:
    """transformers' SwiGLU width for a given MLP ratio (two thirds, rounded up to a multiple of 8)."""
    return (int(int(hidden * ratio) * 2 / 3) + 7) // 8 * 8


def infer_dinov2_config(state_dict: Mapping[str, torch.Tensor]) -> Dinov2Config | Dinov2WithRegistersConfig:
    """Infer a DINOv2 config from the shapes of a Meta state dict.

    Hidden size and patch size from ``patch_embed``, depth from ``blocks.{i}``, registers from
    ``register_tokens``, SwiGLU from ``mlp.w12``, MLP ratio from the MLP width and image size from the
    ``pos_embed`` length (1370 tokens -> 518 px). Heads: the table entry for this size, else hidden // 64.
    """
    state_dict = flatten_chunks(state_dict)
    patch = _get(state_dict, "patch_embed.proj.weight")
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    depth = len({int(m.group(1)) for k in state_dict if (m := re.match(_BLOCK, k))})
    if depth == 0:
        raise CheckpointError("not a DINOv2 checkpoint: no blocks.* keys")
    registers = int(state_dict["register_tokens"].shape[1]) if "register_tokens" in state_dict else 0
    n_pos = int(_get(state_dict, "pos_embed").shape[1]) - 1
    side = math.isqrt(n_pos)
    if side * side != n_pos:
        raise CheckpointError(f"DINOv2 pos_embed has {n_pos + 1} tokens, not 1 + a square number")
    swiglu = "blocks.0.mlp.w12.weight" in state_dict
    if swiglu:
        width = int(state_dict["blocks.0.mlp.w12.weight"].shape[0]) // 2
        candidates = [4.0, width * 1.5 / hidden, (width - 7) * 1.5 / hidden]
        ratio = next((r for r in candidates if _swiglu_hidden(hidden, r) == width), None)
        if ratio is None:
            raise CheckpointError(f"DINOv2 SwiGLU width {width} does not fit hidden size {hidden}")
    else:
        ratio = int(_get(state_dict, "blocks.0.mlp.fc1.weight").shape[0]) / hidden
    if ratio == int(ratio):
        ratio = int(ratio)
    heads = next(
        (h for (d, n, h, _) in DINOV2_VARIANTS.values() if d == hidden and n == depth),
        max(1, hidden // 64),
    )
    return dinov2_config_for(
        hidden,
        depth,
        heads,
        swiglu=swiglu,
        num_register_tokens=registers,
        image_size=side * patch_size,
        mlp_ratio=ratio,
        patch_size=patch_size,
    )


def dinov2_meta_to_hf(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[Dinov2Config | Dinov2WithRegistersConfig, dict[str, torch.Tensor]]:
    """Convert a Meta DINOv2 state dict for transformers: (config inferred from shapes, renamed state dict)."""
    return infer_dinov2_config(state_dict), dinov2_meta_keys_to_hf(state_dict)
