"""Key map between Meta's DINOv3 ViT checkpoints and transformers' ``DINOv3ViTModel``.

Meta's files (``dinov3_vit{s16,s16plus,b16,l16,l16plus,h16plus,7b16}_pretrain_{lvd1689m,sat493m}-*.pth``) are plain
state dicts. Beyond one-to-one renames (:data:`_KEYS`), three Meta entries need care:

* ``blocks.{i}.attn.qkv`` is one fused projection, split into ``q_proj``/``k_proj``/``v_proj``. Meta's model
  multiplies its bias by the buffer ``qkv.bias_mask`` in the forward pass, so the bias loaded is that product
  (the released files hold all-zero masks and biases: no effective qkv bias); the key bias is dropped
  (transformers' ``key_bias=False``) when the mask zeroes it in every block. The 7B model has no qkv bias;
* ``mask_token`` is ``(1, D)`` in Meta's files and ``(1, 1, D)`` in transformers';
* ``rope_embed.periods`` (``head_dim / 4`` RoPE periods) is not a weight in transformers: it gives the head
  size and ``rope_theta``, and is checked against them (to bfloat16 precision: the distilled models were
  trained with bfloat16 periods).

``cls_norm`` / ``local_cls_norm`` (``local_cls_norm`` is in the 7B and the ViT-L SAT-493M files) only touch the
CLS and register outputs of training crops, which this library never reads, and are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial

import torch
from transformers import DINOv3ViTConfig

from ..errors import CheckpointError
from .configs import DINOV3_VARIANTS, dinov3_vit_config
from .keymap import KeyMap, fused, hf_to_meta, meta_to_hf, required

#: A tensor that shape inference needs; a missing one means the file is not DINOv3 ViT.
_get = partial(required, family="DINOv3 ViT")

_BLOCK = re.compile(r"^blocks\.(\d+)\.")

_COMMON = [
    ("cls_token", "embeddings.cls_token"),
    ("mask_token", "embeddings.mask_token"),
    ("storage_tokens", "embeddings.register_tokens"),
    ("patch_embed.proj.{wb}", "embeddings.patch_embeddings.{wb}"),
    ("blocks.{i}.{norm}.{wb}", "model.layer.{i}.{norm}.{wb}"),
    ("blocks.{i}.attn.proj.{wb}", "model.layer.{i}.attention.o_proj.{wb}"),
    ("blocks.{i}.ls{n}.gamma", "model.layer.{i}.layer_scale{n}.lambda1"),
    ("norm.{wb}", "norm.{wb}"),
]
_FIELDS = {"norm": r"norm1|norm2", "n": r"[12]"}
# transformers names both MLPs' input projection ``up_proj``, so each MLP kind has its own (invertible) table.
_KEYS = KeyMap(
    _COMMON + [
        ("blocks.{i}.mlp.fc1.{wb}", "model.layer.{i}.mlp.up_proj.{wb}"),
        ("blocks.{i}.mlp.fc2.{wb}", "model.layer.{i}.mlp.down_proj.{wb}"),
    ],
    _FIELDS,
)
_KEYS_SWIGLU = KeyMap(
    _COMMON + [
        ("blocks.{i}.mlp.w1.{wb}", "model.layer.{i}.mlp.gate_proj.{wb}"),
        ("blocks.{i}.mlp.w2.{wb}", "model.layer.{i}.mlp.up_proj.{wb}"),
        ("blocks.{i}.mlp.w3.{wb}", "model.layer.{i}.mlp.down_proj.{wb}"),
    ],
    _FIELDS,
)

_FUSED = (fused("blocks.{i}.attn.qkv.{wb}", "model.layer.{i}.attention.{part}.{wb}", ("q_proj", "k_proj", "v_proj")),)

PERIODS = "rope_embed.periods"
_BIAS_MASK = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.bias_mask$")
# Relative tolerance on stored RoPE periods: bfloat16's rounding (2 ** -8) with margin.
_PERIODS_RTOL = 2.0**-7
#: Meta keys with no transformers counterpart that do not change the patch tokens.
_CLS_ONLY = ("cls_norm.", "local_cls_norm.")


def _periods(head_dim: int, theta: float) -> torch.Tensor:
    """Meta's RoPE periods ``theta ** (4k / head_dim)`` for ``k < head_dim / 4`` (transformers' 1 / inv_freq)."""
    return theta ** (torch.arange(0, head_dim // 4, dtype=torch.float64) * 4 / head_dim)


def _rope_theta(periods: torch.Tensor) -> float:
    """The RoPE base ``theta`` of Meta's ``periods`` (``theta ** (4k / head_dim)``, float64): the value with the
    fewest significant digits that gives them to bfloat16 precision (files may hold bfloat16-rounded periods)."""
    n = periods.numel()
    head_dim = 4 * n
    # the last period is theta ** ((n - 1) / n): the least amplified rounding error
    estimate = float(periods[-1]) ** (n / (n - 1)) if n > 1 else 100.0
    for digits in range(1, 7):
        theta = float(f"{estimate:.{digits}g}")
        if torch.allclose(periods, _periods(head_dim, theta), rtol=_PERIODS_RTOL, atol=0):
            return theta
    raise CheckpointError(f"DINOv3 {PERIODS} are not theta ** (4k / head_dim) for any theta: this RoPE "
                          "variant is not supported")


def _bias_masks(sd: Mapping[str, torch.Tensor], depth: int) -> list[torch.Tensor] | None:
    """Each block's ``qkv.bias_mask`` (None for a file without masks); a mask with NaN / inf raises."""
    masks = [sd.get(f"blocks.{i}.attn.qkv.bias_mask") for i in range(depth)]
    if all(m is None for m in masks):
        return None
    if any(m is None for m in masks):
        raise CheckpointError("DINOv3 checkpoint has qkv.bias_mask in some blocks only")
    for i, m in enumerate(masks):
        if not bool(torch.isfinite(m).all()):
            raise CheckpointError(f"DINOv3 blocks.{i}.attn.qkv.bias_mask is not finite (an uninitialised mask): "
                                  "the checkpoint is unusable, download it again")
    return masks


