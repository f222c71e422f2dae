"""Labelled datasets in the formats labelling tools and trainers read: COCO, YOLO, Label Studio, CVAT.

:func:`write_dataset` takes :class:`LabeledImage` records (an image and its instances, each a COCO RLE mask
with its category and score) and writes one folder per format under a dataset root::

    ROOT/coco/annotations.json, ROOT/coco/images/          COCO instances (pycocotools, FiftyOne, Detectron2 ...)
    ROOT/yolo/data.yaml, images/{train,val}, labels/...    Ultralytics segmentation (``yolo segment train``)
    ROOT/labelstudio/tasks.json, config.xml, images/       Label Studio pre-annotations (predictions)
    ROOT/cvat/annotations.xml, labels.json, images/        CVAT for images 1.1 (masks or polygons)

Each format folder is written beside its final place and renamed into it at the end, so a folder is either
the previous complete one or the new complete one. Images are symlinked (or copied with ``copy_images``).
Polygons come from :mod:`.polygons` (OpenCV); how each format keeps holes and multi-part objects is said in
its module.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError
from ..types import coco_box, decode_rle

FORMATS = ("coco", "yolo", "labelstudio", "cvat")
MASK_FORMATS = ("polygon", "rle")


@dataclass
class Instance:
    """One labelled object: its category name, its mask as COCO RLE (image frame) and its score.

    score: the method's score, or None for an object a reviewer drew. review: ``"accepted"`` or ``"added"``
    by a reviewer, None when nobody looked at it.
    """

    category: str
    rle: dict
    score: float | None = None
    review: str | None = None


@dataclass
class LabeledImage:
    """One image of the dataset and its instances.

    name: the file name the image gets inside the dataset (unique in the dataset). path: the image file, linked
    or copied into the dataset; or ``pixels`` ``(H, W, 3)`` uint8, saved under ``name``. split: ``"train"`` or
    ``"val"`` (YOLO). reviewed: a person checked this image (Label Studio then gets annotations, not predictions).
    """

    name: str
    width: int
    height: int
    instances: list[Instance]
    path: Path | None = None
    pixels: np.ndarray | None = None
    split: str = "train"
    reviewed: bool = False


@dataclass
class WriteOptions:
    """How :func:`write_dataset` writes.

    mask_format: ``"polygon"`` (COCO and CVAT fall back to a mask for an object with holes, which a polygon
    cannot express) or ``"rle"`` (pixel-exact masks in COCO and CVAT; YOLO and Label Studio always take
    polygons). polygon_tolerance: pixels a simplified polygon may stray from the mask boundary (0: exact pixel
    boundary). copy_images: copy instead of symlinking. image_url_prefix: Label Studio image URL prefix (default:
    its local-files URL of ``labelstudio/images``).
    """

    mask_format: str = "polygon"
    polygon_tolerance: float = 1.0
    copy_images: bool = False
    image_url_prefix: str | None = None


class Shape:
    """An instance's geometry, computed once for all formats: mask, tight box, parts (polygons on demand)."""

    def __init__(self, instance: Instance, tolerance: float):
        self.instance = instance
        self.mask = decode_rle(instance.rle)
        self.tolerance = tolerance
        ys, xs = np.nonzero(self.mask)
        extent = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0)
        self.bbox = coco_box(extent, "exclusive")  # COCO [x, y, w, h], the true pixel extent
        self.area = int(len(xs))
        self._parts = None

    @property
    def parts(self):
        """The mask's parts with their holes (:func:`.polygons.mask_to_parts`)."""
        if self._parts is None:
            from .polygons import mask_to_parts

            self._parts = mask_to_parts(self.mask, self.tolerance)
        return self._parts

    @property
    def has_holes(self) -> bool:
        return any(p.holes for p in self.parts)


