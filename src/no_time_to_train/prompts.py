"""Masks from boxes and clicks: the proposer prompted on a reference image (the references' own mask maker).

The original converts boxes to masks with a second model (SAM v1 ViT-H, single-mask output). Here the
proposer already loaded (SAM2 by default) does it. Frames: boxes and points are given in original image
pixels and mapped to the SAM frame (the image squashed to ``S``²); the chosen low-res mask is upsampled
straight back to ``(H, W)``.
Dataset boxes whose mask comes out empty become the filled box (:func:`mask_from_box`), as in the original.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .errors import InputError
from .matching import select_best_token, upsample_masks
from .models.proposer import Proposer
from .transforms import squash_for_sam


def check_box(box: Sequence[float], hw: tuple[int, int], name: str) -> tuple[float, float, float, float]:
    """Validate an ``(x0, y0, x1, y1)`` pixel box against an ``(H, W)`` image."""
    if len(box) != 4:
        raise InputError(f"{name}: a box is (x0, y0, x1, y1), got {tuple(box)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = hw
    if not (x1 > x0 and y1 > y0):
        raise InputError(f"{name}: the box {tuple(box)} has no area (need x1 > x0 and y1 > y0)")
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise InputError(f"{name}: the box {tuple(box)} lies outside the {w}x{h} image")
    return x0, y0, x1, y1


def check_points(points: Sequence[Sequence[float]], hw: tuple[int, int], name: str) -> np.ndarray:
    """Validate clicks ``[(x, y, label), ...]`` (label 1 positive, 0 negative) -> ``(P, 3)`` float array."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3 or len(arr) == 0:
        raise InputError(f"{name}: points are [(x, y, label), ...] with label 1 (object) or 0 (background)")
    if not set(arr[:, 2].tolist()) <= {0.0, 1.0}:
        raise InputError(f"{name}: point labels must be 1 (object) or 0 (background), got {sorted(set(arr[:, 2]))}")
    if not (arr[:, 2] == 1).any():
        raise InputError(f"{name}: at least one positive point (label 1) is needed")
    h, w = hw
    outside = (arr[:, 0] < 0) | (arr[:, 0] >= w) | (arr[:, 1] < 0) | (arr[:, 1] >= h)
    if outside.any():
        raise InputError(f"{name}: point {tuple(arr[outside][0][:2])} is outside the {w}x{h} image")
    return arr


def box_rectangle_mask(box: Sequence[float], hw: tuple[int, int]) -> np.ndarray:
    """The filled ``(x0, y0, x1, y1)`` pixel box as an ``(H, W)`` bool mask, clipped to the image.

    The pixels are those pycocotools rasterises for the box polygon ``[x0, y0, x1, y0, x1, y1, x0, y1]``:
    the authors write that polygon when their box-to-mask step finds no object, and their memory fill reads
    it back with ``annToMask``. An integer box ``(x, y, x + w, y + h)`` covers exactly ``w x h`` pixels.
    """
    from pycocotools import mask as mask_utils

    h, w = hw
    x0, y0, x1, y1 = (float(v) for v in box)
    rle = mask_utils.frPyObjects([[x0, y0, x1, y0, x1, y1, x0, y1]], h, w)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


@torch.inference_mode()
def _prompt_mask(proposer: Proposer, image: np.ndarray, box, points, name: str) -> tuple[np.ndarray, float]:
    """The proposer's ``(H, W)`` bool mask (possibly empty) and predicted IoU; see :func:`mask_from_prompt`."""
    if (box is None) == (points is None):
        raise InputError(f"{name}: give exactly one of box or points")
    hw = image.shape[:2]
    size = proposer.image_size
    sx, sy = size / hw[1], size / hw[0]
    emb = proposer.encode(squash_for_sam(image, size), add_no_memory_embedding=True)
    if box is not None:
        x0, y0, x1, y1 = check_box(box, hw, name)
        boxes = torch.tensor([[x0 * sx, y0 * sy, x1 * sx, y1 * sy]], dtype=torch.float32)
        logits, iou = proposer.decode(emb, boxes=boxes, multimask=False)
        logits, iou = logits[:, 0], iou[:, 0]
    else:
        arr = check_points(points, hw, name)
        pts = torch.tensor(arr[:, :2] * [sx, sy], dtype=torch.float32)[None]
        labels = torch.tensor(arr[:, 2], dtype=torch.int32)[None]
        multimask = len(arr) == 1
        logits, iou = proposer.decode(emb, pts, labels, multimask=multimask)
        if multimask:
            logits, iou = select_best_token(logits.float(), iou.float())
        else:
            logits, iou = logits[:, 0], iou[:, 0]
    return upsample_masks(logits.float(), hw)[0].cpu().numpy(), float(iou[0])


def mask_from_prompt(
    proposer: Proposer,
    image: np.ndarray,
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    name: str = "reference",
) -> tuple[np.ndarray, float]:
    """The proposer's mask for a box or clicks on ``image (H, W, 3) uint8``: ``(H, W)`` bool and its
    predicted IoU.

    A box uses the single-mask output (as the original's box-to-mask step). Clicks: one click takes the
    best of the three multimask outputs by predicted IoU (a single click is ambiguous); several clicks use
    the single-mask output. The stock SAM2 image predictor adds ``no_memory_embedding``; so does this step
    (for SAM2-family proposers; the others have no such embedding).
    An empty mask is an InputError (an interactive prompt should be redone; datasets use :func:`mask_from_box`).
    """
    mask, iou = _prompt_mask(proposer, image, box, points, name)
    if not mask.any():
        raise InputError(f"{name}: {proposer.name} found no object for this prompt; give a mask or a tighter box")
    return mask, iou


def mask_from_box(proposer: Proposer, image: np.ndarray, box: Sequence[float],
                  name: str = "annotation") -> tuple[np.ndarray, bool]:
    """A dataset box ``(x0, y0, x1, y1)`` (original pixels) made a mask: ``(H, W)`` bool and ``fell_back``.

    The proposer's single-mask output for the box; where that mask is empty, the filled box rectangle clipped to the
    image (:func:`box_rectangle_mask`) with ``fell_back = True``, as the authors' box-to-mask step does (it
    also falls back when its mask has only degenerate contours; a non-empty mask is kept here).
    Callers count the fallbacks and say how many there were.
    """
    mask, _ = _prompt_mask(proposer, image, box, None, name)
    if mask.any():
        return mask, False
    return box_rectangle_mask(box, image.shape[:2]), True
