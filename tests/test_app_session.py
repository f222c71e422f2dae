"""The browser app's state logic (``app/session.py``, no Gradio needed) and the ``nttt serve`` verb."""

from __future__ import annotations

import json
import sys
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from no_time_to_train.app.session import BOX, NEGATIVE, POSITIVE, TABLE_COLUMNS, Draft, Workspace, draft_view
from no_time_to_train.errors import InputError
from no_time_to_train.imageio import load_image


@pytest.fixture
def ref_path(coco_mini):
    return coco_mini / "train2017" / "000000000790.jpg"


@pytest.fixture
def targets(coco_mini):
    return [coco_mini / "val2017" / "000000000139.jpg", coco_mini / "val2017" / "000000000802.jpg"]


@pytest.fixture
def ws(make_segmenter, tmp_path):
    return Workspace(make_segmenter(), workdir=tmp_path / "work")


def _counting(seg, method):
    calls = []
    original = getattr(seg, method)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    setattr(seg, method, wrapper)
    return calls


def _draft_with_mask(ws, ref_path):
    draft = ws.new_draft(str(ref_path))
    h, w = draft.image.shape[:2]
    ws.click(draft, w / 2, h / 2, POSITIVE)
    return draft


def test_new_draft_names_and_describes(ws, ref_path):
    draft = ws.new_draft(str(ref_path))
    assert draft.name == ref_path.name and draft.image.shape == (422, 640, 3)
    assert "640x422" in draft.describe() and draft.mask is None
    assert ws.new_draft(None).image is None
    with pytest.raises(InputError):
        ws.new_draft(str(ref_path.with_name("missing.jpg")))


def test_clicks_make_sam2_masks_equal_to_reference_mask(ws, ref_path):
    draft = ws.new_draft(str(ref_path))
    img = load_image(ref_path)
    encodes = _counting(ws.seg.sam2, "encode")
    ws.click(draft, 320, 211, POSITIVE)
    assert draft.mask_source == "points" and draft.mask.shape == (422, 640) and draft.mask.any()
    assert np.array_equal(draft.mask, ws.seg.reference_mask(img, points=[(320, 211, 1)]))
    ws.click(draft, 100, 100, NEGATIVE)
    assert draft.points == [(320.0, 211.0, 1), (100.0, 100.0, 0)]
    assert np.array_equal(draft.mask, ws.seg.reference_mask(img, points=draft.points))
    # the app's clicks re-use the image embedding: one encode for both clicks (plus 2 by reference_mask)
    assert len(encodes) == 1 + 2
    ws.undo(draft)
    assert draft.points == [(320.0, 211.0, 1)] and draft.mask is not None
    ws.undo(draft)
    assert draft.points == [] and draft.mask is None


def test_negative_click_alone_gives_no_mask_yet(ws, ref_path):
    draft = ws.new_draft(str(ref_path))
    ws.click(draft, 10, 10, NEGATIVE)
    assert draft.mask is None and draft.points == [(10.0, 10.0, 0)]


def test_box_from_two_corner_clicks(ws, ref_path):
    draft = ws.new_draft(str(ref_path))
    ws.click(draft, 50, 60, POSITIVE)
    ws.click(draft, 300, 250, BOX)  # first corner: points dropped, no mask until the second corner
    assert draft.corner == (300.0, 250.0) and draft.mask is None and draft.points == []
    assert "opposite corner" in draft.describe()
    ws.click(draft, 100, 80, BOX)
    assert draft.box == (100.0, 80.0, 301.0, 251.0) and draft.corner is None
    assert draft.mask_source == "box"
    assert np.array_equal(draft.mask, ws.seg.reference_mask(draft.image, box=draft.box))
    ws.click(draft, 5, 5, BOX)
    with pytest.raises(InputError, match="too small"):
        ws.click(draft, 6, 6, BOX)
    ws.click(draft, 200, 200, POSITIVE)  # a point replaces the box
    assert draft.box is None and draft.points == [(200.0, 200.0, 1)]
    view = draft_view(draft)
    assert view.shape == draft.image.shape and not np.array_equal(view, draft.image)


def test_clicks_outside_are_clamped_and_need_an_image(ws, ref_path):
    with pytest.raises(InputError, match="upload a reference image"):
        ws.click(Draft(), 1, 1, POSITIVE)
    draft = ws.new_draft(str(ref_path))
    ws.click(draft, 10_000, -5, POSITIVE)
    assert draft.points == [(639.0, 0.0, 1)]
    with pytest.raises(InputError, match="click mode"):
        ws.click(draft, 1, 1, "lasso")


