"""Resizes, crops and normalisation, exactly as the method specifies (METHOD.md 3.1, 5.1).

Frames: an *original* image is ``(H, W)`` pixels; the *SAM frame* is the image squashed to
``sam_image_size``² (1024²); the *encoder frame* is the encoder's input side ``S``² (518² for the paper's
DINOv2).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3) uint8`` -> ``(3, H, W) float32`` in [0, 1]."""
    arr = np.ascontiguousarray(image)
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Per-channel normalisation of ``(..., 3, h, w)`` values in [0, 1]; ImageNet statistics by default (SAM,
    SAM2, DINOv2 and DINOv3's LVD-1689M models use them)."""
    mean = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    std = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - mean) / std


def squash_for_sam(image: np.ndarray, size: int = 1024) -> torch.Tensor:
    """Target image -> ``(3, size, size)`` in [0, 1]: PIL bicubic (antialiased) resize, aspect not kept."""
    pil = Image.fromarray(image).resize((size, size), Image.BICUBIC)
    return to_tensor(np.asarray(pil))


def resize_for_encoder(x: torch.Tensor, size: int = 518) -> torch.Tensor:
    """``(..., 3, h, w)`` -> ``(..., 3, size, size)``: torch bicubic, align_corners=False, no antialias."""
    squeeze = x.dim() == 3
    x = x.unsqueeze(0) if squeeze else x
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return x.squeeze(0) if squeeze else x


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight box ``(x0, y0, x1, y1)`` of a non-empty ``(H, W)`` mask, with exclusive ``x1, y1``."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def context_crop_window(
    box: tuple[float, float, float, float], image_hw: tuple[int, int], context_ratio: float = 0.2
) -> tuple[int, int, int, int]:
    """Square window around ``box`` (``x0, y0, x1, y1`` pixels) with context, clipped to the image.

    Side ``s = max(w, h) * (1 + context_ratio)`` centred on the box midpoint; bounds are truncated with
    ``int()`` as in the paper and then clipped, so the window may be non-square at borders.
    Returns ``(left, top, right, bottom)`` with exclusive right/bottom.
    """
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    side = max(x1 - x0, y1 - y0) * (1.0 + context_ratio)
    h, w = image_hw
    left = min(max(int(cx - side / 2), 0), w)
    right = min(max(int(cx + side / 2), 0), w)
    top = min(max(int(cy - side / 2), 0), h)
    bottom = min(max(int(cy + side / 2), 0), h)
    return left, top, right, bottom


def crop_reference(
    image: torch.Tensor, mask: torch.Tensor, window: tuple[int, int, int, int], size: int = 518
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop ``image (3, H, W)`` and ``mask (H, W)`` to ``window`` and resize both to ``size``².

    Image: bicubic, mask: bilinear (align_corners=False, no antialias), so the mask becomes soft.
    Returns ``(3, size, size)`` image in [0, 1] (not clamped) and ``(size, size)`` soft mask.
    """
    left, top, right, bottom = window
    img = image[:, top:bottom, left:right].unsqueeze(0)
    msk = mask[top:bottom, left:right].to(image.dtype)[None, None]
    img = F.interpolate(img, size=(size, size), mode="bicubic", align_corners=False)
    msk = F.interpolate(msk, size=(size, size), mode="bilinear", align_corners=False)
    return img[0], msk[0, 0]


def patch_mask_weights(mask: torch.Tensor, grid: int, mode: str = "top-left") -> torch.Tensor:
    """Per-patch weights from a soft ``(S, S)`` mask, ``(grid*grid,)`` in row-major patch order.

    ``"top-left"``: PyTorch nearest resize, i.e. the value at each patch's top-left pixel ``(p*r, p*c)``
    (the paper); ``"area"``: the mean over each patch.
    """
    m = mask[None, None]
    if mode == "top-left":
        out = F.interpolate(m, size=(grid, grid), mode="nearest")
    else:
        out = F.adaptive_avg_pool2d(m, (grid, grid))
    return out.flatten()
