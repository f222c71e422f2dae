"""Loading the proposer (SAM2, SAM, SAM-HQ, SAM 3 tracker) and patch-encoder (DINOv2, DINOv3 ViT) weights: the one
place where a model is chosen.

:func:`load_sam2`, :func:`load_proposer` (SAM2, SAM or SAM-HQ) and :func:`load_encoder` accept

1. a Meta checkpoint file (``sam2_hiera_large.pt``, ``sam_hq_vit_l.pth``, ``sam3.pt``, ``dinov2_vitl14_pretrain.pth`` ...),
   whose architecture is inferred from tensor shapes and whose keys are renamed to transformers' names, loaded strictly;
2. a local directory in Hugging Face format (``config.json`` + weights);
3. a Hugging Face hub id (the defaults), loaded through the normal HF cache; for a SAM2 repo that only holds
   Meta's ``.pt`` the file is downloaded and treated as in 1. Offline (``HF_HUB_OFFLINE=1``, or the hub not
   answering one short probe) a cached copy is loaded without network access and an uncached one fails at
   once, instead of after huggingface_hub's ~25 s of retries.

:func:`check_models` checks several sources before any is loaded and names every unavailable one in one error.

Every failure raises :class:`~no_time_to_train.errors.CheckpointError` saying what was given and what to do.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import (
    DINOv3ConvNextModel,
    DINOv3ViTModel,
    Dinov2Model,
    Dinov2WithRegistersModel,
    PreTrainedModel,
    Sam2Model,
    Sam2VideoModel,
    Sam3TrackerConfig,
    Sam3TrackerModel,
    SamHQModel,
    SamModel,
)
from transformers.models.dinov3_vit.modeling_dinov3_vit import DINOv3ViTRopePositionEmbedding

from ..errors import CheckpointError
from .dinov2_keys import dinov2_hf_to_meta, dinov2_meta_to_hf, flatten_chunks
from .dinov3_convnext_keys import dinov3_convnext_hf_to_meta, dinov3_convnext_meta_to_hf, looks_like_dinov3_convnext
from .dinov3_keys import dinov3_hf_to_meta, dinov3_meta_to_hf, looks_like_dinov3
from .keymap import few
from .sam2_keys import sam2_hf_to_meta, sam2_meta_to_hf
from .sam2_video_keys import infer_sam2_video_config, sam2_video_hf_to_meta, sam2_video_meta_to_hf
from .sam3_keys import looks_like_sam3, sam3_hf_to_meta, sam3_meta_to_hf, sam3_video_keys_to_tracker
from .sam_keys import sam_hf_to_meta, sam_meta_to_hf

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_SAM2",
    "check_models",
    "dinov2_hf_to_meta",
    "dinov2_meta_to_hf",
    "dinov3_hf_to_meta",
    "dinov3_meta_to_hf",
    "load_encoder",
    "load_proposer",
    "load_sam2",
    "load_sam2_video",
    "sam2_hf_to_meta",
    "sam2_meta_to_hf",
    "sam_hf_to_meta",
    "sam_meta_to_hf",
]

logger = logging.getLogger(__name__)

DEFAULT_SAM2 = "facebook/sam2-hiera-large"  # the paper's SAM 2.0 Hiera-L
DEFAULT_ENCODER = "facebook/dinov2-large"  # the paper's DINOv2 ViT-L/14 (no registers)

SAM2_HINT = (
    "Download https://dl.fbaipublicfiles.com/segment_anything_2/072824/sam2_hiera_large.pt "
    f"(or use the hub id {DEFAULT_SAM2} with internet access) and pass it with --sam2 PATH (Python: sam2=PATH)."
)
PROPOSER = "SAM2/SAM/SAM-HQ/SAM 3 tracker"  # what load_proposer accepts, for messages
PROPOSER_HINT = SAM2_HINT + (
    " SAM / SAM-HQ: Meta's .pth file (sam_vit_h_4b8939.pth, sam_hq_vit_l.pth ...), a Hugging Face directory or a "
    "hub id (e.g. facebook/sam-vit-huge, syscv-community/sam-hq-vit-large). SAM 3 tracker: Meta's sam3.pt, or a "
    "Hugging Face directory or hub id of a sam3_video or sam3_tracker model (e.g. facebook/sam3, gated: accept its "
    "licence on the hub first)."
)
ENCODER_HINT = (
    "Download https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth "
    f"(or use the hub id {DEFAULT_ENCODER} with internet access) and pass it with --encoder PATH "
    "(Python: encoder=PATH)."
)

#: Seconds the one reachability probe of the hub waits before the hub counts as unreachable.
HUB_PROBE_TIMEOUT = 3.0

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".pkl", ".tar")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_SAM2_CLASSES = {"sam2": Sam2Model, "sam2_video": Sam2Model}
_PROPOSER_CLASSES = {**_SAM2_CLASSES, "sam3_tracker": Sam3TrackerModel, "sam3_video": Sam3TrackerModel,
                     "sam": SamModel, "sam_hq": SamHQModel}
_ENCODER_CLASSES = {
    "dinov2": Dinov2Model,
    "dinov2_with_registers": Dinov2WithRegistersModel,
    "dinov3_vit": DINOv3ViTModel,
    "dinov3_convnext": DINOv3ConvNextModel,
}
ENCODER_FAMILIES = "DINOv2, DINOv3 ViT or DINOv3 ConvNeXt"


# ----------------------------------------------------------------------------------------------------- helpers
def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    text = text[0] if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and ".." not in text and not text.lower().endswith(_WEIGHT_SUFFIXES)


def _classify(source: str | os.PathLike | None, default: str, what: str, hint: str) -> tuple[str, str | Path]:
    """("file" | "dir", Path) for a local path, ("hub", id) for a hub id; a missing local path raises."""
    if source is None:
        return "hub", default
    if isinstance(source, os.PathLike):
        path = Path(source).expanduser()
    else:
        text = str(source).strip()
        path = Path(text).expanduser()
        if not path.exists() and _is_hub_id(text):
            return "hub", text
    if path.is_dir():
        return "dir", path
    if path.is_file():
        return "file", path
    raise CheckpointError(f"{what} checkpoint file not found: {path}. {hint}")


def _fresh_rope(model: PreTrainedModel) -> None:
    """Recompute computed, non-persistent float32 buffers (never in a checkpoint, kept in float32 in a bf16 model,
    as transformers does) on the model's device: DINOv3's RoPE, SAM 3's ViT RoPE tables and grid positions, and
    the SAM2 video model's memory-attention RoPE and grid positions."""
    if isinstance(model, DINOv3ViTModel):
        model.rope_embeddings = DINOv3ViTRopePositionEmbedding(model.config).to(model.norm.weight.device)
    if isinstance(model, Sam3TrackerModel):
        for layer in model.vision_encoder.backbone.layers:
            device = layer.layer_norm1.weight.device
            inv_freq, _ = layer.rotary_emb.compute_axial_rope_parameters(layer.config)
            layer.rotary_emb.inv_freq = inv_freq.to(device)
            layer.rotary_emb.original_inv_freq = inv_freq.clone().to(device)
            layer.position_ids = layer.precompute_positions(layer.config, layer.window_size).to(device)
    if isinstance(model, Sam2VideoModel):
        att = model.memory_attention
        device = att.layer_norm.weight.device
        att.rotary_emb = type(att.rotary_emb)(model.config).to(device)
        att.register_buffer("position_ids", att.precompute_positions(model.config).to(device), persistent=False)


