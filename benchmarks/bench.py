"""Speed and memory benchmark of ReferenceSegmenter, per image and per stage, plus fast modes vs the faithful path.

    python benchmarks/bench.py --sam2 random --encoder random --size tiny --images DIR --out OUT.json \
        [--device cpu|cuda] [--dtype float32|bfloat16] [--points-per-side N] [--max-images N] \
        [--modes pps16,guided,bf16,...] [--runtimes torch,onnxruntime,openvino,compiled] [--probe-decoder]
        [--stress-post N] [--evaluate]
    python benchmarks/bench.py --video [--size large] [--frames 8] [--intervals 4,8] ...   (tracking: bench_video.py)

``--sam2``/``--encoder`` take anything ReferenceSegmenter takes (Meta file, HF directory, hub id) or ``random``:
a randomly initialised model of ``--size`` (test = the test-suite's tiny models, tiny = SAM2 Hiera-T + DINOv2 ViT-S/14, small = Hiera-S + ViT-B/14,
large = Hiera-L + ViT-L/14, the paper's). Random weights give meaningful timings (the work per image does not
depend on the weights, except how many proposals survive the filters: reported as ``proposals`` and
``survivors``) but meaningless detections: never read accuracy into them.

Stages, timed one after the other with CUDA synchronised around each (per image): image decode, preprocess
(squash to the SAM frame), SAM2 encoder, DINOv2, mask decoder (all prompts, with best-token choice and IoU filter),
scoring + NMS, upsampling + soft merging (+ top-k), RLE (``Detections.to_coco``). Peak memory per stage: process
RSS high-water mark (reset before each stage through ``/proc/self/clear_refs``) and, on CUDA,
``torch.cuda.max_memory_allocated``. ``images/s`` is the whole timed loop (I/O included) over the images;
``--evaluate`` also times a whole ``nttt evaluate`` run over them (prefetching loader, result store, COCOeval).
The JSON report holds per-stage mean seconds and peak memory; a markdown table is written beside it, and
``python benchmarks/bench_report.py A.json B.json ...`` puts several reports (sizes, dtypes, devices) in one table.

Fast modes (``--modes``, comma-separated; ``+`` combines, e.g. ``bf16+guided``): ``bf16``/``fp16`` (autocast),
``sdpa``/``eager`` (attention implementation), ``compile`` (torch.compile), ``batch256``/``batch1024`` (decoder batch of 256 / 1024
prompts), ``pps16`` (16x16 grid), ``guided`` (prompts at the 256 patches most similar to a prototype),
``hf-decoder`` (transformers' own mask decoder, the path before the shared-image decoder). Each runs on the same
images; the report gives its speed-up over the faithful run and its agreement with the faithful outputs: the
fraction of faithful detections matched one-to-one by a detection of the same label with mask IoU >= 0.9, and
the COCO AP (bbox and segm) of the mode's outputs scored against the faithful outputs taken as ground truth.

Runtimes (``--runtimes``, comma-separated; ``torch`` is the faithful run itself): ``onnxruntime``, ``openvino``
(the models exported to ONNX once, into the cache, before timing: ``setup_seconds``) and ``compiled``
(torch.compile; one untimed warm-up image pays the compilation). Each is a mode with the runtimes' "same
outputs" criterion (``no_time_to_train.agreement``: same label, |score difference| <= 1e-4, mask IoU >= 0.99
for >= 99 % of detections) and its own table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bench_compare import agreement  # noqa: E402
from bench_measure import Timer, peak_rss_bytes  # noqa: E402
from bench_probes import evaluate_run, probe_decoder, stress_post  # noqa: E402
from bench_report import MODEL_STAGES, markdown, summarise  # noqa: E402

from no_time_to_train import MethodConfig, ReferenceSegmenter  # noqa: E402
from no_time_to_train.agreement import compare_runs  # noqa: E402
from no_time_to_train.imageio import load_image  # noqa: E402

COCO_MINI = ROOT.parent / "shared" / "data" / "coco-mini"
SIZES = {"test": ("test-tiny", "test-tiny"), "tiny": ("tiny", "vits14"), "small": ("small", "vitb14"), "large": ("large", "vitl14")}
# references for the benchmark memory: (name, COCO category id)
REF_CATEGORIES = (("person", 1), ("car", 3), ("dog", 18))


# -- set-up ------------------------------------------------------------------------------------------------
def build_models(args):
    """Model objects (random) or sources (anything ReferenceSegmenter loads) for SAM2 and the encoder.

    With ``--preset``, ``random`` models have the preset's architecture (``--size`` is ignored)."""
    sam_variant, vit_variant = SIZES[args.size]
    sam2, encoder = args.sam2, args.encoder
    if args.preset:
        from no_time_to_train.presets import get_preset, random_models

        preset = get_preset(args.preset)
        rand_sam2, rand_encoder = random_models(preset) if "random" in (sam2, encoder) else (None, None)
        sam2 = rand_sam2 if sam2 == "random" else sam2 or preset.proposer
        encoder = rand_encoder if encoder == "random" else encoder or preset.encoder
        return sam2, encoder
    if sam2 == "random" or encoder == "random":
        from transformers import Dinov2Model, Sam2Model

        from no_time_to_train.models.configs import dinov2_config, sam2_config, sam2_test_config

        torch.manual_seed(0)
        if sam2 == "random":
            sam2 = Sam2Model(sam2_test_config() if args.size == "test" else sam2_config(sam_variant)).eval()
        if encoder == "random":
            encoder = Dinov2Model(dinov2_config(vit_variant)).eval()
    return sam2, encoder


