"""Every knob of the method, in one place, with the paper's values as defaults.

Options marked *quirk* reproduce a behaviour of the published pipeline that moves the numbers (METHOD.md
section 11). They are faithful by default; the alternative values are there to ablate them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import InputError


class SettingError(InputError):
    """A method setting of the wrong type or out of range.

    ``setting``: the field name; ``problem``: what is wrong (``"must be ..., got ..."``); the message starts
    with ``label``, the setting as its user wrote it (``config: iou_threshold``, ``--iou-threshold``, or
    ``config file c.yaml: iou_threshold``).
    """

    def __init__(self, setting: str, problem: str, label: str | None = None):
        self.setting, self.problem = setting, problem
        super().__init__(f"{label or 'config: ' + setting} {problem}")

    def relabel(self, label: str) -> "SettingError":
        return SettingError(self.setting, self.problem, label)


@dataclass
class MethodConfig:
    """Hyper-parameters of reference encoding, proposal generation, scoring and merging.

    Each setting is documented below as ``name: meaning``; ``--help`` shows it with the values its check in
    ``_CHECKS`` allows. Every setting is type- and range-checked when the config is made (a
    :class:`SettingError` naming it): integers must be integers (``True`` is not one), flags real booleans,
    thresholds numbers in their range.

    Reference encoding (METHOD.md section 3)
        context_ratio: the square crop side is ``(1 + context_ratio) * max(box_w, box_h)``.
        encoder_size: patch-encoder input side in pixels; a multiple of the encoder's patch size (checked when
            the encoder loads). 518 (the paper) gives DINOv2's 37x37 patches of 14 px; ``"auto"`` is 37 patches
            of the encoder's own size: 518 for DINOv2, 592 for DINOv3 (patch 16), the paper's 37x37 grid.
        ref_mask_sampling: *quirk* ``"top-left"`` samples the soft 518x518 mask at each patch's top-left pixel
            (PyTorch nearest); ``"area"`` uses the patch's mean mask value instead.
        prototype: *quirk* ``"instance-mean"`` = normalise(mean of per-reference vectors) (the paper);
            ``"pooled"`` weights every foreground patch of all references equally.

    Proposals (METHOD.md 5.3)
        sam_image_size: the proposer's input side (1024; 1008 for the SAM 3 tracker); targets are squashed to it.
        points_per_side: the point grid is ``points_per_side**2`` prompts.
        point_grid: *quirk* ``"border"`` = linspace(0, S-1, n) + 0.5 (includes the borders, the paper);
            ``"centered"`` = SAM's automatic-mask-generator grid ``(i + 0.5) / n * S``.
        point_batch_size: prompts decoded per mask-decoder call. It never changes the results (each prompt is
            decoded independently), only speed and peak memory. ``"auto"`` (default) picks the largest batch
            that fits in half the free memory of the device, at most 1024 on CUDA and 64 on CPU, where larger
            batches are no faster (``resources.auto_point_batch_size``); the paper used 256, which an
            integer value reproduces.
        prompt_mode: ``"grid"`` (the paper) prompts SAM2 with the ``points_per_side``² grid; ``"guided"`` is a
            fast deviation that prompts only the ``guided_points`` DINOv2 patch centres most similar to any
            class prototype (fewer decoder passes; the results differ from the paper's).
        guided_points: number of prompts in ``"guided"`` mode.
        multimask_tokens: mask tokens the best-IoU choice is made among (the paper: 1, 2, 3).
        iou_threshold: proposals are kept when SAM2's predicted IoU is strictly greater.
        mask_threshold: mask logits strictly above it are foreground.
        add_no_memory_embedding: *quirk* the paper does NOT add SAM2's ``no_memory_embedding`` to the image
            embedding (stock SAM2 predictors do); set True to add it.

    Scoring, NMS and merging (METHOD.md 5.4-5.8)
        nms_threshold: class-aware box NMS IoU threshold, ranked by predicted IoU (*quirk*, as the paper).
        nms_rank_by: *quirk* ``"predicted_iou"`` (the paper) or ``"score"``.
        max_detections: final top-k (``num_out_instance``).
        pre_merge_factor: at most ``pre_merge_factor * max_detections`` NMS survivors enter merging.
        merge_exponent: soft-merge decay ``score *= (1 - IoS * cos) ** merge_exponent``.
        soft_merge: apply semantic-aware soft merging (always on in the paper).
        mask_upsampling: *quirk* ``"direct"`` bilinear 256 -> (H, W) in one step (the paper); ``"sam"`` goes
            256 -> 1024 -> (H, W) like SAM2's own post-processing.
        box_convention: *quirk* ``"inclusive"`` writes COCO ``w = x_max - x_min`` with inclusive pixel
            indices, 1 px short (the paper); ``"exclusive"`` writes the true pixel extent.
        score_threshold: detections scoring at or below are dropped at the end (None = keep all, the paper).
        negative_temperature: how strongly negative references (an extension, off unless a memory holds
            some) lower a category's score: ``s * exp(-max(0, s_neg - s) / T)``; 0.8 as the authors' code.
    """

    # reference encoding
    context_ratio: float = 0.2
    encoder_size: int | str = 518
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

    def __post_init__(self) -> None:
        for f in fields(self):
            check = _CHECKS[f.name]
            try:
                setattr(self, f.name, check(getattr(self, f.name)))
            except ValueError as exc:
                raise SettingError(f.name, str(exc)) from None

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
    def from_file(cls, path: str | Path, base: "MethodConfig | None" = None) -> "MethodConfig":
        """Read a YAML or JSON file of settings (a flat mapping, or one under a ``method:`` key).

        The file's settings apply over ``base`` (default: the paper's)."""
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
        try:
            return (base or cls()).replace(**data)
        except SettingError as exc:
            raise exc.relabel(f"config file {path}: {exc.setting}") from None

    def replace(self, **overrides: Any) -> "MethodConfig":
        """A copy with some settings changed (validated)."""
        return MethodConfig.from_dict({**self.to_dict(), **overrides})

    def with_overrides(self, items: list[str], labels: Mapping[str, str] | None = None) -> "MethodConfig":
        """Apply ``key=value`` strings (values parsed as YAML scalars), e.g. ``["points_per_side=16"]``.

        ``labels`` maps a setting to the name its user typed (the CLI passes ``{"iou_threshold":
        "--iou-threshold"}``), so that an error names the flag rather than the field.
        """
        labels = dict(labels or {})
        updates: dict[str, Any] = {}
        for item in items:
            if "=" not in item:
                raise InputError(f"config override {item!r} must look like key=value")
            key, value = item.split("=", 1)
            key = key.strip().replace("-", "_")
            updates[key] = _parse_scalar(value, labels.get(key, f"config: {key}"))
        try:
            return self.replace(**updates)
        except SettingError as exc:
            raise exc.relabel(labels[exc.setting]) if exc.setting in labels else exc from None

    @property
    def max_pre_merge(self) -> int:
        """Cap on NMS survivors entering soft merging (800 in the paper)."""
        return self.pre_merge_factor * self.max_detections


# -- validation: one check per setting, each returns the value normalised or raises ValueError(problem) ---
_FLOAT_LITERAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _parse_scalar(text: str, label: str) -> Any:
    """A ``--set``/flag value as YAML would read it; ``1e-3`` (a string to YAML 1.1) is read as a number."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{label}: cannot parse {text!r} ({exc})") from None
    if isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()):
        value = float(value)
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _allowing(what: str):
    """Decorator: record on a check the values it allows (``--help`` shows them, errors say them)."""

    def mark(check):
        check.allowed = what
        return check

    return mark


