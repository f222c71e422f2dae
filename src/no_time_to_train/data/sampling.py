"""The paper's few-shot reference sampler (METHOD section 2), and reference-set files.

:func:`sample_references` reproduces the authors' procedure exactly, including how it consumes Python's
``random`` generator, so a given (annotation file, seed, K) yields the paper's reference set:

1. seed a ``random.Random(seed)`` (same stream as ``random.seed(seed)``);
2. walk the annotations in JSON order, keep those of the requested classes, group ``(image_id, ann_id)`` per
   class; classes are ordered by first appearance;
3. per class, in that order: ONE ``shuffle`` of its list, then scan it, skipping invalid annotations
   (crowd; bbox w or h < 32 px; closer than 10 px to an image border) and images already taken for this class;
   stop at K.

Reference files: a readable JSON (``nttt-references/1``) written by :func:`write_references`;
:func:`read_references` also reads the authors' pickle ``{category_id: [{"img_id", "ann_ids"}, ...]}``.
"""

from __future__ import annotations

import io
import json
import pickle
import random
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

from ..errors import InputError
from .coco import CocoDataset, _as_coco_dict, load_coco_json

__all__ = [
    "FORMAT",
    "MIN_SIZE",
    "BORDER",
    "References",
    "is_valid_reference",
    "sample_references",
    "write_references",
    "write_references_pickle",
    "read_references",
]

FORMAT = "nttt-references/1"
#: Minimum bbox width and height (pixels) of a reference instance.
MIN_SIZE = 32
#: Minimum distance (pixels) between a reference bbox and every image border.
BORDER = 10

_REF_KEYS = ("category_id", "category_name", "image_id", "annotation_id", "file_name", "bbox")


