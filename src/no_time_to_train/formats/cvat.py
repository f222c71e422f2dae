"""CVAT for images 1.1: ``annotations.xml``, ``images/`` and ``labels.json``.

Zip ``annotations.xml`` with ``images/`` (or upload the XML to a task made from the same images) and import it
as "CVAT 1.1" (docs.cvat.ai, "XML annotation format"). ``labels.json`` is the task's label list for CVAT's
"Raw" label editor (each label with a ``score`` text attribute). Shapes: with ``mask_format="rle"`` every
object is a ``<mask>`` (CVAT's RLE: run lengths over the object's box, row by row, starting with a run of
background; ``left``/``top``/``width``/``height`` give the box), pixel-exact; with ``"polygon"`` each part
is a ``<polygon>`` (the parts of one object share a ``group_id``), and an object with a hole, or too small to
trace, a ``<mask>``. The score goes into each shape's ``score`` attribute.
"""

from __future__ import annotations

import datetime
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .. import __version__


def cvat_rle(mask: np.ndarray) -> tuple[list[int], tuple[int, int, int, int]]:
    """CVAT mask RLE of an ``(H, W)`` bool mask: run lengths over its tight box, row-major, starting with a
    (possibly empty) run of background, and the box ``(left, top, width, height)``."""
    ys, xs = np.nonzero(mask)
    left, top = int(xs.min()), int(ys.min())
    width, height = int(xs.max()) - left + 1, int(ys.max()) - top + 1
    values = mask[top : top + height, left : left + width].reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(values)) + 1
    bounds = np.concatenate([[0], change, [len(values)]])
    runs = np.diff(bounds).tolist()
    if values[0]:
        runs.insert(0, 0)
    return runs, (left, top, width, height)


class CvatWriter:
    def __init__(self, folder: Path, final: Path, categories: list[dict], options):
        self.folder, self.options = folder, options
        self.names = [c["name"] for c in categories]
        self.root = ET.Element("annotations")
        ET.SubElement(self.root, "version").text = "1.1"
        self.meta = ET.SubElement(self.root, "meta")
        self.count = 0
        self.group = 0
        (folder / "images").mkdir(parents=True)

    def add(self, image, shapes) -> None:
        from . import place_image

        place_image(image, self.folder / "images" / image.name, self.options.copy_images)
        el = ET.SubElement(self.root, "image", id=str(self.count), name=image.name, width=str(image.width),
                           height=str(image.height))
        self.count += 1
        for shape in shapes:
            if shape.area == 0:
                continue
            inst = shape.instance
            common = {"label": inst.category, "source": "auto" if inst.review is None else "manual",
                      "occluded": "0", "z_order": "0"}
            use_polygons = self.options.mask_format == "polygon" and shape.parts and not shape.has_holes
            if use_polygons:
                group = {}
                if len(shape.parts) > 1:
                    self.group += 1
                    group = {"group_id": str(self.group)}
                shape_els = [ET.SubElement(el, "polygon", **common, **group,
                                           points=";".join(f"{x:.2f},{y:.2f}" for x, y in p.outer))
                             for p in shape.parts]
            else:
                runs, (left, top, width, height) = cvat_rle(shape.mask)
                shape_els = [ET.SubElement(el, "mask", **common, rle=", ".join(map(str, runs)), left=str(left),
                                           top=str(top), width=str(width), height=str(height))]
            for s in shape_els:
                if inst.score is not None:
                    ET.SubElement(s, "attribute", name="score").text = f"{float(inst.score):.4f}"

    def close(self) -> None:
        task = ET.SubElement(self.meta, "task")
        ET.SubElement(task, "name").text = "nttt label"
        ET.SubElement(task, "size").text = str(self.count)
        ET.SubElement(task, "mode").text = "annotation"
        ET.SubElement(task, "created").text = datetime.datetime.now(datetime.timezone.utc).isoformat()
        labels = ET.SubElement(task, "labels")
        for name in self.names:
            label = ET.SubElement(labels, "label")
            ET.SubElement(label, "name").text = name
            ET.SubElement(label, "type").text = "any"
            attrs = ET.SubElement(ET.SubElement(label, "attributes"), "attribute")
            for key, value in (("name", "score"), ("mutable", "False"), ("input_type", "text"),
                               ("default_value", ""), ("values", "")):
                ET.SubElement(attrs, key).text = value
        ET.SubElement(self.meta, "dumped").text = f"no-time-to-train {__version__}"
        ET.indent(self.root)
        ET.ElementTree(self.root).write(self.folder / "annotations.xml", encoding="utf-8", xml_declaration=True)
        raw = [{"name": n, "type": "any", "attributes": [{"name": "score", "mutable": False, "input_type": "text",
                                                         "default_value": "", "values": [""]}]}
               for n in self.names]
        (self.folder / "labels.json").write_text(json.dumps(raw, indent=1))