# -- checks ---------------------------------------------------------------------------------------------
def check_formats(formats: Sequence[str]) -> list[str]:
    """The formats, in order and without repeats; an unknown one is an InputError naming the choices."""
    out = []
    for f in formats:
        name = f.strip().lower()
        if name not in FORMATS:
            raise InputError(f"unknown dataset format {f!r}; choose from {', '.join(FORMATS)} (several: "
                             f"--format coco yolo)")
        if name not in out:
            out.append(name)
    if not out:
        raise InputError(f"no dataset format given; choose from {', '.join(FORMATS)}")
    return out


def check_category_names(names: Sequence[str], formats: Sequence[str]) -> None:
    """Refuse category names a chosen format cannot carry, before any work starts."""
    for name in names:
        if not name.strip() or re.search(r"[\x00-\x1f\x7f]", name):
            raise InputError(f"category name {name!r} is empty or holds control characters (a line break, a tab), "
                             "which no dataset format can carry; rename it in the memory")
    if "yolo" in formats and names and names[0].startswith("n0"):
        raise InputError(f"YOLO (Ultralytics) reads a first class name that starts with 'n0', such as {names[0]!r}, "
                         "as an ImageNet class code and fails to load the dataset; rename that category (e.g. "
                         "nttt's app or ReferenceMemory) or leave out --format yolo")


def check_dataset_root(root: Path) -> None:
    """Refuse an output folder that holds something other than an earlier ``nttt label`` run.

    Ours: absent or empty, or holding only what :func:`write_dataset` and the label job write, with the
    mark of a run (``parts/run.json``, or a ``summary.json`` written by nttt label) where a format folder exists.
    """
    if root.exists() and not root.is_dir():
        raise InputError(f"the dataset output {root} is a file; give a folder (-o)")
    if not root.is_dir():
        return
    entries = sorted(p.name for p in root.iterdir())
    ours = {*FORMATS, *(f".{f}.partial" for f in FORMATS), "parts", "summary.json", "skipped.json"}
    marked = (root / "parts" / "run.json").is_file() or _is_ours(root / "summary.json")
    if set(entries) <= ours and (marked or not set(entries) & set(FORMATS)):
        return
    raise InputError(f"the dataset output {root} already holds other files ({', '.join(entries[:5])}"
                     f"{' ...' if len(entries) > 5 else ''}) that nttt label did not write; give a new or empty "
                     "folder (-o) so that no other dataset is overwritten")


def _is_ours(summary: Path) -> bool:
    try:
        return json.loads(summary.read_text()).get("written_by") == "nttt label"
    except (OSError, ValueError, AttributeError):
        return False


# -- splits, images -------------------------------------------------------------------------------------
def check_val_fraction(val_fraction: float) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"the validation fraction (--val-fraction) must be in [0, 1), got {val_fraction}")


def assign_splits(images: Sequence[LabeledImage], val_fraction: float, seed: int = 0) -> None:
    """Put ``round(val_fraction * N)`` images (at least one when the fraction is above 0 and N > 1) in ``"val"``.

    The draw depends only on the image names and ``seed``, so a rerun gives the same split.
    """
    check_val_fraction(val_fraction)
    names = sorted(im.name for im in images)
    k = round(val_fraction * len(names))
    if val_fraction > 0 and k == 0 and len(names) > 1:
        k = 1
    val = set(random.Random(seed).sample(names, k))
    for im in images:
        im.split = "val" if im.name in val else "train"


def unique_names(paths: Sequence[Path]) -> list[str]:
    """File names for images inside a dataset: the original names, prefixed with their index where two collide."""
    names = [p.name for p in paths]
    dup = {n for n in names if names.count(n) > 1}
    return [f"{i:06d}_{n}" if n in dup else n for i, n in enumerate(names)]