def test_uploaded_mask(ws, ref_path, tmp_path):
    draft = ws.new_draft(str(ref_path))
    with pytest.raises(InputError):
        ws.set_mask(Draft(), np.ones((4, 4), bool))
    mask = np.zeros((422, 640), bool)
    mask[100:200, 300:400] = True
    path = tmp_path / "mask.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    ws.set_mask(draft, str(path))
    assert draft.mask_source == "upload" and np.array_equal(draft.mask, mask)
    with pytest.raises(InputError):
        ws.set_mask(draft, np.ones((10, 10), bool))  # wrong size: refused, not resized
    with pytest.raises(InputError, match="empty"):
        ws.set_mask(draft, np.zeros((422, 640), bool))
    assert np.array_equal(draft.mask, mask)  # a refused upload keeps the previous mask
    ws.click(draft, 320, 211, POSITIVE)  # a click replaces the uploaded mask
    assert draft.mask_source == "points"


def test_add_reference_thumbnails_and_summary(ws, ref_path):
    assert "empty" in ws.summary() and ws.gallery() == []
    draft = ws.new_draft(str(ref_path))
    with pytest.raises(InputError, match="no mask"):
        ws.add_reference(draft, "person")
    ws.click(draft, 320, 211, POSITIVE)
    with pytest.raises(InputError, match="name the category"):
        ws.add_reference(draft, "  ")
    assert len(ws.memory) == 0
    row = ws.add_reference(draft, " person ")
    assert row == 0 and ws.categories == ["person"]
    ref = ws.memory.references[0]
    assert ref["image"] == ref_path.name and ref["prompt"] == "points"
    assert ref["prompt_value"] == [[320.0, 211.0, 1]] and "sam2_iou" in ref
    assert draft.image is not None and draft.mask is None and draft.points == []  # ready for the next one
    ws.click(draft, 100, 100, POSITIVE)
    ws.add_reference(draft, "chair", negative=False)
    ws.click(draft, 500, 300, POSITIVE)
    ws.add_reference(draft, "person", negative=True)
    gallery = ws.gallery()
    assert [c for _, c in gallery] == ["person #1", "person #2 (negative)", "chair #1"]
    assert all(t.ndim == 3 and max(t.shape[:2]) <= 128 for t, _ in gallery)
    assert "3 reference(s) in 2 categories" in ws.summary() and "+1 negative" in ws.summary()
    assert ws.gallery_index(1) == 2 and ws.gallery_index(2) == 1
    with pytest.raises(InputError):
        ws.gallery_index(3)


def test_remove_reference_and_category_keep_thumbnails_aligned(ws, ref_path):
    draft = ws.new_draft(str(ref_path))
    for x, cat in [(320, "a"), (100, "b"), (500, "a")]:
        ws.click(draft, x, 211, POSITIVE)
        ws.add_reference(draft, cat)
    thumbs = {c: t for t, c in ws.gallery()}
    assert ws.remove_reference(ws.gallery_index(0)) == "a"  # "a #1"
    assert [c for _, c in ws.gallery()] == ["a #1", "b #1"]
    assert np.array_equal(ws.gallery()[0][0], thumbs["a #2"])
    assert len(ws.memory.vectors) == 2 and len(ws.memory.weights) == 2
    ws.remove_reference(ws.gallery_index(1))  # the last "b": the category goes too
    assert ws.categories == ["a"]
    assert ws.remove_category("a") == 1 and len(ws.memory) == 0 and ws.gallery() == []
    with pytest.raises(InputError):
        ws.remove_category("a")
    with pytest.raises(InputError):
        ws.remove_reference(0)


def test_save_and_load_memory(ws, ref_path, make_segmenter, tmp_path):
    with pytest.raises(InputError, match="empty"):
        ws.save_memory()
    draft = _draft_with_mask(ws, ref_path)
    ws.add_reference(draft, "person")
    path = ws.save_memory()
    assert path.parent == ws.workdir and path.suffix == ".safetensors"
    other = Workspace(make_segmenter(), workdir=tmp_path / "other")
    assert other.load_memory(path) == 1
    assert other.categories == ["person"] and [c for _, c in other.gallery()] == ["person #1"]
    assert other.gallery()[0][0].shape == (128, 128, 3)  # a placeholder tile: no picture in the file
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a memory")
    with pytest.raises(InputError):
        other.load_memory(bad)
    assert other.categories == ["person"]  # a refused file changes nothing


