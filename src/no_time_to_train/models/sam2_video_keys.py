"""Key map of SAM2's video-only modules between Meta's checkpoints and transformers' ``Sam2VideoModel``.

Meta's ``sam2_hiera_*.pt`` / ``sam2.1_hiera_*.pt`` hold the whole video model. The image side (Hiera trunk, FPN
neck, prompt encoder, mask decoder) is mapped by :mod:`.sam2_keys`; this module maps the rest: the memory
attention, the memory encoder (mask down-sampler, fuser, projections), the object-pointer projections and the
learned memory embeddings, and infers the ``Sam2VideoConfig`` fields they imply from tensor shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from transformers import Sam2Config, Sam2VideoConfig

from .configs import sam2_video_config

from ..errors import CheckpointError
from .keymap import KeyMap, MlpKeyMap, few
from .sam2_keys import is_sam2_video_only_key

_KEYS = KeyMap(
    [
        ("memory_attention.layers.{i}.{attn}.{qkv}.{wb}", "memory_attention.layers.{i}.{attn}.{qkv}.{wb}"),
        ("memory_attention.layers.{i}.{attn}.out_proj.{wb}", "memory_attention.layers.{i}.{attn}.o_proj.{wb}"),
        ("memory_attention.layers.{i}.{linear}.{wb}", "memory_attention.layers.{i}.{linear}.{wb}"),
        ("memory_attention.layers.{i}.norm{n3}.{wb}", "memory_attention.layers.{i}.layer_norm{n3}.{wb}"),
        ("memory_attention.norm.{wb}", "memory_attention.layer_norm.{wb}"),
        ("memory_encoder.pix_feat_proj.{wb}", "memory_encoder.feature_projection.{wb}"),
        ("memory_encoder.out_proj.{wb}", "memory_encoder.projection.{wb}"),
        ("memory_encoder.fuser.layers.{i}.dwconv.{wb}", "memory_encoder.memory_fuser.layers.{i}.depthwise_conv.{wb}"),
        ("memory_encoder.fuser.layers.{i}.norm.{wb}", "memory_encoder.memory_fuser.layers.{i}.layer_norm.{wb}"),
        ("memory_encoder.fuser.layers.{i}.pwconv{n2}.{wb}", "memory_encoder.memory_fuser.layers.{i}.pointwise_conv{n2}.{wb}"),
        ("memory_encoder.fuser.layers.{i}.gamma", "memory_encoder.memory_fuser.layers.{i}.scale"),
        ("mask_downsample.{wb}", "mask_downsample.{wb}"),
        ("obj_ptr_tpos_proj.{wb}", "temporal_positional_encoding_projection_layer.{wb}"),
        ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        ("no_mem_pos_enc", "no_memory_positional_encoding"),
        ("no_obj_ptr", "no_object_pointer"),
        ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ],
    fields={
        "attn": r"self_attn|cross_attn_image",
        "qkv": r"q_proj|k_proj|v_proj",
        "linear": r"linear1|linear2",
        "n3": r"[123]",
        "n2": r"[12]",
    },
)
_MLPS = MlpKeyMap([("obj_ptr_proj", "object_pointer_proj")])

# Meta's mask down-sampler is one nn.Sequential: (conv, LayerNorm2d, GELU) per stride-2 stage, then a 1x1 conv.
_DOWN_META = re.compile(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(weight|bias)$")
_DOWN_HF = re.compile(r"^memory_encoder\.mask_downsampler\.(?:layers\.(\d+)\.(conv|layer_norm)|final_conv)\.(weight|bias)$")


def _downsampler_stages(keys) -> int:
    """Number of stride-2 stages of a Meta mask down-sampler (its last Sequential index is ``3 * stages``)."""
    idx = [int(m.group(1)) for k in keys if (m := _DOWN_META.match(k))]
    return max(idx) // 3 if idx else 0


def sam2_video_meta_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The video-only entries of a Meta SAM2 state dict (see ``is_sam2_video_only_key``), renamed to
    ``Sam2VideoModel`` keys. Image-side keys are ignored; an unknown video-only key raises CheckpointError."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    video = {k: v for k, v in state_dict.items() if is_sam2_video_only_key(k)}
    depths = _MLPS.depths(video, "meta")
    stages = _downsampler_stages(video)
    for key, value in video.items():
        m = _DOWN_META.match(key)
        if m:
            j, kind = int(m.group(1)), m.group(2)
            if j == 3 * stages:
                out[f"memory_encoder.mask_downsampler.final_conv.{kind}"] = value
            elif j % 3 in (0, 1):
                part = "conv" if j % 3 == 0 else "layer_norm"
                out[f"memory_encoder.mask_downsampler.layers.{j // 3}.{part}.{kind}"] = value
            else:
                unknown.append(key)
            continue
        new = _MLPS.to_hf(key, depths) or _KEYS.to_hf(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"SAM2 checkpoint has {len(unknown)} video key(s) that match no Sam2VideoModel "
                              f"weight: {few(unknown)}")
    return out


def sam2_video_hf_to_meta(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`sam2_video_meta_to_hf`: the video-only entries of a ``Sam2VideoModel`` state dict in
    Meta's names (keys of the image model are ignored; map them with ``sam2_hf_to_meta``)."""
    out: dict[str, torch.Tensor] = {}
    depths = _MLPS.depths(state_dict, "hf")
    n_down = 1 + max((int(m.group(1)) for k in state_dict if (m := _DOWN_HF.match(k)) and m.group(1)), default=-1)
    for key, value in state_dict.items():
        m = _DOWN_HF.match(key)
        if m:
            j = 3 * n_down if m.group(1) is None else 3 * int(m.group(1)) + (m.group(2) == "layer_norm")
            out[f"memory_encoder.mask_downsampler.encoder.{j}.{m.group(3)}"] = value
            continue
        new = _MLPS.to_meta(key, depths) or _KEYS.to_meta(key)
        if new is not None:
            out[new] = value
    return out


