"""Key map between Meta's SAM2 / SAM2.1 checkpoints and transformers' ``Sam2Model``.

Meta's files (``sam2_hiera_*.pt``, ``sam2.1_hiera_*.pt``) hold ``{"model": state_dict}`` without any record of
the architecture. :func:`sam2_meta_to_hf` renames the image-side keys to transformers' names and infers the
``Sam2Config`` from tensor shapes; what shapes cannot tell (attention heads, Hiera windows, global-attention
blocks) comes from :data:`~no_time_to_train.models.configs.SAM2_VARIANTS`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import partial

import torch
from transformers import Sam2Config

from ..errors import CheckpointError
from .configs import (
    SAM2_DECODER_HEADS,
    SAM2_DEFAULT_WINDOW_SPEC,
    SAM2_VARIANTS,
    HieraSpec,
    sam2_config,
    sam2_variant_for,
)
from .keymap import KeyMap, MlpKeyMap, count_indices, few, join_copies, required, split_copies

#: A tensor that shape inference needs; a missing one means the file is not SAM2.
_get = partial(required, family="SAM2")

logger = logging.getLogger(__name__)

# Video-only modules of the Meta checkpoints: dropped, the image model has no use for them.
SAM2_VIDEO_ONLY_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
)
SAM2_VIDEO_ONLY_KEYS = frozenset(
    {"maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial"}
)

_PE_META = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_PE_HF = ("prompt_encoder.shared_embedding.positional_embedding", "shared_image_embedding.positional_embedding")
_POINT_HF = "prompt_encoder.point_embed.weight"
_POINT_META = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")
_TRUNK = "image_encoder.trunk."

# One-to-one renames as (Meta, transformers) key templates, fields as in FIELDS plus these. MLPs, whose
# transformers names depend on their depth, are in ``_MLPS``.
_KEYS = KeyMap(
    [
        ("image_encoder.trunk.{pos}", "vision_encoder.backbone.{pos}"),
        ("image_encoder.trunk.patch_embed.proj.{wb}", "vision_encoder.backbone.patch_embed.projection.{wb}"),
        ("image_encoder.trunk.blocks.{i}.norm{n2}.{wb}", "vision_encoder.backbone.blocks.{i}.layer_norm{n2}.{wb}"),
        ("image_encoder.trunk.blocks.{i}.{proj}.{wb}", "vision_encoder.backbone.blocks.{i}.{proj}.{wb}"),
        ("image_encoder.neck.convs.{i}.conv.{wb}", "vision_encoder.neck.convs.{i}.{wb}"),
        ("sam_prompt_encoder.{embed}.weight", "prompt_encoder.{embed}.weight"),
        ("sam_prompt_encoder.mask_downscaling.0.{wb}", "prompt_encoder.mask_embed.conv1.{wb}"),
        ("sam_prompt_encoder.mask_downscaling.1.{wb}", "prompt_encoder.mask_embed.layer_norm1.{wb}"),
        ("sam_prompt_encoder.mask_downscaling.3.{wb}", "prompt_encoder.mask_embed.conv2.{wb}"),
        ("sam_prompt_encoder.mask_downscaling.4.{wb}", "prompt_encoder.mask_embed.layer_norm2.{wb}"),
        ("sam_prompt_encoder.mask_downscaling.6.{wb}", "prompt_encoder.mask_embed.conv3.{wb}"),
        ("sam_mask_decoder.{token}.weight", "mask_decoder.{token}.weight"),
        ("sam_mask_decoder.transformer.{attn}.{qkv}.{wb}", "mask_decoder.transformer.{attn}.{qkv}.{wb}"),
        ("sam_mask_decoder.transformer.{attn}.out_proj.{wb}", "mask_decoder.transformer.{attn}.o_proj.{wb}"),
        (
            "sam_mask_decoder.transformer.layers.{i}.norm{n4}.{wb}",
            "mask_decoder.transformer.layers.{i}.layer_norm{n4}.{wb}",
        ),
        ("sam_mask_decoder.transformer.norm_final_attn.{wb}", "mask_decoder.transformer.layer_norm_final_attn.{wb}"),
        ("sam_mask_decoder.output_upscaling.0.{wb}", "mask_decoder.upscale_conv1.{wb}"),
        ("sam_mask_decoder.output_upscaling.1.{wb}", "mask_decoder.upscale_layer_norm.{wb}"),
        ("sam_mask_decoder.output_upscaling.3.{wb}", "mask_decoder.upscale_conv2.{wb}"),
        ("sam_mask_decoder.{conv}.{wb}", "mask_decoder.{conv}.{wb}"),
        ("no_mem_embed", "no_memory_embedding"),
    ],
    fields={
        "pos": r"pos_embed|pos_embed_window",
        "n2": r"[12]",
        "n4": r"[1-4]",
        "proj": r"attn\.qkv|attn\.proj|proj",
        "embed": r"not_a_point_embed|no_mask_embed",
        "token": r"iou_token|mask_tokens|obj_score_token",
        "attn": r"layers\.\d+\.(?:self_attn|cross_attn_token_to_image|cross_attn_image_to_token)"
        r"|final_attn_token_to_image",
        "qkv": r"q_proj|k_proj|v_proj",
        "conv": r"conv_s0|conv_s1",
    },
)

# Multi-layer perceptrons, by prefix (layer names depend on the depth, see MlpKeyMap).
_MLPS = MlpKeyMap(
    [
        ("image_encoder.trunk.blocks.{i}.mlp", "vision_encoder.backbone.blocks.{i}.mlp"),
        ("sam_mask_decoder.transformer.layers.{i}.mlp", "mask_decoder.transformer.layers.{i}.mlp"),
        ("sam_mask_decoder.output_hypernetworks_mlps.{i}", "mask_decoder.output_hypernetworks_mlps.{i}"),
        ("sam_mask_decoder.iou_prediction_head", "mask_decoder.iou_prediction_head"),
        ("sam_mask_decoder.pred_obj_score_head", "mask_decoder.pred_obj_score_head"),
    ]
)


def is_sam2_video_only_key(key: str) -> bool:
    """Whether a Meta SAM2 key belongs to a video-only module (memory attention/encoder, object pointers...)."""
    return key in SAM2_VIDEO_ONLY_KEYS or key.startswith(SAM2_VIDEO_ONLY_PREFIXES)


def sam2_meta_keys_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Meta SAM2 state dict to transformers' ``Sam2Model`` keys (no config inference, no shape checks).

    Video-only entries are dropped; any other key without a transformers counterpart raises CheckpointError.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    points: dict[int, torch.Tensor] = {}
    mlp_depth = _MLPS.depths(state_dict, "meta")
    for key, value in state_dict.items():
        if is_sam2_video_only_key(key):
            continue
        if key == _PE_META:
            out.update(split_copies(value, _PE_HF))
            continue
        m = _POINT_META.match(key)
        if m:
            points[int(m.group(1))] = value
            continue
        new = _MLPS.to_hf(key, mlp_depth) or _KEYS.to_hf(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(
            f"SAM2 checkpoint has {len(unknown)} key(s) that match no SAM2 image-model weight: {few(unknown)}"
        )
    if points:
        if sorted(points) != list(range(len(points))):
            raise CheckpointError(f"SAM2 checkpoint has non-contiguous point embeddings {sorted(points)}")
        out[_POINT_HF] = torch.cat([points[i].reshape(1, -1) for i in range(len(points))], dim=0)
    return out


def sam2_hf_to_meta(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers ``Sam2Model`` state dict to Meta's SAM2 key names (the official file layout).

    The inverse of :func:`sam2_meta_to_hf` on image-side weights. The two positional-embedding copies of
    transformers must hold the same values (Meta has one tensor); other unknown keys raise CheckpointError.
    """
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    mlp_depth = _MLPS.depths(state_dict, "hf")
    for key, value in state_dict.items():
        if key in _PE_HF:
            continue
        if key == _POINT_HF:
            for i in range(value.shape[0]):
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1].clone()
            continue
        new = _MLPS.to_meta(key, mlp_depth) or _KEYS.to_meta(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"transformers SAM2 state dict has keys with no Meta counterpart: {few(unknown)}")
    pe = join_copies(state_dict, _PE_HF)
    if pe is not None:
        out[_PE_META] = pe
    return out


