"""Key map between Meta's SAM / SAM-HQ checkpoints and transformers' ``SamModel`` / ``SamHQModel``.

Meta's files (``sam_vit_{b,l,h}_*.pth``, ``sam_hq_vit_{b,l,h}.pth``) are plain state dicts without any record of
the architecture. :func:`sam_meta_to_hf` renames the keys to transformers' names and infers the config from
tensor shapes: ViT width and depth, patch and image size, attention heads (from the relative-position tables'
head width), window size and global-attention blocks (windowed and global blocks have relative-position
tables of different lengths), neck and decoder widths. Only the mask decoder's attention heads cannot be read
off shapes; they come from :data:`~no_time_to_train.models.configs.SAM2_DECODER_HEADS` (SAM2 kept SAM's
two-way transformer). A file with SAM-HQ's ``mask_decoder.hf_*`` weights becomes a ``SamHQConfig``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import partial

import torch
from transformers import SamConfig, SamHQConfig

from ..errors import CheckpointError
from .configs import SAM2_DECODER_HEADS
from .keymap import KeyMap, MlpKeyMap, count_indices, few, join_copies, required, split_copies

#: A tensor that shape inference needs; a missing one means the file is not SAM.
_get = partial(required, family="SAM")

logger = logging.getLogger(__name__)

_PE_META = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_PE_HF = ("shared_image_embedding.positional_embedding", "prompt_encoder.shared_embedding.positional_embedding")
_HQ_MARK = "mask_decoder.hf_token.weight"

# One-to-one renames as (Meta, transformers) key templates; MLPs, whose names depend on depth, are in _MLPS.
_KEYS = KeyMap(
    [
        ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
        ("image_encoder.patch_embed.proj.{wb}", "vision_encoder.patch_embed.projection.{wb}"),
        ("image_encoder.blocks.{i}.norm{n2}.{wb}", "vision_encoder.layers.{i}.layer_norm{n2}.{wb}"),
        ("image_encoder.blocks.{i}.attn.{attn}", "vision_encoder.layers.{i}.attn.{attn}"),
        ("image_encoder.blocks.{i}.mlp.{lin}.{wb}", "vision_encoder.layers.{i}.mlp.{lin}.{wb}"),
        ("image_encoder.neck.0.weight", "vision_encoder.neck.conv1.weight"),
        ("image_encoder.neck.1.{wb}", "vision_encoder.neck.layer_norm1.{wb}"),
        ("image_encoder.neck.2.weight", "vision_encoder.neck.conv2.weight"),
        ("image_encoder.neck.3.{wb}", "vision_encoder.neck.layer_norm2.{wb}"),
        ("prompt_encoder.point_embeddings.{i}.weight", "prompt_encoder.point_embed.{i}.weight"),
        ("prompt_encoder.{embed}.weight", "prompt_encoder.{embed}.weight"),
        ("prompt_encoder.mask_downscaling.0.{wb}", "prompt_encoder.mask_embed.conv1.{wb}"),
        ("prompt_encoder.mask_downscaling.1.{wb}", "prompt_encoder.mask_embed.layer_norm1.{wb}"),
        ("prompt_encoder.mask_downscaling.3.{wb}", "prompt_encoder.mask_embed.conv2.{wb}"),
        ("prompt_encoder.mask_downscaling.4.{wb}", "prompt_encoder.mask_embed.layer_norm2.{wb}"),
        ("prompt_encoder.mask_downscaling.6.{wb}", "prompt_encoder.mask_embed.conv3.{wb}"),
        ("mask_decoder.{token}.weight", "mask_decoder.{token}.weight"),
        ("mask_decoder.hf_token.weight", "mask_decoder.hq_token.weight"),
        ("mask_decoder.transformer.{dattn}.{proj}.{wb}", "mask_decoder.transformer.{dattn}.{proj}.{wb}"),
        ("mask_decoder.transformer.layers.{i}.norm{n4}.{wb}", "mask_decoder.transformer.layers.{i}.layer_norm{n4}.{wb}"),
        ("mask_decoder.transformer.layers.{i}.mlp.{lin}.{wb}", "mask_decoder.transformer.layers.{i}.mlp.{lin}.{wb}"),
        ("mask_decoder.transformer.norm_final_attn.{wb}", "mask_decoder.transformer.layer_norm_final_attn.{wb}"),
        ("mask_decoder.output_upscaling.0.{wb}", "mask_decoder.upscale_conv1.{wb}"),
        ("mask_decoder.output_upscaling.1.{wb}", "mask_decoder.upscale_layer_norm.{wb}"),
        ("mask_decoder.output_upscaling.3.{wb}", "mask_decoder.upscale_conv2.{wb}"),
        # SAM-HQ's feature fusion: three (conv, LayerNorm2d, GELU, conv) stacks
        ("mask_decoder.compress_vit_feat.0.{wb}", "mask_decoder.compress_vit_conv1.{wb}"),
        ("mask_decoder.compress_vit_feat.1.{wb}", "mask_decoder.compress_vit_norm.{wb}"),
        ("mask_decoder.compress_vit_feat.3.{wb}", "mask_decoder.compress_vit_conv2.{wb}"),
        ("mask_decoder.embedding_encoder.0.{wb}", "mask_decoder.encoder_conv1.{wb}"),
        ("mask_decoder.embedding_encoder.1.{wb}", "mask_decoder.encoder_norm.{wb}"),
        ("mask_decoder.embedding_encoder.3.{wb}", "mask_decoder.encoder_conv2.{wb}"),
        ("mask_decoder.embedding_maskfeature.0.{wb}", "mask_decoder.mask_conv1.{wb}"),
        ("mask_decoder.embedding_maskfeature.1.{wb}", "mask_decoder.mask_norm.{wb}"),
        ("mask_decoder.embedding_maskfeature.3.{wb}", "mask_decoder.mask_conv2.{wb}"),
    ],
    fields={
        "n2": r"[12]",
        "n4": r"[1-4]",
        "attn": r"(?:qkv|proj)\.(?:weight|bias)|rel_pos_h|rel_pos_w",
        "lin": r"lin1|lin2",
        "embed": r"not_a_point_embed|no_mask_embed",
        "token": r"iou_token|mask_tokens",
        "dattn": r"layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
        r"|final_attn_token_to_image",
        "proj": r"q_proj|k_proj|v_proj|out_proj",
    },
)

_MLPS = MlpKeyMap(
    [
        ("mask_decoder.output_hypernetworks_mlps.{i}", "mask_decoder.output_hypernetworks_mlps.{i}"),
        ("mask_decoder.iou_prediction_head", "mask_decoder.iou_prediction_head"),
        ("mask_decoder.hf_mlp", "mask_decoder.hq_mask_mlp"),
    ]
)


def is_sam_hq(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a Meta SAM-family state dict is SAM-HQ's (it has the HQ token ``mask_decoder.hf_token``)."""
    return _HQ_MARK in state_dict


