"""``Detections``: the one result type every part of the library returns and accepts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from .errors import InputError


def counts_text(counts: Mapping[str, int], limit: int = 8) -> str:
    """``{dog: 2, cat: 1}`` for reprs: the first ``limit`` entries in order, then how many more there are."""
    items = [f"{name}: {n}" for name, n in counts.items()]
    more = [f"... {len(items) - limit} more"] if len(items) > limit else []
    return "{" + ", ".join(items[:limit] + more) + "}"


def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE of an ``(H, W)`` bool mask, with ``counts`` as ``str`` (JSON-ready)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def decode_rle(rle: dict) -> np.ndarray:
    """Inverse of :func:`encode_rle`: ``(H, W)`` bool."""
    r = dict(rle)
    if isinstance(r["counts"], str):
        r["counts"] = r["counts"].encode("ascii")
    return mask_utils.decode(r).astype(bool)


def coco_box(box: Sequence[float], convention: str = "inclusive") -> list[float]:
    """``(x0, y0, x1, y1)`` pixel-extent box (exclusive ``x1, y1``) -> COCO ``[x, y, w, h]``.

    ``"inclusive"`` reproduces the paper: ``w = x_max - x_min`` with inclusive pixel indices, 1 px short of
    the extent (METHOD.md 11.7). ``"exclusive"`` gives the true extent. An empty box stays ``[0, 0, 0, 0]``.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 <= x0 or y1 <= y0:
        return [0.0, 0.0, 0.0, 0.0]
    short = 1.0 if convention == "inclusive" else 0.0
    return [x0, y0, x1 - x0 - short, y1 - y0 - short]


