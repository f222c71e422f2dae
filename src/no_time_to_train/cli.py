"""The ``nttt`` command: one verb per stage of the pipeline.

    nttt sample --annotations train.json --split coco-novel --shots 30 --seed 33 -o refs.json
    nttt fill-memory refs.json --annotations train.json --images train2017 -o memory.safetensors
    nttt postprocess-memory memory.safetensors
    nttt predict --memory memory.safetensors INPUT... -o out_dir [--visualize] [--score-threshold T]
    (--score-threshold, like every method setting, is a MethodConfig field: see ``nttt predict --help``)
    nttt evaluate --memory memory.safetensors --annotations val.json --images val2017 --split coco-novel -o out_dir
    nttt label --memory memory.safetensors INPUT... -o dataset --format coco yolo labelstudio cvat
    nttt hub push memory.safetensors user/repo
    nttt track --memory memory.safetensors VIDEO_OR_FRAMES... -o out_dir [--keyframe-interval N] [--visualize]
    nttt evaluate --tracks out_dir --annotations ytvis_val.json -o out_dir   (video AP; or per-frame COCO AP)
    nttt export onnx -o export_dir [--preset NAME] (then --runtime onnxruntime|openvino --export-dir export_dir)

``predict``, ``label``, ``evaluate`` and ``fill-memory`` also run under ``torchrun --nproc_per_node=N -m no_time_to_train``.
Heavy imports (torch, transformers) happen inside the verbs, so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .config import MethodConfig, field_help
from .errors import InputError, NtttError, environment_message

log = logging.getLogger("no_time_to_train")


# -- argument helpers -------------------------------------------------------------------------------------
def _add_model_args(p: argparse.ArgumentParser, runtime: bool = True) -> None:
    """Models, device and precision; with ``runtime``, also ``--runtime``/``--export-dir`` (:mod:`.runtime`)."""
    from .presets import PRESETS, presets_help
    from .runtime import add_runtime_args

    g = p.add_argument_group("models and hardware")
    g.add_argument("--preset", choices=list(PRESETS), default=None,
                   help=f"named models (and the settings they need); --sam2/--encoder and method settings override "
                   f"it. {presets_help()}")
    g.add_argument("--sam2", "--proposer", dest="sam2", default=None, metavar="PATH|ID",
                   help="the mask proposer: SAM2 / SAM 2.1, SAM or SAM-HQ (Meta checkpoint file, HF directory or hub "
                   "id), or a SAM 3 tracker (Meta's sam3.pt, HF directory or hub id; needs --sam-image-size 1008, which "
                   "--preset sam3 sets) (default: "
                   "facebook/sam2-hiera-large, the paper's SAM 2.0 Hiera-L)")
    g.add_argument("--encoder", default=None, help="patch encoder, DINOv2, DINOv3 ViT or DINOv3 ConvNeXt: Meta .pth file, HF "
                   "directory or hub id (default: facebook/dinov2-large, ViT-L/14); DINOv3 needs --encoder-size "
                   "auto or another multiple of 16")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available; "
                   "under torchrun each process takes cuda:LOCAL_RANK)")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="model precision (float32 is the paper's)")
    if runtime:
        add_runtime_args(p)


def _add_method_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method settings (defaults are the paper's; see MethodConfig)")
    g.add_argument("--config", type=Path, help="YAML/JSON file of method settings")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any method setting, e.g. --set points_per_side=16 (repeatable)")
    for name, text in field_help().items():
        g.add_argument("--" + name.replace("_", "-"), dest="cfg_" + name, default=None, metavar="V",
                       help=text.replace("%", "%%"))


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    p.add_argument("--overwrite", action="store_true", help="discard earlier (partial) results in the output")


def _add_on_error_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="an unreadable image: stop the run, naming it (default), or skip it and go on "
                        "(skipped images are listed in skipped.json; a rerun retries them)")


def _add_model_method_run_args(p: argparse.ArgumentParser) -> None:
    """What every model-running verb takes: models and hardware, method settings, run behaviour."""
    _add_model_args(p)
    _add_method_args(p)
    _add_run_args(p)


MEMORY_HELP = "memory file (.safetensors), or a shared one on the Hugging Face hub: hf://user/repo"


def memory_arg(text: str) -> Path | str:
    """argparse type of ``--memory``: a path, or an ``hf://user/repo`` string kept as it is (see :mod:`.hub`)."""
    return text if text.startswith("hf://") else Path(text)