def _integer(lo: int) -> Callable[[Any], int]:
    what = f"an integer >= {lo}"

    @_allowing(what)
    def check(v: Any) -> int:
        if not _is_int(v) or v < lo:
            raise ValueError(f"must be {what}, got {v!r}")
        return int(v)

    return check


def _number(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            optional: bool = False) -> Callable[[Any], float | None]:
    if lo is not None and hi is not None:
        what = f"a number in [{lo:g}, {hi:g}]"
    elif lo is not None:
        what = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        what = "a finite number"
    what += " or none" if optional else ""

    @_allowing(what)
    def check(v: Any) -> float | None:
        if optional and (v is None or (isinstance(v, str) and v.lower() == "none")):
            return None
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (lo is None or (v > lo if lo_open else v >= lo)) and (hi is None or v <= hi)
        if not ok:
            raise ValueError(f"must be {what}, got {v!r}")
        return float(v)

    return check


def _choice(*allowed: str) -> Callable[[Any], str]:
    @_allowing("one of " + ", ".join(allowed))
    def check(v: Any) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {v!r}")
        return v

    return check


@_allowing("true or false")
def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


@_allowing("'auto' or an integer >= 1")
def _batch_size(v: Any) -> int | str:
    if v == "auto":
        return v
    if not _is_int(v) or v < 1:
        raise ValueError(f"must be 'auto' or an integer >= 1, got {v!r}")
    return int(v)