def place_image(image: LabeledImage, dst: Path, copy: bool) -> None:
    """Put the image at ``dst``: symlink (or copy) its file, or save its pixels."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if image.path is not None:
        from ..data.convert import _link_or_copy

        _link_or_copy(Path(image.path), dst, copy)
    elif image.pixels is not None:
        from PIL import Image

        Image.fromarray(image.pixels).save(dst)
    else:
        raise InputError(f"image {image.name}: neither a file nor pixels to write")


# -- writing --------------------------------------------------------------------------------------------
@dataclass
class Summary:
    """What :func:`write_dataset` wrote: per category (dataset order) instances and images holding one."""

    categories: list[dict]
    instances: dict[str, int]
    images_with: dict[str, int]
    images: int
    folders: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """The per-category counts as an aligned text table."""
        width = max([len("category"), *(len(c["name"]) for c in self.categories)])
        lines = [f"{'category':<{width}}  {'id':>5}  {'instances':>9}  {'images':>6}"]
        for c in self.categories:
            lines.append(f"{c['name']:<{width}}  {c['id']:>5}  {self.instances[c['name']]:>9}  "
                         f"{self.images_with[c['name']]:>6}")
        lines.append(f"{'total':<{width}}  {'':>5}  {sum(self.instances.values()):>9}  {self.images:>6}")
        return "\n".join(lines)


def write_dataset(images: Iterable[LabeledImage], categories: Sequence[dict], root: str | os.PathLike,
                  formats: Sequence[str], options: WriteOptions | None = None) -> Summary:
    """Write ``images`` as a dataset in every format of ``formats`` under ``root`` (see the module doc).

    categories: ``[{"id": int, "name": str}, ...]`` in label order (YOLO class index = position). Every
    instance's category must be one of them. Each format's writer gets its staging folder, its final folder
    (paths written into files, e.g. YOLO's ``data.yaml``), the categories and the options; ``add(image,
    shapes)`` per image, ``close()`` at the end. Returns the per-category counts (also written to
    ``root/summary.json``).
    """
    from .coco import CocoWriter
    from .cvat import CvatWriter
    from .labelstudio import LabelStudioWriter
    from .yolo import YoloWriter

    options = options or WriteOptions()
    if options.mask_format not in MASK_FORMATS:
        raise InputError(f"unknown mask format {options.mask_format!r}; choose from {', '.join(MASK_FORMATS)}")
    formats = check_formats(formats)
    categories = [{"id": int(c["id"]), "name": str(c["name"])} for c in categories]
    names = [c["name"] for c in categories]
    check_category_names(names, formats)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    kinds = {"coco": CocoWriter, "yolo": YoloWriter, "labelstudio": LabelStudioWriter, "cvat": CvatWriter}
    staging = {f: root / f".{f}.partial" for f in formats}
    for d in staging.values():
        shutil.rmtree(d, ignore_errors=True)
    writers = [kinds[f](staging[f], (root / f).resolve(), categories, options) for f in formats]
    instances = dict.fromkeys(names, 0)
    images_with = dict.fromkeys(names, 0)
    n_images = 0
    for image in images:
        unknown = sorted({i.category for i in image.instances} - set(names))
        if unknown:
            raise InputError(f"image {image.name}: categories {', '.join(unknown)} are not among the dataset's "
                             f"({', '.join(names)})")
        shapes = [Shape(i, options.polygon_tolerance) for i in image.instances]
        for w in writers:
            w.add(image, shapes)
        n_images += 1
        for i in image.instances:
            instances[i.category] += 1
        for name in {i.category for i in image.instances}:
            images_with[name] += 1
    folders = {}
    for f, w in zip(formats, writers):
        w.close()
        final = root / f
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging[f], final)
        folders[f] = str(final)
    summary = Summary(categories, instances, images_with, n_images, folders)
    from ..resultstore import write_json_atomic

    write_json_atomic(root / "summary.json", {"written_by": "nttt label", "images": n_images,
                                              "categories": [{**c, "instances": instances[c["name"]],
                                                              "images": images_with[c["name"]]} for c in categories],
                                              "formats": folders, "mask_format": options.mask_format}, indent=1)
    return summary
