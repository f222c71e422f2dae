"""Scoring tracks: YouTube-VIS video AP, and per-frame COCO AP.

**Video AP** (YouTube-VIS 2019/2021 and OVIS use the same definition): pycocotools' ``COCOeval`` where an
"image" is a video and the IoU of a predicted track and a ground-truth track is spatio-temporal,
``sum_t |P_t & G_t| / sum_t |P_t | G_t|`` over all frames (a frame where one of them is absent adds the other's
area to the union). A track's area, for the small/medium/large ranges, is the mean of its per-frame areas over the
frames where it is present. Everything else is COCOeval's: IoU thresholds 0.50:0.05:0.95, 101-point
interpolated precision, greedy matching by score, ``maxDets`` 1/10/100, crowd tracks ignored. Reported: AP, AP50,
AP75, APs, APm, APl, AR1, AR10 (and AR100 ...), COCOeval's 12 statistics.

Ground truth: a YouTube-VIS JSON (``videos`` with ``file_names``, ``annotations`` with ``segmentations`` per frame
as RLE or polygons or null, ``categories``). Results: the ``results.json`` of ``nttt track`` (one entry per
track with ``video_id``, ``category_id``, ``score``, ``segmentations``); videos are matched by ``video_id``, or,
when given the track output's ``videos.json``, by name (the ground truth's first file name's folder).

**Per-frame AP**: each frame is an image; the ground truth is a COCO JSON whose images are frames (file names'
stems equal to the frame names: ``000000`` ... for a video file, the file stems for a frame folder); the tracks'
masks on each frame become COCO detections scored with ``evaluate_coco``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco import _quiet_coco
from ..errors import InputError
from ..evaluation import STAT_NAMES, _num, evaluate_coco
from ..types import coco_box, decode_rle

__all__ = ["evaluate_video_ap", "evaluate_frames", "frame_results"]


def _rle(seg: Any, h: int, w: int) -> dict | None:
    """A frame's segmentation (RLE with text or byte counts, uncompressed RLE, polygons, or None) as compressed RLE."""
    if seg is None:
        return None
    if isinstance(seg, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, h, w)
    return {"size": seg["size"], "counts": seg["counts"].encode("ascii") if isinstance(seg["counts"], str)
            else seg["counts"]}


def _track_area(rles: Sequence[dict | None]) -> float:
    areas = [float(mask_utils.area(r)) for r in rles if r is not None]
    return float(np.mean(areas)) if areas else 0.0


class VideoEval(COCOeval):
    """COCOeval over videos with the spatio-temporal IoU (see the module docstring)."""

    def _prepare(self) -> None:
        p = self.params
        gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
        dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(imgIds=p.imgIds, catIds=p.catIds))
        for gt in gts:
            gt["ignore"] = int(gt.get("ignore", 0) or gt.get("iscrowd", 0))
        self._gts, self._dts = defaultdict(list), defaultdict(list)
        for gt in gts:
            self._gts[gt["image_id"], gt["category_id"]].append(gt)
        for dt in dts:
            self._dts[dt["image_id"], dt["category_id"]].append(dt)
        self.evalImgs = defaultdict(list)
        self.eval = {}

    def computeIoU(self, video_id, cat_id):  # noqa: N802 (COCOeval's name)
        p = self.params
        gt = self._gts[video_id, cat_id] if p.useCats else [g for c in p.catIds for g in self._gts[video_id, c]]
        dt = self._dts[video_id, cat_id] if p.useCats else [d for c in p.catIds for d in self._dts[video_id, c]]
        if not gt or not dt:
            return []
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")
        dt = [dt[i] for i in order][: p.maxDets[-1]]
        ious = np.zeros((len(dt), len(gt)))
        for i, d in enumerate(dt):
            for j, g in enumerate(gt):
                inter = union = 0.0
                for ds, gs in zip(d["rles"], g["rles"]):
                    if ds is None and gs is None:
                        continue
                    if ds is None or gs is None:
                        union += float(mask_utils.area(ds if gs is None else gs))
                        continue
                    a, b = float(mask_utils.area(ds)), float(mask_utils.area(gs))
                    both = float(mask_utils.area(mask_utils.merge([ds, gs], intersect=True)))
                    inter += both
                    union += a + b - both
                ious[i, j] = inter / union if union > 0 else 0.0
        return ious


def _video_coco(videos: list[dict], anns: list[dict], categories: list[dict]) -> COCO:
    return _quiet_coco({"images": videos, "annotations": anns, "categories": categories})


