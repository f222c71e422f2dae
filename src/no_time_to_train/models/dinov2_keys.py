"""Key map between Meta's DINOv2 checkpoints and transformers' ``Dinov2Model`` / ``Dinov2WithRegistersModel``.

Meta's files (``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``) are plain state dicts. :func:`dinov2_meta_to_hf`
renames them to transformers' names (splitting the fused ``qkv`` and SwiGLU ``w12`` projections) and infers
the config from tensor shapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch
from transformers import Dinov2Config, Dinov2WithRegistersConfig

from ..errors import CheckpointError
from .configs import DINOV2_VARIANTS, dinov2_config_for
from .keymap import few, rename

_WB = r"\.(weight|bias)$"
_BLOCK = r"^blocks\.(\d+)\."

# Meta -> transformers one-to-one renames (after chunked ``blocks.{c}.{i}`` keys are flattened).
_META_TO_HF = [
    (r"^(cls_token|mask_token|register_tokens)$", r"embeddings.\1"),
    (r"^pos_embed$", r"embeddings.position_embeddings"),
    (r"^patch_embed\.proj" + _WB, r"embeddings.patch_embeddings.projection.\1"),
    (_BLOCK + r"(norm1|norm2)" + _WB, r"encoder.layer.\1.\2.\3"),
    (_BLOCK + r"attn\.proj" + _WB, r"encoder.layer.\1.attention.o_proj.\2"),
    (_BLOCK + r"ls([12])\.gamma$", r"encoder.layer.\1.layer_scale\2.lambda1"),
    (_BLOCK + r"mlp\.(fc1|fc2)" + _WB, r"encoder.layer.\1.mlp.\2.\3"),
    (_BLOCK + r"mlp\.w3" + _WB, r"encoder.layer.\1.mlp.down_proj.\2"),
    (r"^norm" + _WB, r"layernorm.\1"),
]
_META_TO_HF_RE = [(re.compile(p), r) for p, r in _META_TO_HF]
_QKV = re.compile(_BLOCK + r"attn\.qkv" + _WB)
_W12 = re.compile(_BLOCK + r"mlp\.w12" + _WB)
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")

_L = r"^encoder\.layer\.(\d+)\."
_HF_TO_META = [
    (r"^embeddings\.(cls_token|mask_token|register_tokens)$", r"\1"),
    (r"^embeddings\.position_embeddings$", r"pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection" + _WB, r"patch_embed.proj.\1"),
    (_L + r"(norm1|norm2)" + _WB, r"blocks.\1.\2.\3"),
    (_L + r"attention\.o_proj" + _WB, r"blocks.\1.attn.proj.\2"),
    (_L + r"layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (_L + r"mlp\.(fc1|fc2)" + _WB, r"blocks.\1.mlp.\2.\3"),
    (_L + r"mlp\.down_proj" + _WB, r"blocks.\1.mlp.w3.\2"),
    (r"^layernorm" + _WB, r"norm.\1"),
]
_HF_TO_META_RE = [(re.compile(p), r) for p, r in _HF_TO_META]
_HF_QKV = re.compile(_L + r"attention\.(q_proj|k_proj|v_proj)" + _WB)
_HF_GLU = re.compile(_L + r"mlp\.(gate_proj|up_proj)" + _WB)


def flatten_chunks(state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``blocks.{chunk}.{i}.x`` (Meta's block-chunked models) -> ``blocks.{i}.x``; other dicts unchanged."""
    if not any(_CHUNKED.match(k) for k in state_dict):
        return state_dict
    return {_CHUNKED.sub(r"blocks.\1.", k): v for k, v in state_dict.items()}


def dinov2_meta_keys_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Meta DINOv2 state dict to transformers keys; unknown keys raise CheckpointError."""
    state_dict = flatten_chunks(state_dict)
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        m = _QKV.match(key)
        if m:
            q, k, v = (t.clone() for t in value.chunk(3, dim=0))  # own storage: saves cleanly
            for name, part in zip(("q_proj", "k_proj", "v_proj"), (q, k, v)):
                out[f"encoder.layer.{m.group(1)}.attention.{name}.{m.group(2)}"] = part
            continue
        m = _W12.match(key)
        if m:
            gate, up = (t.clone() for t in value.chunk(2, dim=0))
            out[f"encoder.layer.{m.group(1)}.mlp.gate_proj.{m.group(2)}"] = gate
            out[f"encoder.layer.{m.group(1)}.mlp.up_proj.{m.group(2)}"] = up
            continue
        new = rename(key, _META_TO_HF_RE)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(
            f"DINOv2 checkpoint has {len(unknown)} key(s) that match no DINOv2 weight: {few(unknown)}"
        )
    return out


def dinov2_hf_to_meta(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers DINOv2 state dict to Meta's key names (fusing q/k/v into ``qkv``, gate/up into ``w12``)."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    parts: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        m = _HF_QKV.match(key) or _HF_GLU.match(key)
        if m:
            meta = "attn.qkv" if m.group(2).endswith(("q_proj", "k_proj", "v_proj")) else "mlp.w12"
            parts.setdefault((f"blocks.{m.group(1)}.{meta}", m.group(3)), {})[m.group(2)] = value
            continue
        new = rename(key, _HF_TO_META_RE)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"transformers DINOv2 state dict has keys with no Meta counterpart: {few(unknown)}")
    for (prefix, kind), group in parts.items():
        order = ("q_proj", "k_proj", "v_proj") if prefix.endswith("qkv") else ("gate_proj", "up_proj")
        missing = [n for n in order if n not in group]
        if missing:
            raise CheckpointError(f"cannot fuse {prefix}.{kind}: missing {missing}")
        out[f"{prefix}.{kind}"] = torch.cat([group[n] for n in order], dim=0)
    return out


def _get(sd: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(f"not a DINOv2 checkpoint: required key {key!r} is missing")
    return sd[key]


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
