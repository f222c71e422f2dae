"""What the browser app does, without Gradio: reference drafts, the memory, segmentation results, exports.

``Draft`` is the reference being made in one browser tab (its image, clicks or box, and the mask SAM2 makes
from them). ``Workspace`` is shared by every tab of one server (a local, single-user tool): it holds the
segmenter and its memory, a thumbnail per reference (kept here, never written to the memory file), the
detections of the last segmentation run (so that the score threshold filters without recomputing), and
writes the exports. Every action that fails for a reason the user can fix raises :class:`InputError`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError, NtttError
from ..imageio import load_image, load_mask
from ..types import Detections
from ..visualize import category_color, instance_map, overlay

log = logging.getLogger(__name__)

POSITIVE = "Positive point"
NEGATIVE = "Negative point"
BOX = "Box (two corners)"
CLICK_MODES = (POSITIVE, NEGATIVE, BOX)

TABLE_COLUMNS = ["image", "category", "score", "x0", "y0", "x1", "y1"]

REJECT = "Reject (negative reference)"
ACCEPT = "Accept (positive reference)"
ADD = "Add a missed object"
REVIEW_ACTIONS = (REJECT, ACCEPT, ADD)

_MASK_TINT = np.array((30, 144, 255), np.float32)
_POS_COLOR = (40, 210, 70)
_NEG_COLOR = (235, 45, 45)
_BOX_COLOR = (255, 215, 0)

Progress = Callable[[float, str], None]

AUTOSAVE = "autosave.safetensors"  # the working memory, in the server's working folder
AUTOSAVE_PREVIOUS = "autosave.previous.safetensors"  # the one set aside by a fresh start


@dataclass
class Draft:
    """The reference being made in one tab.

    Prompts are either clicks (``points``: ``(x, y, 1|0)``) or a box (``box``, made from two corner clicks;
    ``corner`` holds the first one until the second arrives), never both: SAM2 is prompted with one kind.
    ``mask`` is SAM2's answer to the prompts, or an uploaded mask (``mask_source == "upload"``).
    """

    image: np.ndarray | None = None
    name: str = ""
    points: list[tuple[float, float, int]] = field(default_factory=list)
    corner: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None
    mask_source: str | None = None
    sam2_iou: float | None = None

    def clear_prompts(self) -> None:
        self.points, self.corner, self.box = [], None, None
        self.mask, self.mask_source, self.sam2_iou = None, None, None

    def describe(self) -> str:
        """One line for the page: what the mask comes from."""
        if self.image is None:
            return "Upload a reference image, then click on the object."
        h, w = self.image.shape[:2]
        head = f"**{self.name or 'image'}** ({w}x{h}). "
        if self.mask_source == "upload":
            return head + f"Uploaded mask: {int(self.mask.sum())} px."
        if self.corner is not None:
            return head + f"First box corner at ({self.corner[0]:.0f}, {self.corner[1]:.0f}): click the opposite corner."
        if self.mask is None:
            return head + "Click on the object (positive point) or pick the box mode and click two corners."
        if self.box is not None:
            prompt = "box ({:.0f}, {:.0f}, {:.0f}, {:.0f})".format(*self.box)
        else:
            pos = sum(1 for p in self.points if p[2] == 1)
            prompt = f"{pos} positive / {len(self.points) - pos} negative point(s)"
        return head + f"SAM2 mask from {prompt}: {int(self.mask.sum())} px, predicted IoU {self.sam2_iou:.2f}."


@dataclass
class Added:
    """An object a reviewer added by clicking on it: its category, SAM2's mask and the click ``(x, y)``."""

    category: str
    mask: np.ndarray
    click: tuple[float, float]


@dataclass
class Result:
    """One segmented target image: the image, its unfiltered detections, the memory version used, and the review.

    decisions: detection index -> ``"accepted"`` or ``"rejected"``. added: objects the reviewer added.
    change: what the last re-segmentation changed here, ``{"added": [detection indices], "removed": [masks]}``.
    path: the image file, when it came from one (a dataset export links it instead of re-encoding it).
    """

    name: str
    image: np.ndarray
    detections: Detections
    memory_version: int
    decisions: dict[int, str] = field(default_factory=dict)
    added: list[Added] = field(default_factory=list)
    change: dict | None = None
    path: Path | None = None


