"""DINOv3 ViT as the patch encoder: Meta-format loading, shape inference, the whole path, sizes and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from transformers import DINOv3ViTConfig, DINOv3ViTModel, Dinov2WithRegistersModel

from no_time_to_train import MemoryMismatchError, MethodConfig, ReferenceSegmenter
from no_time_to_train.cli import main
from no_time_to_train.config import SettingError
from no_time_to_train.errors import CheckpointError
from no_time_to_train.models.checkpoints import load_encoder, load_sam2
from no_time_to_train.models.configs import DINOV3_VARIANTS, dinov2_config, dinov3_config
from no_time_to_train.models.dinov3 import SAT493M_MEAN, Dinov3Encoder
from no_time_to_train.models.dinov3_keys import dinov3_hf_to_meta, dinov3_meta_to_hf, infer_dinov3_config
from no_time_to_train.models.encoder import wrap_encoder
from no_time_to_train.transforms import IMAGENET_MEAN, normalize

CATS = "dog,person,car"
FAST = ["--points-per-side", "4", "--device", "cpu", "--quiet"]


def _gated_config() -> DINOv3ViTConfig:
    """SwiGLU, no registers, an unmasked key bias, another RoPE theta: the other branches of the key map."""
    return DINOv3ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40,
                           use_gated_mlp=True, hidden_act="silu", num_register_tokens=0, key_bias=True,
                           rope_theta=200.0, patch_size=16)


def _model(config: DINOv3ViTConfig, seed: int = 7) -> DINOv3ViTModel:
    torch.manual_seed(seed)
    model = DINOv3ViTModel(config).eval()
    with torch.no_grad():  # random biases and layer scales, so that a dropped or swapped one shows
        for name, p in model.named_parameters():
            if name.endswith(("bias", "lambda1")) or "tokens" in name:
                p.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def tiny_dinov3():
    return _model(dinov3_config("test-tiny"))


def _image(size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ Meta-format files
@pytest.mark.parametrize("make_config", [lambda: dinov3_config("test-tiny"), _gated_config], ids=["tiny", "gated"])
def test_meta_file_round_trip(make_config, tmp_path):
    config = make_config()
    model = _model(config)
    meta = dinov3_hf_to_meta(model.state_dict(), config)
    # Meta's own names and layouts
    assert meta["mask_token"].shape == (1, config.hidden_size)
    assert meta["rope_embed.periods"].shape == (config.hidden_size // config.num_attention_heads // 4,)
    assert meta["blocks.1.attn.qkv.weight"].shape == (3 * config.hidden_size, config.hidden_size)
    assert ("storage_tokens" in meta) == (config.num_register_tokens > 0)
    assert ("blocks.0.mlp.w1.weight" in meta) == config.use_gated_mlp
    assert ("blocks.0.attn.qkv.bias_mask" in meta) == (not config.key_bias)
    path = tmp_path / "dinov3_vitt16_pretrain_lvd1689m-0000.pth"
    torch.save(meta, path)

    loaded = load_encoder(path)
    assert isinstance(loaded, DINOv3ViTModel)
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "use_gated_mlp",
                  "hidden_act", "num_register_tokens", "rope_theta", "key_bias", "patch_size"):
        assert getattr(loaded.config, field) == getattr(config, field), field
    x = _image(48)
    with torch.no_grad():
        assert torch.equal(loaded(pixel_values=x).last_hidden_state, model(pixel_values=x).last_hidden_state)


def test_rope_frequencies_stay_float32_in_a_bf16_model(tiny_dinov3, tmp_path):
    """RoPE frequencies are computed, not loaded: every source gives transformers' own float32 values."""
    torch.save(dinov3_hf_to_meta(tiny_dinov3.state_dict(), tiny_dinov3.config), tmp_path / "v3.pth")
    tiny_dinov3.save_pretrained(tmp_path / "v3")
    expected = tiny_dinov3.rope_embeddings.inv_freq
    for source in (tmp_path / "v3.pth", tmp_path / "v3"):
        model = load_encoder(source, dtype=torch.bfloat16)
        assert model.norm.weight.dtype == torch.bfloat16
        assert model.rope_embeddings.inv_freq.dtype == torch.float32
        assert torch.equal(model.rope_embeddings.inv_freq, expected)


