"""COCO-format datasets: category splits, a lazy image/annotation reader, GT subsets and image listing.

Coordinates follow COCO: ``bbox = [x, y, w, h]`` in pixels of the original image, ``(x, y)`` the top-left corner.
Masks are ``HxW`` boolean arrays at the original image size.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError

__all__ = [
    "SPLITS",
    "IMAGE_EXTENSIONS",
    "COCO_NAMES",
    "COCO_NOVEL_NAMES",
    "resolve_categories",
    "load_coco_json",
    "CocoDataset",
    "gt_subset",
    "list_images",
]

#: The 80 COCO category names in category-id order: the class indices 0..79 of YOLO models trained on COCO.
COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

#: The 20 COCO classes that overlap PASCAL VOC: the few-shot "novel" split of METHOD 6.1 (COCO names).
COCO_NOVEL_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "boat", "bird", "cat",
    "dog", "horse", "sheep", "cow", "bottle", "chair", "couch", "potted plant", "dining table", "tv",
)

#: Named category splits. ``None`` means "every category of the annotation file".
#: The VOC splits (METHOD 6.2) use PASCAL VOC names, as in a VOC annotation file converted to COCO format.
SPLITS: dict[str, tuple[str, ...] | None] = {
    "coco-novel": COCO_NOVEL_NAMES,
    "coco-all": None,
    "voc-split1": ("bird", "bus", "cow", "motorbike", "sofa"),
    "voc-split2": ("aeroplane", "bottle", "cow", "horse", "sofa"),
    "voc-split3": ("boat", "cat", "motorbike", "sheep", "sofa"),
}

#: File extensions (lower case) that ``list_images`` treats as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})


def _few(names: Iterable[str], n: int = 8) -> str:
    names = list(names)
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f", ... ({len(names)} in all)" if len(names) > n else "")


def resolve_categories(coco_categories: Sequence[Mapping[str, Any]], spec: str) -> list[dict]:
    """Resolve a category spec against the ``categories`` list of a COCO file.

    ``spec`` is a split name from :data:`SPLITS` (``"coco-novel"``, ``"coco-all"``, ``"voc-split1"``...) or a
    comma-separated list of category names and/or ids (``"person,dog,44"``). Names match exactly, or else
    case-insensitively; a purely numeric token that is not a category name is read as a category id.

    Returns copies of the matching category dicts, **sorted by ascending id** (the class index is the rank in
    this list, as in the paper). Duplicates are removed.
    """
    cats = [dict(c) for c in coco_categories]
    if not cats:
        raise InputError("The annotation file has no 'categories': it cannot be used to resolve category names.")
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(
            f"Empty category spec {spec!r}: give a split name ({', '.join(SPLITS)}) or comma-separated "
            f"category names/ids, e.g. 'person,dog,44'."
        )
    by_name = {c["name"]: c for c in cats}
    by_lower: dict[str, dict] = {}
    for c in cats:
        by_lower.setdefault(str(c["name"]).lower(), c)
    by_id = {int(c["id"]): c for c in cats}

    key = spec.strip()
    if key.lower() in SPLITS:
        names = SPLITS[key.lower()]
        if names is None:
            return sorted(cats, key=lambda c: int(c["id"]))
        missing = [n for n in names if n not in by_name and n.lower() not in by_lower]
        if missing:
            raise InputError(
                f"Category split {key!r} needs categories {missing} that the annotation file does not have "
                f"(it has {_few(by_name)}). Use a split that matches this dataset, or list category names."
            )
        tokens = list(names)
    else:
        tokens = [t.strip() for t in key.split(",")]
        if any(not t for t in tokens):
            raise InputError(f"Category spec {spec!r} has an empty item: separate names or ids by single commas.")

    chosen: dict[int, dict] = {}
    for tok in tokens:
        cat = by_name.get(tok) or by_lower.get(tok.lower())
        if cat is None and tok.lstrip("-").isdigit():
            cat = by_id.get(int(tok))
            if cat is None:
                raise InputError(
                    f"Unknown category id {tok} in {spec!r}: the annotation file has ids "
                    f"{_few(sorted(by_id), 10)}. Use one of these ids or a category name."
                )
        if cat is None:
            raise InputError(
                f"Unknown category {tok!r} in {spec!r}. Valid names include {_few(by_name)}; "
                f"splits: {', '.join(SPLITS)}."
            )
        chosen[int(cat["id"])] = cat
    return [chosen[i] for i in sorted(chosen)]


def load_coco_json(path: str | Path) -> dict:
    """Read a COCO-format JSON file into a dict, with clear errors for missing or malformed files.

    Requires ``images`` and ``categories`` lists; ``annotations`` defaults to an empty list. Every entry is
    validated up front (:func:`_check_coco_dict`, with ``file_name`` and image sizes required).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"Annotation file {str(p)!r} does not exist"
            + (" (it is a folder)" if p.is_dir() else "")
            + ": pass the path of a COCO-format JSON file (e.g. annotations/instances_val2017.json)."
        )
    try:
        with open(p, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"Annotation file {str(p)!r} is not valid JSON ({e}). Pass a COCO-format JSON file.") from e
    _check_coco_dict(data, str(p), need_files=True)
    return data


