"""Parity with the authors' own code: their outputs on known random weights (``../shared/data/parity``).

The weights are regenerated bit for bit from the manifest (``tests/parity.py``), then the pipeline runs as a
user would run it: ``nttt fill-memory`` from the authors' reference file and ``nttt evaluate`` on the val
images, at the paper's settings (32x32 grid, IoU filter 0.4, NMS 0.5, top-100). Required: the same prototypes,
per image the same predicted IoUs for all 1024 prompts and the same counts after the filter and after NMS, and
the same detections (category, score, box exactly, mask).

Each image costs about a minute on a 2-core CPU, so the default suite checks two of the six images;
``NTTT_PARITY_ALL=1`` checks all six (see the README's development section). The default suite runs it under
the torch runtime; ``NTTT_PARITY_RUNTIMES=onnxruntime,openvino,compiled`` runs it again under each runtime
listed (``--runtime``; the ONNX runtimes export the weights into a temporary cache first).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from conftest import COCO_MINI
from parity import expected_sha256, generate_weights

from no_time_to_train.resultstore import file_sha256

PARITY = COCO_MINI.parent / "parity"
ALL_IMAGES = os.environ.get("NTTT_PARITY_ALL") == "1"
DEFAULT_IMAGES = (139, 22892)  # 3 and 5 detections; together they cover 8 of the 20 classes
RUNTIMES = ["torch", *(r for r in os.environ.get("NTTT_PARITY_RUNTIMES", "").split(",") if r.strip() not in ("", "torch"))]


@pytest.fixture(scope="module")
def golden():
    if not PARITY.is_dir():
        pytest.fail(f"parity data not found at {PARITY}; the repository expects ../shared beside it")
    summary = json.loads((PARITY / "summary.json").read_text())
    return {
        "summary": summary,
        "images": {im["image_id"]: im for im in summary["images"]},
        "predictions": json.loads((PARITY / "predictions.json").read_text()),
    }


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return generate_weights(PARITY / "weights_manifest.json", tmp_path_factory.mktemp("parity_weights"))


def test_generated_weights_match_the_manifest(weights):
    manifest = json.loads((PARITY / "weights_manifest.json").read_text())
    sam2 = torch.load(weights[0], weights_only=True)["model"]
    dinov2 = torch.load(weights[1], weights_only=True)
    for entries, sd in ((manifest["sam2"], sam2), (manifest["dinov2"], dinov2)):
        assert list(sd) == [e["key"] for e in entries]
        for e in entries:
            t = sd[e["key"]].double()
            assert list(t.shape) == e["shape"] and str(sd[e["key"]].dtype) == f"torch.{e['dtype']}"
            if t.numel() > 1000:  # large tensors: the draw's statistics are the manifest's
                assert abs(t.mean().item() - e["mean"]) < 4 * e["std"] / t.numel() ** 0.5 + 1e-6, e["key"]
                assert t.std().item() == pytest.approx(e["std"], rel=0.1, abs=1e-6), e["key"]
    if not torch.__version__.startswith("2.13.0"):
        pytest.skip(f"the sha256 values were made with torch 2.13.0 (this is {torch.__version__})")
    expected = expected_sha256(PARITY)
    assert {p.name: file_sha256(p) for p in weights} == expected


@pytest.fixture(scope="module", params=RUNTIMES)
def parity_run(request, weights, golden, tmp_path_factory):
    """``nttt fill-memory`` + ``nttt evaluate`` on the chosen images under one runtime, with what the predictor
    saw recorded."""
    from no_time_to_train import predictor as predictor_module
    from no_time_to_train.cli import main
    from no_time_to_train.data.coco import CocoDataset
    from no_time_to_train.predictor import ReferenceSegmenter

    out = tmp_path_factory.mktemp("parity_run")
    ids = sorted(golden["images"]) if ALL_IMAGES else list(DEFAULT_IMAGES)
    gt = json.loads((COCO_MINI / "annotations" / "instances_val2017.json").read_text())
    gt["images"] = [im for im in gt["images"] if im["id"] in ids]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in ids]
    (out / "val.json").write_text(json.dumps(gt))
    models = ["--sam2", str(weights[0]), "--encoder", str(weights[1]), "--device", os.environ.get("NTTT_PARITY_DEVICE", "cpu"), "--quiet",
              "--runtime", request.param]

    seen: list[dict] = []  # one entry per predicted image, in prediction order
    real_predict, real_select = ReferenceSegmenter.predict, ReferenceSegmenter.select
    real_best = predictor_module.select_best_token

    def predict(self, image):
        seen.append({"shape": image.shape[:2], "ious": []})
        return real_predict(self, image)

    def best_token(logits, iou, tokens):
        best = real_best(logits, iou, tokens)
        seen[-1]["ious"].append(best[1].clone())
        return best

    def select(self, proposals, tokens, prototypes):
        candidates = real_select(self, proposals, tokens, prototypes)
        seen[-1].update(after_filter=len(proposals.iou), after_nms=len(candidates.scores))
        return candidates

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NTTT_CACHE_DIR", str(out / "cache"))
        mp.setattr(ReferenceSegmenter, "predict", predict)
        mp.setattr(ReferenceSegmenter, "select", select)
        mp.setattr(predictor_module, "select_best_token", best_token)
        assert main(["fill-memory", str(PARITY / "refs.json"),
                     "--annotations", str(COCO_MINI / "annotations" / "instances_train2017.json"),
                     "--images", str(COCO_MINI / "train2017"), "-o", str(out / "memory.safetensors"), *models]) == 0
        assert main(["evaluate", "--memory", str(out / "memory.safetensors"), "--annotations", str(out / "val.json"),
                     "--images", str(COCO_MINI / "val2017"), "--split", "coco-novel", "-o", str(out / "eval"),
                     *models]) == 0
    order = CocoDataset(out / "val.json", COCO_MINI / "val2017").image_ids  # the order evaluate predicts in
    assert sorted(order) == ids and len(seen) == len(ids)
    return {"ids": ids, "out": out, "seen": dict(zip(order, seen)),
            "results": json.loads((out / "eval" / "results.json").read_text())}


def test_prototypes_match(parity_run, golden):
    from no_time_to_train.memory import ReferenceMemory

    memory = ReferenceMemory.load(parity_run["out"] / "memory.safetensors")
    index_to_id = golden["summary"]["class_index_to_coco_id"]
    assert memory.category_ids == [index_to_id[str(i)] for i in range(len(index_to_id))]
    ours = torch.nn.functional.normalize(memory.prototypes("instance-mean").double(), dim=1)
    theirs = torch.tensor(golden["summary"]["prototypes_normalised"], dtype=torch.float64)
    assert ours.shape == theirs.shape
    cosine = (ours * theirs).sum(1)
    assert cosine.min().item() >= 1 - 1e-5, cosine.tolist()


def test_predicted_ious_and_counts_match(parity_run, golden):
    for image_id in parity_run["ids"]:
        want, got = golden["images"][image_id], parity_run["seen"][image_id]
        assert tuple(got["shape"]) == (want["H"], want["W"])
        ious = torch.cat(got["ious"])
        assert ious.shape == (1024,)  # the 32x32 grid, x-major, every prompt decoded
        diff = (ious.double() - torch.tensor(want["pred_ious_all"], dtype=torch.float64)).abs().max().item()
        assert diff <= 1e-4, f"image {image_id}: predicted IoUs differ by up to {diff}"
        assert got["after_filter"] == want["n_after_iou_filter"], image_id
        assert got["after_nms"] == want["n_after_nms"], image_id


def test_detections_match(parity_run, golden):
    from no_time_to_train.agreement import match_detections

    for image_id in parity_run["ids"]:
        want = [d for d in golden["predictions"] if d["image_id"] == image_id]
        got = [d for d in parity_run["results"] if d["image_id"] == image_id]
        assert len(want) == golden["images"][image_id]["n_final"]
        assert len(got) == len(want), f"image {image_id}: {len(got)} detections, the authors' code made {len(want)}"
        # each golden detection needs its own match: same category, score within 1e-4, mask IoU >= 0.99
        pairs = match_detections(want, got)
        unmatched = sorted(set(range(len(want))) - {j for j, _, _ in pairs})
        assert not unmatched, [f"image {image_id}: no match for the authors' detection {want[j]['category_id']}, "
                               f"score {want[j]['score']:.5f}, bbox {want[j]['bbox']}" for j in unmatched]
        for j, i, _ in pairs:
            assert got[i]["bbox"] == want[j]["bbox"], f"image {image_id}: box {got[i]['bbox']} != {want[j]['bbox']}"