def _finish(model: PreTrainedModel, device, dtype) -> PreTrainedModel:
    _fresh_rope(model)  # a model built on the meta device has no frequencies yet
    model.to(device=device, dtype=dtype)
    _fresh_rope(model)
    model.eval()
    model.requires_grad_(False)
    return model


def _describe(sd: Mapping[str, torch.Tensor]) -> str:
    """What a state dict looks like, for error messages."""
    keys = list(sd)
    if any(k.startswith(("image_encoder.trunk.", "sam_mask_decoder.")) for k in keys):
        return "a Meta SAM2 checkpoint"
    if looks_like_sam3(sd):
        return "a Meta SAM 3 checkpoint"
    if any(k.startswith("image_encoder.blocks.") for k in keys):
        hq = any(k.startswith("mask_decoder.hf_") for k in keys)
        return "a Meta SAM-HQ checkpoint" if hq else "a Meta SAM (v1) checkpoint"
    if any(k.startswith("vision_encoder.backbone.") for k in keys):
        return "a transformers SAM2 state dict (pass the directory that holds it with its config.json)"
    if looks_like_dinov3(sd):
        return "a Meta DINOv3 ViT checkpoint"
    if looks_like_dinov3_convnext(sd):
        return "a Meta DINOv3 ConvNeXt checkpoint"
    if "cls_token" in sd and any(".attn.qkv." in k for k in keys):
        return "a Meta DINOv2 checkpoint"
    if "embeddings.cls_token" in sd:
        family = "DINOv3" if "embeddings.register_tokens" in sd and "norm.weight" in sd else "DINOv2"
        return f"a transformers {family} state dict (pass the directory that holds it with its config.json)"
    return f"an unrecognised state dict (keys such as {few(keys, 3)})"


