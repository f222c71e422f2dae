"""Ultralytics YOLO segmentation dataset: ``data.yaml``, ``images/{train,val}/``, ``labels/{train,val}/``.

As Ultralytics documents it (docs.ultralytics.com/datasets/segment): one ``.txt`` per image, named after it,
in the ``labels`` folder that mirrors ``images``; one line per object, ``<class-index> <x1> <y1> ... <xn> <yn>``
with at least 3 points, coordinates normalised to [0, 1] by the image width and height; an image without
objects gets an empty file (a background image). ``data.yaml`` gives ``path`` (the dataset folder, absolute,
so that ``yolo segment train data=DATASET/yolo/data.yaml`` works from anywhere; after moving the folder, edit
it or delete the line: Ultralytics then uses the YAML's folder), ``train``/``val`` (the val images are the
train images when no image was held out) and ``names`` (``{index: name}`` in the memory's category order).

A line holds one polygon, so an object's parts and holes are joined into one ring by zero-width bridges
(:func:`.polygons.single_ring`), as Ultralytics' own COCO converter does; filled as Ultralytics fills it
(OpenCV ``fillPoly``), it gives back the mask with its holes and all its parts, plus a one-pixel line along
each bridge that crosses the background between two parts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from .polygons import single_ring


class YoloWriter:
    def __init__(self, folder: Path, final: Path, categories: list[dict], options):
        self.folder, self.final, self.options = folder, final, options
        self.index = {c["name"]: i for i, c in enumerate(categories)}
        self.names = {i: c["name"] for i, c in enumerate(categories)}
        self.splits: set[str] = set()
        folder.mkdir(parents=True)

    def add(self, image, shapes) -> None:
        from . import place_image

        split = image.split
        self.splits.add(split)
        place_image(image, self.folder / "images" / split / image.name, self.options.copy_images)
        lines = []
        for shape in shapes:
            line = label_line(self.index[shape.instance.category], single_ring(shape.parts), image.width,
                              image.height)
            if line:
                lines.append(line)
        label = self.folder / "labels" / split / (Path(image.name).stem + ".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text("".join(line + "\n" for line in lines))

    def close(self) -> None:
        train = "images/train"
        val = "images/val" if "val" in self.splits else train
        doc = {"path": str(self.final), "train": train, "val": val, "names": self.names}
        (self.folder / "images" / "train").mkdir(parents=True, exist_ok=True)
        text = ("# Ultralytics YOLO segmentation dataset written by no-time-to-train (nttt label).\n"
                "# 'path' is this folder; after moving it, edit or delete that line.\n")
        (self.folder / "data.yaml").write_text(text + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def label_line(class_index: int, ring: np.ndarray | None, width: int, height: int) -> str | None:
    """``"<class> x1 y1 ... xn yn"`` (6 decimals, clipped to [0, 1]), or None for no ring."""
    if ring is None:
        return None
    xy = np.clip(ring / np.array([width, height], np.float64), 0.0, 1.0)
    return f"{class_index} " + " ".join(f"{v:.6f}" for v in xy.reshape(-1))
