"""Every knob of the method, in one place, with the paper's values as defaults.

Options marked *quirk* reproduce a behaviour of the published pipeline that moves the numbers (METHOD.md
section 11). They are faithful by default; the alternative values are there to ablate them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import InputError


@dataclass
class MethodConfig:
    """Hyper-parameters of reference encoding, proposal generation, scoring and merging.

    Each setting is documented below as ``name[, allowed values]: meaning`` (the CLI's ``--help`` shows these).

    Reference encoding (METHOD.md section 3)
        context_ratio, >= 0: the square crop side is ``(1 + context_ratio) * max(box_w, box_h)``.
        encoder_size, multiple of 14: DINOv2 input side (518 gives 37x37 patches of 14 px).
        ref_mask_sampling: *quirk* ``"top-left"`` samples the soft 518x518 mask at each patch's top-left pixel
            (PyTorch nearest); ``"area"`` uses the patch's mean mask value instead.
        prototype: *quirk* ``"instance-mean"`` = normalise(mean of per-reference vectors) (the paper);
            ``"pooled"`` weights every foreground patch of all references equally.

    Proposals (METHOD.md 5.3)
        sam_image_size, >= 1: SAM2 input side; targets are squashed to it.
        points_per_side, >= 1: the point grid is ``points_per_side**2`` prompts.
        point_grid: *quirk* ``"border"`` = linspace(0, S-1, n) + 0.5 (includes the borders, the paper);
            ``"centered"`` = SAM's automatic-mask-generator grid ``(i + 0.5) / n * S``.
        point_batch_size, >= 1: prompts decoded per mask-decoder call. It never changes the results (each prompt is
            decoded independently), only speed and peak memory. ``"auto"`` (default) picks the largest batch
            that fits in half the free memory of the device, at most 1024 on CUDA and 64 on CPU, where larger
            batches are no faster (``resources.auto_point_batch_size``); the paper used 256, which an
            integer value reproduces.
        prompt_mode: ``"grid"`` (the paper) prompts SAM2 with the ``points_per_side``² grid; ``"guided"`` is a
            fast deviation that prompts only the ``guided_points`` DINOv2 patch centres most similar to any
            class prototype (fewer decoder passes; the results differ from the paper's).
        guided_points, >= 1: number of prompts in ``"guided"`` mode.
        multimask_tokens, from 1, 2, 3: mask tokens the best-IoU choice is made among (the paper: 1, 2, 3).
        iou_threshold, in [0, 1]: proposals are kept when SAM2's predicted IoU is strictly greater.
        mask_threshold: mask logits strictly above it are foreground.
        add_no_memory_embedding: *quirk* the paper does NOT add SAM2's ``no_memory_embedding`` to the image
            embedding (stock SAM2 predictors do); set True to add it.

    Scoring, NMS and merging (METHOD.md 5.4-5.8)
        nms_threshold, in [0, 1]: class-aware box NMS IoU threshold, ranked by predicted IoU (*quirk*, as the paper).
        nms_rank_by: *quirk* ``"predicted_iou"`` (the paper) or ``"score"``.
        max_detections, >= 1: final top-k (``num_out_instance``).
        pre_merge_factor, >= 1: at most ``pre_merge_factor * max_detections`` NMS survivors enter merging.
        merge_exponent, >= 0: soft-merge decay ``score *= (1 - IoS * cos) ** merge_exponent``.
        soft_merge: apply semantic-aware soft merging (always on in the paper).
        mask_upsampling: *quirk* ``"direct"`` bilinear 256 -> (H, W) in one step (the paper); ``"sam"`` goes
            256 -> 1024 -> (H, W) like SAM2's own post-processing.
        box_convention: *quirk* ``"inclusive"`` writes COCO ``w = x_max - x_min`` with inclusive pixel
            indices, 1 px short (the paper); ``"exclusive"`` writes the true pixel extent.
        score_threshold, in [0, 1]: detections scoring at or below are dropped at the end (None = keep all, the paper).
        negative_temperature, > 0: how strongly negative references (an extension, off unless a memory holds
            some) lower a category's score: ``s * exp(-max(0, s_neg - s) / T)``; 0.8 as the authors' code.
    """

    # reference encoding
    context_ratio: float = 0.2
    encoder_size: int = 518
    ref_mask_sampling: str = "top-left"
    prototype: str = "instance-mean"
    # proposals
    sam_image_size: int = 1024
    points_per_side: int = 32
    point_grid: str = "border"
    point_batch_size: int | str = "auto"
    prompt_mode: str = "grid"
    guided_points: int = 256
    multimask_tokens: tuple[int, ...] = (1, 2, 3)
    iou_threshold: float = 0.4
    mask_threshold: float = 0.0
    add_no_memory_embedding: bool = False
    # scoring, NMS, merging
    nms_threshold: float = 0.5
    nms_rank_by: str = "predicted_iou"
    max_detections: int = 100
    pre_merge_factor: int = 8
    merge_exponent: float = 0.5
    soft_merge: bool = True
    mask_upsampling: str = "direct"
    box_convention: str = "inclusive"
    score_threshold: float | None = None
    negative_temperature: float = 0.8

    _CHOICES = {
        "ref_mask_sampling": ("top-left", "area"),
        "prototype": ("instance-mean", "pooled"),
        "point_grid": ("border", "centered"),
        "prompt_mode": ("grid", "guided"),
        "nms_rank_by": ("predicted_iou", "score"),
        "mask_upsampling": ("direct", "sam"),
        "box_convention": ("inclusive", "exclusive"),
    }

    def __post_init__(self) -> None:
        self.multimask_tokens = tuple(int(t) for t in self.multimask_tokens)
        for name, allowed in self._CHOICES.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"config: {name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if self.point_batch_size != "auto" and (not isinstance(self.point_batch_size, int) or self.point_batch_size < 1):
            raise InputError(f"config: point_batch_size must be a positive integer or 'auto', got {self.point_batch_size!r}")
        if not self.multimask_tokens or not set(self.multimask_tokens) <= {1, 2, 3}:
            raise InputError(f"config: multimask_tokens must be a non-empty subset of 1, 2, 3, got {self.multimask_tokens}")
        for name in ("points_per_side", "guided_points", "max_detections", "pre_merge_factor", "encoder_size", "sam_image_size"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"config: {name} must be >= 1, got {getattr(self, name)}")
        if self.encoder_size % 14:
            raise InputError(f"config: encoder_size must be a multiple of the 14 px patch, got {self.encoder_size}")

    # -- serialisation ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["multimask_tokens"] = list(self.multimask_tokens)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MethodConfig":
        known = {f.name for f in fields(cls) if not f.name.startswith("_")}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"config: unknown setting(s) {', '.join(unknown)}; known settings: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> "MethodConfig":
        """Read a YAML or JSON file of settings (a flat mapping, or one under a ``method:`` key)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"config file {path} not found")
        try:
            text = path.read_text()
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text) or {}
        except Exception as exc:  # noqa: BLE001 - any parse error becomes one clear message
            raise InputError(f"config file {path} could not be parsed: {exc}") from exc
        if isinstance(data, dict) and isinstance(data.get("method"), dict):
            data = data["method"]
        if not isinstance(data, dict):
            raise InputError(f"config file {path} must hold a mapping of setting: value")
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> "MethodConfig":
        """A copy with some settings changed (validated)."""
        return MethodConfig.from_dict({**self.to_dict(), **overrides})

    def with_overrides(self, items: list[str]) -> "MethodConfig":
        """Apply ``key=value`` strings (values parsed as YAML scalars), e.g. ``["points_per_side=16"]``."""
        import yaml

        updates: dict[str, Any] = {}
        for item in items:
            if "=" not in item:
                raise InputError(f"config override {item!r} must look like key=value")
            key, value = item.split("=", 1)
            updates[key.strip().replace("-", "_")] = yaml.safe_load(value)
        return self.replace(**updates)

    @property
    def max_pre_merge(self) -> int:
        """Cap on NMS survivors entering soft merging (800 in the paper)."""
        return self.pre_merge_factor * self.max_detections