def _check_coco_dict(data: Any, where: str, need_files: bool = False) -> None:
    """Validate a COCO instances dict up front, so that a bad entry fails now, not after hours of prediction.

    Checks: unique integer image, category and annotation ids; category names; every annotation's
    ``image_id``/``category_id`` known, its ``bbox`` four finite numbers with ``w, h >= 0``, its
    ``segmentation`` (optional) polygons of ``(x, y)`` points (at least 2: COCO itself has some degenerate
    ones) or an RLE ``{size, counts}``.
    ``need_files``: images are going to be read, so every image needs ``file_name`` and positive
    ``height``/``width``. Raises one InputError naming ``where``, the first problems and how many there are.
    """
    if not isinstance(data, dict):
        raise InputError(f"{where} is not a COCO-format object (expected a JSON object with 'images', "
                         f"'annotations' and 'categories').")
    for key in ("images", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{where} has no '{key}' list: it is not a COCO-format instances file.")
    if "annotations" in data and not isinstance(data["annotations"], list):
        raise InputError(f"{where}: 'annotations' must be a list.")
    data.setdefault("annotations", [])
    problems = _Problems()
    image_ids = _check_entries(data["images"], "image", problems, lambda im: _image_problem(im, need_files))
    category_ids = _check_entries(data["categories"], "category", problems, _category_problem)
    _check_entries(data["annotations"], "annotation", problems,
                   lambda a: _annotation_problem(a, image_ids, category_ids))
    if problems.count:
        raise InputError(f"{where} has {problems.count} invalid entr{'y' if problems.count == 1 else 'ies'}: "
                         f"{'; '.join(problems.first)}{'; ...' if problems.count > len(problems.first) else ''}. "
                         f"Fix the annotation file (see the COCO format: cocodataset.org/#format-data).")


class _Problems:
    """The number of problems found and the text of the first few."""

    def __init__(self, keep: int = 3):
        self.count, self.first, self.keep = 0, [], keep

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append(text)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_entries(entries: list, kind: str, problems: _Problems, check) -> set[int]:
    """Run ``check`` (entry -> problem text or None) on each entry; returns the set of valid integer ids."""
    ids: set[int] = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            problems.add(f"{kind} #{i} is a {type(e).__name__}, not an object")
            continue
        eid = e.get("id")
        what = f"{kind} #{i} (id {eid!r})"
        if not _is_int(eid):
            problems.add(f"{what}: the id must be an integer, not {type(eid).__name__}")
            continue
        if eid in ids:
            problems.add(f"{what}: the id is used twice")
        ids.add(eid)
        problem = check(e)
        if problem:
            problems.add(f"{what}: {problem}")
    return ids


def _image_problem(im: dict, need_files: bool) -> str | None:
    if need_files and (not isinstance(im.get("file_name"), str) or not im["file_name"]):
        return "no 'file_name'"
    for key in ("height", "width"):
        if (need_files or key in im) and not (_is_int(im.get(key)) and im[key] > 0):
            return f"'{key}' must be a positive integer, got {im.get(key)!r}"
    return None


def _category_problem(c: dict) -> str | None:
    if not isinstance(c.get("name"), str) or not c["name"].strip():
        return f"'name' must be a non-empty string, got {c.get('name')!r}"
    return None


def _annotation_problem(a: dict, image_ids: set[int], category_ids: set[int]) -> str | None:
    if a.get("image_id") not in image_ids or not _is_int(a.get("image_id")):
        return f"its 'image_id', image id {a.get('image_id')!r}, is not the integer id of an image in the file"
    if a.get("category_id") not in category_ids or not _is_int(a.get("category_id")):
        return f"its 'category_id', category id {a.get('category_id')!r}, is not the integer id of a category in the file"
    box = a.get("bbox")
    if not isinstance(box, list) or len(box) != 4 or not all(_is_num(v) for v in box) or box[2] < 0 or box[3] < 0:
        return f"'bbox' must be [x, y, w, h] (finite numbers, w and h >= 0), got {box!r}"
    seg = a.get("segmentation")
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) < 4 or len(poly) % 2 or not all(_is_num(v) for v in poly):
                return ("a polygon of 'segmentation' must be a flat list [x1, y1, x2, y2, ...] of finite numbers, "
                        "an even count of them and at least 2 points")
    elif isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)) \
                or not isinstance(counts, (str, bytes, list)):
            return "an RLE 'segmentation' must be {'size': [height, width], 'counts': ...}"
    elif seg is not None:
        return f"'segmentation' must be polygons (a list) or an RLE (an object), got {type(seg).__name__}"
    if a.get("iscrowd", 0) not in (0, 1):
        return f"'iscrowd' must be 0 or 1, got {a.get('iscrowd')!r}"
    return None


