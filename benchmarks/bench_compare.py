"""Agreement of a fast mode's outputs with the faithful outputs on the same images; used by ``bench.py``."""

from __future__ import annotations

import numpy as np


def agreement(faithful: list[list[dict]], fast: list[list[dict]], sizes: list[list[int]], cat_ids: list[int]) -> dict:
    """Matched fraction at mask IoU >= 0.9 (same label, one-to-one) and COCO AP of ``fast`` vs ``faithful`` as GT."""
    from pycocotools import mask as mask_utils

    from no_time_to_train.evaluation import evaluate_coco

    matched = total = 0
    score_diffs = []
    for ref, out in zip(faithful, fast):
        total += len(ref)
        if not ref or not out:
            continue
        iou = mask_utils.iou([d["segmentation"] for d in out], [d["segmentation"] for d in ref], [0] * len(ref))
        iou = np.asarray(iou).reshape(len(out), len(ref))
        same = np.array([[o["category_id"] == r["category_id"] for r in ref] for o in out])
        iou = np.where(same, iou, -1.0)
        used = np.zeros(len(out), bool)
        for j in np.argsort([-r["score"] for r in ref], kind="stable"):
            cand = np.where(~used & (iou[:, j] >= 0.9), iou[:, j], -1.0)
            i = int(np.argmax(cand))
            if cand[i] >= 0.9:
                used[i] = True
                matched += 1
                score_diffs.append(abs(out[i]["score"] - ref[j]["score"]))
    gt = {"images": [{"id": i, "height": h, "width": w} for i, (h, w) in enumerate(sizes)],
          "categories": [{"id": c, "name": str(c)} for c in cat_ids], "annotations": []}
    for dets in faithful:
        for d in dets:
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": d["image_id"],
                                      "category_id": d["category_id"], "segmentation": d["segmentation"],
                                      "bbox": d["bbox"], "area": float(mask_utils.area(d["segmentation"])),
                                      "iscrowd": 0})
    results = [d for dets in fast for d in dets]
    if gt["annotations"]:
        metrics = evaluate_coco(gt, results, cat_ids)
        ap = {"bbox": metrics["bbox"]["AP"], "segm": metrics["segm"]["AP"]}
    else:
        ap = {"bbox": None, "segm": None}
    return {"matched_at_iou_0.9": matched / total if total else None, "faithful_detections": total,
            "max_abs_score_diff_matched": float(max(score_diffs)) if score_diffs else None, "ap_vs_faithful": ap}