def _read_state_dict(path: Path, what: str, hint: str) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from ``{"model": ...}`` / ``{"teacher": ...}`` containers."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, not a checkpoint, or unsafe pickle
        raise CheckpointError(
            f"cannot read {what} checkpoint {path}: not a readable PyTorch/safetensors file of tensors "
            f"({type(exc).__name__}); it may be truncated or corrupt, download it again. {hint}"
        ) from exc
    for _ in range(3):
        if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("model", "teacher", "state_dict", "module") if k in obj), None)
            if isinstance(inner, Mapping):
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path} holds no {what} state dict. {hint}")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        others = [str(k) for k in obj if k not in tensors]
        raise CheckpointError(f"{path} is not a {what} state dict (non-tensor entries: {few(others)}). {hint}")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def _instantiate(model_cls, config, hf_sd: dict[str, torch.Tensor], path: Path, device, dtype, meta_sd, to_meta):
    """Build ``model_cls(config)`` without allocating random weights and fill it strictly from ``hf_sd``.

    ``meta_sd``/``to_meta`` (the file's own keys and the inverse key map) name missing weights as in the file.
    """
    with torch.device("meta"):
        model = model_cls(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in hf_sd]
    if missing:
        try:
            missing = sorted(set(to_meta(expected)) - set(meta_sd)) or missing
        except CheckpointError:
            pass
    unexpected = [k for k in hf_sd if k not in expected]
    if missing or unexpected:
        parts = [f"missing {len(missing)} weight(s): {few(missing)}"] if missing else []
        parts += [f"unexpected weight(s): {few(unexpected)}"] if unexpected else []
        raise CheckpointError(f"checkpoint {path} does not match the inferred architecture: " + "; ".join(parts))
    bad = [f"{k} {tuple(hf_sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if v.shape != hf_sd[k].shape]
    if bad:
        raise CheckpointError(f"checkpoint {path} has tensors of inconsistent shapes: {few(bad, 3)}")
    model.load_state_dict(hf_sd, strict=True, assign=True)
    return _finish(model, device, dtype)


def _load_hf(model_cls, source: str | Path, device, dtype, what: str, local_only: bool = False):
    """``from_pretrained`` with a strict check that no weight was left at its random initialisation."""
    model, info = model_cls.from_pretrained(str(source), dtype=dtype, output_loading_info=True,
                                            local_files_only=local_only)
    missing = sorted(info.get("missing_keys") or [])
    mismatched = info.get("mismatched_keys") or []
    if missing or mismatched:
        detail = f"missing weights {few(missing)}" if missing else f"mismatched shapes {few(map(str, mismatched))}"
        raise CheckpointError(f"{what} weights in {source} are incomplete: {detail}")
    return _finish(model, device, dtype)


def _dir_model_type(path: Path, what: str, hint: str) -> str:
    config = path / "config.json"
    if not config.is_file():
        files = sorted(p.name for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        extra = f" It holds {few(files, 3)}: pass the checkpoint file itself." if files else ""
        raise CheckpointError(f"{path} is not a Hugging Face {what} directory (no config.json).{extra} {hint}")
    try:
        return str(json.loads(config.read_text()).get("model_type", ""))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {config}: {_short(exc)}") from exc


def _hub_model_type(repo_id: str, local_only: bool = False) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(repo_id, local_files_only=local_only).model_type


@functools.lru_cache(maxsize=None)
def _hub_reachable(endpoint: str) -> bool:
    """Whether ``endpoint`` answers one HEAD request within :data:`HUB_PROBE_TIMEOUT` (no retries; remembered)."""
    from huggingface_hub import get_session

    try:
        get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT)
    except Exception as exc:  # no DNS, refused, timed out, proxy error: all mean "not now"
        logger.info("the Hugging Face hub %s is unreachable: %s", endpoint, _short(exc))
        return False
    return True


def _hub_unavailable() -> str | None:
    """Why the hub cannot be asked now, or None when it can; probes the hub at most once per process."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "offline (HF_HUB_OFFLINE=1)"
    if not _hub_reachable(constants.ENDPOINT):
        return f"the Hugging Face hub ({constants.ENDPOINT}) is unreachable"
    return None


def _hub_cached(repo_id: str) -> bool:
    """Whether the local HF cache holds ``repo_id``'s config.json (or, for SAM2, Meta's .pt)."""
    from huggingface_hub import try_to_load_from_cache

    names = ["config.json", _sam2_meta_filename(repo_id)]
    return any(isinstance(try_to_load_from_cache(repo_id, n), str) for n in names if n)


def _hub_local_only(repo_id: str, what: str, hint: str) -> bool:
    """Whether to load ``repo_id`` from the local cache only (the hub is offline or unreachable but the cache
    has it); raises CheckpointError at once when it is neither reachable nor cached."""
    reason = _hub_unavailable()
    if reason is None:
        return False
    if _hub_cached(repo_id):
        logger.info("%s: %s; loading %s from the local Hugging Face cache", what, reason, repo_id)
        return True
    raise CheckpointError(f"could not load {what} weights {repo_id!r}: {reason}, and they are not in the local "
                          f"Hugging Face cache. {hint}")


def _is_gated(exc: BaseException | None) -> bool:
    """Whether ``exc`` or an exception it was raised from is huggingface_hub's GatedRepoError."""
    from huggingface_hub.errors import GatedRepoError

    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, GatedRepoError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _hub_failure(repo_id: str, exc: BaseException, what: str, hint: str) -> CheckpointError:
    from huggingface_hub import constants

    reason = "offline (HF_HUB_OFFLINE) and not in the local cache" if constants.HF_HUB_OFFLINE else _short(exc)
    if _is_gated(exc):
        reason = (f"the repo is gated and this machine has no access: accept its license at "
                  f"https://huggingface.co/{repo_id} and log in (`hf auth login`, or set HF_TOKEN), or download "
                  f"Meta's checkpoint file and pass its path")
    return CheckpointError(f"could not load {what} weights {repo_id!r} from the Hugging Face hub: {reason}. {hint}")


