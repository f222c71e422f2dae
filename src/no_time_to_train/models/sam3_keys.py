"""Key maps for the SAM 3 tracker: Meta's ``sam3.pt`` and transformers' ``sam3_video`` layout -> ``Sam3TrackerModel``.

Meta's ``sam3.pt`` holds the whole SAM 3 (``{"model": state_dict}``): the detector under ``detector.`` and the
tracker under ``tracker.``. The tracker has no image encoder of its own: it reads the detector's ViT
(``detector.backbone.vision_backbone.trunk.``) through a second FPN neck (``...vision_backbone.sam2_convs.``).
Its prompt encoder and mask decoder are SAM2's modules under SAM2's names, so :mod:`.sam2_keys` maps them.
What the proposer needs is kept (ViT, tracker neck, prompt encoder, mask decoder); the detector's heads, text
encoder and the tracker's video memory are dropped. One naming difference from SAM2 in the mask decoder: the
two-way transformer's MLPs are SAM 1's ``MLPBlock`` (``mlp.lin1`` / ``mlp.lin2``) where SAM2 has a 2-layer ``MLP``
(``mlp.layers.0`` / ``mlp.layers.1``); the two compute the same (ReLU between), so they are renamed.

Differences from a plain rename, all in the ViT: the absolute position embedding has a leading CLS slot that
transformers drops; ``attn.qkv`` is one tensor in Meta's files and three in transformers'; the RoPE tables
(``attn.freqs_cis``) are buffers in Meta's files and computed by transformers.

The Hugging Face ``facebook/sam3`` repo is a ``sam3_video`` model (``detector_model.`` / ``tracker_model.`` /
``tracker_neck.``); :func:`sam3_video_keys_to_tracker` picks the tracker's part of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import partial

import torch
from transformers import Sam3TrackerConfig

from ..errors import CheckpointError
from .keymap import KeyMap, count_indices, few, required
from .sam2_keys import infer_sam2_decoder, is_sam2_video_only_key, sam2_hf_to_meta, sam2_meta_keys_to_hf

#: A tensor that shape inference needs; a missing one means the file is not SAM 3.
_get = partial(required, family="SAM 3")

VIT_META = "detector.backbone.vision_backbone.trunk."
NECK_META = "detector.backbone.vision_backbone.sam2_convs."
TRACKER_META = "tracker."
VIT_HF = "vision_encoder.backbone."
NECK_HF = "vision_encoder.neck.fpn_layers."

# The tracker's video-only modules under SAM 3's names (SAM2's own names are in sam2_keys).
_TRACKER_VIDEO_ONLY = ("transformer.", "maskmem_backbone.")
# transformers' sam3_video names of what the tracker model does not have (its video memory).
_HF_VIDEO_ONLY = re.compile(
    r"^(memory_|mask_downsample|object_pointer_proj|temporal_positional_encoding_projection_layer|"
    r"no_memory_positional_encoding|no_object_pointer|occlusion_spatial_embedding_parameter)"
)

_HF_NECKS = ("tracker_neck.", "detector_model.vision_encoder.tracker_neck.")

# The tracker mask decoder's two-way-transformer MLPs: SAM 3's ``MLPBlock`` names <-> SAM2's ``MLP`` names.
_DECODER_MLP = re.compile(r"^(sam_mask_decoder\.transformer\.layers\.\d+\.mlp\.)(lin1|lin2|layers\.0|layers\.1)\.")
_MLP_TO_SAM2 = {"lin1": "layers.0", "lin2": "layers.1"}
_MLP_TO_SAM3 = {v: k for k, v in _MLP_TO_SAM2.items()}


def _rename_decoder_mlp(key: str, names: Mapping[str, str]) -> str:
    """``key`` (a tracker key without ``tracker.``) with its decoder-MLP layer renamed by ``names``, if it has one."""
    m = _DECODER_MLP.match(key)
    if m is None or m.group(2) not in names:
        return key
    return m.group(1) + names[m.group(2)] + key[m.end(2):]


def _tracker_as_sam2(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``tracker.`` entries of ``sam3.pt``, prefix removed, in SAM2's key names (see the module docstring)."""
    return {_rename_decoder_mlp(k[len(TRACKER_META):], _MLP_TO_SAM2): v
            for k, v in state_dict.items() if k.startswith(TRACKER_META)}

