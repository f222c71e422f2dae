"""Whole benchmark protocols in one command: every setting sampled, filled, evaluated and tabulated.

- PASCAL VOC few-shot (METHOD.md 6.2): splits 1-3 x shots {1, 2, 3, 5, 10}, seed 33, novel classes only;
  the paper's nAP50 is COCO-style AP50 (bbox); the VOC07 11-point AP50 is reported alongside.
- CD-FSOD (METHOD.md 6.3): each dataset x shots {1, 5, 10} from the benchmark's own shot files, the authors'
  K references per class; nAP (COCO AP, bbox) over every category of the test set.

One segmenter serves every setting (models load once). Outputs go to ``out/<column>/<k>shot/`` and every
stage resumes: a finished memory or metrics file is kept, a partial one continues.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from .data.coco import CocoDataset, resolve_categories
from .data.sampling import sample_references, write_references
from .distributed import DistContext
from .errors import InputError
from .memory import ReferenceMemory
from .pipeline import evaluate_dataset, fill_memory, has_masks
from .resultstore import write_json_atomic

log = logging.getLogger(__name__)

VOC_SHOTS = (1, 2, 3, 5, 10)
CDFSOD_SHOTS = (1, 5, 10)


def markdown_table(values: dict[tuple[int, str], float | None], rows: Sequence[int], cols: Sequence[str],
                   title: str) -> str:
    """Rows = shots, columns = splits/datasets plus their mean; values in percent with one decimal."""
    head = f"| {title} | " + " | ".join(cols) + " | mean |"
    lines = [head, "|" + "---|" * (len(cols) + 2)]
    for r in rows:
        cells = [values.get((r, c)) for c in cols]
        known = [v for v in cells if v is not None]
        mean = sum(known) / len(known) if len(known) == len(cells) and known else None
        fmt = ["-" if v is None else f"{100 * v:.1f}" for v in [*cells, mean]]
        lines.append(f"| {r}-shot | " + " | ".join(fmt) + " |")
    return "\n".join(lines)


def _run_setting(seg, dist: DistContext, out: Path, refs: list[dict], ref_data: CocoDataset, test: CocoDataset,
                 cat_ids: list[int], signature: dict, quiet: bool) -> dict | None:
    """fill (unless done) -> evaluate (unless done) for one setting; metrics on rank 0."""
    mem_path = out / "memory.safetensors"
    if not mem_path.exists():
        masks = "annotations" if has_masks(ref_data, [r["annotation_id"] for r in refs]) else "from-boxes"
        fill_memory(seg, refs, ref_data, mem_path, dist, signature=signature, reference_masks=masks, quiet=quiet)
    dist.barrier()
    metrics_path = out / "eval" / "metrics.json"
    if metrics_path.exists():
        import json

        return json.loads(metrics_path.read_text()) if dist.is_main else None
    seg.memory = ReferenceMemory.load(mem_path)
    return evaluate_dataset(seg, test, cat_ids, out / "eval", dist, signature={**signature, "stage": "evaluate"},
                            quiet=quiet, settings={"memory": str(mem_path)})


def _finish(values, rows, cols, title, out: Path, dist: DistContext, metric_name: str) -> str | None:
    if not dist.is_main:
        return None
    table = markdown_table(values, rows, cols, title)
    (out / "table.md").write_text(f"{metric_name}\n\n{table}\n")
    write_json_atomic(out / "table.json", [{"shots": r, "column": c, "value": v} for (r, c), v in values.items()],
                      indent=1)
    return table


def run_voc(seg, train_json: Path, test_json: Path, images: Path, out: Path, dist: DistContext, *,
            splits: Sequence[int] = (1, 2, 3), shots: Sequence[int] = VOC_SHOTS, seed: int = 33,
            metric: str = "AP50", signature: dict, quiet: bool = False) -> str | None:
    """The VOC few-shot protocol; returns the markdown table (rank 0). ``metric``: ``AP50`` or ``AP50_voc07``."""
    train, test = CocoDataset(train_json, images), CocoDataset(test_json, images)
    values, cols = {}, [f"split{s}" for s in splits]
    for split, col in zip(splits, cols):
        cats = resolve_categories(train.categories, f"voc-split{split}")
        cat_ids = [c["id"] for c in cats]
        for k in shots:
            d = Path(out) / col / f"{k}shot"
            d.mkdir(parents=True, exist_ok=True)
            refs = sample_references(train.dataset, cat_ids, k, seed)
            if dist.is_main and not (d / "refs.json").exists():
                write_references(d / "refs.json", refs, {"seed": seed, "shots": k, "split": f"voc-split{split}"})
            metrics = _run_setting(seg, dist, d, refs.flat(), train, test, cat_ids,
                                   {**signature, "split": split, "shots": k, "seed": seed}, quiet)
            if metrics is not None:
                values[(k, col)] = metrics["bbox"][metric]
    return _finish(values, shots, cols, "VOC nAP50" if metric == "AP50" else "VOC07 nAP50", Path(out), dist,
                   f"PASCAL VOC novel classes, bbox {metric} (seed {seed})")


def run_cdfsod(seg, root: Path, out: Path, dist: DistContext, *, datasets: Sequence[str] | None = None,
               shots: Sequence[int] = CDFSOD_SHOTS, signature: dict, quiet: bool = False) -> str | None:
    """The CD-FSOD protocol over the datasets found under ``root``; returns the markdown table (rank 0).

    References: :func:`~no_time_to_train.data.convert.cdfsod_references` (the authors' K per class, as
    ``nttt convert cdfsod`` writes them; saved as ``refs.json`` per setting). Evaluation: every category of
    the dataset's ``test.json``, as the authors do (a test category without references scores 0 and a
    warning names it).
    """
    from .data.convert import cdfsod_dataset, cdfsod_references

    found = cdfsod_dataset(root, names=datasets, shots=tuple(shots))
    values, cols = {}, list(found)
    for name, info in found.items():
        test = CocoDataset(info["test_json"], info["test_images"])
        cat_ids = sorted(int(c["id"]) for c in test.categories)
        for k in shots:
            d = Path(out) / name / f"{k}shot"
            d.mkdir(parents=True, exist_ok=True)
            ref_data = CocoDataset(info["shots"][k], info["train_images"])
            refs = cdfsod_references(info["shots"][k], k)
            _check_cdfsod_categories(refs, cat_ids, info["shots"][k], info["test_json"])
            if dist.is_main and not (d / "refs.json").exists():
                write_references(d / "refs.json", refs, {**refs.meta, "dataset": name, "source": "cdfsod"})
            metrics = _run_setting(seg, dist, d, refs.flat(), ref_data, test, cat_ids,
                                   {**signature, "dataset": name, "shots": k}, quiet)
            if metrics is not None:
                values[(k, name)] = metrics["bbox"]["AP"]
    return _finish(values, shots, cols, "CD-FSOD nAP", Path(out), dist, "CD-FSOD, bbox nAP (COCO AP)")


def _check_cdfsod_categories(refs, test_ids: Sequence[int], shot_json: Path, test_json: Path) -> None:
    """Reference classes must be test classes; test classes without references are evaluated but warned about."""
    unknown = sorted(set(refs) - set(test_ids))
    if unknown:
        raise InputError(f"The shot file {str(shot_json)!r} has category ids {unknown} that {str(test_json)!r} "
                         f"does not have: the shot and test files must share category ids.")
    missing = sorted(set(test_ids) - set(refs))
    if missing:
        log.warning("%s: test categories %s have no reference in %s; they are evaluated (as the authors do) "
                    "and score 0", test_json, missing, shot_json)


def pseudo_masks(seg, dataset: CocoDataset, out_json: Path, quiet: bool = False) -> dict:
    """A copy of a box-only COCO set whose annotations get masks from SAM2 prompted with their boxes.

    The file is marked ``info.pseudo_masks = true``; metrics computed against it say so. Crowd/difficult
    annotations keep no mask (COCOeval ignores them anyway). A box whose SAM2 mask is empty gets the filled
    box rectangle, clipped to the image (:func:`~no_time_to_train.prompts.mask_from_box`, the authors'
    fallback); a warning says how many did, and ``info.pseudo_masks_box_fallbacks`` records the number.
    """
    from tqdm import tqdm

    from .imageio import load_image
    from .prompts import mask_from_box
    from .types import encode_rle

    data = dataset.dataset
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    new_anns, fell_back, prompted = [], [], 0
    for image_id in tqdm(dataset.image_ids, desc="pseudo-masks", unit="img", disable=quiet):
        anns = by_image.get(image_id, [])
        if not anns:
            continue
        image = load_image(dataset.image_path(image_id))
        for a in anns:
            a = dict(a)
            x, y, w, h = a["bbox"]
            if not a.get("iscrowd") and w > 0 and h > 0:
                mask, empty = mask_from_box(seg.proposer, image, (x, y, x + w, y + h),
                                            name=f"annotation {a['id']} of {dataset.json_path or 'the dataset'}")
                a["segmentation"] = encode_rle(mask)
                prompted += 1
                if empty:
                    fell_back.append(str(a["id"]))
            new_anns.append(a)
    if fell_back:
        log.warning("%d of %d boxes got an empty SAM2 mask and use the filled box rectangle instead (as the "
                    "authors' box-to-mask step): annotations %s", len(fell_back), prompted,
                    ", ".join(fell_back[:10]) + (" ..." if len(fell_back) > 10 else ""))
    out = {**data, "annotations": new_anns, "info": {**(data.get("info") or {}), "pseudo_masks": True,
                                                      "pseudo_masks_by": "SAM2 box prompts (no-time-to-train)",
                                                      "pseudo_masks_box_fallbacks": len(fell_back)}}
    write_json_atomic(out_json, out)
    return out