def reference_items(n_per_class: int, images: list[Path]) -> list[dict]:
    """A few references: the first valid instances of person/car/dog in coco-mini train, else synthetic boxes."""
    ann_file = COCO_MINI / "annotations" / "instances_train2017.json"
    items = []
    if ann_file.is_file():
        from pycocotools.coco import COCO

        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(ann_file))
        for name, cat_id in REF_CATEGORIES:
            taken = 0
            for ann in coco.loadAnns(coco.getAnnIds(catIds=[cat_id], iscrowd=False)):
                if taken == n_per_class:
                    break
                if min(ann["bbox"][2:]) < 32:
                    continue
                info = coco.loadImgs(ann["image_id"])[0]
                items.append(dict(image=str(COCO_MINI / "train2017" / info["file_name"]),
                                  mask=coco.annToMask(ann).astype(bool), category=name, category_id=cat_id))
                taken += 1
        return items
    for k, (name, cat_id) in enumerate(REF_CATEGORIES):  # synthetic: a centred box in a benchmark image
        for j in range(n_per_class):
            img = load_image(images[(k * n_per_class + j) % len(images)])
            h, w = img.shape[:2]
            mask = np.zeros((h, w), bool)
            mask[h // 4 + 5 * k : 3 * h // 4, w // 4 : 3 * w // 4 - 5 * k] = True
            items.append(dict(image=img, mask=mask, category=name, category_id=cat_id))
    return items


def list_images(folder: Path, limit: int | None) -> list[Path]:
    exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    if not folder.is_dir():
        raise SystemExit(f"--images {folder}: not a folder; pass a folder of images (e.g. coco-mini/val2017)")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)
    if not paths:
        raise SystemExit(f"no images in {folder}")
    return paths[:limit] if limit else paths


# -- one run over the images ---------------------------------------------------------------------------------
def run_one(seg: ReferenceSegmenter, path: Path, i: int, timer: Timer, log=print) -> tuple[dict, list[dict]]:
    """All stages of ``seg`` on one image, timed one by one; returns (record, COCO results)."""
    prototypes = seg.memory.prototypes(seg.config.prototype)
    rec: dict = {}
    img = timer.run(rec, "decode", load_image, path)
    t_sam = timer.run(rec, "preprocess", seg.to_sam_frame, img)
    emb = timer.run(rec, "sam2_encoder", seg.encode_sam, t_sam)
    tokens = timer.run(rec, "dinov2", seg.encode_features, t_sam)
    props = timer.run(rec, "mask_decoder", seg.propose, emb, tokens, prototypes)
    cand = timer.run(rec, "score_nms", seg.select, props, tokens, prototypes)
    dets = timer.run(rec, "upsample_merge", seg.merge, cand, img.shape[:2])
    coco = timer.run(rec, "rle", dets.to_coco, i)
    total = sum(r["seconds"] for r in rec.values())
    meta = {"image": path.name, "size": list(img.shape[:2]), "prompts": int(len(seg.prompt_points(tokens, prototypes))),
            "proposals": int(len(props.iou)), "survivors": int(len(cand.scores)), "detections": len(dets),
            "total_seconds": total}
    log(f"  [{i + 1}] {path.name} {img.shape[1]}x{img.shape[0]}: {total:.2f} s "
        f"(encoder {rec['sam2_encoder']['seconds']:.2f}, decoder {rec['mask_decoder']['seconds']:.2f}, "
        f"dinov2 {rec['dinov2']['seconds']:.2f}, rest {total - sum(rec[s]['seconds'] for s in MODEL_STAGES):.2f}) "
        f"proposals {meta['proposals']} survivors {meta['survivors']} detections {meta['detections']}")
    return {"stages": rec, **meta}, coco