def positive_int(text: str) -> int:
    """argparse type of an integer >= 1 (argparse's error then names the flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _method_config(args) -> MethodConfig:
    """The method settings: the ``--preset``'s, then the ``--config`` file, ``--set`` items and per-setting flags.

    An invalid value is reported under the name the user typed: ``--iou-threshold``, ``--set iou_threshold``
    or the config file's key.
    """
    cfg = MethodConfig()
    if getattr(args, "preset", None):
        from .presets import get_preset

        cfg = cfg.replace(**get_preset(args.preset).settings)
    if getattr(args, "config", None):
        cfg = MethodConfig.from_file(args.config, base=cfg)
    items, labels = [], {}
    for item in getattr(args, "overrides", []) or []:
        key = item.split("=", 1)[0].strip().replace("-", "_")
        items.append(item)
        labels[key] = f"--set {key}"
    for key, value in vars(args).items():
        if key.startswith("cfg_") and value is not None:
            items.append(f"{key[4:]}={value}")
            labels[key[4:]] = "--" + key[4:].replace("_", "-")
    return cfg.with_overrides(items, labels) if items else cfg


def _check_up_front(args) -> None:
    """Validate the method settings and the device before any file is read or model loaded."""
    if hasattr(args, "overrides"):
        _method_config(args)
    if getattr(args, "device", None) is not None:
        from .distributed import resolve_device

        resolve_device(args.device)


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("httpx", "huggingface_hub", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _file_digest(path: Path) -> str:
    from .resultstore import file_sha256

    return file_sha256(path)[:16]


def _segmenter(args, dist, memory=None, need_sam2=True):
    """The segmenter with its models loaded now, so that a bad checkpoint fails before any work starts."""
    from .models.checkpoints import check_models
    from .predictor import ReferenceSegmenter
    from .runtime import runtime_kwargs

    config = _method_config(args)
    if not getattr(args, "export_dir", None):  # an export directory alone needs no weights
        check_models(encoder=args.encoder, **({"sam2": args.sam2} if need_sam2 else {}))
    if getattr(args, "quiet", False):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    device = dist.device(args.device)
    seg = ReferenceSegmenter(sam2=args.sam2, encoder=args.encoder, device=device, dtype=args.dtype,
                             config=config, memory=memory, **runtime_kwargs(args))
    seg.encoder
    if need_sam2:
        seg.proposer
    return seg


def _signature(args, extra: dict) -> dict:
    return {"version": __version__, "sam2": args.sam2, "encoder": args.encoder, "dtype": args.dtype,
            "config": _method_config(args).to_dict(), **extra}


# -- verbs ----------------------------------------------------------------------------------------------
def cmd_sample(args) -> int:
    from .data.coco import load_coco_json, resolve_categories
    from .data.sampling import sample_references, write_references

    data = load_coco_json(args.annotations)
    cats = resolve_categories(data["categories"], args.categories or args.split)
    refs = sample_references(data, [c["id"] for c in cats], args.shots, args.seed)
    meta = {"seed": args.seed, "shots": args.shots, "annotations": str(args.annotations),
            "split": args.categories or args.split}
    write_references(args.output, refs, meta)
    log.info("wrote %d references (%d categories x %d shots) to %s", sum(len(v) for v in refs.values()),
             len(refs), args.shots, args.output)
    return 0


def cmd_fill_memory(args) -> int:
    from .data.coco import CocoDataset
    from .data.sampling import read_references
    from .distributed import init_distributed
    from .pipeline import fill_memory

    dist = init_distributed(args.device)
    dataset = CocoDataset(args.annotations, args.images)
    refs = read_references(args.references, coco=dataset)
    seg = _segmenter(args, dist, need_sam2=args.reference_masks == "from-boxes")
    signature = _signature(args, {"references": _file_digest(Path(args.references)),
                                  "annotations": str(args.annotations)})
    fill_memory(seg, refs.flat(), dataset, args.output, dist, signature=signature,
                reference_masks=args.reference_masks, export_masks=args.export_masks,
                overwrite=args.overwrite, quiet=args.quiet)
    dist.close()
    return 0


def cmd_postprocess_memory(args) -> int:
    from .memory import ReferenceMemory

    memory = ReferenceMemory.load(args.memory)
    mode = memory.config.get("prototype", "instance-mean")
    memory.prototypes(mode)  # validates: every category has references
    counts = memory.counts()
    out = memory.save(args.output or args.memory)
    width = max(len(n) for n in counts) if counts else 8
    print(f"{'category':<{width}}  {'id':>5}  references")
    for c in memory.categories:
        print(f"{c['name']:<{width}}  {str(c.get('id', '')):>5}  {counts[c['name']]}")
    if len(set(counts.values())) > 1:
        log.warning("categories have different numbers of references: %s", sorted(set(counts.values())))
    log.info("prototypes (%s) of %d categories stored in %s", mode, len(counts), out)
    return 0


def _image_names(paths: list[Path]) -> list[str]:
    """Output file stems per input image, unique even when two folders hold the same file name."""
    stems = [p.stem for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    return [f"{i:06d}_{s}" if s in dup else s for i, s in enumerate(stems)]


def cmd_predict(args) -> int:
    from .data.coco import list_images
    from .distributed import init_distributed
    from .resultstore import ResultStore, write_json_atomic
    from .runner import run_images
    from .visualize import overlay, save_instance_png

    dist = init_distributed(args.device)
    paths = list_images(args.inputs)
    names = _image_names(paths)
    out = Path(args.output)
    seg = _segmenter(args, dist, memory=args.memory)
    store = ResultStore(out / "parts", dist.rank)
    index = {str(p): i for i, p in enumerate(paths)}

    def record(key, path, image, dets):
        i = index[key]
        save_instance_png(dets, out / "masks" / f"{names[i]}.png")
        if args.visualize:
            overlay(image, dets).save(out / "overlays" / f"{names[i]}.jpg", quality=90)
        results = dets.to_coco(image_id=i)
        for r, name in zip(results, dets.names):
            r["category_name"] = name
        return {"file_name": key, "height": image.shape[0], "width": image.shape[1], "results": results}

    merged = [out / n for n in ("results.json", "images.json", "skipped.json", "masks", "overlays")]
    with store.claim(_signature(args, {"memory": _file_digest(Path(args.memory))}), dist, args.overwrite,
                     outputs=merged, what=f"output folder {out}"):
        (out / "masks").mkdir(parents=True, exist_ok=True)
        if args.visualize:
            (out / "overlays").mkdir(parents=True, exist_ok=True)
        run_images(seg, [(str(p), p) for p in paths], store, dist, record, quiet=args.quiet, on_error=args.on_error)
        dist.barrier()
        if dist.is_main:
            recs = store.records()
            done = [(i, p, recs[str(p)]) for i, p in enumerate(paths) if "skipped" not in recs[str(p)]]
            skipped = [{"file_name": str(p), "error": recs[str(p)]["skipped"]} for p in paths
                       if "skipped" in recs[str(p)]]
            results = [r for _, _, rec in done for r in rec["results"]]
            images = [{"id": i, "file_name": str(p), "height": rec["height"], "width": rec["width"]}
                      for i, p, rec in done]
            write_json_atomic(out / "results.json", results)
            write_json_atomic(out / "images.json", images, indent=1)
            log.info("%d detections on %d images written to %s", len(results), len(done), out / "results.json")
            if skipped:
                write_json_atomic(out / "skipped.json", skipped, indent=1)
                log.warning("%d unreadable image(s) skipped, listed in %s", len(skipped), out / "skipped.json")
    dist.close()
    return 0


def cmd_label(args) -> int:
    from .data.coco import list_images
    from .distributed import init_distributed
    from .formats import WriteOptions, check_category_names, check_dataset_root, check_formats
    from .label import label_images
    from .memory import ReferenceMemory

    formats = check_formats([f for item in args.formats or ["coco"] for f in item.split(",") if f.strip()])
    memory = ReferenceMemory.load(args.memory)  # names checked before the models load
    check_category_names(memory.category_names, formats)
    check_dataset_root(Path(args.output))
    dist = init_distributed(args.device)
    paths = list_images(args.inputs)
    seg = _segmenter(args, dist, memory=memory)
    options = WriteOptions(mask_format=args.mask_format, polygon_tolerance=args.polygon_tolerance,
                           copy_images=args.copy_images, image_url_prefix=args.image_url_prefix)
    summary = label_images(seg, paths, args.output, dist, formats=formats, options=options,
                           signature=_signature(args, {"verb": "label", "memory": _file_digest(Path(args.memory))}),
                           min_score=args.min_score, min_area=args.min_area, val_fraction=args.val_fraction,
                           seed=args.seed, overwrite=args.overwrite, quiet=args.quiet, on_error=args.on_error)
    if summary is not None:
        print(summary.table())
        for fmt, folder in summary.folders.items():
            print(f"{fmt}: {folder}")
    dist.close()
    return 0


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _add_label_parser(sub) -> None:
    p = sub.add_parser("label", help="auto-label images with a memory into a dataset (COCO, YOLO, Label Studio, "
                       "CVAT)", description="Segment images with a memory and write a labelled dataset, one folder "
                       "per format under -o. Resumable and sharded like predict; --min-score, --min-area, the "
                       "formats and the split can change on a rerun without running the models again.")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--memory", required=True, type=memory_arg, help=MEMORY_HELP)
    p.add_argument("-o", "--output", required=True, type=Path, help="dataset folder (new, or an earlier label run)")
    p.add_argument("--format", dest="formats", action="extend", nargs="+", metavar="FORMAT",
                   help="coco, yolo, labelstudio, cvat; several allowed (--format coco yolo, or coco,yolo) "
                   "(default: coco)")
    p.add_argument("--mask-format", choices=["polygon", "rle"], default="polygon",
                   help="COCO and CVAT masks: polygon (default; an object with a hole falls back to RLE / a CVAT "
                   "mask) or rle (pixel-exact). YOLO and Label Studio always take polygons")
    p.add_argument("--min-score", type=_non_negative_float, default=0.5,
                   help="keep detections scoring at least this (default 0.5)")
    p.add_argument("--min-area", type=int, default=0, help="keep masks of at least this many pixels (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of images in YOLO's val split (default 0.1; 0: val = train)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val draw (default 0)")
    p.add_argument("--polygon-tolerance", type=_non_negative_float, default=1.0,
                   help="pixels a polygon may stray from the mask boundary (default 1; 0: exact pixel boundary)")
    p.add_argument("--copy-images", action="store_true", help="copy images into the dataset (default: symlinks)")
    p.add_argument("--image-url-prefix", help="Label Studio image URL prefix (default: Label Studio's local-files "
                   "URL of DATASET/labelstudio/images)")
    _add_on_error_arg(p)
    _add_model_method_run_args(p)
    p.set_defaults(func=cmd_label)


def cmd_evaluate(args) -> int:
    if getattr(args, "tracks", None):
        return cmd_evaluate_tracks(args)
    if args.memory is None or args.images is None:
        raise InputError("nttt evaluate needs --memory and --images (or --tracks OUT to score an nttt track output)")
    from .data.coco import CocoDataset, resolve_categories
    from .distributed import init_distributed
    from .evaluation import format_metrics_table
    from .pipeline import evaluate_dataset

    dist = init_distributed(args.device)
    dataset = CocoDataset(args.annotations, args.images)
    seg = _segmenter(args, dist, memory=args.memory)
    mem_ids = [c["id"] for c in seg.memory.dataset_categories]
    if args.split or args.categories:
        cats = resolve_categories(dataset.categories, args.categories or args.split)
    else:
        cats = [dataset.category(i) for i in mem_ids]
    missing = [c["name"] for c in cats if c["id"] not in mem_ids]
    if missing:
        raise InputError(f"the memory {args.memory} has no references for {', '.join(missing)}; "
                         f"it holds {', '.join(seg.memory.category_names)}")
    signature = _signature(args, {"memory": _file_digest(Path(args.memory)), "annotations": str(args.annotations)})
    settings = {"memory": str(args.memory), "annotations": str(args.annotations), "split": args.categories or args.split}
    metrics = evaluate_dataset(seg, dataset, [c["id"] for c in cats], args.output, dist, signature=signature,
                               max_images=args.max_images, overwrite=args.overwrite, quiet=args.quiet,
                               settings=settings, on_error=args.on_error)
    if metrics is not None:
        print(format_metrics_table(metrics))
        if metrics["skipped_images"]:
            print(f"{len(metrics['skipped_images'])} unreadable image(s) skipped (their ground truth counts as "
                  f"missed), listed in {Path(args.output) / 'skipped.json'}")
    dist.close()
    return 0


def cmd_protocol(args) -> int:
    from .distributed import init_distributed
    from .protocols import run_cdfsod, run_voc

    dist = init_distributed(args.device)
    seg = _segmenter(args, dist)
    signature = _signature(args, {"protocol": args.protocol})
    if args.protocol == "voc":
        table = run_voc(seg, args.train_json, args.test_json, args.images, args.output, dist, splits=args.splits,
                        shots=args.shots, seed=args.seed, metric="AP50_voc07" if args.voc07 else "AP50",
                        signature=signature, quiet=args.quiet)
    else:
        table = run_cdfsod(seg, args.root, args.output, dist, datasets=args.datasets, shots=args.shots,
                           signature=signature, quiet=args.quiet)
    if table is not None:
        print(table)
        log.info("table written to %s", Path(args.output) / "table.md")
    dist.close()
    return 0


def cmd_pseudo_masks(args) -> int:
    from .data.coco import CocoDataset
    from .distributed import DistContext
    from .protocols import pseudo_masks

    dataset = CocoDataset(args.annotations, args.images)
    seg = _segmenter(args, DistContext())
    out = pseudo_masks(seg, dataset, args.output, quiet=args.quiet)
    log.info("%d annotations with SAM2 pseudo masks written to %s", len(out["annotations"]), args.output)
    return 0


def _add_track_args(p: argparse.ArgumentParser) -> None:
    """The tracking settings (``TrackConfig``; defaults there)."""
    from .video.config import TrackConfig

    d = TrackConfig()
    g = p.add_argument_group("tracking (see README, Video; defaults are TrackConfig's)")
    g.add_argument("--keyframe-interval", type=int, default=d.keyframe_interval, metavar="N",
                   help=f"run the image pipeline on frame 0 and every N-th frame (0: only frame 0 and --keyframes; "
                   f"default {d.keyframe_interval})")
    g.add_argument("--keyframes", default="", metavar="I,J,...", help="extra keyframes, as frame indices")
    g.add_argument("--min-score", type=float, default=d.min_score, metavar="S",
                   help=f"detections scoring at most S start or refresh no track (default {d.min_score})")
    g.add_argument("--match-iou", type=float, default=d.match_iou, metavar="T",
                   help=f"a detection continues a track whose mask it overlaps with IoU > T (default {d.match_iou})")
    g.add_argument("--end-after", type=positive_int, default=d.end_after, metavar="M",
                   help=f"a track ends after M consecutive frames with an empty mask or low object score "
                   f"(default {d.end_after})")
    g.add_argument("--max-tracks", type=positive_int, default=d.max_tracks, help=f"live tracks at most (default "
                   f"{d.max_tracks})")
    g.add_argument("--max-cond-frames", type=positive_int, default=d.max_cond_frames,
                   help=f"keyframe masks each track's memory keeps (default {d.max_cond_frames})")
    g.add_argument("--no-backward", dest="backward", action="store_false",
                   help="do not follow tracks born on later keyframes back to the frames before them")
    g.add_argument("--backward-frames", type=positive_int, default=None, metavar="F",
                   help="how far the backward pass reaches (default: one keyframe interval)")


def _track_config(args):
    from .video.config import TrackConfig

    try:
        keyframes = tuple(int(k) for k in args.keyframes.replace(" ", "").split(",") if k)
    except ValueError:
        raise InputError(f"--keyframes must be comma-separated frame indices, got {args.keyframes!r}") from None
    return TrackConfig(keyframe_interval=args.keyframe_interval, keyframes=keyframes, min_score=args.min_score,
                       match_iou=args.match_iou, end_after=args.end_after, max_tracks=args.max_tracks,
                       max_cond_frames=args.max_cond_frames, backward=args.backward,
                       backward_frames=args.backward_frames)


def cmd_track(args) -> int:
    from .distributed import init_distributed
    from .video.job import track_videos
    from .video.source import list_videos

    config = _track_config(args)
    dist = init_distributed(args.device)
    videos = list_videos(args.inputs)
    seg = _segmenter(args, dist, memory=args.memory)
    from .video.track import video_model_for

    video_model_for(seg)  # SAM2's video modules load now: a checkpoint without them fails before any work
    signature = _signature(args, {"memory": _file_digest(Path(args.memory))})
    records = track_videos(seg, videos, args.output, dist, config=config, signature=signature,
                           save_masks=args.save_masks, visualize=args.visualize, overwrite=args.overwrite,
                           quiet=args.quiet, on_error=args.on_error)
    if dist.is_main:
        done = [r for r in records if "error" not in r]
        print(f"{sum(r['tracks'] for r in done)} tracks in {len(done)} video(s): {Path(args.output) / 'results.json'}")
    dist.close()
    return 0


def cmd_evaluate_tracks(args) -> int:
    """``nttt evaluate --tracks OUT``: score an ``nttt track`` output against YouTube-VIS or per-frame COCO truth."""
    from .data.coco import load_coco_json, resolve_categories
    from .evaluation import format_metrics_table, write_metrics
    from .video.job import load_track_results
    from .video.ytvis_eval import evaluate_frames, evaluate_video_ap, is_ytvis

    videos, results = load_track_results(args.tracks)
    gt = _read_json(args.annotations)
    if not is_ytvis(gt):
        gt = load_coco_json(args.annotations)  # validated as COCO
    cats = None
    if args.split or args.categories:
        cats = [c["id"] for c in resolve_categories(gt["categories"], args.categories or args.split)]
    if is_ytvis(gt):
        metrics = evaluate_video_ap(gt, results, videos, cats)
        print("video AP (YouTube-VIS):")
    else:
        metrics = evaluate_frames(gt, videos, results, cats)
        print("per-frame AP (each frame an image):")
    print(format_metrics_table({**metrics, "num_images": metrics.get("num_videos", metrics.get("num_images")),
                                "num_detections": metrics.get("num_tracks", metrics.get("num_detections"))}))
    write_metrics(Path(args.output) / "metrics.json", metrics)
    return 0


def _read_json(path: Path):
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc


def cmd_export(args) -> int:
    from .imageio import load_image
    from .models.export import export_onnx
    from .predictor import ReferenceSegmenter

    seg = ReferenceSegmenter(sam2=args.sam2, encoder=args.encoder, device="cpu", config=_method_config(args),
                             runtime="torch")  # the PyTorch models are what is exported
    manifest = export_onnx(args.output, proposer=seg.proposer if args.only != "encoder" else None,
                           encoder=seg.encoder if args.only != "proposer" else None,
                           encoder_size=seg.config.encoder_size, preset=args.preset,
                           image=load_image(args.image) if args.image else None,
                           image_name=str(args.image) if args.image else None,
                           verify_runtime=args.verify_runtime, overwrite=args.overwrite)
    print(f"exported to {args.output} (checked under {args.verify_runtime} on "
          f"{manifest['verification']['image']}; max abs difference to PyTorch):")
    for graph, diff in manifest["verification"]["max_abs_diff"].items():
        print(f"  {manifest['graphs'][graph]['file']:<28} {diff:.3g}")
    print(f"run it with: --runtime onnxruntime (or openvino) --export-dir {args.output}")
    return 0


# -- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nttt", description="Training-free reference-based instance segmentation "
                                     "(No Time to Train!, SAM2 + DINOv2).")
    parser.add_argument("--version", action="version", version=f"no-time-to-train {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="draw K reference instances per category (the paper's sampler)")
    p.add_argument("--annotations", required=True, type=Path, help="COCO-format JSON to sample from")
    p.add_argument("--split", default="coco-novel", help="coco-novel | coco-all | voc-split1|2|3 (default coco-novel)")
    p.add_argument("--categories", help="comma-separated category names or ids (overrides --split)")
    p.add_argument("--shots", type=positive_int, required=True, help="references per category (K)")
    p.add_argument("--seed", type=int, default=33, help="sampling seed (default 33, the paper's)")
    p.add_argument("-o", "--output", required=True, type=Path, help="references JSON to write")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("fill-memory", help="encode references into a memory file (paper stage 1)")
    p.add_argument("references", type=Path, help="references file (nttt JSON or the authors' pickle)")
    p.add_argument("--annotations", required=True, type=Path, help="COCO-format JSON the references come from")
    p.add_argument("--images", required=True, type=Path, help="image folder of that JSON")
    p.add_argument("-o", "--output", required=True, type=Path, help="memory file to write (.safetensors)")
    p.add_argument("--reference-masks", choices=["annotations", "from-boxes"], default="annotations",
                   help="annotations: the JSON's masks (default); from-boxes: SAM2 prompted with each "
                        "annotation box, even where masks exist (for box-only datasets)")
    p.add_argument("--export-masks", type=Path, help="also write each reference mask as a PNG into this folder")
    _add_model_method_run_args(p)
    p.set_defaults(func=cmd_fill_memory)

    p = sub.add_parser("postprocess-memory", help="compute and store the class prototypes (paper stage 2)")
    p.add_argument("memory", type=Path)
    p.add_argument("-o", "--output", type=Path, help="write to another file (default: in place)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_postprocess_memory)

    p = sub.add_parser("predict", help="segment images, folders or globs with a memory")
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--memory", required=True, type=memory_arg, help=MEMORY_HELP)
    p.add_argument("-o", "--output", required=True, type=Path, help="output directory")
    p.add_argument("--visualize", action="store_true", help="also write overlays (overlays/*.jpg)")
    _add_on_error_arg(p)
    _add_model_method_run_args(p)
    p.set_defaults(func=cmd_predict)

    _add_label_parser(sub)

    p = sub.add_parser("track", help="find the memory's categories in videos and follow every instance (video)")
    p.add_argument("inputs", nargs="+", help="video files, folders of frames or of videos, globs")
    p.add_argument("--memory", required=True, type=memory_arg, help=MEMORY_HELP)
    p.add_argument("-o", "--output", required=True, type=Path, help="output directory")
    p.add_argument("--save-masks", action="store_true", help="also write per-frame 16-bit PNGs (value = track id)")
    p.add_argument("--visualize", action="store_true", help="also write an MP4 per video with the tracks overlaid")
    p.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                   help="an unreadable video: stop the run, naming it (default), or skip it and go on (listed in "
                        "skipped.json; a rerun retries it)")
    _add_track_args(p)
    _add_model_method_run_args(p)
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("evaluate", help="predict on a COCO-format set and compute COCO AP (bbox, segm); or score "
                       "the tracks of nttt track (--tracks)")
    p.add_argument("--memory", type=memory_arg, help=MEMORY_HELP + " (required unless --tracks)")
    p.add_argument("--annotations", required=True, type=Path, help="ground-truth COCO JSON (with --tracks: a "
                   "YouTube-VIS JSON for video AP, or a COCO JSON whose images are frames for per-frame AP)")
    p.add_argument("--images", type=Path, help="image folder of that JSON (required unless --tracks)")
    p.add_argument("--tracks", type=Path, metavar="TRACK_OUTPUT", help="score this nttt track output folder instead "
                   "of predicting (no model is loaded)")
    p.add_argument("--split", help="categories to evaluate: coco-novel | coco-all | voc-split1|2|3 "
                   "(default: the memory's categories)")
    p.add_argument("--categories", help="comma-separated category names or ids (overrides --split)")
    p.add_argument("--max-images", type=positive_int, help="evaluate only the first N images (quick checks)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output directory")
    _add_on_error_arg(p)
    _add_model_method_run_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("protocol", help="run a whole benchmark protocol and write a table like the paper's")
    proto = p.add_subparsers(dest="protocol", required=True)
    v = proto.add_parser("voc", help="PASCAL VOC few-shot: splits x shots, seed 33, nAP50 (COCO-style AP50)")
    v.add_argument("--train-json", required=True, type=Path, help="VOC07+12 trainval as COCO JSON (nttt convert voc)")
    v.add_argument("--test-json", required=True, type=Path, help="VOC07 test as COCO JSON")
    v.add_argument("--images", required=True, type=Path, help="the flat folder of all VOC JPEGs")
    v.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    v.add_argument("--shots", type=positive_int, nargs="+", default=[1, 2, 3, 5, 10])
    v.add_argument("--seed", type=int, default=33)
    v.add_argument("--voc07", action="store_true", help="tabulate the VOC07 11-point AP50 instead of COCO-style AP50")
    c = proto.add_parser("cdfsod", help="CD-FSOD: each dataset x {1,5,10} shots, nAP")
    c.add_argument("root", type=Path, help="folder holding ArTaxOr/, clipart1k/, DIOR/, ... (or one of them)")
    c.add_argument("--datasets", nargs="+", help="only these datasets")
    c.add_argument("--shots", type=positive_int, nargs="+", default=[1, 5, 10])
    for q in (v, c):
        q.add_argument("-o", "--output", required=True, type=Path, help="output directory (resumable)")
        _add_model_method_run_args(q)
        q.set_defaults(func=cmd_protocol)

    p = sub.add_parser("pseudo-masks", help="give a box-only COCO set masks from SAM2 box prompts (marked pseudo)")
    p.add_argument("annotations", type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("-o", "--output", required=True, type=Path, help="COCO JSON to write")
    _add_model_method_run_args(p)
    p.set_defaults(func=cmd_pseudo_masks)

    p = sub.add_parser("export", help="write the networks as ONNX files (for --runtime onnxruntime / openvino)")
    formats = p.add_subparsers(dest="format", required=True)
    o = formats.add_parser("onnx", help="the proposer's image encoder and mask decoders and the patch encoder as "
                           "ONNX, with manifest.json, checked against PyTorch")
    o.add_argument("-o", "--output", required=True, type=Path, help="export folder to write (new or empty)")
    o.add_argument("--image", type=Path, help="a real image to check the export on (default: a built-in picture)")
    o.add_argument("--only", choices=["proposer", "encoder"], help="export only one of the two models")
    o.add_argument("--verify-runtime", choices=["onnxruntime", "openvino"], default="onnxruntime",
                   help="the runtime the export is checked under (default onnxruntime)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing export in the folder")
    o.add_argument("--quiet", action="store_true", help="warnings and errors only")
    _add_model_args(o, runtime=False)
    _add_method_args(o)
    o.set_defaults(func=cmd_export)

    from .data.convert import add_convert_parser

    add_convert_parser(sub)
    from .app import add_serve_parser; add_serve_parser(sub)  # noqa: E702  (nttt serve: the browser app)
    from .hub import add_hub_parser; add_hub_parser(sub)  # noqa: E702  (nttt hub push: share a memory)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    if getattr(args, "preset", None) and not getattr(args, "export_dir", None):  # the preset's models, unless given
        from .presets import get_preset

        preset = get_preset(args.preset)
        args.sam2 = args.sam2 or preset.proposer
        args.encoder = args.encoder or preset.encoder
    try:
        _check_up_front(args)
        if args.command != "hub" and isinstance(getattr(args, "memory", None), str):  # --memory hf://user/repo
            from .hub import download_memory

            args.memory = download_memory(args.memory)
        return args.func(args)
    except NtttError as exc:
        print(f"nttt {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        message = environment_message(exc, getattr(args, "output", None))
        if message is None:
            raise
        print(f"nttt {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nttt {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