def infer_sam2_config(state_dict: Mapping[str, torch.Tensor]) -> Sam2Config:
    """Infer a ``Sam2Config`` from the tensor shapes of a Meta SAM2 state dict (never from a file name).

    Readable from shapes: Hiera width, blocks per stage (where ``blocks.{i}.proj`` changes the width), MLP ratio,
    pos-embed background size, stage-0 window, FPN width, mask-decoder width / MLP width / depth, IoU head,
    mask-input channels. Attention heads, later windows and global-attention blocks come from
    ``SAM2_VARIANTS``; for an unknown trunk they are assumed and a warning is logged.
    """
    patch = _get(state_dict, _TRUNK + "patch_embed.proj.weight")
    embed_dim = int(patch.shape[0])
    n_blocks = count_indices(state_dict, r"^image_encoder\.trunk\.blocks\.(\d+)\.")
    if n_blocks == 0:
        raise CheckpointError("not a SAM2 checkpoint: no image_encoder.trunk.blocks.* keys")
    starts = [0] + [i for i in range(n_blocks) if f"{_TRUNK}blocks.{i}.proj.weight" in state_dict]
    starts = sorted(set(starts))
    blocks_per_stage = tuple(b - a for a, b in zip(starts, starts[1:] + [n_blocks]))
    bkg = tuple(int(s) for s in _get(state_dict, _TRUNK + "pos_embed").shape[-2:])
    window0 = int(_get(state_dict, _TRUNK + "pos_embed_window").shape[-1])
    mlp_ratio = _get(state_dict, _TRUNK + "blocks.0.mlp.layers.0.weight").shape[0] / embed_dim
    fpn = int(_get(state_dict, "image_encoder.neck.convs.0.conv.weight").shape[0])

    variant = sam2_variant_for(embed_dim, blocks_per_stage)
    if variant is not None:
        known = SAM2_VARIANTS[variant]
        spec = HieraSpec(
            embed_dim, blocks_per_stage, known.heads, (window0, *known.window_spec[1:]), known.global_blocks, bkg
        )
    else:
        n_stages = len(blocks_per_stage)
        windows = list(SAM2_DEFAULT_WINDOW_SPEC[:n_stages])
        windows += [SAM2_DEFAULT_WINDOW_SPEC[-1]] * (n_stages - len(windows))
        windows[0] = window0
        stage = min(2, n_stages - 1)
        global_blocks = (sum(blocks_per_stage[: stage + 1]) - 1,)
        spec = HieraSpec(embed_dim, blocks_per_stage, 1, tuple(windows), global_blocks, bkg)
        logger.warning(
            "SAM2 checkpoint has an unknown Hiera trunk (embed dim %d, blocks per stage %s); assuming "
            "1 attention head doubled per stage, windows %s and global attention at block(s) %s",
            embed_dim, list(blocks_per_stage), list(spec.window_spec), list(global_blocks),
        )

    config = sam2_config(spec, fpn_hidden_size=fpn)
    config.vision_config.backbone_config.mlp_ratio = float(mlp_ratio)
    decoder, prompt = infer_sam2_decoder(state_dict)
    for name, value in decoder.items():
        setattr(config.mask_decoder_config, name, value)
    for name, value in prompt.items():
        setattr(config.prompt_encoder_config, name, value)
    return config