def infer_sam2_video_config(state_dict: Mapping[str, torch.Tensor], image_config: Sam2Config) -> Sam2VideoConfig:
    """The ``Sam2VideoConfig`` of a Meta SAM2 state dict: the image model's config plus what the video-only
    tensors' shapes tell (memory width, attention depth and MLP width, memory-bank size, fuser widths, whether
    object pointers get a temporal encoding and occluded frames a learned embedding: SAM 2.1 has both, SAM 2.0
    neither). Memory-attention heads (1) and the RoPE grid (image size / 16) are those of every release."""

    def get(key: str) -> torch.Tensor:
        if key not in state_dict:
            raise CheckpointError(f"SAM2 checkpoint has no video weights ({key!r} is missing): it holds only the "
                                  "image model, which cannot track; use Meta's full sam2*_hiera_*.pt file")
        return state_dict[key]

    hidden = int(get("memory_attention.layers.0.linear1.weight").shape[1])
    n_layers = 1 + max(int(m.group(1)) for k in state_dict
                       if (m := re.match(r"^memory_attention\.layers\.(\d+)\.", k)))
    fuser_layers = 1 + max((int(m.group(1)) for k in state_dict
                            if (m := re.match(r"^memory_encoder\.fuser\.layers\.(\d+)\.", k))), default=-1)
    stages = _downsampler_stages(state_dict)
    return sam2_video_config(
        image_config,
        num_maskmem=int(get("maskmem_tpos_enc").shape[0]),
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=n_layers,
        memory_attention_feed_forward_hidden_size=int(get("memory_attention.layers.0.linear1.weight").shape[0]),
        memory_encoder_hidden_size=int(get("memory_encoder.pix_feat_proj.weight").shape[0]),
        memory_encoder_output_channels=int(get("memory_encoder.out_proj.weight").shape[0]),
        mask_downsampler_embed_dim=int(get(f"memory_encoder.mask_downsampler.encoder.{3 * stages}.weight").shape[0]),
        mask_downsampler_total_stride=2**stages,
        memory_fuser_num_layers=fuser_layers,
        memory_fuser_embed_dim=int(get("memory_encoder.fuser.layers.0.dwconv.weight").shape[0]),
        memory_fuser_intermediate_dim=int(get("memory_encoder.fuser.layers.0.pwconv1.weight").shape[0]),
        enable_temporal_pos_encoding_for_object_pointers="obj_ptr_tpos_proj.weight" in state_dict,
        enable_occlusion_spatial_embedding="no_obj_embed_spatial" in state_dict,
    )
