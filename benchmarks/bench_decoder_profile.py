"""Which operations dominate the mask decoder under each runtime: one batch of point prompts, profiled.

    NTTT_CACHE_DIR=DIR python benchmarks/bench_decoder_profile.py --preset paper --batch 64 --out OUT.json

Random models of the preset's architecture (``presets.random_models``, seed 0: the same weights as
``bench.py --preset P --sam2 random``, so the export cache is shared). The decoder graph (``decoder_points``,
the shared-image multimask decoder with the prompt encoder) runs ``--repeats`` times per runtime after one
warm-up: torch under ``torch.profiler`` (self CPU time per aten operator), ONNX Runtime with its profiler (time
per node type), OpenVINO with ``PERF_COUNT`` (time per layer type). Prints the top operations of each.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from no_time_to_train.matching import point_grid  # noqa: E402
from no_time_to_train.models.export import cached_export, read_manifest  # noqa: E402
from no_time_to_train.models.proposer import make_proposer  # noqa: E402
from no_time_to_train.presets import get_preset, random_models  # noqa: E402


def _top(times: dict[str, float], n: int = 12) -> list[tuple[str, float, float]]:
    total = sum(times.values()) or 1.0
    return [(k, v, v / total) for k, v in sorted(times.items(), key=lambda kv: -kv[1])[:n]]


def profile_torch(proposer, emb, points, labels, repeats: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    proposer.decode(emb, points, labels)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            proposer.decode(emb, points, labels)
    wall = (time.perf_counter() - t0) / repeats
    times = {e.key: e.self_cpu_time_total / 1e6 / repeats for e in prof.key_averages()}
    return {"seconds_per_batch": wall, "top": _top(times)}


def profile_onnxruntime(path: Path, feeds: dict, repeats: int, out_dir: Path) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(out_dir / "ort_profile")
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    t0 = time.perf_counter()
    for _ in range(repeats):
        sess.run(None, feeds)
    wall = (time.perf_counter() - t0) / repeats
    events = json.loads(Path(sess.end_profiling()).read_text())
    times: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            times[e["args"]["op_name"]] += e["dur"] / 1e6 / (repeats + 1)
    return {"seconds_per_batch": wall, "top": _top(times)}


def profile_openvino(path: Path, feeds: dict, repeats: int) -> dict:
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer(feeds)
    times: dict[str, float] = defaultdict(float)
    t0 = time.perf_counter()
    for _ in range(repeats):
        request.infer(feeds)
        for info in request.profiling_info:
            times[info.node_type] += info.real_time.total_seconds() / repeats
    wall = (time.perf_counter() - t0) / repeats
    return {"seconds_per_batch": wall, "top": _top(times)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--batch", type=int, default=64, help="prompts per decoder call (the CPU default is 64)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--runtimes", default="torch,onnxruntime,openvino")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    model, _ = random_models(get_preset(args.preset))
    proposer = make_proposer(model)
    directory = cached_export("proposer", proposer, {}, "onnxruntime")
    graph = directory / read_manifest(directory, "proposer")["graphs"]["decoder_points"]["file"]
    size = proposer.image_size
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))
    emb = proposer.encode(image)
    points = point_grid(32, size)[: args.batch, None, :]
    labels = torch.ones(len(points), 1, dtype=torch.int64)
    feeds = {**{k: v.numpy() for k, v in emb.tensors().items()}, "points": points.float().numpy(),
             "labels": labels.numpy()}
    report = {"preset": args.preset, "batch": args.batch, "threads": torch.get_num_threads(), "runtimes": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for runtime in args.runtimes.split(","):
        if runtime == "torch":
            report["runtimes"][runtime] = profile_torch(proposer, emb, points, labels, args.repeats)
        elif runtime == "onnxruntime":
            report["runtimes"][runtime] = profile_onnxruntime(graph, feeds, args.repeats, args.out.parent)
        else:
            report["runtimes"][runtime] = profile_openvino(graph, feeds, args.repeats)
        r = report["runtimes"][runtime]
        print(f"{runtime}: {r['seconds_per_batch']:.2f} s per batch of {args.batch} prompts")
        for name, secs, share in r["top"]:
            print(f"  {name:<40} {secs:8.3f} s  {100 * share:5.1f} %")
    report["load_average"] = list(os.getloadavg())
    args.out.write_text(json.dumps(report, indent=1, default=lambda v: float(v) if isinstance(v, np.floating) else v))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
