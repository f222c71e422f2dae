"""SAM 3 tracker loading: Meta's ``sam3.pt`` (key map inverted on a tiny model, shape inference on the release's
layout) and transformers' ``sam3_video`` directories (what ``facebook/sam3`` holds); the ``sam3`` preset."""

from __future__ import annotations

import pytest
import torch
from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3VideoConfig, Sam3VideoModel

from no_time_to_train import MethodConfig, ReferenceSegmenter
from no_time_to_train.errors import CheckpointError
from no_time_to_train.models import checkpoints
from no_time_to_train.models.checkpoints import load_proposer
from no_time_to_train.models.configs import sam3_tracker_test_config
from no_time_to_train.models.sam3_keys import infer_sam3_tracker_config, sam3_hf_to_meta, sam3_meta_keys_to_hf
from no_time_to_train.presets import get_preset


def _tiny(seed: int = 0) -> Sam3TrackerModel:
    torch.manual_seed(seed)
    model = Sam3TrackerModel(sam3_tracker_test_config()).eval()
    with torch.no_grad():  # Meta's file holds one prompt positional encoding; transformers two copies of it
        model.shared_image_embedding.positional_embedding.copy_(model.prompt_encoder.shared_embedding.positional_embedding)
    return model


def _vit_fields(config: Sam3TrackerConfig) -> dict:
    vit = config.vision_config.backbone_config
    names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
             "image_size", "pretrain_image_size", "window_size", "global_attn_indexes")
    return {n: getattr(vit, n) for n in names}


def _decoder_fields(config: Sam3TrackerConfig) -> dict:
    dec, prompt = config.mask_decoder_config, config.prompt_encoder_config
    return {"fpn": config.vision_config.fpn_hidden_size, "scales": list(config.vision_config.scale_factors),
            "sizes": [list(s) for s in config.vision_config.backbone_feature_sizes],
            **{n: getattr(dec, n) for n in ("hidden_size", "mlp_dim", "num_attention_heads", "num_hidden_layers",
                                            "iou_head_hidden_dim", "iou_head_depth", "num_multimask_outputs")},
            **{f"prompt_{n}": getattr(prompt, n) for n in ("hidden_size", "mask_input_channels",
                                                           "num_point_embeddings", "image_size", "patch_size")}}


def _meta_file(model: Sam3TrackerModel, path, extra: dict | None = None):
    """``model`` written as Meta's sam3.pt, with detector heads and tracker video modules beside it."""
    sd = sam3_hf_to_meta(model.state_dict(), model.config)
    sd.update({
        "detector.transformer.decoder.query_embed.weight": torch.zeros(4, 8),  # detector-only: dropped
        "detector.backbone.vision_backbone.convs.0.conv_1x1.weight": torch.zeros(8, 8, 1, 1),
        "tracker.maskmem_backbone.out_proj.weight": torch.zeros(4, 8, 1, 1),  # video memory: dropped
        "tracker.transformer.encoder.layers.0.linear1.weight": torch.zeros(8, 8),
        "tracker.obj_ptr_proj.layers.0.weight": torch.zeros(8, 8),
        "tracker.no_obj_ptr": torch.zeros(1, 8),
        **(extra or {}),
    })
    torch.save({"model": sd}, path)
    return path


def test_meta_sam3_file_loads_exactly_with_its_architecture_inferred(tmp_path):
    model = _tiny()
    meta = sam3_hf_to_meta(model.state_dict(), model.config)
    # Meta's layout: one qkv per block, a CLS slot in the position embedding, a RoPE table per block
    assert meta["detector.backbone.vision_backbone.trunk.blocks.0.attn.qkv.weight"].shape == (96, 32)
    assert meta["detector.backbone.vision_backbone.trunk.pos_embed"].shape == (1, 1 + 8 * 8, 32)
    assert meta["detector.backbone.vision_backbone.trunk.blocks.0.attn.freqs_cis"].shape == (8 * 8, 8)  # window 8
    assert meta["detector.backbone.vision_backbone.trunk.blocks.1.attn.freqs_cis"].shape == (72 * 72, 8)  # global
    assert "detector.backbone.vision_backbone.sam2_convs.0.dconv_2x2_1.weight" in meta  # the 4x level
    assert "detector.backbone.vision_backbone.sam2_convs.1.dconv_2x2.weight" in meta  # the 2x level
    assert "tracker.sam_mask_decoder.iou_token.weight" in meta and "tracker.no_mem_embed" in meta
    assert "tracker.sam_mask_decoder.transformer.layers.0.mlp.lin1.weight" in meta  # SAM 3's MLPBlock names

    loaded = load_proposer(_meta_file(model, tmp_path / "sam3.pt"))
    assert type(loaded) is Sam3TrackerModel
    assert _vit_fields(loaded.config) == _vit_fields(model.config)
    assert _decoder_fields(loaded.config) == _decoder_fields(model.config)
    expected = model.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    pixels = torch.rand(1, 3, 1008, 1008)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.vision_encoder(pixels).last_hidden_state,
                                   model.vision_encoder(pixels).last_hidden_state)


