"""Summaries and markdown tables of benchmark reports; used by ``bench.py``."""

from __future__ import annotations

import numpy as np

STAGES = ("decode", "preprocess", "sam2_encoder", "dinov2", "mask_decoder", "score_nms", "upsample_merge", "rle")
MODEL_STAGES = ("sam2_encoder", "dinov2", "mask_decoder")


def summarise(records: list[dict], wall: float) -> dict:
    n = len(records)
    per_image = sum(r["total_seconds"] for r in records) / n
    stages = {}
    for name in STAGES:
        secs = [r["stages"][name]["seconds"] for r in records]
        entry = {"mean_seconds": float(np.mean(secs)), "share": float(np.mean(secs) / per_image),
                 "peak_rss": int(max(r["stages"][name]["peak_rss"] for r in records))}
        if "cuda_peak" in records[0]["stages"][name]:
            entry["cuda_peak"] = int(max(r["stages"][name]["cuda_peak"] for r in records))
        stages[name] = entry
    model = sum(stages[s]["mean_seconds"] for s in MODEL_STAGES)
    return {
        "images": n,
        "mean_seconds_per_image": per_image,
        "images_per_second": n / wall,
        "wall_seconds": wall,
        "overhead_outside_model_forwards": 1.0 - model / per_image,
        "stages": stages,
        "mean_proposals": float(np.mean([r["proposals"] for r in records])),
        "mean_survivors": float(np.mean([r["survivors"] for r in records])),
        "mean_detections": float(np.mean([r["detections"] for r in records])),
        "peak_rss": max(st["peak_rss"] for st in stages.values()),
        **({"cuda_peak": max(st["cuda_peak"] for st in stages.values())} if "cuda_peak" in stages["decode"] else {}),
    }


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.0f}"