# ----------------------------------------------------------------------------------------------------- proposers
def _meta_model(path: Path, sd: dict[str, torch.Tensor], convert, to_meta, device, dtype) -> PreTrainedModel:
    """The model of Meta tensors ``sd`` read from ``path``: ``convert`` infers the config from shapes and renames
    the keys (``to_meta`` is its inverse, to name missing weights as the file would); filled strictly."""
    try:
        config, hf_sd = convert(sd)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    config._name_or_path = str(path)
    model_cls = {**_PROPOSER_CLASSES, **_ENCODER_CLASSES}[config.model_type]
    model = _instantiate(model_cls, config, hf_sd, path, device, dtype, sd, to_meta)
    logger.info("loaded a %s from %s", model_cls.__name__, path)
    return model


def _sam2_from_file(path: Path, device, dtype, sd: dict[str, torch.Tensor] | None = None) -> Sam2Model:
    """A Meta SAM2 / SAM 2.1 file (``sd``: its tensors when already read) as a ``Sam2Model``."""
    sd = _read_state_dict(path, "SAM2", SAM2_HINT) if sd is None else sd
    if not any(k.startswith("image_encoder.trunk.") for k in sd):
        raise CheckpointError(f"{path} is not a SAM2 checkpoint: it looks like {_describe(sd)}. {SAM2_HINT}")
    return _meta_model(path, sd, sam2_meta_to_hf, sam2_hf_to_meta, device, dtype)