def run_images(seg: ReferenceSegmenter, images: list[Path], timer: Timer, warmup: int = 0, log=print):
    """Per-stage timings of ``seg`` on ``images``; returns (per-image records, COCO results per image, wall)."""
    for path in images[:warmup]:
        seg.predict(path)
    records, outputs = [], []
    t_start = time.perf_counter()
    for i, path in enumerate(images):
        rec, coco = run_one(seg, path, i, timer, log)
        records.append(rec)
        outputs.append(coco)
    return records, outputs, time.perf_counter() - t_start


# -- fast modes ---------------------------------------------------------------------------------------------
def mode_options(mode: str, device: torch.device) -> tuple[dict, dict, str | None]:
    """``(segmenter kwargs, config overrides, reason to skip or None)`` of a ``+``-combined mode name."""
    kwargs: dict = {}
    overrides: dict = {}
    for part in mode.split("+"):
        if part in ("bf16", "fp16"):
            if part == "fp16" and device.type != "cuda":
                return kwargs, overrides, "fp16 autocast is CUDA-only here"
            kwargs["autocast"] = part
        elif part in ("sdpa", "eager"):
            kwargs["attn_implementation"] = part
        elif part == "compile":
            kwargs["compile"] = True
        elif part in ("batch256", "batch1024"):
            overrides["point_batch_size"] = int(part[5:])
        elif part == "pps16":
            overrides["points_per_side"] = 16
        elif part == "guided":
            overrides["prompt_mode"] = "guided"
        elif part == "hf-decoder":
            kwargs["_hf_decoder"] = True
        elif part in ("onnxruntime", "openvino", "compiled"):
            kwargs["runtime"] = part
        else:
            raise SystemExit(f"unknown mode {part!r}")
    return kwargs, overrides, None


def make_segmenter(sam2, encoder, args, config: MethodConfig, memory=None, **kwargs) -> ReferenceSegmenter:
    hf_decoder = kwargs.pop("_hf_decoder", False)
    kwargs.setdefault("runtime", "torch")  # the faithful run and the fast modes are PyTorch unless --runtimes says
    seg = ReferenceSegmenter(sam2=sam2, encoder=encoder, device=args.device, dtype=args.dtype, config=config,
                             memory=memory, **kwargs)
    seg.proposer, seg.encoder  # load now (model loading is not part of the per-image figures)
    if hf_decoder:
        seg.proposer.shared_image_decoder = False
    return seg