def test_bias_mask_is_applied_as_meta_does_and_a_nan_mask_refused(tiny_dinov3, tmp_path):
    """Meta's forward pass uses ``qkv.bias * qkv.bias_mask``: that product is the bias loaded, whatever the mask."""
    meta = dinov3_hf_to_meta(tiny_dinov3.state_dict(), tiny_dinov3.config)
    meta["blocks.0.attn.qkv.bias"][32:64] = 5.0  # the k part: multiplied by the zero mask, so it must not matter
    config, hf = dinov3_meta_to_hf(meta)
    assert not config.key_bias and "model.layer.0.attention.k_proj.bias" not in hf
    meta["blocks.0.attn.qkv.bias_mask"][:5] = 0.5
    _, hf = dinov3_meta_to_hf(meta)
    q_bias = meta["blocks.0.attn.qkv.bias"][:32]
    assert torch.equal(hf["model.layer.0.attention.q_proj.bias"][:5], q_bias[:5] * 0.5)
    assert torch.equal(hf["model.layer.0.attention.q_proj.bias"][5:], q_bias[5:])
    meta["blocks.1.attn.qkv.bias_mask"][40] = 1.0  # one unmasked key entry: the key bias exists
    config, hf = dinov3_meta_to_hf(meta)
    assert config.key_bias and hf["model.layer.1.attention.k_proj.bias"].count_nonzero() <= 1
    meta["blocks.1.attn.qkv.bias_mask"][0] = float("nan")  # as LinearKMaskedBias leaves an uninitialised mask
    with pytest.raises(CheckpointError, match="blocks.1.attn.qkv.bias_mask is not finite"):
        dinov3_meta_to_hf(meta)


@pytest.mark.parametrize("variant", [v for v in DINOV3_VARIANTS if v != "test-tiny"])
def test_official_sizes_inferred_from_shapes(variant):
    """Each official size's Meta key/shape layout (built on the meta device: no memory) gives back its config."""
    config = dinov3_config(variant)
    with torch.device("meta"):
        hf = DINOv3ViTModel(config).state_dict()
    meta = dinov3_hf_to_meta(hf, config)
    hidden, layers, heads, width, gated = DINOV3_VARIANTS[variant]
    assert f"blocks.{layers - 1}.mlp.{'w3' if gated else 'fc2'}.weight" in meta
    assert meta["storage_tokens"].shape == (1, 4, hidden)
    if variant == "vit7b16":  # the 7B release's separate CLS norm for local crops: not used for patch tokens
        meta["local_cls_norm.weight"] = meta["local_cls_norm.bias"] = torch.empty(hidden, device="meta")
    inferred = infer_dinov3_config(meta)
    got = (inferred.hidden_size, inferred.num_hidden_layers, inferred.num_attention_heads,
           inferred.intermediate_size, inferred.use_gated_mlp)
    assert got == (hidden, layers, heads, width, gated)
    assert inferred.num_register_tokens == 4 and inferred.patch_size == 16 and not inferred.key_bias
    assert inferred.rope_theta == 100.0 and inferred.hidden_act == ("silu" if gated else "gelu")
    _, renamed = dinov3_meta_to_hf(meta)
    assert set(renamed) == set(hf)


def test_wrong_family_files(tiny_dinov3, tiny_sam2, tmp_path):
    other = tmp_path / "resnet50.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 7, 7), "fc.bias": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match=r"not a DINOv2, DINOv3 ViT or DINOv3 ConvNeXt checkpoint.*conv1\.weight"
                       r".*fc\.bias"):
        load_encoder(other)
    v3 = tmp_path / "dinov3.pth"
    torch.save(dinov3_hf_to_meta(tiny_dinov3.state_dict(), tiny_dinov3.config), v3)
    with pytest.raises(CheckpointError, match="not a SAM2 checkpoint.*DINOv3 ViT"):
        load_sam2(v3)
    meta = torch.load(v3, weights_only=True)
    del meta["blocks.1.ls2.gamma"]
    torch.save(meta, v3)
    with pytest.raises(CheckpointError, match=r"missing 1 weight\(s\): blocks\.1\.ls2\.gamma"):
        load_encoder(v3)
    (tmp_path / "cnx").mkdir()
    (tmp_path / "cnx" / "config.json").write_text(json.dumps({"model_type": "convnextv2"}))
    with pytest.raises(CheckpointError, match="'convnextv2' model .*not DINOv2, DINOv3 ViT or DINOv3 ConvNeXt"):
        load_encoder(tmp_path / "cnx")
    with pytest.raises(CheckpointError, match="sam2.*not a supported patch encoder"):
        wrap_encoder(tiny_sam2)


