"""Video mode of the benchmark (``python benchmarks/bench.py --video ...``): what tracking costs per frame.

    python benchmarks/bench.py --video --size large --frames 8 --frame-size 240x320 --intervals 4,8 \
        --out benchmarks/results/video_large_cpu.json [--device cuda] [--max-tracks 3] [--rss-frames 600]

Models are random (``--size large``: the paper's SAM2 Hiera-L with its video modules + DINOv2 ViT-L/14; ``test``:
the test-suite's tiny ones), the clip a window panning across a coco-mini image. Reported:

- ``image_pipeline_s``: the paper's image pipeline on one frame (what running it on every frame costs per frame);
- per keyframe interval: seconds per frame, frames/s, the mean cost of a keyframe (propagation + image pipeline +
  association) and of a propagated frame (SAM2's video model only), with the number of live tracks (random
  detections with ``min_score 0``, capped by ``--max-tracks``; the backward pass off, to time the two parts);
- ``--rss-frames N``: the process RSS every 50 frames while the tiny models track a synthetic video of N frames
  (64x64; constant RSS = memory that does not grow with the video's length).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from no_time_to_train import MethodConfig, ReferenceSegmenter  # noqa: E402
from no_time_to_train.imageio import load_image  # noqa: E402
from no_time_to_train.video.config import TrackConfig  # noqa: E402
from no_time_to_train.video.track import VideoTracker  # noqa: E402

COCO_MINI = ROOT.parent / "shared" / "data" / "coco-mini"


def build(size: str, device: str, points: int) -> ReferenceSegmenter:
    from transformers import Dinov2Model, Sam2VideoModel

    from no_time_to_train.models.configs import dinov2_config, sam2_config, sam2_video_config, sam2_video_test_config

    torch.manual_seed(0)
    if size == "large":
        video, enc, side = Sam2VideoModel(sam2_video_config(sam2_config("large"))), Dinov2Model(dinov2_config("vitl14")), 1024
    else:
        video, enc, side = Sam2VideoModel(sam2_video_test_config()), Dinov2Model(dinov2_config("test-tiny")), 256
    seg = ReferenceSegmenter(sam2=video.eval(), encoder=enc.eval(), device=device,
                             config=MethodConfig(points_per_side=points, sam_image_size=side))
    image = load_image(sorted((COCO_MINI / "val2017").glob("*.jpg"))[0])
    for k, (name, box) in enumerate([("a", (20, 40, 200, 220)), ("b", (150, 60, 380, 300)), ("c", (0, 0, 120, 90))]):
        m = np.zeros(image.shape[:2], bool)
        m[box[1]:box[3], box[0]:box[2]] = True
        seg.add_reference(image, m, category=name, category_id=k + 1)
    return seg


def clip(n: int, hw: tuple[int, int], image_index: int = 1):
    """``n`` frames of ``hw`` pixels: a window panning right and down across a coco-mini image (a generator)."""
    image = load_image(sorted((COCO_MINI / "val2017").glob("*.jpg"))[image_index])
    h, w = hw
    big = np.asarray(image) if image.shape[0] >= h + n and image.shape[1] >= w + 2 * n else np.tile(image, (3, 3, 1))
    for i in range(n):
        y, x = (i * 1) % (big.shape[0] - h), (i * 2) % (big.shape[1] - w)
        yield np.ascontiguousarray(big[y:y + h, x:x + w])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def time_tracking(seg, frames, config: TrackConfig, sync) -> dict:
    tracker = VideoTracker(seg, config)
    times, keys, tracks = [], [], []
    start = time.perf_counter()
    last = start
    for r in tracker.run(frames):
        sync()
        now = time.perf_counter()
        times.append(now - last)
        keys.append(config.is_keyframe(r.index))
        tracks.append(len(tracker.book.live))
        last = now
    total = time.perf_counter() - start
    kf = [t for t, k in zip(times, keys) if k]
    prop = [t for t, k in zip(times, keys) if not k]
    return {"keyframe_interval": config.keyframe_interval, "frames": len(times), "seconds": round(total, 2),
            "frames_per_s": round(len(times) / total, 4), "s_per_frame": round(total / len(times), 3),
            "keyframe_s": round(float(np.mean(kf)), 3) if kf else None,
            "propagated_frame_s": round(float(np.mean(prop)), 3) if prop else None,
            "live_tracks_mean": round(float(np.mean(tracks)), 2), "frame_s": [round(t, 3) for t in times]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="test", choices=["test", "large"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--frame-size", default="240x320", help="HxW of the clip's frames")
    p.add_argument("--intervals", default="4,8", help="keyframe intervals to time (comma-separated)")
    p.add_argument("--max-tracks", type=int, default=3)
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--rss-frames", type=int, default=0, help="also track N tiny frames and sample the RSS")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    hw = tuple(int(v) for v in args.frame_size.lower().split("x"))
    load_before = os.getloadavg()
    seg = build(args.size, args.device, args.points_per_side)
    frame = next(clip(1, hw))
    seg.predict(frame)  # warm-up (first-call allocations, lazy model set-up)
    sync()
    t0 = time.perf_counter()
    seg.predict(frame)
    sync()
    image_s = time.perf_counter() - t0
    print(f"image pipeline: {image_s:.2f} s per frame", flush=True)
    runs = []
    for interval in [int(v) for v in args.intervals.split(",") if v]:
        cfg = TrackConfig(keyframe_interval=interval, min_score=0.0, max_tracks=args.max_tracks, backward=False)
        run = time_tracking(seg, clip(args.frames, hw), cfg, sync)
        run["speedup_vs_image_pipeline"] = round(image_s / run["s_per_frame"], 2)
        print(json.dumps({k: v for k, v in run.items() if k != "frame_s"}), flush=True)
        runs.append(run)
    report = {"size": args.size, "device": args.device, "frame_size": list(hw), "points_per_side": args.points_per_side,
              "max_tracks": args.max_tracks, "image_pipeline_s": round(image_s, 3), "runs": runs,
              "torch_threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_before": [round(v, 2) for v in load_before],
              "load_after": [round(v, 2) for v in os.getloadavg()]}
    if args.rss_frames:
        tiny = build("test", args.device, 4)
        samples = []
        cfg = TrackConfig(keyframe_interval=30, min_score=0.0, max_tracks=5)
        for r in VideoTracker(tiny, cfg).run(clip(args.rss_frames, (64, 64), image_index=2)):
            if r.index % 50 == 0:
                samples.append([r.index, round(rss_bytes() / 2**20, 1)])
                print(f"frame {r.index}: RSS {samples[-1][1]} MiB", flush=True)
        report["rss_mib_by_frame"] = samples
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
