"""Do two runs give the same detections? One-to-one matching of COCO results, for runtimes and fast modes.

Used by the runtime tests, the parity test and ``benchmarks/bench.py``. Detections are COCO result dicts
(``category_id``, ``score``, ``segmentation`` as RLE with ``counts`` a str or bytes), one list per image.
"""

from __future__ import annotations

import numpy as np

#: The "same outputs" criterion of the runtimes (README, "Runtimes"): same label, |score difference| <= 1e-4,
#: mask IoU >= 0.99, for at least 99 % of the reference's detections.
SCORE_TOLERANCE = 1e-4
MIN_MASK_IOU = 0.99
MIN_MATCHED_FRACTION = 0.99


def _rle(seg: dict) -> dict:
    counts = seg["counts"]
    return {"size": seg["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


def match_detections(reference: list[dict], other: list[dict], score_tolerance: float = SCORE_TOLERANCE,
                     min_iou: float = MIN_MASK_IOU) -> list[tuple[int, int, float]]:
    """Pairs ``(i_reference, i_other, mask IoU)`` of one image's detections, one-to-one.

    A pair has the same ``category_id``, scores within ``score_tolerance`` and mask IoU >= ``min_iou``;
    reference detections are taken in descending score order, each with its best-IoU unused partner.
    """
    from pycocotools import mask as mask_utils

    if not reference or not other:
        return []
    iou = mask_utils.iou([_rle(d["segmentation"]) for d in other], [_rle(d["segmentation"]) for d in reference],
                         [0] * len(reference))
    iou = np.asarray(iou, dtype=float).reshape(len(other), len(reference))
    ok = np.array([[o["category_id"] == r["category_id"] and abs(o["score"] - r["score"]) <= score_tolerance
                    for r in reference] for o in other])
    iou = np.where(ok & (iou >= min_iou), iou, -1.0)
    used = np.zeros(len(other), bool)
    pairs = []
    for j in np.argsort([-r["score"] for r in reference], kind="stable"):
        cand = np.where(used, -1.0, iou[:, j])
        i = int(np.argmax(cand))
        if cand[i] >= 0:
            used[i] = True
            pairs.append((int(j), i, float(cand[i])))
    return pairs


def compare_runs(reference: list[list[dict]], other: list[list[dict]], score_tolerance: float = SCORE_TOLERANCE,
                 min_iou: float = MIN_MASK_IOU) -> dict:
    """Agreement of ``other`` with ``reference`` over images (lists of per-image COCO results, same order).

    Returns ``reference_detections``, ``other_detections``, ``matched``, ``matched_fraction`` (of the
    reference's; 1.0 when both are empty), ``max_score_diff`` and ``min_mask_iou`` over the matched pairs,
    and ``same`` (the criterion: matched fraction >= 99 % both ways).
    """
    n_ref = sum(len(r) for r in reference)
    n_other = sum(len(o) for o in other)
    matched, score_diffs, ious = 0, [], []
    for ref, out in zip(reference, other, strict=True):
        for j, i, iou in match_detections(ref, out, score_tolerance, min_iou):
            matched += 1
            score_diffs.append(abs(out[i]["score"] - ref[j]["score"]))
            ious.append(iou)
    fraction = matched / n_ref if n_ref else (1.0 if not n_other else 0.0)
    extra = (n_other - matched) / n_other if n_other else 0.0
    return {"reference_detections": n_ref, "other_detections": n_other, "matched": matched,
            "matched_fraction": fraction, "max_score_diff": max(score_diffs, default=None),
            "min_mask_iou": min(ious, default=None),
            "same": fraction >= MIN_MATCHED_FRACTION and extra <= 1 - MIN_MATCHED_FRACTION}