def test_gated_hub_id_says_what_to_do(monkeypatch):
    import httpx2
    from huggingface_hub.errors import GatedRepoError

    from no_time_to_train.models import checkpoints

    repo = "facebook/dinov3-vitl16-pretrain-lvd1689m"

    def gated(repo_id, local_only=False):
        request = httpx2.Request("GET", f"https://huggingface.co/{repo_id}/resolve/main/config.json")
        raise OSError(f"You are trying to access a gated repo {repo_id}") from GatedRepoError(
            "403 Client Error", response=httpx2.Response(403, request=request))

    monkeypatch.setattr(checkpoints, "_hub_local_only", lambda *a: False)
    monkeypatch.setattr(checkpoints, "_hub_model_type", gated)
    with pytest.raises(CheckpointError) as err:
        load_encoder(repo)
    msg = str(err.value)
    assert repo in msg and "gated" in msg and f"https://huggingface.co/{repo}" in msg and "HF_TOKEN" in msg


# ------------------------------------------------------------------------------------------ input size
def test_encoder_size_must_fit_the_patch_size(tiny_sam2, tiny_dinov3):
    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_dinov3, config=MethodConfig())  # 518: DINOv2's size
    with pytest.raises(SettingError) as err:
        seg.encoder
    msg = str(err.value)
    assert "--encoder-size" in msg and "518" in msg and "patch size 16" in msg and "592" in msg
    with pytest.raises(SettingError, match="--encoder-size"):
        seg.add_reference(np.zeros((32, 32, 3), np.uint8), np.ones((32, 32), bool), category="x")


def test_auto_size_is_37_patches_of_the_encoders_own_size(tiny_sam2, tiny_encoder, tiny_dinov3):
    auto = MethodConfig(encoder_size="auto")
    assert MethodConfig().with_overrides(["encoder_size=auto"]).encoder_size == "auto"  # as --encoder-size auto
    v2 = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=auto)
    v3 = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_dinov3, config=auto)
    assert (v2.encoder_size, v3.encoder_size) == (518, 592)
    t_sam = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert v3.encode_features(t_sam).shape == (37 * 37, 32)
    image, mask = np.zeros((80, 80, 3), np.uint8), np.zeros((80, 80), bool)
    mask[20:60, 30:50] = True
    v3.add_reference(image, mask, category="thing")
    assert v3.memory.encoder["input_size"] == 592 and v3.memory.encoder["patch_size"] == 16


def test_sat493m_weights_use_the_satellite_statistics(tiny_dinov3):
    x = _image(32)
    plain_encoder = Dinov3Encoder(tiny_dinov3)
    plain, plain_fingerprint = plain_encoder.patch_tokens(x), plain_encoder.fingerprint()
    config = tiny_dinov3.config
    try:
        config._name_or_path = "/models/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
        sat = Dinov3Encoder(tiny_dinov3)
        assert sat.mean == SAT493M_MEAN
        with torch.no_grad():
            expected = tiny_dinov3(pixel_values=normalize(x, sat.mean, sat.std)).last_hidden_state[:, 5:]
        assert torch.equal(sat.patch_tokens(x), expected) and not torch.allclose(sat.patch_tokens(x), plain)
        assert sat.fingerprint() != plain_fingerprint  # a memory from one is refused by the other
    finally:
        config._name_or_path = ""


def test_hf_directory_statistics_come_from_its_preprocessor_config(tiny_dinov3, tmp_path):
    tiny_dinov3.save_pretrained(tmp_path / "weights")
    assert Dinov3Encoder(load_encoder(tmp_path / "weights")).mean == IMAGENET_MEAN
    config = {"image_mean": list(SAT493M_MEAN), "image_std": [0.213, 0.156, 0.143]}
    (tmp_path / "weights" / "preprocessor_config.json").write_text(json.dumps(config))
    encoder = Dinov3Encoder(load_encoder(tmp_path / "weights"))
    assert (encoder.mean, encoder.std) == (SAT493M_MEAN, (0.213, 0.156, 0.143))


