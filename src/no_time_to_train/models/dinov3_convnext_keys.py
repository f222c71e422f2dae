"""Key map between Meta's DINOv3 ConvNeXt checkpoints and transformers' ``DINOv3ConvNextModel``.

Meta's files (``dinov3_convnext_{tiny,small,base,large}_pretrain_lvd1689m-*.pth``) are plain state dicts of
``downsample_layers.{s}`` (the stem, then LayerNorm + strided conv before each later stage), ``stages.{s}.{b}``
(ConvNeXt blocks: depthwise conv, LayerNorm, two pointwise linears, layer scale ``gamma``) and the final
``norm``. transformers nests each downsampling layer inside its stage. The architecture (blocks per stage and
widths) is read off the shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from transformers import DINOv3ConvNextConfig

from ..errors import CheckpointError
from .keymap import KeyMap, hf_to_meta, meta_to_hf

_KEYS = KeyMap(
    [
        ("downsample_layers.{s}.{n}.{wb}", "model.stages.{s}.downsample_layers.{n}.{wb}"),
        ("stages.{s}.{i}.gamma", "model.stages.{s}.layers.{i}.gamma"),
        ("stages.{s}.{i}.dwconv.{wb}", "model.stages.{s}.layers.{i}.depthwise_conv.{wb}"),
        ("stages.{s}.{i}.norm.{wb}", "model.stages.{s}.layers.{i}.layer_norm.{wb}"),
        ("stages.{s}.{i}.pwconv{n}.{wb}", "model.stages.{s}.layers.{i}.pointwise_conv{n}.{wb}"),
        ("norm.{wb}", "layer_norm.{wb}"),
    ],
    fields={"s": r"\d+", "n": r"[012]"},
)
_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.dwconv\.weight$")


def looks_like_dinov3_convnext(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is Meta's ConvNeXt layout (a stem conv and depthwise-conv blocks)."""
    return "downsample_layers.0.0.weight" in state_dict and any(_BLOCK.match(k) for k in state_dict)


def infer_dinov3_convnext_config(state_dict: Mapping[str, torch.Tensor]) -> DINOv3ConvNextConfig:
    """The ``DINOv3ConvNextConfig`` of a Meta ConvNeXt state dict: blocks per stage and stage widths."""
    blocks: dict[int, int] = {}
    widths: dict[int, int] = {}
    for key, value in state_dict.items():
        if m := _BLOCK.match(key):
            stage = int(m.group(1))
            blocks[stage] = max(blocks.get(stage, 0), int(m.group(2)) + 1)
            widths[stage] = int(value.shape[0])
    stages = sorted(blocks)
    if not stages or stages != list(range(len(stages))):
        raise CheckpointError(f"not a DINOv3 ConvNeXt checkpoint: stages {stages} (expected 0, 1, 2, 3)")
    return DINOv3ConvNextConfig(depths=[blocks[s] for s in stages], hidden_sizes=[widths[s] for s in stages])


def dinov3_convnext_meta_to_hf(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[DINOv3ConvNextConfig, dict[str, torch.Tensor]]:
    """Convert a Meta DINOv3 ConvNeXt state dict: ``(config inferred from shapes, DINOv3ConvNextModel state dict)``.
    A key with no transformers counterpart raises CheckpointError."""
    return infer_dinov3_convnext_config(state_dict), meta_to_hf(state_dict, _KEYS, (), "DINOv3 ConvNeXt")


def dinov3_convnext_hf_to_meta(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``DINOv3ConvNextModel`` state dict to Meta's key names (the official file layout)."""
    return hf_to_meta(state_dict, _KEYS, (), "DINOv3 ConvNeXt")
