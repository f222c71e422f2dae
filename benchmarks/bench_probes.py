"""Targeted measurements beside the per-image run: decoder memory per prompt, post-processing worst case,
and a whole ``nttt evaluate`` run; used by ``bench.py``."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from bench_measure import Timer, peak_rss_bytes, reset_peak_rss, rss_bytes

from no_time_to_train import ReferenceSegmenter
from no_time_to_train.imageio import load_image
from no_time_to_train.predictor import Proposals


def probe_decoder(seg: ReferenceSegmenter, image: Path, sizes=(8, 32), repeats: int = 3) -> dict:
    """Peak memory and time of one mask-decoder call at two batch sizes, for both decoders, interleaved.

    Memory: the RSS high-water mark above the RSS before the call (CUDA: max allocated above allocated);
    bytes per prompt = the slope between the two batch sizes. Time: the best of ``repeats``.
    """
    from no_time_to_train.matching import point_grid

    emb = seg.encode_sam(seg.to_sam_frame(load_image(image)))
    pts = point_grid(32, seg.config.sam_image_size)
    cuda = seg.device.type == "cuda"
    res: dict = {"shared_image": {}, "transformers": {}}
    for rep in range(repeats + 1):  # the first round warms up
        for name, shared in (("shared_image", True), ("transformers", False)):
            seg.proposer.shared_image_decoder = shared
            for b in sizes:
                base = rss_bytes()
                reset_peak_rss()
                if cuda:
                    torch.cuda.synchronize(seg.device)
                    torch.cuda.reset_peak_memory_stats(seg.device)
                    cbase = torch.cuda.memory_allocated(seg.device)
                t0 = time.perf_counter()
                seg.proposer.decode(emb, pts[:b, None], torch.ones(b, 1, dtype=torch.int32))
                if cuda:
                    torch.cuda.synchronize(seg.device)
                dt = time.perf_counter() - t0
                if rep == 0:
                    continue
                entry = res[name].setdefault(str(b), {"rss_delta": 0, "seconds_per_prompt": float("inf")})
                entry["rss_delta"] = max(entry["rss_delta"], peak_rss_bytes() - base)
                entry["seconds_per_prompt"] = min(entry["seconds_per_prompt"], dt / b)
                if cuda:
                    entry["cuda_delta"] = max(entry.get("cuda_delta", 0),
                                              torch.cuda.max_memory_allocated(seg.device) - cbase)
    seg.proposer.shared_image_decoder = True
    lo, hi = (str(b) for b in sizes)
    key = "cuda_delta" if cuda else "rss_delta"
    return {name: {"batches": v, "bytes_per_prompt": (v[hi][key] - v[lo][key]) / (sizes[1] - sizes[0])}
            for name, v in res.items()}


def synthetic_proposals(n: int, size: int = 256, seed: int = 0) -> Proposals:
    """``n`` elliptic blob proposals of varied size and place (a stand-in for real SAM2 masks)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = torch.rand(n, 2, generator=g) * size
    r = 4 + torch.rand(n, 2, generator=g) * 60
    logits = torch.empty(n, size, size)
    for s in range(0, n, 64):
        cs, rs = c[s : s + 64], r[s : s + 64]
        d = ((xx - cs[:, 0, None, None]) / rs[:, 0, None, None]) ** 2 + ((yy - cs[:, 1, None, None]) / rs[:, 1, None, None]) ** 2
        logits[s : s + 64] = (1 - d) * 8
    return Proposals(logits, 0.4 + 0.6 * torch.rand(n, generator=g))


def scaled_image(image: Path, megapixels: float | None):
    """``image`` as an ``(H, W, 3)`` array, resized (PIL bicubic, aspect kept) to about ``megapixels`` if given."""
    img = load_image(image)
    if not megapixels:
        return img
    from PIL import Image

    scale = (megapixels * 1e6 / (img.shape[0] * img.shape[1])) ** 0.5
    size = (round(img.shape[1] * scale), round(img.shape[0] * scale))
    return np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC))


def stress_post(seg: ReferenceSegmenter, image: Path, timer: Timer, n: int = 1024, repeats: int = 2,
                megapixels: float | None = None) -> dict:
    """Post-processing stages on ``n`` synthetic proposals (many NMS survivors: the worst case).

    ``megapixels``: run them on the image scaled to that size, to measure the full-resolution stages' peak
    memory on large photos (the ``peak_rss`` of the report; ``rss_before`` is the process's RSS before them).
    """
    img = scaled_image(image, megapixels)
    tokens = seg.encode_features(seg.to_sam_frame(img))
    prototypes = seg.memory.prototypes(seg.config.prototype)
    props = synthetic_proposals(n)
    props = Proposals(props.logits.to(seg.device), props.iou.to(seg.device))
    runs = []
    rss_before = rss_bytes()
    for _ in range(repeats):
        rec: dict = {}
        cand = timer.run(rec, "score_nms", seg.select, props, tokens, prototypes)
        dets = timer.run(rec, "upsample_merge", seg.merge, cand, img.shape[:2])
        timer.run(rec, "rle", dets.to_coco, 0)
        runs.append(rec)
        counts = {"survivors": int(len(cand.scores)), "detections": len(dets)}
        del cand, dets  # the next repeat's peak must not include this one's outputs
    best = {k: min(r[k]["seconds"] for r in runs) for k in runs[0]}
    return {"proposals": n, **counts, "image_size": list(img.shape[:2]),
            "seconds_min_of_%d" % repeats: best, "peak_rss": max(r[k]["peak_rss"] for r in runs for k in r),
            "rss_before": rss_before}


def evaluate_run(seg: ReferenceSegmenter, annotations: Path, images: list[Path], timer: Timer) -> dict:
    """Wall time of a whole ``nttt evaluate`` run over ``images`` (the same path as the command).

    Runs :func:`no_time_to_train.pipeline.evaluate_dataset` on the annotations restricted to ``images`` (matched
    by file name): prefetching image loader, per-image result store with fsync, results.json, COCOeval. Output
    goes to a temporary folder. Returns images, seconds, images/s and peak memory (RSS; CUDA where used), timed
    by ``timer`` like any stage. The metrics are not returned: with random weights they mean nothing.
    """
    import tempfile

    from no_time_to_train.data.coco import CocoDataset, load_coco_json
    from no_time_to_train.distributed import DistContext
    from no_time_to_train.pipeline import evaluate_dataset

    data = load_coco_json(annotations)
    names = {p.name for p in images}
    keep = {int(im["id"]) for im in data["images"] if im["file_name"] in names}
    if not keep:
        raise SystemExit(f"--evaluate: none of the benchmark images is listed in {annotations}")
    data = {**data, "images": [im for im in data["images"] if int(im["id"]) in keep],
            "annotations": [a for a in data["annotations"] if int(a["image_id"]) in keep]}
    dataset = CocoDataset(data, images[0].parent)
    rec: dict = {}
    with tempfile.TemporaryDirectory(prefix="nttt-bench-") as out:
        timer.run(rec, "evaluate", evaluate_dataset, seg, dataset, [int(c) for c in seg.memory.category_ids], out,
                  DistContext(), signature={"benchmark": True}, quiet=True)
    run = rec["evaluate"]
    return {"annotations": str(annotations), "images": len(keep), **run,
            "images_per_second": len(keep) / run["seconds"]}
