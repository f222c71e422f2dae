"""The per-image loop: results written behind the model in input order, nothing computed is lost on failure;
unreadable images stop or are skipped; one run per output folder (lock, settings, overwrite, cleanup)."""

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from no_time_to_train.distributed import DistContext
from no_time_to_train.errors import InputError, OutputError, environment_message
from no_time_to_train.resultstore import ResultStore
from no_time_to_train.runlock import RunLock
from no_time_to_train.runner import WriteBehind, run_images

SRC = str(Path(__file__).resolve().parents[1] / "src")


class FakeSegmenter:
    """``predict`` returns the image's first pixel value; raises on the image whose pixel is ``fail_on``."""

    def __init__(self, fail_on=None):
        self.fail_on = fail_on
        self.seen = []

    def predict(self, image):
        v = int(image[0, 0, 0])
        self.seen.append(v)
        if v == self.fail_on:
            raise RuntimeError(f"model failed on image {v}")
        return v


def _items(n):
    return [(f"img{i}", np.full((4, 5, 3), i, np.uint8)) for i in range(n)]


def _lines(store):
    return [json.loads(line) for line in store.path.read_text().splitlines()]


def test_results_are_written_in_input_order(tmp_path):
    store = ResultStore(tmp_path)
    n = run_images(FakeSegmenter(), _items(7), store, DistContext(), lambda k, p, im, d: {"v": d, "h": im.shape[0]},
                   quiet=True)
    assert n == 7
    assert _lines(store) == [{"key": f"img{i}", "v": i, "h": 4} for i in range(7)]
    # a rerun finds everything done and predicts nothing
    seg = FakeSegmenter()
    assert run_images(seg, _items(7), ResultStore(tmp_path), DistContext(), lambda *a: {}, quiet=True) == 0
    assert seg.seen == []


