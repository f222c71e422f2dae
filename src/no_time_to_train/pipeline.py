"""The protocol's long stages over a loaded segmenter: fill a memory, evaluate on a COCO-format set.

Shared by the ``nttt`` verbs and by whole-protocol runs (which reuse one segmenter, so models load once
per process). Both stages are sharded over torchrun ranks and resumable (see :mod:`runner`).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data.coco import CocoDataset
from .distributed import DistContext
from .evaluation import evaluate_coco, write_metrics
from .imageio import load_image
from .memory import ReferenceMemory
from .prompts import mask_from_box
from .resultstore import ResultStore, write_json_atomic
from .runner import decode_vector, run_images, run_references

log = logging.getLogger(__name__)


def has_masks(dataset: CocoDataset, annotation_ids: Sequence[int]) -> bool:
    """Whether every given annotation carries a segmentation (box-only datasets have none)."""
    return all(dataset.annotation(a).get("segmentation") for a in annotation_ids)


def fill_memory(
    seg,
    refs: list[dict],
    dataset: CocoDataset,
    output: str | Path,
    dist: DistContext,
    *,
    signature: dict,
    reference_masks: str = "annotations",
    export_masks: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> ReferenceMemory | None:
    """Encode ``refs`` (dicts with ``category_id, image_id, annotation_id, bbox``) into a memory file.

    reference_masks: ``"annotations"`` uses the JSON's masks; ``"from-boxes"`` prompts SAM2 with each
    annotation box instead (for box-only datasets, or to ignore existing masks); a box whose SAM2 mask is
    empty uses the filled box rectangle (:func:`~no_time_to_train.prompts.mask_from_box`, the authors'
    fallback), and a warning says how many did. Each distinct annotation is encoded once, but the memory gets
    one row per entry of ``refs``: a reference listed n times weighs n times in its class prototype, which is
    then the authors' mean over their K memory slots. Labels follow ascending category id (the paper's class
    index). Returns the memory on rank 0, None elsewhere.
    """
    from_boxes = reference_masks == "from-boxes"
    if export_masks:
        Path(export_masks).mkdir(parents=True, exist_ok=True)
    cats = sorted({r["category_id"] for r in refs})
    names = {c: dataset.category(c)["name"] for c in cats}
    unique = {f"{r['image_id']}:{r['annotation_id']}": r for r in refs}

    def make_item(key):
        r = unique[key]
        x, y, w, h = r["bbox"]
        image = dataset.image_path(r["image_id"])
        record = {}
        if from_boxes:  # decode once: the array serves SAM2's box prompt and the reference crop
            image = load_image(image)
            mask, fell_back = mask_from_box(seg.sam2, image, (x, y, x + w, y + h), name=f"reference {key}")
            if fell_back:
                record["mask"] = "box-rectangle"
        else:
            mask = dataset.ann_mask(r["annotation_id"])
        if export_masks:
            from PIL import Image

            Image.fromarray(mask.astype(np.uint8) * 255).save(Path(export_masks) / f"{r['image_id']}_{r['annotation_id']}.png")
        return {"image": image, "mask": mask, "category": names[r["category_id"]], "record": record,
                "crop_box": (int(x), int(y), int(x + w), int(y + h))}  # the paper truncates the JSON box

    output = Path(output)
    store = ResultStore(output.with_name(output.name + ".parts"), dist.rank)
    store.check_signature({**signature, "reference_masks": reference_masks}, overwrite, dist.is_main)
    dist.barrier()
    run_references(seg, list(unique), make_item, store, dist, quiet=quiet)
    dist.barrier()
    if not dist.is_main:
        return None
    done = store.records()
    memory = ReferenceMemory(config=seg.config.to_dict(), encoder=seg.encoder.describe())
    for c in cats:
        memory.add_category(names[c], c)
    for r in refs:
        rec = done[f"{r['image_id']}:{r['annotation_id']}"]
        memory.add(decode_vector(rec["vector"]), rec["weight"], names[r["category_id"]], r["category_id"],
                   image=r.get("file_name"), image_id=r["image_id"], annotation_id=r["annotation_id"],
                   prompt="box" if from_boxes else None, mask=rec.get("mask"))
    fell_back = sorted(k for k in unique if done[k].get("mask") == "box-rectangle")
    if fell_back:
        log.warning("%d of %d reference boxes got an empty SAM2 mask and use the filled box rectangle instead "
                    "(as the authors' box-to-mask step): %s", len(fell_back), len(unique), ", ".join(fell_back[:10])
                    + (" ..." if len(fell_back) > 10 else ""))
    memory.save(output)
    shutil.rmtree(store.dir, ignore_errors=True)
    log.info("memory with %d references of %d categories written to %s", len(memory), len(cats), output)
    return memory


def evaluate_dataset(
    seg,
    dataset: CocoDataset,
    category_ids: Sequence[int],
    out: str | Path,
    dist: DistContext,
    *,
    signature: dict,
    max_images: int | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    settings: dict | None = None,
) -> dict[str, Any] | None:
    """Predict every image of ``dataset`` with ``seg``'s memory, write ``results.json`` and ``metrics.json``.

    Segm metrics are computed only when the ground truth has masks; ground truth whose masks were made by
    SAM2 (``info.pseudo_masks``) is labelled as such in the metrics. Returns the metrics on rank 0.
    """
    out = Path(out)
    store = ResultStore(out / "parts", dist.rank)
    store.check_signature(signature, overwrite, dist.is_main)
    dist.barrier()
    ids = dataset.image_ids[:max_images] if max_images else dataset.image_ids

    def record(key, path, image, dets):
        return {"results": dets.to_coco(image_id=key)}

    run_images(seg, [(i, dataset.image_path(i)) for i in ids], store, dist, record, quiet=quiet, desc="evaluate")
    dist.barrier()
    if not dist.is_main:
        return None
    recs = store.records()
    results = [r for i in ids for r in recs[i]["results"]]
    write_json_atomic(out / "results.json", results)
    gt = dataset.dataset
    if max_images:
        keep = set(ids)
        gt = {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}
    wanted = set(category_ids)
    gt_anns = [a for a in gt["annotations"] if a["category_id"] in wanted]
    with_masks = bool(gt_anns) and all(a.get("segmentation") for a in gt_anns)
    metrics = evaluate_coco(gt, results, category_ids, iou_types=("bbox", "segm") if with_masks else ("bbox",))
    if with_masks and (gt.get("info") or {}).get("pseudo_masks"):
        metrics["segm_ground_truth"] = "pseudo masks (SAM2 prompted with the ground-truth boxes)"
    metrics["settings"] = {**(settings or {}), "config": seg.config.to_dict()}
    write_metrics(out / "metrics.json", metrics)
    return metrics