def markdown(report: dict) -> str:
    s = report["faithful"]
    lines = [f"### {report['setting']}", "",
             f"Machine: {report['machine']}. Images: {s['images']} from `{report['images_dir']}` "
             f"(mean {s['mean_proposals']:.0f} proposals, {s['mean_survivors']:.0f} NMS survivors, "
             f"{s['mean_detections']:.0f} detections per image). Load average (1, 5, 15 min) before / after: "
             f"{' / '.join(', '.join(f'{v:.1f}' for v in la) for la in report['load_average_before_after'])}.", "",
             "| stage | mean s / image | share | peak RSS MiB" + (" | peak CUDA MiB |" if report["device"] == "cuda" else " |"),
             "|---|---:|---:|---:" + ("|---:|" if report["device"] == "cuda" else "|")]
    for name in STAGES:
        st = s["stages"][name]
        row = f"| {name} | {st['mean_seconds']:.3f} | {100 * st['share']:.1f} % | {_mib(st['peak_rss'])}"
        row += f" | {_mib(st.get('cuda_peak'))} |" if report["device"] == "cuda" else " |"
        lines.append(row)
    lines += ["", f"- per image: **{s['mean_seconds_per_image']:.2f} s**; whole run: **{s['images_per_second']:.4f} images/s** "
                  f"({s['wall_seconds']:.1f} s for {s['images']} images, I/O included"
                  + ("; modes interleaved image by image, so from the per-image times" if report.get("interleaved") else "") + ")",
              f"- overhead outside the three model forwards (SAM2 encoder, mask decoder, DINOv2): "
              f"**{100 * s['overhead_outside_model_forwards']:.1f} %** of per-image time",
              f"- peak RSS of this run: **{s['peak_rss'] / 2**30:.2f} GiB**"
              + (f", peak CUDA memory {s['cuda_peak'] / 2**30:.2f} GiB" if "cuda_peak" in s else "")
              + f" (whole process, all modes and probes included: {report['process_peak_rss'] / 2**30:.2f} GiB); "
              f"decoder batch: {report['point_batch_size']}; model build/load: {report['model_load_seconds']:.1f} s"
              + (f"; memory per reference: {report['memory_bytes_per_reference']} bytes"
                 if "memory_bytes_per_reference" in report else "")]
    if report.get("evaluate_run"):
        e = report["evaluate_run"]
        lines.append(f"- whole `nttt evaluate` run (prefetching loader, result store, COCOeval) over {e['images']} images: "
                     f"**{e['images_per_second']:.4f} images/s** ({e['seconds']:.1f} s), peak RSS {e['peak_rss'] / 2**30:.2f} GiB"
                     + (f", peak CUDA {e['cuda_peak'] / 2**30:.2f} GiB" if "cuda_peak" in e else ""))
    if report.get("decoder_probe"):
        p = report["decoder_probe"]
        lines.append("- mask-decoder peak memory per prompt: shared-image decoder "
                     f"**{p['shared_image']['bytes_per_prompt'] / 2**20:.1f} MiB**, transformers' decoder "
                     f"{p['transformers']['bytes_per_prompt'] / 2**20:.1f} MiB; best time per prompt at batch "
                     + " / ".join(p["shared_image"]["batches"]) + ": "
                     + ", ".join(f"{name} " + " / ".join(f"{v['seconds_per_prompt'] * 1000:.0f}" for v in p[name]["batches"].values())
                                 + " ms" for name in ("shared_image", "transformers")))
    if report.get("stress_post"):
        st = report["stress_post"]
        secs = next(v for k, v in st.items() if k.startswith("seconds_min"))
        lines.append(f"- post-processing worst case ({st['proposals']} synthetic proposals, {st['survivors']} NMS survivors, "
                     f"{st['detections']} detections, {st['image_size'][1]}x{st['image_size'][0]}): "
                     + ", ".join(f"{k} {v:.3f} s" for k, v in secs.items())
                     + f"; peak RSS {st['peak_rss'] / 2**30:.2f} GiB"
                     + (f" ({(st['peak_rss'] - st['rss_before']) / 2**30:.2f} GiB above the RSS before)"
                        if "rss_before" in st else ""))
    if report.get("modes"):
        lines += ["", "| mode | s / image | speed-up | peak RSS GiB | matched @ IoU 0.9 | AP segm vs faithful | AP bbox vs faithful | max abs score diff (matched) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, m in report["modes"].items():
            if "skipped" in m:
                lines.append(f"| {name} | skipped: {m['skipped']} | | | | | | |")
                continue
            a = m["agreement"]
            f = lambda v, pct=True: "-" if v is None else (f"{100 * v:.1f} %" if pct else f"{v:.2e}")  # noqa: E731
            lines.append(f"| {name} | {m['summary']['mean_seconds_per_image']:.2f} | {m['speedup']:.2f}x | "
                         f"{m['summary']['peak_rss'] / 2**30:.2f} | "
                         f"{f(a['matched_at_iou_0.9'])} | {f(a['ap_vs_faithful']['segm'])} | {f(a['ap_vs_faithful']['bbox'])} | "
                         f"{f(a['max_abs_score_diff_matched'], False)} |")
    return "\n".join(lines + runtime_table(report)) + "\n"


def runtime_table(report: dict) -> list[str]:
    """Markdown lines of the runtimes (``bench.py --runtimes``) next to torch, with the "same outputs" criterion."""
    runs = {k: m for k, m in (report.get("modes") or {}).items() if m.get("runtime")}
    if not runs:
        return []
    cols = ("sam2_encoder", "mask_decoder", "dinov2")
    lines = ["", "| runtime | s / image | speed-up | SAM encoder s | mask decoder s | encoder (DINO) s | peak RSS GiB | "
             "same outputs: matched | max score diff | min mask IoU | set-up s |", "|---" + "|---:" * 10 + "|"]
    t = report["faithful"]
    lines.append(f"| torch | {t['mean_seconds_per_image']:.2f} | 1.00x | "
                 + " | ".join(f"{t['stages'][c]['mean_seconds']:.2f}" for c in cols)
                 + f" | {t['peak_rss'] / 2**30:.2f} | (reference) | | | |")
    for name, m in runs.items():
        if "skipped" in m or "summary" not in m:
            lines.append(f"| {name} | {m.get('skipped', 'no result')} |" + " |" * 9)
            continue
        s, a = m["summary"], m["same_outputs"]
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        lines.append(f"| {name} | {s['mean_seconds_per_image']:.2f} | {m['speedup']:.2f}x | "
                     + " | ".join(f"{s['stages'][c]['mean_seconds']:.2f}" for c in cols)
                     + f" | {s['peak_rss'] / 2**30:.2f} | {a['matched']}/{a['reference_detections']}"
                     f"{' (same)' if a['same'] else ' (DIFFERENT)'} | {fmt(a['max_score_diff'], '.1e')} | "
                     f"{fmt(a['min_mask_iou'], '.4f')} | {m.get('setup_seconds', 0):.0f} |")
    return lines


def matrix(reports: dict[str, dict]) -> str:
    """One markdown table over several reports (e.g. model sizes x dtypes x devices).

    A row per report's faithful run, then a row per fast mode it ran (``report + mode``).
    """
    lines = ["| report | setting | s / image | images/s | evaluate images/s | SAM2 enc s | DINOv2 s | decoder s | "
             "rest s | overhead | peak RSS GiB | peak CUDA GiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in reports.items():
        rows = [(name, r["setting"], r["faithful"], r.get("evaluate_run"))]
        rows += [(f"{name} + {mode}", f"mode {mode}", m["summary"], None)
                 for mode, m in (r.get("modes") or {}).items() if "summary" in m]
        for label, setting, s, ev in rows:
            st = s["stages"]
            rest = s["mean_seconds_per_image"] - sum(st[k]["mean_seconds"] for k in MODEL_STAGES)
            cells = [label, setting, f"{s['mean_seconds_per_image']:.3f}", f"{s['images_per_second']:.4f}",
                     f"{ev['images_per_second']:.4f}" if ev else "-",
                     *(f"{st[k]['mean_seconds']:.3f}" for k in MODEL_STAGES),
                     f"{rest:.3f}", f"{100 * s['overhead_outside_model_forwards']:.1f} %",
                     f"{s['peak_rss'] / 2**30:.2f}", f"{s['cuda_peak'] / 2**30:.2f}" if "cuda_peak" in s else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    import argparse
    import json
    from pathlib import Path

    p = argparse.ArgumentParser(description="One markdown table over several bench.py JSON reports.")
    p.add_argument("reports", nargs="+", type=Path, help="JSON reports written by bench.py --out")
    args = p.parse_args(argv)
    reports = {}
    for path in args.reports:
        try:
            reports[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: not a readable bench.py report ({exc})")
        if "faithful" not in reports[path.stem]:
            raise SystemExit(f"{path}: not a bench.py report (no 'faithful' summary)")
    print(matrix(reports), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