@_allowing("'auto' or an integer >= 1 (a multiple of the encoder's patch size)")
def _encoder_size(v: Any) -> int | str:
    if v == "auto":
        return v
    if not _is_int(v) or v < 1:
        raise ValueError(f"must be 'auto' or an integer >= 1 (a multiple of the encoder's patch size), got {v!r}")
    return int(v)


@_allowing("a non-empty subset of 1, 2, 3")
def _tokens(v: Any) -> tuple[int, ...]:
    items = [v] if _is_int(v) else v.split(",") if isinstance(v, str) else v
    try:
        tokens = tuple(int(t) if isinstance(t, str) else t for t in items)
    except (TypeError, ValueError):
        tokens = None
    if not tokens or not all(_is_int(t) and t in (1, 2, 3) for t in tokens) or len(set(tokens)) < len(tokens):
        raise ValueError(f"must be a non-empty subset of 1, 2, 3 (a list, or comma-separated), got {v!r}")
    return tuple(int(t) for t in tokens)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "context_ratio": _number(0.0),
    "encoder_size": _encoder_size,
    "ref_mask_sampling": _choice("top-left", "area"),
    "prototype": _choice("instance-mean", "pooled"),
    "sam_image_size": _integer(1),
    "points_per_side": _integer(1),
    "point_grid": _choice("border", "centered"),
    "point_batch_size": _batch_size,
    "prompt_mode": _choice("grid", "guided"),
    "guided_points": _integer(1),
    "multimask_tokens": _tokens,
    "iou_threshold": _number(0.0, 1.0),
    "mask_threshold": _number(),
    "add_no_memory_embedding": _flag,
    "nms_threshold": _number(0.0, 1.0),
    "nms_rank_by": _choice("predicted_iou", "score"),
    "max_detections": _integer(1),
    "pre_merge_factor": _integer(1),
    "merge_exponent": _number(0.0),
    "soft_merge": _flag,
    "mask_upsampling": _choice("direct", "sam"),
    "box_convention": _choice("inclusive", "exclusive"),
    "score_threshold": _number(0.0, 1.0, optional=True),
    "negative_temperature": _number(0.0, lo_open=True),
}


# -- help text ------------------------------------------------------------------------------------------
_DOC_ENTRY = re.compile(r"^(\w+): (.*)$")


def _yaml_value(value: Any) -> str:
    """``value`` as it is written on the command line or in a config file (YAML)."""
    if value is None:
        return "none"
    if isinstance(value, (bool, tuple)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


def field_help() -> dict[str, str]:
    """``{setting: "meaning (allowed values; default X)"}`` for every MethodConfig field, from the class docstring.

    The docstring documents each field as ``name: meaning`` (continued on deeper-indented lines); the allowed
    values are those of the field's check in ``_CHECKS``, so the help and the validation cannot disagree.
    """
    entries: dict[str, list[str]] = {}
    current = None
    for line in inspect.cleandoc(MethodConfig.__doc__ or "").splitlines():
        indent = len(line) - len(line.lstrip())
        m = _DOC_ENTRY.match(line.strip())
        if indent == 4 and m:
            current = m.group(1)
            entries[current] = [m.group(2)]
        elif indent > 4 and current:
            entries[current].append(line.strip())
        else:
            current = None
    out = {}
    for f in fields(MethodConfig):
        text = entries.get(f.name, [""])
        meaning = re.sub(r"``(.*?)``", r"\1", " ".join(text)).replace("*quirk* ", "quirk: ").replace("*quirk*", "quirk")
        allowed = _CHECKS[f.name].allowed
        out[f.name] = f"{meaning.rstrip('.')} ({allowed}; default {_yaml_value(f.default)})".lstrip()
    return out

