"""Label Studio pre-annotations: ``tasks.json`` (import it into a project), ``config.xml`` (its labelling
interface) and ``images/``.

Each task is ``{"data": {"image": URL}, "predictions": [{"model_version", "score", "result": [...]}]}`` as Label
Studio's import documents it (labelstud.io/guide/predictions): one ``polygonlabels`` region per object with
its ``score``, points in percent of the image size, ``original_width``/``original_height``. An image a
reviewer checked (the app's review) carries its objects as ``annotations`` instead. A Label Studio polygon has
one ring and no holes, so an object's parts and holes are joined into one ring by zero-width bridges
(:func:`.polygons.single_ring`). The config's ``from_name``/``to_name`` are ``label``/``image``.

Image URLs: ``image_url_prefix`` + file name; by default Label Studio's local-files URL of this folder's
``images/`` (``/data/local-files/?d=<path below the document root />``): start Label Studio with
``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/`` and add a local
storage for that folder, or upload the images elsewhere and pass their URL prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from .. import __version__
from ..visualize import category_color
from .polygons import single_ring

FROM_NAME, TO_NAME = "label", "image"


def labeling_config(names: list[str]) -> str:
    """The Label Studio labelling interface: an image with polygon labels, one colour per category."""
    labels = "\n".join(f'    <Label value={quoteattr(n)} background="#{"%02x%02x%02x" % category_color(i)}"/>'
                       for i, n in enumerate(names))
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
            f'  <PolygonLabels name="{FROM_NAME}" toName="{TO_NAME}" strokeWidth="2" opacity="0.4">\n'
            f"{labels}\n  </PolygonLabels>\n</View>\n")


class LabelStudioWriter:
    def __init__(self, folder: Path, final: Path, categories: list[dict], options):
        self.folder, self.options = folder, options
        self.names = [c["name"] for c in categories]
        prefix = options.image_url_prefix
        if prefix is None:
            prefix = "/data/local-files/?d=" + quote(str(final / "images").lstrip("/")) + "/"
        self.prefix = prefix
        self.tasks: list[dict] = []
        (folder / "images").mkdir(parents=True)

    def add(self, image, shapes) -> None:
        from . import place_image

        place_image(image, self.folder / "images" / image.name, self.options.copy_images)
        result = []
        for k, shape in enumerate(shapes):
            ring = single_ring(shape.parts)
            if ring is None:
                continue
            points = [[round(100.0 * x / image.width, 4), round(100.0 * y / image.height, 4)] for x, y in ring]
            region = {"id": f"r{len(self.tasks)}_{k}", "from_name": FROM_NAME, "to_name": TO_NAME,
                      "type": "polygonlabels", "original_width": image.width, "original_height": image.height,
                      "image_rotation": 0,
                      "value": {"points": points, "closed": True, "polygonlabels": [shape.instance.category]}}
            if shape.instance.score is not None:
                region["score"] = round(float(shape.instance.score), 4)
            result.append(region)
        task = {"data": {"image": self.prefix + quote(image.name)}}
        if image.reviewed:
            task["annotations"] = [{"result": result}]
        else:
            scores = [r["score"] for r in result if "score" in r]
            task["predictions"] = [{"model_version": f"no-time-to-train {__version__}",
                                    "score": round(sum(scores) / len(scores), 4) if scores else 0.0,
                                    "result": result}]
        self.tasks.append(task)

    def close(self) -> None:
        (self.folder / "tasks.json").write_text(json.dumps(self.tasks, indent=1))
        (self.folder / "config.xml").write_text(labeling_config(self.names))