def main(argv=None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if "--video" in args_in:  # the video mode (bench_video.py) has options of its own
        from bench_video import main as video_main

        return video_main([a for a in args_in if a != "--video"])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sam2", required=True, help="SAM2 checkpoint/dir/hub id, or 'random'")
    p.add_argument("--encoder", required=True, help="patch encoder (DINOv2 or DINOv3 ViT) checkpoint/dir/hub id, or 'random'")
    p.add_argument("--images", required=True, type=Path, help="folder of target images")
    p.add_argument("--out", required=True, type=Path, help="JSON report (a .md table is written beside it)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--size", default="tiny", choices=list(SIZES), help="architecture of 'random' models")
    p.add_argument("--preset", default=None, help="a preset's models (random ones of its architecture with "
                   "--sam2 random --encoder random) and settings; see no_time_to_train/presets.py")
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--point-batch-size", default="auto", help="decoder batch: an integer or 'auto'")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--refs-per-class", type=int, default=2, help="references per class (3 classes)")
    p.add_argument("--warmup", type=int, default=None, help="untimed images first (default: 1 on CUDA, 0 on CPU)")
    p.add_argument("--modes", default="", help="comma-separated fast modes to compare with the faithful run")
    p.add_argument("--runtimes", default="torch", help="comma-separated runtimes to compare: torch (the faithful "
                   "run), onnxruntime, openvino, compiled")
    p.add_argument("--probe-decoder", action="store_true", help="measure the decoder's peak memory per prompt")
    p.add_argument("--stress-post", type=int, default=0, metavar="N",
                   help="also time scoring/NMS/merging/RLE on N synthetic proposals (worst case)")
    p.add_argument("--stress-megapixels", type=float, default=None, metavar="MP",
                   help="run --stress-post on the first image scaled to about MP megapixels (large-photo memory)")
    p.add_argument("--interleave", action="store_true",
                   help="run every image through the faithful path and every mode in turn (fair on a busy machine; "
                        "images/s then comes from the per-image times)")
    p.add_argument("--evaluate", nargs="?", const="auto", type=str, default=None, metavar="ANNOTATIONS",
                   help="also time a whole `nttt evaluate` run over the images (COCO JSON listing them; default: "
                        "IMAGES/../annotations/instances_<folder name>.json)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    load_before = os.getloadavg()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cuda" else 0)
    images = list_images(args.images, args.max_images)
    annotations = None
    if args.evaluate:  # checked now, not after the long per-image run
        annotations = (args.images.parent / "annotations" / f"instances_{args.images.name}.json"
                       if args.evaluate == "auto" else Path(args.evaluate))
        if not annotations.is_file():
            raise SystemExit(f"--evaluate: no COCO annotation file {annotations}; pass the JSON that lists the "
                             f"images of {args.images} (--evaluate PATH)")
    pbs = args.point_batch_size if args.point_batch_size == "auto" else int(args.point_batch_size)
    config = MethodConfig(points_per_side=args.points_per_side, point_batch_size=pbs)
    if args.preset:
        from no_time_to_train.presets import get_preset

        config = config.replace(**get_preset(args.preset).settings)

    t0 = time.perf_counter()
    sam2, encoder = build_models(args)
    faithful = make_segmenter(sam2, encoder, args, config)
    load_seconds = time.perf_counter() - t0
    faithful.add_references(reference_items(args.refs_per_class, images))
    cat_ids = [int(i) for i in faithful.memory.category_ids]
    timer = Timer(device)
    if args.preset:
        from no_time_to_train.presets import get_preset

        arch = get_preset(args.preset).architecture
        setting = (f"preset {args.preset}: {arch[0]} {arch[1]}, {arch[2]} {arch[3]}"
                   + (" (random)" if "random" in (args.sam2, args.encoder) else "")
                   + f", {args.device}, {args.dtype}, {args.points_per_side}x{args.points_per_side} prompts")
    else:
        setting = (f"SAM2 {args.sam2 if args.sam2 != 'random' else 'random ' + SIZES[args.size][0]}, DINOv2 "
                   f"{args.encoder if args.encoder != 'random' else 'random ' + SIZES[args.size][1]}, {args.device}, "
                   f"{args.dtype}, {args.points_per_side}x{args.points_per_side} prompts")
    print(f"{setting}: {len(images)} images, memory of {len(faithful.memory)} references ({', '.join(faithful.categories)})")

    models = (faithful.proposer.model, faithful.encoder.model)
    orig_attn = {id(m): m.config._attn_implementation for m in models}

    def activate(seg: ReferenceSegmenter) -> None:
        """Give the shared models the attention backend ``seg`` asks for (modes must not leak into others)."""
        for m in models:
            want = seg.attn_implementation or orig_attn[id(m)]
            if m.config._attn_implementation != want:
                m.set_attn_implementation(want)

    modes: dict[str, ReferenceSegmenter] = {}
    report_modes: dict[str, dict] = {}
    runtimes = [r for r in args.runtimes.split(",") if r and r != "torch"]
    mode_warmup = {r: max(warmup, 1) if r == "compiled" else warmup for r in runtimes}
    for mode in [m for m in args.modes.split(",") if m] + runtimes:
        t_setup = time.perf_counter()
        kwargs, overrides, skip = mode_options(mode, device)
        if skip:
            report_modes[mode] = {"skipped": skip, "options": kwargs, "config_overrides": overrides}
            continue
        try:
            modes[mode] = make_segmenter(sam2 if isinstance(sam2, torch.nn.Module) else faithful.proposer.model,
                                         encoder if isinstance(encoder, torch.nn.Module) else faithful.encoder.model,
                                         args, config.replace(**overrides), memory=faithful.memory, **kwargs)
            report_modes[mode] = {"options": {k: v for k, v in kwargs.items()}, "config_overrides": overrides,
                                  "setup_seconds": time.perf_counter() - t_setup, "runtime": mode in runtimes}
        except Exception as exc:  # noqa: BLE001 - one failing mode must not lose the others' figures
            report_modes[mode] = {"skipped": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}
        finally:
            activate(faithful)

    results: dict[str, tuple[list, list, float]] = {}
    if args.interleave:  # every image through every mode in turn: a fair comparison on a busy machine
        runs = {"faithful": faithful, **modes}
        for name, seg in runs.items():
            activate(seg)
            for path in images[:mode_warmup.get(name, warmup)]:
                seg.predict(path)
        recs: dict[str, list] = {name: [] for name in runs}
        outs: dict[str, list] = {name: [] for name in runs}
        for i, path in enumerate(images):
            for name, seg in list(runs.items()):
                print(f"{name}:")
                activate(seg)
                try:
                    rec, coco = run_one(seg, path, i, timer)
                except Exception as exc:  # noqa: BLE001
                    if name == "faithful":
                        raise
                    report_modes[name] = {"skipped": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}
                    del runs[name], modes[name]
                    continue
                recs[name].append(rec)
                outs[name].append(coco)
        activate(faithful)
        for name in runs:
            results[name] = (recs[name], outs[name], sum(r["total_seconds"] for r in recs[name]))
    else:
        print("faithful (fp32 settings as given):")
        results["faithful"] = run_images(faithful, images, timer, warmup)
    records, outputs, wall = results["faithful"]
    summary = summarise(records, wall)
    report = {
        "setting": setting,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
        "argv": sys.argv,
        "device": device.type,
        "images_dir": str(args.images),
        "interleaved": bool(args.interleave),
        "model_load_seconds": load_seconds,
        "preset": args.preset,
        "memory_bytes_per_reference": 4 * faithful.encoder.dim,  # one float32 vector of the encoder's width
        "point_batch_size": faithful._point_batch_size(),
        "faithful": summary,
        "per_image": records,
    }
    sizes = [r["size"] for r in records]
    if annotations:
        print(f"whole evaluate run ({annotations}) ...")
        report["evaluate_run"] = evaluate_run(faithful, annotations, images, timer)
    if args.probe_decoder:
        print("decoder memory probe ...")
        report["decoder_probe"] = probe_decoder(faithful, images[0])
    if args.stress_post:
        print(f"post-processing stress on {args.stress_post} synthetic proposals ...")
        report["stress_post"] = stress_post(faithful, images[0], timer, args.stress_post,
                                            megapixels=args.stress_megapixels)

    report["modes"] = report_modes
    for mode, seg in modes.items():
        if mode not in results:
            print(f"mode {mode}:")
            activate(seg)
            try:
                results[mode] = run_images(seg, images, timer, mode_warmup.get(mode, warmup))
            except Exception as exc:  # noqa: BLE001
                report_modes[mode] = {"skipped": f"failed: {type(exc).__name__}: {str(exc)[:200]}"}
                continue
            finally:
                activate(faithful)
        m_records, m_outputs, m_wall = results[mode]
        m_summary = summarise(m_records, m_wall)
        report_modes[mode].update(
            summary=m_summary, speedup=summary["mean_seconds_per_image"] / m_summary["mean_seconds_per_image"],
            agreement=agreement(outputs, m_outputs, sizes, cat_ids), per_image=m_records,
            same_outputs=compare_runs(outputs, m_outputs),
        )
    report["process_peak_rss"] = max(timer.process_peak, peak_rss_bytes())
    report["load_average_before_after"] = [list(load_before), list(os.getloadavg())]

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    md = markdown(report)
    args.out.with_suffix(".md").write_text(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