def test_autosave_keeps_the_memory_across_a_restart(make_segmenter, ref_path, tmp_path):
    work = tmp_path / "work"
    ws = Workspace(make_segmenter(), workdir=work, autosave=True)
    assert ws.restore() == 0 and not ws.autosave_path.exists()  # nothing saved yet
    ws.add_reference(_draft_with_mask(ws, ref_path), "person")
    ws.add_reference(_draft_with_mask(ws, ref_path), "dog")
    ws.remove_category("dog")
    assert ws.autosave_path == work / "autosave.safetensors"
    restarted = Workspace(make_segmenter(), workdir=work, autosave=True)  # a new server on the same folder
    assert restarted.restore() == 1
    assert restarted.categories == ["person"]
    assert torch.equal(restarted.memory.vectors, ws.memory.vectors)
    assert restarted.memory.references == ws.memory.references
    restarted.remove_reference(0)  # an emptied memory is not restored
    assert not restarted.autosave_path.exists()
    assert Workspace(make_segmenter(), workdir=work, autosave=True).restore() == 0


def test_a_fresh_start_sets_the_autosave_aside(make_segmenter, ref_path, tmp_path):
    ws = Workspace(make_segmenter(), workdir=tmp_path, autosave=True)
    ws.add_reference(_draft_with_mask(ws, ref_path), "person")
    fresh = Workspace(make_segmenter(), workdir=tmp_path, autosave=True)
    assert fresh.set_aside_autosave() and not fresh.autosave_path.exists()
    assert fresh.restore() == 0 and len(fresh.memory) == 0
    assert fresh.previous_path.exists() and fresh.load_memory(fresh.previous_path) == 1  # kept, not lost


def test_without_autosave_nothing_is_written(ws, ref_path):
    ws.add_reference(_draft_with_mask(ws, ref_path), "person")
    assert ws.autosave_path is None and not (ws.workdir / "autosave.safetensors").exists()


def test_user_mistakes_reach_the_page_without_a_traceback_in_the_log(caplog):
    gr = pytest.importorskip("gradio", reason="the 'app' extra (Gradio) is not installed")
    from no_time_to_train.app.server import _fail

    with caplog.at_level("ERROR"):
        with pytest.raises(gr.Error) as err:
            _fail(InputError("name the category before adding the reference"))
    assert err.value.message == "name the category before adding the reference"
    assert err.value.print_exception is False and not caplog.records
    with caplog.at_level("ERROR"):  # a bug is logged with its traceback, once
        with pytest.raises(gr.Error) as err:
            _fail(ZeroDivisionError("boom"))
    assert err.value.print_exception is False and err.value.message == "ZeroDivisionError: boom"
    assert [r.exc_info[0] for r in caplog.records] == [ZeroDivisionError]


def test_segment_filter_and_exports(ws, ref_path, targets, tmp_path):
    with pytest.raises(InputError, match="no references"):
        ws.segment([str(t) for t in targets])
    with pytest.raises(InputError, match="upload"):
        ws.segment([])
    ws.add_reference(_draft_with_mask(ws, ref_path), "thing")
    with pytest.raises(InputError, match="nothing to export"):
        ws.export_results()
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"no image here")
    predicts = _counting(ws.seg, "predict")
    seen = []
    errors = ws.segment([str(targets[0]), str(bad), str(targets[1]), str(targets[0])],
                        progress=lambda f, d: seen.append(f))
    assert len(errors) == 1 and "broken.jpg" in errors[0]
    assert [r.name for r in ws.results] == ["000000000139.jpg", "000000000802.jpg", "000000000139 (2).jpg"]
    assert seen[-1] == 1.0 and len(predicts) == 3 and not ws.stale
    shown, total = ws.counts(0.0)
    assert total == sum(len(r.detections) for r in ws.results) and shown == total and total > 0

    # the threshold filters the cached detections: no new prediction
    top = max(float(r.detections.scores.max()) for r in ws.results if len(r.detections))
    assert len(ws.table(0.0)) == total and ws.table(top) == [] and ws.counts(top)[0] == 0
    row = ws.table(0.0)[0]
    assert len(row) == len(TABLE_COLUMNS) and row[1] == "thing"
    pics = ws.overlays(0.0)
    assert len(pics) == 3 and pics[0][0].size == (640, 426) and pics[0][1] == f"000000000139.jpg: {len(ws.results[0].detections)}/{len(ws.results[0].detections)} shown"
    assert len(predicts) == 3

    results = json.loads(ws.export_results(0.0).read_text())
    assert len(results) == total
    assert {r["image_id"] for r in results} <= {1, 2, 3}
    assert set(results[0]) >= {"image_id", "category_id", "bbox", "score", "segmentation", "file_name",
                               "category_name"}
    assert json.loads(ws.export_results(top).read_text()) == []

    with zipfile.ZipFile(ws.export_masks(0.0)) as zf:
        names = sorted(zf.namelist())
        assert names == ["masks/000000000139.png", "masks/000000000139_2.png", "masks/000000000802.png",
                         "results.json"]
        with zf.open("masks/000000000802.png") as f:
            inst = np.asarray(Image.open(f))
        assert inst.shape == (640, 424) and inst.max() == len(ws.results[1].detections)

    ws.add_reference(_draft_with_mask(ws, ref_path), "thing")
    assert ws.stale  # the memory changed since the results were made


