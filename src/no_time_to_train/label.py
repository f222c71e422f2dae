"""The ``label`` job: segment a folder of images with a memory and write a labelled dataset.

Like ``predict``, the run is sharded over torchrun ranks and resumable: each image's detections (all of them,
unfiltered) are kept in ``DATASET/parts`` as soon as they exist. Rank 0 then filters them (``min_score``,
``min_area``), splits train/val and writes every asked format (:func:`no_time_to_train.formats.write_dataset`).
The filters, formats and split are not part of the run's signature: rerunning with other values rewrites the
dataset from the kept detections without running the models again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from .distributed import DistContext
from .formats import (
    FORMATS,
    Instance,
    LabeledImage,
    Summary,
    WriteOptions,
    assign_splits,
    check_category_names,
    check_dataset_root,
    check_formats,
    check_val_fraction,
    unique_names,
    write_dataset,
)
from .resultstore import ResultStore, write_json_atomic
from .runner import run_images

log = logging.getLogger(__name__)


def keep(instance: Instance, area: int, min_score: float, min_area: int) -> bool:
    """Whether an instance goes into the dataset: a non-empty mask of at least ``min_area`` pixels, and a score
    of at least ``min_score`` (an object drawn by a reviewer has no score and always stays)."""
    if area < max(1, min_area):
        return False
    return instance.score is None or instance.score >= min_score


def label_images(
    seg,
    paths: Sequence[Path],
    output: str | Path,
    dist: DistContext,
    *,
    signature: dict,
    formats: Sequence[str],
    options: WriteOptions | None = None,
    min_score: float = 0.5,
    min_area: int = 0,
    val_fraction: float = 0.1,
    seed: int = 0,
    overwrite: bool = False,
    quiet: bool = False,
    on_error: str = "stop",
) -> Summary | None:
    """Label ``paths`` with ``seg`` (its memory gives the categories) into the dataset folder ``output``.

    Everything the user can get wrong (formats, category names for the formats, the output folder, the
    split fraction) is checked before the models run. Returns the per-category counts on rank 0, else None.
    """
    formats = check_formats(formats)
    categories = [{"id": c["id"], "name": c["name"]} for c in seg.memory.categories]
    check_category_names([c["name"] for c in categories], formats)
    check_val_fraction(val_fraction)
    out = Path(output)
    check_dataset_root(out)
    names = unique_names(paths)
    store = ResultStore(out / "parts", dist.rank)

    def record(key, path, image, dets):
        results = [{"category": name, "score": round(float(score), 5), "rle": r["segmentation"]}
                   for r, name, score in zip(dets.to_coco(image_id=0), dets.names, dets.scores)]
        return {"height": image.shape[0], "width": image.shape[1], "results": results}

    merged = [out / n for n in (*FORMATS, "summary.json", "skipped.json")]
    with store.claim(signature, dist, overwrite, outputs=merged, what=f"dataset folder {out}"):
        run_images(seg, [(str(p), p) for p in paths], store, dist, record, quiet=quiet, desc="label",
                   on_error=on_error)
        dist.barrier()
        if not dist.is_main:
            return None
        recs = store.records()
        images, skipped, dropped = [], [], 0
        for path, name in zip(paths, names):
            rec = recs[str(path)]
            if "skipped" in rec:
                skipped.append({"file_name": str(path), "error": rec["skipped"]})
                continue
            instances = []
            for r in rec["results"]:
                inst = Instance(r["category"], r["rle"], r["score"])
                if keep(inst, _area(r["rle"]), min_score, min_area):
                    instances.append(inst)
                else:
                    dropped += 1
            images.append(LabeledImage(name, rec["width"], rec["height"], instances, path=path))
        assign_splits(images, val_fraction, seed)
        summary = write_dataset(images, categories, out, formats, options)
        if skipped:
            write_json_atomic(out / "skipped.json", skipped, indent=1)
            log.warning("%d unreadable image(s) skipped, listed in %s", len(skipped), out / "skipped.json")
        else:
            (out / "skipped.json").unlink(missing_ok=True)
        log.info("%d detection(s) below --min-score %s or --min-area %s left out", dropped, min_score, min_area)
    return summary


def _area(rle: dict) -> int:
    from pycocotools import mask as mask_utils

    return int(mask_utils.area({**rle, "counts": rle["counts"].encode("ascii")}))
