"""Converters from other dataset layouts to COCO-format JSON (and to reference files).

* :func:`voc_to_coco`: PASCAL VOC 2007/2012 XML -> COCO, as prepared for the paper's VOC benchmark (METHOD 6.2).
* :func:`cdfsod_dataset`, :func:`cdfsod_references`: the CD-FSOD benchmark layout (METHOD 6.3) -> dataset
  paths and the authors' K references per class, which :func:`~no_time_to_train.data.sampling.write_references`
  can write.
* :func:`yolo_to_coco`: Ultralytics YOLO detection / segmentation label files -> COCO.
* :func:`add_convert_parser`: the ``nttt convert {voc,cdfsod,yolo}`` command line.

Every written annotation has ``id, image_id, category_id, bbox [x, y, w, h], area, iscrowd`` (and ``segmentation``
only when the source has polygons). Annotation ids start at 1 (pycocotools' COCOeval treats id 0 as "unmatched").
"""

from __future__ import annotations

import contextlib
import filecmp
import logging
import math
import os
import random
import re
import shutil
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import InputError
from ..resultstore import write_json_atomic

__all__ = [
    "VOC_CLASSES",
    "CDFSOD_DATASETS",
    "voc_image_id",
    "voc_to_coco",
    "cdfsod_dataset",
    "cdfsod_references",
    "load_class_names",
    "yolo_to_coco",
    "add_convert_parser",
]

logger = logging.getLogger(__name__)

#: PASCAL VOC classes in the standard order; the COCO category id is the index (0-based, METHOD 6.2).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

#: CD-FSOD dataset folder names (matched case-insensitively); DeepFish is distributed as ``FISH``.
CDFSOD_DATASETS: tuple[str, ...] = ("ArTaxOr", "clipart1k", "DIOR", "FISH", "DeepFish", "NEU-DET", "UODD")

#: Standard CD-FSOD shot files: ``annotations/{k}_shot.json``.
CDFSOD_SHOTS: tuple[int, ...] = (1, 5, 10)

#: The image-id multiplier of :func:`voc_image_id`: ``year * 10**10 + numeric file id``.
_VOC_ID_BASE = 10**10


# ------------------------------------------------------------------------------------------------- helpers


def _image_size(path: Path) -> tuple[int, int, int | None]:
    """``(width, height, exif_orientation)`` from the image header only (PIL opens lazily)."""
    from ..imageio import open_image

    with open_image(path, "image file", load=False) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112)
        except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the conversion
            orientation = None
    return int(w), int(h), orientation


def _link_or_copy(src: Path, dst: Path, copy: bool) -> None:
    """Put ``src`` at ``dst`` (symlink, or copy when asked / when symlinks fail); never overwrite another file."""
    if dst.is_symlink() or dst.exists():
        same = False
        if dst.is_symlink():
            with contextlib.suppress(OSError):
                same = Path(os.readlink(dst)) == src.resolve() or dst.resolve() == src.resolve()
        if not same and dst.is_file():
            same = filecmp.cmp(dst, src, shallow=False)
        if not same:
            raise InputError(
                f"Refusing to overwrite {str(dst)!r} with {str(src)!r}: a different file with that name is already "
                f"in the flat image folder. Use an empty folder, or remove the old file."
            )
        return
    if not copy:
        try:
            os.symlink(src.resolve(), dst)
            return
        except (OSError, NotImplementedError):
            pass  # e.g. no symlink permission: copy instead
    shutil.copy2(src, dst)


def _round(v: float, nd: int = 4) -> float:
    r = round(float(v), nd)
    return 0.0 if r == 0 else r  # no "-0.0"


# ----------------------------------------------------------------------------------------------- PASCAL VOC


def _voc_year_dir(voc_root: Path, year: str) -> Path:
    for cand in (voc_root / f"VOC{year}", voc_root / "VOCdevkit" / f"VOC{year}"):
        if cand.is_dir():
            return cand
    if voc_root.name == f"VOC{year}" and voc_root.is_dir():
        return voc_root
    raise InputError(
        f"No VOC{year} folder under {str(voc_root)!r}: pass the VOCdevkit folder (holding VOC{year}/Annotations, "
        f"VOC{year}/ImageSets/Main and VOC{year}/JPEGImages) or its parent."
    )


def voc_image_id(year: str | int, file_id: str) -> int | None:
    """The COCO image id of a VOC image: ``int(year) * 10**10 + int(file_id without "_")``.

    E.g. VOC2007 ``000005`` -> 20070000000005 and VOC2012 ``2008_000002`` -> 20122008000002, so the same file id in
    two VOC years never collides. Returns None when the file id is not of that form (digits and underscores, under
    ten digits), in which case :func:`voc_to_coco` numbers all images 1..N in conversion order instead.
    """
    digits = file_id.replace("_", "")
    if not digits.isdigit() or not digits.isascii() or int(digits) >= _VOC_ID_BASE:
        return None
    return int(year) * _VOC_ID_BASE + int(digits)


