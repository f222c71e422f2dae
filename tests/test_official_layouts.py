"""Independent guard for the checkpoint key maps: the official files' (key, shape) layouts, written from the
official model code (not from this library's inverse maps), must convert to exactly the state dict of the
transformers model of the config inferred from them, and that config must be the release's.

Sources the layouts were written from (module attribute names -> state-dict keys, persistent buffers, shapes):

* DINOv3: facebookresearch/dinov3 @ 6876159, ``dinov3/hub/backbones.py`` (constructor arguments of every size),
  ``dinov3/models/vision_transformer.py`` and ``dinov3/layers/{attention,block,ffn_layers,layer_scale,
  patch_embed,rope_position_encoding}.py``. The released files hold all-zero ``qkv.bias`` and ``qkv.bias_mask``
  (facebookresearch/dinov3 issue #195, checked on the files by timm's maintainer).
* SAM: facebookresearch/segment-anything @ dca509f, ``build_sam.py`` and ``modeling/*`` (``pixel_mean`` /
  ``pixel_std`` are non-persistent buffers: not in the files, which ``build_sam`` loads strictly).
* SAM-HQ: SysCV/sam-hq @ fb181f8, ``segment_anything/modeling/mask_decoder_hq.py``; the released file is the SAM
  file plus the HQ decoder's new entries under ``mask_decoder.`` (``train/train.py``, end of training).
* SAM 3: facebookresearch/sam3 @ 99d02f2, ``model_builder.py`` (``_create_vit_backbone``, ``_create_vit_neck``,
  ``build_tracker``; ``build_sam3_video_model`` loads ``sam3.pt``'s ``"model"`` strictly into
  ``detector``/``tracker``), ``model/vitdet.py``, ``model/necks.py``, ``model/sam3_tracker_base.py``,
  ``sam/{transformer,mask_decoder,prompt_encoder,common}.py``.

Large tensors are on the meta device (shapes only); the few whose values are read are real.
"""

from __future__ import annotations

import pytest
import torch
from transformers import DINOv3ViTModel, Sam3TrackerModel, SamHQModel, SamModel

from no_time_to_train.errors import CheckpointError
from no_time_to_train.models.checkpoints import load_encoder
from no_time_to_train.models.dinov3_keys import dinov3_meta_to_hf
from no_time_to_train.models.sam3_keys import sam3_meta_to_hf
from no_time_to_train.models.sam_keys import sam_meta_to_hf


def _meta(*shape: int) -> torch.Tensor:
    return torch.empty(shape, device="meta")


def _shapes(sd) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _model_shapes(model_cls, config) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return _shapes(model_cls(config).state_dict())


# ---------------------------------------------------------------------------------------------------- DINOv3
# hub/backbones.py: name -> (embed_dim, depth, num_heads, ffn_ratio, ffn_layer, qkv_bias,
#                            untie_global_and_local_cls_norm)
DINOV3_HUB = {
    "vits16": (384, 12, 6, 4, "mlp", True, False),
    "vits16plus": (384, 12, 6, 6, "swiglu", True, False),
    "vitb16": (768, 12, 12, 4, "mlp", True, False),
    "vitl16": (1024, 24, 16, 4, "mlp", True, False),
    "vitl16-sat493m": (1024, 24, 16, 4, "mlp", True, True),  # the hash eadcf0ff unties the local CLS norm
    "vitl16plus": (1024, 24, 16, 6.0, "swiglu", True, False),
    "vith16plus": (1280, 32, 20, 6.0, "swiglu", True, False),
    "vit7b16": (4096, 40, 32, 3, "swiglu64", False, True),
}


def _dinov3_mlp_width(dim: int, ffn_ratio: float, ffn_layer: str) -> int:
    """SelfAttentionBlock's ``int(dim * ffn_ratio)``; SwiGLUFFN turns it into 2/3 of it aligned up (8, or 64)."""
    hidden = int(dim * ffn_ratio)
    if ffn_layer == "mlp":
        return hidden
    align = 64 if ffn_layer == "swiglu64" else 8
    d = int(hidden * 2 / 3)
    return d + (-d % align)


