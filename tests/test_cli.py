"""The `nttt` protocol end to end on coco-mini with tiny models: sample -> fill -> postprocess -> evaluate,
resume after a crash, 2 processes equal 1, predict on folders."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from no_time_to_train.cli import build_parser, main
from no_time_to_train.config import MethodConfig

# The 18 COCO novel classes that have a valid 1-shot reference in coco-mini's train2017 slice
# (every train and couch instance there is within 10 px of the border, which the sampler rejects).
CATS = "person,bicycle,car,motorcycle,airplane,bus,boat,bird,cat,dog,horse,sheep,cow,bottle,chair,potted plant,dining table,tv"
FAST = ["--points-per-side", "4", "--device", "cpu", "--quiet"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def memory(tmp_path_factory, coco_mini, models):
    d = tmp_path_factory.mktemp("memory")
    ann = coco_mini / "annotations" / "instances_train2017.json"
    assert main(["sample", "--annotations", str(ann), "--categories", CATS, "--shots", "1", "--seed", "33",
                 "-o", str(d / "refs.json")]) == 0
    assert main(["fill-memory", str(d / "refs.json"), "--annotations", str(ann), "--images",
                 str(coco_mini / "train2017"), "-o", str(d / "mem.safetensors"), *models, *FAST]) == 0
    assert main(["postprocess-memory", str(d / "mem.safetensors"), "--quiet"]) == 0
    return d / "mem.safetensors"


def _evaluate_args(coco_mini, memory, models, out, n=4):
    return ["evaluate", "--memory", str(memory), "--annotations",
            str(coco_mini / "annotations" / "instances_val2017.json"), "--images", str(coco_mini / "val2017"),
            "--categories", CATS, "--max-images", str(n), "-o", str(out), *models, *FAST]


def test_sample_fill_postprocess(memory):
    from no_time_to_train import ReferenceMemory

    mem = ReferenceMemory.load(memory)
    assert len(mem) == 18 and mem.counts() == {n: 1 for n in mem.category_names}
    ids = mem.category_ids
    assert ids == sorted(ids)  # label order = ascending COCO id, the paper's class index rule
    refs = json.loads((memory.parent / "refs.json").read_text())
    assert {r["annotation_id"] for r in refs["references"]} == {r["annotation_id"] for r in mem.references}
    assert not (memory.parent / "mem.safetensors.parts").exists()


def test_evaluate_writes_results_and_metrics(coco_mini, memory, models, tmp_path, capsys):
    assert main(_evaluate_args(coco_mini, memory, models, tmp_path / "eval")) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["bbox"]) >= {"AP", "AP50", "AP75", "per_category"}
    assert len(metrics["segm"]["per_category"]) == 18
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results and {"image_id", "category_id", "bbox", "score", "segmentation"} <= set(results[0])
    assert "AP" in capsys.readouterr().out


def test_resume_after_crash_equals_uninterrupted(coco_mini, memory, models, tmp_path):
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    assert main(_evaluate_args(coco_mini, memory, models, full)) == 0
    assert main(_evaluate_args(coco_mini, memory, models, crashed)) == 0
    # Simulate a kill mid-run: keep 2 finished lines plus a half-written third, drop the merged outputs.
    part = next((crashed / "parts").glob("part-*.jsonl"))
    lines = part.read_bytes().split(b"\n")
    part.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][: len(lines[2]) // 2])
    (crashed / "results.json").unlink()
    (crashed / "metrics.json").unlink()
    assert main(_evaluate_args(coco_mini, memory, models, crashed)) == 0
    assert (crashed / "results.json").read_bytes() == (full / "results.json").read_bytes()
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((crashed / "metrics.json").read_text())
    assert a["bbox"] == b["bbox"] and a["segm"] == b["segm"]
    assert len(part.read_bytes().split(b"\n")) == 5  # 4 complete lines + final newline; the torn one was cut


def test_kill_9_loses_at_most_the_image_in_flight(coco_mini, memory, models, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": SRC}
    cmd = [sys.executable, "-m", "no_time_to_train", *_evaluate_args(coco_mini, memory, models, out, n=6)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    part = out / "parts" / "part-00000.jsonl"
    while time.time() < deadline and not (part.exists() and part.read_bytes().count(b"\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = part.read_bytes().count(b"\n")
    assert kept >= 2 and not (out / "results.json").exists()
    assert subprocess.run(cmd, env=env).returncode == 0
    results = json.loads((out / "results.json").read_text())
    recs = [json.loads(x) for x in part.read_bytes().splitlines()]
    assert len(recs) == 6 and len({r["key"] for r in recs}) == 6  # each image exactly once
    assert {r["image_id"] for r in results} <= {r["key"] for r in recs}


def test_changed_settings_refuse_to_mix(coco_mini, memory, models, tmp_path, capsys):
    args = _evaluate_args(coco_mini, memory, models, tmp_path / "e", n=1)
    assert main(args) == 0
    assert main(args + ["--nms-threshold", "0.6"]) == 2
    assert "different settings (config.nms_threshold: 0.5 -> 0.6)" in capsys.readouterr().err
    assert main(args + ["--nms-threshold", "0.6", "--overwrite"]) == 0


def _envs():
    """The README's recipe for byte-identical outputs: the lone process with ``OMP_NUM_THREADS=1``, torchrun
    as it comes (it gives each process one thread; another thread count reorders float sums on CPU)."""
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return {**base, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}, {**base, "PYTHONPATH": SRC}


def _torchrun_ok(proc):
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OMP_NUM_THREADS environment variable for each process to be 1" in proc.stderr  # as the README says


def test_two_processes_equal_one(coco_mini, memory, models, tmp_path):
    env_one, env_torchrun = _envs()
    one, two = tmp_path / "one", tmp_path / "two"
    single = [sys.executable, "-m", "no_time_to_train", *_evaluate_args(coco_mini, memory, models, one, n=5)]
    proc = subprocess.run(single, env=env_one, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "no_time_to_train", *_evaluate_args(coco_mini, memory, models, two, n=5)]
    _torchrun_ok(subprocess.run(cmd, env=env_torchrun, capture_output=True, text=True, timeout=600))
    parts = sorted((two / "parts").glob("part-*.jsonl"))
    keys = [json.loads(x)["key"] for p in parts for x in p.read_text().splitlines()]
    assert len(parts) == 2 and len(keys) == 5 and len(set(keys)) == 5  # sharded, each image once
    assert (two / "results.json").read_bytes() == (one / "results.json").read_bytes()
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert a["bbox"] == b["bbox"] and a["segm"] == b["segm"]


def test_fill_memory_on_two_processes_equals_one(coco_mini, memory, models, tmp_path):
    env_one, env_torchrun = _envs()
    ann = coco_mini / "annotations" / "instances_train2017.json"
    args = ["fill-memory", str(memory.parent / "refs.json"), "--annotations", str(ann), "--images",
            str(coco_mini / "train2017"), *models, *FAST]
    one = subprocess.run([sys.executable, "-m", "no_time_to_train", *args, "-o", str(tmp_path / "one.safetensors")],
                         env=env_one, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    _torchrun_ok(subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node=2", "-m", "no_time_to_train", *args, "-o",
                                 str(tmp_path / "two.safetensors")],
                                env=env_torchrun, capture_output=True, text=True, timeout=600))
    from no_time_to_train import ReferenceMemory

    a, b = (ReferenceMemory.load(tmp_path / f) for f in ("one.safetensors", "two.safetensors"))
    assert torch.equal(a.vectors, b.vectors) and a.references == b.references and a.categories == b.categories


def test_fill_memory_from_boxes_exports_masks(coco_mini, memory, models, tmp_path):
    from no_time_to_train import ReferenceMemory

    ann = coco_mini / "annotations" / "instances_train2017.json"
    refs = json.loads((memory.parent / "refs.json").read_text())
    refs["references"] = refs["references"][:3]
    kept = {r["category_id"] for r in refs["references"]}
    refs["categories"] = [c for c in refs["categories"] if c["id"] in kept]
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    assert main(["fill-memory", str(tmp_path / "refs.json"), "--annotations", str(ann), "--images",
                 str(coco_mini / "train2017"), "-o", str(tmp_path / "boxes.safetensors"), "--reference-masks",
                 "from-boxes", "--export-masks", str(tmp_path / "masks"), *models, *FAST]) == 0
    mem = ReferenceMemory.load(tmp_path / "boxes.safetensors")
    assert len(mem) == 3 and all(r["prompt"] == "box" for r in mem.references)
    pngs = sorted((tmp_path / "masks").glob("*.png"))
    assert [p.name for p in pngs] == sorted(f"{r['image_id']}_{r['annotation_id']}.png" for r in refs["references"])
    first = refs["references"][0]
    info = next(i for i in json.loads(ann.read_text())["images"] if i["id"] == first["image_id"])
    assert np.asarray(Image.open(tmp_path / "masks" / f"{first['image_id']}_{first['annotation_id']}.png")).shape == (
        info["height"], info["width"])


def test_predict_folder_with_visualisation(coco_mini, memory, models, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in sorted((coco_mini / "val2017").glob("*.jpg"))[:2]:
        (imgs / p.name).write_bytes(p.read_bytes())
    Image.fromarray(np.zeros((40, 60), np.uint8)).save(imgs / "gray.png")
    out = tmp_path / "pred"
    assert main(["predict", str(imgs), "--memory", str(memory), "-o", str(out), "--visualize",
                 "--score-threshold", "0.0", *models, *FAST]) == 0
    images = json.loads((out / "images.json").read_text())
    assert len(images) == 3
    results = json.loads((out / "results.json").read_text())
    assert all(r["score"] > 0 for r in results) and all("category_name" in r for r in results)
    for im in images:
        stem = Path(im["file_name"]).stem
        inst = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        assert inst.shape == (im["height"], im["width"])
        assert inst.max() == sum(r["image_id"] == im["id"] for r in results)
        assert (out / "overlays" / f"{stem}.jpg").exists()


def test_bad_inputs_give_one_clear_error(coco_mini, memory, models, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nothing-here"), "--memory", str(memory), "-o", str(tmp_path / "o"),
                 *models, *FAST]) == 2
    assert "nothing-here" in capsys.readouterr().err
    assert main(["evaluate", "--memory", str(memory), "--annotations", str(tmp_path / "missing.json"),
                 "--images", str(coco_mini / "val2017"), "-o", str(tmp_path / "o2"), *models, *FAST]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(_evaluate_args(coco_mini, memory, models, tmp_path / "o3") + ["--categories", "giraffe"]) == 2
    assert "no references for giraffe" in capsys.readouterr().err
    assert main(["sample", "--annotations", str(coco_mini / "annotations" / "instances_train2017.json"),
                 "--split", "coco-novel", "--shots", "1", "-o", str(tmp_path / "r.json")]) == 2
    assert "couch" in capsys.readouterr().err


def test_help_is_fast_and_imports_no_models():
    code = "import sys; from no_time_to_train.cli import build_parser; build_parser(); " \
           "print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC},
                         capture_output=True, text=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.parametrize("flags,message", [
    (["--points-per-side", "abc"], "--points-per-side must be an integer >= 1, got 'abc'"),
    (["--score-threshold", "high"], "--score-threshold must be a number in [0, 1] or none, got 'high'"),
    (["--iou-threshold", "5"], "--iou-threshold must be a number in [0, 1], got 5"),
    (["--soft-merge", "maybe"], "--soft-merge must be true or false, got 'maybe'"),
    (["--set", "nms_threshold=2"], "--set nms_threshold must be a number in [0, 1], got 2"),
    (["--device", "gpu"], "--device 'gpu' is not a device"),
])
def test_bad_method_flags_are_refused_before_any_work(tmp_path, capsys, flags, message):
    # every other input is missing too: the flag must be reported first, before any file is read
    argv = ["evaluate", "--memory", str(tmp_path / "no.safetensors"), "--annotations", str(tmp_path / "no.json"),
            "--images", str(tmp_path), "-o", str(tmp_path / "out"), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("nttt evaluate: error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["predict", str(tmp_path), "--memory", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "o"),
                 "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: CUDA is not available on this machine" in err and "--device cpu" in err


def _method_flag_help(verb: str) -> dict[str, str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.option_strings[0]: a.help for a in sub.choices[verb]._actions if a.dest.startswith("cfg_")}


@pytest.mark.parametrize("verb", ["predict", "evaluate", "fill-memory", "pseudo-masks", "serve"])
def test_method_flag_help_gives_meaning_and_allowed_values(verb):
    helps = _method_flag_help(verb)
    assert sorted(helps) == sorted("--" + f.name.replace("_", "-") for f in dataclasses.fields(MethodConfig))
    assert helps["--iou-threshold"] == ("proposals are kept when SAM2's predicted IoU is strictly greater "
                                        "(a number in [0, 1]; default 0.4)")
    assert helps["--prompt-mode"].endswith("(one of grid, guided; default grid)")
    assert helps["--soft-merge"].endswith("(true or false; default true)")
    assert helps["--point-batch-size"].endswith("('auto' or an integer >= 1; default auto)")
    assert helps["--score-threshold"].endswith("(a number in [0, 1] or none; default none)")
    assert helps["--multimask-tokens"].endswith("(a non-empty subset of 1, 2, 3; default [1, 2, 3])")
    assert helps["--encoder-size"].endswith("('auto' or an integer >= 1 (a multiple of the encoder's patch size); "
                                            "default 518)")
    for flag, text in helps.items():  # every flag: a meaning (from MethodConfig's docstring), then the values
        name = flag[2:].replace("-", "_")
        default = getattr(MethodConfig(), name)
        assert re.fullmatch(r"\S.{9,} \(.+; default .+\)", text), flag
        assert "``" not in text and "*quirk*" not in text, flag
        assert MethodConfig().with_overrides([f"{name}={text.rsplit('default ', 1)[1][:-1]}"]) \
            == MethodConfig(), f"{flag}: the documented default {default!r} does not parse back"


@pytest.mark.parametrize("verb", ["predict", "serve"])
def test_help_shows_method_flag_help(monkeypatch, capsys, verb):
    monkeypatch.setenv("COLUMNS", "300")
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = capsys.readouterr().out
    assert re.search(r"--iou-threshold V +proposals are kept when SAM2's predicted IoU is strictly greater "
                     r"\(a number in \[0, 1\]; default 0\.4\)\n", out)
    assert "(default: None)" not in out


@pytest.mark.parametrize("argv, flag, shown", [
    (["--points-per-side", "0"], "--points-per-side", "--points-per-side"),
    (["--prompt-mode", "fast"], "--prompt-mode", "--prompt-mode must be one of grid, guided, got 'fast'"),
    (["--encoder-size", "0", "--iou-threshold", "0.5"], "--encoder-size", "--encoder-size"),
])
def test_invalid_method_flag_is_reported_by_its_flag(coco_mini, tmp_path, capsys, argv, flag, shown):
    image = str(coco_mini / "val2017" / "000000000139.jpg")
    assert main(["predict", image, "--memory", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "o"),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nttt predict: error: {shown}") and flag[2:].replace("-", "_") not in err


def test_set_errors_keep_the_key_as_typed(coco_mini, tmp_path, capsys):
    image = str(coco_mini / "val2017" / "000000000139.jpg")
    assert main(["predict", image, "--memory", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "o"),
                 "--set", "points_per_side=0"]) == 2
    assert "points_per_side" in capsys.readouterr().err


@pytest.mark.parametrize("argv, flag", [
    (["sample", "--annotations", "a.json", "--shots", "0", "-o", "r.json"], "--shots"),
    (["evaluate", "--memory", "m", "--annotations", "a", "--images", "i", "-o", "o", "--max-images", "-1"],
     "--max-images"),
    (["evaluate", "--memory", "m", "--annotations", "a", "--images", "i", "-o", "o", "--max-images", "0"],
     "--max-images"),
    (["evaluate", "--memory", "m", "--annotations", "a", "--images", "i", "-o", "o", "--max-images", "two"],
     "--max-images"),
    (["protocol", "cdfsod", "root", "-o", "o", "--shots", "1", "x"], "--shots"),
    (["convert", "cdfsod", "root", "-o", "o", "--shots", "0"], "--shots"),
])
def test_bad_counts_are_refused_naming_the_flag(capsys, argv, flag):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err


def test_offline_predict_names_both_models_before_loading(coco_mini, tmp_path, offline_empty_cache, monkeypatch,
                                                         capsys):
    from no_time_to_train import predictor

    def never(*args, **kwargs):
        raise AssertionError("no model may be loaded")

    monkeypatch.setattr(predictor, "ReferenceSegmenter", never)
    image = str(coco_mini / "val2017" / "000000000139.jpg")
    assert main(["predict", image, "--memory", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n  - ") == 2 and "facebook/sam2-hiera-large" in err and "facebook/dinov2-large" in err


# -- long runs a user can trust ------------------------------------------------------------------------------
def _val_with_unreadable(coco_mini, tmp_path):
    """val2017 as links, with the 1st image of the JSON broken (not a JPEG) and the 3rd missing."""
    ann = coco_mini / "annotations" / "instances_val2017.json"
    names = [im["file_name"] for im in json.loads(ann.read_text())["images"]]
    d = tmp_path / "val"
    d.mkdir()
    for p in (coco_mini / "val2017").iterdir():
        (d / p.name).symlink_to(p)
    (d / names[0]).unlink()
    (d / names[0]).write_bytes(b"not a jpeg")
    (d / names[2]).unlink()
    return d, names


def test_unreadable_images_stop_or_are_skipped_and_listed(coco_mini, memory, models, tmp_path, capsys):
    images, names = _val_with_unreadable(coco_mini, tmp_path)
    out = tmp_path / "e"
    args = _evaluate_args(coco_mini, memory, models, out)
    args[args.index("--images") + 1] = str(images)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert names[0] in err and "--on-error skip" in err
    # the failed run made nothing, so it does not lock the output: a changed command is not refused
    assert not (out / "parts").exists()
    assert main(args + ["--nms-threshold", "0.6", "--on-error", "skip"]) == 0
    captured = capsys.readouterr()
    assert f"2 unreadable image(s) skipped (their ground truth counts as missed), listed in {out / 'skipped.json'}" \
        in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    ann = json.loads((coco_mini / "annotations" / "instances_val2017.json").read_text())
    ids = [im["id"] for im in ann["images"]]
    skipped = metrics["skipped_images"]
    assert [(s["image_id"], s["file_name"]) for s in skipped] == [(ids[0], names[0]), (ids[2], names[2])]
    assert "could not be decoded" in skipped[0]["error"] and "not found" in skipped[1]["error"]
    assert json.loads((out / "skipped.json").read_text()) == skipped
    assert metrics["num_images"] == 4  # skipped images stay in the evaluation
    assert {r["image_id"] for r in json.loads((out / "results.json").read_text())} <= {ids[1], ids[3]}


def test_predict_skips_an_unreadable_image_and_lists_it(coco_mini, memory, models, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    good = sorted((coco_mini / "val2017").glob("*.jpg"))[0]
    (imgs / "a.jpg").symlink_to(good)
    (imgs / "b.jpg").write_bytes(b"\x00" * 10)
    out = tmp_path / "pred"
    assert main(["predict", str(imgs), "--memory", str(memory), "-o", str(out), "--on-error", "skip",
                 *models, *FAST]) == 0
    skipped = json.loads((out / "skipped.json").read_text())
    assert [s["file_name"] for s in skipped] == [str(imgs / "b.jpg")] and "b.jpg" in skipped[0]["error"]
    assert [im["file_name"] for im in json.loads((out / "images.json").read_text())] == [str(imgs / "a.jpg")]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png"]


def test_failed_fill_memory_leaves_no_parts_folder(coco_mini, memory, models, tmp_path, capsys):
    refs = json.loads((memory.parent / "refs.json").read_text())
    ann = coco_mini / "annotations" / "instances_train2017.json"
    first = next(i["file_name"] for i in json.loads(ann.read_text())["images"]
                 if i["id"] == refs["references"][0]["image_id"])
    images = tmp_path / "train"
    images.mkdir()
    for p in (coco_mini / "train2017").iterdir():
        (images / p.name).symlink_to(p)
    (images / first).unlink()
    (images / first).write_bytes(b"broken")
    out = tmp_path / "mem.safetensors"
    assert main(["fill-memory", str(memory.parent / "refs.json"), "--annotations", str(ann), "--images",
                 str(images), "-o", str(out), *models, *FAST]) == 2
    assert first in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "mem.safetensors.parts").exists()


def test_fill_memory_into_a_folder_is_refused_before_the_run(coco_mini, memory, models, tmp_path, capsys):
    ann = coco_mini / "annotations" / "instances_train2017.json"
    assert main(["fill-memory", str(memory.parent / "refs.json"), "--annotations", str(ann), "--images",
                 str(coco_mini / "train2017"), "-o", str(tmp_path), *models, *FAST]) == 2
    assert f"the memory output {tmp_path} is a folder" in capsys.readouterr().err


def test_overwrite_removes_the_previous_outputs_before_running(coco_mini, memory, models, tmp_path, monkeypatch):
    from no_time_to_train.predictor import ReferenceSegmenter

    out = tmp_path / "e"
    args = _evaluate_args(coco_mini, memory, models, out, n=1)
    assert main(args) == 0
    assert (out / "results.json").exists() and (out / "metrics.json").exists()

    def crash(self, image):
        raise RuntimeError("crash")

    monkeypatch.setattr(ReferenceSegmenter, "predict", crash)
    with pytest.raises(RuntimeError, match="crash"):
        main(args + ["--nms-threshold", "0.6", "--overwrite"])
    assert not (out / "results.json").exists() and not (out / "metrics.json").exists()


def test_a_second_run_on_one_output_gets_a_clear_message(coco_mini, memory, models, tmp_path, capsys):
    from no_time_to_train.runlock import RunLock

    out = tmp_path / "e"
    with RunLock(out / "parts"):  # another run holds the output (flock: another descriptor is another holder)
        assert main(_evaluate_args(coco_mini, memory, models, out, n=1)) == 2
    err = capsys.readouterr().err
    assert f"output folder {out} is in use by process {os.getpid()} " in err
    assert "wait for it to finish or use another output (-o)" in err


def test_disk_full_gives_one_clear_message(coco_mini, memory, models, tmp_path, monkeypatch, capsys):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "e"
    assert main(_evaluate_args(coco_mini, memory, models, out, n=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"nttt evaluate: error: no space left on the device holding {out / 'parts' / 'part-00000.jsonl'}: "
                   "free some space or use an output on another disk, then rerun the same command "
                   "(finished items are kept)"]


def test_an_output_that_is_a_file_gives_one_clear_message(coco_mini, memory, models, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("x")
    assert main(_evaluate_args(coco_mini, memory, models, out, n=1)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"nttt evaluate: error: {out / 'parts'}: part of this path is a file where a folder is expected: "
                   "give a folder path"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_gives_one_clear_message(coco_mini, memory, models, tmp_path, capsys):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        assert main(_evaluate_args(coco_mini, memory, models, out, n=1)) == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"permission denied on {out / 'parts'}" in err[0]


def test_read_only_file_system_gives_one_clear_message(coco_mini, memory, models, tmp_path, monkeypatch, capsys):
    import errno

    real_open = os.open

    def read_only(path, flags, *a, **k):  # the lock file is the first file a run creates
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    out = tmp_path / "e"
    assert main(_evaluate_args(coco_mini, memory, models, out, n=1)) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"nttt evaluate: error: cannot write {out / 'parts' / '.lock'}: the file system is read-only; "
        "choose a writable output (-o)"]


def test_serve_on_a_busy_port_gives_one_clear_message(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2  # refused before any model loads
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"nttt serve: error: cannot listen on 127.0.0.1:{port}" in err[0]
    assert "pick another --port" in err[0]
