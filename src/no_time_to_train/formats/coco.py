"""COCO *instances* dataset: ``annotations.json`` and ``images/`` (read by pycocotools, FiftyOne, Detectron2, CVAT).

Each annotation has ``id, image_id, category_id, segmentation, area, bbox, iscrowd: 0`` and keeps the method's
``score`` (a top-level key, which most readers keep, and in ``attributes``, where CVAT's COCO importer looks).
Segmentation: with ``mask_format="polygon"`` a list of polygons, one per part (COCO draws their union); an
object with a hole, which a COCO polygon cannot express, or one too small to trace, is written as compressed
RLE instead (``iscrowd`` stays 0: pycocotools and FiftyOne read RLE there). With ``"rle"``, every mask is
pixel-exact RLE. ``area`` is the area of the written segmentation as pycocotools computes it; ``bbox`` the tight
extent of the mask.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from pycocotools import mask as mask_utils

from .. import __version__
from ..types import encode_rle
from .polygons import flat


class CocoWriter:
    def __init__(self, folder: Path, final: Path, categories: list[dict], options):
        self.folder, self.options = folder, options
        self.ids = {c["name"]: c["id"] for c in categories}
        self.data = {
            "info": {"description": "labelled by no-time-to-train (nttt label)", "version": __version__,
                     "date_created": datetime.date.today().isoformat()},
            "licenses": [],
            "images": [],
            "annotations": [],
            "categories": [{"id": c["id"], "name": c["name"], "supercategory": ""} for c in categories],
        }
        (folder / "images").mkdir(parents=True)

    def add(self, image, shapes) -> None:
        from . import place_image

        place_image(image, self.folder / "images" / image.name, self.options.copy_images)
        image_id = len(self.data["images"]) + 1
        self.data["images"].append({"id": image_id, "file_name": image.name, "width": image.width,
                                    "height": image.height})
        for shape in shapes:
            inst = shape.instance
            seg = self.segmentation(shape)
            ann = {"id": len(self.data["annotations"]) + 1, "image_id": image_id,
                   "category_id": self.ids[inst.category], "segmentation": seg,
                   "area": float(mask_utils.area(_rle(seg, image.height, image.width))),
                   "bbox": [round(v, 2) for v in shape.bbox], "iscrowd": 0}
            attributes = {}
            if inst.score is not None:
                ann["score"] = attributes["score"] = round(float(inst.score), 4)
            if inst.review:
                attributes["review"] = inst.review
            if attributes:
                ann["attributes"] = attributes
            self.data["annotations"].append(ann)

    def segmentation(self, shape):
        """Polygons (one per part) or, for an object with holes or too small to trace, RLE."""
        if self.options.mask_format == "polygon" and shape.parts and not shape.has_holes:
            return [flat(p.outer) for p in shape.parts]
        return encode_rle(shape.mask)

    def close(self) -> None:
        (self.folder / "annotations.json").write_text(json.dumps(self.data))


def _rle(segmentation, height: int, width: int) -> dict:
    """One RLE of a COCO segmentation (polygons merged)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    return {**segmentation, "counts": segmentation["counts"].encode("ascii")}
