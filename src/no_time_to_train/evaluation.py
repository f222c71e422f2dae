"""COCO evaluation of detection/segmentation results (METHOD 6.1): pycocotools COCOeval, bbox and segm.

The ground truth keeps ALL images but only the annotations of the evaluated categories (:func:`gt_subset`), and
the results are restricted to those categories too. COCOeval runs with its default parameters (IoU 0.50:0.95,
maxDets 1/10/100, all/small/medium/large); categories without ground truth get precision -1 and drop out of the
mean, so AP is the mean over the evaluated categories that have ground truth.

Results are COCO result dicts: ``{"image_id", "category_id", "score", "bbox": [x, y, w, h],
"segmentation": RLE}`` (``bbox`` or ``segmentation`` may be missing when only the other IoU type is evaluated).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .data.coco import _as_coco_dict, _quiet_coco, gt_subset
from .errors import InputError

__all__ = ["STAT_NAMES", "evaluate_coco", "format_metrics_table", "write_metrics"]

#: Names of COCOeval's 12 summary statistics, in ``stats`` order.
STAT_NAMES: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_IOU_TYPES = ("bbox", "segm")


def _num(v: float) -> float | None:
    """COCOeval's -1 ("undefined": no ground truth) and NaN become None; everything else a plain float."""
    v = float(v)
    if math.isnan(v) or v < 0:
        return None
    return v


def _load_results(results: Sequence[Mapping[str, Any]] | str | Path) -> list[dict]:
    if isinstance(results, (str, Path)):
        p = Path(results)
        if not p.is_file():
            raise InputError(f"Results file {str(p)!r} does not exist: pass a COCO results JSON (a list of "
                             f"detections) or a list of dicts.")
        try:
            results = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"Results file {str(p)!r} is not valid JSON ({e}).") from e
    if not isinstance(results, (list, tuple)):
        raise InputError(f"Results must be a list of COCO detection dicts, got {type(results).__name__}.")
    return list(results)


def evaluate_coco(
    gt: dict | str | Path,
    results: Sequence[Mapping[str, Any]] | str | Path,
    category_ids: Iterable[int],
    iou_types: Sequence[str] = _IOU_TYPES,
    verbose: bool = False,
) -> dict:
    """Evaluate COCO-format results against a COCO ground truth, restricted to ``category_ids``.

    Args:
        gt: COCO dict or path of the ground-truth JSON (all its images are evaluated).
        results: list of COCO result dicts, or a path to a results JSON.
        category_ids: the evaluated categories (e.g. the 20 novel COCO classes).
        iou_types: any of ``"bbox"``, ``"segm"``.
        verbose: let pycocotools print its progress and summary.

    Returns:
        ``{"bbox": {"AP", "AP50", ..., "ARl", "per_category": {name: AP}, "per_category_AP50",
        "AP50_voc07", "per_category_AP50_voc07"}, "segm": {...}, "num_images",
        "num_detections", "categories": [{"id", "name"}]}``. Values are COCOeval's raw fractions in [0, 1];
        a statistic COCOeval leaves undefined (-1, no ground truth in that range) and the AP of a category
        without ground truth are ``None``. An empty result list scores 0 wherever ground truth exists.
    """
    iou_types = tuple(iou_types)
    bad = [t for t in iou_types if t not in _IOU_TYPES]
    if bad or not iou_types:
        raise InputError(f"iou_types {iou_types!r} not supported: use a subset of {_IOU_TYPES}.")
    gt_full = _as_coco_dict(gt)
    cat_ids = sorted({int(c) for c in category_ids})
    if not cat_ids:
        raise InputError("No categories to evaluate: pass at least one category id.")
    gt_data = gt_subset(gt_full, cat_ids)
    cats = sorted(gt_data["categories"], key=lambda c: int(c["id"]))
    names = [c["name"] for c in cats]
    keys = [n if names.count(n) == 1 else f"{n} ({c['id']})" for n, c in zip(names, cats)]

    dets = _prepare_results(_load_results(results), set(cat_ids), gt_data, iou_types)

    out: dict[str, Any] = {}
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        from pycocotools.cocoeval import COCOeval

        coco_gt = _quiet_coco(gt_data)
        if dets:
            coco_dt = coco_gt.loadRes(dets)
        else:  # pycocotools' loadRes cannot take an empty list: an empty result set scores 0 where GT exists
            coco_dt = _quiet_coco({"images": list(gt_data["images"]), "categories": list(gt_data["categories"]),
                                   "annotations": []})
        for iou_type in iou_types:
            ev = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            ev.params.catIds = cat_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            block = {name: _num(v) for name, v in zip(STAT_NAMES, ev.stats)}
            precision = ev.eval["precision"]  # [T, R, K, A, M]
            per_cat, per_cat50, voc07 = {}, {}, {}
            for k, cid in enumerate(ev.params.catIds):
                key = keys[cat_ids.index(cid)]
                p = precision[:, :, k, 0, -1]
                p = p[p > -1]
                per_cat[key] = float(np.mean(p)) if p.size else None
                p50 = precision[0, :, k, 0, -1]  # IoU 0.5, all areas, 100 detections
                per_cat50[key] = float(np.mean(p50)) if (p50 > -1).all() else None
                # VOC07 11-point AP: mean interpolated precision at recall 0, 0.1, ..., 1 (every 10th of
                # COCOeval's 101 recall points, where precision is already max over recall >= r)
                voc07[key] = float(np.mean(p50[::10])) if (p50 > -1).all() else None
            block["per_category"] = per_cat
            block["per_category_AP50"] = per_cat50
            valid = [v for v in voc07.values() if v is not None]
            block["AP50_voc07"] = float(np.mean(valid)) if valid else None
            block["per_category_AP50_voc07"] = voc07
            out[iou_type] = block
    out["num_images"] = len(gt_data["images"])
    out["num_detections"] = len(dets)
    out["categories"] = [{"id": int(c["id"]), "name": c["name"]} for c in cats]
    return out


