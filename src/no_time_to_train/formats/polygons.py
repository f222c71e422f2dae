"""Mask -> polygon conversion, keeping holes and multi-part objects, with OpenCV's contour tracer.

Library: ``cv2.findContours`` (opencv-python-headless, the ``label`` extra) with ``RETR_CCOMP``, which returns a
two-level hierarchy, outer boundaries and the holes inside each, exactly what instance masks need. It is the
tracer the labelling ecosystem already uses (Ultralytics rasterises labels with OpenCV's ``fillPoly``), it is
maintained, fast (C++) and ships wheels for every platform without pulling any GUI library.

Frame: polygon vertices are in the continuous pixel frame of the image, where pixel ``(i, j)`` covers
``[j, j + 1) x [i, i + 1)``: each vertex is the centre of a boundary pixel (contour index + 0.5). The same
points serve every format (COCO, YOLO after normalising, Label Studio in percent, CVAT).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


def _cv2():
    try:
        import cv2
    except ImportError as exc:
        raise InputError(f"polygon output needs OpenCV ({exc}); install it with: "
                         "pip install \"no-time-to-train[label]\" (or use --mask-format rle where the format "
                         "allows it)") from exc
    return cv2


@dataclass
class Part:
    """One connected part of a mask: its outer ring ``(K, 2)`` float ``x, y`` and the rings of its holes."""

    outer: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _oriented(ring: np.ndarray, positive: bool) -> np.ndarray:
    return ring if (_signed_area(ring) >= 0) == positive else ring[::-1].copy()


def mask_to_parts(mask: np.ndarray, tolerance: float = 0.0) -> list[Part]:
    """The parts of an ``(H, W)`` bool mask, largest first.

    tolerance: maximum distance in pixels between the traced boundary and the simplified polygon
    (``cv2.approxPolyDP``); 0 keeps every corner of the pixel boundary (straight runs are merged).
    Rings with fewer than 3 vertices (single pixels, one-pixel lines, too small to be a polygon) are dropped;
    outer rings turn one way and holes the other (nonzero and even-odd fill rules then agree).
    """
    cv2 = _cv2()
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return []
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    hierarchy = hierarchy.reshape(-1, 4)

    def ring(i: int) -> np.ndarray | None:
        c = contours[i]
        if tolerance > 0:
            c = cv2.approxPolyDP(c, float(tolerance), True)
        pts = c.reshape(-1, 2).astype(np.float64) + 0.5
        return pts if len(pts) >= 3 else None

    parts = []
    for i, (_, _, child, parent) in enumerate(hierarchy):
        if parent != -1:
            continue
        outer = ring(i)
        if outer is None:
            continue
        holes = []
        while child != -1:
            h = ring(child)
            if h is not None:
                holes.append(_oriented(h, positive=False))
            child = hierarchy[child][0]
        parts.append(Part(_oriented(outer, positive=True), holes))
    parts.sort(key=lambda p: -abs(_signed_area(p.outer)))
    return parts


def _splice(ring: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``ring`` with ``other`` joined in by a zero-width bridge between their closest vertices.

    The result visits ``ring`` up to vertex i, walks all of ``other`` from vertex j back to j, and returns
    to vertex i: the bridge is traversed once each way, so it adds no area.
    """
    d = ((ring[:, None, :] - other[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(d.argmin()), d.shape)
    return np.concatenate([ring[: i + 1], np.roll(other, -j, axis=0), other[j : j + 1], ring[i:]])


def single_ring(parts: list[Part]) -> np.ndarray | None:
    """All parts and holes as one ring ``(K, 2)`` (for formats with one polygon per object and no holes).

    Holes are bridged into their part (turning the other way, they stay empty under either fill rule) and
    parts into the largest one. None when there are no parts.
    """
    if not parts:
        return None
    rings = []
    for part in parts:
        r = part.outer
        for hole in part.holes:
            r = _splice(r, hole)
        rings.append(r)
    out = rings[0]
    for r in rings[1:]:
        out = _splice(out, r)
    return out


def flat(ring: np.ndarray, ndigits: int = 2) -> list[float]:
    """``[x1, y1, x2, y2, ...]`` rounded to ``ndigits`` (COCO / CVAT polygon lists)."""
    return [round(float(v), ndigits) for v in ring.reshape(-1)]