def test_release_layout_infers_the_release_config():
    """The official SAM 3 layout (built on the meta device: shapes only) gives back transformers' defaults, which
    are the release's; without RoPE tables the release's heads, windows and global blocks are assumed."""
    with torch.device("meta"):
        model = Sam3TrackerModel(Sam3TrackerConfig())
    release = model.config
    meta = sam3_hf_to_meta(model.state_dict(), release)
    assert meta["detector.backbone.vision_backbone.trunk.pos_embed"].shape == (1, 577, 1024)
    inferred = infer_sam3_tracker_config(meta)
    assert _vit_fields(inferred) == _vit_fields(release)
    assert _vit_fields(inferred)["global_attn_indexes"] == [7, 15, 23, 31]
    assert _decoder_fields(inferred) == _decoder_fields(release)
    no_rope = {k: v for k, v in meta.items() if not k.endswith("freqs_cis")}
    assert _vit_fields(infer_sam3_tracker_config(no_rope)) == _vit_fields(release)
    assert set(sam3_meta_keys_to_hf(meta)) == set(model.state_dict())


def test_sam3_video_directory_and_hub_id_give_its_tracker(tmp_path, monkeypatch):
    """A transformers sam3_video directory or hub repo (facebook/sam3's format): only the tracker's part is read."""
    tracker = sam3_tracker_test_config().to_dict()
    tracker["model_type"] = "sam3_tracker_video"
    small = dict(hidden_size=32, num_layers=1, num_attention_heads=2, intermediate_size=64)
    detector = dict(
        model_type="sam3", vision_config=tracker["vision_config"], geometry_encoder_config=small,
        detr_encoder_config=small, detr_decoder_config=small, mask_decoder_config=dict(hidden_size=32),
        text_config=dict(model_type="clip_text_model", vocab_size=64, hidden_size=32, intermediate_size=64,
                         projection_dim=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                         eos_token_id=2, bos_token_id=1, pad_token_id=1),
    )
    torch.manual_seed(0)
    video = Sam3VideoModel(Sam3VideoConfig(detector_config=detector, tracker_config=tracker)).eval()
    video.save_pretrained(tmp_path / "sam3")
    loaded = load_proposer(tmp_path / "sam3")
    assert type(loaded) is Sam3TrackerModel
    sd = video.state_dict()
    for key, value in loaded.state_dict().items():
        if key.startswith("vision_encoder.backbone."):
            source = "detector_model." + key
        elif key.startswith("vision_encoder.neck."):
            source = key.replace("vision_encoder.neck.", "tracker_neck.")
        else:
            source = "tracker_model." + key
        assert torch.equal(value, sd[source]), key

    import huggingface_hub

    asked = {}

    def fake_snapshot(repo_id, allow_patterns, local_files_only):
        asked.update(repo_id=repo_id, patterns=allow_patterns)
        return str(tmp_path / "sam3")

    monkeypatch.setattr(checkpoints, "_hub_local_only", lambda *a: False)
    monkeypatch.setattr(checkpoints, "_hub_model_type", lambda repo_id, local_only=False: "sam3_video")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    from_hub = load_proposer("facebook/sam3")
    assert asked == {"repo_id": "facebook/sam3", "patterns": ["config.json", "model*.safetensors*"]}
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in from_hub.state_dict().items())


def test_bad_sam3_files_are_refused_with_what_was_found(tmp_path):
    model = _tiny()
    with pytest.raises(CheckpointError, match=r"SAM 3 checkpoint has 1 key\(s\) that match no SAM 3 tracker "
                       r"weight: detector.backbone.vision_backbone.trunk.blocks.0.attn.extra"):
        load_proposer(_meta_file(model, tmp_path / "odd.pt",
                                 {"detector.backbone.vision_backbone.trunk.blocks.0.attn.extra": torch.zeros(1)}))
    sd = sam3_hf_to_meta(model.state_dict(), model.config)
    del sd["tracker.sam_mask_decoder.conv_s0.weight"]
    torch.save({"model": sd}, tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match=r"cut.pt does not match the inferred architecture: missing 1 "
                       r"weight\(s\): tracker.sam_mask_decoder.conv_s0.weight"):
        load_proposer(tmp_path / "cut.pt")


def test_sam3_preset_sets_the_frame_size_and_the_hub_id():
    preset = get_preset("sam3")
    assert preset.proposer == "facebook/sam3" and preset.settings == {"sam_image_size": 1008}
    assert MethodConfig().replace(**preset.settings).sam_image_size == 1008
    seg = ReferenceSegmenter.from_preset("sam3", sam2=_tiny())
    assert seg.config.sam_image_size == 1008 and seg.proposer.image_size == 1008