def _as_coco_dict(coco: Any) -> dict:
    """Accept a COCO dict, a path to a COCO JSON, or a :class:`CocoDataset`."""
    if isinstance(coco, CocoDataset):
        return coco.dataset
    if isinstance(coco, dict):
        _check_coco_dict(coco, "The annotation dict")
        return coco
    if isinstance(coco, (str, Path)):
        return load_coco_json(coco)
    raise InputError(f"Expected a COCO dict, a path to a COCO JSON or a CocoDataset, got {type(coco).__name__}.")


def _quiet_coco(data: dict):
    """A pycocotools COCO object built from ``data`` without its prints."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


class CocoDataset:
    """A COCO-format dataset: one instances JSON plus its image folder.

    ``annotations`` is a path to the JSON (or an already-loaded COCO dict); ``images`` is the folder holding the
    files named by ``file_name``. The JSON is read at construction; the pycocotools index is built on first use.
    """

    def __init__(self, annotations: str | Path | dict, images: str | Path):
        if isinstance(annotations, dict):
            _check_coco_dict(annotations, "The annotation dict", need_files=True)
            self.json_path: Path | None = None
            self._data = annotations
        else:
            self.json_path = Path(annotations)
            self._data = load_coco_json(self.json_path)
        self.images_dir = Path(images)
        if not self.images_dir.is_dir():
            raise InputError(
                f"Image folder {str(self.images_dir)!r} does not exist"
                + (" (it is a file)" if self.images_dir.exists() else "")
                + ": pass the folder that holds the images named in the annotation file (e.g. val2017/)."
            )
        self._coco = None
        self._imgs = {int(im["id"]): im for im in self._data["images"]}
        self._cats = {int(c["id"]): c for c in self._data["categories"]}

    # ------------------------------------------------------------------ basics
    @property
    def dataset(self) -> dict:
        """The raw COCO dict (do not modify)."""
        return self._data

    @property
    def coco(self):
        """The pycocotools ``COCO`` object (built lazily, silently)."""
        if self._coco is None:
            self._coco = _quiet_coco(self._data)
        return self._coco

    @property
    def image_ids(self) -> list[int]:
        """Image ids in the JSON order of ``images``."""
        return [int(im["id"]) for im in self._data["images"]]

    @property
    def categories(self) -> list[dict]:
        """The ``categories`` list, in JSON order."""
        return list(self._data["categories"])

    @property
    def category_ids(self) -> list[int]:
        return sorted(self._cats)

    def __len__(self) -> int:
        return len(self._data["images"])

    def __repr__(self) -> str:
        src = str(self.json_path) if self.json_path else "<dict>"
        return (f"CocoDataset({src!r}, images={str(self.images_dir)!r}: {len(self)} images, "
                f"{len(self._data['annotations'])} annotations, {len(self._cats)} categories)")

    def category(self, category_id: int) -> dict:
        try:
            return self._cats[int(category_id)]
        except KeyError:
            raise InputError(
                f"Unknown category id {category_id}: the annotation file has ids {_few(sorted(self._cats), 10)}."
            ) from None

    def resolve_categories(self, spec: str) -> list[dict]:
        """:func:`resolve_categories` against this dataset's categories."""
        return resolve_categories(self._data["categories"], spec)

    # ------------------------------------------------------------------ images
    def image_info(self, image_id: int) -> dict:
        try:
            return self._imgs[int(image_id)]
        except (KeyError, TypeError, ValueError):
            src = str(self.json_path) if self.json_path else "the annotation dict"
            raise InputError(f"Image id {image_id!r} is not in {src}.") from None

    def image_path(self, image_id: int) -> Path:
        """Path of an image file; InputError naming it if the file is missing."""
        info = self.image_info(image_id)
        path = self.images_dir / info["file_name"]
        if not path.is_file():
            raise InputError(
                f"Image file {str(path)!r} (image id {image_id}, named in the annotation file) does not exist: "
                f"check the image folder {str(self.images_dir)!r}."
            )
        return path

    def load_image(self, image_id: int):
        """The image as an RGB ``PIL.Image`` at its original size."""
        from ..imageio import open_image

        with open_image(self.image_path(image_id), "image file") as im:
            return im.convert("RGB")

    # ------------------------------------------------------------- annotations
    def annotations(
        self, image_id: int, category_ids: Iterable[int] | None = None, include_crowd: bool = True
    ) -> list[dict]:
        """Annotations of one image in JSON order, optionally restricted to ``category_ids`` and non-crowd ones."""
        self.image_info(image_id)
        anns = self.coco.imgToAnns.get(int(image_id), [])
        if category_ids is not None:
            keep = {int(c) for c in category_ids}
            anns = [a for a in anns if int(a["category_id"]) in keep]
        if not include_crowd:
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        return list(anns)

    def annotation(self, annotation_id: int) -> dict:
        try:
            return self.coco.anns[int(annotation_id)]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"Annotation id {annotation_id!r} is not in the annotation file.") from None

    def ann_mask(self, ann: Mapping[str, Any] | int) -> np.ndarray:
        """``HxW`` boolean mask of an annotation (dict or id): polygons, RLE and uncompressed RLE."""
        if not isinstance(ann, Mapping):
            ann = self.annotation(ann)
        self.image_info(ann["image_id"])
        if "segmentation" not in ann or ann["segmentation"] in (None, [], {}):
            raise InputError(f"Annotation {ann.get('id')!r} has no segmentation: a mask cannot be built from it.")
        with warnings.catch_warnings():  # pycocotools' decode trips a NumPy 2 DeprecationWarning
            warnings.simplefilter("ignore", DeprecationWarning)
            return self.coco.annToMask(ann).astype(bool)


