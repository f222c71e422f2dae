"""Helpers shared by the checkpoint key maps and the loaders.

A key map is written once, as ordered pairs of templates ``(meta, hf)``: one key in Meta's naming and the same
key in transformers' naming, with ``{field}`` placeholders for the parts both share (a block index, ``weight``
or ``bias`` ...). Both directions are generated from the same pairs, so they cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from string import Formatter
from typing import NamedTuple

import torch

from ..errors import CheckpointError

# Fields every key map knows: a block / layer index and the parameter kind.
FIELDS = {"i": r"\d+", "wb": r"weight|bias"}


def required(sd: Mapping[str, torch.Tensor], key: str, family: str) -> torch.Tensor:
    """``sd[key]``; CheckpointError "not a {family} checkpoint" when the key is missing (shape inference)."""
    if key not in sd:
        raise CheckpointError(f"not a {family} checkpoint: required key {key!r} is missing")
    return sd[key]


def count_indices(sd: Mapping[str, torch.Tensor], pattern: str) -> int:
    """1 + the largest integer that ``pattern``'s first group captures over ``sd``'s keys (0 when none matches):
    the number of blocks / layers of a stack."""
    regex = re.compile(pattern)
    idx = {int(m.group(1)) for k in sd if (m := regex.match(k))}
    return max(idx) + 1 if idx else 0


def split_copies(value: torch.Tensor, hf_keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """One Meta tensor that transformers holds once per key of ``hf_keys`` (SAM's prompt positional encoding):
    the tensor under the first key, independent copies under the others (own storage saves cleanly)."""
    return {key: value if i == 0 else value.clone() for i, key in enumerate(hf_keys)}


def join_copies(state_dict: Mapping[str, torch.Tensor], hf_keys: Sequence[str]) -> torch.Tensor | None:
    """The one Meta tensor behind transformers' copies ``hf_keys`` (None when absent); copies that hold different
    values raise CheckpointError (meta-device tensors are not compared)."""
    copies = [state_dict[k] for k in hf_keys if k in state_dict]
    if not copies:
        return None
    first = copies[0]
    for other in copies[1:]:
        if not (first.is_meta or other.is_meta) and not torch.equal(first, other):
            raise CheckpointError(f"{' and '.join(hf_keys)} differ; a Meta checkpoint holds a single tensor for them")
    return first


def few(keys: Iterable[str], n: int = 5) -> str:
    """The first ``n`` sorted keys, comma-separated, and how many more there are (for error messages)."""
    keys = sorted(keys)
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


class Template:
    """A key with ``{field}`` placeholders, e.g. ``"blocks.{i}.norm1.{wb}"``.

    :meth:`match` reads the field values from a whole key (each field matches its regex in ``fields``);
    :meth:`format` writes a key from field values. Each field appears at most once.
    """

    def __init__(self, text: str, fields: Mapping[str, str]):
        parts: list[str] = []
        names: list[str] = []
        for literal, name, spec, conversion in Formatter().parse(text):
            parts.append(re.escape(literal))
            if name is None:
                continue
            if name not in fields or name in names or spec or conversion:
                raise ValueError(f"key template {text!r}: bad or repeated field {{{name}}}")
            names.append(name)
            parts.append(f"(?P<{name}>{fields[name]})")
        self.text = text
        self.fields = frozenset(names)
        self.regex = re.compile("".join(parts))

    def match(self, key: str) -> dict[str, str] | None:
        """The field values if ``key`` matches the whole template, else None."""
        m = self.regex.fullmatch(key)
        return m.groupdict() if m else None

    def format(self, values: Mapping[str, str]) -> str:
        return self.text.format_map(values)


class KeyMap:
    """Ordered one-to-one renames between Meta's and transformers' key names.

    pairs: ``(meta, hf)`` templates that use the same fields; fields: field regexes on top of :data:`FIELDS`.
    Either direction renames a key by the first pair whose template on that side matches the whole key.
    """

    def __init__(self, pairs: Sequence[tuple[str, str]], fields: Mapping[str, str] | None = None):
        fields = {**FIELDS, **(fields or {})}
        self.pairs: list[tuple[Template, Template]] = []
        for meta, hf in pairs:
            pair = Template(meta, fields), Template(hf, fields)
            if pair[0].fields != pair[1].fields:
                raise ValueError(f"key templates {meta!r} and {hf!r} have different fields")
            self.pairs.append(pair)
        self._inverse = [(hf, meta) for meta, hf in self.pairs]

    def to_hf(self, key: str) -> str | None:
        """``key`` (Meta naming) in transformers' naming, or None when no pair matches it."""
        return _rename(key, self.pairs)

    def to_meta(self, key: str) -> str | None:
        """``key`` (transformers' naming) in Meta's naming, or None when no pair matches it."""
        return _rename(key, self._inverse)


def _rename(key: str, pairs: Iterable[tuple[Template, Template]]) -> str | None:
    for source, target in pairs:
        values = source.match(key)
        if values is not None:
            return target.format(values)
    return None


_MLP_LAYER_META = re.compile(r"(?P<mlp>.+)\.layers\.(?P<idx>\d+)\.(?P<wb>weight|bias)")
_MLP_LAYER_HF = re.compile(r"(?P<mlp>.+)\.(?P<name>proj_in|proj_out|layers\.\d+)\.(?P<wb>weight|bias)")


class MlpKeyMap:
    """Renames the layers of SAM-style MLPs: Meta's ``P.layers.{0..n-1}`` <-> transformers' ``P.proj_in``,
    ``P.layers.{0..n-3}``, ``P.proj_out``, where the prefixes ``P`` are renamed by ``(meta, hf)`` templates.

    The layer names depend on the MLP's depth ``n``, so both directions first read the depths off all keys
    (:meth:`depths`) and then rename one key at a time.
    """

    def __init__(self, prefixes: Sequence[tuple[str, str]], fields: Mapping[str, str] | None = None):
        self.prefixes = KeyMap(prefixes, fields)

    def _meta(self, key: str) -> tuple[str, int, str] | None:
        m = _MLP_LAYER_META.fullmatch(key)
        prefix = self.prefixes.to_hf(m["mlp"]) if m else None
        return (prefix, int(m["idx"]), m["wb"]) if prefix else None

    def _hf(self, key: str) -> tuple[str, str, str] | None:
        m = _MLP_LAYER_HF.fullmatch(key)
        prefix = self.prefixes.to_meta(m["mlp"]) if m else None
        return (prefix, m["name"], m["wb"]) if prefix else None

    def depths(self, keys: Iterable[str], naming: str) -> dict[str, int]:
        """Depth of every MLP among ``keys`` (``naming`` ``"meta"`` or ``"hf"``), by its prefix in the OTHER naming."""
        out: dict[str, int] = {}
        for key in keys:
            if naming == "meta":
                hit = self._meta(key)
                n = hit[1] + 1 if hit else 0
            else:
                hit = self._hf(key)
                n = int(hit[1].split(".")[1]) + 3 if hit and hit[1].startswith("layers.") else 2 if hit else 0
            if hit:
                out[hit[0]] = max(out.get(hit[0], 0), n)
        return out

    def to_hf(self, key: str, depths: Mapping[str, int]) -> str | None:
        """A Meta MLP key in transformers' naming (``depths`` from :meth:`depths` of the Meta keys), else None."""
        hit = self._meta(key)
        if hit is None:
            return None
        prefix, idx, kind = hit
        depth = depths[prefix]
        name = "proj_in" if idx == 0 else "proj_out" if idx == depth - 1 else f"layers.{idx - 1}"
        return f"{prefix}.{name}.{kind}"

    def to_meta(self, key: str, depths: Mapping[str, int]) -> str | None:
        """A transformers MLP key in Meta's naming (``depths`` from :meth:`depths` of the transformers keys)."""
        hit = self._hf(key)
        if hit is None:
            return None
        prefix, name, kind = hit
        idx = 0 if name == "proj_in" else depths[prefix] - 1 if name == "proj_out" else int(name.split(".")[1]) + 1
        return f"{prefix}.layers.{idx}.{kind}"


class Fused(NamedTuple):
    """A Meta tensor that transformers splits along dim 0 into equal ``parts`` (in this order)."""

    meta: Template
    hf: Template  # with a ``{part}`` field on top of the Meta template's
    parts: tuple[str, ...]


def fused(meta: str, hf: str, parts: tuple[str, ...]) -> Fused:
    """A :class:`Fused` rule from templates on :data:`FIELDS`; ``hf`` adds the ``{part}`` field."""
    return Fused(Template(meta, FIELDS), Template(hf, {**FIELDS, "part": "|".join(parts)}), parts)


def _match_fused(key: str, rules: Sequence[Fused], side: str) -> tuple[Fused, dict[str, str]] | None:
    """The rule whose ``side`` (``"meta"`` or ``"hf"``) template matches ``key``, and its field values."""
    for rule in rules:
        values = getattr(rule, side).match(key)
        if values is not None:
            return rule, values
    return None


def meta_to_hf(sd: Mapping[str, torch.Tensor], keys: KeyMap, rules: Sequence[Fused], family: str) -> dict:
    """Rename a Meta state dict to transformers' names, splitting fused tensors; unknown keys raise
    CheckpointError naming them."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in sd.items():
        hit = _match_fused(key, rules, "meta")
        if hit:
            rule, values = hit
            for part, chunk in zip(rule.parts, value.chunk(len(rule.parts), dim=0), strict=True):
                out[rule.hf.format({**values, "part": part})] = chunk.clone()  # own storage: saves cleanly
            continue
        new = keys.to_hf(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"{family} checkpoint has {len(unknown)} key(s) that match no {family} weight: "
                              f"{few(unknown)}")
    return out


def hf_to_meta(sd: Mapping[str, torch.Tensor], keys: KeyMap, rules: Sequence[Fused], family: str) -> dict:
    """Rename a transformers state dict to Meta's names, concatenating the parts of fused tensors."""
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    parts_of: dict[str, tuple[Fused, dict[str, torch.Tensor]]] = {}  # Meta key -> (rule, parts found)
    for key, value in sd.items():
        hit = _match_fused(key, rules, "hf")
        if hit:
            rule, values = hit
            part = values.pop("part")
            parts_of.setdefault(rule.meta.format(values), (rule, {}))[1][part] = value
            continue
        new = keys.to_meta(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
    if unknown:
        raise CheckpointError(f"transformers {family} state dict has keys with no Meta counterpart: {few(unknown)}")
    for meta_key, (rule, parts) in parts_of.items():
        missing = [n for n in rule.parts if n not in parts]
        if missing:
            raise CheckpointError(f"cannot fuse {meta_key}: missing {missing}")
        out[meta_key] = torch.cat([parts[n] for n in rule.parts], dim=0)
    return out