def _gt_tracks(gt: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    videos = [{"id": v["id"], "height": v["height"], "width": v["width"], "length": len(v["file_names"]),
               "name": Path(v["file_names"][0]).parent.name if v["file_names"] else str(v["id"])}
              for v in gt["videos"]]
    size = {v["id"]: (v["height"], v["width"], v["length"]) for v in videos}
    anns = []
    for k, a in enumerate(gt["annotations"]):
        if a["video_id"] not in size:
            raise InputError(f"ground-truth annotation {a.get('id', k)} names video {a['video_id']}, which is not "
                             "among the videos")
        h, w, n = size[a["video_id"]]
        rles = [_rle(s, h, w) for s in a["segmentations"]] + [None] * (n - len(a["segmentations"]))
        anns.append({"id": a.get("id", k + 1), "image_id": a["video_id"], "category_id": a["category_id"],
                     "iscrowd": int(a.get("iscrowd", 0)), "rles": rles[:n], "area": _track_area(rles)})
    return videos, anns


def evaluate_video_ap(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]],
                      videos: Sequence[Mapping[str, Any]] | None = None,
                      category_ids: Sequence[int] | None = None) -> dict:
    """Video AP of ``results`` (YouTube-VIS-style track results) against YouTube-VIS ground truth ``gt``.

    videos: the ``videos.json`` of the track run, to match videos by name instead of by id. category_ids: the
    evaluated categories (default: every ground-truth category). Returns ``{"segm": {AP, AP50, ... as
    fractions, "per_category": {name: AP}}, "num_videos", "num_tracks", "categories"}``.
    """
    if not isinstance(gt, Mapping) or "videos" not in gt or "annotations" not in gt:
        raise InputError("YouTube-VIS ground truth needs 'videos' and 'annotations'")
    gt_videos, gt_anns = _gt_tracks(gt)
    by_name = {v["name"]: v["id"] for v in gt_videos}
    id_map = None
    if videos is not None:
        id_map = {v["id"]: by_name.get(v["name"]) for v in videos}
    size = {v["id"]: (v["height"], v["width"], v["length"]) for v in gt_videos}
    dts = []
    for k, r in enumerate(results):
        vid = id_map.get(r["video_id"]) if id_map is not None else r["video_id"]
        if vid not in size:
            continue
        h, w, n = size[vid]
        rles = [_rle(s, h, w) for s in r["segmentations"]]
        if len(rles) != n:
            raise InputError(f"result track {k} covers {len(rles)} frames but ground-truth video {vid} has {n}")
        dts.append({"id": k + 1, "image_id": vid, "category_id": r["category_id"], "score": float(r["score"]),
                    "rles": rles, "area": _track_area(rles), "iscrowd": 0})
    cats = list(gt["categories"])
    cat_ids = list(category_ids) if category_ids is not None else [c["id"] for c in cats]
    ev = VideoEval(_video_coco(gt_videos, gt_anns, cats), _video_coco(gt_videos, dts, cats), "segm")
    ev.params.imgIds = sorted(size)
    ev.params.catIds = cat_ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {name: _num(v) for name, v in zip(STAT_NAMES, ev.stats)}
    names = {c["id"]: c["name"] for c in cats}
    per = {}
    for k, cid in enumerate(cat_ids):
        prec = ev.eval["precision"][:, :, k, 0, -1]
        valid = prec[prec > -1]
        per[names.get(cid, str(cid))] = float(valid.mean()) if valid.size else None
    metrics["per_category"] = per
    return {"segm": metrics, "num_videos": len(size), "num_tracks": len(dts),
            "categories": [{"id": c, "name": names.get(c, str(c))} for c in cat_ids]}


def frame_results(videos: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]],
                  image_ids: Mapping[tuple[str, str], int], box_convention: str = "inclusive") -> list[dict]:
    """COCO detections per frame from track results: every track's mask on a frame whose ``(video name, frame
    name)`` is in ``image_ids`` becomes one detection with the track's category and score."""
    names = {v["id"]: (v["name"], v["frames"]) for v in videos}
    out = []
    for r in results:
        vname, frames = names[r["video_id"]]
        for t, seg in enumerate(r["segmentations"]):
            if seg is None:
                continue
            image_id = image_ids.get((vname, frames[t]), image_ids.get(("", frames[t])))
            if image_id is None:
                continue
            mask = decode_rle(seg)
            ys, xs = np.nonzero(mask)
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0)
            out.append({"image_id": image_id, "category_id": r["category_id"], "score": float(r["score"]),
                        "segmentation": seg, "bbox": coco_box(box, box_convention)})
    return out


def evaluate_frames(gt: Mapping[str, Any], videos: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]],
                    category_ids: Sequence[int] | None = None) -> dict:
    """Per-frame COCO AP (bbox and segm, ``evaluate_coco``) of track results against a COCO ground truth of frames.

    A ground-truth image matches a frame by its file name's stem (and, when the file sits in a folder, that
    folder's name equal to the video's name; with a single video the folder is not needed).
    """
    image_ids: dict[tuple[str, str], int] = {}
    for img in gt["images"]:
        p = Path(img["file_name"])
        image_ids[(p.parent.name if len(videos) > 1 else "", p.stem)] = img["id"]
    if len(videos) == 1:
        image_ids = {(videos[0]["name"], k[1]): v for k, v in image_ids.items()}
    dets = frame_results(videos, results, image_ids)
    if not dets and any(a for a in gt.get("annotations", [])):
        matched = sum(1 for v in videos for f in v["frames"] if (v["name"], f) in image_ids)
        if matched == 0:
            raise InputError("no ground-truth image matches a tracked frame: name the frames' images by the frame "
                             "names (000000 ... for a video file; the frame files' stems for a folder)")
    cat_ids = list(category_ids) if category_ids is not None else [c["id"] for c in gt["categories"]]
    return evaluate_coco(copy.deepcopy(dict(gt)), dets, cat_ids)


def is_ytvis(gt: Mapping[str, Any]) -> bool:
    """Whether a ground-truth document is YouTube-VIS (videos) rather than COCO (images)."""
    return "videos" in gt and "images" not in gt

