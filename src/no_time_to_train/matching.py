"""Target-side matching: prompts grid, proposal choice, mask features, scores, NMS, soft merging, top-k.

Frames: the SAM frame is the target squashed to ``S``² (1024²); proposal logits live on the low-res grid
``(h, w)`` = 256²; final masks are at the original ``(H, W)``. All functions are pure tensor code.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


def point_grid(points_per_side: int, image_size: int = 1024, mode: str = "border") -> torch.Tensor:
    """Prompt points ``(n*n, 2)`` as pixel ``(x, y)`` in the SAM frame, x-major (the first n share x).

    ``"border"`` (the paper): ``linspace(0, S-1, n) + 0.5`` in each axis, so the grid touches the borders
    (SAM2's prompt encoder adds another 0.5). ``"centered"``: SAM's AMG grid ``(i + 0.5) / n * S``.
    """
    n = points_per_side
    if mode == "border":
        axis = torch.linspace(0, image_size - 1, n, dtype=torch.float64) + 0.5
    else:
        axis = (torch.arange(n, dtype=torch.float64) + 0.5) / n * image_size
    xs = axis.repeat_interleave(n)
    ys = axis.repeat(n)
    return torch.stack([xs, ys], dim=1).float()


def guided_points(tokens: torch.Tensor, prototypes: torch.Tensor, k: int, image_size: int = 1024) -> torch.Tensor:
    """Prompt points ``(k', 2)`` at the centres of the ``k`` patches most similar to any prototype.

    tokens: ``(G*G, D)`` target patch tokens (row-major); prototypes: ``(C, D)`` unit vectors. The similarity
    of a patch is its best cosine to a prototype. Points are pixel ``(x, y)`` in the SAM frame, in row-major
    patch order; ``k' = min(k, G*G)``.
    """
    g = int(round(tokens.shape[0] ** 0.5))
    sim = (F.normalize(tokens.float(), dim=1) @ prototypes.float().T).amax(dim=1)
    top = torch.topk(sim, min(k, sim.numel())).indices.sort().values.cpu()
    rows, cols = top // g, top % g
    scale = image_size / g
    return torch.stack([(cols.double() + 0.5) * scale, (rows.double() + 0.5) * scale], dim=1).float()


def select_best_token(logits: torch.Tensor, iou: torch.Tensor, tokens: tuple[int, ...] = (1, 2, 3)):
    """Per prompt, the mask whose predicted IoU is highest among ``tokens``.

    logits: ``(B, 3, h, w)`` for mask tokens 1-3; iou: ``(B, 3)``. Returns ``(B, h, w)`` and ``(B,)``.
    """
    cols = torch.tensor([t - 1 for t in tokens], device=iou.device)
    sub = iou[:, cols]
    best = cols[sub.argmax(dim=1)]
    rows = torch.arange(len(best), device=iou.device)
    return logits[rows, best], iou[rows, best]


@lru_cache(maxsize=8)
def _linear_weights(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_in, n_out)`` matrix of 1-D linear interpolation, align_corners=False (as F.interpolate)."""
    eye = torch.eye(n_in, dtype=torch.float64)[:, None, :]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[:, 0, :].float()


def upsample_features(tokens: torch.Tensor, grid: int, size: int) -> torch.Tensor:
    """Bilinear upsampling of patch tokens ``(grid*grid, D)`` to a ``(size*size, D)`` map (the paper's F~)."""
    d = tokens.shape[1]
    fmap = tokens.T.reshape(1, d, grid, grid)
    up = F.interpolate(fmap, size=(size, size), mode="bilinear", align_corners=False)
    return up[0].reshape(d, size * size).T


def mask_embeddings(masks: torch.Tensor, tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """L2-normalised mean feature of each mask over the bilinearly upsampled patch-feature map.

    masks: ``(N, h, w)`` bool on the low-res grid; tokens: ``(grid*grid, D)`` float patch tokens.
    Upsampling is linear and separable, so ``sum_q B[q] up(T)[q] = (Ay B Ax^T) : T`` is computed with a
    ``(grid, grid)`` weight per mask instead of materialising the ``(h*w, D)`` map; the result equals
    pooling over the upsampled map up to float rounding. An empty mask gives a zero vector (score 0).
    Returns ``(N, D)`` float32.
    """
    n, h, w = masks.shape
    if n == 0:
        return tokens.new_zeros(0, tokens.shape[1])
    ay = _linear_weights(grid, h).to(tokens.device)  # (grid, h)
    ax = _linear_weights(grid, w).to(tokens.device)  # (grid, w)
    b = masks.to(tokens.dtype)
    weights = ay @ b @ ax.T  # (N, grid, grid)
    area = b.flatten(1).sum(dim=1).clamp(min=1.0)
    emb = weights.flatten(1) @ tokens / area[:, None]
    return F.normalize(emb, dim=1)


def mask_embeddings_dense(masks: torch.Tensor, tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """Reference implementation of :func:`mask_embeddings`: pool over the materialised upsampled map."""
    n, h, w = masks.shape
    fmap = upsample_features(tokens, grid, h)  # assumes h == w, as SAM2's 256x256 grid
    b = masks.flatten(1).to(tokens.dtype)
    emb = b @ fmap / b.sum(dim=1).clamp(min=1.0)[:, None]
    return F.normalize(emb, dim=1)


def classify(
    embeddings: torch.Tensor,
    prototypes: torch.Tensor,
    negatives: tuple[torch.Tensor, torch.Tensor] | None = None,
    temperature: float = 0.8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clamped cosine to each prototype, one label per mask: scores ``(N,)``, labels ``(N,)``.

    embeddings: ``(N, D)`` unit vectors (or zero); prototypes: ``(C, D)`` unit vectors.
    negatives: optional ``(labels (M,), unit vectors (M, D))``, applied with :func:`negative_adjusted`.
    """
    sim = (embeddings @ prototypes.T).clamp(min=0.0)
    if negatives is not None:
        sim = negative_adjusted(sim, embeddings, negatives[0], negatives[1], temperature)
    scores, labels = sim.max(dim=1)
    return scores, labels


def mask_boxes_inclusive(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes ``(N, 4)`` ``x0, y0, x1, y1`` with inclusive max pixel indices; empty -> zeros."""
    n = masks.shape[0]
    if n == 0:
        return torch.zeros(0, 4)
    rows = masks.any(dim=2)  # (N, h)
    cols = masks.any(dim=1)  # (N, w)
    h, w = masks.shape[1:]
    ar_h = torch.arange(h, device=masks.device)
    ar_w = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ar_h, h).min(dim=1).values
    y1 = torch.where(rows, ar_h, -1).max(dim=1).values
    x0 = torch.where(cols, ar_w, w).min(dim=1).values
    x1 = torch.where(cols, ar_w, -1).max(dim=1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=1).float()
    boxes[~rows.any(dim=1)] = 0.0
    return boxes


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``(N, M)`` of ``x0, y0, x1, y1`` boxes with area ``(x1-x0)*(y1-y0)`` (torchvision's).

    Computed on ``(N, M)`` planes, one coordinate at a time, in the boxes' dtype.
    """
    ax0, ay0, ax1, ay1 = (v[:, None] for v in a.unbind(1))
    bx0, by0, bx1, by1 = (v[None, :] for v in b.unbind(1))
    iw = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp_(min=0)
    ih = (torch.minimum(ay1, by1) - torch.maximum(ay0, by0)).clamp_(min=0)
    inter = iw.mul_(ih)
    union = ((ax1 - ax0) * (ay1 - ay0)) + ((bx1 - bx0) * (by1 - by0)) - inter
    return inter.div_(union)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Class-aware greedy NMS; same result as torchvision's ``batched_nms``.

    Returns the kept indices ``(K,)`` in descending score order (a stable sort breaks ties by index).
    A box is suppressed when its IoU with a kept box of the same label is > ``threshold``; zero-area
    boxes give NaN IoU and are never suppressed, as in torchvision.

    The whole "box i suppresses box j" matrix is computed at once on the boxes' device (in float64, so
    the threshold test is exact for pixel boxes); only the greedy scan, n steps of a boolean OR over a
    row, runs on the host (about a millisecond for 1024 boxes).
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].double()
    lab = labels[order]
    over = (box_iou(b, b) > threshold) & (lab[:, None] == lab[None, :])
    over = over.cpu().numpy()
    n = len(order)
    suppressed = np.zeros(n, dtype=bool)
    keep = np.zeros(n, dtype=bool)
    for i in range(n):
        if not suppressed[i]:
            keep[i] = True
            suppressed |= over[i]
    return order[torch.from_numpy(np.flatnonzero(keep)).to(order.device)]


#: Working memory (bytes) one chunk of full-resolution post-processing aims at, beyond its output.
WORK_BYTES = 128 << 20
#: Above this many bytes of ``(K, H, W)`` bool candidate masks, merging keeps them bit-packed (:class:`PackedMasks`).
DENSE_MASK_BYTES = 1 << 30
_UPSAMPLE_BYTES_PER_PIXEL = 9  # F.interpolate's float32 output, the bool comparison, slack


def _upsampled_chunks(logits: torch.Tensor, size: tuple[int, int], threshold: float, mode: str, chunk: int | None):
    """Yield ``(start, (c, H, W) bool)`` for consecutive chunks of masks: bilinear upsampling then ``> threshold``.

    Each mask is resized on its own (a batch of masks gives the same values as one at a time), so the chunk
    size never changes the result. Default chunk: as many masks as fit in :data:`WORK_BYTES` (at least one).
    """
    if chunk is None:
        chunk = max(1, WORK_BYTES // (_UPSAMPLE_BYTES_PER_PIXEL * size[0] * size[1]))
    for s in range(0, logits.shape[0], chunk):
        x = logits[s : s + chunk, None].float()
        if mode == "sam":
            x = F.interpolate(x, size=(1024, 1024), mode="bilinear", align_corners=False)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        yield s, x[:, 0] > threshold


def upsample_masks(
    logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.0, mode: str = "direct", chunk: int | None = None
) -> torch.Tensor:
    """Low-res logits ``(n, h, w)`` -> bool masks ``(n, H, W)`` by bilinear upsampling then ``> threshold``.

    ``"direct"``: one resize to ``(H, W)`` (the paper). ``"sam"``: via 1024² first, like SAM2's post-processing.
    Processed ``chunk`` masks at a time (default: what fits in :data:`WORK_BYTES`) to bound memory.
    """
    out = torch.zeros((logits.shape[0], *size), dtype=torch.bool, device=logits.device)
    for s, part in _upsampled_chunks(logits, size, threshold, mode, chunk):
        out[s : s + len(part)] = part
    return out


class PackedMasks:
    """``(n, H, W)`` bool masks kept 8 pixels to a byte (row-major pixels, most significant bit first).

    ``bits``: ``(n, ceil(H*W / 8))`` uint8. Indexing with rows (``masks[order]``) gives ``(k, H, W)`` bool;
    :meth:`columns` gives a range of flat pixels of some masks. Used by merging when the dense candidate
    masks would exceed :data:`DENSE_MASK_BYTES`: 1/8 of their memory, the same bits.
    """

    def __init__(self, bits: torch.Tensor, size: tuple[int, int]):
        self.bits, self.size = bits, (int(size[0]), int(size[1]))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.bits.shape[0], *self.size)

    @property
    def device(self) -> torch.device:
        return self.bits.device

    @staticmethod
    def _shifts(device) -> torch.Tensor:
        return torch.arange(7, -1, -1, dtype=torch.uint8, device=device)

    @classmethod
    def upsample(cls, logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.0, mode: str = "direct",
                 chunk: int | None = None) -> "PackedMasks":
        """:func:`upsample_masks`, packed chunk by chunk (never all masks dense at once)."""
        n_bytes = -(-size[0] * size[1] // 8)
        bits = torch.zeros((logits.shape[0], n_bytes), dtype=torch.uint8, device=logits.device)
        shifts = cls._shifts(logits.device)
        for s, part in _upsampled_chunks(logits, size, threshold, mode, chunk):
            flat = F.pad(part.flatten(1).to(torch.uint8), (0, n_bytes * 8 - part[0].numel()))
            bits[s : s + len(part)] = (flat.view(len(part), n_bytes, 8) << shifts).sum(dim=2, dtype=torch.uint8)
        return cls(bits, size)

    def columns(self, rows: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Flat pixels ``start:stop`` of masks ``rows`` as ``(len(rows), stop - start)`` bool; ``start % 8 == 0``."""
        assert start % 8 == 0, start
        b = self.bits[rows, start // 8 : -(-stop // 8)]
        unpacked = ((b[..., None] >> self._shifts(b.device)) & 1).bool().flatten(1)
        return unpacked[:, : stop - start]

    def __getitem__(self, rows) -> torch.Tensor:
        rows = torch.as_tensor(rows, device=self.bits.device).reshape(-1)
        h, w = self.size
        out = torch.empty((len(rows), h, w), dtype=torch.bool, device=self.bits.device)
        step = max(1, WORK_BYTES // (2 * h * w))  # unpacking needs about 2 bytes per pixel
        for s in range(0, len(rows), step):
            out[s : s + step] = self.columns(rows[s : s + step], 0, h * w).view(-1, h, w)
        return out


def full_res_masks(logits: torch.Tensor, size: tuple[int, int], threshold: float = 0.0,
                   mode: str = "direct") -> torch.Tensor | PackedMasks:
    """:func:`upsample_masks`, or the same masks as :class:`PackedMasks` when dense ones would exceed
    :data:`DENSE_MASK_BYTES` (a huge image or many candidates)."""
    if logits.shape[0] * size[0] * size[1] > DENSE_MASK_BYTES:
        return PackedMasks.upsample(logits, size, threshold, mode)
    return upsample_masks(logits, size, threshold, mode)


def mask_extents(masks: torch.Tensor) -> torch.Tensor:
    """Pixel-extent boxes ``(n, 4)`` ``x0, y0, x1, y1`` with exclusive ``x1, y1``; empty -> zeros."""
    boxes = mask_boxes_inclusive(masks)
    nonempty = masks.flatten(1).any(dim=1)
    boxes[nonempty, 2:] += 1
    return boxes


def soft_merge_decay(
    masks: torch.Tensor | PackedMasks, embeddings: torch.Tensor, labels: torch.Tensor, exponent: float = 0.5,
    chunk: int = 1 << 16,
) -> torch.Tensor:
    """Semantic-aware soft-merging factors ``(n,)`` (METHOD.md 5.7).

    masks: ``(n, H, W)`` bool (or :class:`PackedMasks`) in ranking order (earlier = higher rank); embeddings:
    ``(n, D)`` unit vectors; labels: ``(n,)``. For mask i:
    ``IoS_i = max_{j < i, same label} |M_i & M_j| / |M_i| * max(0, e_i . e_j)`` and the factor is
    ``(1 - IoS_i) ** exponent`` (1 for the first mask of each label and for empty masks). Intersections are
    exact pixel counts at full resolution, from one matrix product per label, accumulated over ``chunk``
    pixels at a time (a multiple of 8); only one chunk of one label's masks is ever copied.
    """
    n = masks.shape[0]
    ios = torch.zeros(n, dtype=torch.float64, device=masks.device)
    pixels = masks.shape[1] * masks.shape[2]
    if isinstance(masks, PackedMasks):
        columns = masks.columns
    else:
        flat = masks.flatten(1)

        def columns(rows, start, stop):
            return flat[rows, start:stop]

    for label in torch.unique(labels):
        idx = torch.nonzero(labels == label).flatten()
        if len(idx) < 2:
            continue
        inter = torch.zeros(len(idx), len(idx), dtype=torch.float64, device=masks.device)
        for s in range(0, pixels, chunk):
            part = columns(idx, s, min(s + chunk, pixels)).float()
            inter += (part @ part.T).double()
        area = inter.diagonal().clone()
        cos = (embeddings[idx] @ embeddings[idx].T).clamp(min=0).double()
        ratio = torch.where(area[:, None] > 0, inter / area[:, None].clamp(min=1), torch.zeros_like(inter)) * cos
        earlier = torch.ones_like(ratio, dtype=torch.bool).tril(diagonal=-1)  # j < i
        ratio = torch.where(earlier, ratio, torch.zeros_like(ratio))
        ios[idx] = ratio.max(dim=1).values
    return (1.0 - ios).clamp(min=0.0).pow(exponent).float()


def negative_adjusted(
    sim: torch.Tensor, embeddings: torch.Tensor, neg_labels: torch.Tensor, neg_vectors: torch.Tensor,
    temperature: float = 0.8,
) -> torch.Tensor:
    """Scores lowered by negative examples (an extension; the rule of METHOD.md 3.3).

    sim: ``(N, C)`` clamped cosines to the prototypes; embeddings: ``(N, D)`` unit mask features;
    neg_labels ``(M,)`` / neg_vectors ``(M, D)`` unit vectors of examples of what a category is NOT.
    For each category c with negatives, ``s_neg = max_k max(0, e . n_ck)`` and
    ``s <- s * exp(-max(0, s_neg - s) / temperature)``; categories without negatives are unchanged.
    """
    if len(neg_labels) == 0:
        return sim
    neg_sim = (embeddings @ neg_vectors.to(embeddings).T).clamp(min=0)  # (N, M)
    worst = torch.zeros_like(sim)
    worst.scatter_reduce_(1, neg_labels.to(sim.device).expand(len(sim), -1), neg_sim, reduce="amax")
    has_neg = torch.zeros(sim.shape[1], dtype=torch.bool, device=sim.device)
    has_neg[neg_labels.to(sim.device)] = True
    factor = torch.exp(-(worst - sim).clamp(min=0) / temperature)
    return torch.where(has_neg, sim * factor, sim)