def _sam2_meta_filename(repo_id: str) -> str | None:
    """Meta's file name in a SAM2 hub repo: ``facebook/sam2.1-hiera-base-plus`` -> ``sam2.1_hiera_base_plus.pt``."""
    name = repo_id.rsplit("/", 1)[-1]
    return name.replace("-", "_") + ".pt" if name.lower().startswith("sam2") else None


def _sam3_from_video_dir(path: Path, device, dtype) -> Sam3TrackerModel:
    """The tracker of a transformers ``sam3_video`` directory (what ``facebook/sam3`` holds) as a
    ``Sam3TrackerModel``, reading only the tensors it needs from the (possibly sharded) safetensors."""
    from safetensors import safe_open
    from transformers import AutoConfig

    try:
        video = AutoConfig.from_pretrained(str(path))
        config = Sam3TrackerConfig(
            vision_config=video.detector_config.vision_config.to_dict(),
            prompt_encoder_config=video.tracker_config.prompt_encoder_config.to_dict(),
            mask_decoder_config=video.tracker_config.mask_decoder_config.to_dict(),
        )
    except Exception as exc:
        raise CheckpointError(f"cannot read the SAM 3 config in {path}: {_short(exc)}") from exc
    index = path / "model.safetensors.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [
            "model.safetensors"]
        hf_sd: dict[str, torch.Tensor] = {}
        for name in files:
            with safe_open(str(path / name), framework="pt") as f:
                for src, dst in sam3_video_keys_to_tracker(list(f.keys())).items():
                    hf_sd[dst] = f.get_tensor(src)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot read the SAM 3 weights in {path}: {_short(exc)}; download them again") from exc
    return _instantiate(Sam3TrackerModel, config, hf_sd, path, device, dtype, hf_sd, lambda sd: sd)


def _proposer_from_file(path: Path, family: str, hint: str, device, dtype):
    """A Meta checkpoint file as a proposer model: SAM2 / SAM 2.1, or (``load_proposer``) SAM / SAM-HQ / SAM 3."""
    sd = _read_state_dict(path, family, hint)
    if family == PROPOSER and any(k.startswith("image_encoder.blocks.") for k in sd):
        return _meta_model(path, sd, sam_meta_to_hf, sam_hf_to_meta, device, dtype)  # SAM, SAM-HQ
    if family == PROPOSER and looks_like_sam3(sd):  # the tracker and the ViT it reads; no detector, no video memory
        return _meta_model(path, sd, sam3_meta_to_hf, sam3_hf_to_meta, device, dtype)
    return _sam2_from_file(path, device, dtype, sd)


def _check_type(model_type: str, where, family: str, hint: str):
    """The transformers model class for ``model_type``, or CheckpointError when it is not of ``family``."""
    classes = _SAM2_CLASSES if family == "SAM2" else _PROPOSER_CLASSES
    if model_type not in classes:
        raise CheckpointError(
            f"{where} holds a {model_type or 'unknown'!r} model (config model_type), not {family}. {hint}"
        )
    return classes[model_type]


def _proposer_from_hub(repo_id: str, family: str, hint: str, device, dtype):
    local_only = _hub_local_only(repo_id, family, hint)
    try:
        model_type = _hub_model_type(repo_id, local_only)
    except Exception as exc:  # no transformers config, offline, not cached, unknown repo
        meta_name = _sam2_meta_filename(repo_id)
        if meta_name is None:
            raise _hub_failure(repo_id, exc, family, hint) from exc
        try:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(repo_id, meta_name, local_files_only=local_only)
        except Exception as exc2:
            raise _hub_failure(repo_id, exc, family, hint) from exc2
        return _sam2_from_file(Path(path), device, dtype)
    model_cls = _check_type(model_type, f"hub repo {repo_id!r}", family, hint)
    try:
        if model_type == "sam3_video":
            from huggingface_hub import snapshot_download

            where = snapshot_download(repo_id, allow_patterns=["config.json", "model*.safetensors*"],
                                      local_files_only=local_only)
            return _sam3_from_video_dir(Path(where), device, dtype)
        return _load_hf(model_cls, repo_id, device, dtype, family, local_only)
    except CheckpointError:
        raise
    except Exception as exc:
        raise _hub_failure(repo_id, exc, family, hint) from exc