def _key_bias(sd: Mapping[str, torch.Tensor], depth: int) -> bool:
    """Whether the key projection has an effective bias: a qkv bias whose mask does not zero the key part in
    every block (no mask: the bias is used as is)."""
    if "blocks.0.attn.qkv.bias" not in sd:
        return False
    masks = _bias_masks(sd, depth)
    return masks is None or any(bool(m.chunk(3)[1].any()) for m in masks)


def infer_dinov3_config(sd: Mapping[str, torch.Tensor]) -> DINOv3ViTConfig:
    """Infer a ``DINOv3ViTConfig`` from the shapes of a Meta DINOv3 ViT state dict.

    Hidden and patch size from ``patch_embed``, depth from ``blocks.{i}``, registers from ``storage_tokens``,
    SwiGLU and MLP width from ``mlp.w1`` (else ``mlp.fc1``), head size from the length of
    ``rope_embed.periods`` (``head_dim / 4``) and ``rope_theta`` from its values; without ``periods``,
    the official table's heads for this width (else 64-wide heads) and theta 100.
    """
    patch = _get(sd, "patch_embed.proj.weight")
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    depth = len({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    if depth == 0:
        raise CheckpointError("not a DINOv3 ViT checkpoint: no blocks.* keys")
    registers = int(sd["storage_tokens"].shape[1]) if "storage_tokens" in sd else 0
    gated = "blocks.0.mlp.w1.weight" in sd
    width = int(_get(sd, "blocks.0.mlp.w1.weight" if gated else "blocks.0.mlp.fc1.weight").shape[0])
    theta = 100.0
    if PERIODS in sd:
        periods = sd[PERIODS].double()
        head_dim = 4 * periods.numel()
        if head_dim == 0 or hidden % head_dim:
            raise CheckpointError(f"DINOv3 {PERIODS} has {periods.numel()} entries, which do not fit width {hidden}")
        theta = _rope_theta(periods)
        heads = hidden // head_dim
    else:
        heads = next((h for (d, _, h, _, _) in DINOV3_VARIANTS.values() if d == hidden), max(1, hidden // 64))
    return dinov3_vit_config(
        hidden, depth, heads, width, gated,
        num_register_tokens=registers,
        rope_theta=theta,
        patch_size=patch_size,
        query_bias="blocks.0.attn.qkv.bias" in sd,
        key_bias=_key_bias(sd, depth),
        value_bias="blocks.0.attn.qkv.bias" in sd,
        proj_bias="blocks.0.attn.proj.bias" in sd,
        mlp_bias=f"blocks.0.mlp.{'w1' if gated else 'fc1'}.bias" in sd,
    )


def dinov3_meta_to_hf(sd: Mapping[str, torch.Tensor]) -> tuple[DINOv3ViTConfig, dict[str, torch.Tensor]]:
    """Convert a Meta DINOv3 ViT state dict for transformers: (config inferred from shapes, renamed state dict)."""
    config = infer_dinov3_config(sd)
    weights = {k: v for k, v in sd.items() if k != PERIODS and not _BIAS_MASK.match(k) and not k.startswith(_CLS_ONLY)}
    for i, mask in enumerate(_bias_masks(sd, config.num_hidden_layers) or []):
        bias = weights[f"blocks.{i}.attn.qkv.bias"]  # the bias Meta's forward pass uses
        weights[f"blocks.{i}.attn.qkv.bias"] = bias * mask.to(bias.device, bias.dtype)
    if "mask_token" in weights:
        weights["mask_token"] = weights["mask_token"].reshape(1, 1, -1)
    out = meta_to_hf(weights, _KEYS_SWIGLU if config.use_gated_mlp else _KEYS, _FUSED, "DINOv3")
    if not config.num_register_tokens:  # transformers keeps an empty (1, 0, D) parameter
        out.setdefault("embeddings.register_tokens", torch.zeros(1, 0, config.hidden_size))
    if not config.key_bias:
        out = {k: v for k, v in out.items() if not k.endswith(".attention.k_proj.bias")}
    return config, out


def dinov3_hf_to_meta(sd: Mapping[str, torch.Tensor], config: DINOv3ViTConfig | None = None) -> dict[str, torch.Tensor]:
    """Rename a transformers DINOv3 ViT state dict to Meta's key names (the inverse of :func:`dinov3_meta_to_hf`).

    A masked key bias comes back as zeros with its ``qkv.bias_mask``; ``rope_embed.periods`` is written when
    ``config`` is given (it is not a transformers weight).
    """
    sd = dict(sd)
    masked = []
    for key in [k for k in sd if k.endswith(".attention.q_proj.bias")]:
        k_key = key.replace(".q_proj.", ".k_proj.")
        if k_key not in sd:
            sd[k_key] = torch.zeros_like(sd[key])
            masked.append(key)
    if "embeddings.register_tokens" in sd and sd["embeddings.register_tokens"].shape[1] == 0:
        del sd["embeddings.register_tokens"]  # Meta's models without registers have no storage_tokens
    swiglu = any(k.endswith(".mlp.gate_proj.weight") for k in sd)
    out = hf_to_meta(sd, _KEYS_SWIGLU if swiglu else _KEYS, _FUSED, "DINOv3")
    for key in masked:
        i = key.split(".")[2]
        dim = sd[key].shape[0]
        out[f"blocks.{i}.attn.qkv.bias_mask"] = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
    if "mask_token" in out:
        out["mask_token"] = out["mask_token"].reshape(1, -1)
    if config is not None:
        head_dim = config.hidden_size // config.num_attention_heads
        out[PERIODS] = _periods(head_dim, config.rope_theta).float()
    return out


def looks_like_dinov3(sd: Mapping[str, torch.Tensor]) -> bool:
    """Whether a Meta state dict has DINOv3 ViT's markers (RoPE periods, storage tokens or a masked qkv bias)."""
    return PERIODS in sd or "storage_tokens" in sd or any(_BIAS_MASK.match(k) for k in sd)