def test_model_failure_keeps_every_finished_result(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(RuntimeError, match="model failed on image 3"):
        run_images(FakeSegmenter(fail_on=3), _items(6), store, DistContext(), lambda k, p, im, d: {"v": d}, quiet=True)
    assert [r["key"] for r in _lines(store)] == ["img0", "img1", "img2"]
    # the resumed run predicts only what is missing
    seg = FakeSegmenter()
    assert run_images(seg, _items(6), ResultStore(tmp_path), DistContext(), lambda k, p, im, d: {"v": d}, quiet=True) == 3
    assert seg.seen == [3, 4, 5]
    assert [r["v"] for r in _lines(store)] == list(range(6))


def test_write_failure_reaches_the_caller(tmp_path):
    def record(key, path, image, dets):
        if dets == 1:
            raise OSError("disk full")
        return {"v": dets}

    store = ResultStore(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        run_images(FakeSegmenter(), _items(8), store, DistContext(), record, quiet=True)
    keys = [r["key"] for r in _lines(store)]
    assert keys[0] == "img0" and "img1" not in keys
    assert len(keys) <= 3  # the error stops the loop within the writes already queued


def test_write_behind_bounds_pending_writes_and_keeps_order():
    gate = threading.Event()
    done = []

    def slow(i):
        gate.wait(5)
        done.append(i)

    submitted = []

    def producer(w):
        for i in range(5):
            w.submit(slow, i)
            submitted.append(i)

    with WriteBehind(max_pending=2) as w:
        t = threading.Thread(target=producer, args=(w,))
        t.start()
        t.join(0.3)
        assert submitted == [0, 1]  # the third submit waits for the first write
        gate.set()
        t.join(5)
    assert done == [0, 1, 2, 3, 4]


def test_write_behind_finishes_writes_when_the_loop_fails():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with WriteBehind(max_pending=3) as w:
            for i in range(3):
                w.submit(done.append, i)
            raise KeyboardInterrupt
    assert done == [0, 1, 2]


# -- unreadable images: stop (naming the image and the flag) or skip (recorded, retried by a rerun) -----------
def _items_with_bad(n, bad, tmp_path):
    """``_items(n)`` with item ``bad`` replaced by a file that is not an image."""
    junk = tmp_path / "broken.jpg"
    junk.write_bytes(b"not a jpeg")
    items = _items(n)
    items[bad] = (f"img{bad}", junk)
    return items, junk


def test_unreadable_image_stops_the_run_naming_it_and_the_flag(tmp_path):
    items, junk = _items_with_bad(4, 2, tmp_path)
    store = ResultStore(tmp_path / "s")
    with pytest.raises(InputError, match="--on-error skip") as err:
        run_images(FakeSegmenter(), items, store, DistContext(), lambda k, p, im, d: {"v": d}, quiet=True)
    assert str(junk) in str(err.value)
    assert [r["key"] for r in _lines(store)] == ["img0", "img1"]  # finished results are kept


def test_skipped_images_are_recorded_and_retried_by_a_rerun(tmp_path):
    items, junk = _items_with_bad(4, 1, tmp_path)
    store = ResultStore(tmp_path / "s")
    seg = FakeSegmenter()
    assert run_images(seg, items, store, DistContext(), lambda k, p, im, d: {"v": d}, quiet=True,
                      on_error="skip") == 4
    assert seg.seen == [0, 2, 3]
    recs = store.records()
    assert str(junk) in recs["img1"]["skipped"] and [recs[f"img{i}"]["v"] for i in (0, 2, 3)] == [0, 2, 3]
    assert store.done() == {"img0", "img2", "img3"}
    seg = FakeSegmenter()  # the image is fixed: a rerun predicts it, and its result replaces the skip
    assert run_images(seg, _items(4), ResultStore(tmp_path / "s"), DistContext(), lambda k, p, im, d: {"v": d},
                      quiet=True) == 1
    assert seg.seen == [1] and store.records()["img1"] == {"key": "img1", "v": 1}


def test_a_result_beats_a_skip_from_another_rank_file(tmp_path):
    ResultStore(tmp_path, rank=0).append("a", v=1)
    ResultStore(tmp_path, rank=1).skip("a", "unreadable")
    assert ResultStore(tmp_path).records()["a"] == {"key": "a", "v": 1}


# -- ResultStore.claim: one run per output, settings, overwrite, cleanup ----------------------------------
SIG = {"version": "1", "config": {"nms_threshold": 0.5, "points_per_side": 32}}


def test_a_second_run_on_the_same_output_is_refused_naming_the_holder(tmp_path):
    store = ResultStore(tmp_path / "parts")
    with store.claim(SIG, DistContext(), what="output folder X"):
        store.append("a", v=1)
        with pytest.raises(OutputError, match=rf"output folder X is in use by process {os.getpid()} on .*"
                                               r"\(started .*\); wait for it to finish or use another output"):
            ResultStore(tmp_path / "parts").claim(SIG, DistContext(), what="output folder X").__enter__()
    with ResultStore(tmp_path / "parts").claim(SIG, DistContext()):  # released at the end of the run
        pass


def test_the_lock_of_another_process_is_seen_and_dies_with_it(tmp_path):
    code = ("import sys, time; from no_time_to_train.runlock import RunLock; "
            f"lock = RunLock({str(tmp_path)!r}); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC},
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=f"in use by process {proc.pid} "):
            RunLock(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    RunLock(tmp_path).release()  # a killed holder leaves no stale lock


def test_changed_settings_are_refused_naming_the_keys_once_results_exist(tmp_path):
    changed = {**SIG, "config": {**SIG["config"], "nms_threshold": 0.6}}
    with ResultStore(tmp_path).claim(SIG, DistContext()) as store:
        store.append("a", v=1)
    with pytest.raises(OutputError, match=r"different settings \(config.nms_threshold: 0.5 -> 0.6\)"):
        with ResultStore(tmp_path).claim(changed, DistContext()):
            pass
    assert ResultStore(tmp_path).done() == {"a"}  # a refused run deletes nothing


def test_a_run_that_made_nothing_leaves_nothing_and_does_not_lock_the_output(tmp_path):
    parts = tmp_path / "mem.safetensors.parts"
    with pytest.raises(InputError):
        with ResultStore(parts).claim(SIG, DistContext()):
            raise InputError("bad reference")
    assert not parts.exists()
    # a run killed before its first result left run.json: other settings simply replace it
    store = ResultStore(tmp_path / "p")
    store.check_signature(SIG)
    store.skip("a", "unreadable")  # a skip is not a result
    other = {**SIG, "version": "2"}
    with ResultStore(tmp_path / "p").claim(other, DistContext()) as store:
        assert store.records() == {}
    assert json.loads((tmp_path / "p" / "run.json").read_text()) == other


def test_a_failed_run_with_results_keeps_them_for_the_rerun(tmp_path):
    with pytest.raises(RuntimeError):
        with ResultStore(tmp_path).claim(SIG, DistContext()) as store:
            store.append("a", v=1)
            raise RuntimeError("crash")
    assert ResultStore(tmp_path).done() == {"a"} and (tmp_path / "run.json").exists()


def test_overwrite_deletes_the_previous_outputs_first(tmp_path):
    (tmp_path / "results.json").write_text("[]")
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks" / "a.png").write_bytes(b"x")
    with ResultStore(tmp_path / "parts").claim(SIG, DistContext()) as store:
        store.append("a", v=1)
    outputs = [tmp_path / "results.json", tmp_path / "masks", tmp_path / "metrics.json"]
    with pytest.raises(RuntimeError):
        with ResultStore(tmp_path / "parts").claim(SIG, DistContext(), overwrite=True, outputs=outputs) as store:
            assert store.records() == {}
            raise RuntimeError("crash before the merge")
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "masks").exists()


def test_without_overwrite_the_previous_outputs_stay_until_replaced(tmp_path):
    memory = tmp_path / "mem.safetensors"  # a finished fill-memory leaves its file, not its parts folder
    memory.write_bytes(b"old memory")
    with pytest.raises(RuntimeError):
        with ResultStore(tmp_path / "mem.safetensors.parts").claim(SIG, DistContext(), outputs=[memory]):
            raise RuntimeError("the new run fails")
    assert memory.read_bytes() == b"old memory"


def test_disk_full_names_the_results_file(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as err:
        store.append("a", v=1)
    assert err.value.filename == str(store.path)
    assert environment_message(err.value) == (f"no space left on the device holding {store.path}: free some space or "
                                              "use an output on another disk, then rerun the same command "
                                              "(finished items are kept)")


def test_single_process_cuda_device_gets_an_index(monkeypatch):
    """torch >= 2.11 refuses ``set_device("cuda")`` without an index: ``--device cuda`` failed on every GPU."""
    import torch

    calls = []

    def set_device(dev):
        if isinstance(dev, torch.device) and dev.index is None:
            raise ValueError("Expected a torch.device with a specified index")
        calls.append(dev)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    assert DistContext().device("cuda") == torch.device("cuda", 0)
    assert DistContext(rank=1, world_size=2, local_rank=1).device("cuda") == torch.device("cuda", 1)
    assert DistContext().device("cuda:1") == torch.device("cuda", 1)
    assert calls == [torch.device("cuda", 0), torch.device("cuda", 1), torch.device("cuda", 1)]
