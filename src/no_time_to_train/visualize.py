"""Pictures of detections: instance-index mask PNGs and colour overlays with labels and scores."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .types import Detections


def category_color(label: int) -> tuple[int, int, int]:
    """A stable, well-spread colour per category index (golden-ratio hues)."""
    h = (label * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def instance_map(dets: Detections) -> np.ndarray:
    """``(H, W) uint16``: 0 = background, ``i + 1`` = detection ``i`` (higher scores drawn on top)."""
    out = np.zeros(dets.image_size, np.uint16)
    for i in np.argsort(dets.scores, kind="stable"):
        out[dets.masks[i]] = i + 1
    return out


def save_instance_png(dets: Detections, path: str | Path) -> Path:
    path = Path(path)
    Image.fromarray(instance_map(dets)).save(path)
    return path


def overlay(image: np.ndarray, dets: Detections, alpha: float = 0.45, min_score: float = 0.0) -> Image.Image:
    """The image with each detection's mask tinted in its category colour, its box and ``name score``.

    Tracked detections (``dets.track_ids`` set) are coloured per track instead and labelled ``name #id score``.
    """
    canvas = image.astype(np.float32).copy()
    keep = [i for i in np.argsort(dets.scores, kind="stable") if dets.scores[i] > min_score]
    tracks = dets.track_ids

    def colour(i: int) -> tuple[int, int, int]:
        return category_color(int(dets.labels[i]) if tracks is None else int(tracks[i]))

    for i in keep:
        color = np.array(colour(i), np.float32)
        m = dets.masks[i]
        canvas[m] = canvas[m] * (1 - alpha) + color * alpha
    pil = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for i in keep:
        color = colour(i)
        x0, y0, x1, y1 = (float(v) for v in dets.boxes[i])
        if x1 > x0 and y1 > y0:
            draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=2)
        name = dets.category_names[int(dets.labels[i])]
        text = f"{name} {dets.scores[i]:.2f}" if tracks is None else f"{name} #{int(tracks[i])} {dets.scores[i]:.2f}"
        tx, ty = x0 + 2, max(0.0, y0 - 12)
        box = draw.textbbox((tx, ty), text)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((tx, ty), text, fill=color)
    return pil
