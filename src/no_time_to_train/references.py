"""Reference encoding: crop with context, patch tokens, soft-mask-weighted mean (METHOD.md 3-4).

For reference k with soft patch weights ``m (N,)`` and patch tokens ``F (N, D)``:
``v_k = sum_p m_p F_p / sum_p m_p`` (one ``(D,)`` vector; no dense feature map is kept).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from .config import MethodConfig
from .errors import InputError
from .models.encoder import PatchEncoder, input_size
from .transforms import context_crop_window, crop_reference, mask_box, patch_mask_weights, to_tensor

log = logging.getLogger(__name__)


@dataclass
class ReferenceCrop:
    """A reference ready for the encoder.

    image: ``(3, S, S)`` in [0, 1]; weights: ``(G*G,)`` soft patch weights (G = S / patch size);
    window: the crop ``(left, top, right, bottom)`` in original pixels.
    """

    image: torch.Tensor
    weights: torch.Tensor
    window: tuple[int, int, int, int]


def prepare_reference(
    image: np.ndarray,
    mask: np.ndarray,
    config: MethodConfig,
    box: tuple[float, float, float, float] | None = None,
    name: str = "reference",
    patch_size: int = 14,
) -> ReferenceCrop:
    """Crop ``image (H, W, 3) uint8`` and ``mask (H, W) bool`` around ``box`` and compute patch weights.

    ``box``: ``(x0, y0, x1, y1)`` original pixels; by default the tight box of the mask. (The COCO protocol
    passes the annotation box truncated with ``int()``, as the paper does.) The crop's side ``S`` is
    ``config.encoder_size`` for an encoder of ``patch_size`` (14: DINOv2, 16: DINOv3), on a ``S / patch_size``
    grid.
    """
    if box is None:
        box = mask_box(mask)
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise InputError(f"{name}: the box {tuple(box)} has no area")
    window = context_crop_window(box, mask.shape, config.context_ratio)
    if window[2] <= window[0] or window[3] <= window[1]:
        raise InputError(f"{name}: the box {tuple(box)} lies outside the {mask.shape[1]}x{mask.shape[0]} image")
    size = input_size(config.encoder_size, patch_size)
    img, soft = crop_reference(to_tensor(image), torch.from_numpy(mask), window, size)
    grid = size // patch_size
    weights = patch_mask_weights(soft, grid, config.ref_mask_sampling)
    if float(weights.sum()) <= 0:
        # A thin object can miss every sampled pixel; the original then produced a NaN prototype.
        weights = patch_mask_weights(soft, grid, "area")
        log.warning("%s: the mask misses every patch's sample pixel; using per-patch mask coverage instead", name)
        if float(weights.sum()) <= 0:
            raise InputError(f"{name}: the mask has no foreground inside the crop window {window}")
    return ReferenceCrop(image=img, weights=weights, window=window)


def encode_references(encoder: PatchEncoder, crops: list[ReferenceCrop], batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference vectors ``(B, D)`` float32 and total weights ``(B,)`` for prepared crops.

    Crops are encoded ``batch_size`` at a time; pooling is one batched matrix product.
    """
    vectors, totals = [], []
    for start in range(0, len(crops), batch_size):
        chunk = crops[start : start + batch_size]
        tokens = encoder.patch_tokens(torch.stack([c.image for c in chunk]))  # (b, N, D)
        w = torch.stack([c.weights for c in chunk]).to(tokens)  # (b, N)
        total = w.sum(dim=1)
        vectors.append(torch.bmm(w[:, None, :], tokens)[:, 0] / total[:, None])
        totals.append(total)
    if not vectors:
        return torch.zeros(0, encoder.dim), torch.zeros(0)
    return torch.cat(vectors).cpu(), torch.cat(totals).cpu()
