"""Architecture tables for the official SAM2, DINOv2 and DINOv3 releases, as transformers configs (and tiny SAM /
SAM-HQ / SAM 3 tracker test configs).

The official checkpoints do not record their architecture, and some of it (attention heads, Hiera window
sizes, global-attention blocks) cannot be read off tensor shapes. These tables hold those facts for every
released size, keyed by what *can* be read off the shapes. ``"test-tiny"`` variants are tiny architectures
used by the test-suite and by speed benchmarks with random weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (DINOv3ConvNextConfig, DINOv3ViTConfig, Dinov2Config, Dinov2WithRegistersConfig, Sam2Config,
                          Sam2VideoConfig, Sam3TrackerConfig, SamConfig, SamHQConfig)


@dataclass(frozen=True)
class HieraSpec:
    """What defines a Hiera trunk. ``embed_dim`` and ``blocks_per_stage`` are inferable from shapes."""

    embed_dim: int
    blocks_per_stage: tuple[int, ...]
    heads: int  # heads of stage 0; doubled at every pooled stage
    window_spec: tuple[int, ...]
    global_blocks: tuple[int, ...]
    pos_embed_bkg: tuple[int, int]


# Official SAM2 / SAM2.1 image-encoder trunks (the two releases share these architectures).
SAM2_VARIANTS: dict[str, HieraSpec] = {
    "tiny": HieraSpec(96, (1, 2, 7, 2), 1, (8, 4, 14, 7), (5, 7, 9), (7, 7)),
    "small": HieraSpec(96, (1, 2, 11, 2), 1, (8, 4, 14, 7), (7, 10, 13), (7, 7)),
    "base_plus": HieraSpec(112, (2, 3, 16, 3), 2, (8, 4, 14, 7), (12, 16, 20), (14, 14)),
    "large": HieraSpec(144, (2, 6, 36, 4), 2, (8, 4, 16, 8), (23, 33, 43), (7, 7)),
    # Test-only: 5 blocks, global attention on the last block of stage 2 (never the first block of a pooled stage).
    "test-tiny": HieraSpec(8, (1, 1, 2, 1), 1, (8, 4, 14, 7), (3,), (7, 7)),
}

# Hiera window sizes assumed for a trunk that is not in SAM2_VARIANTS (stage 0 is read from the checkpoint).
SAM2_DEFAULT_WINDOW_SPEC: tuple[int, ...] = (8, 4, 14, 7)

# SAM2 mask-decoder attention heads by decoder width (not readable from shapes). 256 is every official release;
# 32 and 64 are the test-suite's tiny decoders (``sam2_test_config``, ``sam2_video_test_config``).
SAM2_DECODER_HEADS: dict[int, int] = {256: 8, 32: 2, 64: 2}

# DINOv2 ViT sizes: name -> (hidden size, layers, heads, swiglu ffn). Heads are hidden/64 for every release.
DINOV2_VARIANTS: dict[str, tuple[int, int, int, bool]] = {
    "vits14": (384, 12, 6, False),
    "vitb14": (768, 12, 12, False),
    "vitl14": (1024, 24, 16, False),
    "vitg14": (1536, 40, 24, True),
    "test-tiny": (32, 2, 2, False),
}


def sam2_variant_for(embed_dim: int, blocks_per_stage: tuple[int, ...]) -> str | None:
    """Name of the official variant with this trunk width and depth, or None."""
    for name, spec in SAM2_VARIANTS.items():
        if spec.embed_dim == embed_dim and spec.blocks_per_stage == tuple(blocks_per_stage):
            return name
    return None


def sam2_config(
    spec: HieraSpec | str,
    *,
    fpn_hidden_size: int = 256,
    decoder_hidden_size: int | None = None,
    decoder_mlp_dim: int = 2048,
    decoder_heads: int = 8,
    decoder_layers: int = 2,
    iou_head_hidden_dim: int | None = None,
    image_size: int = 1024,
) -> Sam2Config:
    """A transformers ``Sam2Config`` for a Hiera trunk (a variant name or a :class:`HieraSpec`); ``image_size``: the
    square input side (1024 for every release; a multiple of 32)."""
    if isinstance(spec, str):
        spec = SAM2_VARIANTS[spec]
    n_stages = len(spec.blocks_per_stage)
    dims = [spec.embed_dim * 2**i for i in range(n_stages)]
    heads = [spec.heads * 2**i for i in range(n_stages)]
    backbone = dict(
        model_type="sam2_hiera_det_model",
        hidden_size=spec.embed_dim,
        num_attention_heads=spec.heads,
        blocks_per_stage=list(spec.blocks_per_stage),
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=heads,
        window_size_per_stage=list(spec.window_spec),
        global_attention_blocks=list(spec.global_blocks),
        window_positional_embedding_background_size=list(spec.pos_embed_bkg),
        image_size=[image_size, image_size],
    )
    hidden = decoder_hidden_size or fpn_hidden_size
    return Sam2Config(
        vision_config=dict(
            backbone_config=backbone,
            backbone_channel_list=dims[::-1],
            fpn_hidden_size=fpn_hidden_size,
            backbone_feature_sizes=[[image_size // s] * 2 for s in (4, 8, 16)],
        ),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=image_size),
        mask_decoder_config=dict(
            hidden_size=hidden,
            mlp_dim=decoder_mlp_dim,
            num_attention_heads=decoder_heads,
            num_hidden_layers=decoder_layers,
            iou_head_hidden_dim=iou_head_hidden_dim or hidden,
        ),
    )


def sam2_test_config() -> Sam2Config:
    """The tiny SAM2 used by the tests: Hiera dims 8-64, FPN/decoder width 32."""
    return sam2_config("test-tiny", fpn_hidden_size=32, decoder_mlp_dim=64, decoder_heads=2)


def sam2_video_config(image_config: Sam2Config, **video) -> Sam2VideoConfig:
    """A transformers ``Sam2VideoConfig``: the image model ``image_config`` (trunk, neck, prompt encoder, mask
    decoder) plus the video modules' fields in ``video`` (transformers' defaults, the official sizes, otherwise).
    The memory-attention RoPE grid follows the image size (stride 16)."""
    side = int(image_config.prompt_encoder_config.image_size)
    return Sam2VideoConfig(
        vision_config=image_config.vision_config.to_dict(),
        prompt_encoder_config=image_config.prompt_encoder_config.to_dict(),
        mask_decoder_config=image_config.mask_decoder_config.to_dict(),
        **{"image_size": side, "memory_attention_rope_feat_sizes": [side // 16, side // 16], **video},
    )


def sam2_video_test_config(image_size: int = 256) -> Sam2VideoConfig:
    """The tiny SAM2 video model of the tests: the tiny Hiera trunk of :func:`sam2_test_config` with FPN, decoder and
    memory width 64 and a 1-layer memory attention, on a 256² frame by default (use ``sam_image_size=256``): a
    tracked frame then takes tens of milliseconds on a CPU instead of seconds. (Width 64, not 32: transformers'
    memory cross-attention assumes the official 64-channel memory features, and object pointers of the model width
    are split into 64-wide tokens.)"""
    image = sam2_config("test-tiny", fpn_hidden_size=64, decoder_mlp_dim=64, decoder_heads=2, image_size=image_size)
    return sam2_video_config(
        image, memory_attention_hidden_size=64, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64, memory_encoder_hidden_size=64, memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=64, memory_fuser_embed_dim=64, memory_fuser_intermediate_dim=64,
    )


# Official SAM / SAM-HQ image encoders: name -> (ViT width, depth, heads, global-attention blocks). All of it can
# be read off a checkpoint's shapes (see sam_keys.infer_sam_config); the table builds configs without one.
SAM_VARIANTS: dict[str, tuple[int, int, int, tuple[int, ...]]] = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def sam_config(variant: str, hq: bool = False) -> SamConfig | SamHQConfig:
    """A transformers config of an official SAM (or SAM-HQ) size: ``vit_b``, ``vit_l`` or ``vit_h``."""
    hidden, depth, heads, global_blocks = SAM_VARIANTS[variant]
    vision = dict(hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads,
                  global_attn_indexes=list(global_blocks))
    if hq:
        return SamHQConfig(vision_config=vision, mask_decoder_config={"vit_dim": hidden})
    return SamConfig(vision_config=vision)


def sam_test_config(hq: bool = False) -> SamConfig | SamHQConfig:
    """The tiny SAM (or SAM-HQ) used by the tests: a 2-block ViT of width 32 (block 1 global), decoder width 32.

    The frame is the official 1024² with patch 16, so embeddings are 64² and low-res masks 256² as in the
    released models.
    """
    vision = dict(hidden_size=32, output_channels=32, num_hidden_layers=2, num_attention_heads=2,
                  global_attn_indexes=[1], window_size=8, mlp_dim=64, num_pos_feats=16)
    prompt = dict(hidden_size=32)
    decoder = dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    if hq:
        return SamHQConfig(vision_config=vision, prompt_encoder_config=prompt,
                           mask_decoder_config={**decoder, "vit_dim": 32})
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder)


#: SAM 3 has one released size; transformers' ``Sam3TrackerConfig()`` defaults are its architecture (a ViT of
#: width 1024, 32 blocks, patch 14, in 1008² frames).
SAM3_TRACKER_VARIANTS = ("release",)


def sam3_tracker_config(variant: str = "release") -> Sam3TrackerConfig:
    """A transformers ``Sam3TrackerConfig`` for the SAM 3 release (the only ``variant``)."""
    if variant not in SAM3_TRACKER_VARIANTS:
        raise KeyError(f"unknown SAM 3 tracker size {variant!r}; sizes: {', '.join(SAM3_TRACKER_VARIANTS)}")
    return Sam3TrackerConfig()


def sam3_tracker_test_config() -> Sam3TrackerConfig:
    """The tiny SAM 3 tracker used by the tests: a 2-block ViT of width 32 in the official 1008² frame
    (patch 14: 72² embedding, 288² logits), FPN / decoder width 32."""
    backbone = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, window_size=8, global_attn_indexes=[1], pretrain_image_size=112)
    return Sam3TrackerConfig(
        vision_config=dict(model_type="sam3_vision_model", backbone_config=backbone, fpn_hidden_size=32,
                           backbone_feature_sizes=[[288, 288], [144, 144], [72, 72]]),
        prompt_encoder_config=dict(hidden_size=32),
        mask_decoder_config=dict(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32),
    )


def dinov2_config(
    variant: str = "vitl14", *, num_register_tokens: int = 0, image_size: int = 518
) -> Dinov2Config | Dinov2WithRegistersConfig:
    """A transformers DINOv2 config for an official size (``vits14`` ... ``vitg14``) or ``test-tiny``."""
    hidden, layers, heads, swiglu = DINOV2_VARIANTS[variant]
    return dinov2_config_for(
        hidden, layers, heads, swiglu=swiglu, num_register_tokens=num_register_tokens, image_size=image_size
    )


def dinov2_config_for(
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    *,
    swiglu: bool = False,
    num_register_tokens: int = 0,
    image_size: int = 518,
    mlp_ratio: float = 4,
    patch_size: int = 14,
) -> Dinov2Config | Dinov2WithRegistersConfig:
    """A transformers DINOv2 config from explicit sizes (a ``Dinov2WithRegistersConfig`` when registers > 0)."""
    kwargs = dict(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        mlp_ratio=mlp_ratio,
        image_size=image_size,
        patch_size=patch_size,
        layerscale_value=1e-5,
        use_swiglu_ffn=swiglu,
        layer_norm_eps=1e-6,
    )
    if num_register_tokens:
        return Dinov2WithRegistersConfig(num_register_tokens=num_register_tokens, **kwargs)
    return Dinov2Config(**kwargs)


#: Official DINOv3 ViT sizes (patch 16, 4 registers): name -> (hidden, layers, heads, MLP width, SwiGLU), as built
#: by facebookresearch/dinov3's hub/backbones.py (SwiGLU width: 2/3 of ``ffn_ratio * hidden``, rounded up to a
#: multiple of 8, or of 64 for the 7B). The LVD-1689M and SAT-493M releases share these architectures.
DINOV3_VARIANTS: dict[str, tuple[int, int, int, int, bool]] = {
    "vits16": (384, 12, 6, 1536, False),
    "vits16plus": (384, 12, 6, 1536, True),
    "vitb16": (768, 12, 12, 3072, False),
    "vitl16": (1024, 24, 16, 4096, False),
    "vitl16plus": (1024, 24, 16, 4096, True),
    "vith16plus": (1280, 32, 20, 5120, True),
    "vit7b16": (4096, 40, 32, 8192, True),
    "test-tiny": (32, 2, 2, 64, False),
}


def dinov3_vit_config(hidden: int, layers: int, heads: int, width: int, gated: bool, **extra) -> DINOv3ViTConfig:
    """A transformers ``DINOv3ViTConfig`` of a given shape (SwiGLU MLP when ``gated``); ``extra`` overrides the rest
    (registers, RoPE theta, biases, patch size 16 and LayerNorm eps 1e-5 by default)."""
    return DINOv3ViTConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=width,
        use_gated_mlp=gated,
        hidden_act="silu" if gated else "gelu",
        **{"patch_size": 16, "layer_norm_eps": 1e-5, **extra},
    )


def dinov3_config(variant: str = "vitl16", *, num_register_tokens: int = 4, rope_theta: float = 100.0,
                  key_bias: bool = False) -> DINOv3ViTConfig:
    """A transformers ``DINOv3ViTConfig`` for an official size (``vits16`` ... ``vit7b16``) or ``test-tiny``."""
    return dinov3_vit_config(*DINOV3_VARIANTS[variant], num_register_tokens=num_register_tokens,
                             rope_theta=rope_theta, key_bias=key_bias)


#: Official DINOv3 ConvNeXt sizes (distilled from the 7B ViT, LVD-1689M): name -> (blocks per stage, widths).
DINOV3_CONVNEXT_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "test-tiny": ((1, 1, 2, 1), (8, 16, 24, 32)),
}


def dinov3_convnext_config(variant: str = "large") -> DINOv3ConvNextConfig:
    """A transformers ``DINOv3ConvNextConfig`` for an official size (``tiny`` ... ``large``) or ``test-tiny``."""
    depths, widths = DINOV3_CONVNEXT_VARIANTS[variant]
    return DINOv3ConvNextConfig(depths=list(depths), hidden_sizes=list(widths))
