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
    settings: ``MethodConfig`` values the models need; about: one line for ``--help``."""

    proposer: str
    encoder: str
    about: str
    settings: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "paper": Preset("facebook/sam2-hiera-large", "facebook/dinov2-large",
                    "the paper: SAM 2.0 Hiera-L + DINOv2 ViT-L/14 at 518 (the default)"),
    "sam2.1": Preset("facebook/sam2.1-hiera-large", "facebook/dinov2-large",
                     "SAM 2.1 Hiera-L + DINOv2 ViT-L/14"),
    "dinov3": Preset("facebook/sam2-hiera-large", "facebook/dinov3-vitl16-pretrain-lvd1689m",
                     "SAM 2.0 Hiera-L + DINOv3 ViT-L/16 at 592 (37x37 patches; gated on the hub)",
                     {"encoder_size": "auto"}),
    "hq": Preset("syscv-community/sam-hq-vit-large", "facebook/dinov2-large",
                 "SAM-HQ ViT-L + DINOv2 ViT-L/14"),
    "fast": Preset("facebook/sam2-hiera-tiny", "facebook/dinov2-small",
                   "SAM 2.0 Hiera-T + DINOv2 ViT-S/14: the paper's method with the smallest models"),
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