def _xml_text(node: ET.Element | None, tag: str) -> str | None:
    if node is None:
        return None
    child = node.find(tag)
    return child.text.strip() if child is not None and child.text is not None else None


def _parse_voc_xml(xml_path: Path, class_ids: Mapping[str, int]) -> tuple[int | None, int | None, list[dict]]:
    """``(width, height, objects)``; each object ``{category_id, bbox, iscrowd}``. Sizes are None when absent/0."""
    if not xml_path.is_file():
        raise InputError(f"Annotation file {str(xml_path)!r} does not exist, but the image set lists its image: "
                         f"check the VOC download (Annotations/ must hold one XML per listed id).")
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        raise InputError(f"Annotation file {str(xml_path)!r} is not valid XML ({e}): re-download or fix it.") from e

    def size(tag: str) -> int | None:
        text = _xml_text(root.find("size"), tag)
        try:
            v = int(float(text)) if text else 0
        except ValueError:
            raise InputError(f"{str(xml_path)!r}: <size><{tag}> is {text!r}, not a number.") from None
        return v if v > 0 else None

    width, height = size("width"), size("height")
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):
        name = _xml_text(obj, "name") or ""
        cid = class_ids.get(name, class_ids.get(name.lower()))
        if cid is None:
            raise InputError(f"{str(xml_path)!r}: object #{k} has class {name!r}, which is not a PASCAL VOC class "
                             f"({', '.join(VOC_CLASSES)}). Fix the XML or remove the object.")
        box = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(_xml_text(box, t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            raise InputError(f"{str(xml_path)!r}: object #{k} ({name}) has no valid <bndbox> with numeric "
                             f"xmin, ymin, xmax, ymax.") from None
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
            raise InputError(f"{str(xml_path)!r}: object #{k} ({name}) has an invalid box "
                             f"(xmin={x1}, ymin={y1}, xmax={x2}, ymax={y2}); xmax >= xmin and ymax >= ymin needed.")
        difficult = _xml_text(obj, "difficult")
        try:
            is_difficult = bool(int(float(difficult))) if difficult else False
        except ValueError:
            raise InputError(f"{str(xml_path)!r}: object #{k} has <difficult>{difficult}</difficult>; use 0 or 1.")
        # METHOD 6.2: 1-based inclusive VOC pixels -> 0-based, w = x2 - x1 (the mmdet converter's convention)
        bbox = [_round(x1 - 1), _round(y1 - 1), _round(x2 - x1), _round(y2 - y1)]
        objects.append({"category_id": cid, "bbox": bbox, "iscrowd": int(is_difficult)})
    return width, height, objects


def voc_to_coco(
    voc_root: str | Path,
    image_sets: Sequence[tuple[str | int, str]],
    out_json: str | Path | None,
    images_dir: str | Path | None = None,
    *,
    copy: bool = False,
) -> dict:
    """Convert PASCAL VOC XML annotations to one COCO-format JSON (METHOD 6.2).

    Args:
        voc_root: the ``VOCdevkit`` folder (holding ``VOC2007/``, ``VOC2012/``), or its parent.
        image_sets: ``(year, set)`` pairs read from ``VOC{year}/ImageSets/Main/{set}.txt``, e.g.
            ``[("2007", "trainval"), ("2012", "trainval")]`` (references) or ``[("2007", "test")]`` (test).
        out_json: where to write the JSON (None: do not write).
        images_dir: if given, every JPEG is symlinked (copied when ``copy`` or when symlinks fail) into this single
            flat folder, as the paper's ``allimages``; an existing different file of the same name is an error.

    Output: categories ``0..19`` in :data:`VOC_CLASSES` order; image ids from :func:`voc_image_id` (or 1..N when
    some file id is not numeric); ``file_name`` = ``{file id}.jpg``; width/height from the XML ``<size>`` (the
    JPEG header when missing); boxes shifted by -1 with ``w = xmax - xmin``, ``h = ymax - ymin``;
    ``area = w * h``; ``difficult`` objects get ``iscrowd = 1``; no ``segmentation`` (VOC has no instance
    masks). Order: image sets as given, ids in file order, objects in XML order; annotation ids 1..M.
    """
    voc_root = Path(voc_root)
    if not voc_root.is_dir():
        raise InputError(f"VOC folder {str(voc_root)!r} does not exist: pass the VOCdevkit folder or its parent.")
    if isinstance(image_sets, tuple) and len(image_sets) == 2 and all(isinstance(x, (str, int)) for x in image_sets):
        image_sets = [image_sets]  # a single ("2007", "test") pair
    if not image_sets:
        raise InputError("No VOC image sets given: pass (year, set) pairs such as [('2007', 'trainval')].")
    class_ids = {n: i for i, n in enumerate(VOC_CLASSES)}

    entries: list[tuple[str, str, Path]] = []  # (year, file id, year dir)
    seen: dict[tuple[str, str], str] = {}
    for pair in image_sets:
        try:
            year, split = pair
        except (TypeError, ValueError):
            raise InputError(f"VOC image set {pair!r} must be a (year, set) pair such as ('2007', 'trainval').") from None
        year, split = str(year).strip(), str(split).strip()
        if not year.isdigit():
            raise InputError(f"VOC year {year!r} must be a number such as 2007 or 2012.")
        year_dir = _voc_year_dir(voc_root, year)
        list_file = year_dir / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            have = sorted(p.stem for p in (year_dir / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
            raise InputError(f"Image set file {str(list_file)!r} does not exist: VOC{year} has the sets "
                             f"{have or 'none'} (e.g. train, val, trainval, test).")
        for line in list_file.read_text(encoding="utf-8").splitlines():
            tok = line.split()
            if not tok:
                continue
            fid = tok[0]
            if (year, fid) in seen:
                raise InputError(f"Image {fid} of VOC{year} is listed twice (in sets {seen[(year, fid)]!r} and "
                                 f"{split!r}): pass non-overlapping image sets.")
            seen[(year, fid)] = split
            entries.append((year, fid, year_dir))
    if not entries:
        raise InputError(f"The VOC image sets {list(image_sets)} list no images.")

    ids = [voc_image_id(y, f) for y, f, _ in entries]
    if any(i is None for i in ids):
        ids = list(range(1, len(entries) + 1))

    flat = Path(images_dir) if images_dir is not None else None
    if flat is not None:
        flat.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    by_name: dict[str, Path] = {}
    for image_id, (year, fid, year_dir) in zip(ids, entries):
        width, height, objects = _parse_voc_xml(year_dir / "Annotations" / f"{fid}.xml", class_ids)
        file_name = f"{fid}.jpg"
        jpeg = year_dir / "JPEGImages" / file_name
        if width is None or height is None:
            if not jpeg.is_file():
                raise InputError(f"{str(year_dir / 'Annotations' / (fid + '.xml'))!r} has no image size and the "
                                 f"image {str(jpeg)!r} is missing: the size cannot be determined.")
            width, height, _ = _image_size(jpeg)
        other = by_name.get(file_name)
        if other is not None and other != jpeg and jpeg.is_file() and other.is_file() \
                and not filecmp.cmp(other, jpeg, shallow=False):
            raise InputError(f"Two different images share the file name {file_name!r}: {str(other)!r} and "
                             f"{str(jpeg)!r}; they cannot live in one flat image folder. Convert the years "
                             f"separately.")
        by_name.setdefault(file_name, jpeg)
        if flat is not None:
            if not jpeg.is_file():
                raise InputError(f"Image {str(jpeg)!r} does not exist, so it cannot be linked into "
                                 f"{str(flat)!r}: check the VOC download (JPEGImages/).")
            _link_or_copy(jpeg, flat / file_name, copy)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in objects:
            w, h = obj["bbox"][2], obj["bbox"][3]
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category_id"],
                "bbox": obj["bbox"],
                "area": _round(w * h),
                "iscrowd": obj["iscrowd"],
            })
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": "none"} for i, n in enumerate(VOC_CLASSES)],
    }
    if out_json is not None:
        write_json_atomic(out_json, data)
    return data


# -------------------------------------------------------------------------------------------------- CD-FSOD


def _cdfsod_canonical(name: str) -> str | None:
    for known in CDFSOD_DATASETS:
        if known.lower() == name.lower():
            return known
    return None


def _looks_like_cdfsod(folder: Path) -> bool:
    ann = folder / "annotations"
    return (ann / "test.json").is_file() and any(ann.glob("*_shot.json"))


def _describe_cdfsod(folder: Path, name: str, shots: Sequence[int]) -> dict:
    ann = folder / "annotations"
    missing = []
    test_json, test_images, train_images = ann / "test.json", folder / "test", folder / "train"
    shot_files = {}
    for k in shots:
        shot_files[int(k)] = ann / f"{int(k)}_shot.json"
    for p in (test_json, *shot_files.values()):
        if not p.is_file():
            missing.append(str(p))
    for p in (test_images, train_images):
        if not p.is_dir():
            missing.append(str(p) + "/")
    if missing:
        raise InputError(
            f"CD-FSOD dataset {name!r} at {str(folder)!r} is incomplete: missing {', '.join(missing)}. Expected "
            f"train/, test/, annotations/test.json and annotations/{{{','.join(str(k) for k in shots)}}}_shot.json; "
            f"re-download or re-extract the dataset."
        )
    for p in ann.glob("*_shot.json"):  # extra shot files (e.g. 3_shot.json) are listed too
        m = re.fullmatch(r"(\d+)_shot\.json", p.name)
        if m and int(m.group(1)) not in shot_files:
            shot_files[int(m.group(1))] = p
    return {
        "name": name,
        "root": folder,
        "test_json": test_json,
        "test_images": test_images,
        "shots": dict(sorted(shot_files.items())),
        "train_images": train_images,
    }


def cdfsod_dataset(
    root: str | Path, names: Iterable[str] | None = None, shots: Sequence[int] = CDFSOD_SHOTS
) -> dict[str, dict]:
    """Find CD-FSOD datasets under ``root`` and describe their files.

    ``root`` is the folder holding the dataset folders (ArTaxOr, clipart1k, DIOR, FISH/DeepFish, NEU-DET, UODD;
    names matched case-insensitively; other folders count when they hold ``annotations/test.json`` and a
    ``*_shot.json``), or one dataset folder itself. ``names`` restricts (and requires) the datasets.

    Returns ``{name: {"name", "root", "test_json", "test_images", "shots": {1: path, 5: path, 10: path, ...},
    "train_images"}}`` (``Path`` values), sorted by name. A found dataset that lacks any of ``train/``, ``test/``,
    ``annotations/test.json`` or a ``{k}_shot.json`` for k in ``shots`` raises InputError listing what is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"CD-FSOD folder {str(root)!r} does not exist: pass the folder holding the datasets "
                         f"({', '.join(CDFSOD_DATASETS)}) or one dataset folder.")
    found: dict[str, Path] = {}
    own = _cdfsod_canonical(root.name)
    if own is not None or _looks_like_cdfsod(root) or (root / "annotations").is_dir():
        found[own or root.name] = root
    else:
        for sub in sorted(root.iterdir()):
            if not sub.is_dir():
                continue
            canon = _cdfsod_canonical(sub.name)
            if canon is not None or _looks_like_cdfsod(sub):
                found[canon or sub.name] = sub
    if names is not None:
        wanted = [str(n) for n in names]
        chosen = {}
        for n in wanted:
            key = next((k for k in found if k.lower() == n.lower()), None)
            if key is None:
                raise InputError(f"CD-FSOD dataset {n!r} not found under {str(root)!r} (found: "
                                 f"{', '.join(found) or 'none'}). Check the name or the folder.")
            chosen[key] = found[key]
        found = chosen
    if not found:
        raise InputError(f"No CD-FSOD dataset found under {str(root)!r}: expected folders named "
                         f"{', '.join(CDFSOD_DATASETS)} (any case), each with train/, test/ and annotations/.")
    return {n: _describe_cdfsod(p, n, shots) for n, p in sorted(found.items(), key=lambda kv: kv[0].lower())}


def cdfsod_references(shot_json: str | Path | Mapping[str, Any], shots: int | None = None, seed: int = 42):
    """The K references per class that the authors build from a CD-FSOD ``{k}_shot.json`` (METHOD 6.3).

    Both ``nttt convert cdfsod`` and ``nttt protocol cdfsod`` use this, so their memories are the same. It is
    the authors' shot-file-to-pickle conversion followed by their memory fill, which reads only the first
    annotation id of each pickle entry:

    1. Walk ``annotations`` in JSON order. Classes are ordered by first appearance; within a class, one entry
       per image (first-appearance order) listing that image's annotations of the class in JSON order.
    2. An entry with n annotations is repeated n times in place, and every copy is a reference to the entry's
       FIRST annotation: an image with 3 boxes of a class gives 3 references to its first box, none to the
       other two.
    3. One ``random.Random(seed)`` for the file (the authors' ``random.seed(42)``). For each class in
       first-appearance order that has fewer than K references, ``rng.choices(refs, k=K - len(refs))`` is
       appended: one ``random()`` call per pick, index ``floor(random() * len(refs))`` over the class's list
       after step 2 (so an image with more instances is drawn more often). Other classes draw nothing.
    4. A class with MORE than K references (possible after step 2) keeps them all; the authors' fill refuses
       such a file (it wants exactly K per class). Its prototype is then the mean over all its references.
       Such classes are listed in ``meta["overfull"]`` and a warning names them.

    The memory keeps one row per reference, duplicates included, so a class prototype is the authors' mean
    over its K memory slots.

    Args:
        shot_json: the shot file (path or COCO dict).
        shots: K, the nominal shots (default: from the file name ``{k}_shot.json``).
        seed: the padding seed (the authors' 42).

    Returns:
        :class:`~no_time_to_train.data.sampling.References` in first-appearance class order, each reference
        ``{category_id, category_name, image_id, annotation_id, file_name, bbox}``; ``meta``: ``shots`` = K,
        ``seed``, ``annotations`` (the path, when given one), ``padded`` and ``overfull``
        (``{"category_id": count}``; padded = duplicates drawn, overfull = references kept).

    Raises:
        InputError: annotations naming an unknown image or category, a category without any annotation, or
        no K (neither given nor in the file name).
    """
    from .coco import _check_coco_dict, load_coco_json
    from .sampling import References

    if isinstance(shot_json, Mapping):
        data, where, source = dict(shot_json), "the shot annotation dict", None
        _check_coco_dict(data, where, need_files=True)
    else:
        where, source = repr(str(shot_json)), str(shot_json)
        data = load_coco_json(shot_json)
        if shots is None:
            m = re.fullmatch(r"(\d+)_shot\.json", Path(shot_json).name)
            shots = int(m.group(1)) if m else None
    if shots is None:
        raise InputError(f"The number of shots K for {where} is unknown: pass shots (the file name is not "
                         f"'<K>_shot.json').")
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise InputError(f"shots must be a positive integer, got {shots!r}.")
    images = {int(im["id"]): im for im in data["images"]}
    cats = {int(c["id"]): c for c in data["categories"]}
    entries: dict[int, dict[int, list[dict]]] = {}  # class -> image -> its annotations, first appearance order
    for ann in data["annotations"]:  # ids, references and boxes were validated by _check_coco_dict
        aid, iid, cid = ann["id"], ann["image_id"], ann["category_id"]
        bbox = [float(v) for v in ann["bbox"]]
        entries.setdefault(cid, {}).setdefault(iid, []).append({
            "category_id": cid,
            "category_name": cats[cid]["name"],
            "image_id": iid,
            "annotation_id": aid,
            "file_name": images[iid]["file_name"],
            "bbox": bbox,
        })
    empty = [f"{cats[c]['name']!r} (id {c})" for c in sorted(cats) if c not in entries]
    if empty:
        raise InputError(f"The shot file {where} has no annotation for categories {', '.join(empty)}: every class "
                         f"needs at least one reference. Use a complete shot file or remove those categories.")
    rng = random.Random(seed)
    out = References(meta={"shots": shots, "seed": seed, "annotations": source})
    padded, overfull = {}, {}
    for cid, per_image in entries.items():
        refs = [dict(anns[0]) for anns in per_image.values() for _ in anns]
        if len(refs) < shots:
            padded[str(cid)] = shots - len(refs)
            refs += [dict(r) for r in rng.choices(refs, k=shots - len(refs))]
        elif len(refs) > shots:
            overfull[str(cid)] = len(refs)
        out[cid] = refs
    if overfull:
        names = ", ".join(f"{cats[int(c)]['name']!r} ({n})" for c, n in overfull.items())
        warnings.warn(f"{where}: {len(overfull)} class(es) have more than K={shots} references once every "
                      f"instance counts: {names}. The authors' memory fill refuses this; all of them are kept.",
                      stacklevel=2)
    out.meta.update({"padded": padded, "overfull": overfull})
    return out


# ----------------------------------------------------------------------------------------------------- YOLO


def load_class_names(class_names: Sequence[str] | Mapping[Any, str] | str | Path) -> dict[int, str]:
    """``{class index: name}`` from a list, a mapping, a ``data.yaml`` (``names`` list or dict) or a ``classes.txt``
    (one name per line)."""
    if isinstance(class_names, (str, Path)):
        path = Path(class_names)
        if not path.is_file():
            raise InputError(f"Class-name file {str(path)!r} does not exist: pass a data.yaml (with 'names'), a "
                             f"classes.txt (one name per line) or a list of names.")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                raise InputError(f"{str(path)!r} is not valid YAML ({e}).") from e
            if not isinstance(doc, dict) or "names" not in doc:
                raise InputError(f"{str(path)!r} has no 'names' entry: add 'names: [cat, dog]' or "
                                 f"'names: {{0: cat, 1: dog}}'.")
            names = _names_mapping(doc["names"], repr(str(path)))
            nc = doc.get("nc")
            if nc is not None and nc != len(names):
                raise InputError(f"{str(path)!r}: nc is {nc} but 'names' has {len(names)} entries; make them agree.")
            return names
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        if not lines or any(not ln for ln in lines):
            raise InputError(f"{str(path)!r} must list one class name per line, without blank lines in between.")
        return dict(enumerate(lines))
    return _names_mapping(class_names, "the class names")


def _names_mapping(names: Any, where: str) -> dict[int, str]:
    if isinstance(names, Mapping):
        out = {}
        for k, v in names.items():
            try:
                out[int(k)] = str(v)
            except (TypeError, ValueError):
                raise InputError(f"{where}: class index {k!r} is not an integer.") from None
        if any(k < 0 for k in out):
            raise InputError(f"{where}: class indices must be >= 0.")
    elif isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        out = dict(enumerate(names))
    else:
        raise InputError(f"{where}: expected a list of names or a {{index: name}} mapping, got {names!r}.")
    if not out:
        raise InputError(f"{where}: no class names.")
    if len(set(out.values())) != len(out):
        raise InputError(f"{where}: class names must be unique, got {sorted(out.values())}.")
    return dict(sorted(out.items()))


def _shoelace(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    s = 0.0
    for i in range(n):
        j = (i + 1) % n
        s += xs[i] * ys[j] - xs[j] * ys[i]
    return abs(s) / 2.0


_TOL = 1e-3  # normalised coordinates may overshoot [0, 1] by this much (rounding in exporters); they are clipped


def _parse_yolo_line(line: str, where: str, n: int, names: Mapping[int, str], W: int, H: int) -> dict | None:
    tok = line.split()
    if not tok:
        return None
    what = f"Label file {where}, line {n}"
    try:
        vals = [float(t) for t in tok]
    except ValueError:
        raise InputError(f"{what}: {line.strip()!r} is not a list of numbers; expected 'class cx cy w h' or "
                         f"'class x1 y1 x2 y2 x3 y3 ...' (normalised).") from None
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"{what}: non-finite value in {line.strip()!r}.")
    cls = vals[0]
    if cls != int(cls) or int(cls) not in names:
        raise InputError(f"{what}: class {tok[0]!r} is not one of the class indices {sorted(names)}: fix the label "
                         f"or the class names.")
    cls = int(cls)
    coords = vals[1:]
    if any(v < -_TOL or v > 1 + _TOL for v in coords):
        raise InputError(f"{what}: coordinates must be normalised to [0, 1], got {line.strip()!r}.")
    if len(coords) == 4:
        cx, cy, w, h = coords
        if w < 0 or h < 0:
            raise InputError(f"{what}: negative box width or height in {line.strip()!r}.")
        x1, y1 = max(cx - w / 2, 0.0) * W, max(cy - h / 2, 0.0) * H
        x2, y2 = min(cx + w / 2, 1.0) * W, min(cy + h / 2, 1.0) * H
        bbox = [_round(x1), _round(y1), _round(max(x2 - x1, 0.0)), _round(max(y2 - y1, 0.0))]
        return {"cls": cls, "bbox": bbox, "area": _round(bbox[2] * bbox[3])}
    if len(coords) >= 6 and len(coords) % 2 == 0:
        xs = [min(max(v, 0.0), 1.0) * W for v in coords[0::2]]
        ys = [min(max(v, 0.0), 1.0) * H for v in coords[1::2]]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        poly = [_round(v) for xy in zip(xs, ys) for v in xy]
        return {
            "cls": cls,
            "bbox": [_round(x1), _round(y1), _round(x2 - x1), _round(y2 - y1)],
            "area": _round(_shoelace(xs, ys)),
            "segmentation": [poly],
        }
    raise InputError(f"{what}: {len(tok)} values; expected 5 ('class cx cy w h') or an odd number >= 7 "
                     f"('class x1 y1 x2 y2 x3 y3 ...', a polygon of >= 3 points).")


def _last_images_part(images_dir: Path) -> int | None:
    """Index of the last ``images`` component of the path (Ultralytics: ``<root>/images/<split>``), or None."""
    parts = images_dir.parts
    return next((i for i in range(len(parts) - 1, -1, -1) if parts[i] == "images"), None)


def _default_labels_dir(images_dir: Path) -> Path:
    i = _last_images_part(images_dir)
    if i is None:
        raise InputError(f"Cannot derive the labels folder from {str(images_dir)!r} (no 'images' component to "
                         f"replace with 'labels'): pass --labels (Python: labels_dir=).")
    return Path(*images_dir.parts[:i], "labels", *images_dir.parts[i + 1:])


#: Files that hold a YOLO dataset's class names, looked for in this order (see :func:`_find_class_names`).
_NAME_FILES = ("data.yaml", "dataset.yaml", "classes.txt")


def _find_class_names(images_dir: Path, labels_dir: Path) -> Path | None:
    """The first of :data:`_NAME_FILES` in ``labels_dir``, ``images_dir`` or a folder above it up to the dataset
    root (the parent of the last ``images`` component; without one, the parent of ``images_dir``)."""
    images_dir = images_dir.resolve()
    i = _last_images_part(images_dir)
    root = Path(*images_dir.parts[:i]) if i else images_dir.parent
    folders = [labels_dir, images_dir]
    while folders[-1] != root and folders[-1].parent != folders[-1]:
        folders.append(folders[-1].parent)
    return next((d / n for d in folders for n in _NAME_FILES if (d / n).is_file()), None)


def _yolo_class_names(class_names, images_dir: Path, labels_dir: Path) -> dict[int, str]:
    """``load_class_names(class_names)``; for None, a names file of the dataset or else the COCO names."""
    if class_names is not None:
        return load_class_names(class_names)
    found = _find_class_names(images_dir, labels_dir)
    if found is not None:
        logger.info("class names from %s", found)
        return load_class_names(found)
    from .coco import COCO_NAMES

    warnings.warn(f"No class names given and no {', '.join(_NAME_FILES)} found beside {str(images_dir)!r}: using "
                  f"the 80 COCO names (class 0 = {COCO_NAMES[0]}, 79 = {COCO_NAMES[79]}). Pass --classes "
                  f"(Python: class_names=) for other classes.", stacklevel=3)
    return dict(enumerate(COCO_NAMES))


def yolo_to_coco(
    images_dir: str | Path,
    labels_dir: str | Path | None,
    class_names: Sequence[str] | Mapping[Any, str] | str | Path | None,
    out_json: str | Path | None,
    zero_based: bool = False,
) -> dict:
    """Convert Ultralytics YOLO labels (detection or segmentation) to COCO format.

    Images are searched recursively under ``images_dir`` (extensions of
    :data:`~no_time_to_train.data.coco.IMAGE_EXTENSIONS`); ``file_name`` is the path relative to ``images_dir``
    and the label file is ``labels_dir/<same relative path>.txt`` (``labels_dir=None``: the Ultralytics rule,
    the last ``images`` folder of the path replaced by ``labels``). Image ids 1..N in sorted path order,
    annotation ids 1..M; width/height from the image header.

    Each label line is ``class cx cy w h`` (a box) or ``class x1 y1 x2 y2 x3 y3 ...`` (a polygon, >= 3 points),
    normalised to [0, 1] (overshoot up to 1e-3 is clipped). Boxes give ``bbox`` and ``area = w*h``; polygons
    give ``segmentation`` ``[[x1, y1, ...]]`` in pixels, the tight ``bbox`` and the shoelace ``area``.
    Category id = class index + 1, or the class index itself when ``zero_based``. ``class_names=None`` takes
    the first ``data.yaml``, ``dataset.yaml`` or ``classes.txt`` in the label folder, the image folder or a
    folder above it up to the dataset root, else (with a warning) the 80 COCO names
    (:data:`~no_time_to_train.data.coco.COCO_NAMES`). Images without a label file (or with an empty one) get no
    annotations, but when no image has one InputError is raised (wrong label folder); label files without an
    image are named in a warning. A malformed line raises InputError naming file and line.
    Pixel values are rounded to 4 decimals. Images whose EXIF orientation rotates them trigger a warning:
    Ultralytics labels the rotated image, while this library (like COCO tools) reads raw pixels.
    """
    from .coco import IMAGE_EXTENSIONS, _few

    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise InputError(f"Image folder {str(images_dir)!r} does not exist: pass the folder holding the images.")
    labels_dir = _default_labels_dir(images_dir) if labels_dir is None else Path(labels_dir)
    if not labels_dir.is_dir():
        raise InputError(f"Label folder {str(labels_dir)!r} does not exist: pass the folder holding the YOLO .txt "
                         f"label files.")
    names = _yolo_class_names(class_names, images_dir, labels_dir)
    offset = 0 if zero_based else 1
    paths = sorted(p for p in images_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise InputError(f"Image folder {str(images_dir)!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    stems: dict[Path, Path] = {}
    for p in paths:
        key = p.relative_to(images_dir).with_suffix("")
        if key in stems:
            raise InputError(f"Images {str(stems[key])!r} and {str(p)!r} would share the label file "
                             f"{str(labels_dir / key)}.txt: rename one of them.")
        stems[key] = p
    labels = {p: labels_dir / p.relative_to(images_dir).with_suffix(".txt") for p in paths}
    found = {label for label in labels.values() if label.is_file()}
    others = sorted(str(f.relative_to(labels_dir)) for f in labels_dir.rglob("*.txt")
                    if f not in found and f.name not in _NAME_FILES)
    if not found:
        first = paths[0].relative_to(images_dir)
        held = f"it holds {len(others)} other .txt files ({_few(others, 3)})" if others else "it holds no .txt files"
        raise InputError(f"None of the {len(paths)} images in {str(images_dir)!r} has a label file in "
                         f"{str(labels_dir)!r} (image {str(first)!r} needs {str(labels[paths[0]])!r}); {held}. "
                         f"Pass the matching label folder with --labels (Python: labels_dir=).")
    if others:
        warnings.warn(f"{len(others)} label file(s) in {str(labels_dir)!r} have no image in {str(images_dir)!r} and "
                      f"were skipped: {_few(others, 5)}.", stacklevel=2)

    images, annotations, rotated = [], [], []
    for image_id, p in enumerate(paths, start=1):
        rel = p.relative_to(images_dir)
        W, H, orientation = _image_size(p)
        if orientation in (5, 6, 7, 8):
            rotated.append(str(rel))
        images.append({"id": image_id, "file_name": rel.as_posix(), "width": W, "height": H})
        label = labels[p]
        if label not in found:
            continue
        try:
            text = label.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"Label file {str(label)!r} is not a text file ({e}).") from e
        for n, line in enumerate(text.splitlines(), start=1):
            obj = _parse_yolo_line(line, repr(str(label)), n, names, W, H)
            if obj is None:
                continue
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["cls"] + offset,
                "bbox": obj["bbox"],
                "area": obj["area"],
                "iscrowd": 0,
            }
            if "segmentation" in obj:
                ann["segmentation"] = obj["segmentation"]
            annotations.append(ann)
    if rotated:
        warnings.warn(
            f"{len(rotated)} image(s) (e.g. {rotated[0]!r}) carry an EXIF orientation that rotates them; YOLO tools "
            f"label the rotated image but width/height and coordinates here follow the stored pixels. Re-save "
            f"those images upright to be safe.", stacklevel=2)
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + offset, "name": n} for i, n in names.items()],
    }
    if out_json is not None:
        write_json_atomic(out_json, data)
    return data


# ------------------------------------------------------------------------------------------------------ CLI


def _voc_set(text: str) -> tuple[str, str]:
    import argparse

    m = re.fullmatch(r"\s*(\d{4})\s*[:/]\s*(\S+)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not YEAR:SET, e.g. 2007:trainval or 2007:test")
    return m.group(1), m.group(2)


def cmd_convert_voc(args) -> int:
    data = voc_to_coco(args.voc_root, args.sets, args.output, args.images_dir, copy=args.copy)
    extra = f", images in {args.images_dir}" if args.images_dir else ""
    print(f"voc: {len(data['images'])} images, {len(data['annotations'])} annotations "
          f"({sum(a['iscrowd'] for a in data['annotations'])} difficult) -> {args.output}{extra}")
    return 0


def cmd_convert_cdfsod(args) -> int:
    from .sampling import write_references

    shots = sorted(set(args.shots))
    found = cdfsod_dataset(args.root, args.datasets, shots)
    out = Path(args.output)
    for name, ds in found.items():
        written = []
        for k in shots:
            refs = cdfsod_references(ds["shots"][k], k, seed=args.seed)
            refs.meta.update({"images": str(ds["train_images"]), "dataset": name, "source": "cdfsod"})
            path = write_references(out / name / f"refs_{k}shot.json", refs)
            extra = f", {len(refs.meta['overfull'])} class(es) over K" if refs.meta["overfull"] else ""
            written.append(f"{k}-shot: {len(refs.flat())} refs{extra} -> {path}")
        print(f"cdfsod {name}: {'; '.join(written)}; test: {ds['test_json']} (images {ds['test_images']})")
    return 0


def cmd_convert_yolo(args) -> int:
    data = yolo_to_coco(args.images, args.labels, args.classes, args.output, zero_based=args.zero_based)
    n_seg = sum("segmentation" in a for a in data["annotations"])
    print(f"yolo: {len(data['images'])} images, {len(data['annotations'])} annotations ({n_seg} polygons), "
          f"{len(data['categories'])} categories -> {args.output}")
    return 0


def add_convert_parser(subparsers) -> Any:
    """Add ``convert {voc,cdfsod,yolo}`` to an argparse sub-parser collection; returns the ``convert`` parser.

    Each sub-command sets ``func`` (``args.func(args)`` returns 0 and prints a one-line summary).
    """
    from ..cli import positive_int

    conv = subparsers.add_parser("convert", help="convert PASCAL VOC, CD-FSOD or YOLO datasets to COCO JSON / "
                                 "reference files")
    sub = conv.add_subparsers(dest="convert_format", required=True, metavar="{voc,cdfsod,yolo}")

    p = sub.add_parser("voc", help="PASCAL VOC 2007/2012 XML -> one COCO JSON (0-based VOC category ids)")
    p.add_argument("voc_root", type=Path, help="the VOCdevkit folder (or its parent)")
    p.add_argument("--sets", nargs="+", type=_voc_set, required=True, metavar="YEAR:SET",
                   help="image sets, e.g. 2007:trainval 2012:trainval (references) or 2007:test")
    p.add_argument("-o", "--output", type=Path, required=True, help="COCO JSON to write")
    p.add_argument("--images-dir", type=Path, help="link every JPEG into this flat folder (the paper's allimages)")
    p.add_argument("--copy", action="store_true", help="copy the JPEGs instead of symlinking them")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_convert_voc)

    p = sub.add_parser("cdfsod", help="CD-FSOD datasets -> references files per dataset and shot")
    p.add_argument("root", type=Path, help="folder holding ArTaxOr, clipart1k, DIOR, FISH, NEU-DET, UODD "
                   "(or one dataset folder)")
    p.add_argument("-o", "--output", type=Path, required=True, help="writes <output>/<dataset>/refs_<k>shot.json")
    p.add_argument("--datasets", nargs="+", help="only these datasets (names, any case)")
    p.add_argument("--shots", nargs="+", type=positive_int, default=list(CDFSOD_SHOTS), help="shot files to convert "
                   "(default 1 5 10)")
    p.add_argument("--seed", type=int, default=42, help="seed for padding classes to K (default 42, as the authors)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_convert_cdfsod)

    p = sub.add_parser("yolo", help="Ultralytics YOLO detection/segmentation labels -> COCO JSON")
    p.add_argument("images", type=Path, help="image folder (searched recursively)")
    p.add_argument("--labels", type=Path, help="label folder (default: the images path with 'images' -> 'labels')")
    p.add_argument("--classes", help="data.yaml (with 'names') or classes.txt (default: the first data.yaml, "
                   "dataset.yaml or classes.txt in the label folder, the image folder or above it up to the dataset "
                   "root; without one, the 80 COCO names)")
    p.add_argument("-o", "--output", type=Path, required=True, help="COCO JSON to write")
    p.add_argument("--zero-based", action="store_true", help="category id = class index (default: index + 1)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_convert_yolo)
    return conv
