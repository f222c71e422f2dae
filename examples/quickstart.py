"""Quick start: build a 1-shot memory from coco-mini's train images and segment its val images.

Run with `make demo [SAM2=PATH] [ENCODER=PATH] [DEVICE=cuda]` (or `python examples/quickstart.py [--sam2 S]
[--encoder E] [--device cuda]`). Without --sam2/--encoder the first run downloads the paper's models from the
Hugging Face hub (SAM2 Hiera-L, DINOv2 ViT-L/14); offline, it stops at once with one message naming both.
Writes out/demo/: memory.safetensors, results.json, metrics.json and overlays of the first images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from no_time_to_train import CheckpointError, ReferenceSegmenter
from no_time_to_train.data.coco import CocoDataset
from no_time_to_train.data.sampling import sample_references
from no_time_to_train.evaluation import evaluate_coco, format_metrics_table
from no_time_to_train.imageio import load_image
from no_time_to_train.models.checkpoints import check_models
from no_time_to_train.visualize import overlay

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "coco-mini"
CATEGORIES = ["person", "car", "dog", "cat", "bird", "bus"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA, help="a COCO-style folder with train2017/, val2017/, annotations/")
    ap.add_argument("--sam2", default=None, help="SAM2 checkpoint: Meta .pt file, HF directory or hub id "
                    "(make demo SAM2=...; default: facebook/sam2-hiera-large)")
    ap.add_argument("--encoder", default=None, help="DINOv2 checkpoint: Meta .pth file, HF directory or hub id "
                    "(make demo ENCODER=...; default: facebook/dinov2-large)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=4, help="how many val images to segment")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    return ap.parse_args(argv)


def check_weights(args: argparse.Namespace) -> None:
    """Fail before any work, in one message, when either model cannot be loaded (say, offline and not cached)."""
    try:
        check_models(sam2=args.sam2, encoder=args.encoder)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}\nWith make: make demo SAM2=path/to/sam2_hiera_large.pt "
                              "ENCODER=path/to/dinov2_vitl14_pretrain.pth") from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_weights(args)
    args.out.mkdir(parents=True, exist_ok=True)

    train = CocoDataset(args.data / "annotations" / "instances_train2017.json", args.data / "train2017")
    val = CocoDataset(args.data / "annotations" / "instances_val2017.json", args.data / "val2017")
    cats = train.resolve_categories(",".join(CATEGORIES))

    seg = ReferenceSegmenter(sam2=args.sam2, encoder=args.encoder, device=args.device)
    refs = sample_references(train.dataset, [c["id"] for c in cats], shots=1, seed=33)
    for ref in refs.flat():
        x, y, w, h = ref["bbox"]
        seg.add_reference(train.image_path(ref["image_id"]), train.ann_mask(ref["annotation_id"]),
                          category=ref["category_name"], category_id=ref["category_id"],
                          crop_box=(int(x), int(y), int(x + w), int(y + h)))
    seg.save_memory(args.out / "memory.safetensors")

    results = []
    for image_id in val.image_ids[: args.images]:
        image = load_image(val.image_path(image_id))
        dets = seg.predict(image)
        results += dets.to_coco(image_id)
        overlay(image, dets, min_score=0.3).save(args.out / f"{image_id}.jpg")
        print(f"image {image_id}: {len(dets)} detections, best: "
              + ", ".join(f"{n} {s:.2f}" for n, s in zip(dets.names[:3], dets.scores[:3])))
    (args.out / "results.json").write_text(json.dumps(results))
    gt = {**val.dataset, "images": [im for im in val.dataset["images"] if im["id"] in set(val.image_ids[: args.images])]}
    metrics = evaluate_coco(gt, results, [c["id"] for c in cats])
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str))
    print(format_metrics_table(metrics))


if __name__ == "__main__":
    import sys

    from no_time_to_train import NtttError

    try:
        main()
    except NtttError as exc:
        sys.exit(f"quickstart: error: {exc}")