def test_segment_refuses_a_category_without_positive_references(ws, ref_path, targets):
    draft = _draft_with_mask(ws, ref_path)
    ws.add_reference(draft, "thing", negative=True)
    with pytest.raises(InputError, match="without references"):
        ws.segment([str(targets[0])])


# -- the serve verb ------------------------------------------------------------------------------------
def test_serve_verb_in_cli_parser():
    from no_time_to_train.cli import build_parser

    args = build_parser().parse_args(["serve", "--port", "7999", "--memory", "m.safetensors", "--device", "cpu",
                                      "--points-per-side", "8"])
    assert args.command == "serve" and args.port == 7999 and args.host == "127.0.0.1"
    assert str(args.workdir) == "nttt-app" and args.fresh is False
    assert str(args.memory) == "m.safetensors" and args.cfg_points_per_side == "8" and args.config is None
    assert args.func.__name__ == "cmd_serve"
    args = build_parser().parse_args(["serve", "--workdir", "w", "--fresh"])
    assert str(args.workdir) == "w" and args.fresh is True


def test_serve_without_gradio_says_how_to_install(monkeypatch, capsys):
    from no_time_to_train import cli

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    monkeypatch.delitem(sys.modules, "no_time_to_train.app.server", raising=False)
    assert cli.main(["serve", "--port", "7998"]) == 2
    assert 'pip install "no-time-to-train[app]"' in capsys.readouterr().err


def test_serve_offline_names_both_models_before_loading(offline_empty_cache, monkeypatch, capsys, tmp_path):
    pytest.importorskip("gradio", reason="the 'app' extra (Gradio) is not installed")
    from no_time_to_train import cli, predictor

    def never(*args, **kwargs):
        raise AssertionError("no model may be loaded")

    monkeypatch.setattr(predictor, "ReferenceSegmenter", never)
    assert cli.main(["serve", "--device", "cpu", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "facebook/sam2-hiera-large" in err and "facebook/dinov2-large" in err and "--encoder PATH" in err


def test_a_second_server_on_one_workdir_is_refused(tmp_path, capsys):
    pytest.importorskip("gradio", reason="the 'app' extra (Gradio) is not installed")
    import os
    import socket

    from no_time_to_train import cli
    from no_time_to_train.runlock import RunLock

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with RunLock(tmp_path):  # the first server (refused before any model loads)
        assert cli.main(["serve", "--port", str(port), "--workdir", str(tmp_path)]) == 2
    assert f"app folder {tmp_path} (--workdir) is in use by process {os.getpid()} " in capsys.readouterr().err


def test_build_app_gives_blocks(make_segmenter, tmp_path):
    gr = pytest.importorskip("gradio", reason="the 'app' extra (Gradio) is not installed")
    from no_time_to_train.app.server import build_app

    demo = build_app(make_segmenter(), workdir=tmp_path)
    assert isinstance(demo, gr.Blocks) and demo.workspace.workdir == tmp_path


def test_nttt_serve_starts_with_saved_models_and_memory(make_segmenter, models, ref_path, tmp_path):
    """``nttt serve`` in a subprocess: loads the models and the memory autosaved in ``--workdir`` by the last
    server, then serves the page; a missing ``--memory`` is one clear error."""
    pytest.importorskip("gradio", reason="the 'app' extra (Gradio) is not installed")
    import os
    import socket
    import subprocess
    import time
    import urllib.request
    from pathlib import Path

    ws = Workspace(make_segmenter(), workdir=tmp_path / "work")
    ws.add_reference(_draft_with_mask(ws, ref_path), "thing")
    memory = ws.save_memory(tmp_path / "app" / "autosave.safetensors")  # as the last server left it
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "no_time_to_train", "serve", "--port", str(port), *models,
           "--workdir", str(memory.parent), "--device", "cpu", "--points-per-side", "4"]
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline, body = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read().decode("utf-8", "replace")
            except OSError:
                time.sleep(0.5)
        assert body is not None, (tmp_path / "serve.log").read_text()
        assert "no-time-to-train" in body
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()

    assert f"restored 1 reference(s) from {memory} (--fresh starts empty)" in (tmp_path / "serve.log").read_text()
    bad = subprocess.run([*cmd, "--memory", str(tmp_path / "missing.safetensors")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nttt serve: error: memory file" in bad.stderr