# -- help text ------------------------------------------------------------------------------------------
_DOC_ENTRY = re.compile(r"^(\w+)(?:, ([^:]+))?: (.*)$")
_TYPE_WORDS = {"float": "float", "int": "integer", "bool": "true or false", "None": "null",
               "tuple[int, ...]": "list of integers"}


def _yaml_value(value: Any) -> str:
    """``value`` as it is written on the command line or in a config file (YAML)."""
    if isinstance(value, (bool, type(None), tuple)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


def field_help() -> dict[str, str]:
    """``{setting: "meaning (allowed values; default X)"}`` for every MethodConfig field, from the class docstring.

    The docstring documents each field as ``name[, constraint]: meaning`` (continued on deeper-indented lines);
    the allowed values combine the field's type, its choices and that constraint.
    """
    entries: dict[str, list[str]] = {}
    current = None
    for line in inspect.cleandoc(MethodConfig.__doc__ or "").splitlines():
        indent = len(line) - len(line.lstrip())
        m = _DOC_ENTRY.match(line.strip())
        if indent == 4 and m:
            current = m.group(1)
            entries[current] = [m.group(2) or "", m.group(3)]
        elif indent > 4 and current:
            entries[current].append(line.strip())
        else:
            current = None
    out = {}
    for f in fields(MethodConfig):
        constraint, *text = entries.get(f.name, ["", ""])
        meaning = re.sub(r"``(.*?)``", r"\1", " ".join(text)).replace("*quirk* ", "quirk: ").replace("*quirk*", "quirk")
        if f.name in MethodConfig._CHOICES:
            allowed = "one of " + ", ".join(MethodConfig._CHOICES[f.name])
        else:
            words = [_TYPE_WORDS.get(t, _yaml_value(f.default)) for t in str(f.type).split(" | ")]
            allowed = " or ".join([f"{words[0]} {constraint}".strip(), *words[1:]])
        out[f.name] = f"{meaning.rstrip('.')} ({allowed}; default {_yaml_value(f.default)})".lstrip()
    return out