# ------------------------------------------------------------------------------------------ the whole path
@pytest.fixture(scope="module")
def refs(coco_mini):
    coco = COCO(str(coco_mini / "annotations" / "instances_train2017.json"))
    out = []
    for cat_id, name in [(18, "dog"), (1, "person")]:
        ann = coco.loadAnns(coco.getAnnIds(catIds=[cat_id], iscrowd=False))[0]
        info = coco.loadImgs(ann["image_id"])[0]
        out.append((coco_mini / "train2017" / info["file_name"], coco.annToMask(ann).astype(bool), name, cat_id))
    return out


def test_reference_predict_and_memory_with_dinov3(tiny_sam2, tiny_encoder, tiny_dinov3, refs, coco_mini, tmp_path):
    cfg = MethodConfig(points_per_side=4, encoder_size=64)
    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_dinov3, config=cfg)
    for path, mask, name, cat_id in refs:
        seg.add_reference(path, mask, category=name, category_id=cat_id)
    assert seg.memory.vectors.shape == (2, 32)
    img = sorted((coco_mini / "val2017").glob("*.jpg"))[0]
    dets = seg.predict(img)
    assert len(dets) > 0 and np.all(np.diff(dets.scores) <= 0)
    saved = seg.save_memory(tmp_path / "mem.safetensors")

    again = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_dinov3, config=cfg, memory=saved)
    assert np.array_equal(again.predict(img).scores, dets.scores)
    v2 = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=MethodConfig(points_per_side=4))
    v2.encoder
    with pytest.raises(MemoryMismatchError, match=r"dinov3_vit.*dim 32.*current encoder is.*dinov2"):
        v2.load_memory(saved)
    other_size = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_dinov3, config=cfg.replace(encoder_size=96),
                                    memory=saved)
    with pytest.raises(MemoryMismatchError, match=r"input size 64.*input size is 96.*--encoder-size 64"):
        other_size.encoder


def test_cli_fill_memory_and_evaluate_with_dinov3(tiny_dinov3, tiny_encoder, tiny_sam2, coco_mini, tmp_path, capsys):
    tiny_sam2.save_pretrained(tmp_path / "sam2")
    tiny_dinov3.save_pretrained(tmp_path / "dinov3")
    tiny_encoder.save_pretrained(tmp_path / "dinov2")
    v3 = ["--sam2", str(tmp_path / "sam2"), "--encoder", str(tmp_path / "dinov3"), "--encoder-size", "64"]
    train = coco_mini / "annotations" / "instances_train2017.json"
    assert main(["sample", "--annotations", str(train), "--categories", CATS, "--shots", "1", "--seed", "33",
                 "-o", str(tmp_path / "refs.json")]) == 0
    assert main(["fill-memory", str(tmp_path / "refs.json"), "--annotations", str(train), "--images",
                 str(coco_mini / "train2017"), "-o", str(tmp_path / "mem.safetensors"), *v3, *FAST]) == 0
    evaluate = ["evaluate", "--memory", str(tmp_path / "mem.safetensors"), "--annotations",
                str(coco_mini / "annotations" / "instances_val2017.json"), "--images", str(coco_mini / "val2017"),
                "--categories", CATS, "--max-images", "2", *FAST]
    assert main([*evaluate, "-o", str(tmp_path / "eval"), *v3]) == 0
    assert "AP" in json.loads((tmp_path / "eval" / "metrics.json").read_text())["bbox"]
    capsys.readouterr()
    v2 = ["--sam2", str(tmp_path / "sam2"), "--encoder", str(tmp_path / "dinov2")]
    assert main([*evaluate, "-o", str(tmp_path / "eval2"), *v2]) != 0
    err = capsys.readouterr().err
    assert "nttt evaluate: error:" in err and "dinov3_vit" in err and "dinov2" in err and "Traceback" not in err
    assert main([*evaluate, "-o", str(tmp_path / "eval3"), *v3[:4], "--encoder-size", "100"]) != 0
    assert "--encoder-size" in capsys.readouterr().err


def test_dinov2_wrapper_is_unchanged(tiny_encoder):
    """The DINOv2 family behind the interface: patch tokens are the model's own tokens after CLS."""
    enc = wrap_encoder(tiny_encoder)
    x = _image(28)
    with torch.no_grad():
        expected = tiny_encoder(pixel_values=normalize(x)).last_hidden_state[:, 1:]
    assert torch.equal(enc.patch_tokens(x), expected) and enc.patch_size == 14 and enc.input_size("auto") == 518
    registers = Dinov2WithRegistersModel(dinov2_config("test-tiny", num_register_tokens=4))
    assert wrap_encoder(registers).num_prefix == 5