class _CachedEncoder:
    """A proposer look-alike that keeps the last image embedding, so that clicks on the same reference
    image run only the proposer's prompt encoder and mask decoder, not the image encoder again."""

    def __init__(self, sam2):
        self._sam2 = sam2
        self._key: tuple | None = None
        self._value = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sam2, name)

    def encode(self, image, add_no_memory_embedding: bool = False):
        key = self._key
        if key is not None and key[1] == add_no_memory_embedding and key[0].shape == image.shape \
                and bool((key[0] == image).all()):
            return self._value
        self._value = self._sam2.encode(image, add_no_memory_embedding=add_no_memory_embedding)
        self._key = (image.clone(), add_no_memory_embedding)
        return self._value


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    stem, suffix = os.path.splitext(name)
    k = 2
    while f"{stem} ({k}){suffix}" in taken:
        k += 1
    return f"{stem} ({k}){suffix}"


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("._") or "image"
    return stem


def tint(image: np.ndarray, mask: np.ndarray, color, alpha: float = 0.45) -> np.ndarray:
    """``image`` with ``mask`` blended towards ``color``."""
    out = image.astype(np.float32).copy()
    out[mask] = out[mask] * (1 - alpha) + np.asarray(color, np.float32) * alpha
    return out.clip(0, 255).astype(np.uint8)