def _prepare_results(results: list, cat_ids: set[int], gt_data: dict, iou_types: Sequence[str]) -> list[dict]:
    """Validate, copy (loadRes mutates its input) and filter results to the evaluated categories."""
    image_ids = {int(im["id"]) for im in gt_data["images"]}
    dets = []
    for i, r in enumerate(results):
        if not isinstance(r, Mapping):
            raise InputError(f"Result #{i} is a {type(r).__name__}, not a dict with image_id, category_id, score.")
        missing = [k for k in ("image_id", "category_id", "score") if k not in r]
        if missing:
            raise InputError(f"Result #{i} lacks {missing}: every detection needs image_id, category_id, score "
                             f"and a bbox and/or segmentation.")
        if int(r["category_id"]) not in cat_ids:
            continue
        if int(r["image_id"]) not in image_ids:
            raise InputError(f"Result #{i} has image_id {r['image_id']}, which is not in the ground truth: "
                             f"evaluate against the annotation file the predictions were made on.")
        if "segm" in iou_types and "segmentation" not in r:
            raise InputError(f"Result #{i} has no 'segmentation' but 'segm' is evaluated: add RLE masks or "
                             f"evaluate iou_types=('bbox',).")
        if "bbox" in iou_types and "bbox" not in r and "segmentation" not in r:
            raise InputError(f"Result #{i} has neither 'bbox' nor 'segmentation'.")
        d = dict(r)
        d["image_id"] = int(d["image_id"])
        d["category_id"] = int(d["category_id"])
        d["score"] = float(d["score"])
        dets.append(d)
    has_box = [("bbox" in d and d["bbox"] is not None and len(d["bbox"]) == 4) for d in dets]
    if any(has_box) and not all(has_box):
        # loadRes picks its branch from the first result only; give every result a box so the branch is uniform
        from pycocotools import mask as mask_utils

        for d, ok in zip(dets, has_box):
            if not ok:
                d["bbox"] = [float(v) for v in mask_utils.toBbox(d["segmentation"])]
    elif dets and not any(has_box):
        for d in dets:
            d.pop("bbox", None)
    for d in dets:
        if "bbox" in d:
            d["bbox"] = [float(v) for v in d["bbox"]]
    return dets


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100.0 * v:.1f}"


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """Plain-text (markdown) tables: summary metrics x IoU types (percent, 1 decimal), then per-category AP."""
    types = [t for t in _IOU_TYPES if t in metrics]
    lines = []
    cats = metrics.get("categories") or []
    lines.append(f"{metrics.get('num_images', '?')} images, {metrics.get('num_detections', '?')} detections, "
                 f"{len(cats)} categories")
    lines.append("")
    w = max(len("metric"), max(len(n) for n in STAT_NAMES))
    lines.append("| " + "metric".ljust(w) + " | " + " | ".join(t.rjust(6) for t in types) + " |")
    lines.append("|" + "-" * (w + 2) + "|" + "|".join("-" * 7 + ":" for _ in types) + "|")
    for name in STAT_NAMES:
        vals = [_pct(metrics[t].get(name)) for t in types]
        lines.append("| " + name.ljust(w) + " | " + " | ".join(v.rjust(6) for v in vals) + " |")
    per = {t: metrics[t].get("per_category") or {} for t in types}
    cat_names = list(dict.fromkeys(n for t in types for n in per[t]))
    if cat_names:
        cw = max(8, max(len(n) for n in cat_names))
        heads = [f"{t} AP" for t in types]
        lines.append("")
        lines.append("| " + "category".ljust(cw) + " | " + " | ".join(h.rjust(7) for h in heads) + " |")
        lines.append("|" + "-" * (cw + 2) + "|" + "|".join("-" * 8 + ":" for _ in types) + "|")
        for n in cat_names:
            vals = [_pct(per[t].get(n)) for t in types]
            lines.append("| " + n.ljust(cw) + " | " + " | ".join(v.rjust(7) for v in vals) + " |")
    return "\n".join(lines) + "\n"


def _clean(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if math.isnan(float(obj)) or math.isinf(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write metrics as JSON (NaN -> null); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(metrics), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path
