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
from .errors import InputError
from .evaluation import evaluate_coco, write_metrics
from .imageio import load_image
from .memory import ReferenceMemory
from .prompts import mask_from_box
from .resultstore import ResultStore, write_json_atomic
from .runner import decode_vector, run_images, run_references

log = logging.getLogger(__name__)

MERGED_EVALUATE = ("results.json", "metrics.json", "skipped.json")  # what an --overwrite run deletes first


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
            mask, fell_back = mask_from_box(seg.proposer, image, (x, y, x + w, y + h), name=f"reference {key}")
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
    if output.is_dir():
        raise InputError(f"the memory output {output} is a folder; give a file path such as "
                         f"{output / 'memory.safetensors'}")
    store = ResultStore(output.with_name(output.name + ".parts"), dist.rank)
    with store.claim({**signature, "reference_masks": reference_masks}, dist, overwrite, outputs=[output],
                     what=f"memory file {output}"):
        run_references(seg, list(unique), make_item, store, dist, quiet=quiet)
        dist.barrier()
        if not dist.is_main:
            return None
        done = store.records()
        memory = ReferenceMemory(config=seg.config.to_dict(), encoder=seg.encoder_identity)
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
                        "(as the authors' box-to-mask step): %s", len(fell_back), len(unique),
                        ", ".join(fell_back[:10]) + (" ..." if len(fell_back) > 10 else ""))
        memory.save(output)
        shutil.rmtree(store.dir, ignore_errors=True)
    log.info("memory with %d references of %d categories written to %s", len(memory), len(cats), output)
    return memory


def check_memory_categories(memory: ReferenceMemory, dataset: CocoDataset, category_ids: Sequence[int]) -> None:
    """Refuse to evaluate when a memory category would be scored as another dataset category.

    Each evaluated id must belong, in the memory, to a category with a dataset id (not an automatic one) and
    the dataset's name for that id; otherwise its detections would count for the wrong class.
    """
    where = dataset.json_path or "the annotation dict"
    by_id = {c.get("id"): c for c in memory.categories}
    for cid in category_ids:
        mine, theirs = by_id.get(cid), dataset.category(cid)["name"]
        if mine is None:
            continue
        if mine.get("auto_id"):
            raise InputError(f"the memory's category {mine['name']!r} was added without a dataset id and got the "
                             f"automatic id {cid}, which is {theirs!r} in {where}; give it its dataset id or "
                             f"remove it before evaluating")
        if mine["name"] != theirs:
            raise InputError(f"category id {cid} is {mine['name']!r} in the memory but {theirs!r} in {where}: "
                             f"the memory was built with another dataset's category ids")


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
    on_error: str = "stop",
) -> dict[str, Any] | None:
    """Predict every image of ``dataset`` with ``seg``'s memory, write ``results.json`` and ``metrics.json``.

    Segm metrics are computed only when the ground truth has masks; ground truth whose masks were made by
    SAM2 (``info.pseudo_masks``) is labelled as such in the metrics. The memory's categories are checked
    against the dataset's first (:func:`check_memory_categories`). ``on_error="skip"`` goes on past
    unreadable images: they are listed in ``skipped.json`` and in ``metrics["skipped_images"]``, and stay in
    the evaluation (their ground truth counts as missed). Returns the metrics on rank 0.
    """
    check_memory_categories(seg.memory, dataset, category_ids)
    out = Path(out)
    store = ResultStore(out / "parts", dist.rank)
    ids = dataset.image_ids[:max_images] if max_images else dataset.image_ids

    def record(key, path, image, dets):
        return {"results": dets.to_coco(image_id=key)}

    with store.claim(signature, dist, overwrite, outputs=[out / n for n in MERGED_EVALUATE],
                     what=f"output folder {out}"):
        # a missing file is an unreadable image like any other (stop or skip), found when its turn comes
        paths = [(i, dataset.images_dir / dataset.image_info(i)["file_name"]) for i in ids]
        run_images(seg, paths, store, dist, record, quiet=quiet, desc="evaluate", on_error=on_error)
        dist.barrier()
        if not dist.is_main:
            return None
        return _merge_and_score(seg, dataset, ids, category_ids, store.records(), out, settings)


def _merge_and_score(seg, dataset: CocoDataset, ids: Sequence[int], category_ids: Sequence[int],
                     recs: dict, out: Path, settings: dict | None) -> dict[str, Any]:
    """Rank 0's end of :func:`evaluate_dataset`: merge the records in image order, write and return the metrics."""
    skipped = [{"image_id": i, "file_name": dataset.image_info(i).get("file_name"), "error": recs[i]["skipped"]}
               for i in ids if "skipped" in recs[i]]
    results = [r for i in ids if "skipped" not in recs[i] for r in recs[i]["results"]]
    write_json_atomic(out / "results.json", results)
    if skipped:
        write_json_atomic(out / "skipped.json", skipped, indent=1)
    gt = dataset.dataset
    if len(ids) < len(dataset.image_ids):
        keep = set(ids)
        gt = {**gt, "images": [im for im in gt["images"] if im["id"] in keep],
              "annotations": [a for a in gt["annotations"] if a["image_id"] in keep]}
    wanted = set(category_ids)
    gt_anns = [a for a in gt["annotations"] if a["category_id"] in wanted]
    with_masks = bool(gt_anns) and all(a.get("segmentation") for a in gt_anns)
    metrics = evaluate_coco(gt, results, category_ids, iou_types=("bbox", "segm") if with_masks else ("bbox",))
    if with_masks and (gt.get("info") or {}).get("pseudo_masks"):
        metrics["segm_ground_truth"] = "pseudo masks (SAM2 prompted with the ground-truth boxes)"
    # skipped images stay in the evaluation: their ground truth counts as missed
    metrics["skipped_images"] = skipped
    metrics["settings"] = {**(settings or {}), "config": seg.config.to_dict()}
    write_metrics(out / "metrics.json", metrics)
    return metrics
