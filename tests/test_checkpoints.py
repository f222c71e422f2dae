"""Checkpoint loading: Meta-format round trips, shape inference, strictness, HF directories, errors."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest
import torch
from transformers import DINOv3ViTModel, Dinov2Model, Dinov2WithRegistersModel, Sam2Model, SamHQModel, SamModel

from no_time_to_train.errors import CheckpointError
from no_time_to_train.models import dinov2_keys, dinov3_keys, sam2_keys, sam_keys
from no_time_to_train.models.checkpoints import (
    DEFAULT_ENCODER,
    DEFAULT_SAM2,
    dinov2_hf_to_meta,
    dinov2_meta_to_hf,
    dinov3_hf_to_meta,
    load_encoder,
    load_sam2,
    sam2_hf_to_meta,
    sam2_meta_to_hf,
)
from no_time_to_train.models.configs import (
    DINOV2_VARIANTS,
    DINOV3_VARIANTS,
    SAM2_VARIANTS,
    SAM_VARIANTS,
    HieraSpec,
    dinov2_config,
    dinov2_config_for,
    dinov3_config,
    sam2_config,
    sam2_test_config,
    sam_config,
    sam_test_config,
)
from no_time_to_train.models.keymap import KeyMap

SAM2_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
VIDEO_KEYS = {
    "memory_attention.layers.0.linear1.weight": (8, 4),
    "memory_encoder.fuser.layers.0.gamma": (4,),
    "maskmem_tpos_enc": (7, 1, 1, 4),
    "no_mem_pos_enc": (1, 1, 4),
    "no_obj_ptr": (1, 32),
    "obj_ptr_proj.layers.0.weight": (32, 32),
    "obj_ptr_tpos_proj.weight": (4, 32),
    "mask_downsample.weight": (1, 1, 4, 4),
    "no_obj_embed_spatial": (1, 4),
}


def _random_sam2(config=None, seed=0) -> Sam2Model:
    torch.manual_seed(seed)
    model = Sam2Model(config or sam2_test_config()).eval()
    with torch.no_grad():  # random init leaves the two PE copies different; Meta files hold one tensor
        model.shared_image_embedding.positional_embedding.copy_(
            model.prompt_encoder.shared_embedding.positional_embedding
        )
        model.no_memory_embedding.normal_()  # zeros at init: make the round trip meaningful
    return model


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def sam2_official(tmp_path_factory):
    """(original model, path of the same weights in Meta's file layout with video-only extras)."""
    model = _random_sam2()
    meta = sam2_hf_to_meta(model.state_dict())
    for key, shape in VIDEO_KEYS.items():
        meta[key] = torch.randn(shape)
    path = tmp_path_factory.mktemp("sam2") / "sam2_hiera_tiny_test.pt"
    torch.save({"model": meta}, path)
    return model, path


@pytest.fixture(scope="module")
def dinov2_official(tmp_path_factory):
    torch.manual_seed(3)
    model = Dinov2Model(dinov2_config("test-tiny")).eval()
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_test_pretrain.pth"
    torch.save(dinov2_hf_to_meta(model.state_dict()), path)
    return model, path


# ------------------------------------------------------------------------------------------- SAM2 round trip
def test_sam2_meta_file_round_trip(sam2_official):
    original, path = sam2_official
    loaded = load_sam2(path)
    assert isinstance(loaded, Sam2Model) and not loaded.training
    _assert_same_state(original, loaded)

    a, b = original.config, loaded.config
    bb_a, bb_b = a.vision_config.backbone_config, b.vision_config.backbone_config
    for field in (
        "hidden_size", "blocks_per_stage", "embed_dim_per_stage", "num_attention_heads_per_stage",
        "window_size_per_stage", "global_attention_blocks", "window_positional_embedding_background_size",
        "mlp_ratio",
    ):
        assert getattr(bb_a, field) == getattr(bb_b, field), field
    assert a.vision_config.fpn_hidden_size == b.vision_config.fpn_hidden_size
    assert a.vision_config.backbone_channel_list == b.vision_config.backbone_channel_list
    for field in ("hidden_size", "mlp_dim", "num_attention_heads", "num_hidden_layers", "iou_head_hidden_dim",
                  "iou_head_depth", "num_multimask_outputs", "attention_downsample_rate"):
        assert getattr(a.mask_decoder_config, field) == getattr(b.mask_decoder_config, field), field

    torch.manual_seed(5)
    pixels = torch.randn(1, 3, 1024, 1024)
    points = torch.rand(1, 1, 2, 2) * 1024
    labels = torch.tensor([[[1, 0]]])
    boxes = torch.tensor([[[100.0, 200.0, 600.0, 700.0]]])
    masks = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        feats_a, feats_b = original.get_image_embeddings(pixels), loaded.get_image_embeddings(pixels)
        for fa, fb in zip(feats_a, feats_b):
            assert torch.equal(fa, fb)
        kw = dict(image_embeddings=feats_a, input_points=points, input_labels=labels, input_boxes=boxes,
                  input_masks=masks)
        out_a, out_b = original(**kw), loaded(**kw)
    assert torch.equal(out_a.pred_masks, out_b.pred_masks)
    assert torch.equal(out_a.iou_scores, out_b.iou_scores)
    assert torch.equal(out_a.object_score_logits, out_b.object_score_logits)


def test_sam2_video_keys_dropped_and_no_mem_embed_kept(sam2_official):
    original, path = sam2_official
    meta = torch.load(path, weights_only=True)["model"]
    assert "no_mem_embed" in meta and "sam_prompt_encoder.point_embeddings.3.weight" in meta
    _, hf = sam2_meta_to_hf(meta)
    assert torch.equal(hf["no_memory_embedding"], original.no_memory_embedding)
    assert not any(k.startswith(("memory_", "maskmem", "obj_ptr", "mask_downsample")) for k in hf)
    pe = meta["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert torch.equal(hf["shared_image_embedding.positional_embedding"], pe)
    assert torch.equal(hf["prompt_encoder.shared_embedding.positional_embedding"], pe)


def test_sam2_bf16_and_frozen(sam2_official):
    _, path = sam2_official
    model = load_sam2(path, device="cpu", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


# ------------------------------------------------------------------------------------------ shape inference
@pytest.mark.parametrize("variant", ["tiny", "small", "base_plus", "large"])
def test_sam2_official_trunk_inference(variant):
    with torch.device("meta"):  # shapes only, no memory
        model = Sam2Model(sam2_config(variant))
    meta = sam2_hf_to_meta(model.state_dict())
    assert meta["image_encoder.neck.convs.0.conv.weight"].is_meta
    config, hf = sam2_meta_to_hf(meta)
    spec = SAM2_VARIANTS[variant]
    bb = config.vision_config.backbone_config
    assert bb.hidden_size == spec.embed_dim
    assert tuple(bb.blocks_per_stage) == spec.blocks_per_stage
    assert bb.num_attention_heads_per_stage == [spec.heads * 2**i for i in range(4)]
    assert tuple(bb.window_size_per_stage) == spec.window_spec
    assert tuple(bb.global_attention_blocks) == spec.global_blocks
    assert tuple(bb.window_positional_embedding_background_size) == spec.pos_embed_bkg
    assert config.vision_config.fpn_hidden_size == 256
    assert config.mask_decoder_config.num_attention_heads == 8
    assert config.mask_decoder_config.mlp_dim == 2048
    assert set(hf) == set(model.state_dict())


def test_sam2_unknown_trunk_assumptions_are_logged(caplog):
    spec = HieraSpec(8, (1, 1, 3, 1), 4, (6, 4, 14, 7), (2,), (5, 5))
    cfg = sam2_config(spec, fpn_hidden_size=32, decoder_mlp_dim=64, decoder_heads=2)
    with torch.device("meta"):
        model = Sam2Model(cfg)
    with caplog.at_level(logging.WARNING):
        config, _ = sam2_meta_to_hf(sam2_hf_to_meta(model.state_dict()))
    assert "unknown Hiera trunk" in caplog.text
    bb = config.vision_config.backbone_config
    assert bb.blocks_per_stage == [1, 1, 3, 1]
    assert bb.num_attention_heads_per_stage == [1, 2, 4, 8]
    assert bb.window_size_per_stage == [6, 4, 14, 7]  # stage 0 from the tensor
    assert bb.global_attention_blocks == [4]  # last block of stage 2
    assert bb.window_positional_embedding_background_size == [5, 5]


@pytest.mark.parametrize("variant", ["vits14", "vitb14", "vitl14", "vitg14"])
@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_official_inference(variant, registers):
    hidden, layers, heads, swiglu = DINOV2_VARIANTS[variant]
    cls = Dinov2WithRegistersModel if registers else Dinov2Model
    with torch.device("meta"):
        model = cls(dinov2_config(variant, num_register_tokens=registers))
    meta = dinov2_hf_to_meta(model.state_dict())
    assert meta["pos_embed"].shape[1] == 1370
    assert ("blocks.0.mlp.w12.weight" in meta) == swiglu
    config, hf = dinov2_meta_to_hf(meta)
    assert (config.hidden_size, config.num_hidden_layers, config.use_swiglu_ffn) == (hidden, layers, swiglu)
    assert config.num_attention_heads == heads == hidden // 64
    assert config.image_size == 518 and config.patch_size == 14
    assert getattr(config, "num_register_tokens", 0) == registers
    expected = model.state_dict()
    assert set(hf) == set(expected)
    assert all(hf[k].shape == expected[k].shape for k in hf)


# ------------------------------------------------------------------------------------------------ key maps
def _official_state_dicts(kind):
    """State dicts (meta tensors) of every official SAM2 trunk or DINOv2 size, plus the tiny test configs."""
    if kind == "sam2":
        configs = [(Sam2Model, sam2_config(v)) for v in SAM2_VARIANTS] + [(Sam2Model, sam2_test_config())]
    elif kind == "sam":
        configs = [(SamHQModel if hq else SamModel, c) for hq in (False, True)
                   for c in [sam_test_config(hq), *(sam_config(v, hq) for v in SAM_VARIANTS)]]
    elif kind == "dinov3":
        configs = [(DINOv3ViTModel, dinov3_config(v)) for v in DINOV3_VARIANTS]
    else:
        configs = [
            (Dinov2WithRegistersModel if r else Dinov2Model, dinov2_config(v, num_register_tokens=r))
            for v in DINOV2_VARIANTS
            for r in (0, 4)
        ] + [(Dinov2Model, dinov2_config("test-tiny")), (Dinov2Model, _swiglu_config())]
    with torch.device("meta"):
        return [cls(config).state_dict() for cls, config in configs]


def _names(keys):
    """Every key and every dotted prefix of one (MLP tables rename prefixes)."""
    return {".".join(parts[:n]) for k in keys for parts in [k.split(".")] for n in range(1, len(parts) + 1)}


@pytest.mark.parametrize("kind", ["sam2", "sam", "dinov2", "dinov3"])
def test_key_tables_invert_and_have_no_dead_rule(kind):
    """A key table is written once and its inverse generated: on every key of every official model size, the
    inverse undoes the renaming in both directions (so no two keys share a name), and every rule is used."""
    if kind == "sam2":
        tables, fused, to_meta = [sam2_keys._KEYS, sam2_keys._MLPS.prefixes], (), sam2_hf_to_meta
    elif kind == "sam":
        tables, fused, to_meta = [sam_keys._KEYS, sam_keys._MLPS.prefixes], (), sam_keys.sam_hf_to_meta
    elif kind == "dinov3":
        tables, fused, to_meta = [dinov3_keys._KEYS, dinov3_keys._KEYS_SWIGLU], dinov3_keys._FUSED, dinov3_hf_to_meta
    else:
        tables, fused, to_meta = [dinov2_keys._KEYS], dinov2_keys._FUSED, dinov2_hf_to_meta
    used = set()

    def matches(template, names):
        return any(template.match(name) is not None for name in names)

    for hf in _official_state_dicts(kind):
        hf_names, meta_names = _names(hf), _names(to_meta(hf))
        for t, table in enumerate(tables):
            for name in hf_names:
                meta = table.to_meta(name)
                assert meta is None or table.to_hf(meta) == name, (name, meta)
            for name in meta_names:
                new = table.to_hf(name)
                assert new is None or table.to_meta(new) == name, (name, new)
            used |= {(t, n) for n, (meta, _) in enumerate(table.pairs) if matches(meta, meta_names)}
        used |= {("fused", n) for n, rule in enumerate(fused) if matches(rule.meta, meta_names)}
    rules = {(t, n) for t, table in enumerate(tables) for n in range(len(table.pairs))}
    assert used == rules | {("fused", n) for n in range(len(fused))}


def test_key_template_pairs_must_share_fields():
    with pytest.raises(ValueError, match="different fields"):
        KeyMap([("blocks.{i}.{wb}", "layer.{wb}")])
    with pytest.raises(ValueError, match="bad or repeated field"):
        KeyMap([("blocks.{i}.{i}", "layer.{i}.{i}")])
    with pytest.raises(ValueError, match="bad or repeated field"):
        KeyMap([("blocks.{k}", "layer.{k}")])
    table = KeyMap([("a.{x}.{i}.{wb}", "b.{i}.{x}_{wb}")], fields={"x": r"p|q"})
    assert table.to_hf("a.q.12.bias") == "b.12.q_bias" and table.to_meta("b.12.q_bias") == "a.q.12.bias"
    assert table.to_hf("a.r.12.bias") is None and table.to_hf("a.q.12.bias.x") is None


# ----------------------------------------------------------------------------------------- DINOv2 round trip
def _swiglu_config():
    return dinov2_config_for(32, 2, 2, swiglu=True)


@pytest.mark.parametrize(
    "config, wrapper",
    [
        (dinov2_config("test-tiny"), None),
        (dinov2_config("test-tiny"), "teacher"),
        (dinov2_config("test-tiny", num_register_tokens=4), "model"),
        (_swiglu_config(), None),
        (_swiglu_config(), "chunked"),
    ],
    ids=["plain", "teacher", "reg4", "swiglu", "swiglu-chunked"],
)
def test_dinov2_meta_file_round_trip(tmp_path, config, wrapper):
    torch.manual_seed(7)
    cls = Dinov2WithRegistersModel if getattr(config, "num_register_tokens", 0) else Dinov2Model
    original = cls(config).eval()
    with torch.no_grad():
        for p in original.parameters():
            p.normal_(0, 0.1)  # layer scale and mask token are constants at init
    meta = dinov2_hf_to_meta(original.state_dict())
    if wrapper == "teacher":
        meta = {"teacher": {**{f"backbone.{k}": v for k, v in meta.items()}, "dino_head.mlp.0.weight": torch.ones(2)}}
    elif wrapper == "model":
        meta = {"model": meta}
    elif wrapper == "chunked":  # Meta's block-chunked layout: blocks.{chunk}.{i}
        meta = {k.replace("blocks.1.", "blocks.1.1.").replace("blocks.0.", "blocks.0.0."): v for k, v in meta.items()}
    path = tmp_path / "dinov2_pretrain.pth"
    torch.save(meta, path)

    loaded = load_encoder(path)
    assert type(loaded) is cls and not loaded.training
    _assert_same_state(original, loaded)
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "use_swiglu_ffn", "image_size",
                  "patch_size", "mlp_ratio"):
        assert getattr(original.config, field) == getattr(loaded.config, field), field
    pixels = torch.randn(2, 3, 56, 70)
    with torch.no_grad():
        assert torch.equal(original(pixels).last_hidden_state, loaded(pixels).last_hidden_state)


def test_encoder_bf16(dinov2_official):
    _, path = dinov2_official
    model = load_encoder(path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


# --------------------------------------------------------------------------------------------- strictness
def test_sam2_missing_key(sam2_official, tmp_path):
    _, path = sam2_official
    meta = torch.load(path, weights_only=True)["model"]
    del meta["sam_mask_decoder.conv_s0.weight"]
    bad = tmp_path / "missing.pt"
    torch.save({"model": meta}, bad)
    with pytest.raises(CheckpointError, match=r"sam_mask_decoder\.conv_s0\.weight"):
        load_sam2(bad)


def test_sam2_missing_inference_key(sam2_official, tmp_path):
    _, path = sam2_official
    meta = torch.load(path, weights_only=True)["model"]
    del meta["image_encoder.trunk.pos_embed_window"]
    bad = tmp_path / "missing.pt"
    torch.save({"model": meta}, bad)
    with pytest.raises(CheckpointError, match=r"pos_embed_window"):
        load_sam2(bad)


def test_sam2_unexpected_key(sam2_official, tmp_path):
    _, path = sam2_official
    meta = torch.load(path, weights_only=True)["model"]
    meta["sam_mask_decoder.extra_head.weight"] = torch.zeros(3)
    bad = tmp_path / "unexpected.pt"
    torch.save({"model": meta}, bad)
    with pytest.raises(CheckpointError, match=r"sam_mask_decoder\.extra_head\.weight"):
        load_sam2(bad)


def test_dinov2_missing_and_unexpected_keys(dinov2_official, tmp_path):
    _, path = dinov2_official
    meta = torch.load(path, weights_only=True)
    missing = {k: v for k, v in meta.items() if k != "blocks.1.ls2.gamma"}
    torch.save(missing, tmp_path / "a.pth")
    with pytest.raises(CheckpointError, match=r"blocks\.1\.ls2\.gamma"):
        load_encoder(tmp_path / "a.pth")
    torch.save({**meta, "head.weight": torch.zeros(2)}, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match=r"head\.weight"):
        load_encoder(tmp_path / "b.pth")


# ------------------------------------------------------------------------------------------ HF directories
def test_hf_directory_round_trip(sam2_official, dinov2_official, tmp_path):
    # models loaded from Meta files must save cleanly (no shared storage) and reload identically
    sam2 = load_sam2(sam2_official[1])
    encoder = load_encoder(dinov2_official[1])
    sam2.save_pretrained(tmp_path / "sam2")
    encoder.save_pretrained(tmp_path / "dinov2")
    _assert_same_state(sam2, load_sam2(tmp_path / "sam2"))
    _assert_same_state(encoder, load_encoder(str(tmp_path / "dinov2")))
    loaded = load_encoder(tmp_path / "dinov2", dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in loaded.parameters())

    with pytest.raises(CheckpointError, match="dinov2.*not SAM2"):
        load_sam2(tmp_path / "dinov2")
    with pytest.raises(CheckpointError, match="sam2.*not DINOv2"):
        load_encoder(tmp_path / "sam2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_sam2(tmp_path / "empty")


def test_hf_directory_with_registers(tmp_path):
    torch.manual_seed(2)
    model = Dinov2WithRegistersModel(dinov2_config("test-tiny", num_register_tokens=4)).eval()
    model.save_pretrained(tmp_path)
    loaded = load_encoder(tmp_path)
    assert isinstance(loaded, Dinov2WithRegistersModel)
    _assert_same_state(model, loaded)


# ----------------------------------------------------------------------------------------------------- errors
def test_missing_file_names_path_and_url(tmp_path):
    path = tmp_path / "sam2_hiera_large.pt"
    with pytest.raises(CheckpointError) as err:
        load_sam2(path)
    assert str(path) in str(err.value) and SAM2_URL in str(err.value) and "--sam2" in str(err.value)
    with pytest.raises(CheckpointError, match="not found") as err:
        load_encoder("checkpoints/dinov2_vitl14_pretrain.pth")
    assert DINOV2_URL in str(err.value)
    with pytest.raises(CheckpointError, match="not found"):
        load_sam2("./nowhere/sam2")


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_corrupt_file(sam2_official, tmp_path, content):
    _, good = sam2_official
    bad = tmp_path / "sam2_hiera_large.pt"
    if content == "garbage":
        bad.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    else:
        data = good.read_bytes()
        assert zipfile.is_zipfile(good)
        bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read") as err:
        load_sam2(bad)
    assert str(bad) in str(err.value)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_encoder(bad)


def test_wrong_model_file(sam2_official, dinov2_official):
    _, sam2_path = sam2_official
    _, dinov2_path = dinov2_official
    with pytest.raises(CheckpointError, match="not a SAM2 checkpoint.*DINOv2"):
        load_sam2(dinov2_path)
    with pytest.raises(CheckpointError, match="not a DINOv2, DINOv3 ViT or DINOv3 ConvNeXt checkpoint.*SAM2"):
        load_encoder(sam2_path)


def test_non_state_dict_file(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(CheckpointError, match="not a SAM2 state dict"):
        load_sam2(path)


def test_hub_id_offline_not_cached(offline_empty_cache):
    with pytest.raises(CheckpointError) as err:
        load_sam2("nttt-tests/sam2-hiera-nothing")
    msg = str(err.value)
    assert "nttt-tests/sam2-hiera-nothing" in msg and "offline" in msg and SAM2_URL in msg
    with pytest.raises(CheckpointError, match="nttt-tests/no-such-dinov2"):
        load_encoder("nttt-tests/no-such-dinov2")
    # the defaults, and a hub id with a dot, go to the hub rather than being taken for missing files
    with pytest.raises(CheckpointError, match=DEFAULT_SAM2):
        load_sam2()
    with pytest.raises(CheckpointError, match=DEFAULT_ENCODER):
        load_encoder(None)
    with pytest.raises(CheckpointError, match="facebook/sam2.1-hiera-large") as err:
        load_sam2("facebook/sam2.1-hiera-large")
    assert "not found" not in str(err.value)


def test_hub_repo_with_only_meta_file(sam2_official, monkeypatch):
    """A SAM2 hub repo without a transformers config falls back to Meta's .pt from the same repo."""
    import huggingface_hub

    from no_time_to_train.models import checkpoints

    _, path = sam2_official
    asked = []

    def no_config(repo_id, local_only=False):
        raise OSError(f"{repo_id} does not appear to have a file named config.json")

    def fake_download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(path)

    monkeypatch.setattr(checkpoints, "_hub_unavailable", lambda: None)  # as if online
    monkeypatch.setattr(checkpoints, "_hub_model_type", no_config)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    model = load_sam2("facebook/sam2.1-hiera-base-plus")
    assert asked == [("facebook/sam2.1-hiera-base-plus", "sam2.1_hiera_base_plus.pt")]
    assert isinstance(model, Sam2Model)


class _NoNetwork:
    """A huggingface_hub HTTP session that records every request and fails it as an unreachable host would."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, method):
        def request(*args, **kwargs):
            self.calls.append((method, args, kwargs))
            raise ConnectionError("[Errno -2] Name or service not known")

        return request


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """The hub is not switched off (HF_HUB_OFFLINE unset) but every request fails; the cache is tmp_path/hub."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    from no_time_to_train.models import checkpoints

    session = _NoNetwork()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_session", lambda: session)
    monkeypatch.setattr(_http, "get_session", lambda: session)
    checkpoints._hub_reachable.cache_clear()
    yield session
    checkpoints._hub_reachable.cache_clear()


def _never(*args, **kwargs):
    raise AssertionError("no download may be attempted")


def test_check_models_offline_names_both_models_in_one_error(offline_empty_cache, monkeypatch):
    """HF_HUB_OFFLINE=1, nothing cached: one error names both hub ids, both Meta URLs and both flags, without
    probing the hub or starting a download."""
    import huggingface_hub

    from no_time_to_train.models import checkpoints

    monkeypatch.setattr(checkpoints, "_hub_reachable", _never)
    monkeypatch.setattr(checkpoints, "_hub_model_type", _never)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _never)
    with pytest.raises(CheckpointError) as err:
        checkpoints.check_models(sam2=None, encoder=None)
    msg = str(err.value)
    for part in (DEFAULT_SAM2, DEFAULT_ENCODER, SAM2_URL, DINOV2_URL, "--sam2", "--encoder", "HF_HUB_OFFLINE"):
        assert part in msg
    # a missing file and an uncached hub id are reported together; a model object needs no check
    with pytest.raises(CheckpointError) as err:
        checkpoints.check_models(sam2="nowhere/sam2_hiera_large.pt", encoder=None)
    assert "not found: nowhere/sam2_hiera_large.pt" in str(err.value) and DEFAULT_ENCODER in str(err.value)
    with pytest.raises(CheckpointError) as err:
        checkpoints.check_models(sam2=torch.nn.Linear(1, 1), encoder=None)
    assert DEFAULT_SAM2 not in str(err.value) and DEFAULT_ENCODER in str(err.value)


def test_unreachable_hub_one_probe_no_retries(unreachable_hub, monkeypatch):
    """Without HF_HUB_OFFLINE but with no network: a single short request, then one error naming both models
    (huggingface_hub's own downloads would retry for ~25 s)."""
    import huggingface_hub

    from no_time_to_train.models import checkpoints

    monkeypatch.setattr(checkpoints, "_hub_model_type", _never)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _never)
    with pytest.raises(CheckpointError) as err:
        checkpoints.check_models(sam2=None, encoder=None)
    msg = str(err.value)
    assert "unreachable" in msg and all(p in msg for p in (DEFAULT_SAM2, DEFAULT_ENCODER, SAM2_URL, DINOV2_URL))
    with pytest.raises(CheckpointError, match="unreachable.*" + SAM2_URL):
        load_sam2()
    with pytest.raises(CheckpointError, match="unreachable.*" + DINOV2_URL):
        load_encoder()
    [(method, args, kwargs)] = unreachable_hub.calls  # one probe for everything, remembered
    assert method == "head" and kwargs["timeout"] == checkpoints.HUB_PROBE_TIMEOUT <= 5


def test_hub_probe_with_the_real_http_client(monkeypatch):
    """The probe really asks: True for a server that answers (any status), False for a closed port."""
    import http.server
    import socket
    import threading

    from huggingface_hub import constants

    from no_time_to_train.models.checkpoints import _hub_reachable

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # huggingface_hub's client refuses every request
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _hub_reachable.__wrapped__(f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert not _hub_reachable.__wrapped__(f"http://127.0.0.1:{closed}")


def _put_in_hub_cache(model, cache: Path, repo_id: str) -> None:
    """Lay ``model`` out as huggingface_hub's cache does: refs/main -> snapshots/<revision>/files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    model.save_pretrained(repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")


def test_unreachable_hub_cached_model_loads_without_network(unreachable_hub, tmp_path):
    torch.manual_seed(5)
    model = Dinov2Model(dinov2_config("test-tiny")).eval()
    _put_in_hub_cache(model, tmp_path / "hub", "nttt-tests/tiny-dinov2")
    loaded = load_encoder("nttt-tests/tiny-dinov2")
    _assert_same_state(model, loaded)
    assert [c[0] for c in unreachable_hub.calls] == ["head"]  # only the probe: no config or weight requests


def test_hf_directory_with_missing_weight(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(4)
    Dinov2Model(dinov2_config("test-tiny")).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    sd = load_file(weights)
    del sd["encoder.layer.1.norm2.weight"]
    save_file(sd, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1\.norm2\.weight"):
        load_encoder(tmp_path)
