"""Video: loading SAM2's video modules, reading frames, bounded propagation, the tracking pipeline, its outputs,
the nttt track command (resume, bad files) and the video / per-frame evaluation. Tiny random models on a synthetic
clip built from coco-mini images (a window panning across one image, then a cut to another)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from no_time_to_train import CheckpointError, InputError, MethodConfig, ReferenceSegmenter
from no_time_to_train.types import decode_rle, encode_rle
from no_time_to_train.video.config import TrackConfig
from no_time_to_train.video.outputs import Mp4Writer, VideoResultWriter, read_video_results, track_masks
from no_time_to_train.video.propagate import Propagator
from no_time_to_train.video.source import open_video
from no_time_to_train.video.track import VideoTracker

H, W = 96, 128  # frame size of the synthetic clip


@pytest.fixture(scope="module")
def video_sam2():
    from transformers import Sam2VideoModel

    from no_time_to_train.models.configs import sam2_video_test_config

    torch.manual_seed(0)
    model = Sam2VideoModel(sam2_video_test_config()).eval()
    with torch.no_grad():  # Meta's files hold one positional encoding, transformers two copies of it
        model.shared_image_embedding.positional_embedding.copy_(model.prompt_encoder.shared_embedding
                                                                .positional_embedding)
    return model


@pytest.fixture(scope="module")
def images(coco_mini):
    paths = sorted((coco_mini / "val2017").glob("*.jpg"))[:2]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def clip(images, n=8, cut=6):
    """``n`` frames: a window panning right/down across image 0, then (from frame ``cut``) across image 1."""
    out = []
    for i in range(n):
        img = images[0] if i < cut else images[1]
        y, x = 3 * i, 5 * i
        out.append(np.ascontiguousarray(img[y : y + H, x : x + W]))
    return out


@pytest.fixture
def seg(video_sam2, tiny_encoder, images):
    s = ReferenceSegmenter(sam2=video_sam2, encoder=tiny_encoder,
                           config=MethodConfig(points_per_side=4, sam_image_size=256))
    m = np.zeros(images[0].shape[:2], bool)
    m[40:160, 60:220] = True
    s.add_reference(images[0], m, category="thing", category_id=5)
    s.add_reference(images[0], ~m, category="stuff", category_id=9)
    return s


# -- loading ---------------------------------------------------------------------------------------------
def _meta_file(model, path):
    from transformers import Sam2Model

    from no_time_to_train.models.checkpoints import sam2_hf_to_meta
    from no_time_to_train.models.sam2_video_keys import sam2_video_hf_to_meta

    sd = model.state_dict()
    with torch.device("meta"):
        image_keys = set(Sam2Model(_image_config()).state_dict())
    meta = {**sam2_hf_to_meta({k: v for k, v in sd.items() if k in image_keys}), **sam2_video_hf_to_meta(sd)}
    torch.save({"model": meta}, path)
    return meta


def _image_config():
    from no_time_to_train.models.configs import sam2_config

    return sam2_config("test-tiny", fpn_hidden_size=64, decoder_mlp_dim=64, decoder_heads=2, image_size=256)


def test_video_model_loads_from_meta_file_sharing_the_image_weights(video_sam2, tmp_path):
    from no_time_to_train.models.checkpoints import load_sam2, load_sam2_video

    src = video_sam2.state_dict()
    meta = _meta_file(video_sam2, tmp_path / "sam2.pt")
    assert "memory_encoder.mask_downsampler.encoder.12.weight" in meta and "obj_ptr_proj.layers.2.bias" in meta
    image = load_sam2(tmp_path / "sam2.pt")
    video = load_sam2_video(tmp_path / "sam2.pt", image_model=image)
    got = video.state_dict()
    assert set(got) == set(src)
    assert all(torch.equal(got[k], src[k]) for k in src)
    assert video.vision_encoder.backbone.patch_embed.projection.weight is \
        image.vision_encoder.backbone.patch_embed.projection.weight  # one copy of the image weights
    assert video.config.enable_occlusion_spatial_embedding and video.config.num_maskmem == 7


def test_video_model_errors(tmp_path, tiny_sam2, video_sam2):
    from no_time_to_train.models.checkpoints import load_sam2_video, sam2_hf_to_meta

    sd = dict(tiny_sam2.state_dict())
    sd["shared_image_embedding.positional_embedding"] = sd["prompt_encoder.shared_embedding.positional_embedding"]
    torch.save({"model": sam2_hf_to_meta(sd)}, tmp_path / "image_only.pt")
    with pytest.raises(CheckpointError, match="no video weights"):
        load_sam2_video(tmp_path / "image_only.pt")
    tiny_sam2.save_pretrained(tmp_path / "hf_image")
    with pytest.raises(CheckpointError, match="not SAM2's video model"):
        load_sam2_video(tmp_path / "hf_image")
    video_sam2.save_pretrained(tmp_path / "hf_video")
    assert load_sam2_video(tmp_path / "hf_video").config.model_type == "sam2_video"
    seg = ReferenceSegmenter(sam2=tiny_sam2)
    seg.memory.add(torch.ones(32), 1.0, "x")
    with pytest.raises(CheckpointError, match="video model"):
        next(seg.segment_video([np.zeros((8, 8, 3), np.uint8)]))


# -- frames ----------------------------------------------------------------------------------------------
def test_frames_from_folder_glob_arrays_and_video_file(tmp_path, images):
    frames = clip(images, 5)
    folder = tmp_path / "cat"
    folder.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"f{i:03d}.png")
    src = open_video(folder)
    got = list(src)
    assert src.name == "cat" and len(src) == 5
    assert [f.name for f in got] == [f"f{i:03d}" for i in range(5)] and [f.index for f in got] == list(range(5))
    assert all(np.array_equal(a.image, b) for a, b in zip(got, frames))
    assert [f.name for f in open_video(str(folder / "f00[24].png"))] == ["f002", "f004"]
    gen = open_video(f for f in frames)  # a generator: read as iterated, length unknown
    with pytest.raises(TypeError):
        len(gen)
    assert [f.name for f in gen] == [f"{i:06d}" for i in range(5)]
    writer = Mp4Writer(tmp_path / "clip.mp4", fps=10)
    for f in frames:
        writer.write(f)
    writer.close()
    video = open_video(tmp_path / "clip.mp4")
    decoded = list(video)
    assert len(decoded) == 5 and video.fps == pytest.approx(10)
    assert decoded[0].image.shape == (H, W, 3)
    assert np.abs(decoded[2].image.astype(int) - frames[2]).mean() < 25  # lossy, but the same picture


def test_bad_video_inputs(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 50)
    with pytest.raises(InputError, match="broken.mp4"):
        open_video(tmp_path / "broken.mp4")
    with pytest.raises(InputError, match="does not exist"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        open_video(tmp_path / "empty")
    with pytest.raises(InputError, match="frame 1"):
        list(open_video([np.zeros((4, 4, 3), np.uint8), "nope"]))


# -- propagation -----------------------------------------------------------------------------------------
def test_propagator_memory_is_bounded_and_pruning_changes_nothing(video_sam2, monkeypatch):
    # a 3-frame memory bank and 3 object pointers (the official 7 and 16 take longer clips to show the bound)
    monkeypatch.setattr(video_sam2, "num_maskmem", 3)
    monkeypatch.setattr(video_sam2.config, "num_maskmem", 3)
    monkeypatch.setattr(video_sam2.config, "max_object_pointers_in_encoder", 3)
    torch.manual_seed(3)
    frames = [torch.randn(3, 256, 256) for _ in range(8)]
    mask = torch.zeros(256, 256, dtype=torch.bool)
    mask[60:140, 80:200] = True
    bounded, unbounded = Propagator(video_sam2), Propagator(video_sam2)
    unbounded.window = 10**6
    for p in (bounded, unbounded):
        p.add(0, 7, mask)
    sizes = []
    for t, x in enumerate(frames):
        ids, a, sa = bounded.step(t, x)
        _, b, sb = unbounded.step(t, x)
        assert ids == [7] and torch.equal(a, b) and torch.equal(sa, sb)
        sizes.append(bounded.memory_frames())
        assert bounded.session.processed_frames == {}
    assert bounded.window == 3
    assert max(sizes) == sizes[-1] == 1 + 3  # the keyframe + the 3 frames SAM2 can attend to
    assert unbounded.memory_frames() == 8


def test_propagator_refresh_remove_and_cond_frame_bound(video_sam2):
    p = Propagator(video_sam2, max_cond_frames=2)
    m = torch.zeros(256, 256, dtype=torch.bool)
    m[10:50, 10:50] = True
    x = torch.randn(3, 256, 256)
    p.add(0, 1, m)
    p.add(0, 2, m)
    p.step(0, x)
    for t in (1, 2, 3):
        p.add(t, 1, m)  # refreshed on every frame: a conditioning frame each time
        p.step(t, x)
    cond = p.session.output_dict_per_obj[0]["cond_frame_outputs"]
    assert sorted(cond) == [2, 3]  # only the 2 most recent keyframe masks are kept
    p.remove([1])
    assert p.track_ids == [2]
    ids, logits, _ = p.step(4, x)
    assert ids == [2] and logits.shape == (1, 64, 64)


# -- the pipeline ----------------------------------------------------------------------------------------
def test_segment_video_streams_frames_in_order(seg, images):
    frames = clip(images, 4)
    out = list(seg.segment_video(iter(frames), keyframe_interval=2, min_score=0.0))
    assert len(out) == 4
    for dets in out:
        assert dets.image_size == (H, W) and dets.track_ids is not None
        assert len(set(dets.track_ids.tolist())) == len(dets)
        assert (np.diff(dets.scores) <= 0).all()
        assert all(dets.masks[i].any() for i in range(len(dets)))
    assert len(out[0]) > 0  # the random models detect something on frame 0 with min_score 0


def test_tracking_with_hand_made_detections(seg, images, monkeypatch):
    frames = clip(images, 4)
    a = np.zeros((H, W), bool)
    a[10:60, 10:70] = True
    b = np.zeros((H, W), bool)
    b[50:90, 80:120] = True
    # keyframes 0 and 2: A on 0 starts track 1; A (label 1) and B (label 1) on 2 refresh it or start new tracks
    plan = {0: [(a, 0.8, 0)], 2: [(a, 0.6, 1), (b, 0.9, 1)]}
    tracker = VideoTracker(seg, TrackConfig(keyframe_interval=2, backward=False, end_after=50))
    calls = []

    def detect(image):
        calls.append(tracker.frames)
        items = plan.get(tracker.frames, [])
        return _dets(seg, [m for m, _, _ in items], [s for _, s, _ in items], [lab for _, _, lab in items])

    monkeypatch.setattr(tracker, "detect", detect)
    results = list(tracker.run(frames))
    assert calls == [0, 2] and [r.index for r in results] == [0, 1, 2, 3]
    first = results[0].detections
    assert first.track_ids.tolist() == [1] and np.array_equal(first.masks[0], a)  # a keyframe shows the detection
    kf = dict(zip(results[2].detections.track_ids.tolist(), results[2].detections.masks))
    holders = {name: [t for t, m in kf.items() if np.array_equal(m, want)] for name, want in (("a", a), ("b", b))}
    assert len(holders["a"]) == 1 and len(holders["b"]) == 1 and set(kf) <= {1, 2, 3}
    for t in tracker.tracks():  # each track's category and score follow the vote over its detections
        dets = tracker.book.get(t["id"]).detections
        sums = {}
        for _, lab, sc in dets:
            sums[lab] = sums.get(lab, 0) + sc
        best = min(sums, key=lambda k: (-sums[k], k))
        assert t["label"] == best and t["category"] == seg.memory.category_names[best]
        assert t["score"] == pytest.approx(np.mean([sc for _, lab, sc in dets if lab == best]), abs=1e-6)
    if holders["a"] == [1]:  # A refreshed track 1: 0.8 under label 0 outvotes 0.6 under label 1
        assert [t["label"] for t in tracker.tracks() if t["id"] == 1] == [0]


def test_backward_pass_covers_frames_before_a_late_keyframe(seg, images, monkeypatch):
    frames = clip(images, 4)
    a = np.zeros((H, W), bool)
    a[20:70, 30:90] = True

    def run(backward):
        tracker = VideoTracker(seg, TrackConfig(keyframe_interval=3, backward=backward, end_after=50))
        monkeypatch.setattr(tracker, "detect", lambda image: _dets(seg, [a] if tracker.frames == 3 else [], 0.7))
        return tracker, list(tracker.run(frames))

    tracker, no_back = run(False)
    assert all(len(r.detections) == 0 for r in no_back[:3]) and no_back[3].detections.track_ids.tolist() == [1]
    tracker, back = run(True)
    assert [r.index for r in back] == list(range(4))
    assert back[3].detections.track_ids.tolist() == [1] and np.array_equal(back[3].detections.masks[0], a)
    covered = [r.index for r in back[:3] if 1 in r.detections.track_ids.tolist()]
    assert tracker.tracks()[0]["first"] == (min(covered) if covered else 3)
    assert covered == list(range(min(covered), 3)) if covered else True  # contiguous back from the keyframe  # the track's first frame is where the backward pass reached


def _dets(seg, masks, scores, labels=None):
    from no_time_to_train import Detections

    m = np.stack(masks) if masks else np.zeros((0, H, W), bool)
    scores = np.broadcast_to(np.asarray(scores, np.float32), (len(masks),)).copy()
    labels = np.zeros(len(masks), np.int64) if labels is None else np.asarray(labels, np.int64)
    return Detections(m, np.zeros((len(masks), 4), np.float32), scores, labels, seg.memory.category_names)


def test_tracker_state_stays_bounded_over_a_long_clip(seg, images, monkeypatch):
    """Nothing the tracker holds grows with the video's length: SAM2's memory, the lag window, the frames."""
    a = np.zeros((32, 32), bool)
    a[4:20, 4:20] = True
    tracker = VideoTracker(seg, TrackConfig(keyframe_interval=0, end_after=10**6, backward_frames=5))
    monkeypatch.setattr(tracker, "detect", lambda image: _dets(seg, [a], 0.9) if tracker.frames == 0 else
                        _dets(seg, [], 0.9))
    seen = []
    forwards = []
    real_init = Propagator.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        forwards.append(self)

    monkeypatch.setattr(Propagator, "__init__", spy)
    monkeypatch.setattr(seg._sam2_source.config, "max_object_pointers_in_encoder", 3)  # window 7: shorter clip
    small = [np.ascontiguousarray(images[0][i : i + 32, i : i + 32]) for i in range(24)]
    for r in tracker.run(iter(small)):
        seen.append((r.index, tracker.frames - r.index, forwards[0].memory_frames()))
    assert [i for i, _, _ in seen] == list(range(24))
    assert max(lag for _, lag, _ in seen[:-6]) == 6  # a result leaves once 5 later frames are in (lag 5)
    assert forwards[0].window == 7 and max(m for _, _, m in seen) <= 1 + 7


# -- outputs, the command, resume, evaluation ------------------------------------------------------------
def test_result_writer_round_trip(tmp_path, seg, images):
    frames = clip(images, 4)
    tracker = VideoTracker(seg, TrackConfig(keyframe_interval=2, min_score=0.0, backward=False))
    writer = VideoResultWriter(tmp_path, "clip", 3, seg.memory.category_names, seg.memory.category_ids,
                               save_masks=True, visualize=True, fps=5)
    kept = []
    for r in tracker.run(frames):
        writer.add(r)
        kept.append(r)
    path = writer.finish(tracker.tracks())
    doc = read_video_results(path)
    assert doc["video"]["length"] == 4 and [f["name"] for f in doc["video"]["frames"]] == [f"{i:06d}" for i in range(4)]
    assert not (tmp_path / "clip.frames.jsonl.partial").exists()
    for t, r in enumerate(kept):
        masks = track_masks(doc, t)
        assert sorted(masks) == sorted(r.detections.track_ids.tolist())
        for tid, m in zip(r.detections.track_ids, r.detections.masks):
            assert np.array_equal(masks[int(tid)], m)
        png = np.asarray(Image.open(tmp_path / "clip" / f"{t:06d}.png"))
        assert png.dtype == np.uint16 and set(np.unique(png)) <= {0, *masks}
        for tid, m in masks.items():  # the highest-scoring track is drawn on top
            if r.detections.track_ids[0] == tid:
                assert (png[m] == tid).all()
    for entry in doc["tracks"]:
        assert entry["category_id"] in (5, 9) and entry["video_id"] == 3 and len(entry["segmentations"]) == 4
    assert len(list(open_video(tmp_path / "clip.mp4"))) == 4


@pytest.fixture
def video_inputs(tmp_path, images):
    frames = clip(images, 4)
    folder = tmp_path / "in" / "walk"
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:06d}.png")
    w = Mp4Writer(tmp_path / "in" / "pan.mp4", fps=4)
    for f in frames[::-1]:
        w.write(f)
    w.close()
    return tmp_path / "in"


@pytest.fixture
def cli_models(tmp_path, video_sam2, tiny_encoder, seg):
    video_sam2.save_pretrained(tmp_path / "sam2")
    tiny_encoder.save_pretrained(tmp_path / "dino")
    seg.save_memory(tmp_path / "memory.safetensors")
    return ["--sam2", str(tmp_path / "sam2"), "--encoder", str(tmp_path / "dino"), "--memory",
            str(tmp_path / "memory.safetensors"), "--sam-image-size", "256", "--points-per-side", "4",
            "--device", "cpu", "--quiet", "--min-score", "0", "--keyframe-interval", "2"]


def test_cli_track_resume_and_evaluate(tmp_path, video_inputs, cli_models, monkeypatch):
    from no_time_to_train.cli import main

    out = tmp_path / "out"
    args = ["track", str(video_inputs / "walk"), str(video_inputs / "pan.mp4"), "-o", str(out), *cli_models,
            "--save-masks"]
    assert main(args) == 0
    videos = json.loads((out / "videos.json").read_text())
    assert [v["name"] for v in videos] == ["walk", "pan"] and [v["length"] for v in videos] == [4, 4]
    results = json.loads((out / "results.json").read_text())
    assert {r["video_id"] for r in results} <= {1, 2}
    assert all(len(r["segmentations"]) == 4 for r in results)
    assert len(list((out / "videos" / "walk").glob("*.png"))) == 4
    # resume: a finished video is not redone; a video whose record is lost (killed in flight) is
    import no_time_to_train.video.job as job

    done = []
    real = job.track_one
    monkeypatch.setattr(job, "track_one", lambda seg, source, *a, **k: done.append(source.name) or real(seg, source, *a, **k))
    assert main(args) == 0 and done == []
    part = next((out / "parts").glob("part-*.jsonl"))
    lines = part.read_text().splitlines()
    part.write_text("\n".join(line for line in lines if "pan.mp4" not in line) + "\n")
    assert main(args) == 0 and done == ["pan"]
    assert json.loads((out / "results.json").read_text()) == results  # the same files as the one-shot run
    # per-frame COCO ground truth: the frames of "walk" as images, one box-shaped instance each
    gt_mask = np.zeros((H, W), bool)
    gt_mask[10:60, 10:70] = True
    gt = {"images": [{"id": i + 1, "file_name": f"walk/{i:06d}.png", "height": H, "width": W} for i in range(4)],
          "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 5, "segmentation": encode_rle(gt_mask),
                           "area": float(gt_mask.sum()), "bbox": [10, 10, 60, 50], "iscrowd": 0} for i in range(4)],
          "categories": [{"id": 5, "name": "thing"}, {"id": 9, "name": "stuff"}]}
    (tmp_path / "frames_gt.json").write_text(json.dumps(gt))
    assert main(["evaluate", "--tracks", str(out), "--annotations", str(tmp_path / "frames_gt.json"),
                 "-o", str(tmp_path / "ev1")]) == 0
    m1 = json.loads((tmp_path / "ev1" / "metrics.json").read_text())
    assert m1["num_images"] == 4 and 0.0 <= (m1["segm"]["AP"] or 0.0) <= 1.0
    # YouTube-VIS ground truth equal to the tracks themselves: video AP is 1
    ytvis = {"videos": [{"id": 7, "height": H, "width": W, "file_names": [f"pan/{i:06d}.jpg" for i in range(4)]}],
             "categories": [{"id": 5, "name": "thing"}, {"id": 9, "name": "stuff"}],
             "annotations": [{"id": k + 1, "video_id": 7, "category_id": r["category_id"], "iscrowd": 0,
                              "segmentations": r["segmentations"]} for k, r in enumerate(results) if r["video_id"] == 2]}
    (tmp_path / "ytvis.json").write_text(json.dumps(ytvis))
    assert main(["evaluate", "--tracks", str(out), "--annotations", str(tmp_path / "ytvis.json"),
                 "-o", str(tmp_path / "ev2")]) == 0
    m2 = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    if ytvis["annotations"]:
        assert m2["segm"]["AP"] == pytest.approx(1.0)


def test_cli_track_bad_video_stops_or_is_skipped(tmp_path, video_inputs, cli_models, capsys):
    from no_time_to_train.cli import main

    (video_inputs / "broken.mp4").write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "out"
    args = ["track", str(video_inputs / "broken.mp4"), str(video_inputs / "walk"), "-o", str(out), *cli_models]
    assert main(args) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert main([*args, "--on-error", "skip"]) == 0
    skipped = json.loads((out / "skipped.json").read_text())
    assert [s["file_name"] for s in skipped] == [str(video_inputs / "broken.mp4")]
    assert [v["name"] for v in json.loads((out / "videos.json").read_text())] == ["walk"]


def test_video_ap_exact_on_hand_made_tracks():
    from no_time_to_train.video.ytvis_eval import evaluate_video_ap

    def m(x0, x1):
        a = np.zeros((10, 10), bool)
        a[0:5, x0:x1] = True
        return encode_rle(a)

    gt = {"videos": [{"id": 1, "height": 10, "width": 10, "file_names": ["v/a.jpg", "v/b.jpg", "v/c.jpg"]}],
          "categories": [{"id": 3, "name": "dog"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 3, "iscrowd": 0,
                           "segmentations": [m(0, 4), None, m(0, 4)]}]}
    same = [{"video_id": 1, "category_id": 3, "score": 0.9, "segmentations": [m(0, 4), None, m(0, 4)]}]
    assert evaluate_video_ap(gt, same)["segm"]["AP"] == pytest.approx(1.0)
    # spatio-temporal IoU = (20 + 0 + 20) / (20 + 20 + 20) = 2/3: a match at IoU 0.5..0.65 (4 of 10 thresholds)
    extra = [{"video_id": 1, "category_id": 3, "score": 0.9, "segmentations": [m(0, 4), m(0, 4), m(0, 4)]}]
    res = evaluate_video_ap(gt, extra)["segm"]
    assert res["AP50"] == pytest.approx(1.0) and res["AP75"] == pytest.approx(0.0)
    assert res["AP"] == pytest.approx(0.4)
    assert evaluate_video_ap(gt, [{**same[0], "category_id": 4}])["segm"]["AP"] == pytest.approx(0.0)


def test_app_video_tab_logic(seg, tmp_path, images):
    """The app's video tab: track an uploaded clip with the current memory, get the overlay MP4 and the JSON."""
    from no_time_to_train.app.session import Workspace

    frames = clip(images, 4)
    w = Mp4Writer(tmp_path / "upload.mp4", fps=8)
    for f in frames:
        w.write(f)
    w.close()
    ws = Workspace(seg, workdir=tmp_path / "work")
    steps = []
    run = ws.track_video(tmp_path / "upload.mp4", progress=lambda f, text: steps.append(f),
                         config=TrackConfig(keyframe_interval=2, min_score=0.0), max_frames=3)
    assert run.frames == 3 and steps[-1] == 1.0
    assert "of 4 frames" in run.summary  # the clip was cut to max_frames, and the summary says so
    assert len(list(open_video(run.mp4))) == 3
    doc = read_video_results(run.results)
    assert doc["video"]["length"] == 3 and len(doc["tracks"]) == len([t for t in run.tracks if t["first"] is not None])
    empty = Workspace(ReferenceSegmenter(sam2=seg._sam2_source, encoder=seg._encoder_source,
                                         config=seg.config), workdir=tmp_path / "w2")
    with pytest.raises(InputError, match="no references"):
        empty.track_video(tmp_path / "upload.mp4")


def test_video_model_under_an_exported_runtime_loads_its_own_weights(video_sam2, tmp_path, monkeypatch):
    """--runtime onnxruntime/openvino: the proposer is an export with no PyTorch model, so tracking loads the
    video model from the same source instead of sharing the proposer's tensors."""
    pytest.importorskip("onnxruntime", reason="the 'onnx' extra is not installed")
    from no_time_to_train.video.track import video_model_for

    monkeypatch.setenv("NTTT_CACHE_DIR", str(tmp_path / "cache"))
    _meta_file(video_sam2, tmp_path / "sam2.pt")
    seg = ReferenceSegmenter(sam2=str(tmp_path / "sam2.pt"), runtime="onnxruntime")
    assert seg.proposer.model is None and seg.proposer.name.startswith("SAM2")
    video = video_model_for(seg)
    src = video_sam2.state_dict()
    assert all(torch.equal(video.state_dict()[k], v) for k, v in src.items())