def infer_sam2_decoder(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """The mask-decoder and prompt-encoder config fields read from the shapes of a Meta SAM2-style state dict
    (``sam_mask_decoder.*`` / ``sam_prompt_encoder.*`` keys: SAM2, SAM 2.1 and the SAM 3 tracker).

    Returns ``(mask_decoder_config, prompt_encoder_config)`` as dicts of field values. The attention heads are
    not in the shapes: they come from ``SAM2_DECODER_HEADS`` by width (8 assumed, with a warning, otherwise).
    """
    dec = "sam_mask_decoder."
    hidden = int(_get(state_dict, dec + "iou_token.weight").shape[1])
    cross_dim = int(_get(state_dict, dec + "transformer.layers.0.cross_attn_token_to_image.q_proj.weight").shape[0])
    heads = SAM2_DECODER_HEADS.get(hidden)
    if heads is None:
        heads = 8
        logger.warning("SAM2 mask decoder of width %d is not a known release; assuming 8 attention heads", hidden)
    decoder = dict(
        hidden_size=hidden,
        mlp_dim=int(_get(state_dict, dec + "transformer.layers.0.mlp.layers.0.weight").shape[0]),
        num_attention_heads=heads,
        num_hidden_layers=count_indices(state_dict, r"^sam_mask_decoder\.transformer\.layers\.(\d+)\."),
        iou_head_hidden_dim=int(_get(state_dict, dec + "iou_prediction_head.layers.0.weight").shape[0]),
        iou_head_depth=count_indices(state_dict, r"^sam_mask_decoder\.iou_prediction_head\.layers\.(\d+)\."),
        num_multimask_outputs=int(_get(state_dict, dec + "mask_tokens.weight").shape[0]) - 1,
        attention_downsample_rate=max(1, hidden // cross_dim),
    )
    prompt = dict(
        hidden_size=hidden,
        mask_input_channels=int(_get(state_dict, "sam_prompt_encoder.mask_downscaling.3.weight").shape[0]),
        num_point_embeddings=count_indices(state_dict, _POINT_META.pattern.replace("$", "")),
    )
    return decoder, prompt


def sam2_meta_to_hf(state_dict: Mapping[str, torch.Tensor]) -> tuple[Sam2Config, dict[str, torch.Tensor]]:
    """Convert a Meta SAM2/SAM2.1 state dict (the ``"model"`` entry of the official ``.pt``) for transformers.

    Returns the ``Sam2Config`` inferred from shapes (:func:`infer_sam2_config`) and the state dict renamed to
    ``Sam2Model`` keys. Video-only modules are dropped; unknown keys raise CheckpointError.
    """
    return infer_sam2_config(state_dict), sam2_meta_keys_to_hf(state_dict)