def dinov3_official(name: str, periods_dtype=torch.float32, depth: int | None = None) -> dict[str, torch.Tensor]:
    """The keys and shapes of ``dinov3_{name}_pretrain_*.pth`` (``depth`` shortens it for a fast real-valued copy)."""
    dim, n_blocks, heads, ffn_ratio, ffn_layer, qkv_bias, untie_local = DINOV3_HUB[name]
    n_blocks = depth or n_blocks
    width = _dinov3_mlp_width(dim, ffn_ratio, ffn_layer)
    head_dim = dim // heads
    sd = {
        "cls_token": _meta(1, 1, dim),
        "storage_tokens": _meta(1, 4, dim),
        "mask_token": _meta(1, dim),
        "patch_embed.proj.weight": _meta(dim, 3, 16, 16),
        "patch_embed.proj.bias": _meta(dim),
        # RopePositionEmbedding._init_weights with base 100: a persistent buffer of D_head // 4 periods
        "rope_embed.periods": (100.0 ** (2 * torch.arange(head_dim // 4) / (head_dim // 2))).to(periods_dtype),
        "norm.weight": _meta(dim),
        "norm.bias": _meta(dim),
    }
    if untie_local:
        sd |= {"local_cls_norm.weight": _meta(dim), "local_cls_norm.bias": _meta(dim)}
    for i in range(n_blocks):
        b = f"blocks.{i}."
        sd |= {b + "norm1.weight": _meta(dim), b + "norm1.bias": _meta(dim),
               b + "attn.qkv.weight": _meta(3 * dim, dim),
               b + "attn.proj.weight": _meta(dim, dim), b + "attn.proj.bias": _meta(dim),
               b + "ls1.gamma": _meta(dim), b + "ls2.gamma": _meta(dim),
               b + "norm2.weight": _meta(dim), b + "norm2.bias": _meta(dim)}
        if qkv_bias:  # LinearKMaskedBias (mask_k_bias=True) registers bias_mask only when there is a bias
            sd |= {b + "attn.qkv.bias": torch.zeros(3 * dim), b + "attn.qkv.bias_mask": torch.zeros(3 * dim)}
        if ffn_layer == "mlp":
            sd |= {b + "mlp.fc1.weight": _meta(width, dim), b + "mlp.fc1.bias": _meta(width),
                   b + "mlp.fc2.weight": _meta(dim, width), b + "mlp.fc2.bias": _meta(dim)}
        else:
            sd |= {b + "mlp.w1.weight": _meta(width, dim), b + "mlp.w1.bias": _meta(width),
                   b + "mlp.w2.weight": _meta(width, dim), b + "mlp.w2.bias": _meta(width),
                   b + "mlp.w3.weight": _meta(dim, width), b + "mlp.w3.bias": _meta(dim)}
    return sd


def test_dinov3_swiglu_widths_of_the_releases():
    """The SwiGLU widths as the official code computes them (a slip here would make the table above moot)."""
    assert _dinov3_mlp_width(384, 6, "swiglu") == 1536
    assert _dinov3_mlp_width(1024, 6.0, "swiglu") == 4096
    assert _dinov3_mlp_width(1280, 6.0, "swiglu") == 5120
    assert _dinov3_mlp_width(4096, 3, "swiglu64") == 8192


@pytest.mark.parametrize("name", list(DINOV3_HUB))
def test_dinov3_release_layout_converts_to_the_release_model(name):
    dim, depth, heads, ffn_ratio, ffn_layer, qkv_bias, _ = DINOV3_HUB[name]
    config, hf = dinov3_meta_to_hf(dinov3_official(name))
    gated = ffn_layer != "mlp"
    got = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size,
           config.use_gated_mlp, config.hidden_act, config.num_register_tokens, config.patch_size, config.rope_theta,
           config.layer_norm_eps, config.query_bias, config.key_bias, config.value_bias, config.proj_bias,
           config.mlp_bias)
    assert got == (dim, depth, heads, _dinov3_mlp_width(dim, ffn_ratio, ffn_layer), gated, "silu" if gated else "gelu",
                   4, 16, 100.0, 1e-5, qkv_bias, False, qkv_bias, True, True)
    assert _shapes(hf) == _model_shapes(DINOv3ViTModel, config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dinov3_periods_stored_in_low_precision_give_theta_100(dtype):
    """The distilled models were trained with bf16 RoPE periods
    (configs/train/dinov3_vitl16_lvd1689m_distilled.yaml), so a file may hold bf16-rounded ones."""
    for name in ("vits16", "vit7b16"):  # head widths 64 and 128
        config, _ = dinov3_meta_to_hf(dinov3_official(name, periods_dtype=dtype))
        assert config.rope_theta == 100.0


def test_dinov3_other_rope_variants_are_still_refused():
    sd = dinov3_official("vits16")
    sd["rope_embed.periods"] = torch.linspace(0.5, 40.0, 16)  # min/max-period RoPE: not theta ** (4k / D)
    with pytest.raises(CheckpointError, match="not theta"):
        dinov3_meta_to_hf(sd)


def test_dinov3_release_file_with_zero_masks_loads_and_has_no_qkv_bias(tmp_path):
    """A real-valued file of the release layout (ViT-S/16+, 2 blocks): the all-zero masks zero the qkv bias, as in
    Meta's forward pass, whatever the stored bias."""
    torch.manual_seed(0)
    sd = {k: torch.randn(v.shape) if v.is_meta else v for k, v in dinov3_official("vits16plus", depth=2).items()}
    sd["blocks.0.attn.qkv.bias"] = torch.randn(3 * 384)  # masked out by the zero mask
    torch.save(sd, tmp_path / "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth")
    model = load_encoder(tmp_path / "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth")
    layer = model.model.layer[0]
    assert layer.attention.k_proj.bias is None
    assert not layer.attention.q_proj.bias.any() and not layer.attention.v_proj.bias.any()
    assert torch.equal(layer.attention.q_proj.weight, sd["blocks.0.attn.qkv.weight"][:384])
    assert torch.equal(layer.attention.v_proj.weight, sd["blocks.0.attn.qkv.weight"][768:])
    assert torch.equal(layer.mlp.gate_proj.weight, sd["blocks.0.mlp.w1.weight"])  # silu(w1 x) * w2 x -> w3
    assert torch.equal(layer.mlp.up_proj.weight, sd["blocks.0.mlp.w2.weight"])
    assert torch.equal(layer.mlp.down_proj.weight, sd["blocks.0.mlp.w3.weight"])
    assert torch.equal(model.embeddings.mask_token.reshape(-1), sd["mask_token"].reshape(-1))


# ------------------------------------------------------------------------------------------------ SAM / SAM-HQ
# build_sam.py: name -> (encoder_embed_dim, encoder_depth, encoder_num_heads, encoder_global_attn_indexes)
SAM_BUILD = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


def _linear(prefix: str, n_out: int, n_in: int) -> dict[str, torch.Tensor]:
    return {prefix + "weight": _meta(n_out, n_in), prefix + "bias": _meta(n_out)}


def _norm(prefix: str, n: int) -> dict[str, torch.Tensor]:
    return {prefix + "weight": _meta(n), prefix + "bias": _meta(n)}


def _conv(prefix: str, *shape: int) -> dict[str, torch.Tensor]:
    """A (transposed) convolution's weight of ``shape`` and its bias (``shape[0]`` outputs, or ``shape[1]`` for a
    transposed one: pass the bias length last)."""
    *weight, bias = shape
    return {prefix + "weight": _meta(*weight), prefix + "bias": _meta(bias)}


def _mlp(prefix: str, dims: list[int]) -> dict[str, torch.Tensor]:
    """SAM's ``MLP``: ``layers.{i}`` Linear(dims[i] -> dims[i + 1])."""
    out = {}
    for i, (n_in, n_out) in enumerate(zip(dims, dims[1:])):
        out |= _linear(f"{prefix}layers.{i}.", n_out, n_in)
    return out


def _sam_prompt_encoder(p: str) -> dict[str, torch.Tensor]:
    """PromptEncoder(embed_dim=256, mask_in_chans=16); its PositionEmbeddingRandom(128) buffer is persistent."""
    sd = {p + "pe_layer.positional_encoding_gaussian_matrix": _meta(2, 128),
          p + "not_a_point_embed.weight": _meta(1, 256), p + "no_mask_embed.weight": _meta(1, 256)}
    sd |= {f"{p}point_embeddings.{i}.weight": _meta(1, 256) for i in range(4)}
    sd |= _conv(p + "mask_downscaling.0.", 4, 1, 2, 2, 4) | _norm(p + "mask_downscaling.1.", 4)
    sd |= _conv(p + "mask_downscaling.3.", 16, 4, 2, 2, 16) | _norm(p + "mask_downscaling.4.", 16)
    sd |= _conv(p + "mask_downscaling.6.", 256, 16, 1, 1, 256)
    return sd


def _two_way_transformer(p: str) -> dict[str, torch.Tensor]:
    """TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8), cross attention at 256 / 2;
    its MLPs are ``MLPBlock`` (``lin1`` / ``lin2``) in SAM, SAM-HQ and the SAM 3 tracker."""
    def attention(q: str, internal: int) -> dict[str, torch.Tensor]:
        return (_linear(q + "q_proj.", internal, 256) | _linear(q + "k_proj.", internal, 256)
                | _linear(q + "v_proj.", internal, 256) | _linear(q + "out_proj.", 256, internal))

    sd = attention(p + "final_attn_token_to_image.", 128) | _norm(p + "norm_final_attn.", 256)
    for i in range(2):
        b = f"{p}layers.{i}."
        sd |= attention(b + "self_attn.", 256) | attention(b + "cross_attn_token_to_image.", 128)
        sd |= attention(b + "cross_attn_image_to_token.", 128)
        sd |= _linear(b + "mlp.lin1.", 2048, 256) | _linear(b + "mlp.lin2.", 256, 2048)
        for n in range(1, 5):
            sd |= _norm(f"{b}norm{n}.", 256)
    return sd


def _sam_mask_decoder(p: str) -> dict[str, torch.Tensor]:
    """MaskDecoder(transformer_dim=256, num_multimask_outputs=3, iou_head_depth=3, iou_head_hidden_dim=256)."""
    sd = _two_way_transformer(p + "transformer.")
    sd |= {p + "iou_token.weight": _meta(1, 256), p + "mask_tokens.weight": _meta(4, 256)}
    sd |= _conv(p + "output_upscaling.0.", 256, 64, 2, 2, 64) | _norm(p + "output_upscaling.1.", 64)
    sd |= _conv(p + "output_upscaling.3.", 64, 32, 2, 2, 32)
    for i in range(4):
        sd |= _mlp(f"{p}output_hypernetworks_mlps.{i}.", [256, 256, 256, 32])
    sd |= _mlp(p + "iou_prediction_head.", [256, 256, 256, 4])
    return sd


def sam_official(name: str, hq: bool = False) -> dict[str, torch.Tensor]:
    """The keys and shapes of ``sam_{name}_*.pth`` (or ``sam_hq_{name}.pth``)."""
    dim, depth, heads, global_blocks = SAM_BUILD[name]
    e = "image_encoder."
    sd = {e + "pos_embed": _meta(1, 64, 64, dim)} | _conv(e + "patch_embed.proj.", dim, 3, 16, 16, dim)
    for i in range(depth):
        b = f"{e}blocks.{i}."
        side = 64 if i in global_blocks else 14  # rel-pos tables of the attended size: the 64² grid or the window
        sd |= _norm(b + "norm1.", dim) | _norm(b + "norm2.", dim)
        sd |= _linear(b + "attn.qkv.", 3 * dim, dim) | _linear(b + "attn.proj.", dim, dim)
        sd |= {b + f"attn.rel_pos_{hw}": _meta(2 * side - 1, dim // heads) for hw in "hw"}
        sd |= _linear(b + "mlp.lin1.", 4 * dim, dim) | _linear(b + "mlp.lin2.", dim, 4 * dim)
    sd |= {e + "neck.0.weight": _meta(256, dim, 1, 1), e + "neck.2.weight": _meta(256, 256, 3, 3)}  # bias=False
    sd |= _norm(e + "neck.1.", 256) | _norm(e + "neck.3.", 256)
    sd |= _sam_prompt_encoder("prompt_encoder.") | _sam_mask_decoder("mask_decoder.")
    if hq:  # MaskDecoderHQ's additions (vit_dim = encoder_embed_dim)
        d = "mask_decoder."
        sd |= {d + "hf_token.weight": _meta(1, 256)} | _mlp(d + "hf_mlp.", [256, 256, 256, 32])
        sd |= _conv(d + "compress_vit_feat.0.", dim, 256, 2, 2, 256) | _norm(d + "compress_vit_feat.1.", 256)
        sd |= _conv(d + "compress_vit_feat.3.", 256, 32, 2, 2, 32)
        sd |= _conv(d + "embedding_encoder.0.", 256, 64, 2, 2, 64) | _norm(d + "embedding_encoder.1.", 64)
        sd |= _conv(d + "embedding_encoder.3.", 64, 32, 2, 2, 32)
        sd |= _conv(d + "embedding_maskfeature.0.", 64, 32, 3, 3, 64) | _norm(d + "embedding_maskfeature.1.", 64)
        sd |= _conv(d + "embedding_maskfeature.3.", 32, 64, 3, 3, 32)
    return sd


@pytest.mark.parametrize("hq", [False, True], ids=["sam", "sam_hq"])
@pytest.mark.parametrize("name", list(SAM_BUILD))
def test_sam_release_layout_converts_to_the_release_model(name, hq):
    dim, depth, heads, global_blocks = SAM_BUILD[name]
    config, hf = sam_meta_to_hf(sam_official(name, hq))
    assert type(config).__name__ == ("SamHQConfig" if hq else "SamConfig")
    v, d, p = config.vision_config, config.mask_decoder_config, config.prompt_encoder_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, tuple(v.global_attn_indexes)) == \
        (dim, depth, heads, global_blocks)
    assert (v.image_size, v.patch_size, v.window_size, v.mlp_dim, v.output_channels, v.num_pos_feats) == \
        (1024, 16, 14, 4 * dim, 256, 128)
    assert (d.hidden_size, d.mlp_dim, d.num_hidden_layers, d.num_attention_heads, d.attention_downsample_rate,
            d.num_multimask_outputs, d.iou_head_depth, d.iou_head_hidden_dim) == (256, 2048, 2, 8, 2, 3, 3, 256)
    assert (p.hidden_size, p.image_size, p.patch_size, p.mask_input_channels, p.num_point_embeddings) == \
        (256, 1024, 16, 16, 4)
    if hq:
        assert d.vit_dim == dim
    assert _shapes(hf) == _model_shapes(SamHQModel if hq else SamModel, config)


# ------------------------------------------------------------------------------------------------------ SAM 3
def sam3_official() -> dict[str, torch.Tensor]:
    """The keys and shapes of ``sam3.pt``'s ``"model"`` that the tracker uses, plus a sample of the rest."""
    t = "detector.backbone.vision_backbone.trunk."
    # _create_vit_backbone: img 1008, pretrain 336, patch 14, dim 1024, depth 32, heads 16, mlp_ratio 4.625,
    # global (7, 15, 23, 31), window 24, RoPE (persistent freqs_cis), CLS slot in pos_embed, ln_pre, no patch bias
    sd = {t + "patch_embed.proj.weight": _meta(1024, 3, 14, 14), t + "pos_embed": _meta(1, 24 * 24 + 1, 1024)}
    sd |= _norm(t + "ln_pre.", 1024)
    for i in range(32):
        b = f"{t}blocks.{i}."
        side = 72 if i in (7, 15, 23, 31) else 24
        sd |= _norm(b + "norm1.", 1024) | _norm(b + "norm2.", 1024)
        sd |= _linear(b + "attn.qkv.", 3072, 1024) | _linear(b + "attn.proj.", 1024, 1024)
        sd[b + "attn.freqs_cis"] = torch.empty(side * side, 32, dtype=torch.complex64, device="meta")
        sd |= _linear(b + "mlp.fc1.", 4736, 1024) | _linear(b + "mlp.fc2.", 1024, 4736)
    # Sam3DualViTDetNeck(d_model=256, scale_factors=(4, 2, 1, 0.5), add_sam2_neck=True): convs and sam2_convs
    for neck in ("convs", "sam2_convs"):
        n = f"detector.backbone.vision_backbone.{neck}."
        sd |= _conv(n + "0.dconv_2x2_0.", 1024, 512, 2, 2, 512) | _conv(n + "0.dconv_2x2_1.", 512, 256, 2, 2, 256)
        sd |= _conv(n + "1.dconv_2x2.", 1024, 512, 2, 2, 512)
        for level, width in enumerate((256, 512, 1024, 1024)):
            sd |= _conv(f"{n}{level}.conv_1x1.", 256, width, 1, 1, 256)
            sd |= _conv(f"{n}{level}.conv_3x3.", 256, 256, 3, 3, 256)
    # the detector's own modules (a sample): not the tracker's
    sd |= _linear("detector.transformer.decoder.layers.0.linear1.", 2048, 256)
    sd |= {"detector.backbone.language_backbone.encoder.token_embedding.weight": _meta(49408, 1024)}
    # build_tracker -> Sam3TrackerBase: SAM heads (use_high_res_features, pred_obj_scores(_mlp)) ...
    k = "tracker."
    sd |= _sam_prompt_encoder(k + "sam_prompt_encoder.") | _sam_mask_decoder(k + "sam_mask_decoder.")
    d = k + "sam_mask_decoder."
    sd |= {d + "obj_score_token.weight": _meta(1, 256)} | _mlp(d + "pred_obj_score_head.", [256, 256, 256, 1])
    sd |= _conv(d + "conv_s0.", 32, 256, 1, 1, 32) | _conv(d + "conv_s1.", 64, 256, 1, 1, 64)
    # ... and the video memory (a sample of the memory attention / encoder)
    sd |= {k + "maskmem_tpos_enc": _meta(7, 1, 1, 64), k + "no_mem_embed": _meta(1, 1, 256),
           k + "no_mem_pos_enc": _meta(1, 1, 256), k + "no_obj_ptr": _meta(1, 256),
           k + "no_obj_embed_spatial": _meta(1, 64)}
    sd |= _conv(k + "mask_downsample.", 1, 1, 4, 4, 1) | _mlp(k + "obj_ptr_proj.", [256, 256, 256, 256])
    sd |= _linear(k + "obj_ptr_tpos_proj.", 64, 256) | _linear(k + "transformer.encoder.layers.0.linear1.", 2048, 256)
    sd |= _conv(k + "maskmem_backbone.out_proj.", 64, 256, 1, 1, 64)
    return sd


def test_sam3_release_layout_converts_to_the_release_tracker():
    config, hf = sam3_meta_to_hf(sam3_official())
    vit = config.vision_config.backbone_config
    assert (vit.hidden_size, vit.num_hidden_layers, vit.num_attention_heads, vit.intermediate_size, vit.patch_size,
            vit.image_size, vit.pretrain_image_size, vit.window_size, list(vit.global_attn_indexes)) == \
        (1024, 32, 16, 4736, 14, 1008, 336, 24, [7, 15, 23, 31])
    assert config.vision_config.fpn_hidden_size == 256
    assert list(config.vision_config.scale_factors) == [4.0, 2.0, 1.0, 0.5]
    d, p = config.mask_decoder_config, config.prompt_encoder_config
    assert (d.hidden_size, d.mlp_dim, d.num_hidden_layers, d.num_attention_heads, d.attention_downsample_rate,
            d.num_multimask_outputs, d.iou_head_depth, d.iou_head_hidden_dim) == (256, 2048, 2, 8, 2, 3, 3, 256)
    assert (p.hidden_size, p.image_size, p.patch_size, p.mask_input_channels, p.num_point_embeddings) == \
        (256, 1008, 14, 16, 4)
    assert _shapes(hf) == _model_shapes(Sam3TrackerModel, config)