@dataclass
class Detections:
    """Instances found in one image (frame: original image pixels).

    masks: ``(N, H, W)`` bool. boxes: ``(N, 4)`` float ``x0, y0, x1, y1``, the tight pixel extent of each
    mask (``x1, y1`` exclusive; all zeros for an empty mask). scores: ``(N,)`` float, descending.
    labels: ``(N,)`` int, indices into ``category_names``. ``category_ids`` (optional) maps each label index
    to a dataset category id for COCO export. ``box_convention`` is used by :meth:`to_coco`.
    track_ids: ``(N,)`` int64 instance identities across the frames of a video (``None`` for still images).
    """

    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    category_names: list[str]
    category_ids: list[int | None] = field(default_factory=list)
    box_convention: str = "inclusive"
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.scores)
        if not (len(self.masks) == len(self.boxes) == len(self.labels) == n):
            raise ValueError("Detections: masks, boxes, scores and labels must have the same length")
        if self.track_ids is not None and len(self.track_ids) != n:
            raise ValueError("Detections: track_ids must have one id per detection")

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        """``Detections(n=12, image_size=(480, 640), categories={dog: 8, cat: 4}, scores=0.91..0.12)``."""
        parts = [f"n={len(self)}", f"image_size={self.image_size}"]
        if len(self):
            counts: dict[str, int] = {}
            for name in self.names:
                counts[name] = counts.get(name, 0) + 1
            parts += [f"categories={counts_text(counts)}",
                      f"scores={float(self.scores.max()):.2f}..{float(self.scores.min()):.2f}"]
        return f"Detections({', '.join(parts)})"

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the image."""
        return tuple(self.masks.shape[1:])  # type: ignore[return-value]

    @property
    def names(self) -> list[str]:
        """Category name of each detection."""
        return [self.category_names[int(i)] for i in self.labels]

    @classmethod
    def empty(cls, image_size: tuple[int, int], category_names: list[str], **kwargs) -> "Detections":
        h, w = image_size
        return cls(
            masks=np.zeros((0, h, w), bool),
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            labels=np.zeros((0,), np.int64),
            category_names=list(category_names),
            **kwargs,
        )

    def __getitem__(self, index) -> "Detections":
        """Select detections with an index array, a boolean array or a slice."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            masks=self.masks[index],
            boxes=self.boxes[index],
            scores=self.scores[index],
            labels=self.labels[index],
            category_names=self.category_names,
            category_ids=self.category_ids,
            box_convention=self.box_convention,
            track_ids=None if self.track_ids is None else self.track_ids[index],
        )

    def filter(self, min_score: float) -> "Detections":
        """Detections scoring strictly above ``min_score``."""
        return self[self.scores > min_score]

    def to_supervision(self):
        """This result as a ``supervision.Detections`` (needs the ``supervision`` extra).

        ``xyxy`` = :attr:`boxes` (float32, the pixel extent: ``x1, y1`` exclusive, one more than the last pixel's
        index that ``supervision.mask_to_xyxy`` gives), ``mask`` =
        :attr:`masks`, ``confidence`` = :attr:`scores`, ``class_id`` = :attr:`labels`, and
        ``data["class_name"]`` the category name of each detection. :meth:`from_supervision` reads it back.
        """
        sv = _supervision()
        return sv.Detections(xyxy=self.boxes.astype(np.float32).reshape(-1, 4), mask=self.masks.astype(bool),
                             confidence=self.scores.astype(np.float32), class_id=self.labels.astype(int),
                             data={"class_name": np.array(self.names, dtype=str)})

    @classmethod
    def from_supervision(cls, detections, category_names: Sequence[str] | None = None) -> "Detections":
        """A ``supervision.Detections`` with masks as our :class:`Detections` (sorted by descending score).

        Categories: ``category_names`` indexed by ``class_id`` when given; else the ``data["class_name"]`` of
        each detection (names in order of first ``class_id``); else ``class_<id>``. Boxes are recomputed as
        the tight extent of each mask; a missing ``confidence`` counts as 1.
        """
        if detections.mask is None:
            raise InputError("from_supervision: these supervision Detections have no masks; no-time-to-train "
                             "results are instance masks (run a segmentation model, or use SAM on the boxes)")
        masks = detections.mask
        masks = np.asarray(masks.to_dense() if hasattr(masks, "to_dense") else masks, dtype=bool)
        n = len(masks)
        class_ids = np.zeros(n, int) if detections.class_id is None else np.asarray(detections.class_id, int)
        if category_names is not None:
            names = list(category_names)
            if n and not (0 <= class_ids.min() and class_ids.max() < len(names)):
                raise InputError(f"from_supervision: class ids {sorted(set(class_ids.tolist()))} do not index the "
                                 f"{len(names)} category names given")
            labels = class_ids
        else:
            given = detections.data.get("class_name")
            keys = [str(given[i]) if given is not None else f"class_{class_ids[i]}" for i in range(n)]
            names = list(dict.fromkeys(k for _, k in sorted(zip(class_ids.tolist(), keys), key=lambda t: t[0])))
            labels = np.array([names.index(k) for k in keys], int)
        scores = np.ones(n, np.float32) if detections.confidence is None else \
            np.asarray(detections.confidence, np.float32)
        order = np.argsort(-scores, kind="stable")
        import torch

        from .matching import mask_extents

        boxes = mask_extents(torch.from_numpy(masks[order])).numpy().astype(np.float32).reshape(-1, 4)
        return cls(masks=masks[order], boxes=boxes, scores=scores[order], labels=labels[order].astype(np.int64),
                   category_names=names)

    def to_coco(
        self,
        image_id: int | str,
        category_ids: Sequence[int] | Mapping[str, int] | None = None,
    ) -> list[dict]:
        """COCO result dicts ``{image_id, category_id, bbox, score, segmentation (RLE)}``.

        ``category_ids``: a list indexed by label, or a ``{name: id}`` mapping; defaults to the memory's
        ids (``self.category_ids``: each category's own id, never depending on the others), or the label
        index when no category has an id. Some categories with ids and some without is an InputError
        naming those without: their ids would otherwise collide or silently change.
        """
        ids = self._id_lookup(category_ids)
        out = []
        for mask, box, score, label in zip(self.masks, self.boxes, self.scores, self.labels):
            out.append(
                {
                    "image_id": image_id,
                    "category_id": ids[int(label)],
                    "bbox": coco_box(box, self.box_convention),
                    "score": float(score),
                    "segmentation": encode_rle(mask),
                }
            )
        return out

    def _id_lookup(self, category_ids) -> list[int]:
        names = self.category_names
        if category_ids is None:
            ids = list(self.category_ids)[: len(names)]
            ids += [None] * (len(names) - len(ids))
            if all(i is None for i in ids):  # no ids at all: the label index is the only number there is
                return list(range(len(names)))
            missing = [n for n, i in zip(names, ids) if i is None]
            if missing:
                raise InputError(f"to_coco: categories {', '.join(missing)} have no category id while the others "
                                 f"have dataset ids; pass category_ids= for every category (a memory gives "
                                 f"each category an id of its own, see ReferenceMemory.add_category)")
            return [int(i) for i in ids]  # type: ignore[arg-type]
        if isinstance(category_ids, Mapping):
            missing = [n for n in names if n not in category_ids]
            if missing:
                raise InputError(f"to_coco: no category id given for {', '.join(missing)}")
            return [int(category_ids[n]) for n in names]
        ids = [int(i) for i in category_ids]
        if len(ids) != len(names):
            raise InputError(f"to_coco: {len(ids)} category ids given for {len(names)} categories ({', '.join(names)})")
        return ids


def _supervision():
    try:
        import supervision
    except ImportError as exc:
        raise InputError(f"supervision is not installed ({exc}); install it with: "
                         "pip install \"no-time-to-train[supervision]\"") from exc
    return supervision