def gt_subset(coco_json_dict: dict | str | Path, category_ids: Iterable[int]) -> dict:
    """A COCO dict with ALL images but only the annotations (and categories) of ``category_ids``.

    This is the evaluation ground truth of METHOD 6.1: COCOeval then runs over every image, and only the chosen
    categories count. The input is not modified; images/annotations are shared (shallow copies).
    """
    data = _as_coco_dict(coco_json_dict)
    ids = {int(c) for c in category_ids}
    known = {int(c["id"]) for c in data["categories"]}
    unknown = sorted(ids - known)
    if unknown:
        raise InputError(
            f"Category ids {unknown} are not in the annotation file (it has ids {_few(sorted(known), 10)})."
        )
    out = {k: v for k, v in data.items() if k not in ("images", "annotations", "categories")}
    out["images"] = list(data["images"])
    out["annotations"] = [a for a in data["annotations"] if int(a["category_id"]) in ids]
    out["categories"] = [c for c in data["categories"] if int(c["id"]) in ids]
    return out


_GLOB_CHARS = set("*?[")


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS


def list_images(inputs: Sequence[str | Path] | str | Path) -> list[Path]:
    """Expand folders, glob patterns and single files into a list of image paths.

    - a folder: its image files (non-recursive; extensions in :data:`IMAGE_EXTENSIONS`, any case), sorted;
    - a glob pattern (``*``, ``?``, ``[``; ``**`` recurses): the matching image files, sorted;
    - a file: itself (it must have an image extension).

    The result keeps input order and drops duplicates. Any input that yields no image raises InputError naming it.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if not inputs:
        raise InputError("No image inputs given: pass image files, folders or glob patterns.")
    out: list[Path] = []
    seen: set[Path] = set()
    exts = ", ".join(sorted(IMAGE_EXTENSIONS))
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and _is_image(q))
            if not found:
                raise InputError(f"Folder {str(p)!r} contains no image files ({exts}); subfolders are not searched.")
        elif p.is_file():
            if not _is_image(p):
                raise InputError(f"{str(p)!r} is not an image file (expected one of {exts}).")
            found = [p]
        elif _GLOB_CHARS & set(str(item)):
            found = sorted(Path(q) for q in glob.glob(str(item), recursive=True))
            found = [q for q in found if q.is_file() and _is_image(q)]
            if not found:
                raise InputError(f"Pattern {str(item)!r} matches no image files ({exts}).")
        else:
            raise InputError(f"Image input {str(item)!r} does not exist: pass an image file, a folder or a glob.")
        for q in found:
            if q not in seen:
                seen.add(q)
                out.append(q)
    return out