def _load_proposer_model(source, family: str, hint: str, device, dtype):
    kind, where = _classify(source, DEFAULT_SAM2, family, hint)
    if kind == "file":
        return _proposer_from_file(where, family, hint, device, dtype)
    if kind == "dir":
        model_type = _dir_model_type(where, family, hint)
        model_cls = _check_type(model_type, where, family, hint)
        try:
            if model_type == "sam3_video":
                return _sam3_from_video_dir(where, device, dtype)
            return _load_hf(model_cls, where, device, dtype, family)
        except CheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(f"cannot load {family} from {where}: {_short(exc)}") from exc
    return _proposer_from_hub(where, family, hint, device, dtype)


def load_sam2(
    source: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Sam2Model:
    """Load SAM2 as a transformers ``Sam2Model``, in eval mode, on ``device``, in ``dtype``, frozen.

    ``source`` is a Meta checkpoint file (``sam2_hiera_*.pt`` / ``sam2.1_hiera_*.pt``, architecture inferred
    from shapes, video-only modules dropped), a Hugging Face directory, or a hub id; ``None`` means
    :data:`DEFAULT_SAM2`. Raises CheckpointError when the weights are missing, unreadable or not SAM2.
    """
    return _load_proposer_model(source, "SAM2", SAM2_HINT, device, dtype)


def load_proposer(
    source: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Sam2Model | Sam3TrackerModel | SamModel | SamHQModel:
    """Load a proposer model (SAM2 / SAM 2.1, SAM 3 tracker, SAM, SAM-HQ), in eval mode, on ``device``, in ``dtype``, frozen.

    ``source`` is what :func:`load_sam2` takes, or Meta's SAM / SAM-HQ files (``sam_vit_h_4b8939.pth``,
    ``sam_hq_vit_l.pth`` ..., architecture inferred from shapes), or a Hugging Face directory / hub id holding a
    ``sam`` or ``sam_hq`` model (e.g. ``facebook/sam-vit-huge``, ``syscv-community/sam-hq-vit-large``).
    The SAM 3 tracker comes from Meta's ``sam3.pt`` or from a Hugging Face directory / hub id holding a
    ``sam3_video`` model (``facebook/sam3``: only the tracker's part is read) or a ``sam3_tracker`` model.
    ``None`` means :data:`DEFAULT_SAM2`.
    """
    return _load_proposer_model(source, PROPOSER, PROPOSER_HINT, device, dtype)


# ----------------------------------------------------------------------------------------------------- encoders
def _strip_backbone(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Teacher/student training checkpoints prefix the ViT with ``backbone.`` next to training-only heads."""
    if any(k.startswith("backbone.") for k in sd):
        return {k[len("backbone.") :]: v for k, v in sd.items() if k.startswith("backbone.")}
    return sd


def _encoder_from_file(path: Path, device, dtype):
    sd = _strip_backbone(_read_state_dict(path, "encoder", ENCODER_HINT))
    if looks_like_dinov3(sd) and "patch_embed.proj.weight" in sd:
        convert, to_meta = dinov3_meta_to_hf, dinov3_hf_to_meta
    elif "cls_token" in sd and "patch_embed.proj.weight" in sd:
        convert, to_meta = dinov2_meta_to_hf, dinov2_hf_to_meta
        sd = flatten_chunks(sd)
    elif looks_like_dinov3_convnext(sd):
        convert, to_meta = dinov3_convnext_meta_to_hf, dinov3_convnext_hf_to_meta
    else:
        raise CheckpointError(f"{path} is not a {ENCODER_FAMILIES} checkpoint: it looks like {_describe(sd)}. "
                              f"{ENCODER_HINT}")
    return _meta_model(path, sd, convert, to_meta, device, dtype)


def load_encoder(
    source: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> PreTrainedModel:
    """Load the patch encoder (DINOv2, DINOv3 ViT or DINOv3 ConvNeXt), in eval mode, on ``device``, in ``dtype``, frozen.

    ``source`` is a Meta checkpoint file (``dinov2_vit{s,b,l,g}14[_reg4]_pretrain.pth``,
    ``dinov3_vit*16*_pretrain_{lvd1689m,sat493m}-*.pth``, ``dinov3_convnext_*_pretrain_lvd1689m-*.pth``; a plain
    state dict or one wrapped in ``{"teacher"|"model": ...}``), a Hugging Face directory, or a hub id
    (``facebook/dinov3-vitl16-pretrain-lvd1689m``, ``facebook/dinov3-convnext-large-pretrain-lvd1689m`` ...);
    ``None`` means :data:`DEFAULT_ENCODER`. Returns ``Dinov2Model``, ``Dinov2WithRegistersModel``,
    ``DINOv3ViTModel`` or ``DINOv3ConvNextModel``. Raises CheckpointError when the weights are missing,
    unreadable, of no supported family, or (hub) gated without access.
    """
    kind, where = _classify(source, DEFAULT_ENCODER, "encoder", ENCODER_HINT)
    if kind == "file":
        return _encoder_from_file(where, device, dtype)
    local_only = False
    if kind == "dir":
        model_type = _dir_model_type(where, "encoder", ENCODER_HINT)
    else:
        local_only = _hub_local_only(where, "encoder", ENCODER_HINT)
        try:
            model_type = _hub_model_type(where, local_only)
        except Exception as exc:
            raise _hub_failure(where, exc, "encoder", ENCODER_HINT) from exc
    if model_type not in _ENCODER_CLASSES:
        raise CheckpointError(
            f"{where} holds a {model_type or 'unknown'!r} model (config model_type), not {ENCODER_FAMILIES}. "
            f"{ENCODER_HINT}"
        )
    try:
        return _load_hf(_ENCODER_CLASSES[model_type], where, device, dtype, "encoder", local_only)
    except CheckpointError:
        raise
    except Exception as exc:
        if kind == "hub":
            raise _hub_failure(where, exc, "encoder", ENCODER_HINT) from exc
        raise CheckpointError(f"cannot load the encoder from {where}: {_short(exc)}") from exc


# ----------------------------------------------------------------------------------------------------- both
_MODELS = {"sam2": ("SAM2", DEFAULT_SAM2, SAM2_HINT), "encoder": ("encoder", DEFAULT_ENCODER, ENCODER_HINT)}


def check_models(**sources) -> None:
    """Check, without loading any, that the models in ``sources`` can be loaded now; one error names all that can't.

    Keywords are ``sam2`` and ``encoder``; values are what :func:`load_sam2` / :func:`load_encoder` take (a file,
    a directory, a hub id, or None for the default); model objects are skipped. A local path must exist; a hub id
    must be cached or the hub reachable (at most one short probe, none under ``HF_HUB_OFFLINE=1``). Raises one
    :class:`CheckpointError` listing every unavailable model with where to get it.
    """
    problems = []
    for key, source in sources.items():
        what, default, hint = _MODELS[key]
        if isinstance(source, torch.nn.Module):
            continue
        try:
            kind, where = _classify(source, default, what, hint)
            if kind == "hub":
                _hub_local_only(where, what, hint)
        except CheckpointError as exc:
            problems.append(str(exc))
    if len(problems) == 1:
        raise CheckpointError(problems[0])
    if problems:
        raise CheckpointError(f"{len(problems)} models are not available:\n" + "\n".join(f"  - {p}" for p in problems))


# ----------------------------------------------------------------------------------------------------- video
SAM2_VIDEO_HINT = (
    "Tracking needs SAM2's video modules (memory attention and encoder): give Meta's full checkpoint "
    "(sam2_hiera_large.pt, sam2.1_hiera_*.pt), a Hugging Face directory or hub id of a sam2_video model "
    f"(e.g. {DEFAULT_SAM2}), or a transformers Sam2VideoModel."
)


def _share(video: Sam2VideoModel, image: PreTrainedModel) -> Sam2VideoModel:
    """Make ``video`` use ``image``'s tensors for every weight both have (same names and shapes), so that the
    image pipeline and tracking hold one copy of the image encoder, prompt encoder and mask decoder."""
    own = dict(video.named_parameters())
    for name, param in image.named_parameters():
        if name in own and own[name].shape == param.shape:
            module, _, attr = name.rpartition(".")
            setattr(video.get_submodule(module), attr, param)
    return video


def _video_from_file(path: Path, device, dtype, image_model: PreTrainedModel | None) -> Sam2VideoModel:
    sd = _read_state_dict(path, "SAM2", SAM2_VIDEO_HINT)
    if not any(k.startswith("image_encoder.trunk.") for k in sd):
        raise CheckpointError(f"{path} is not a SAM2 checkpoint: it looks like {_describe(sd)}. {SAM2_VIDEO_HINT}")
    image_model = image_model if image_model is not None else _sam2_from_file(path, device, dtype, sd)
    try:
        config = infer_sam2_video_config(sd, image_model.config)
        video_sd = sam2_video_meta_to_hf(sd)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    config._name_or_path = str(path)
    full = {**image_model.state_dict(), **video_sd}

    def to_meta(hf_sd):
        image_keys = {k: v for k, v in hf_sd.items() if k in image_model.state_dict()}
        return {**sam2_hf_to_meta(image_keys), **sam2_video_hf_to_meta(hf_sd)}

    model = _instantiate(Sam2VideoModel, config, full, path, device, dtype, sd, to_meta)
    logger.info("loaded the SAM2 video modules (memory bank of %d frames) from %s", config.num_maskmem, path)
    return _share(model, image_model)


def load_sam2_video(
    source: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
    image_model: PreTrainedModel | None = None,
) -> Sam2VideoModel:
    """Load SAM2 as a transformers ``Sam2VideoModel`` (the tracker), in eval mode, on ``device``, in ``dtype``, frozen.

    ``source`` is what :func:`load_sam2` takes: Meta's full checkpoint file (architecture inferred from shapes,
    video modules included: SAM 2.0 and SAM 2.1), a Hugging Face directory or hub id of a ``sam2_video`` model;
    ``None`` means :data:`DEFAULT_SAM2`. ``image_model``: the ``Sam2Model`` already loaded from the same source
    (the proposer); the video model then shares its tensors instead of holding a second copy. Raises
    CheckpointError when the weights are missing, unreadable, not SAM2, or hold only the image model.
    """
    kind, where = _classify(source, DEFAULT_SAM2, "SAM2", SAM2_VIDEO_HINT)
    if kind == "file":
        return _video_from_file(where, device, dtype, image_model)
    local_only = False
    if kind == "dir":
        model_type = _dir_model_type(where, "SAM2", SAM2_VIDEO_HINT)
    else:
        local_only = _hub_local_only(where, "SAM2", SAM2_VIDEO_HINT)
        try:
            model_type = _hub_model_type(where, local_only)
        except Exception as exc:  # a repo holding only Meta's .pt: load that file
            meta_name = _sam2_meta_filename(where)
            if meta_name is None:
                raise _hub_failure(where, exc, "SAM2", SAM2_VIDEO_HINT) from exc
            try:
                from huggingface_hub import hf_hub_download

                path = hf_hub_download(where, meta_name, local_files_only=local_only)
            except Exception as exc2:
                raise _hub_failure(where, exc, "SAM2", SAM2_VIDEO_HINT) from exc2
            return _video_from_file(Path(path), device, dtype, image_model)
    if model_type != "sam2_video":
        raise CheckpointError(f"{where} holds a {model_type or 'unknown'!r} model (config model_type), not SAM2's "
                              f"video model. {SAM2_VIDEO_HINT}")
    try:
        model = _load_hf(Sam2VideoModel, where, device, dtype, "SAM2 video", local_only)
    except CheckpointError:
        raise
    except Exception as exc:
        if kind == "hub":
            raise _hub_failure(where, exc, "SAM2", SAM2_VIDEO_HINT) from exc
        raise CheckpointError(f"cannot load SAM2's video model from {where}: {_short(exc)}") from exc
    return _share(model, image_model) if image_model is not None else model