def draft_view(draft: Draft) -> np.ndarray | None:
    """The draft's image with its mask tinted, the clicks as dots and the box (or first corner) drawn."""
    if draft.image is None:
        return None
    img = draft.image if draft.mask is None else tint(draft.image, draft.mask, _MASK_TINT, 0.5)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    h, w = draft.image.shape[:2]
    r = max(3, round(min(h, w) / 90))
    for x, y, label in draft.points:
        color = _POS_COLOR if label == 1 else _NEG_COLOR
        draw.ellipse([x - r, y - r, x + r, y + r], fill=color, outline=(255, 255, 255), width=max(1, r // 3))
    lw = max(2, r // 2)
    if draft.box is not None:
        x0, y0, x1, y1 = draft.box
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=_BOX_COLOR, width=lw)
    if draft.corner is not None:
        x, y = draft.corner
        draw.line([x - 2 * r, y, x + 2 * r, y], fill=_BOX_COLOR, width=lw)
        draw.line([x, y - 2 * r, x, y + 2 * r], fill=_BOX_COLOR, width=lw)
    return np.asarray(pil)


def thumbnail(image: np.ndarray, mask: np.ndarray, color, size: int = 128) -> np.ndarray:
    """A small picture of a reference: the mask's box with a margin, the mask tinted in ``color``."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    mx, my = max(4, (x1 - x0) // 6), max(4, (y1 - y0) // 6)
    x0, y0, x1, y1 = max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)
    crop = tint(image[y0:y1, x0:x1], mask[y0:y1, x0:x1], color, 0.4)
    pil = Image.fromarray(crop)
    pil.thumbnail((size, size), Image.BILINEAR)
    return np.asarray(pil)


def placeholder(category: str, color, size: int = 128, note: str = "loaded") -> np.ndarray:
    """A tile for a reference whose picture is not known (it came from a memory file)."""
    pil = Image.new("RGB", (size, size), tuple(int(c * 0.55) for c in color))
    draw = ImageDraw.Draw(pil)
    draw.text((8, size // 2 - 12), category[:18], fill=(255, 255, 255))
    draw.text((8, size // 2 + 4), note, fill=(220, 220, 220))
    return np.asarray(pil)


class Workspace:
    """The app's state: the segmenter with its memory, reference thumbnails, the last segmentation run.

    segmenter: a :class:`~no_time_to_train.ReferenceSegmenter`. workdir: where exports are written
    (default: a fresh temporary folder). autosave: after every change of the memory, write it to
    ``workdir/autosave.safetensors`` (removed when the memory becomes empty), so that a restarted server
    can :meth:`restore` it. Methods are safe to call from several threads (one lock).
    """

    def __init__(self, segmenter, workdir: str | os.PathLike | None = None, thumb_size: int = 128,
                 autosave: bool = False):
        self.seg = segmenter
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nttt-app-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.autosave_path = self.workdir / AUTOSAVE if autosave else None
        self.previous_path = self.workdir / AUTOSAVE_PREVIOUS
        self.thumb_size = thumb_size
        self.lock = threading.RLock()
        self.version = 0  # bumped whenever the memory changes
        self.results: list[Result] = []
        self._thumbs: list[np.ndarray] = []
        self._cached_sam2: _CachedEncoder | None = None
        self._sync_thumbs()

    # -- memory view -----------------------------------------------------------------------------------
    @property
    def memory(self):
        return self.seg.memory

    @property
    def categories(self) -> list[str]:
        return list(self.memory.category_names)

    def _color(self, category: str) -> tuple[int, int, int]:
        names = self.memory.category_names
        return category_color(names.index(category) if category in names else len(names))

    def _sync_thumbs(self) -> None:
        """Give every reference without a thumbnail (e.g. loaded from a file) a placeholder tile."""
        refs = self.memory.references
        del self._thumbs[len(refs):]
        for r in refs[len(self._thumbs):]:
            self._thumbs.append(placeholder(r["category"], self._color(r["category"]), self.thumb_size))

    def gallery(self) -> list[tuple[np.ndarray, str]]:
        """``(thumbnail, caption)`` of every reference, grouped by category (memory order)."""
        return [(self._thumbs[i], caption) for i, caption in self._gallery_rows()]

    def gallery_index(self, position: int) -> int:
        """The memory row of the ``position``-th gallery item."""
        rows = self._gallery_rows()
        if not 0 <= position < len(rows):
            raise InputError("select a reference in the gallery first")
        return rows[position][0]

    def _gallery_rows(self) -> list[tuple[int, str]]:
        with self.lock:
            self._sync_thumbs()
            refs = self.memory.references
            rows = []
            for name in self.memory.category_names:
                k = 0
                for i, r in enumerate(refs):
                    if r["category"] == name:
                        k += 1
                        rows.append((i, f"{name} #{k}" + (" (negative)" if r.get("negative") else "")))
            return rows

    def summary(self) -> str:
        """Markdown: references per category."""
        if not len(self.memory):
            return "The memory is empty: add a reference to start."
        pos, neg = self.memory.counts(), self.memory.counts(negative=True)
        parts = []
        for name in self.memory.category_names:
            text = f"**{name}**: {pos[name]}"
            if neg[name]:
                text += f" (+{neg[name]} negative)"
            parts.append(text)
        return f"{len(self.memory)} reference(s) in {len(parts)} categor{'y' if len(parts) == 1 else 'ies'}: " \
               + ", ".join(parts)

    # -- drafts ----------------------------------------------------------------------------------------
    def new_draft(self, image, name: str = "") -> Draft:
        """A draft for ``image`` (path, PIL image or array); ``name`` defaults to the file name."""
        if image is None:
            return Draft()
        arr = load_image(image)
        if not name and isinstance(image, (str, os.PathLike)):
            name = Path(image).name
        return Draft(image=arr, name=name or "image")

    def click(self, draft: Draft, x: float, y: float, mode: str = POSITIVE) -> Draft:
        """Add a click at pixel ``(x, y)`` and remake the mask with SAM2.

        ``mode``: :data:`POSITIVE` / :data:`NEGATIVE` add a point (and drop a box); :data:`BOX` sets the first
        corner, then the second one makes the box (and drops the points). An uploaded mask is replaced.
        """
        if draft.image is None:
            raise InputError("upload a reference image first")
        if mode not in CLICK_MODES:
            raise InputError(f"unknown click mode {mode!r}")
        h, w = draft.image.shape[:2]
        x, y = float(min(max(x, 0), w - 1)), float(min(max(y, 0), h - 1))
        if draft.mask_source == "upload":
            draft.clear_prompts()
        if mode == BOX:
            draft.points = []
            if draft.corner is None:
                draft.corner, draft.box, draft.mask, draft.sam2_iou = (x, y), None, None, None
                return draft
            (cx, cy), draft.corner = draft.corner, None
            box = (min(cx, x), min(cy, y), max(cx, x) + 1, max(cy, y) + 1)
            if box[2] - box[0] < 3 or box[3] - box[1] < 3:
                raise InputError("the box is too small: click two opposite corners of the object")
            draft.box = box
        else:
            draft.box, draft.corner = None, None
            draft.points.append((x, y, 1 if mode == POSITIVE else 0))
        return self._remake_mask(draft)

    def undo(self, draft: Draft) -> Draft:
        """Drop the last click (or the box) and remake the mask."""
        if draft.corner is not None:
            draft.corner = None
        elif draft.box is not None:
            draft.box = None
        elif draft.points:
            draft.points.pop()
        elif draft.mask_source == "upload":
            draft.clear_prompts()
        return self._remake_mask(draft)

    def set_mask(self, draft: Draft, mask) -> Draft:
        """Use an uploaded mask (path, PIL image or array at the image's size; non-zero = object)."""
        if draft.image is None:
            raise InputError("upload a reference image before its mask")
        arr = load_mask(mask, draft.image.shape[:2], name="uploaded mask")
        if not arr.any():
            raise InputError("the uploaded mask is empty: it needs non-zero pixels on the object")
        draft.clear_prompts()
        draft.mask, draft.mask_source = arr, "upload"
        return draft

    def _remake_mask(self, draft: Draft) -> Draft:
        draft.mask, draft.sam2_iou = None, None
        draft.mask_source = None
        if draft.box is None and not any(p[2] == 1 for p in draft.points):
            return draft  # nothing to prompt with (yet): no positive click, no box
        prompt = {"box": draft.box} if draft.box is not None else {"points": draft.points}
        with self.lock:
            mask, iou = self._prompt_sam2(draft.image, **prompt)
        draft.mask, draft.sam2_iou = mask, iou
        draft.mask_source = "box" if draft.box is not None else "points"
        return draft

    def _prompt_sam2(self, image: np.ndarray, **prompt) -> tuple[np.ndarray, float | None]:
        """The proposer's mask for the prompt, re-using the image embedding across clicks on the same image."""
        try:
            from ..prompts import mask_from_prompt
        except ImportError:  # pragma: no cover - the library's public path, without the embedding cache
            return self.seg.reference_mask(image, **prompt), None
        sam2 = self.seg.proposer
        if self._cached_sam2 is None or self._cached_sam2._sam2 is not sam2:
            self._cached_sam2 = _CachedEncoder(sam2)
        name = "reference"
        return mask_from_prompt(self._cached_sam2, image, name=name, **prompt)

    # -- references ------------------------------------------------------------------------------------
    def add_reference(self, draft: Draft, category: str, negative: bool = False) -> int:
        """Encode the draft's mask as a reference of ``category``; returns its memory row.

        The draft keeps its image and loses its prompts, ready for the next instance.
        """
        category = (category or "").strip()
        if not category:
            raise InputError("name the category before adding the reference")
        if draft.image is None:
            raise InputError("upload a reference image first")
        if draft.mask is None or not draft.mask.any():
            raise InputError("no mask yet: click on the object, draw a box or upload a mask")
        source: dict[str, Any] = {"image": draft.name, "prompt": draft.mask_source or "mask"}
        if draft.box is not None:
            source["prompt_value"] = [round(v, 1) for v in draft.box]
        elif draft.points:
            source["prompt_value"] = [[round(x, 1), round(y, 1), int(lab)] for x, y, lab in draft.points]
        if draft.sam2_iou is not None:
            source["sam2_iou"] = round(float(draft.sam2_iou), 4)
        row = self._add(draft.image, draft.mask, category, bool(negative), source, crop_box=draft.box)
        draft.clear_prompts()
        return row

    def _add(self, image: np.ndarray, mask: np.ndarray, category: str, negative: bool, source: dict,
             crop_box=None) -> int:
        """Encode one reference into the memory with its thumbnail; returns its memory row."""
        with self.lock:
            self._sync_thumbs()
            row = self.seg.add_reference(image, mask, category=category, crop_box=crop_box, negative=negative,
                                         source=source)
            self._thumbs.append(thumbnail(image, mask, self._color(category), self.thumb_size))
            self._changed()
        return row

    def remove_category(self, name: str) -> int:
        """Drop a category and all its references; returns how many were removed."""
        with self.lock:
            self._sync_thumbs()
            if name not in self.memory.category_names:
                raise InputError(f"no category {name!r} in the memory")
            keep = [i for i, r in enumerate(self.memory.references) if r["category"] != name]
            removed = self.seg.remove_category(name)
            self._thumbs = [self._thumbs[i] for i in keep]
            self._changed()
            return removed

    def remove_reference(self, row: int) -> str:
        """Drop one reference (memory row); a category left without references goes too. Returns its caption."""
        with self.lock:
            self._sync_thumbs()
            if not 0 <= row < len(self.memory):
                raise InputError("select a reference in the gallery first")
            keep = [i for i in range(len(self.memory)) if i != row]
            category = self.memory.remove_reference(row)
            self._thumbs = [self._thumbs[i] for i in keep]
            self._changed()
            return category

    # -- memory files ----------------------------------------------------------------------------------
    def save_memory(self, path: str | os.PathLike | None = None) -> Path:
        with self.lock:
            if not len(self.memory):
                raise InputError("the memory is empty: add references before saving it")
            return self.seg.save_memory(path or self.workdir / "memory.safetensors")

    def load_memory(self, path: str | os.PathLike) -> int:
        """Replace the memory by a saved one (a ``.safetensors`` memory file); returns its reference count."""
        with self.lock:
            self.seg.load_memory(path)
            self._thumbs = []
            self._sync_thumbs()
            self._changed()
            return len(self.memory)

    def _changed(self) -> None:
        """After a change of the memory: mark the shown results stale, autosave (a failed save is logged: the
        change itself is kept)."""
        self.version += 1
        if self.autosave_path is None:
            return
        try:
            if len(self.memory):
                self.seg.save_memory(self.autosave_path)
            else:
                self.autosave_path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not autosave the memory to %s: %s", self.autosave_path, exc)

    def restore(self) -> int:
        """Load the autosaved memory, if there is one; returns its reference count (0: nothing restored)."""
        if self.autosave_path is None or not self.autosave_path.exists():
            return 0
        return self.load_memory(self.autosave_path)

    def set_aside_autosave(self) -> bool:
        """Start fresh: move the autosaved memory (if any) to ``previous_path``; returns whether there was one."""
        if self.autosave_path is None or not self.autosave_path.exists():
            return False
        os.replace(self.autosave_path, self.previous_path)
        return True

    # -- segmentation ----------------------------------------------------------------------------------
    @property
    def stale(self) -> bool:
        """True when the memory changed since the shown results were computed."""
        return any(r.memory_version != self.version for r in self.results)

    def segment(self, images: Sequence, progress: Progress | None = None) -> list[str]:
        """Segment ``images`` (paths, or ``(name, image)`` pairs) with the memory; replaces the last run.

        Returns one message per image that could not be read (those are skipped). Raises when the memory
        has no usable references, or when no image could be segmented.
        """
        items = [(Path(im).name, im) if isinstance(im, (str, os.PathLike)) else tuple(im) for im in images]
        if not items:
            raise InputError("upload one or more target images first")
        with self.lock:
            if not len(self.memory):
                raise InputError("no references yet: add at least one reference before segmenting")
            self.memory.prototypes(self.seg.config.prototype)  # fails early on a category without references
            results, errors, taken = [], [], set()
            for k, (name, source) in enumerate(items):
                if progress:
                    progress(k / len(items), f"segmenting {name} ({k + 1}/{len(items)})")
                try:
                    img = load_image(source)
                except InputError as exc:
                    errors.append(f"{name}: {exc}")
                    continue
                dets = self.seg.predict(img)
                name = _unique(str(name), taken)
                taken.add(name)
                path = Path(source) if isinstance(source, (str, os.PathLike)) else None
                results.append(Result(name, img, dets, self.version, path=path))
            if progress:
                progress(1.0, "done")
            if not results:
                raise InputError("no image could be segmented: " + "; ".join(errors))
            self.results = results
            return errors

    def overlays(self, min_score: float = 0.0) -> list[tuple[Image.Image, str]]:
        """Each result as ``(overlay picture, caption)``, keeping detections scoring above ``min_score``."""
        out = []
        for r in self.results:
            n = int((r.detections.scores > min_score).sum())
            out.append((overlay(r.image, r.detections, min_score=min_score),
                        f"{r.name}: {n}/{len(r.detections)} shown"))
        return out

    def table(self, min_score: float = 0.0) -> list[list]:
        """Rows ``image, category, score, x0, y0, x1, y1`` of the detections above ``min_score``."""
        rows = []
        for r in self.results:
            d = r.detections.filter(min_score)
            for name, score, box in zip(d.names, d.scores, d.boxes):
                rows.append([r.name, name, round(float(score), 3), *(int(round(float(v))) for v in box)])
        return rows

    def counts(self, min_score: float = 0.0) -> tuple[int, int]:
        """``(shown, total)`` detections over all results."""
        total = sum(len(r.detections) for r in self.results)
        return sum(int((r.detections.scores > min_score).sum()) for r in self.results), total

    def coco_results(self, min_score: float = 0.0) -> list[dict]:
        """COCO result dicts of every image (``image_id`` 1, 2, ... in upload order), with ``file_name`` and
        ``category_name`` added (COCO tools ignore extra keys)."""
        out = []
        for image_id, r in enumerate(self.results, 1):
            d = r.detections.filter(min_score)
            for res, name in zip(d.to_coco(image_id), d.names):
                res.update(file_name=r.name, category_name=name)
                out.append(res)
        return out

    def export_results(self, min_score: float = 0.0, path: str | os.PathLike | None = None) -> Path:
        """Write the COCO results JSON of the last run (detections above ``min_score``)."""
        self._need_results()
        path = Path(path or self.workdir / "results.json")
        path.write_text(json.dumps(self.coco_results(min_score)))
        return path

    def export_masks(self, min_score: float = 0.0, path: str | os.PathLike | None = None) -> Path:
        """A zip of ``masks/<image>.png`` (16-bit instance maps: 0 background, i = i-th detection of that
        image in ``results.json``) and ``results.json``."""
        self._need_results()
        path = Path(path or self.workdir / "masks.zip")
        stems: set[str] = set()
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for r in self.results:
                stem = _unique(_safe_stem(r.name), stems)
                stems.add(stem)
                buf = _png_bytes(instance_map(r.detections.filter(min_score)))
                zf.writestr(f"masks/{stem}.png", buf)
            zf.writestr("results.json", json.dumps(self.coco_results(min_score)))
        return path

    # -- review ----------------------------------------------------------------------------------------
    def detection_at(self, index: int, x: float, y: float, min_score: float = 0.0) -> int | None:
        """The shown detection of result ``index`` under pixel ``(x, y)`` (the best-scoring one), or None.

        Shown: scoring above ``min_score`` and not rejected.
        """
        r = self._result(index)
        h, w = r.image.shape[:2]
        col, row = int(min(max(x, 0), w - 1)), int(min(max(y, 0), h - 1))
        d = r.detections
        hits = [i for i in range(len(d)) if d.scores[i] > min_score and r.decisions.get(i) != "rejected"
                and d.masks[i][row, col]]
        return max(hits, key=lambda i: d.scores[i]) if hits else None

    def review(self, index: int, x: float, y: float, action: str, category: str = "",
               min_score: float = 0.0) -> str:
        """Review result ``index`` with one click at pixel ``(x, y)``; returns what was done, for the page.

        ``action``: :data:`REJECT` the detection under the click (its mask becomes a negative reference of its
        category, the memory's negative rule then lowers look-alikes); :data:`ACCEPT` it (its mask becomes a
        positive reference); :data:`ADD` a missed object at the click (SAM2's mask from the click, a positive
        reference of ``category``, and an object of the reviewed image). The memory changes at once: press
        re-segment (:meth:`resegment`) to see the effect.
        """
        if action not in REVIEW_ACTIONS:
            raise InputError(f"unknown review action {action!r}; choose from {', '.join(REVIEW_ACTIONS)}")
        r = self._result(index)
        source = {"image": r.name, "prompt_value": [round(float(x), 1), round(float(y), 1)]}
        if action == ADD:
            category = (category or "").strip()
            if not category:
                raise InputError("name the category of the missed object before clicking on it")
            with self.lock:
                mask, iou = self._prompt_sam2(r.image, points=[(float(x), float(y), 1)])
            if not mask.any():
                raise InputError("SAM2 found no object at that click: click inside the object")
            self._add(r.image, mask, category, False, {**source, "prompt": "review-add",
                                                       "sam2_iou": None if iou is None else round(float(iou), 4)})
            r.added.append(Added(category, mask, (float(x), float(y))))
            return f"added a {category!r} at ({x:.0f}, {y:.0f}) ({int(mask.sum())} px) as a reference"
        i = self.detection_at(index, x, y, min_score)
        if i is None:
            raise InputError("no shown detection under that click: click inside a coloured mask (or choose "
                             f"'{ADD}' for an object the method missed)")
        d = r.detections
        category = d.names[i]
        negative = action == REJECT
        self._add(r.image, d.masks[i], category, negative,
                  {**source, "prompt": "review-reject" if negative else "review-accept", "score": round(float(d.scores[i]), 4)},
                  crop_box=tuple(float(v) for v in d.boxes[i]))
        r.decisions[i] = "rejected" if negative else "accepted"
        kind = "a negative" if negative else "a positive"
        return f"{'rejected' if negative else 'accepted'} {category} ({float(d.scores[i]):.2f}): now {kind} reference of {category!r}"

    def resegment(self, progress: Progress | None = None, match_iou: float = 0.5) -> list[dict]:
        """Segment the shown images again with the updated memory and record what changed per image.

        A new detection matches an old one of the same category when their masks overlap with IoU >=
        ``match_iou``; it keeps that one's decision (accepted stays accepted, rejected stays hidden). Unmatched
        new detections are ``added``, unmatched old ones ``removed`` (kept as masks, to be drawn). The
        reviewer's added objects stay. Returns ``[{"image", "added": n, "removed": n}, ...]``.
        """
        self._need_results()
        with self.lock:
            self.memory.prototypes(self.seg.config.prototype)
            summary = []
            for k, r in enumerate(self.results):
                if progress:
                    progress(k / len(self.results), f"re-segmenting {r.name} ({k + 1}/{len(self.results)})")
                new = self.seg.predict(r.image)
                old = r.detections
                matches = _match(old, new, match_iou)
                decisions = {j: r.decisions[i] for i, j in matches.items() if i in r.decisions}
                added = [j for j in range(len(new)) if j not in set(matches.values())]
                removed = [old.masks[i] for i in range(len(old)) if i not in matches and r.decisions.get(i) != "rejected"]
                r.detections, r.decisions, r.memory_version = new, decisions, self.version
                r.change = {"added": added, "removed": removed}
                summary.append({"image": r.name, "added": len(added), "removed": len(removed)})
            if progress:
                progress(1.0, "done")
            return summary

    def review_view(self, index: int, min_score: float = 0.0) -> np.ndarray:
        """Result ``index`` for reviewing: shown detections in their colours (accepted ones outlined white),
        the reviewer's added objects outlined green, and what the last re-segmentation changed: new detections
        outlined yellow, removed ones red."""
        r = self._result(index)
        d = r.detections
        keep = np.array([d.scores[i] > min_score and r.decisions.get(i) != "rejected" for i in range(len(d))], bool)
        pic = np.asarray(overlay(r.image, d[np.flatnonzero(keep)] if len(d) else d, min_score=min_score)).copy()
        outlines = [(d.masks[i], (255, 255, 255)) for i, v in r.decisions.items() if v == "accepted" and keep[i]]
        outlines += [(a.mask, _POS_COLOR) for a in r.added]
        if r.change:
            outlines += [(d.masks[j], _BOX_COLOR) for j in r.change["added"] if keep[j]]
            outlines += [(m, _NEG_COLOR) for m in r.change["removed"]]
        for mask, color in outlines:
            pic[_edge(mask)] = color
        return pic

    def review_summary(self, min_score: float = 0.0) -> str:
        """Markdown: per image, kept / accepted / rejected / added, and the last re-segmentation's changes."""
        if not self.results:
            return "No results yet: segment some images first."
        lines = []
        for r in self.results:
            shown = sum(1 for i in range(len(r.detections)) if r.detections.scores[i] > min_score
                        and r.decisions.get(i) != "rejected")
            acc = sum(v == "accepted" for v in r.decisions.values())
            rej = sum(v == "rejected" for v in r.decisions.values())
            text = f"**{r.name}**: {shown} kept ({acc} accepted), {rej} rejected, {len(r.added)} added"
            if r.change is not None:
                text += f"; last re-segment: +{len(r.change['added'])} new, -{len(r.change['removed'])} gone"
            lines.append(text)
        return "  \n".join(lines)

    def reviewed_images(self, min_score: float = 0.0) -> list:
        """The reviewed results as :class:`~no_time_to_train.formats.LabeledImage`: shown detections (scoring
        above ``min_score``, not rejected; accepted ones marked) and the added objects (no score)."""
        from ..formats import Instance, LabeledImage
        from ..types import encode_rle

        self._need_results()
        out, taken = [], set()
        for r in self.results:
            d = r.detections
            instances = [Instance(d.names[i], encode_rle(d.masks[i]), float(d.scores[i]), r.decisions.get(i))
                         for i in range(len(d)) if d.scores[i] > min_score and r.decisions.get(i) != "rejected"]
            instances += [Instance(a.category, encode_rle(a.mask), None, "added") for a in r.added]
            name = _unique(_safe_stem(r.name) + (r.path.suffix.lower() if r.path is not None else ".png"), taken)
            taken.add(name)
            h, w = r.image.shape[:2]
            out.append(LabeledImage(name, w, h, instances, path=r.path, pixels=None if r.path else r.image,
                                    reviewed=True))
        return out

    def export_dataset(self, formats: Sequence[str], min_score: float = 0.0, val_fraction: float = 0.0,
                       mask_format: str = "polygon") -> Path:
        """Write the reviewed images as a dataset (:func:`~no_time_to_train.formats.write_dataset`) and zip it.

        Images are copied in (the zip must hold them). Returns the zip's path (``workdir/dataset.zip``).
        """
        from ..formats import WriteOptions, assign_splits, write_dataset

        images = self.reviewed_images(min_score)
        assign_splits(images, val_fraction)
        folder = self.workdir / "dataset"
        categories = [{"id": c["id"], "name": c["name"]} for c in self.memory.categories]
        for name in {i.category for im in images for i in im.instances} - {c["name"] for c in categories}:
            categories.append({"id": max([c["id"] for c in categories], default=-1) + 1, "name": name})
        write_dataset(images, categories, folder, formats, WriteOptions(mask_format=mask_format, copy_images=True))
        path = self.workdir / "dataset.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.rglob("*")):
                if f.is_file():
                    zf.write(f, f.relative_to(folder).as_posix())
        return path

    def _result(self, index: int) -> Result:
        self._need_results()
        if not 0 <= index < len(self.results):
            raise InputError("select a segmented image first")
        return self.results[index]

    def _need_results(self) -> None:
        if not self.results:
            raise InputError("nothing to export yet: segment some images first")

    # -- video ---------------------------------------------------------------------------------------------
    def track_video(self, source, progress: Progress | None = None, config=None,
                   max_frames: int = 900) -> VideoRun:
        """Track the memory's categories through a short clip (a video file, or anything ``open_video`` takes) with
        the workspace's segmenter; writes ``workdir/video/<name>.mp4`` (overlay) and ``<name>.json`` (results).

        Only the first ``max_frames`` frames are tracked (the summary says so when the clip is longer).
        """
        from itertools import islice

        from ..video.config import TrackConfig
        from ..video.outputs import VideoResultWriter
        from ..video.source import FrameSource, open_video
        from ..video.track import VideoTracker

        ws = self
        with ws.lock:
            if not len(ws.memory):
                raise InputError("no references yet: add at least one reference before tracking")
            ws.memory.prototypes(ws.seg.config.prototype)
            video = open_video(source)
            name = _safe_stem(video.name) or "clip"
            total = video.length
            tracker = VideoTracker(ws.seg, config or TrackConfig())
            writer = VideoResultWriter(ws.workdir / "video", name, 1, ws.memory.category_names, ws.memory.category_ids,
                                       visualize=True, fps=video.fps)
            frames = FrameSource(video.name, lambda: islice(iter(video), max_frames), fps=video.fps)
            n = 0
            try:
                for result in tracker.run(frames):
                    writer.add(result)
                    n += 1
                    if progress:
                        progress(min(n / min(total or max_frames, max_frames), 1.0), f"tracking frame {n}")
            except BaseException:
                writer.abort()
                raise
            path = writer.finish(tracker.tracks())
            tracks = tracker.tracks()
            shown = [t for t in tracks if t["first"] is not None]
            summary = f"{len(shown)} track(s) in {n} frame(s)"
            if total and total > max_frames:
                summary += f" (the first {max_frames} of {total} frames; track longer videos with `nttt track`)"
            return VideoRun(ws.workdir / "video" / f"{name}.mp4", path, summary, n, tracks)


@dataclass
class VideoRun:
    """A tracked clip: the overlay ``mp4``, the YouTube-VIS-style ``results`` JSON, and a one-line ``summary``."""

    mp4: Path
    results: Path
    summary: str
    frames: int
    tracks: list[dict]


def _png_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def user_message(exc: BaseException) -> str:
    """The text to show in the page for an error."""
    if isinstance(exc, NtttError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _match(old: Detections, new: Detections, min_iou: float) -> dict[int, int]:
    """Old detection index -> new detection index, greedily by mask IoU (same category, IoU >= ``min_iou``)."""
    if not len(old) or not len(new):
        return {}
    a = old.masks.reshape(len(old), -1).astype(np.float32)
    b = new.masks.reshape(len(new), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    same = np.array(old.names)[:, None] == np.array(new.names)[None, :]
    iou = np.where(same, iou, 0.0)
    out: dict[int, int] = {}
    for flat_index in np.argsort(-iou, axis=None):
        i, j = np.unravel_index(flat_index, iou.shape)
        if iou[i, j] < min_iou:
            break
        if i not in out and j not in out.values():
            out[int(i)] = int(j)
    return out


def _edge(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The ``(H, W)`` bool band of ``width`` pixels inside the boundary of ``mask``."""
    inner = mask.copy()
    for _ in range(width):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return mask & ~inner
