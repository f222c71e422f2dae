"""The benchmark script: its report's structure and invariants, agreement figures on hand-made outputs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench  # noqa: E402
import bench_compare  # noqa: E402
import bench_report  # noqa: E402

VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco-mini" / "val2017"


def _det(image_id, cat, box, score, size=(40, 60)):
    """A COCO result whose mask is the filled box ``(x0, y0, x1, y1)`` on an image of ``size`` (H, W)."""
    m = np.zeros(size, np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_id, "category_id": cat, "segmentation": rle, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": score}


def test_agreement_counts_same_label_matches_at_iou_09():
    faithful = [[_det(0, 1, (0, 0, 20, 20), 0.9), _det(0, 2, (30, 10, 50, 30), 0.8)],
                [_det(1, 1, (5, 5, 25, 25), 0.7)]]
    fast = [[_det(0, 1, (0, 0, 20, 19), 0.85),  # IoU 0.95, same label: matched, score diff 0.05
             _det(0, 1, (30, 10, 50, 30), 0.8)],  # same mask, other label: not matched
            [_det(1, 1, (5, 5, 25, 15), 0.7)]]  # IoU 0.5: not matched
    a = bench_compare.agreement(faithful, fast, [[40, 60], [40, 60]], [1, 2])
    assert a["faithful_detections"] == 3
    assert a["matched_at_iou_0.9"] == pytest.approx(1 / 3)
    assert a["max_abs_score_diff_matched"] == pytest.approx(0.05)
    assert 0 < a["ap_vs_faithful"]["segm"] < 1

    same = bench_compare.agreement(faithful, faithful, [[40, 60], [40, 60]], [1, 2])
    assert same["matched_at_iou_0.9"] == 1.0 and same["max_abs_score_diff_matched"] == 0.0
    assert same["ap_vs_faithful"]["segm"] == pytest.approx(1.0) and same["ap_vs_faithful"]["bbox"] == pytest.approx(1.0)


def test_mode_options_combine_and_refuse_unknown():
    kwargs, overrides, skip = bench.mode_options("bf16+guided+batch1024", torch.device("cpu"))
    assert kwargs == {"autocast": "bf16"} and skip is None
    assert overrides == {"prompt_mode": "guided", "point_batch_size": 1024}
    assert bench.mode_options("fp16", torch.device("cpu"))[2] == "fp16 autocast is CUDA-only here"
    with pytest.raises(SystemExit, match="unknown mode 'turbo'"):
        bench.mode_options("pps16+turbo", torch.device("cpu"))


@pytest.mark.skipif(not VAL.is_dir(), reason="coco-mini not present")
def test_bench_run_writes_consistent_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert bench.main(["--sam2", "random", "--encoder", "random", "--size", "test", "--images", str(VAL),
                       "--out", str(out), "--points-per-side", "4", "--max-images", "2", "--refs-per-class", "1",
                       "--modes", "batch256,pps16", "--evaluate", "--stress-post", "32", "--stress-megapixels", "0.5", "--threads", "2"]) == 0
    report = json.loads(out.read_text())
    s = report["faithful"]
    assert s["images"] == 2 and len(report["per_image"]) == 2
    assert set(s["stages"]) == set(bench_report.STAGES)
    # the stages partition the per-image time: shares sum to 1, overhead = 1 - model shares
    assert sum(st["share"] for st in s["stages"].values()) == pytest.approx(1.0)
    model = sum(s["stages"][k]["share"] for k in bench_report.MODEL_STAGES)
    assert s["overhead_outside_model_forwards"] == pytest.approx(1.0 - model)
    assert all(st["mean_seconds"] > 0 and st["peak_rss"] > 0 for st in s["stages"].values())
    for rec in report["per_image"]:
        assert rec["proposals"] <= 16 and rec["survivors"] <= rec["proposals"] and rec["detections"] <= rec["survivors"]
    # a decoder batch does not change the outputs; a 16x16 grid is a different computation
    b = report["modes"]["batch256"]
    assert b["config_overrides"] == {"point_batch_size": 256}
    assert b["agreement"]["faithful_detections"] > 0
    assert b["agreement"]["matched_at_iou_0.9"] == 1.0
    assert b["agreement"]["max_abs_score_diff_matched"] == pytest.approx(0.0, abs=1e-5)
    assert report["modes"]["pps16"]["summary"]["mean_proposals"] <= 256
    ev = report["evaluate_run"]
    assert ev["images"] == 2 and ev["images_per_second"] == pytest.approx(2 / ev["seconds"])
    st = report["stress_post"]
    assert st["proposals"] == 32 and st["image_size"][0] * st["image_size"][1] == pytest.approx(5e5, rel=0.01)
    assert st["peak_rss"] >= st["rss_before"] > 0
    md = out.with_suffix(".md").read_text()
    assert all(f"| {name} |" in md for name in bench_report.STAGES)
    assert "| batch256 |" in md and "whole `nttt evaluate` run" in md and "GiB above the RSS before" in md

    capsys.readouterr()
    with pytest.raises(SystemExit, match="missing.json: not a readable bench.py report"):
        bench_report.main([str(out), str(out.with_name("missing.json"))])
    assert bench_report.main([str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len(table) == 5 and table[2].startswith("| r | SAM2 random test-tiny")
    assert f"{s['mean_seconds_per_image']:.3f}" in table[2] and f"{ev['images_per_second']:.4f}" in table[2]
    pps16 = report["modes"]["pps16"]["summary"]
    assert table[4].startswith("| r + pps16 | mode pps16 | " + f"{pps16['mean_seconds_per_image']:.3f} |")


def test_report_table_refuses_non_report(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"hello": 1}))
    with pytest.raises(SystemExit, match="x.json: not a bench.py report"):
        bench_report.main([str(p)])


def test_evaluate_without_annotations_fails_before_measuring(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    (images / "a.jpg").write_bytes(b"never decoded: the check comes first")
    with pytest.raises(SystemExit, match="--evaluate: no COCO annotation file .*instances_imgs.json"):
        bench.main(["--sam2", "random", "--encoder", "random", "--size", "test", "--images", str(images),
                    "--out", str(tmp_path / "r.json"), "--evaluate"])
    assert not (tmp_path / "r.json").exists()


def test_missing_image_folder_is_named(tmp_path):
    with pytest.raises(SystemExit, match="--images .*nowhere: not a folder"):
        bench.main(["--sam2", "random", "--encoder", "random", "--images", str(tmp_path / "nowhere"),
                    "--out", str(tmp_path / "r.json")])



def test_preset_architectures_exist_and_random_models_follow_the_preset(monkeypatch):
    import argparse

    from no_time_to_train import presets
    from no_time_to_train.models import configs

    tables = {"sam2": configs.SAM2_VARIANTS, "sam": configs.SAM_VARIANTS, "sam_hq": configs.SAM_VARIANTS,
              "sam3_tracker": configs.SAM3_TRACKER_VARIANTS, "dinov2": configs.DINOV2_VARIANTS, "dinov3": configs.DINOV3_VARIANTS}
    for name, p in presets.PRESETS.items():
        prop_family, prop_size, enc_family, enc_size = p.architecture
        assert prop_size in tables[prop_family] and enc_size in tables[enc_family], name
    monkeypatch.setattr(presets, "random_models", lambda preset: (f"random {preset.architecture[:2]}",
                                                                   f"random {preset.architecture[2:]}"))
    args = argparse.Namespace(preset="dinov3", sam2="random", encoder="random", size="tiny")
    assert bench.build_models(args) == ("random ('sam2', 'large')", "random ('dinov3', 'vitl16')")
    args = argparse.Namespace(preset="hq", sam2="sam_hq_vit_l.pth", encoder="random", size="tiny")
    assert bench.build_models(args) == ("sam_hq_vit_l.pth", "random ('dinov2', 'vitl14')")
    args = argparse.Namespace(preset="fast", sam2=None, encoder=None, size="large")
    assert bench.build_models(args) == ("facebook/sam2-hiera-tiny", "facebook/dinov2-small")


def test_random_models_of_the_fast_preset_have_its_architecture():
    from no_time_to_train.models.configs import SAM2_VARIANTS
    from no_time_to_train.presets import PRESETS, random_models

    proposer, encoder = random_models(PRESETS["fast"])
    assert type(proposer).__name__ == "Sam2Model" and type(encoder).__name__ == "Dinov2Model"
    assert proposer.config.vision_config.backbone_config.embed_dim_per_stage[0] == SAM2_VARIANTS["tiny"].embed_dim
    assert encoder.config.hidden_size == 384 and encoder.config.patch_size == 14