class References(OrderedDict):
    """``{category_id: [reference, ...]}`` in class order, shot order = acceptance order.

    Each reference is a dict ``{category_id, category_name, image_id, annotation_id, file_name, bbox}``
    (``bbox`` = COCO ``[x, y, w, h]``). ``meta`` holds provenance: ``seed``, ``shots``, ``annotations`` (source
    JSON path) and anything else recorded in the file.
    """

    def __init__(self, *args, meta: Mapping[str, Any] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.meta: dict[str, Any] = dict(meta or {})

    @property
    def shots(self) -> int:
        """K, references per class (0 if empty); classes in ``meta["overfull"]`` hold more."""
        overfull = _overfull(self.meta)
        regular = [len(v) for c, v in self.items() if int(c) not in overfull]
        return regular[0] if regular else int(self.meta.get("shots") or 0) if self else 0

    def flat(self) -> list[dict]:
        """All references, class by class, in shot order."""
        return [r for refs in self.values() for r in refs]


def is_valid_reference(ann: Mapping[str, Any], width: float, height: float) -> bool:
    """The paper's validity filter for a reference instance (METHOD 2, step 5)."""
    if ann.get("iscrowd", 0) == 1:
        return False
    x, y, w, h = ann["bbox"]
    if w < MIN_SIZE or h < MIN_SIZE:
        return False
    if x < BORDER or y < BORDER or width - (x + w) < BORDER or height - (y + h) < BORDER:
        return False
    return True


def sample_references(
    coco_dict_or_path: dict | str | Path | CocoDataset,
    category_ids,
    shots: int,
    seed: int,
) -> References:
    """Sample ``shots`` reference instances per category, exactly like the paper's sampler.

    Args:
        coco_dict_or_path: the reference pool: a COCO dict, a path to a COCO JSON or a :class:`CocoDataset`.
        category_ids: the classes to sample (COCO category ids; order does not matter: the output follows the
            order in which classes first appear among the annotations).
        shots: K, references per class (>= 1).
        seed: the seed of Python's ``random`` generator (the paper uses 33).

    Returns:
        :class:`References` ``{category_id: [ref × K]}`` with ``meta = {seed, shots, annotations}``.

    Raises:
        InputError: unknown categories, bad K/seed, or a class with fewer than K valid candidates.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise InputError(f"shots must be a positive integer, got {shots!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer (the paper uses 33), got {seed!r}.")
    source = None
    if isinstance(coco_dict_or_path, (str, Path)):
        source = str(coco_dict_or_path)
        data = load_coco_json(coco_dict_or_path)
    else:
        if isinstance(coco_dict_or_path, CocoDataset) and coco_dict_or_path.json_path is not None:
            source = str(coco_dict_or_path.json_path)
        data = _as_coco_dict(coco_dict_or_path)

    cats = {int(c["id"]): c for c in data["categories"]}
    wanted = []
    for c in category_ids:
        try:
            wanted.append(int(c))
        except (TypeError, ValueError):
            raise InputError(f"Category ids must be integers, got {c!r}; resolve names with resolve_categories.")
    if not wanted:
        raise InputError("No categories to sample: pass at least one category id.")
    unknown = sorted(set(wanted) - set(cats))
    if unknown:
        raise InputError(f"Category ids {unknown} are not in the annotation file; valid ids: {sorted(cats)[:20]}...")
    wanted_set = set(wanted)

    images = {int(im["id"]): im for im in data["images"]}
    anns_by_id: dict[int, dict] = {}
    groups: dict[int, list[tuple[int, int]]] = {}  # insertion order = first appearance
    for ann in data["annotations"]:
        aid = int(ann["id"])
        if aid in anns_by_id:
            raise InputError(f"Annotation id {aid} appears twice in the annotation file: ids must be unique.")
        anns_by_id[aid] = ann
        cid = int(ann["category_id"])
        if cid in wanted_set:
            groups.setdefault(cid, []).append((int(ann["image_id"]), aid))

    rng = random.Random(seed)
    out = References(meta={"seed": seed, "shots": shots, "annotations": source})
    shortfalls: list[tuple[int, int]] = []
    for cid, pairs in groups.items():
        rng.shuffle(pairs)
        taken_images: set[int] = set()
        accepted: list[dict] = []
        for image_id, aid in pairs:
            if len(accepted) == shots:
                break
            if image_id in taken_images:
                continue
            img = images.get(image_id)
            if img is None:
                raise InputError(f"Annotation {aid} refers to image id {image_id}, which is not in 'images'.")
            ann = anns_by_id[aid]
            if not is_valid_reference(ann, img["width"], img["height"]):
                continue
            taken_images.add(image_id)
            accepted.append(_make_ref(cats[cid], img, ann))
        if len(accepted) < shots:
            valid_images = {  # distinct images with a valid candidate, for the error message
                im for im, a in pairs
                if is_valid_reference(anns_by_id[a], images[im]["width"], images[im]["height"])
            }
            shortfalls.append((cid, len(valid_images)))
        out[cid] = accepted
    for cid in wanted:
        if cid not in groups:
            shortfalls.append((cid, 0))
    if shortfalls:
        parts = [f"{cats[c]['name']!r} (id {c}): {n} valid" for c, n in shortfalls]
        raise InputError(
            f"Cannot sample {shots} references per class: too few valid candidates for "
            + "; ".join(parts)
            + f". A valid candidate is a non-crowd instance with a bbox of at least {MIN_SIZE}x{MIN_SIZE} px, "
            f"at least {BORDER} px from every image border, one per distinct image. Lower the shots or drop "
            f"these categories."
        )
    return out


def _make_ref(cat: Mapping[str, Any], img: Mapping[str, Any], ann: Mapping[str, Any]) -> dict:
    return {
        "category_id": int(cat["id"]),
        "category_name": cat["name"],
        "image_id": int(img["id"]),
        "annotation_id": int(ann["id"]),
        "file_name": img["file_name"],
        "bbox": [float(v) for v in ann["bbox"]],
    }


# ---------------------------------------------------------------------------------------------------- files


def write_references(path: str | Path, refs: Mapping[int, list[dict]], meta: Mapping[str, Any] | None = None) -> Path:
    """Write a reference set as readable JSON (``nttt-references/1``).

    ``meta`` (default: ``refs.meta`` when ``refs`` is a :class:`References`) supplies ``seed``, ``shots`` and
    ``annotations`` (the source JSON path); other keys are kept as extra top-level fields. Every class holds
    K = ``shots`` references, except the classes of ``meta["overfull"]`` (``{"category_id": count}``, from
    :func:`~no_time_to_train.data.convert.cdfsod_references`), which hold exactly that many more.
    """
    path = Path(path)
    meta = dict(getattr(refs, "meta", {}) if meta is None else meta)
    shots = _check_counts(refs, meta.get("shots"), _overfull(meta), "The references")
    doc: dict[str, Any] = {
        "format": FORMAT,
        "seed": meta.pop("seed", None),
        "shots": meta.pop("shots", shots),
        "annotations": meta.pop("annotations", None),
    }
    meta.pop("format", None)
    meta.pop("categories", None)
    meta.pop("references", None)
    categories = []
    flat = []
    for cid, items in refs.items():
        name = items[0].get("category_name") if items else None
        categories.append({"id": int(cid), "name": name})
        for r in items:
            if int(r["category_id"]) != int(cid):
                raise InputError(f"Reference {r} is filed under category {cid} but has category_id "
                                 f"{r['category_id']}.")
            flat.append({
                "category_id": int(r["category_id"]),
                "image_id": int(r["image_id"]),
                "annotation_id": int(r["annotation_id"]),
                "file_name": r.get("file_name"),
                "bbox": [float(v) for v in r["bbox"]] if r.get("bbox") is not None else None,
                "category_name": r.get("category_name"),
            })
    doc["categories"] = categories
    doc.update(meta)
    doc["references"] = flat
    path.parent.mkdir(parents=True, exist_ok=True)
    # one reference per line: readable and diff-friendly
    body = ",\n    ".join(json.dumps(r) for r in flat)
    head = {k: v for k, v in doc.items() if k != "references"}
    text = json.dumps(head, indent=2)[:-2] + ',\n  "references": [\n    ' + body + "\n  ]\n}\n"
    if not flat:
        text = json.dumps(doc, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def write_references_pickle(path: str | Path, refs: Mapping[int, list[dict]]) -> Path:
    """Write the authors' pickle format ``OrderedDict{category_id: [{"img_id", "ann_ids": [ann_id]}]}``."""
    path = Path(path)
    obj = OrderedDict(
        (int(cid), [{"img_id": int(r["image_id"]), "ann_ids": [int(r["annotation_id"])]} for r in items])
        for cid, items in refs.items()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


class _SafeUnpickler(pickle.Unpickler):
    """Only plain containers: a reference pickle never needs to run code."""

    _ALLOWED = {
        ("collections", "OrderedDict"),
        ("builtins", "dict"), ("builtins", "list"), ("builtins", "int"), ("builtins", "set"),
        ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a reference file")


def read_references(path: str | Path, coco: dict | str | Path | CocoDataset | None = None) -> References:
    """Read a reference set: our JSON (``nttt-references/1``) or the authors' pickle.

    ``coco`` (a COCO dict, path or :class:`CocoDataset` of the reference pool) fills ``file_name``, ``bbox`` and
    ``category_name`` when the file lacks them (always the case for the pickle, whose entries keep only their
    FIRST ann id, as the paper's memory fill does) and checks that every annotation exists and matches.

    Raises InputError unless every class has the same number K >= 1 of references (and ``shots`` agrees).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Reference file {str(path)!r} does not exist: create one with the sampler "
                         f"(sample_references + write_references).")
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"{":
        refs = _read_json(path, raw)
    else:
        refs = _read_pickle(path, raw)

    if coco is not None:
        data = _as_coco_dict(coco)
        if refs.meta.get("annotations") is None and isinstance(coco, (str, Path)):
            refs.meta["annotations"] = str(coco)
        _fill_from_coco(refs, data, path)

    if not refs:
        raise InputError(f"Reference file {str(path)!r} holds no classes.")
    refs.meta["shots"] = _check_counts(refs, refs.meta.get("shots"), _overfull(refs.meta),
                                       f"Reference file {str(path)!r}")
    return refs


def _overfull(meta: Mapping[str, Any]) -> dict[int, int]:
    """``meta["overfull"]`` as ``{category_id: count}`` (classes allowed more than K references)."""
    try:
        return {int(c): int(n) for c, n in (meta.get("overfull") or {}).items()}
    except (AttributeError, TypeError, ValueError):
        raise InputError(f"'overfull' must map category ids to reference counts, got {meta.get('overfull')!r}.")


def _check_counts(refs: Mapping[int, list], declared: int | None, overfull: Mapping[int, int], what: str) -> int:
    """K, after checking that every class holds exactly K >= 1 references (K = ``declared`` when given), except
    the ``overfull`` classes, which hold exactly their listed count (> K)."""
    counts = {int(cid): len(v) for cid, v in refs.items()}
    if not counts:
        return declared or 0
    regular = {n for c, n in counts.items() if c not in overfull}
    k = declared if declared is not None else (min(regular) if regular else None)
    if (k is None or k < 1 or regular - {k}
            or any(counts.get(c) != n or n <= k for c, n in overfull.items())):
        detail = f"declares shots={declared}, " if declared is not None else ""
        extra = f" (over-full classes: exactly their listed counts {dict(overfull)})" if overfull else ""
        raise InputError(f"{what} must hold exactly K >= 1 references for every class{extra}, but {detail}the "
                         f"counts per class are {counts}. Re-sample with a single shots value.")
    return k


def _read_json(path: Path, raw: bytes) -> References:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"Reference file {str(path)!r} is not valid JSON ({e}).") from e
    if isinstance(doc, dict) and doc and all(k.lstrip("-").isdigit() and isinstance(v, list) for k, v in doc.items()):
        return _from_authors_mapping(doc, path, "authors-json")  # the authors' pickle schema, saved as JSON
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("references"), list):
        raise InputError(f"Reference file {str(path)!r} is not a '{FORMAT}' file (no matching 'format' and "
                         f"'references') nor the authors' {{category_id: [{{'img_id', 'ann_ids'}}]}} mapping. "
                         f"Write it with write_references.")
    meta = {k: v for k, v in doc.items() if k not in ("format", "references", "categories")}
    refs = References(meta=meta)
    names = {int(c["id"]): c.get("name") for c in doc.get("categories") or [] if "id" in c}
    for cid in names:  # keep the declared class order, even for classes with no reference
        refs[cid] = []
    for i, r in enumerate(doc["references"]):
        try:
            cid = int(r["category_id"])
            ref = {
                "category_id": cid,
                "category_name": r.get("category_name", names.get(cid)),
                "image_id": int(r["image_id"]),
                "annotation_id": int(r["annotation_id"]),
                "file_name": r.get("file_name"),
                "bbox": [float(v) for v in r["bbox"]] if r.get("bbox") is not None else None,
            }
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"Reference #{i} in {str(path)!r} is malformed ({e!r}): each needs integer "
                             f"category_id, image_id and annotation_id.") from e
        refs.setdefault(cid, []).append(ref)
    return refs


def _read_pickle(path: Path, raw: bytes) -> References:
    try:
        obj = _SafeUnpickler(io.BytesIO(raw)).load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure means an unusable file
        raise InputError(f"Reference file {str(path)!r} is neither a '{FORMAT}' JSON nor a reference pickle "
                         f"({e}).") from e
    if not isinstance(obj, dict):
        raise InputError(f"Reference pickle {str(path)!r} must hold a dict {{category_id: [entries]}}, "
                         f"got {type(obj).__name__}.")
    return _from_authors_mapping(obj, path, "pickle")


def _from_authors_mapping(obj: dict, path: Path, source_format: str) -> References:
    """The authors' reference schema ``{category_id: [{"img_id": int, "ann_ids": [int, ...]}, ...]}``.

    Each entry keeps only its FIRST ann id, as the paper's memory fill does.
    """
    refs = References(meta={"seed": None, "shots": None, "annotations": None, "source_format": source_format})
    for key, entries in obj.items():
        try:
            cid = int(key)
            items = []
            for e in entries:
                ann_ids = list(e["ann_ids"])
                if not ann_ids:
                    raise ValueError("empty ann_ids")
                items.append({
                    "category_id": cid,
                    "category_name": None,
                    "image_id": int(e["img_id"]),
                    "annotation_id": int(ann_ids[0]),  # the paper's fill uses only the first
                    "file_name": None,
                    "bbox": None,
                })
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"Reference file {str(path)!r}: class {key!r} is malformed ({e!r}); expected "
                             f"[{{'img_id': int, 'ann_ids': [int, ...]}}, ...].") from e
        refs[cid] = items
    return refs


def _fill_from_coco(refs: References, data: dict, path: Path) -> None:
    images = {int(im["id"]): im for im in data["images"]}
    anns = {int(a["id"]): a for a in data["annotations"]}
    cats = {int(c["id"]): c for c in data["categories"]}
    for cid, items in refs.items():
        if cid not in cats:
            raise InputError(f"Reference file {str(path)!r} has category id {cid}, which the annotation file "
                             f"does not have: use the annotations the references were sampled from.")
        for r in items:
            ann = anns.get(r["annotation_id"])
            if ann is None:
                raise InputError(f"Reference file {str(path)!r}: annotation id {r['annotation_id']} is not in the "
                                 f"annotation file: use the annotations the references were sampled from.")
            if int(ann["image_id"]) != r["image_id"] or int(ann["category_id"]) != cid:
                raise InputError(
                    f"Reference file {str(path)!r}: annotation {r['annotation_id']} belongs to image "
                    f"{ann['image_id']} / category {ann['category_id']}, not image {r['image_id']} / category "
                    f"{cid}: the file does not match this annotation file."
                )
            img = images.get(r["image_id"])
            if img is None:
                raise InputError(f"Reference file {str(path)!r}: image id {r['image_id']} is not in the "
                                 f"annotation file.")
            if r.get("file_name") is None:
                r["file_name"] = img["file_name"]
            if r.get("bbox") is None:
                r["bbox"] = [float(v) for v in ann["bbox"]]
            if r.get("category_name") is None:
                r["category_name"] = cats[cid]["name"]