def sam_meta_keys_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Meta SAM / SAM-HQ state dict to transformers' keys (no config inference, no shape checks).

    Any key without a transformers counterpart raises CheckpointError.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    depths = _MLPS.depths(state_dict, "meta")
    for key, value in state_dict.items():
        if key == _PE_META:
            out.update(split_copies(value, _PE_HF))
            continue
        new = _MLPS.to_hf(key, depths) or _KEYS.to_hf(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"SAM checkpoint has {len(unknown)} key(s) that match no SAM weight: {few(unknown)}")
    return out


def sam_hf_to_meta(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers ``SamModel`` / ``SamHQModel`` state dict to Meta's key names (the official layout).

    The inverse of :func:`sam_meta_keys_to_hf`; the two positional-embedding copies of transformers must hold
    the same values (Meta has one tensor); other unknown keys raise CheckpointError.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    depths = _MLPS.depths(state_dict, "hf")
    for key, value in state_dict.items():
        if key in _PE_HF:
            continue
        new = _MLPS.to_meta(key, depths) or _KEYS.to_meta(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"transformers SAM state dict has keys with no Meta counterpart: {few(unknown)}")
    pe = join_copies(state_dict, _PE_HF)
    if pe is not None:
        out[_PE_META] = pe
    return out


def infer_sam_config(state_dict: Mapping[str, torch.Tensor]) -> SamConfig | SamHQConfig:
    """Infer a ``SamConfig`` (or ``SamHQConfig``) from the tensor shapes of a Meta SAM / SAM-HQ state dict."""
    patch = _get(state_dict, "image_encoder.patch_embed.proj.weight")
    hidden, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    grid = int(_get(state_dict, "image_encoder.pos_embed").shape[1])
    layers = count_indices(state_dict, r"^image_encoder\.blocks\.(\d+)\.")
    if layers == 0:
        raise CheckpointError("not a SAM checkpoint: no image_encoder.blocks.* keys")
    rel = [_get(state_dict, f"image_encoder.blocks.{i}.attn.rel_pos_h") for i in range(layers)]
    head_dim = int(rel[0].shape[1])
    global_blocks = [i for i, r in enumerate(rel) if r.shape[0] == 2 * grid - 1]
    windows = {(int(r.shape[0]) + 1) // 2 for r in rel if r.shape[0] != 2 * grid - 1}
    if len(windows) > 1:
        raise CheckpointError(f"SAM checkpoint has blocks of several window sizes {sorted(windows)}")
    vision = dict(
        hidden_size=hidden,
        output_channels=int(_get(state_dict, "image_encoder.neck.0.weight").shape[0]),
        num_hidden_layers=layers,
        num_attention_heads=hidden // head_dim,
        image_size=grid * patch_size,
        patch_size=patch_size,
        mlp_dim=int(_get(state_dict, "image_encoder.blocks.0.mlp.lin1.weight").shape[0]),
        window_size=windows.pop() if windows else 14,
        global_attn_indexes=global_blocks,
        num_pos_feats=int(_get(state_dict, _PE_META).shape[1]),
    )
    dec = "mask_decoder."
    width = int(_get(state_dict, dec + "iou_token.weight").shape[1])
    heads = SAM2_DECODER_HEADS.get(width)
    if heads is None:
        heads = 8
        logger.warning("SAM mask decoder of width %d is not a known release; assuming 8 attention heads", width)
    cross = int(_get(state_dict, dec + "transformer.layers.0.cross_attn_token_to_image.q_proj.weight").shape[0])
    decoder = dict(
        hidden_size=width,
        mlp_dim=int(_get(state_dict, dec + "transformer.layers.0.mlp.lin1.weight").shape[0]),
        num_hidden_layers=count_indices(state_dict, r"^mask_decoder\.transformer\.layers\.(\d+)\."),
        num_attention_heads=heads,
        attention_downsample_rate=max(1, width // cross),
        num_multimask_outputs=int(_get(state_dict, dec + "mask_tokens.weight").shape[0]) - 1,
        iou_head_depth=count_indices(state_dict, r"^mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
        iou_head_hidden_dim=int(_get(state_dict, dec + "iou_prediction_head.layers.0.weight").shape[0]),
    )
    prompt = dict(
        hidden_size=width,
        image_size=grid * patch_size,
        patch_size=patch_size,
        mask_input_channels=int(_get(state_dict, "prompt_encoder.mask_downscaling.3.weight").shape[0]),
        num_point_embeddings=count_indices(state_dict, r"^prompt_encoder\.point_embeddings\.(\d+)\."),
    )
    if is_sam_hq(state_dict):
        decoder["vit_dim"] = int(_get(state_dict, dec + "compress_vit_feat.0.weight").shape[0])
        return SamHQConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


def sam_meta_to_hf(state_dict: Mapping[str, torch.Tensor]) -> tuple[SamConfig | SamHQConfig, dict[str, torch.Tensor]]:
    """Convert a Meta SAM / SAM-HQ state dict for transformers: the config inferred from shapes
    (:func:`infer_sam_config`) and the state dict renamed to ``SamModel`` / ``SamHQModel`` keys."""
    return infer_sam_config(state_dict), sam_meta_keys_to_hf(state_dict)
