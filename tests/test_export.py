"""ONNX export and the runtimes (models/export.py, models/exported.py, runtime.py, agreement.py): round trips for
every proposer and encoder family on tiny random models, the runtimes' detections against torch's, the CLI,
the missing-extra message and refused export directories."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

from no_time_to_train import InputError, MethodConfig, ReferenceSegmenter
from no_time_to_train.agreement import compare_runs, match_detections
from no_time_to_train.cli import build_parser, main
from no_time_to_train.imageio import load_image
from no_time_to_train.models.encoder import wrap_encoder
from no_time_to_train.models.export import DECODERS, export_onnx, read_manifest, weights_sha256
from no_time_to_train.models.exported import ExportedPatchEncoder, ExportedProposer, load_exported
from no_time_to_train.models.proposer import make_proposer
from no_time_to_train.transforms import resize_for_encoder, squash_for_sam

pytest.importorskip("onnxruntime", reason="the [onnx] extra is part of the test set-up (make setup)")
pytest.importorskip("openvino", reason="the [openvino] extra is part of the test set-up (make setup)")

EXPORTED = ["onnxruntime", "openvino"]
IMAGE = "val2017/000000000139.jpg"


@pytest.fixture(autouse=True)
def cache(monkeypatch, tmp_path_factory):
    """Exports made on first use go to a per-session temporary cache."""
    monkeypatch.setenv("NTTT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "nttt-cache"))


def _proposer_model(family: str):
    from transformers import Sam2Model, Sam3TrackerModel, SamHQModel, SamModel

    from no_time_to_train.models.configs import sam2_test_config, sam3_tracker_test_config, sam_test_config

    torch.manual_seed(3)
    build = {"sam2": lambda: Sam2Model(sam2_test_config()),
             "sam3_tracker": lambda: Sam3TrackerModel(sam3_tracker_test_config()),
             "sam": lambda: SamModel(sam_test_config()),
             "sam_hq": lambda: SamHQModel(sam_test_config(hq=True))}
    return build[family]().eval()


def _encoder_model(family: str):
    from transformers import DINOv3ViTModel, Dinov2Model, Dinov2WithRegistersModel

    from no_time_to_train.models.configs import dinov2_config, dinov3_config

    torch.manual_seed(4)
    if family == "dinov2":
        return Dinov2Model(dinov2_config("test-tiny")).eval()
    if family == "dinov2_registers":
        return Dinov2WithRegistersModel(dinov2_config("test-tiny", num_register_tokens=4)).eval()
    return DINOv3ViTModel(dinov3_config("test-tiny")).eval()


@pytest.fixture(scope="module")
def export_dir(models, coco_mini, tmp_path_factory):
    """The tiny SAM2 + DINOv2 exported by ``nttt export onnx`` (checked on a coco-mini image), shared by the tests."""
    d = tmp_path_factory.mktemp("export") / "x"
    assert main(["export", "onnx", "-o", str(d), *models, "--image", str(coco_mini / IMAGE), "--quiet"]) == 0
    return d


def _assert_close(got: torch.Tensor, want: torch.Tensor, what: str):
    assert got.shape == want.shape, what
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), f"{what}: max abs diff {(got - want).abs().max():.3g}"


# -- round trips -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sam2", "sam3_tracker", "sam", "sam_hq"])
def test_proposer_export_round_trip(family, coco_mini, tmp_path, tiny_sam2, export_dir):
    image = load_image(coco_mini / IMAGE)
    if family == "sam2":  # SAM 2.0 and 2.1 are one class (Sam2Model); the shared export made by the CLI
        torch_proposer, directory = make_proposer(tiny_sam2), export_dir
        manifest = read_manifest(directory, "proposer")
    else:
        torch_proposer, directory = make_proposer(_proposer_model(family)), tmp_path / "x"
        manifest = export_onnx(directory, proposer=torch_proposer, image=image, image_name=IMAGE)
        assert "encoder" not in manifest
    size = torch_proposer.image_size

    assert manifest["proposer"]["weights_sha256"] == weights_sha256(torch_proposer.model)
    assert {"image_encoder", *DECODERS} <= set(manifest["graphs"])
    assert all(d < 1e-3 for d in manifest["verification"]["max_abs_diff"].values())
    assert {"torch", "onnx", "transformers", "opset"} <= set(manifest["versions"])
    dec = manifest["graphs"]["decoder_points"]
    assert [i["name"] for i in dec["inputs"]][-2:] == ["points", "labels"]
    assert dec["inputs"][-2]["shape"] == ["prompts", "points", 2]  # dynamic number of prompts and points
    assert dec["outputs"][0]["shape"][:2] == ["prompts", 3]

    t_sam = squash_for_sam(image, size)
    want = torch_proposer.encode(t_sam)
    prompts = {  # other batch sizes and point counts than the export's example prompts
        "multi": dict(points=torch.tensor([[[100.0, 200.0]], [[500.0, 600.0]], [[900.0, 50.0]]]),
                      labels=torch.ones(3, 1, dtype=torch.int32)),
        "single": dict(points=torch.tensor([[[300.0, 300.0], [320.0, 700.0], [10.0, 10.0]]]),
                       labels=torch.tensor([[1, 0, 1]]), multimask=False),
        "boxes": dict(boxes=torch.tensor([[50.0, 60.0, 400.0, 500.0], [0.0, 0.0, size - 1.0, size - 1.0]]),
                      multimask=False),
    }
    # OpenVINO compiles every graph when it loads (seconds each): checked on the two decoder kinds (SAM2's
    # shared-image decoder, SAM-HQ's sorted tokens); the SAM 3 tracker and SAM share their code.
    for runtime in EXPORTED if family in ("sam2", "sam_hq") else EXPORTED[:1]:
        proposer = load_exported("proposer", directory, runtime)
        assert isinstance(proposer, ExportedProposer) and proposer.image_size == size
        assert proposer.decoder_width == torch_proposer.decoder_width
        got = proposer.encode(t_sam)
        assert type(got) is type(want)
        for name, t in want.tensors().items():
            _assert_close(got.tensors()[name], t, f"{family} {runtime} {name}")
        for kind, kw in prompts.items():
            for g, w in zip(proposer.decode(got, **kw), torch_proposer.decode(want, **kw)):
                _assert_close(g, w, f"{family} {runtime} decode {kind}")


@pytest.mark.parametrize("family", ["dinov2", "dinov2_registers", "dinov3"])
def test_encoder_export_round_trip(family, tmp_path, tiny_encoder, export_dir):
    if family == "dinov2":  # the shared export made by the CLI
        torch_encoder, directory = wrap_encoder(tiny_encoder), export_dir
        manifest = read_manifest(directory, "encoder")
    else:
        torch_encoder, directory = wrap_encoder(_encoder_model(family)), tmp_path / "x"
        manifest = export_onnx(directory, encoder=torch_encoder, encoder_size="auto")
        assert list(manifest["graphs"]) == ["patch_encoder"]
    size = torch_encoder.input_size("auto")
    assert manifest["encoder"]["input_size"] == size
    assert manifest["encoder"]["weights_sha256"] == weights_sha256(torch_encoder.model)
    assert manifest["graphs"]["patch_encoder"]["inputs"][0]["shape"] == ["images", 3, size, size]
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))  # batch 3, exported with 1
    want = torch_encoder.patch_tokens(images)
    for runtime in EXPORTED:
        encoder = load_exported("encoder", directory, runtime)
        assert isinstance(encoder, ExportedPatchEncoder)
        # the identity a memory records: a memory of one runtime fits the others
        assert encoder.fingerprint() == torch_encoder.fingerprint()
        assert {**encoder.describe(), "name_or_path": ""} == {**torch_encoder.describe(), "name_or_path": ""}
        assert (encoder.patch_size, encoder.dim, encoder.num_prefix) == (torch_encoder.patch_size, torch_encoder.dim,
                                                                          torch_encoder.num_prefix)
        _assert_close(encoder.patch_tokens(images), want, f"{family} {runtime} tokens")


# -- the whole method under each runtime -----------------------------------------------------------------
@pytest.fixture(scope="module")
def references(ref_items):
    return ref_items


def _run(seg, coco_mini, references) -> list[list[dict]]:
    seg.add_references(references)
    box_ref = seg.reference_mask(coco_mini / IMAGE, box=(100, 100, 400, 300))  # the box decoder
    click_ref = seg.reference_mask(coco_mini / IMAGE, points=[(200, 150, 1), (300, 250, 0)])  # single-mask clicks
    names = ["val2017/000000000139.jpg", "val2017/000000022892.jpg"]
    out = [seg.predict(coco_mini / n).to_coco(image_id=i) for i, n in enumerate(names)]
    return out, (box_ref, click_ref), seg.memory.vectors.clone()


@pytest.fixture(scope="module")
def torch_run(tiny_sam2, tiny_encoder, coco_mini, references):
    cfg = MethodConfig(points_per_side=6, iou_threshold=0.0)
    return _run(ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=cfg), coco_mini, references)


def _need_compiler():
    from no_time_to_train.runtime import check_compiler

    try:
        check_compiler()
    except InputError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "compiled"])
def test_runtime_gives_torchs_detections(runtime, torch_run, tiny_sam2, tiny_encoder, coco_mini, references,
                                         export_dir):
    if runtime == "compiled":
        if "compiled" not in os.environ.get("NTTT_PARITY_RUNTIMES", ""):
            pytest.skip("compiling the three networks takes minutes on a small CPU: NTTT_PARITY_RUNTIMES=compiled "
                        "runs it (test_compiled_runtime_compiles_the_models is the quick check)")
        _need_compiler()
    cfg = MethodConfig(points_per_side=6, iou_threshold=0.0)
    exported = {"export_dir": export_dir} if runtime != "compiled" else {}
    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=cfg, runtime=runtime, **exported)
    dets, masks, vectors = _run(seg, coco_mini, references)
    if runtime != "compiled":
        assert isinstance(seg.proposer, ExportedProposer) and isinstance(seg.encoder, ExportedPatchEncoder)
    want_dets, want_masks, want_vectors = torch_run
    assert sum(map(len, want_dets)) >= 3  # the comparison is not vacuous
    result = compare_runs(want_dets, dets)
    assert result["same"] and result["matched"] == result["reference_detections"] == result["other_detections"]
    assert result["max_score_diff"] <= 1e-4 and result["min_mask_iou"] >= 0.99
    torch.testing.assert_close(vectors, want_vectors, rtol=1e-4, atol=1e-5)
    for got, want in zip(masks, want_masks):
        assert (got != want).mean() < 1e-3


def test_compiled_runtime_compiles_the_models(tiny_sam2, tiny_encoder):
    _need_compiler()
    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, runtime="compiled")
    assert seg.compile == {"backend": "inductor"}
    images = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    want = wrap_encoder(tiny_encoder).patch_tokens(images)
    assert seg.encoder._forward is not tiny_encoder  # torch.compile'd
    _assert_close(seg.encoder.patch_tokens(images), want, "compiled tokens")


def test_cached_export_is_made_once_and_reused(tiny_sam2, tiny_encoder, coco_mini, references, tmp_path,
                                               monkeypatch):
    """Export on first use (into the cache), then from the cache."""
    from no_time_to_train.models import export

    monkeypatch.setenv("NTTT_CACHE_DIR", str(tmp_path))
    cfg = MethodConfig(points_per_side=4, iou_threshold=0.0)
    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=cfg, runtime="onnxruntime")
    seg.add_references(references[:1])
    first = seg.predict(coco_mini / IMAGE).to_coco(0)
    made = sorted(p.name.split("-")[0] for p in (tmp_path / "exports").iterdir())
    assert made == ["encoder", "proposer"]
    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: pytest.fail("exported again"))
    again = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=cfg, runtime="onnxruntime",
                               memory=seg.memory)
    assert again.proposer.directory.parent == tmp_path / "exports"
    assert compare_runs([first], [again.predict(coco_mini / IMAGE).to_coco(0)])["same"]


def test_cache_is_keyed_by_weights_and_encoder_size(tiny_sam2, tiny_encoder, tmp_path, monkeypatch):
    from transformers import Dinov2Model

    from no_time_to_train.models.configs import dinov2_config

    monkeypatch.setenv("NTTT_CACHE_DIR", str(tmp_path))
    torch.manual_seed(5)
    other = Dinov2Model(dinov2_config("test-tiny")).eval()
    for encoder, size in ((tiny_encoder, 518), (tiny_encoder, 448), (tiny_encoder, 518), (other, 518)):
        seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=encoder, runtime="onnxruntime",
                                 config=MethodConfig(encoder_size=size))
        assert seg.encoder.exported_size == size and seg.encoder_size == size
        assert seg.encoder.fingerprint() == wrap_encoder(encoder).fingerprint()
    assert len(list((tmp_path / "exports").iterdir())) == 3


# -- the CLI -----------------------------------------------------------------------------------------------
def test_cli_export_then_predict_with_the_export_dir(export_dir, models, tiny_sam2, tiny_encoder, coco_mini,
                                                     references, tmp_path):
    manifest = read_manifest(export_dir, "encoder")
    assert manifest["verification"]["image"] == str(coco_mini / IMAGE)
    assert set(manifest["verification"]["max_abs_diff"]) == set(manifest["graphs"])
    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, config=MethodConfig(points_per_side=4))
    seg.add_references(references)
    seg.save_memory(tmp_path / "memory.safetensors")
    common = ["predict", str(coco_mini / IMAGE), "--memory", str(tmp_path / "memory.safetensors"),
              "--points-per-side", "4", "--iou-threshold", "0", "--device", "cpu", "--quiet"]
    assert main([*common, "-o", str(tmp_path / "torch"), *models, "--runtime", "torch"]) == 0
    # the export directory alone: no --sam2 / --encoder, no PyTorch model
    assert main([*common, "-o", str(tmp_path / "ort"), "--runtime", "onnxruntime", "--export-dir", str(export_dir)]) == 0
    torch_res = json.loads((tmp_path / "torch" / "results.json").read_text())
    ort_res = json.loads((tmp_path / "ort" / "results.json").read_text())
    assert torch_res and compare_runs([torch_res], [ort_res])["same"]


def test_cli_export_prints_the_differences(models, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NTTT_RUNTIME")  # "auto" is openvino on a CPU: the export still exports the PyTorch models
    assert main(["export", "onnx", "-o", str(tmp_path / "x"), *models, "--only", "encoder"]) == 0
    out = capsys.readouterr().out
    assert "patch_encoder.onnx" in out and "decoder" not in out and "built-in test picture" in out
    assert main(["export", "onnx", "-o", str(tmp_path / "x"), *models, "--only", "encoder"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_runtime_option_on_every_model_verb():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for verb in ("predict", "evaluate", "fill-memory", "serve", "pseudo-masks"):
        opts = {o for a in sub[verb]._actions for o in a.option_strings}
        assert {"--runtime", "--export-dir"} <= opts, verb
    args = parser.parse_args(["predict", "x.jpg", "--memory", "m", "-o", "o"])
    assert args.runtime == "auto"


def test_auto_runtime(monkeypatch):
    from no_time_to_train import runtime

    monkeypatch.delenv("NTTT_RUNTIME", raising=False)
    for default in ("torch", "openvino"):
        monkeypatch.setattr(runtime, "CPU_DEFAULT", default)
        assert runtime.resolve("auto", "cpu") == default
        assert runtime.resolve("auto", "cpu", plain_fp32=False) == "torch"  # bf16, autocast, compile: torch
        assert runtime.resolve("auto", "cuda") == runtime.GPU_DEFAULT == "torch"
        assert runtime.resolve("compiled", "cpu") == "compiled"
    monkeypatch.setitem(sys.modules, "openvino", None)  # the extra is not installed: torch
    assert runtime.resolve("auto", "cpu") == "torch"
    monkeypatch.setenv("NTTT_RUNTIME", "onnxruntime")
    assert runtime.resolve("auto", "cpu") == runtime.resolve(None, "cuda") == "onnxruntime"
    with pytest.raises(InputError, match="unknown runtime 'tensorrt'"):
        runtime.resolve("tensorrt")


def test_export_dir_needs_an_exported_runtime(tiny_sam2, tiny_encoder, tmp_path):
    with pytest.raises(InputError, match="--runtime onnxruntime or --runtime openvino"):
        ReferenceSegmenter(sam2=tiny_sam2, encoder=tiny_encoder, export_dir=tmp_path)
    with pytest.raises(InputError, match="float32"):
        ReferenceSegmenter(runtime="onnxruntime", dtype="bfloat16")


# -- missing extras and compilers ------------------------------------------------------------------------
@pytest.mark.parametrize("runtime,extra", [("onnxruntime", "onnx"), ("openvino", "openvino")])
def test_missing_extra_names_the_install_command(runtime, extra, monkeypatch, models, coco_mini, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, runtime, None)  # import fails as if the package were not installed
    with pytest.raises(InputError, match=rf'pip install "no-time-to-train\[{extra}\]"'):
        ReferenceSegmenter(runtime=runtime)
    code = main(["predict", str(coco_mini / IMAGE), "--memory", str(tmp_path / "m.safetensors"), "-o",
                 str(tmp_path / "o"), *models, "--runtime", runtime, "--quiet"])
    assert code == 2 and f'pip install "no-time-to-train[{extra}]"' in capsys.readouterr().err


def test_missing_onnx_package_for_export(monkeypatch, tiny_encoder, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(InputError, match=r'ONNX export needs .*pip install "no-time-to-train\[onnx\]"'):
        export_onnx(tmp_path / "x", encoder=wrap_encoder(tiny_encoder))


def test_compiled_without_a_compiler_says_so(monkeypatch):
    import shutil

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InputError, match="needs a C\\+\\+ compiler"):
        ReferenceSegmenter(runtime="compiled", device="cpu")


# -- refused export directories ----------------------------------------------------------------------------
def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_corrupt_or_incomplete_export_is_refused(export_dir, tmp_path):
    with pytest.raises(InputError, match="not an export directory"):
        read_manifest(tmp_path, "proposer")
    bad = _copy(export_dir, tmp_path / "altered")
    with open(bad / "decoder_points.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(InputError, match="decoder_points.onnx does not match its manifest .*corrupt"):
        load_exported("proposer", bad, "onnxruntime")
    load_exported("encoder", bad, "onnxruntime")  # the encoder's own file is intact
    missing = _copy(export_dir, tmp_path / "missing")
    (missing / "patch_encoder.onnx").unlink()
    with pytest.raises(InputError, match="lacks patch_encoder.onnx"):
        load_exported("encoder", missing, "openvino")
    garbled = _copy(export_dir, tmp_path / "garbled")
    (garbled / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        ReferenceSegmenter(runtime="onnxruntime", export_dir=garbled).encoder
    other = _copy(export_dir, tmp_path / "other")
    (other / "manifest.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(InputError, match="not a no-time-to-train export manifest"):
        read_manifest(other, "encoder")


def test_mismatched_export_is_refused(export_dir, tiny_sam2, tmp_path):
    from transformers import Dinov2Model

    from no_time_to_train.models.configs import dinov2_config

    torch.manual_seed(99)
    other_encoder = Dinov2Model(dinov2_config("test-tiny")).eval()
    seg = ReferenceSegmenter(sam2=tiny_sam2, encoder=other_encoder, runtime="onnxruntime", export_dir=export_dir)
    with pytest.raises(InputError, match="made from other encoder weights"):
        seg.encoder
    seg.proposer  # the proposer is the exported one
    with pytest.raises(InputError, match="takes 518² encoder inputs .* --encoder-size 518"):
        ReferenceSegmenter(runtime="openvino", export_dir=export_dir, config=MethodConfig(encoder_size=448)).encoder
    with pytest.raises(InputError, match="sam_image_size"):
        ReferenceSegmenter(runtime="onnxruntime", export_dir=export_dir, config=MethodConfig(sam_image_size=512)).proposer
    only_encoder = tmp_path / "enc"
    manifest = json.loads((export_dir / "manifest.json").read_text())
    del manifest["proposer"]
    _copy(export_dir, only_encoder)
    (only_encoder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="has no proposer"):
        ReferenceSegmenter(runtime="onnxruntime", export_dir=only_encoder).proposer


# -- the comparison itself ---------------------------------------------------------------------------------
def _det(cat, score, box):
    from pycocotools import mask as mask_utils

    m = np.zeros((40, 40), np.uint8, order="F")
    m[box[1]:box[3], box[0]:box[2]] = 1
    rle = mask_utils.encode(m)
    return {"category_id": cat, "score": score, "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}


def test_compare_runs_criterion():
    ref = [[_det(1, 0.9, (0, 0, 20, 20)), _det(2, 0.5, (10, 10, 30, 30))]]
    assert compare_runs(ref, ref) == {"reference_detections": 2, "other_detections": 2, "matched": 2,
                                      "matched_fraction": 1.0, "max_score_diff": 0.0, "min_mask_iou": 1.0,
                                      "same": True}
    shifted = [[_det(1, 0.9, (0, 0, 20, 21)), _det(2, 0.5 + 5e-5, (10, 10, 30, 30))]]  # IoU 400/420 < 0.99
    assert match_detections(ref[0], shifted[0]) == [(1, 1, 1.0)]
    assert not compare_runs(ref, shifted)["same"]
    relabelled = [[_det(3, 0.9, (0, 0, 20, 20)), _det(2, 0.5, (10, 10, 30, 30))]]
    assert compare_runs(ref, relabelled)["matched"] == 1
    rescored = [[_det(1, 0.9 + 2e-4, (0, 0, 20, 20)), _det(2, 0.5, (10, 10, 30, 30))]]
    assert compare_runs(ref, rescored)["matched"] == 1
    assert compare_runs([[]], [[]])["same"] and not compare_runs([[]], [ref[0][:1]])["same"]