_VIT = KeyMap(
    [
        ("patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
        ("ln_pre.{wb}", "layer_norm.{wb}"),
        ("blocks.{i}.norm{n2}.{wb}", "layers.{i}.layer_norm{n2}.{wb}"),
        ("blocks.{i}.attn.proj.{wb}", "layers.{i}.attention.o_proj.{wb}"),
        ("blocks.{i}.mlp.fc{n2}.{wb}", "layers.{i}.mlp.fc{n2}.{wb}"),
    ],
    fields={"n2": r"[12]"},
)
_QKV_META = re.compile(r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
_QKV_HF = re.compile(r"^layers\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$")
_ROPE_META = re.compile(r"^blocks\.(\d+)\.attn\.freqs_cis$")

# The FPN level's modules: Meta name -> transformers name. A 4x level has two transposed convolutions
# (dconv_2x2_0 / dconv_2x2_1), a 2x level one (dconv_2x2); 1x and 0.5x levels have none (max-pooling has no weights).
_NECK_TO_HF = {"dconv_2x2_0": "scale_layers.0", "dconv_2x2_1": "scale_layers.2", "dconv_2x2": "scale_layers.0",
               "conv_1x1": "proj1", "conv_3x3": "proj2"}
_NECK_META = re.compile(r"^(\d+)\.(\w+)\.(weight|bias)$")
_NECK_HF = re.compile(r"^(\d+)\.(scale_layers\.\d|proj1|proj2)\.(weight|bias)$")


def looks_like_sam3(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is Meta's SAM 3 layout (a tracker mask decoder next to the detector's ViT)."""
    return any(k.startswith(TRACKER_META + "sam_mask_decoder.") for k in state_dict) and any(
        k.startswith(VIT_META) for k in state_dict
    )


def _vit_to_hf(key: str, value: torch.Tensor, out: dict[str, torch.Tensor]) -> bool:
    """Put the transformers tensor(s) of ViT key ``key`` (Meta name, prefix removed) in ``out``; False if unknown."""
    if key == "pos_embed":
        out[VIT_HF + "embeddings.position_embeddings"] = value[:, 1:]  # drop the CLS slot
    elif m := _QKV_META.match(key):
        for name, part in zip("qkv", value.chunk(3, dim=0)):
            out[f"{VIT_HF}layers.{m.group(1)}.attention.{name}_proj.{m.group(2)}"] = part
    elif _ROPE_META.match(key):
        pass  # computed by transformers
    elif (new := _VIT.to_hf(key)) is not None:
        out[VIT_HF + new] = value
    else:
        return False
    return True


def _neck_to_hf(key: str, value: torch.Tensor, out: dict[str, torch.Tensor]) -> bool:
    m = _NECK_META.match(key)
    if not m or m.group(2) not in _NECK_TO_HF:
        return False
    out[f"{NECK_HF}{m.group(1)}.{_NECK_TO_HF[m.group(2)]}.{m.group(3)}"] = value
    return True


def sam3_meta_keys_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename Meta's ``sam3.pt`` state dict to ``Sam3TrackerModel`` keys (no config inference, no shape checks).

    The detector's other parts and the tracker's video memory are dropped; an unknown key in the parts kept
    (ViT, tracker neck, tracker prompt encoder / mask decoder) raises CheckpointError.
    """
    out: dict[str, torch.Tensor] = {}
    tracker = {k: v for k, v in _tracker_as_sam2(state_dict).items()
               if not (k.startswith(_TRACKER_VIDEO_ONLY) or is_sam2_video_only_key(k))}
    unknown: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(VIT_META):
            known = _vit_to_hf(key[len(VIT_META):], value, out)
        elif key.startswith(NECK_META):
            known = _neck_to_hf(key[len(NECK_META):], value, out)
        else:  # the tracker's part is renamed below; the detector's own heads are not used by the tracker
            known = key.startswith((TRACKER_META, "detector."))
        if not known:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"SAM 3 checkpoint has {len(unknown)} key(s) that match no SAM 3 tracker weight: "
                              f"{few(unknown)}")
    try:
        out.update(sam2_meta_keys_to_hf(tracker))
    except CheckpointError as exc:
        raise CheckpointError(f"SAM 3 tracker part: {exc}") from None
    return out


def sam3_hf_to_meta(
    state_dict: Mapping[str, torch.Tensor], config: Sam3TrackerConfig | None = None
) -> dict[str, torch.Tensor]:
    """Rename a ``Sam3TrackerModel`` state dict to Meta's ``sam3.pt`` names (the inverse of
    :func:`sam3_meta_keys_to_hf` on the weights it keeps).

    The CLS slot of the position embedding is written as zeros (transformers has none). With ``config``, each
    block also gets a RoPE table of Meta's shape ``(tokens, head_dim / 2)`` (zeros: only the shape is read back).
    Unknown keys raise CheckpointError.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    decoder: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    levels_4x = {m.group(1) for k in state_dict if (m := re.match(rf"^{re.escape(NECK_HF)}(\d+)\.scale_layers\.2\.", k))}
    for key, value in state_dict.items():
        if key.startswith(VIT_HF):
            sub = key[len(VIT_HF):]
            if sub == "embeddings.position_embeddings":
                out[VIT_META + "pos_embed"] = torch.cat([value.new_zeros(value.shape[0], 1, value.shape[2]), value], 1)
            elif m := _QKV_HF.match(sub):
                qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
            elif (new := _VIT.to_meta(sub)) is not None:
                out[VIT_META + new] = value
            else:
                unknown.append(key)
        elif key.startswith(NECK_HF) and (m := _NECK_HF.match(key[len(NECK_HF):])):
            level, module, wb = m.groups()
            if module == "scale_layers.0":
                name = "dconv_2x2_0" if level in levels_4x else "dconv_2x2"
            else:
                name = {"scale_layers.2": "dconv_2x2_1", "proj1": "conv_1x1", "proj2": "conv_3x3"}[module]
            out[f"{NECK_META}{level}.{name}.{wb}"] = value
        elif key.startswith(("prompt_encoder.", "mask_decoder.", "shared_image_embedding.", "no_memory_embedding")):
            decoder[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"transformers SAM 3 tracker state dict has keys with no Meta counterpart: "
                              f"{few(unknown)}")
    for (block, wb), parts in qkv.items():
        out[f"{VIT_META}blocks.{block}.attn.qkv.{wb}"] = torch.cat([parts[c] for c in "qkv"], 0)
    out.update({TRACKER_META + _rename_decoder_mlp(k, _MLP_TO_SAM3): v for k, v in sam2_hf_to_meta(decoder).items()})
    if config is not None:
        vit = config.vision_config.backbone_config
        grid = vit.image_size // vit.patch_size
        half = vit.hidden_size // vit.num_attention_heads // 2
        device = next(iter(state_dict.values())).device
        for block in range(vit.num_hidden_layers):
            side = grid if block in vit.global_attn_indexes else vit.window_size
            out[f"{VIT_META}blocks.{block}.attn.freqs_cis"] = torch.zeros(side * side, half, dtype=torch.complex64,
                                                                         device=device)
    return out


def _rope_tokens(state_dict: Mapping[str, torch.Tensor]) -> dict[int, tuple[int, int]]:
    """Block index -> (tokens, head_dim / 2) of Meta's RoPE tables, when the file has them."""
    return {int(m.group(1)): tuple(v.shape[-2:]) for k, v in state_dict.items()
            if k.startswith(VIT_META) and (m := _ROPE_META.match(k[len(VIT_META):]))}


def infer_sam3_tracker_config(state_dict: Mapping[str, torch.Tensor]) -> Sam3TrackerConfig:
    """Infer a ``Sam3TrackerConfig`` from the tensor shapes of Meta's ``sam3.pt`` (never from a file name).

    From shapes: ViT width, depth, MLP width, patch size, pre-training grid (position embedding), FPN width and
    levels, and the decoder (:func:`~.sam2_keys.infer_sam2_decoder`). From the RoPE tables, when present: head
    width, window size, the global-attention blocks and the frame size (a global block's table covers the whole
    grid). Without them the release's values are used (heads of width 64, windows of 24, global attention in
    the last block of each quarter, 1008² frames).
    """
    patch_w = _get(state_dict, VIT_META + "patch_embed.proj.weight")
    hidden, patch = int(patch_w.shape[0]), int(patch_w.shape[-1])
    layers = count_indices(state_dict, rf"^{re.escape(VIT_META)}blocks\.(\d+)\.")
    if layers == 0:
        raise CheckpointError(f"not a SAM 3 checkpoint: no {VIT_META}blocks.* keys")
    pretrain_grid = math.isqrt(int(_get(state_dict, VIT_META + "pos_embed").shape[1]) - 1)
    rope = _rope_tokens(state_dict)
    if len(rope) == layers:
        head_dim = 2 * rope[0][1]
        tokens = {b: t for b, (t, _) in rope.items()}
        grid = math.isqrt(max(tokens.values()))
        window = math.isqrt(min(tokens.values()))
        global_blocks = [b for b in range(layers) if tokens[b] == grid * grid] if window != grid else []
    else:
        head_dim, grid, window = 64, 1008 // patch, 24
        global_blocks = sorted({max(0, round((q + 1) * layers / 4) - 1) for q in range(4)})
    levels = sorted({int(m.group(1)) for k in state_dict if (m := re.match(rf"^{re.escape(NECK_META)}(\d+)\.", k))})
    if not levels:
        raise CheckpointError(f"not a SAM 3 checkpoint with a tracker: no {NECK_META}* keys")
    scales = []
    for level in levels:
        if f"{NECK_META}{level}.dconv_2x2_0.weight" in state_dict:
            scales.append(4.0)
        elif f"{NECK_META}{level}.dconv_2x2.weight" in state_dict:
            scales.append(2.0)
        else:  # 1x, then 0.5x (max-pooling has no weights)
            scales.append(1.0 if 1.0 not in scales else 0.5)
    fpn = int(_get(state_dict, f"{NECK_META}0.conv_1x1.weight").shape[0])
    decoder, prompt = infer_sam2_decoder(_tracker_as_sam2(state_dict))
    backbone = dict(
        model_type="sam3_vit_model", hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // head_dim),
        intermediate_size=int(_get(state_dict, VIT_META + "blocks.0.mlp.fc1.weight").shape[0]), patch_size=patch,
        image_size=grid * patch, pretrain_image_size=pretrain_grid * patch, window_size=window,
        global_attn_indexes=global_blocks,
    )
    return Sam3TrackerConfig(
        vision_config=dict(model_type="sam3_vision_model", backbone_config=backbone, fpn_hidden_size=fpn,
                           scale_factors=scales,
                           backbone_feature_sizes=[[int(grid * s)] * 2 for s in scales[:3]]),
        prompt_encoder_config={**prompt, "image_size": grid * patch, "patch_size": patch},
        mask_decoder_config=decoder,
    )


def sam3_meta_to_hf(state_dict: Mapping[str, torch.Tensor]) -> tuple[Sam3TrackerConfig, dict[str, torch.Tensor]]:
    """Convert Meta's ``sam3.pt`` state dict for transformers: ``(Sam3TrackerConfig, Sam3TrackerModel state dict)``."""
    return infer_sam3_tracker_config(state_dict), sam3_meta_keys_to_hf(state_dict)


def sam3_video_keys_to_tracker(keys: list[str]) -> dict[str, str]:
    """transformers ``sam3_video`` key -> ``Sam3TrackerModel`` key, for the keys the tracker model has.

    ``tracker_model.X`` -> ``X`` (but not its video memory), ``detector_model.vision_encoder.backbone.`` ->
    ``vision_encoder.backbone.`` and ``tracker_neck.`` (or ``detector_model.vision_encoder.tracker_neck.``) ->
    ``vision_encoder.neck.``; the rest is not kept.
    """
    out = {}
    for key in keys:
        if key.startswith("tracker_model."):
            sub = key
            while sub.startswith("tracker_model."):  # transformers 5.24 saves it twice: tracker_model.tracker_model.
                sub = sub[len("tracker_model."):]
            if not _HF_VIDEO_ONLY.match(sub):
                out[key] = sub
        elif key.startswith("detector_model.vision_encoder.backbone."):
            out[key] = key[len("detector_model."):]
        elif key.startswith(_HF_NECKS):
            out[key] = "vision_encoder.neck." + key.split("tracker_neck.", 1)[1]
    return out
