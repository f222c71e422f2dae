"""Named model choices: a proposer, a patch encoder and the method settings they need, picked with ``--preset``.

Only ``paper`` reproduces the paper's numbers (SAM 2.0 Hiera-L + DINOv2 ViT-L/14 at 518, every setting the
paper's); the others swap the frozen models and keep the method. Explicit ``--sam2`` / ``--encoder`` and method
settings (a config file, ``--set``, the per-setting flags) override a preset's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class Preset:
    """proposer, encoder: hub ids (a Meta file or HF directory given with ``--sam2``/``--encoder`` replaces them);
    architecture: the two models' families and sizes in :mod:`no_time_to_train.models.configs` (the benchmark
    builds random models of them); settings: ``MethodConfig`` values the models need; about: one line for
    ``--help``."""

    proposer: str
    encoder: str
    about: str
    architecture: tuple[str, str, str, str]  # (proposer family, size, encoder family, size) of models/configs.py
    settings: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "paper": Preset("facebook/sam2-hiera-large", "facebook/dinov2-large",
                    "the paper: SAM 2.0 Hiera-L + DINOv2 ViT-L/14 at 518 (the default)",
                    ("sam2", "large", "dinov2", "vitl14")),
    "sam2.1": Preset("facebook/sam2.1-hiera-large", "facebook/dinov2-large",
                     "SAM 2.1 Hiera-L + DINOv2 ViT-L/14", ("sam2", "large", "dinov2", "vitl14")),
    "dinov3": Preset("facebook/sam2-hiera-large", "facebook/dinov3-vitl16-pretrain-lvd1689m",
                     "SAM 2.0 Hiera-L + DINOv3 ViT-L/16 at 592 (37x37 patches; gated on the hub)",
                     ("sam2", "large", "dinov3", "vitl16"), {"encoder_size": "auto"}),
    "sam3": Preset("facebook/sam3", "facebook/dinov2-large",
                   "SAM 3 tracker (its ViT-L/14 at 1008²) + DINOv2 ViT-L/14 (gated on the hub)",
                   ("sam3_tracker", "release", "dinov2", "vitl14"), {"sam_image_size": 1008}),
    "hq": Preset("syscv-community/sam-hq-vit-large", "facebook/dinov2-large",
                 "SAM-HQ ViT-L + DINOv2 ViT-L/14", ("sam_hq", "vit_l", "dinov2", "vitl14")),
    "fast": Preset("facebook/sam2-hiera-tiny", "facebook/dinov2-small",
                   "SAM 2.0 Hiera-T + DINOv2 ViT-S/14: the paper's method with the smallest models",
                   ("sam2", "tiny", "dinov2", "vits14")),
}
DEFAULT_PRESET = "paper"


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is an InputError listing the known ones."""
    if name not in PRESETS:
        raise InputError(f"--preset {name!r} is not a preset; the presets are: "
                         + "; ".join(f"{n} ({p.about})" for n, p in PRESETS.items()))
    return PRESETS[name]


def presets_help() -> str:
    """One line per preset, for ``--help``."""
    return "; ".join(f"{n}: {p.about}" for n, p in PRESETS.items())


def random_models(preset: Preset, seed: int = 0):
    """Randomly initialised transformers models of ``preset``'s architecture: ``(proposer, encoder)``.

    For measuring cost without weights (``benchmarks/bench.py --preset``); their outputs mean nothing.
    """
    import torch
    from transformers import DINOv3ViTModel, Dinov2Model, Sam2Model, Sam3TrackerModel, SamHQModel, SamModel

    from .models.configs import dinov2_config, dinov3_config, sam2_config, sam3_tracker_config, sam_config

    prop_family, prop_size, enc_family, enc_size = preset.architecture
    torch.manual_seed(seed)
    if prop_family == "sam2":
        proposer = Sam2Model(sam2_config(prop_size))
    elif prop_family == "sam3_tracker":
        proposer = Sam3TrackerModel(sam3_tracker_config(prop_size))
    else:
        hq = prop_family == "sam_hq"
        proposer = (SamHQModel if hq else SamModel)(sam_config(prop_size, hq))
    encoder = (DINOv3ViTModel(dinov3_config(enc_size)) if enc_family == "dinov3"
               else Dinov2Model(dinov2_config(enc_size)))
    return proposer.eval(), encoder.eval()
